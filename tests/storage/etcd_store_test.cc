// What is specific to the etcd backend: error mapping from real etcd answers, failover between
// members when one is killed (writes and watches), and endpoint lists with dead members. The
// generic store behaviour is covered by the conformance suite.

#include "storage/etcd/etcd_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/etcd_cluster.h"
#include "support/ports.h"
#include "support/temp_dir.h"
#include "support/watch_collector.h"

namespace skiff::storage {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::EtcdCluster;
using testing::TempDir;
using testing::WatchCollector;

std::unique_ptr<EtcdCluster> start_cluster(int members, const TempDir& dir) {
  auto cluster = EtcdCluster::start(members, dir.path());
  EXPECT_TRUE(cluster.is_ok()) << cluster.status().to_string();
  if (!cluster.is_ok()) return nullptr;
  return std::move(cluster).value();
}

WatchOptions watch_options(KeyRange range, int64_t start_revision = 0, bool prev_kv = false) {
  WatchOptions options;
  options.range = std::move(range);
  options.start_revision = start_revision;
  options.prev_kv = prev_kv;
  return options;
}

std::unique_ptr<Store> open_store(std::vector<std::string> endpoints,
                                  milliseconds request_timeout = milliseconds(15000)) {
  EtcdStoreOptions options;
  options.endpoints = std::move(endpoints);
  options.compaction_window = milliseconds(0);
  options.attempt_timeout = milliseconds(1000);
  options.request_timeout = request_timeout;
  auto store = open_etcd_store(std::move(options));
  EXPECT_TRUE(store.is_ok()) << store.status().to_string();
  if (!store.is_ok()) return nullptr;
  return std::move(store).value();
}

TEST(EtcdStoreTest, MapsEtcdErrorsAndServesTheStoreApi) {
  TempDir dir("etcd-store-test");
  auto cluster = start_cluster(1, dir);
  ASSERT_TRUE(cluster);
  auto store = open_store(cluster->client_endpoints());
  ASSERT_TRUE(store);

  auto r1 = store->put("/a", "1");
  ASSERT_TRUE(r1.is_ok()) << r1.status().to_string();
  auto r2 = store->put("/a", "2");
  ASSERT_TRUE(r2.is_ok());
  auto r3 = store->put("/b", "3");
  ASSERT_TRUE(r3.is_ok());

  auto old = store->range(KeyRange::single("/a"), {.revision = *r1});
  ASSERT_TRUE(old.is_ok());
  ASSERT_EQ(old->kvs.size(), 1u);
  EXPECT_EQ(old->kvs[0]->value, "1");

  auto limited = store->range(KeyRange::prefix("/"), {.limit = 1, .keys_only = true});
  ASSERT_TRUE(limited.is_ok());
  EXPECT_EQ(limited->kvs.size(), 1u);
  EXPECT_EQ(limited->count, 2);
  EXPECT_TRUE(limited->more);
  EXPECT_EQ(limited->kvs[0]->value, "");
  EXPECT_EQ(limited->revision, *r3);

  auto counted = store->range(KeyRange::prefix("/"), {.count_only = true});
  ASSERT_TRUE(counted.is_ok());
  EXPECT_TRUE(counted->kvs.empty());
  EXPECT_EQ(counted->count, 2);

  EXPECT_EQ(store->range(KeyRange::single("/a"), {.revision = *r3 + 100}).status().code(),
            StatusCode::kFutureRevision);

  // Transactions: a value compare, prev_kv on put and delete, a range inside.
  Txn t;
  t.compare.push_back(Compare::value_is("/a", CompareOp::kEqual, "2"));
  t.success.push_back(Op::put("/a", "3", 0, /*prev_kv=*/true));
  t.success.push_back(Op::del(KeyRange::single("/b"), /*prev_kv=*/true));
  t.success.push_back(Op::get(KeyRange::prefix("/")));
  auto txn = store->txn(t);
  ASSERT_TRUE(txn.is_ok()) << txn.status().to_string();
  EXPECT_TRUE(txn->succeeded);
  ASSERT_EQ(txn->results.size(), 3u);
  ASSERT_TRUE(txn->results[0].prev_kv);
  EXPECT_EQ(txn->results[0].prev_kv->value, "2");
  EXPECT_EQ(txn->results[1].count, 1);
  ASSERT_EQ(txn->results[1].kvs.size(), 1u);
  EXPECT_EQ(txn->results[1].kvs[0]->value, "3");
  EXPECT_EQ(txn->results[2].count, 1);
  auto failed = store->txn(t);
  ASSERT_TRUE(failed.is_ok());
  EXPECT_FALSE(failed->succeeded);
  Txn absent;
  absent.compare.push_back(Compare::value_is("/missing", CompareOp::kNotEqual, "x"));
  absent.success.push_back(Op::put("/c", "c"));
  auto absent_result = store->txn(absent);
  ASSERT_TRUE(absent_result.is_ok());
  EXPECT_FALSE(absent_result->succeeded) << "a value compare on a missing key is false";

  // Limits are enforced before anything is sent.
  Txn too_big;
  too_big.success.push_back(Op::put("/big", std::string(kDefaultMaxValueBytes + 1, 'x')));
  EXPECT_EQ(store->txn(too_big).status().code(), StatusCode::kTooLarge);

  // Leases.
  auto lease = store->lease_grant(30);
  ASSERT_TRUE(lease.is_ok()) << lease.status().to_string();
  ASSERT_TRUE(store->put("/leased", "x", *lease).is_ok());
  auto ttl = store->lease_keep_alive(*lease);
  ASSERT_TRUE(ttl.is_ok()) << ttl.status().to_string();
  EXPECT_GT(*ttl, 0);
  EXPECT_TRUE(store->lease_revoke(*lease).is_ok());
  EXPECT_EQ(store->lease_keep_alive(*lease).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->lease_revoke(*lease).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->lease_keep_alive(123456789).status().code(), StatusCode::kNotFound);
  auto leased = store->get("/leased");
  ASSERT_TRUE(leased.is_ok());
  EXPECT_FALSE(*leased);

  // Watch with history, prev_kv and a requested progress notification.
  auto collector = WatchCollector::start(*store, watch_options(KeyRange::prefix("/"), *r2, true));
  ASSERT_TRUE(collector.is_ok()) << collector.status().to_string();
  auto events = (*collector)->wait_for(5, seconds(10));
  ASSERT_GE(events.size(), 5u);
  EXPECT_EQ(events[0].revision, *r2);
  ASSERT_TRUE(events[0].prev_kv);
  EXPECT_EQ(events[0].prev_kv->value, "1");
  auto current = store->current_revision();
  ASSERT_TRUE(current.is_ok());
  (*collector)->watch().request_progress();
  events = (*collector)->wait_for(events.size() + 1, seconds(10));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().type, EventType::kProgress);
  EXPECT_GE(events.back().revision, *current);
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_LE(events[i - 1].revision, events[i].revision) << "event " << i;
  }

  // Compaction: reads and watches below it answer kCompacted; compacting again too.
  auto head = store->current_revision();
  ASSERT_TRUE(head.is_ok());
  ASSERT_TRUE(store->compact(*head).is_ok());
  EXPECT_EQ(store->compact(*head).code(), StatusCode::kCompacted);
  EXPECT_EQ(store->compact(*head + 1000).code(), StatusCode::kFutureRevision);
  EXPECT_EQ(store->range(KeyRange::single("/a"), {.revision = *r1}).status().code(),
            StatusCode::kCompacted);
  auto compacted = WatchCollector::start(*store, watch_options(KeyRange::prefix("/"), *r1));
  ASSERT_TRUE(compacted.is_ok());
  EXPECT_EQ((*compacted)->wait_end(seconds(10)).code(), StatusCode::kCompacted);
  EXPECT_EQ((*compacted)->watch().compact_revision(), *head);
}

