// Store benchmarks: durable put throughput and latency by writer count, watch fan-out delivery
// latency, and a large range read, for the embedded backend and a real etcd on this machine.
// Prints figures; asserts nothing.

#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "storage/embedded/embedded_store.h"
#include "storage/etcd/etcd_store.h"
#include "storage/memory/memory_store.h"
#include "support/etcd_cluster.h"
#include "support/temp_dir.h"

namespace {

using skiff::storage::Event;
using skiff::storage::EventType;
using skiff::storage::KeyRange;
using skiff::storage::Store;
using Clock = std::chrono::steady_clock;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

long status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(std::strlen(field)));
  }
  return -1;
}

void reset_peak_rss() {
  int fd = open("/proc/self/clear_refs", O_WRONLY);
  if (fd >= 0) {
    (void)!write(fd, "5", 1);
    close(fd);
  }
}

std::string payload(size_t n, int64_t stamp) {
  std::string v = std::to_string(stamp);
  v.resize(n, 'x');
  return v;
}

void bench_puts(const std::string& name, Store& store, int writers, double seconds) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> lat(writers);
  std::vector<std::thread> threads;
  std::atomic<int64_t> errors{0};
  auto start = Clock::now();
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      std::string prefix = "/bench/puts/" + std::to_string(writers) + "/" + std::to_string(w) + "/";
      for (int64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        auto t0 = now_ns();
        auto r = store.put(prefix + std::to_string(i % 1000), payload(1024, t0));
        if (!r.is_ok()) {
          ++errors;
          continue;
        }
        lat[w].push_back(static_cast<double>(now_ns() - t0) / 1e6);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  double n = static_cast<double>(all.size());
  std::printf("| %-8s | %3d | %8.0f | %7.2f | %7.2f | %ld |\n", name.c_str(), writers, n / elapsed,
              percentile(all, 0.50), percentile(all, 0.99), errors.load());
  std::fflush(stdout);
}

// 1000 watchers on one prefix; a writer lands `puts` puts whose values carry their send time.
// Consumer threads poll whichever watchers were notified and record delivery latency.
void bench_fanout(const std::string& name, Store& store, int watchers, int puts) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<int> ready;
    bool done = false;
  } shared;
  std::vector<std::atomic<bool>> queued(watchers);
  // Declared after what their notify callbacks touch, so they go first.
  std::vector<std::unique_ptr<skiff::storage::Watch>> ws(watchers);
  std::string prefix = "/bench/fanout/" + std::to_string(now_ns()) + "/";
  for (int i = 0; i < watchers; ++i) {
    skiff::storage::WatchOptions o;
    o.range = KeyRange::prefix(prefix);
    o.max_buffered_events = static_cast<size_t>(puts) + 16;
    o.notify = [&shared, &queued, i] {
      if (queued[i].exchange(true)) return;
      {
        std::lock_guard lock(shared.mu);
        shared.ready.push_back(i);
      }
      shared.cv.notify_one();
    };
    auto w = store.watch(std::move(o));
    if (!w.is_ok()) {
      std::printf("watch failed: %s\n", w.status().to_string().c_str());
      return;
    }
    ws[i] = std::move(w).value();
  }
  std::atomic<int64_t> received{0};
  std::atomic<int64_t> failed{0};
  const int consumers = 4;
  std::vector<std::vector<double>> lat(consumers);
  std::vector<std::thread> threads;
  for (int c = 0; c < consumers; ++c) {
    threads.emplace_back([&, c] {
      std::vector<Event> events;
      while (true) {
        int i;
        {
          std::unique_lock lock(shared.mu);
          shared.cv.wait(lock, [&] { return shared.done || !shared.ready.empty(); });
          if (shared.ready.empty()) return;
          i = shared.ready.front();
          shared.ready.pop_front();
        }
        queued[i] = false;
        events.clear();
        auto s = ws[i]->poll(&events);
        if (!s.is_ok()) ++failed;
        int64_t t = now_ns();
        for (const Event& e : events) {
          if (e.type != EventType::kPut) continue;
          lat[c].push_back(static_cast<double>(t - std::stoll(e.kv->value.substr(0, 19))) / 1e6);
        }
        received += static_cast<int64_t>(events.size());
      }
    });
  }
  auto start = Clock::now();
  for (int i = 0; i < puts; ++i)
    (void)store.put(prefix + std::to_string(i % 100), payload(1024, now_ns()));
  double write_s = std::chrono::duration<double>(Clock::now() - start).count();
  int64_t want = static_cast<int64_t>(watchers) * puts;
  auto deadline = Clock::now() + std::chrono::seconds(120);
  while (received < want && failed == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  double all_s = std::chrono::duration<double>(Clock::now() - start).count();
  {
    std::lock_guard lock(shared.mu);
    shared.done = true;
  }
  shared.cv.notify_all();
  for (auto& t : threads) t.join();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  std::printf(
      "| %-8s | %d | %d | %.2f | %.2f | %.2f | %.1f | %ld/%ld delivered, %ld watchers ended early "
      "|\n",
      name.c_str(), watchers, puts, percentile(all, 0.5), percentile(all, 0.99),
      percentile(all, 0.999), write_s > 0 ? puts / write_s : 0.0,
      static_cast<long>(received.load()), static_cast<long>(want),
      static_cast<long>(failed.load()));
  (void)all_s;
  std::fflush(stdout);
}

