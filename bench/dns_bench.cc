// Cluster DNS benchmark: a child process runs the DnsServer (its own worker threads) over N
// synthetic Services (cluster IPs, plus headless Services with endpoints); the parent sends
// UDP queries from several sockets, each keeping a window of queries in flight, and reports
// queries per second and latency percentiles for Service names that exist (A answers) and for
// the search-path names a pod's resolver tries first (NXDOMAIN), plus the latency of one query
// at a time. The lookup itself (ClusterRecords::answer, no sockets) is measured in-process too.
// Prints figures; asserts nothing.

// clang-format off
#include <stdbool.h>  // NOLINT: before ldns, which otherwise defines bool as a macro
#include <ldns/ldns.h>
// clang-format on
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dns/records.h"
#include "dns/server.h"

namespace {

using skiff::dns::ClusterRecords;
using skiff::dns::Json;
using Clock = std::chrono::steady_clock;
using Bytes = std::vector<uint8_t>;

struct Config {
  int services = 10000;
  int namespaces = 100;
  int headless_every = 10;  // every n-th Service is headless with 3 endpoints
  int clients = 4;          // sending sockets (one thread each)
  int window = 16;          // queries in flight per socket
  double seconds = 3;
  int server_threads = 2;
};

std::string svc_name(int i) {
  return "svc-" + std::to_string(i);
}
std::string ns_name(int i, const Config& c) {
  return "ns-" + std::to_string(i % c.namespaces);
}

std::unique_ptr<ClusterRecords> build_records(const Config& c) {
  auto records = ClusterRecords::create({}).value();
  for (int i = 0; i < c.services; ++i) {
    std::string ns = ns_name(i, c), name = svc_name(i);
    bool headless = c.headless_every > 0 && i % c.headless_every == 0;
    std::string ip = "10.43." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
    Json spec = {{"clusterIP", headless ? "None" : ip},
                 {"ports", Json::array({{{"name", "http"}, {"port", 80}}})}};
    records->upsert_service({{"metadata", {{"namespace", ns}, {"name", name}}}, {"spec", spec}});
    if (headless) {
      Json eps = Json::array();
      for (int e = 0; e < 3; ++e) {
        eps.push_back({{"addresses", Json::array({"10.42." + std::to_string(i / 250) + "." +
                                                  std::to_string((i % 250) + e)})}});
      }
      records->upsert_endpoint_slice({{"metadata",
                                       {{"namespace", ns},
                                        {"name", name + "-x"},
                                        {"labels", {{"kubernetes.io/service-name", name}}}}},
                                      {"addressType", "IPv4"},
                                      {"ports", Json::array({{{"name", "http"}, {"port", 8080}}})},
                                      {"endpoints", eps}});
    }
  }
  return records;
}

Bytes make_query(const std::string& name) {
  ldns_pkt* p = ldns_pkt_query_new(ldns_dname_new_frm_str(name.c_str()), LDNS_RR_TYPE_A,
                                   LDNS_RR_CLASS_IN, LDNS_RD);
  uint8_t* wire = nullptr;
  size_t size = 0;
  ldns_pkt2wire(&wire, p, &size);
  Bytes out(wire, wire + size);
  free(wire);
  ldns_pkt_free(p);
  return out;
}

// Names of existing Services (hits) or what a pod in namespace "default" asks first for them
// (search-path misses).
std::vector<Bytes> query_pool(const Config& c, bool hits, size_t count) {
  std::mt19937 rng(42);
  std::vector<Bytes> out;
  for (size_t k = 0; k < count; ++k) {
    int i = static_cast<int>(rng() % c.services);
    std::string fqdn = svc_name(i) + "." + ns_name(i, c) + ".svc.cluster.local";
    out.push_back(make_query(hits ? fqdn + "." : fqdn + ".default.svc.cluster.local."));
  }
  return out;
}

struct Result {
  double qps = 0;
  double p50_us = 0, p99_us = 0;
  uint64_t answered = 0, lost = 0, wrong_rcode = 0;
};

Result blast(int port, const std::vector<Bytes>& pool, int clients, int window, double seconds,
             int expect_rcode) {
  std::vector<std::vector<double>> latencies(clients);
  std::vector<uint64_t> lost(clients), wrong(clients);
  auto begin = Clock::now();
  auto deadline = begin + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      int fd = socket(AF_INET, SOCK_DGRAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(port));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
      std::vector<Clock::time_point> sent(65536);
      std::vector<bool> pending(65536, false);
      uint16_t next_id = static_cast<uint16_t>(t * 8192);
      size_t k = static_cast<size_t>(t) * 7919;
      int in_flight = 0;
      uint8_t buf[4096];
      while (Clock::now() < deadline) {
        while (in_flight < window) {
          Bytes q = pool[k++ % pool.size()];
          uint16_t id = next_id++;
          q[0] = static_cast<uint8_t>(id >> 8);
          q[1] = static_cast<uint8_t>(id);
          sent[id] = Clock::now();
          pending[id] = true;
          send(fd, q.data(), q.size(), 0);
          ++in_flight;
        }
        pollfd pfd{fd, POLLIN, 0};
        if (poll(&pfd, 1, 200) != 1) {
          // Lost in a full socket buffer: forget what is in flight.
          lost[t] += static_cast<uint64_t>(in_flight);
          std::fill(pending.begin(), pending.end(), false);
          in_flight = 0;
          continue;
        }
        while (true) {
          ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
          if (n < 12) break;
          uint16_t id = static_cast<uint16_t>(buf[0] << 8 | buf[1]);
          if (!pending[id]) continue;
          pending[id] = false;
          --in_flight;
          latencies[t].push_back(
              std::chrono::duration<double, std::micro>(Clock::now() - sent[id]).count());
          if ((buf[3] & 0x0f) != expect_rcode) ++wrong[t];
        }
      }
      close(fd);
    });
  }
  for (auto& th : threads) th.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - begin).count();
  std::vector<double> all;
  Result r;
  for (int t = 0; t < clients; ++t) {
    all.insert(all.end(), latencies[t].begin(), latencies[t].end());
    r.lost += lost[t];
    r.wrong_rcode += wrong[t];
  }
  std::sort(all.begin(), all.end());
  r.answered = all.size();
  r.qps = static_cast<double>(all.size()) / elapsed;
  if (!all.empty()) {
    r.p50_us = all[all.size() / 2];
    r.p99_us = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  }
  return r;
}