// Writers keep writing while the leader is SIGKILLed: every acknowledged write must be readable
// from the survivors afterwards, and writes must keep succeeding after the kill.
TEST(EtcdStoreTest, LeaderKilledDuringConcurrentWrites) {
  TempDir dir("etcd-store-test");
  auto cluster = start_cluster(3, dir);
  ASSERT_TRUE(cluster);
  auto leader = cluster->leader_index();
  ASSERT_TRUE(leader.is_ok()) << leader.status().to_string();
  // The leader first: the store starts on it, so the kill breaks the store's own connection.
  std::vector<std::string> endpoints = {cluster->client_endpoints()[*leader]};
  for (int i = 0; i < cluster->size(); ++i) {
    if (i != *leader) endpoints.push_back(cluster->client_endpoints()[i]);
  }
  auto store = open_store(endpoints);
  ASSERT_TRUE(store);

  constexpr int kWriters = 4;
  std::atomic<bool> stop{false};
  std::atomic<bool> killed{false};
  std::mutex mu;
  std::map<std::string, std::pair<std::string, int64_t>> acked;  // key -> value, revision
  std::vector<std::string> errors;
  std::atomic<int> acked_after_kill{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (int n = 0; !stop.load(); ++n) {
        std::string key = "/failover/w" + std::to_string(w) + "/" + std::to_string(n);
        std::string value = "value-" + std::to_string(w) + "-" + std::to_string(n);
        bool after_kill = killed.load();
        auto rev = store->put(key, value);
        std::lock_guard lock(mu);
        if (rev.is_ok()) {
          acked[key] = {value, *rev};
          if (after_kill) acked_after_kill.fetch_add(1);
        } else {
          errors.push_back(rev.status().to_string());
        }
      }
    });
  }
  std::this_thread::sleep_for(milliseconds(700));
  ASSERT_TRUE(cluster->kill_member(*leader).is_ok());
  killed = true;
  auto until = std::chrono::steady_clock::now() + seconds(20);
  while (acked_after_kill.load() < 200 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(50));
  }
  stop = true;
  for (auto& t : writers) t.join();

  EXPECT_TRUE(errors.empty()) << errors.size() << " writes failed, first: " << errors.front();
  EXPECT_GE(acked_after_kill.load(), 200) << "writes did not continue after the leader died";

  // Read back from the survivors only.
  std::vector<std::string> survivors;
  for (int i = 0; i < cluster->size(); ++i) {
    if (cluster->running(i)) survivors.push_back(cluster->client_endpoints()[i]);
  }
  auto reader = open_store(survivors);
  ASSERT_TRUE(reader);
  auto all = reader->range(KeyRange::prefix("/failover/"));
  ASSERT_TRUE(all.is_ok()) << all.status().to_string();
  std::map<std::string, KeyValuePtr> stored;
  for (auto& kv : all->kvs) stored[kv->key] = kv;
  size_t missing = 0;
  for (const auto& [key, value_rev] : acked) {
    auto it = stored.find(key);
    if (it == stored.end() || it->second->value != value_rev.first) {
      ++missing;
      ADD_FAILURE() << "acknowledged write of " << key << " at revision " << value_rev.second
                    << " is not readable";
      if (missing > 10) break;
    }
  }
  EXPECT_EQ(missing, 0u);

  // The original store keeps serving writes.
  auto after = store->put("/failover/after", "x");
  EXPECT_TRUE(after.is_ok()) << after.status().to_string();
}

