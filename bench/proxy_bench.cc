// Service proxy benchmark: how long one sync takes after one endpoint change (an endpoint
// leaving or rejoining the rotation; an endpoint replaced) with 1, 1,000 and 10,000 Services, and
// the first-packet latency (TCP connect) to a ClusterIP with 10 and 10,000 Services, for the
// nftables and iptables backends. Runs in a network namespace of its own (needs root); the
// endpoints are hollow except the one the latency test connects to, a listener of this process on a
// veth address inside that namespace. Prints figures; asserts nothing.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <set>
#include <thread>

#include "base/process.h"
#include "proxy/iptables.h"
#include "proxy/nftables.h"

namespace {

using namespace skiff::proxy;
using Clock = std::chrono::steady_clock;

constexpr const char* kListenIp = "10.99.0.1";

double micros_since(Clock::time_point t) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t).count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

std::string ip_of(int base, int i) {
  return std::to_string(base) + "." + std::to_string((i >> 16) & 255) + "." +
         std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255);
}

ServicePort service(int i, int endpoints) {
  ServicePort sp;
  sp.ns = "bench";
  sp.service = "svc-" + std::to_string(i);
  sp.port_name = "http";
  sp.protocol = "tcp";
  sp.cluster_ip =
      "10.43." + std::to_string((i + 1) >> 8 & 255) + "." + std::to_string((i + 1) & 255);
  sp.port = 80;
  for (int e = 0; e < endpoints; ++e) {
    Endpoint ep;
    ep.ip = ip_of(10, (42 << 16) | (i * endpoints + e + 1));
    ep.port = 8080;
    sp.endpoints.push_back(ep);
  }
  return sp;
}

std::unique_ptr<Backend> make(const std::string& mode) {
  if (mode == "nftables") {
    return std::make_unique<NftablesBackend>(ProxyConfig{}, make_nftnl_runner());
  }
  return std::make_unique<IptablesBackend>(ProxyConfig{}, make_iptables_runner());
}

bool sh(const std::vector<std::string>& argv) {
  auto out = skiff::run_command(argv, std::chrono::seconds(30));
  if (!out.is_ok() || !out->status.success()) {
    std::fprintf(stderr, "proxy_bench: %s failed: %s\n", argv[0].c_str(),
                 out.is_ok() ? out->err.c_str() : out.status().message().c_str());
    return false;
  }
  return true;
}

void sync_time(const std::string& mode, int services, int changes) {
  auto backend = make(mode);
  ProxyState state;
  for (int i = 0; i < services; ++i) state["bench/svc-" + std::to_string(i)] = {service(i, 2)};
  auto t0 = Clock::now();
  skiff::Status s = backend->sync(state, {}, true);
  double full = micros_since(t0);
  if (!s.is_ok()) {
    std::printf("| %s | %d | full sync failed: %s |\n", mode.c_str(), services,
                s.message().substr(0, 200).c_str());
    return;
  }
  std::mt19937 rng(7);
  // Two kinds of change: an endpoint leaving or rejoining the rotation (the Service's endpoint
  // count changes), and an endpoint replaced by a new pod at another address (it does not).
  auto time_changes = [&](bool replace, std::vector<double>& times) {
    for (int c = 0; c < changes; ++c) {
      int i = static_cast<int>(rng() % services);
      std::string key = "bench/svc-" + std::to_string(i);
      auto& eps = state[key][0].endpoints;
      if (replace) {
        eps[c % 2].ip = ip_of(11, (c << 8) | (i & 255));
      } else {
        eps[c % 2].ready = !eps[c % 2].ready;
      }
      auto t = Clock::now();
      s = backend->sync(state, {key}, false);
      times.push_back(micros_since(t));
      if (!s.is_ok()) {
        std::printf("| %s | %d | incremental sync failed: %s |\n", mode.c_str(), services,
                    s.message().substr(0, 200).c_str());
        return false;
      }
    }
    return true;
  };
  std::vector<double> toggled;
  std::vector<double> replaced;
  if (!time_changes(false, toggled)) return;
  // Every endpoint back in the rotation (untimed), so replacements change ready endpoints.
  std::set<std::string> touched;
  for (auto& [key, ports] : state) {
    for (Endpoint& e : ports[0].endpoints) {
      if (!e.ready) touched.insert(key);
      e.ready = true;
    }
  }
  if (!backend->sync(state, touched, false).is_ok() || !time_changes(true, replaced)) return;
  std::printf("| %s | %d | %.1f | %.2f | %.2f | %.2f | %.2f |\n", mode.c_str(), services,
              full / 1000, percentile(toggled, 0.5) / 1000, percentile(toggled, 0.99) / 1000,
              percentile(replaced, 0.5) / 1000, percentile(replaced, 0.99) / 1000);
  (void)backend->cleanup();
}

