// API server benchmarks: cold start, idle memory, pod creates over HTTPS, large lists and watch
// fan-out, for the embedded store and for a real etcd, with raw etcd puts as the anchor.
// Starts the real `skiff apiserver` binary as a child process. Prints figures; asserts nothing.

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/kubeconfig.h"
#include "base/log.h"
#include "storage/etcd/etcd_store.h"
#include "support/child_process.h"
#include "support/etcd_cluster.h"
#include "support/ports.h"
#include "support/temp_dir.h"

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

long rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// One keep-alive HTTPS connection with the admin client certificate.
class Client {
 public:
  Client(int port, const skiff::Kubeconfig& kc, bool with_cert = true)
      : port_(port), ctx_(ssl::context::tls_client) {
    ctx_.add_certificate_authority(net::buffer(kc.certificate_authority_data));
    if (with_cert) {
      ctx_.use_certificate_chain(net::buffer(kc.client_certificate_data));
      ctx_.use_private_key(net::buffer(kc.client_key_data), ssl::context::pem);
    }
    ctx_.set_verify_mode(ssl::verify_peer);
  }

  struct Reply {
    int status = 0;
    std::string body;
  };

  std::optional<Reply> request(http::verb method, const std::string& target,
                               const std::string& body = "", const std::string& accept = "") {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (!stream_ && !connect()) return std::nullopt;
      beast::error_code ec;
      http::request<http::string_body> req{method, target, 11};
      req.set(http::field::host, "127.0.0.1");
      if (!body.empty()) req.set(http::field::content_type, "application/json");
      if (!accept.empty()) req.set(http::field::accept, accept);
      req.body() = body;
      req.prepare_payload();
      http::write(*stream_, req, ec);
      if (!ec) {
        http::response_parser<http::string_body> parser;
        parser.body_limit(1ull << 32);
        http::read(*stream_, buffer_, parser, ec);
        if (!ec) return Reply{static_cast<int>(parser.get().result_int()), parser.get().body()};
      }
      stream_.reset();
    }
    return std::nullopt;
  }

  // Streams a watch: calls on_line for each newline-terminated line until it returns false.
  template <class F>
  bool watch(const std::string& target, F&& on_line) {
    if (!stream_ && !connect()) return false;
    beast::error_code ec;
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, "127.0.0.1");
    http::write(*stream_, req, ec);
    if (ec) return false;
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    std::string pending;
    bool stop = false;
    // Each chunk's data arrives here as it is parsed, however the reads split it.
    auto on_body = [&](std::uint64_t, beast::string_view data, beast::error_code&) -> size_t {
      pending.append(data.data(), data.size());
      size_t start = 0, nl;
      while (!stop && (nl = pending.find('\n', start)) != std::string::npos) {
        if (!on_line(std::string_view(pending).substr(start, nl - start))) stop = true;
        start = nl + 1;
      }
      pending.erase(0, start);
      return data.size();
    };
    parser.on_chunk_body(on_body);
    http::read_header(*stream_, buffer_, parser, ec);
    if (ec) return false;
    while (!parser.is_done() && !stop) {
      http::read_some(*stream_, buffer_, parser, ec);
      if (ec) return false;
    }
    return true;
  }

 private:
  bool connect() {
    beast::error_code ec;
    auto s = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc_, ctx_);
    beast::get_lowest_layer(*s).connect(
        tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port_)), ec);
    if (ec) return false;
    s->handshake(ssl::stream_base::client, ec);
    if (ec) return false;
    stream_ = std::move(s);
    buffer_.clear();
    return true;
  }

  int port_;
  net::io_context ioc_;
  ssl::context ctx_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> stream_;
  beast::flat_buffer buffer_;
};

struct LoadResult {
  std::vector<double> latencies_ms;
  double per_second = 0;
};

// Runs `op(worker, i)` (true on success) in `workers` threads for `seconds`; collects the
// latency of each successful op.
template <class Op>
LoadResult run_load(int workers, double seconds, Op op) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> lat(workers);
  std::vector<std::thread> threads;
  auto t0 = Clock::now();
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; !stop; ++i) {
        auto start = Clock::now();
        if (op(w, i)) lat[w].push_back(ms_since(start));
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  LoadResult r;
  for (auto& l : lat) r.latencies_ms.insert(r.latencies_ms.end(), l.begin(), l.end());
  r.per_second = static_cast<double>(r.latencies_ms.size()) / elapsed;
  return r;
}