// A watch whose stream runs on a member that is killed resumes on a survivor with no gap and no
// duplicate, for both a "from now" watch and one replaying history with prev_kv.
TEST(EtcdStoreTest, WatchSurvivesMemberKill) {
  TempDir dir("etcd-store-test");
  auto cluster = start_cluster(3, dir);
  ASSERT_TRUE(cluster);
  // The store starts on its first endpoint, so member 0 carries the watch stream.
  auto store = open_store(cluster->client_endpoints());
  ASSERT_TRUE(store);

  auto first = store->put("/watch/seed", "seed");
  ASSERT_TRUE(first.is_ok());
  auto live = WatchCollector::start(*store, watch_options(KeyRange::prefix("/watch/k")));
  ASSERT_TRUE(live.is_ok()) << live.status().to_string();
  auto replay =
      WatchCollector::start(*store, watch_options(KeyRange::prefix("/watch/"), *first, true));
  ASSERT_TRUE(replay.is_ok()) << replay.status().to_string();

  constexpr int kWrites = 300;
  constexpr int kKeys = 20;
  std::vector<int64_t> revisions;
  for (int i = 0; i < kWrites; ++i) {
    if (i == kWrites / 2) {
      ASSERT_TRUE(cluster->kill_member(0).is_ok());
    }
    auto rev = store->put("/watch/k" + std::to_string(i % kKeys), std::to_string(i));
    ASSERT_TRUE(rev.is_ok()) << "write " << i << ": " << rev.status().to_string();
    revisions.push_back(*rev);
  }

  auto check = [&](WatchCollector& c, size_t skip, bool with_prev) {
    auto events = c.wait_for(kWrites + skip, seconds(30));
    std::this_thread::sleep_for(milliseconds(300));  // duplicates would arrive by now
    events = c.events();
    EXPECT_TRUE(c.wait_end(milliseconds(1)).is_ok()) << "the watch ended";
    ASSERT_EQ(events.size(), kWrites + skip);
    for (int i = 0; i < kWrites; ++i) {
      const Event& e = events[skip + i];
      ASSERT_EQ(e.type, EventType::kPut);
      EXPECT_EQ(e.revision, revisions[i]) << "event " << i;
      EXPECT_EQ(e.kv->value, std::to_string(i)) << "event " << i;
      if (with_prev) {
        if (i >= kKeys) {
          ASSERT_TRUE(e.prev_kv) << "event " << i;
          EXPECT_EQ(e.prev_kv->value, std::to_string(i - kKeys));
        } else {
          EXPECT_FALSE(e.prev_kv) << "event " << i;
        }
      }
    }
  };
  check(**live, 0, false);
  check(**replay, 1, true);

  // Progress after the failover covers the last write.
  (*live)->watch().request_progress();
  auto events = (*live)->wait_for(kWrites + 1, seconds(10));
  ASSERT_EQ(events.size(), static_cast<size_t>(kWrites + 1));
  EXPECT_EQ(events.back().type, EventType::kProgress);
  EXPECT_GE(events.back().revision, revisions.back());
}