void first_packet(const std::string& mode, int services, int connections, int listen_port) {
  auto backend = make(mode);
  ProxyState state;
  for (int i = 0; i < services; ++i) state["bench/svc-" + std::to_string(i)] = {service(i, 2)};
  // The last Service is the one connected to: its single endpoint is the listener.
  ServicePort& target = state["bench/svc-" + std::to_string(services - 1)][0];
  target.endpoints.resize(1);
  target.endpoints[0].ip = kListenIp;
  target.endpoints[0].port = listen_port;
  if (!backend->sync(state, {}, true).is_ok()) {
    std::printf("| %s | %d | sync failed |\n", mode.c_str(), services);
    return;
  }
  auto measure = [&](const std::string& ip, int port) {
    std::vector<double> times;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
    for (int c = 0; c < connections; ++c) {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      auto t = Clock::now();
      int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
      double us = micros_since(t);
      ::close(fd);
      if (rc == 0) times.push_back(us);
    }
    return times;
  };
  auto direct = measure(kListenIp, listen_port);
  auto via = measure(target.cluster_ip, 80);
  std::printf("| %s | %d | %zu/%d | %.1f | %.1f | %.1f | %.1f |\n", mode.c_str(), services,
              via.size(), connections, percentile(via, 0.5), percentile(via, 0.99),
              percentile(direct, 0.5), percentile(direct, 0.99));
  (void)backend->cleanup();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Service proxy benchmark (root; runs in its own network namespace)"};
  std::vector<int> sizes = {1, 1000, 10000};
  std::vector<int> latency_sizes = {10, 10000};
  std::vector<std::string> modes = {"nftables", "iptables"};
  int changes = 50;
  int connections = 2000;
  app.add_option("--services", sizes, "Service counts for the sync figures")->delimiter(',');
  app.add_option("--latency-services", latency_sizes, "Service counts for the latency figures")
      ->delimiter(',');
  app.add_option("--modes", modes, "Backends")->delimiter(',');
  app.add_option("--changes", changes, "Endpoint changes timed per size");
  app.add_option("--connections", connections, "Connections timed per size");
  CLI11_PARSE(app, argc, argv);

  if (::unshare(CLONE_NEWNET) != 0) {
    std::perror("proxy_bench: unshare(CLONE_NEWNET) (needs root)");
    return 1;
  }
  if (!sh({"ip", "link", "set", "lo", "up"}) ||
      !sh({"ip", "link", "add", "bench0", "type", "veth", "peer", "name", "bench1"}) ||
      !sh({"ip", "addr", "add", std::string(kListenIp) + "/24", "dev", "bench0"}) ||
      !sh({"ip", "link", "set", "bench0", "up"}) || !sh({"ip", "link", "set", "bench1", "up"}) ||
      !sh({"ip", "route", "add", "10.43.0.0/16", "dev", "bench0"})) {
    return 1;
  }
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, kListenIp, &addr.sin_addr);
  socklen_t len = sizeof addr;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 4096) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("proxy_bench: listen");
    return 1;
  }
  int port = ntohs(addr.sin_port);
  std::atomic<bool> done{false};
  std::thread acceptor([&] {
    while (!done) {
      int fd = ::accept(listener, nullptr, nullptr);
      if (fd >= 0) ::close(fd);
    }
  });

  std::printf("## Rule sync after one endpoint change (%d changes per row)\n\n", changes);
  std::printf(
      "| backend | Services | full sync ms | endpoint leaves/rejoins p50 ms | p99 ms | "
      "endpoint replaced p50 ms | p99 ms |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const auto& mode : modes) {
    for (int n : sizes) sync_time(mode, n, changes);
  }
  std::printf("\n## First-packet latency: TCP connect to a ClusterIP (%d connections)\n\n",
              connections);
  std::printf(
      "| backend | Services | connected | via ClusterIP p50 us | p99 us | direct p50 us | p99 us "
      "|\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const auto& mode : modes) {
    for (int n : latency_sizes) first_packet(mode, n, connections, port);
  }
  done = true;
  ::shutdown(listener, SHUT_RDWR);
  ::close(listener);
  acceptor.join();
  return 0;
}
