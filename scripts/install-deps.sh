#!/usr/bin/env bash
# Installs the Debian packages skiff needs to build, test and run. Idempotent and quiet when
# everything is present. Usage: scripts/install-deps.sh [build|test|run]...
set -euo pipefail

build_pkgs=(g++ cmake ninja-build ccache pkg-config zlib1g-dev
  libboost-dev libboost-system-dev nlohmann-json3-dev libyaml-cpp-dev libsqlite3-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libssl-dev
  libspdlog-dev libfmt-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
  libldns-dev libnftables-dev libnftnl-dev libmnl-dev)
test_pkgs=(etcd-server etcd-client python3-kubernetes docker-registry apache2-utils)
run_pkgs=(containerd runc crun containernetworking-plugins busybox-static nftables conntrack iproute2 iptables)

want=()
for what in "${@:-build}"; do
  case "$what" in
    build) want+=("${build_pkgs[@]}") ;;
    test) want+=("${build_pkgs[@]}" "${test_pkgs[@]}" "${run_pkgs[@]}") ;;
    run) want+=("${build_pkgs[@]}" "${run_pkgs[@]}") ;;
    *) echo "install-deps: unknown set '$what'" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages and not root; run as root or install them: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# docker-registry's package enables and starts a registry for the whole host on :5000; the tests
# start their own (own config, loopback, a free port), so the host's is switched off again.
if [[ " ${missing[*]} " == *" docker-registry "* ]]; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
  else
    invoke-rc.d docker-registry stop >/dev/null 2>&1 || true
    update-rc.d docker-registry disable >/dev/null 2>&1 || true
  fi
fi