void print(const char* what, const Result& r) {
  std::printf(
      "%-44s %10.0f q/s   p50 %7.1f us   p99 %7.1f us   (%llu answered, %llu lost, %llu "
      "unexpected rcode)\n",
      what, r.qps, r.p50_us, r.p99_us, static_cast<unsigned long long>(r.answered),
      static_cast<unsigned long long>(r.lost), static_cast<unsigned long long>(r.wrong_rcode));
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  CLI::App app("skiff cluster DNS benchmark");
  app.add_option("--services", c.services, "synthetic Services");
  app.add_option("--namespaces", c.namespaces, "namespaces they are spread over");
  app.add_option("--clients", c.clients, "sending sockets");
  app.add_option("--window", c.window, "queries in flight per socket");
  app.add_option("--seconds", c.seconds, "duration of each run");
  app.add_option("--server-threads", c.server_threads, "DNS server worker threads");
  CLI11_PARSE(app, argc, argv);

  std::printf("dns_bench: %d Services in %d namespaces (every %dth headless with 3 endpoints)\n",
              c.services, c.namespaces, c.headless_every);

  // In-process: the cost of a lookup alone.
  {
    auto records = build_records(c);
    std::printf("index: %zu names\n", records->name_count());
    for (bool hits : {true, false}) {
      std::mt19937 rng(7);
      std::vector<std::string> names;
      for (int k = 0; k < 1000; ++k) {
        int i = static_cast<int>(rng() % c.services);
        std::string fqdn = svc_name(i) + "." + ns_name(i, c) + ".svc.cluster.local.";
        names.push_back(hits ? fqdn : fqdn + "default.svc.cluster.local.");
      }
      const int n = 1000000;
      auto t0 = Clock::now();
      size_t answers = 0;
      for (int k = 0; k < n; ++k)
        answers += records->answer(names[k % names.size()], 1).answer.size();
      double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / n;
      std::printf("ClusterRecords::answer, %-18s %8.0f ns/lookup (%zu records)\n",
                  hits ? "hits:" : "search-path misses:", ns, answers);
    }
  }

  int port_pipe[2], stop_pipe[2];
  if (pipe(port_pipe) != 0 || pipe(stop_pipe) != 0) return 1;
  pid_t child = fork();
  if (child == 0) {
    close(port_pipe[0]);
    close(stop_pipe[1]);
    auto records = build_records(c);
    skiff::dns::DnsServerOptions o;
    o.address = "127.0.0.1";
    o.port = 0;
    o.threads = c.server_threads;
    skiff::dns::DnsServer server(*records, o);
    if (!server.start().is_ok()) _exit(1);
    int port = server.port();
    if (write(port_pipe[1], &port, sizeof(port)) != sizeof(port)) _exit(1);
    char ch;
    while (read(stop_pipe[0], &ch, 1) > 0) {
    }
    server.stop();
    _exit(0);
  }
  close(port_pipe[1]);
  close(stop_pipe[0]);
  int port = 0;
  if (read(port_pipe[0], &port, sizeof(port)) != sizeof(port)) {
    std::fprintf(stderr, "the DNS server child did not start\n");
    waitpid(child, nullptr, 0);
    return 1;
  }
  std::printf(
      "server: pid %d, 127.0.0.1:%d, %d worker threads; client: %d sockets x %d in "
      "flight, %.0f s per run\n",
      child, port, c.server_threads, c.clients, c.window, c.seconds);

  auto hits = query_pool(c, true, 4096);
  auto misses = query_pool(c, false, 4096);
  blast(port, hits, c.clients, c.window, 0.5, 0);  // warm-up
  print("UDP, Service names (A answers), loaded",
        blast(port, hits, c.clients, c.window, c.seconds, 0));
  print("UDP, search-path misses (NXDOMAIN), loaded",
        blast(port, misses, c.clients, c.window, c.seconds, 3));
  print("UDP, Service names, one query at a time", blast(port, hits, 1, 1, c.seconds, 0));
  print("UDP, search-path misses, one at a time", blast(port, misses, 1, 1, c.seconds, 3));

  close(stop_pipe[1]);
  int status = 0;
  waitpid(child, &status, 0);
  return 0;
}