// etcd 3.4.23 may answer a progress request before events it covers (etcd-io/etcd#15220); the
// store must still never report progress past an event it has not delivered yet.
TEST(EtcdStoreTest, ProgressNeverOvertakesEvents) {
  TempDir dir("etcd-store-test");
  auto cluster = start_cluster(1, dir);
  ASSERT_TRUE(cluster);
  auto store = open_store(cluster->client_endpoints());
  ASSERT_TRUE(store);
  auto live = WatchCollector::start(*store, watch_options(KeyRange::prefix("/p/")));
  ASSERT_TRUE(live.is_ok());
  auto start = store->current_revision();
  ASSERT_TRUE(start.is_ok());
  // Replays history and then follows: the catching-up case.
  auto replay = WatchCollector::start(*store, watch_options(KeyRange::prefix("/p/"), 1));
  ASSERT_TRUE(replay.is_ok());

  std::atomic<bool> stop{false};
  std::atomic<int64_t> last_rev{0};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) {
      auto rev = store->put("/p/" + std::to_string(i % 7), std::to_string(i));
      if (rev.is_ok()) last_rev = *rev;
    }
  });
  size_t progress_seen = 0;
  for (int round = 0; round < 40; ++round) {
    (*live)->watch().request_progress();
    (*replay)->watch().request_progress();
    std::this_thread::sleep_for(milliseconds(25));
  }
  stop = true;
  writer.join();
  (*live)->watch().request_progress();
  (*replay)->watch().request_progress();
  std::this_thread::sleep_for(milliseconds(500));

  for (auto* c : {live->get(), replay->get()}) {
    auto events = c->events();
    EXPECT_TRUE(c->wait_end(milliseconds(1)).is_ok());
    int64_t delivered = 0;   // highest revision of a delivered event
    int64_t progressed = 0;  // highest progress revision
    for (const auto& e : events) {
      if (e.type == EventType::kProgress) {
        ++progress_seen;
        EXPECT_GE(e.revision, delivered);
        progressed = std::max(progressed, e.revision);
      } else {
        EXPECT_GT(e.revision, delivered) << "events out of order";
        EXPECT_GT(e.revision, progressed) << "an event arrived after progress covering it";
        delivered = e.revision;
      }
    }
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().type, EventType::kProgress);
    EXPECT_GE(events.back().revision, last_rev.load());
  }
  EXPECT_GT(progress_seen, 10u);
}

