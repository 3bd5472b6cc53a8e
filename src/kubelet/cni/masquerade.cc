#include "kubelet/cni/masquerade.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "base/process.h"
#include "kubelet/cni/cni_config.h"

namespace skiff::kubelet::cni {
namespace {

// Through the nft program rather than libnftables in this process: a libnftables context's
// caches outlive it in the heap (about 1.5 MiB of the agent's RSS), and this runs once per CIDR.
Status run_nft(const std::string& script) {
  char path[] = "/tmp/skiff-masquerade-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return error(StatusCode::kInternal, std::string("mkstemp: ") + std::strerror(errno));
  bool written = ::write(fd, script.data(), script.size()) == static_cast<ssize_t>(script.size());
  ::close(fd);
  Result<CommandOutput> out = error(StatusCode::kInternal, "writing " + std::string(path));
  if (written) out = run_command({"nft", "-f", path}, std::chrono::seconds(30));
  ::unlink(path);
  if (!out.is_ok()) return out.status();
  if (!out->status.success()) {
    return error(StatusCode::kInternal, "nft: " + out->status.to_string() + ": " + out->err);
  }
  return Status::ok();
}

}  // namespace

Result<std::string> render_masquerade_rules(const std::vector<std::string>& pod_cidrs) {
  if (pod_cidrs.empty()) return error(StatusCode::kInvalidArgument, "no pod CIDR to masquerade");
  std::string rules;
  for (const std::string& cidr : pod_cidrs) {
    SKIFF_ASSIGN_OR_RETURN(int family, cidr_family(cidr));
    std::string ip = family == 4 ? "ip" : "ip6";
    std::string multicast = family == 4 ? "224.0.0.0/4" : "ff00::/8";
    rules += "    " + ip + " saddr " + cidr + " " + ip + " daddr != " + cidr + " " + ip +
             " daddr != " + multicast + " masquerade\n";
  }
  // "add" then "delete" makes the delete succeed whether or not the table exists; the whole
  // script is one transaction.
  std::string table = std::string("inet ") + kMasqueradeTable;
  return "add table " + table + "\ndelete table " + table + "\ntable " + table +
         " {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy "
         "accept;\n" +
         rules + "  }\n}\n";
}

Status apply_masquerade_rules(const std::vector<std::string>& pod_cidrs) {
  SKIFF_ASSIGN_OR_RETURN(std::string script, render_masquerade_rules(pod_cidrs));
  return run_nft(script);
}

Status remove_masquerade_rules() {
  std::string table = std::string("inet ") + kMasqueradeTable;
  return run_nft("add table " + table + "\ndelete table " + table + "\n");
}

}  // namespace skiff::kubelet::cni