void bench_range(const std::string& name, Store& store, int keys) {
  std::string prefix = "/bench/range/" + std::to_string(now_ns()) + "/";
  // Load in transactions of 100 puts, as a bulk loader would.
  for (int i = 0; i < keys; i += 100) {
    skiff::storage::Txn t;
    for (int j = i; j < std::min(keys, i + 100); ++j) {
      char key[32];
      std::snprintf(key, sizeof(key), "%06d", j);
      t.success.push_back(skiff::storage::Op::put(prefix + key, payload(1024, j)));
    }
    auto r = store.txn(t);
    if (!r.is_ok()) {
      std::printf("load failed: %s\n", r.status().to_string().c_str());
      return;
    }
  }
  std::vector<double> times;
  long base_rss = status_kb("VmRSS:");
  long peak_delta = 0;
  double held_mib = 0;
  for (int round = 0; round < 5; ++round) {
    reset_peak_rss();
    long before = status_kb("VmRSS:");
    size_t heap_before = mallinfo2().uordblks;
    auto t0 = now_ns();
    auto r = store.range(KeyRange::prefix(prefix));
    double ms = static_cast<double>(now_ns() - t0) / 1e6;
    held_mib =
        std::max(held_mib, static_cast<double>(mallinfo2().uordblks - heap_before) / 1048576.0);
    long peak = status_kb("VmHWM:");
    if (!r.is_ok() || r->count != keys) {
      std::printf("range failed: %s\n", r.is_ok() ? "wrong count" : r.status().to_string().c_str());
      return;
    }
    times.push_back(ms);
    peak_delta = std::max(peak_delta, peak - before);
  }
  std::sort(times.begin(), times.end());
  std::printf("| %-8s | %d | %.1f | %.1f | %.1f | %.1f | %ld |\n", name.c_str(), keys,
              times.front(), times[times.size() / 2], held_mib, peak_delta / 1024.0,
              base_rss / 1024);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"skiff store benchmarks"};
  std::vector<std::string> backends{"embedded", "etcd"};
  std::vector<int> writers{1, 32, 256};
  double seconds = 5;
  int watchers = 1000;
  int fanout_puts = 10000;
  int range_keys = 10000;
  std::string dir;
  app.add_option("--backends", backends, "embedded, etcd, memory")->delimiter(',');
  app.add_option("--writers", writers)->delimiter(',');
  app.add_option("--seconds", seconds, "Duration of each put run");
  app.add_option("--watchers", watchers);
  app.add_option("--fanout-puts", fanout_puts);
  app.add_option("--range-keys", range_keys);
  app.add_option("--dir", dir, "Where data lives (default: a temp dir under /var/tmp)");
  CLI11_PARSE(app, argc, argv);
  skiff::set_log_level("warn");

  // /var/tmp: on disk, like a real data dir (/tmp may be tmpfs, which never syncs).
  if (dir.empty() && std::getenv("TMPDIR") == nullptr) setenv("TMPDIR", "/var/tmp", 1);
  skiff::testing::TempDir tmp("skiff-bench");
  if (dir.empty()) dir = tmp.path();

  struct Opened {
    std::string name;
    std::unique_ptr<Store> store;
    std::unique_ptr<skiff::testing::EtcdCluster> etcd;
  };
  std::vector<Opened> stores;
  for (const auto& b : backends) {
    Opened o{b, nullptr, nullptr};
    if (b == "embedded") {
      auto s = skiff::storage::open_embedded_store(
          {dir + "/embedded", {}, std::chrono::milliseconds(0)});
      if (!s.is_ok()) {
        std::fprintf(stderr, "embedded: %s\n", s.status().to_string().c_str());
        return 1;
      }
      o.store = std::move(s).value();
    } else if (b == "memory") {
      o.store = skiff::storage::new_memory_store({});
    } else if (b == "etcd") {
      auto cluster = skiff::testing::EtcdCluster::start(1, dir + "/etcd");
      if (!cluster.is_ok()) {
        std::fprintf(stderr, "etcd: %s\n", cluster.status().to_string().c_str());
        return 1;
      }
      o.etcd = std::move(cluster).value();
      skiff::storage::EtcdStoreOptions eo;
      eo.endpoints = o.etcd->client_endpoints();
      eo.compaction_window = std::chrono::milliseconds(0);
      auto s = skiff::storage::open_etcd_store(eo);
      if (!s.is_ok()) {
        std::fprintf(stderr, "etcd: %s\n", s.status().to_string().c_str());
        return 1;
      }
      o.store = std::move(s).value();
    } else {
      std::fprintf(stderr, "unknown backend %s\n", b.c_str());
      return 2;
    }
    stores.push_back(std::move(o));
  }

  std::printf("## Range over %d keys of 1 KiB (run first, on a fresh process)\n\n", range_keys);
  std::printf(
      "| backend | keys | best ms | median ms | result heap MiB | peak RSS growth MiB | RSS before "
      "MiB |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (auto& o : stores) bench_range(o.name, *o.store, range_keys);
  std::printf("\n## Durable puts, 1 KiB values (%.0f s per run)\n\n", seconds);
  std::printf("| backend | writers | puts/s | p50 ms | p99 ms | errors |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (int w : writers) {
    for (auto& o : stores) bench_puts(o.name, *o.store, w, seconds);
  }
  std::printf("\n## Watch fan-out: %d watchers on one prefix, %d puts of 1 KiB\n\n", watchers,
              fanout_puts);
  std::printf(
      "| backend | watchers | puts | p50 ms | p99 ms | p99.9 ms | puts/s while watched | delivery "
      "|\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (auto& o : stores) bench_fanout(o.name, *o.store, watchers, fanout_puts);
  return 0;
}