TEST(EtcdStoreTest, SlowWatcherIsCutOffAndWatchEndsWhenEtcdIsGone) {
  TempDir dir("etcd-store-test");
  auto cluster = start_cluster(1, dir);
  ASSERT_TRUE(cluster);
  auto store = open_store(cluster->client_endpoints(), milliseconds(2000));
  ASSERT_TRUE(store);
  auto options = watch_options(KeyRange::prefix("/slow/"));
  options.max_buffered_events = 10;
  auto slow = store->watch(options);
  ASSERT_TRUE(slow.is_ok());
  auto other = WatchCollector::start(*store, watch_options(KeyRange::prefix("/slow/")));
  ASSERT_TRUE(other.is_ok());
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(store->put("/slow/" + std::to_string(i), "x").is_ok());
  EXPECT_EQ((*other)->wait_for(30, seconds(10)).size(), 30u);
  std::vector<Event> events;
  Status s = (*slow)->poll(&events);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_LE(events.size(), 10u);

  // With the only member gone, the other watch ends once request_timeout has passed.
  ASSERT_TRUE(cluster->kill_member(0).is_ok());
  EXPECT_EQ((*other)->wait_end(seconds(20)).code(), StatusCode::kUnavailable);
  EXPECT_EQ(store->put("/slow/after", "x").status().code(), StatusCode::kUnavailable);
}

TEST(EtcdStoreTest, OpensWithADeadEndpointInTheList) {
  TempDir dir("etcd-store-test");
  auto cluster = start_cluster(3, dir);
  ASSERT_TRUE(cluster);
  auto endpoints = cluster->client_endpoints();
  ASSERT_TRUE(cluster->kill_member(0).is_ok());
  // A killed member first, then a port nobody listens on, then the two survivors.
  std::vector<std::string> list = {endpoints[0],
                                   "127.0.0.1:" + std::to_string(testing::free_tcp_port()),
                                   endpoints[1], endpoints[2]};
  auto store = open_store(list);
  ASSERT_TRUE(store);
  auto collector = WatchCollector::start(*store, watch_options(KeyRange::prefix("/dead/")));
  ASSERT_TRUE(collector.is_ok()) << collector.status().to_string();
  auto rev = store->put("/dead/a", "a");
  ASSERT_TRUE(rev.is_ok()) << rev.status().to_string();
  auto got = store->get("/dead/a");
  ASSERT_TRUE(got.is_ok());
  ASSERT_TRUE(*got);
  EXPECT_EQ((*got)->value, "a");
  auto events = (*collector)->wait_for(1, seconds(10));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].revision, *rev);
}

TEST(EtcdStoreTest, OpenFailsWhenNoEndpointAnswers) {
  EtcdStoreOptions options;
  options.endpoints = {"127.0.0.1:" + std::to_string(testing::free_tcp_port()),
                       "http://127.0.0.1:" + std::to_string(testing::free_tcp_port())};
  options.attempt_timeout = milliseconds(200);
  options.request_timeout = milliseconds(1000);
  auto store = open_etcd_store(options);
  ASSERT_FALSE(store.is_ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);

  options.endpoints = {"https://127.0.0.1:1"};
  EXPECT_FALSE(open_etcd_store(options).is_ok());
}

}  // namespace
}  // namespace skiff::storage