std::string pod_json(const std::string& name, size_t pad, int64_t stamp) {
  std::string p(pad, 'x');
  return "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"" + name +
         "\",\"labels\":{\"app\":\"bench\"},\"annotations\":{\"bench/ts\":\"" +
         std::to_string(stamp) + "\",\"bench/pad\":\"" + p +
         "\"}},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"busybox:1.36\"}]}}";
}

struct Server {
  skiff::testing::ChildProcess proc;
  int port = 0;
  skiff::Kubeconfig kubeconfig;
  double ready_ms = 0;
};

// Starts `skiff apiserver` on `dir` and waits for /readyz.
bool start_server(const std::string& skiff, const std::string& dir,
                  const std::vector<std::string>& extra, Server* s) {
  s->port = skiff::testing::free_tcp_port();
  std::vector<std::string> argv{
      skiff,          "--log-level",           "warn",           "apiserver", "--data-dir", dir,
      "--https-port", std::to_string(s->port), "--bind-address", "127.0.0.1"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto t0 = Clock::now();
  if (!s->proc.start(argv, dir + ".log").is_ok()) return false;
  // Poll /readyz with plain TCP+TLS (no client certificate needed) until it answers ok.
  while (ms_since(t0) < 30000) {
    auto kc = skiff::load_kubeconfig(dir + "/admin.kubeconfig");
    if (kc.is_ok()) {
      Client c(s->port, *kc, false);
      auto r = c.request(http::verb::get, "/readyz");
      if (r && r->status == 200) {
        s->ready_ms = ms_since(t0);
        s->kubeconfig = *kc;
        return true;
      }
    }
    if (!s->proc.running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

void bench_creates(const char* name, Server& s, int clients, double seconds, size_t pad,
                   const std::string& ns) {
  std::atomic<int64_t> errors{0};
  std::vector<std::unique_ptr<Client>> conns;
  for (int c = 0; c < clients; ++c) conns.push_back(std::make_unique<Client>(s.port, s.kubeconfig));
  LoadResult r = run_load(clients, seconds, [&](int c, int i) {
    auto reply = conns[c]->request(
        http::verb::post, "/api/v1/namespaces/" + ns + "/pods",
        pod_json("p-" + std::to_string(c) + "-" + std::to_string(i), pad, now_ns()));
    if (reply && reply->status == 201) return true;
    ++errors;
    return false;
  });
  std::printf("| %s | %d | %zu | %.0f | %.2f | %.2f | %ld |\n", name, clients,
              r.latencies_ms.size(), r.per_second, percentile(r.latencies_ms, 0.5),
              percentile(r.latencies_ms, 0.99), static_cast<long>(errors.load()));
  std::fflush(stdout);
}

// Creates pods until the namespace holds `count`.
bool fill(Server& s, const std::string& ns, int count, size_t pad) {
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < 16; ++c) {
    threads.emplace_back([&] {
      Client client(s.port, s.kubeconfig);
      int i;
      while ((i = next++) < count && !failed) {
        auto r = client.request(http::verb::post, "/api/v1/namespaces/" + ns + "/pods",
                                pod_json("fill-" + std::to_string(i), pad, 0));
        if (!r || (r->status != 201 && r->status != 409)) failed = true;
      }
    });
  }
  for (auto& t : threads) t.join();
  return !failed;
}

void bench_list(const char* name, Server& s, const std::string& ns, int expect) {
  Client client(s.port, s.kubeconfig);
  const char* table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
  for (auto [label, accept] : {std::pair<const char*, const char*>{"JSON", ""}, {"Table", table}}) {
    std::vector<double> times;
    size_t bytes = 0;
    for (int i = 0; i < 5; ++i) {
      auto t0 = Clock::now();
      auto r = client.request(http::verb::get, "/api/v1/namespaces/" + ns + "/pods", "", accept);
      if (!r || r->status != 200) {
        std::printf("| %s | %s | failed |\n", name, label);
        return;
      }
      times.push_back(ms_since(t0));
      bytes = r->body.size();
    }
    std::sort(times.begin(), times.end());
    std::printf("| %s | %s | %d | %.1f | %.1f | %.1f |\n", name, label, expect, times.front(),
                times[times.size() / 2], static_cast<double>(bytes) / 1048576.0);
  }
  std::fflush(stdout);
}

void bench_watch(const char* name, Server& s, int watchers, int events, const std::string& ns) {
  std::vector<std::vector<double>> lat(watchers);
  std::atomic<int> connected{0};
  std::atomic<int64_t> received{0};
  std::atomic<int> ended_early{0};  // streams that ended before all their events arrived
  std::vector<std::thread> threads;
  auto rv = Client(s.port, s.kubeconfig)
                .request(http::verb::get, "/api/v1/namespaces/" + ns + "/pods?limit=1");
  std::string list_rv = "0";
  if (rv && rv->status == 200) {
    auto at = rv->body.find("\"resourceVersion\":\"");
    if (at != std::string::npos) {
      at += 19;
      list_rv = rv->body.substr(at, rv->body.find('"', at) - at);
    }
  }
  for (int w = 0; w < watchers; ++w) {
    threads.emplace_back([&, w] {
      Client client(s.port, s.kubeconfig);
      int seen = 0;
      ++connected;
      client.watch("/api/v1/namespaces/" + ns + "/pods?watch=true&resourceVersion=" + list_rv +
                       "&timeoutSeconds=1800",
                   [&](std::string_view line) {
                     int64_t t = now_ns();
                     auto at = line.find("\"bench/ts\":\"");
                     if (at != std::string_view::npos) {
                       int64_t sent = std::atoll(std::string(line.substr(at + 12, 20)).c_str());
                       lat[w].push_back(static_cast<double>(t - sent) / 1e6);
                     }
                     ++received;
                     return ++seen < events;
                   });
      if (seen < events) ++ended_early;
    });
  }
  while (connected < watchers) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let the watches register
  auto t0 = Clock::now();
  std::vector<std::thread> writers;
  std::atomic<int> next{0};
  for (int c = 0; c < 8; ++c) {
    writers.emplace_back([&] {
      Client client(s.port, s.kubeconfig);
      int i;
      while ((i = next++) < events) {
        auto r = client.request(http::verb::post, "/api/v1/namespaces/" + ns + "/pods",
                                pod_json("w-" + std::to_string(i), 0, now_ns()));
        if (!r || r->status != 201) {
          std::fprintf(stderr, "watch bench: create %d failed: %d %s\n", i, r ? r->status : 0,
                       r ? r->body.substr(0, 200).c_str() : "no answer");
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  double write_s = ms_since(t0) / 1000;
  for (auto& t : threads) t.join();
  double all_s = ms_since(t0) / 1000;
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  std::printf("| %s | %d | %d | %.2f | %.2f | %.1f | %.1f | %ld | %d |\n", name, watchers, events,
              percentile(all, 0.5), percentile(all, 0.99), write_s, all_s,
              static_cast<long>(received.load()), ended_early.load());
  std::fflush(stdout);
}

void bench_raw_etcd(const std::vector<std::string>& endpoints, int writers, double seconds) {
  skiff::storage::EtcdStoreOptions o;
  o.endpoints = endpoints;
  o.compaction_window = std::chrono::milliseconds(0);
  auto store = skiff::storage::open_etcd_store(o);
  if (!store.is_ok()) return;
  std::string value(1024, 'x');
  LoadResult r = run_load(writers, seconds, [&](int w, int i) {
    return (*store)
        ->put("/raw/" + std::to_string(w) + "/" + std::to_string(i % 1000), value)
        .is_ok();
  });
  std::printf("| raw etcd puts (anchor) | %d | %zu | %.0f | %.2f | %.2f | 0 |\n", writers,
              r.latencies_ms.size(), r.per_second, percentile(r.latencies_ms, 0.5),
              percentile(r.latencies_ms, 0.99));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"skiff API server benchmarks"};
  std::string skiff = "build/skiff";
  std::vector<std::string> backends{"embedded", "etcd"};
  double seconds = 10;
  int pods = 10000;
  int watchers = 1000;
  int watch_events = 10000;
  app.add_option("--skiff", skiff, "The skiff binary");
  app.add_option("--backends", backends)->delimiter(',');
  app.add_option("--seconds", seconds, "Duration of the create run");
  app.add_option("--pods", pods, "Pods for the list and restart runs");
  app.add_option("--watchers", watchers);
  app.add_option("--watch-events", watch_events);
  CLI11_PARSE(app, argc, argv);
  skiff::set_log_level("warn");
  if (std::getenv("TMPDIR") == nullptr) setenv("TMPDIR", "/var/tmp", 1);
  skiff::testing::TempDir tmp("skiff-apibench");

  // Cold start on an empty data directory, five times.
  std::printf("## Cold start of `skiff apiserver` to /readyz ok, empty data dir\n\n");
  std::printf("| run | ms | RSS after 2 s idle (MiB) |\n|---|---|---|\n");
  for (int i = 0; i < 5; ++i) {
    Server s;
    std::string dir = tmp.sub("cold" + std::to_string(i));
    if (!start_server(skiff, dir, {}, &s)) {
      std::printf("server failed to start; see %s.log\n", dir.c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::seconds(2));
    std::printf("| %d | %.1f | %.1f |\n", i, s.ready_ms, rss_kb(s.proc.pid()) / 1024.0);
    s.proc.stop();
  }

  std::unique_ptr<skiff::testing::EtcdCluster> etcd;
  for (const std::string& backend : backends) {
    std::vector<std::string> extra;
    if (backend == "etcd") {
      auto cluster = skiff::testing::EtcdCluster::start(1, tmp.sub("etcd"));
      if (!cluster.is_ok()) {
        std::printf("etcd: %s\n", cluster.status().to_string().c_str());
        return 1;
      }
      etcd = std::move(cluster).value();
      extra = {"--store", "etcd", "--etcd-servers", etcd->client_endpoints()[0]};
    }
    std::string dir = tmp.sub("data-" + backend);
    Server s;
    if (!start_server(skiff, dir, extra, &s)) {
      std::printf("%s: server failed to start; see %s.log\n", backend.c_str(), dir.c_str());
      return 1;
    }
    const char* name = backend.c_str();
    std::printf("\n## %s store\n\n", name);
    std::printf("Started in %.1f ms.\n\n", s.ready_ms);
    std::printf("### Pod creates over HTTPS, 1 KiB pods, 32 clients, %.0f s\n\n", seconds);
    std::printf("| what | clients | creates | per second | p50 ms | p99 ms | errors |\n");
    std::printf("|---|---|---|---|---|---|---|\n");
    bench_creates(name, s, 32, seconds, 700, "default");
    if (etcd) bench_raw_etcd(etcd->client_endpoints(), 32, seconds);

    Client admin(s.port, s.kubeconfig);
    admin.request(http::verb::post, "/api/v1/namespaces", R"({"metadata":{"name":"listns"}})");
    admin.request(http::verb::post, "/api/v1/namespaces", R"({"metadata":{"name":"watchns"}})");
    if (!fill(s, "listns", pods, 700)) {
      std::printf("filling %d pods failed\n", pods);
      return 1;
    }
    std::printf("\n### List of %d pods\n\n| store | format | pods | best ms | median ms | MiB |\n",
                pods);
    std::printf("|---|---|---|---|---|---|\n");
    bench_list(name, s, "listns", pods);

    std::printf("\n### %d watchers, %d events (small pods, 8 writers)\n\n", watchers, watch_events);
    std::printf(
        "| store | watchers | events | p50 ms | p99 ms | writes s | all delivered s | "
        "events received | streams ended early |\n|---|---|---|---|---|---|---|---|---|\n");
    bench_watch(name, s, watchers, watch_events, "watchns");
    long rss = rss_kb(s.proc.pid());
    s.proc.stop();

    Server again;
    if (!start_server(skiff, dir, extra, &again)) {
      std::printf("restart failed\n");
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::seconds(2));
    std::printf(
        "\nRSS after the runs above: %.1f MiB. Restart with %d+ pods stored: %.1f ms to "
        "ready, RSS %.1f MiB idle.\n",
        rss / 1024.0, pods, again.ready_ms, rss_kb(again.proc.pid()) / 1024.0);
    again.proc.stop();
    etcd.reset();
  }
  return 0;
}
