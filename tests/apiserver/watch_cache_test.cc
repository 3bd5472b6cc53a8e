#include "apiserver/watch_cache.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "api/schema.h"
#include "apiserver/registry.h"
#include "apiserver/request_info.h"
#include "apiserver/strategies.h"
#include "httpserver/http.h"
#include "storage/memory/memory_store.h"
#include "support/watch_collector.h"

namespace skiff::apiserver {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using storage::EventType;
using storage::KeyRange;
using Clock = std::chrono::steady_clock;

constexpr char kPods[] = "/registry/pods/";

// ---------------------------------------------------------------------------------------------
// A store whose watches the test can hold back (events wait, unpolled) or break.

struct WatchControl {
  std::mutex mu;
  bool paused = false;           // guarded by mu
  std::optional<Status> failed;  // guarded by mu
  std::function<void()> notify;  // guarded by mu; cleared when the watch is destroyed
  bool pending = false;          // guarded by mu; a notification held back while paused

  void forward() {
    std::lock_guard lock(mu);
    if (paused) {
      pending = true;
      return;
    }
    if (notify) notify();
  }
};

class ControlledWatch final : public storage::Watch {
 public:
  ControlledWatch(std::unique_ptr<storage::Watch> inner, std::shared_ptr<WatchControl> ctl)
      : inner_(std::move(inner)), ctl_(std::move(ctl)) {}
  ~ControlledWatch() override {
    inner_.reset();  // no inner notification after this
    std::lock_guard lock(ctl_->mu);
    ctl_->notify = nullptr;
  }
  Status poll(std::vector<storage::Event>* out) override {
    {
      std::lock_guard lock(ctl_->mu);
      if (ctl_->failed) return *ctl_->failed;
      if (ctl_->paused) return Status::ok();
    }
    return inner_->poll(out);
  }
  void request_progress() override { inner_->request_progress(); }
  void cancel() override { inner_->cancel(); }
  int64_t compact_revision() const override { return inner_->compact_revision(); }

 private:
  std::unique_ptr<storage::Watch> inner_;
  std::shared_ptr<WatchControl> ctl_;
};

class ControlledStore final : public storage::Store {
 public:
  explicit ControlledStore(storage::Store& inner) : inner_(inner) {}

  Result<storage::RangeResult> range(const KeyRange& r, const storage::RangeOptions& o) override {
    return inner_.range(r, o);
  }
  Result<storage::TxnResult> txn(const storage::Txn& t) override { return inner_.txn(t); }
  Result<std::unique_ptr<storage::Watch>> watch(storage::WatchOptions options) override {
    auto ctl = std::make_shared<WatchControl>();
    ctl->notify = std::move(options.notify);
    {
      std::lock_guard lock(mu_);
      ctl->paused = paused_;
    }
    options.notify = [ctl] { ctl->forward(); };
    auto w = inner_.watch(std::move(options));
    if (!w.is_ok()) return w.status();
    std::lock_guard lock(mu_);
    controls_.push_back(ctl);
    ++opened_;
    return std::unique_ptr<storage::Watch>(
        std::make_unique<ControlledWatch>(std::move(w).value(), ctl));
  }
  Result<int64_t> lease_grant(int64_t ttl) override { return inner_.lease_grant(ttl); }
  Status lease_revoke(int64_t id) override { return inner_.lease_revoke(id); }
  Result<int64_t> lease_keep_alive(int64_t id) override { return inner_.lease_keep_alive(id); }
  Status compact(int64_t revision) override { return inner_.compact(revision); }
  Result<int64_t> current_revision() override { return inner_.current_revision(); }

  // Holds back the events of every watch (and of watches opened later).
  void pause(bool paused) {
    std::vector<std::shared_ptr<WatchControl>> controls;
    {
      std::lock_guard lock(mu_);
      paused_ = paused;
      controls = controls_;
    }
    for (auto& c : controls) {
      std::lock_guard lock(c->mu);
      c->paused = paused;
      if (!paused && c->notify) c->notify();
    }
  }
  // Ends every open watch with `status`; what they held back is lost.
  void fail(Status status) {
    std::vector<std::shared_ptr<WatchControl>> controls;
    {
      std::lock_guard lock(mu_);
      controls.swap(controls_);
      paused_ = false;
    }
    for (auto& c : controls) {
      std::lock_guard lock(c->mu);
      c->failed = status;
      c->paused = false;
      if (c->notify) c->notify();
    }
  }
  int opened() {
    std::lock_guard lock(mu_);
    return opened_;
  }

 private:
  storage::Store& inner_;
  std::mutex mu_;
  bool paused_ = false;                                  // guarded by mu_
  std::vector<std::shared_ptr<WatchControl>> controls_;  // guarded by mu_
  int opened_ = 0;                                       // guarded by mu_
};

// ---------------------------------------------------------------------------------------------
// Helpers for the cache on its own.

// A consumer of a CacheWatcher that collects what it is sent.
class Collector {
 public:
  explicit Collector(std::unique_ptr<CacheWatcher> w) : watcher_(std::move(w)) {
    watcher_->set_notify([this] {
      {
        std::lock_guard lock(mu_);
        woken_ = true;
      }
      cv_.notify_all();
    });
  }

  // Waits until n events (progress included) arrived, the watch ended or the timeout passed.
  std::vector<CacheEventPtr> wait_for(size_t n, milliseconds timeout = milliseconds(5000)) {
    auto deadline = Clock::now() + timeout;
    std::unique_lock lock(mu_);
    while (true) {
      drain_locked();
      if (events_.size() >= n || ended_ || Clock::now() >= deadline) return events_;
      cv_.wait_until(lock, std::min(deadline, Clock::now() + milliseconds(50)),
                     [this] { return woken_; });
      woken_ = false;
    }
  }
  Status end_status() {
    std::lock_guard lock(mu_);
    drain_locked();
    return end_;
  }
  bool ended() {
    std::lock_guard lock(mu_);
    drain_locked();
    return ended_;
  }
  CacheWatcher& watcher() { return *watcher_; }

 private:
  void drain_locked() {
    if (ended_) return;
    std::vector<CacheEventPtr> got;
    Status s = watcher_->poll(&got);
    for (auto& e : got) events_.push_back(std::move(e));
    if (!s.is_ok()) {
      ended_ = true;
      end_ = s;
    }
  }

  std::unique_ptr<CacheWatcher> watcher_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool woken_ = false;
  std::vector<CacheEventPtr> events_;
  bool ended_ = false;
  Status end_;
};

int64_t put(storage::Store& store, const std::string& key, const std::string& value) {
  auto r = store.put(key, value);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? *r : 0;
}

std::string value_for(const std::string& name, int n, const std::string& app = "web") {
  return json{{"metadata", {{"name", name}, {"labels", {{"app", app}}}}}, {"n", n}}.dump();
}

// The cache's list must be the store's range: same keys, bytes and revisions.
void expect_same_as_store(WatchCache& cache, storage::Store& store, const std::string& prefix) {
  auto current = store.current_revision();
  ASSERT_TRUE(current.is_ok());
  auto snap = cache.list(prefix, {}, *current);
  ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
  EXPECT_GE(snap->revision, *current);
  auto ranged = store.range(KeyRange::prefix(prefix));
  ASSERT_TRUE(ranged.is_ok());
  ASSERT_EQ(snap->objects.size(), ranged->kvs.size()) << prefix;
  for (size_t i = 0; i < ranged->kvs.size(); ++i) {
    const storage::KeyValue& want = *ranged->kvs[i];
    const storage::KeyValue& got = snap->objects[i]->kv();
    EXPECT_EQ(got.key, want.key);
    EXPECT_EQ(got.value, want.value);
    EXPECT_EQ(got.mod_revision, want.mod_revision);
    EXPECT_EQ(got.version, want.version);
    // The memory store hands out shared values: the cache holds the very same bytes.
    EXPECT_EQ(snap->objects[i]->kv_ptr().get(), ranged->kvs[i].get());
  }
}

WatchCacheOptions fast_options() {
  WatchCacheOptions o;
  // Long enough that a loaded machine does not time out a read that should succeed.
  o.fresh_timeout = milliseconds(2000);
  o.max_retry_backoff = milliseconds(200);
  return o;
}

std::unique_ptr<WatchCache> started_cache(storage::Store& store, WatchCacheOptions o,
                                          const std::string& prefix = kPods) {
  auto cache =
      std::make_unique<WatchCache>(store, prefix, std::vector<std::string>{"metadata.name"}, o);
  cache->start();
  EXPECT_TRUE(cache->wait_ready(milliseconds(5000)));
  return cache;
}

bool eventually(const std::function<bool()>& cond, milliseconds timeout = milliseconds(5000)) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return cond();
}

// ---------------------------------------------------------------------------------------------
// The cache on its own

TEST(WatchCacheTest, ListEqualsStoreAfterRandomWrites) {
  auto store = storage::new_memory_store({});
  put(*store, "/registry/pods/a/before", value_for("before", 0));
  auto cache = started_cache(*store, fast_options());
  std::mt19937 rng(7);
  const std::vector<std::string> namespaces = {"a", "b", "c"};
  for (int step = 0; step < 600; ++step) {
    std::string ns = namespaces[rng() % namespaces.size()];
    std::string key = "/registry/pods/" + ns + "/p" + std::to_string(rng() % 40);
    switch (rng() % 6) {
      case 0:
      case 1:
      case 2:
        put(*store, key, value_for("p", step));
        break;
      case 3:
        ASSERT_TRUE(store->del(KeyRange::single(key)).is_ok());
        break;
      case 4: {
        // Several keys in one revision.
        storage::Txn t;
        int first = static_cast<int>(rng() % 10);
        for (int i = 0; i < 3; ++i) {
          t.success.push_back(storage::Op::put(
              "/registry/pods/" + ns + "/t" + std::to_string(first + i), value_for("t", step)));
        }
        t.success.push_back(storage::Op::del(KeyRange::single(key)));
        auto done = store->txn(t);
        ASSERT_TRUE(done.is_ok()) << done.status().to_string();
        break;
      }
      case 5:
        // Writes outside the prefix move the store's revision only.
        put(*store, "/registry/configmaps/" + ns + "/x", value_for("x", step));
        break;
    }
    if (step % 97 == 0) expect_same_as_store(*cache, *store, kPods);
  }
  // A whole namespace deleted in one revision.
  ASSERT_TRUE(store->del(KeyRange::prefix("/registry/pods/b/")).is_ok());
  expect_same_as_store(*cache, *store, kPods);
  for (const std::string& ns : namespaces) {
    expect_same_as_store(*cache, *store, "/registry/pods/" + ns + "/");
  }
  EXPECT_EQ(cache->stats().fresh_timeouts, 0u);
}

TEST(WatchCacheTest, ConsistentReadCatchesUpThroughProgress) {
  auto store = storage::new_memory_store({});
  auto cache = started_cache(*store, fast_options());
  put(*store, "/registry/pods/a/p", value_for("p", 1));
  // Only other prefixes are written: the cache sees no event, the store's revision moves on.
  int64_t last = 0;
  for (int i = 0; i < 5; ++i) last = put(*store, "/registry/configmaps/a/c", value_for("c", i));
  auto t0 = Clock::now();
  auto snap = cache->list("/registry/pods/a/", {}, last);
  ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
  EXPECT_GE(snap->revision, last);
  EXPECT_LT(Clock::now() - t0, milliseconds(1500));  // well within the fallback timeout
  EXPECT_EQ(snap->objects.size(), 1u);
  EXPECT_EQ(cache->stats().fresh_timeouts, 0u);
}

TEST(WatchCacheTest, AnyRevisionServesAStaleCacheAndAFreshReadGivesUp) {
  auto inner = storage::new_memory_store({});
  ControlledStore store(*inner);
  auto cache = started_cache(store, fast_options());
  int64_t first = put(store, "/registry/pods/a/one", value_for("one", 1));
  ASSERT_TRUE(eventually([&] { return cache->revision() >= first; }));
  store.pause(true);
  int64_t second = put(store, "/registry/pods/a/two", value_for("two", 2));

  // Any revision: the cache as it is, without the second pod.
  auto any = cache->list(kPods);
  ASSERT_TRUE(any.is_ok());
  EXPECT_EQ(any->objects.size(), 1u);
  EXPECT_EQ(any->revision, first);
  // Not older than the second write: the cache cannot get there and says so in time.
  auto t0 = Clock::now();
  auto fresh = cache->list(kPods, {}, second);
  EXPECT_EQ(fresh.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_GE(Clock::now() - t0, milliseconds(1900));
  EXPECT_EQ(cache->stats().fresh_timeouts, 1u);

  store.pause(false);
  auto caught_up = cache->list(kPods, {}, second);
  ASSERT_TRUE(caught_up.is_ok()) << caught_up.status().to_string();
  EXPECT_EQ(caught_up->objects.size(), 2u);
  // Exactly at a revision: only when the cache is there.
  EXPECT_TRUE(cache->list(kPods, {}, 0, caught_up->revision).is_ok());
  EXPECT_EQ(cache->list(kPods, {}, 0, first).status().code(), StatusCode::kFailedPrecondition);
}

// Events as (type, key, revision, value) for comparison with a store watch.
struct Seen {
  EventType type;
  std::string key;
  int64_t revision;
  std::string value;
  bool operator==(const Seen&) const = default;
};

std::vector<Seen> seen(const std::vector<CacheEventPtr>& events) {
  std::vector<Seen> out;
  for (const auto& e : events) {
    if (e->type == EventType::kProgress) continue;
    out.push_back({e->type, e->key(), e->revision,
                   e->type == EventType::kPut ? e->object->kv().value : std::string()});
  }
  return out;
}

std::vector<Seen> seen(const std::vector<storage::Event>& events) {
  std::vector<Seen> out;
  for (const auto& e : events) {
    if (e.type == EventType::kProgress) continue;
    out.push_back(
        {e.type, e.kv->key, e.revision, e.type == EventType::kPut ? e.kv->value : std::string()});
  }
  return out;
}

TEST(WatchCacheTest, WatchFromAnOldRevisionReplaysExactlyTheMissedEvents) {
  auto store = storage::new_memory_store({});
  auto cache = started_cache(*store, fast_options());
  std::vector<int64_t> revisions;
  for (int i = 0; i < 40; ++i) {
    std::string key =
        "/registry/pods/" + std::string(i % 3 ? "a" : "b") + "/p" + std::to_string(i % 7);
    if (i % 5 == 4) {
      ASSERT_TRUE(store->del(KeyRange::single(key)).is_ok());
      auto rev = store->current_revision();
      revisions.push_back(*rev);
    } else {
      revisions.push_back(put(*store, key, value_for("p", i)));
    }
    put(*store, "/registry/other/x", "{}");
  }
  int64_t last = revisions.back();
  ASSERT_TRUE(eventually([&] { return cache->revision() >= last; }));
  for (size_t from : {size_t(0), size_t(13), size_t(38)}) {
    for (const std::string& prefix : {std::string(kPods), std::string("/registry/pods/a/")}) {
      int64_t after = revisions[from];
      WatchCache::WatchRequest req;
      req.key_prefix = prefix;
      req.after_revision = after;
      auto started = cache->watch(req);
      ASSERT_TRUE(started.is_ok()) << started.status().to_string();
      EXPECT_EQ(started->revision, after);
      Collector got(std::move(started->watcher));

      storage::WatchOptions wo;
      wo.range = KeyRange::prefix(prefix);
      wo.start_revision = after + 1;
      auto want = testing::WatchCollector::start(*store, wo);
      ASSERT_TRUE(want.is_ok());
      size_t expected = 0;
      for (int64_t r : revisions) expected += r > after ? 1 : 0;  // an upper bound per prefix
      auto want_events = seen((*want)->wait_for(expected, milliseconds(300)));
      auto got_events = seen(got.wait_for(want_events.size()));
      EXPECT_EQ(got_events, want_events) << "after " << after << " under " << prefix;
      EXPECT_FALSE(want_events.empty());

      // Later writes follow, in order, with nothing repeated.
      int64_t rev = put(*store, prefix + "late", value_for("late", 0));
      auto more = seen(got.wait_for(want_events.size() + 1));
      ASSERT_EQ(more.size(), want_events.size() + 1);
      EXPECT_EQ(more.back().revision, rev);
      ASSERT_TRUE(store->del(KeyRange::single(prefix + "late")).is_ok());
      auto current = store->current_revision();
      ASSERT_TRUE(eventually([&] { return cache->revision() >= *current; }));
      revisions.push_back(*current);
    }
  }
}

TEST(WatchCacheTest, WatchFromBeforeTheWindowIsTooOld) {
  auto store = storage::new_memory_store({});
  WatchCacheOptions o = fast_options();
  o.max_events = 10;
  auto cache = started_cache(*store, o);
  int64_t start = cache->revision();
  std::vector<int64_t> revisions;
  for (int i = 0; i < 30; ++i)
    revisions.push_back(put(*store, "/registry/pods/a/p", value_for("p", i)));
  ASSERT_TRUE(eventually([&] { return cache->revision() >= revisions.back(); }));
  WatchCache::Stats stats = cache->stats();
  EXPECT_EQ(stats.events, 10u);
  EXPECT_EQ(stats.oldest_revision, revisions[19]);

  for (int64_t after : {start, revisions[0], revisions[18]}) {
    WatchCache::WatchRequest req;
    req.key_prefix = kPods;
    req.after_revision = after;
    auto started = cache->watch(req);
    EXPECT_EQ(started.status().code(), StatusCode::kCompacted) << after;
    EXPECT_EQ(started.status().message(), "too old resource version: " + std::to_string(after) +
                                              " (" + std::to_string(revisions[19]) + ")");
  }
  // The oldest revision still served replays the ten events after it.
  WatchCache::WatchRequest req;
  req.key_prefix = kPods;
  req.after_revision = revisions[19];
  auto started = cache->watch(req);
  ASSERT_TRUE(started.is_ok());
  Collector got(std::move(started->watcher));
  auto events = got.wait_for(10);
  ASSERT_EQ(events.size(), 10u);
  EXPECT_EQ(events.front()->revision, revisions[20]);

  // Age bounds the window too.
  WatchCacheOptions aged = fast_options();
  aged.max_event_age = milliseconds(100);
  auto cache2 = started_cache(*store, aged);
  int64_t a = put(*store, "/registry/pods/a/q", value_for("q", 1));
  std::this_thread::sleep_for(milliseconds(200));
  int64_t b = put(*store, "/registry/pods/a/q", value_for("q", 2));
  ASSERT_TRUE(eventually([&] { return cache2->revision() >= b; }));
  req.after_revision = a - 1;
  EXPECT_EQ(cache2->watch(req).status().code(), StatusCode::kCompacted);
  req.after_revision = a;
  EXPECT_TRUE(cache2->watch(req).is_ok());
}

TEST(WatchCacheTest, InitialEventsAndBookmarks) {
  auto store = storage::new_memory_store({});
  auto cache = started_cache(*store, fast_options());
  put(*store, "/registry/pods/a/x", value_for("x", 1));
  put(*store, "/registry/pods/b/y", value_for("y", 1));
  int64_t rev = put(*store, "/registry/pods/a/z", value_for("z", 1));
  WatchCache::WatchRequest req;
  req.key_prefix = "/registry/pods/a/";
  req.initial = true;
  req.min_revision = rev;
  auto started = cache->watch(req);
  ASSERT_TRUE(started.is_ok());
  EXPECT_GE(started->revision, rev);
  ASSERT_EQ(started->initial.size(), 2u);
  EXPECT_EQ(started->initial[0]->kv().key, "/registry/pods/a/x");
  EXPECT_EQ(started->initial[1]->kv().key, "/registry/pods/a/z");
  Collector got(std::move(started->watcher));
  int64_t next = put(*store, "/registry/pods/a/x", value_for("x", 2));
  auto events = got.wait_for(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]->revision, next);
  ASSERT_TRUE(events[0]->prev);
  EXPECT_EQ(events[0]->prev->kv().value, value_for("x", 1));
  // A bookmark carries the revision everything up to which was sent.
  int64_t elsewhere = put(*store, "/registry/pods/b/y", value_for("y", 2));
  ASSERT_TRUE(eventually([&] { return cache->revision() >= elsewhere; }));
  got.watcher().request_bookmark();
  events = got.wait_for(2);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1]->type, EventType::kProgress);
  EXPECT_EQ(events[1]->revision, elsewhere);
}

TEST(WatchCacheTest, ASlowWatcherIsCutOffWithoutStallingOthers) {
  auto store = storage::new_memory_store({});
  WatchCacheOptions o = fast_options();
  o.watcher_buffer_events = 8;
  auto cache = started_cache(*store, o);
  WatchCache::WatchRequest req;
  req.key_prefix = kPods;
  auto slow = cache->watch(req);  // never polled until the end
  ASSERT_TRUE(slow.is_ok());
  auto fast_start = cache->watch(req);
  ASSERT_TRUE(fast_start.is_ok());
  Collector fast(std::move(fast_start->watcher));
  int64_t last = 0;
  for (int i = 0; i < 100; ++i) {
    last = put(*store, "/registry/pods/a/p" + std::to_string(i % 5), value_for("p", i));
    // The fast one keeps up; its buffer never holds more than a few events.
    fast.wait_for(static_cast<size_t>(i + 1));
  }
  auto events = fast.wait_for(100);
  ASSERT_EQ(events.size(), 100u);
  EXPECT_EQ(events.back()->revision, last);
  EXPECT_FALSE(fast.ended());
  EXPECT_GE(cache->revision(), last);

  std::vector<CacheEventPtr> got;
  Status s = slow->watcher->poll(&got);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_LE(got.size(), 8u);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i]->revision, events[i]->revision);
  WatchCache::Stats stats = cache->stats();
  EXPECT_EQ(stats.watchers_cut_off, 1u);
  EXPECT_EQ(stats.watchers, 1u);
}

TEST(WatchCacheTest, ResumesTheStoreWatchAfterAFailure) {
  auto inner = storage::new_memory_store({});
  ControlledStore store(*inner);
  auto cache = started_cache(store, fast_options());
  WatchCache::WatchRequest req;
  req.key_prefix = kPods;
  auto started = cache->watch(req);
  ASSERT_TRUE(started.is_ok());
  Collector got(std::move(started->watcher));
  put(store, "/registry/pods/a/p", value_for("p", 0));
  ASSERT_EQ(got.wait_for(1).size(), 1u);

  // The store watch breaks (an etcd member went away) after events the cache never saw.
  store.pause(true);
  std::vector<int64_t> missed;
  for (int i = 1; i <= 5; ++i)
    missed.push_back(put(store, "/registry/pods/a/p", value_for("p", i)));
  store.fail(Status(StatusCode::kUnavailable, "member down"));
  auto events = got.wait_for(6);
  ASSERT_EQ(events.size(), 6u);
  for (size_t i = 0; i < missed.size(); ++i) EXPECT_EQ(events[i + 1]->revision, missed[i]);
  EXPECT_FALSE(got.ended());
  WatchCache::Stats stats = cache->stats();
  EXPECT_EQ(stats.rewatches, 1u);
  EXPECT_EQ(stats.relists, 0u);
  EXPECT_EQ(store.opened(), 2);
  expect_same_as_store(*cache, *inner, kPods);
}

TEST(WatchCacheTest, RelistsWhenTheHistoryIsGoneAndEndsItsWatchers) {
  auto inner = storage::new_memory_store({});
  ControlledStore store(*inner);
  auto cache = started_cache(store, fast_options());
  put(store, "/registry/pods/a/keep", value_for("keep", 0));
  put(store, "/registry/pods/a/gone", value_for("gone", 0));
  WatchCache::WatchRequest req;
  req.key_prefix = kPods;
  auto started = cache->watch(req);
  ASSERT_TRUE(started.is_ok());
  Collector old_watcher(std::move(started->watcher));

  store.pause(true);
  put(store, "/registry/pods/a/new", value_for("new", 0));
  ASSERT_TRUE(store.del(KeyRange::single("/registry/pods/a/gone")).is_ok());
  int64_t now = put(store, "/registry/configmaps/a/c", "{}");
  ASSERT_TRUE(inner->compact(now).is_ok());
  store.fail(Status(StatusCode::kUnavailable, "member down"));

  ASSERT_TRUE(eventually([&] { return cache->stats().relists == 1; }));
  old_watcher.wait_for(1000, milliseconds(2000));
  EXPECT_TRUE(old_watcher.ended());
  EXPECT_EQ(old_watcher.end_status().code(), StatusCode::kCompacted);
  expect_same_as_store(*cache, *inner, kPods);

  // New watchers work from the new state on.
  auto fresh = cache->watch(req);
  ASSERT_TRUE(fresh.is_ok());
  Collector next(std::move(fresh->watcher));
  int64_t rev = put(store, "/registry/pods/a/later", value_for("later", 0));
  auto events = next.wait_for(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]->revision, rev);
}

TEST(WatchCacheTest, StopEndsWatchers) {
  auto store = storage::new_memory_store({});
  auto cache = started_cache(*store, fast_options());
  WatchCache::WatchRequest req;
  req.key_prefix = kPods;
  auto started = cache->watch(req);
  ASSERT_TRUE(started.is_ok());
  Collector got(std::move(started->watcher));
  cache->stop();
  got.wait_for(1);
  EXPECT_EQ(got.end_status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(cache->ready());
  EXPECT_EQ(cache->list(kPods).status().code(), StatusCode::kUnavailable);
}

// ---------------------------------------------------------------------------------------------
// Through the registry

// Runs posted work on one thread, in order (what a stream's strand guarantees).
class Executor {
 public:
  Executor() : thread_([this] { run(); }) {}
  ~Executor() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void post(std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_all();
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

class TestStream final : public ResponseStream {
 public:
  explicit TestStream(Executor& executor) : executor_(executor) {}
  bool write(std::string chunk) override {
    std::lock_guard lock(mu_);
    if (finished_) return false;
    text_ += chunk;
    cv_.notify_all();
    return true;
  }
  bool write_shared(std::shared_ptr<const std::string> chunk) override { return write(*chunk); }
  void finish() override {
    std::vector<std::function<void()>> callbacks;
    {
      std::lock_guard lock(mu_);
      if (finished_) return;
      finished_ = true;
      callbacks.swap(on_close_);
    }
    cv_.notify_all();
    for (auto& cb : callbacks) executor_.post(cb);
  }
  void on_close(std::function<void()> cb) override {
    std::lock_guard lock(mu_);
    if (!finished_) on_close_.push_back(std::move(cb));
  }
  bool closed() const override {
    std::lock_guard lock(mu_);
    return finished_;
  }
  void post(std::function<void()> fn) override { executor_.post(std::move(fn)); }

  // Waits until n lines arrived or the stream finished; returns the lines parsed.
  std::vector<json> wait_lines(size_t n, milliseconds timeout = milliseconds(5000)) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return count_lines() >= n || finished_; });
    std::vector<json> out;
    size_t at = 0;
    while (true) {
      size_t nl = text_.find('\n', at);
      if (nl == std::string::npos) break;
      out.push_back(json::parse(text_.substr(at, nl - at)));
      at = nl + 1;
    }
    return out;
  }
  bool finished() const { return closed(); }

 private:
  size_t count_lines() const { return std::count(text_.begin(), text_.end(), '\n'); }

  Executor& executor_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;
  bool finished_ = false;
  std::vector<std::function<void()>> on_close_;
};

class TestResponder final : public Responder {
 public:
  explicit TestResponder(Executor& executor) : executor_(executor) {}
  void respond(Response response) override { response_ = std::move(response); }
  std::shared_ptr<ResponseStream> stream(int status, std::string,
                                         std::vector<HttpHeader>) override {
    response_.status = status;
    stream_ = std::make_shared<TestStream>(executor_);
    return stream_;
  }
  Response response_;
  std::shared_ptr<TestStream> stream_;

 private:
  Executor& executor_;
};

class RegistryCacheTest : public ::testing::Test {
 protected:
  RegistryCacheTest()
      : inner_(storage::new_memory_store({})),
        store_(*inner_),
        schema_(api::Schema::builtin()),
        cached_(store_, schema_),
        plain_(*inner_, schema_) {
    for (Registry* r : {&cached_, &plain_}) {
      EXPECT_TRUE(install_strategies(*r, StrategyConfig{}).is_ok());
    }
    WatchCacheOptions o = fast_options();
    o.max_events = 50;
    cached_.start_watch_caches(o);
    const api::ResourceInfo* namespaces = schema_.resource("", "v1", "namespaces");
    for (const char* ns : {"default", "a", "b"}) {
      EXPECT_TRUE(cached_.ensure(*namespaces, json{{"metadata", {{"name", ns}}}}).is_ok());
    }
  }
  ~RegistryCacheTest() override {
    cached_.shutdown();
    plain_.shutdown();
  }

  Response serve(Registry& registry, const std::string& method, const std::string& target,
                 const json& body = nullptr, const std::string& accept = "application/json") {
    Request req = request(method, target, body, accept);
    RequestInfo info = parse_request_info(req);
    TestResponder responder(executor_);
    registry.handle(info, req, responder);
    return responder.response_;
  }

  std::shared_ptr<TestStream> watch(const std::string& target) {
    Request req = request("GET", target, nullptr, "application/json");
    RequestInfo info = parse_request_info(req);
    TestResponder responder(executor_);
    cached_.handle(info, req, responder);
    EXPECT_TRUE(responder.stream_) << responder.response_.status << " " << responder.response_.body;
    return responder.stream_;
  }

  static Request request(const std::string& method, const std::string& target, const json& body,
                         const std::string& accept) {
    Request req;
    req.method = method;
    size_t q = target.find('?');
    req.path = target.substr(0, q);
    if (q != std::string::npos) {
      req.raw_query = target.substr(q + 1);
      req.query = parse_query(req.raw_query);
    }
    req.headers.push_back({"Accept", accept});
    req.headers.push_back({"Content-Type", "application/json"});
    if (!body.is_null()) req.body = body.dump();
    req.authenticated = true;
    return req;
  }

  json create_pod(const std::string& ns, const std::string& name, const std::string& app,
                  const std::string& node = "") {
    json pod{{"apiVersion", "v1"},
             {"kind", "Pod"},
             {"metadata", {{"name", name}, {"labels", {{"app", app}}}}},
             {"spec", {{"containers", {{{"name", "c"}, {"image", "busybox"}}}}}}};
    if (!node.empty()) pod["spec"]["nodeName"] = node;
    Response r = serve(cached_, "POST", "/api/v1/namespaces/" + ns + "/pods", pod);
    EXPECT_EQ(r.status, 201) << r.body;
    return json::parse(r.body);
  }

  json patch_labels(const std::string& ns, const std::string& name, const std::string& app) {
    Request req = request("PATCH", "/api/v1/namespaces/" + ns + "/pods/" + name,
                          json{{"metadata", {{"labels", {{"app", app}}}}}}, "application/json");
    req.headers.back().value = "application/merge-patch+json";
    RequestInfo info = parse_request_info(req);
    TestResponder responder(executor_);
    cached_.handle(info, req, responder);
    EXPECT_EQ(responder.response_.status, 200) << responder.response_.body;
    return json::parse(responder.response_.body);
  }

  json list(Registry& registry, const std::string& target) {
    Response r = serve(registry, "GET", target);
    EXPECT_EQ(r.status, 200) << target << ": " << r.body;
    return json::parse(r.body);
  }

  static std::vector<std::string> names(const json& list) {
    std::vector<std::string> out;
    for (const json& item : list["items"]) {
      out.push_back(item["metadata"]["namespace"].get<std::string>() + "/" +
                    item["metadata"]["name"].get<std::string>());
    }
    return out;
  }

  uint64_t cache_lists() { return cached_.watch_cache("pods")->stats().lists; }

  std::unique_ptr<storage::Store> inner_;
  ControlledStore store_;
  const api::Schema& schema_;
  Executor executor_;
  Registry cached_;  // serves from watch caches
  Registry plain_;   // the same store without caches
};

TEST_F(RegistryCacheTest, ListsFromTheCacheEqualListsFromTheStore) {
  ASSERT_NE(cached_.watch_cache("pods"), nullptr);
  ASSERT_NE(cached_.watch_cache("configmaps"), nullptr);
  EXPECT_EQ(plain_.watch_cache("pods"), nullptr);
  std::mt19937 rng(3);
  std::vector<int> live;
  for (int i = 0; i < 40; ++i) {
    std::string ns = i % 3 ? "a" : "b";
    create_pod(ns, "p" + std::to_string(i), i % 2 ? "web" : "db",
               i % 4 == 0 ? "node-" + std::to_string(i % 3) : "");
    live.push_back(i);
  }
  for (int i = 0; i < 15; ++i) {
    size_t at = rng() % live.size();
    int n = live[at];
    std::string ns = n % 3 ? "a" : "b";
    if (rng() % 2) {
      patch_labels(ns, "p" + std::to_string(n), "cache");
    } else {
      Response r = serve(
          cached_, "DELETE",
          "/api/v1/namespaces/" + ns + "/pods/p" + std::to_string(n) + "?gracePeriodSeconds=0");
      EXPECT_EQ(r.status, 200) << r.body;
      live.erase(live.begin() + static_cast<long>(at));
    }
  }
  const std::vector<std::string> queries = {
      "/api/v1/pods",
      "/api/v1/namespaces/a/pods",
      "/api/v1/namespaces/b/pods",
      "/api/v1/namespaces/c/pods",
      "/api/v1/pods?labelSelector=app%3Dweb",
      "/api/v1/pods?labelSelector=app+in+(cache,db)",
      "/api/v1/namespaces/a/pods?labelSelector=app!%3Dweb",
      "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
      "/api/v1/pods?fieldSelector=metadata.name%3Dp4,metadata.namespace%3Db",
      "/api/v1/pods?fieldSelector=spec.nodeName%3D&labelSelector=app%3Ddb",
      "/api/v1/pods?resourceVersion=0",
      "/api/v1/namespaces/a/pods?resourceVersion=0&labelSelector=app%3Dcache"};
  for (const std::string& q : queries) {
    uint64_t before = cache_lists();
    json from_cache = list(cached_, q);
    EXPECT_EQ(cache_lists(), before + 1) << q << " was not served by the cache";
    json from_store = list(plain_, q);
    EXPECT_EQ(from_cache["items"], from_store["items"]) << q;
    EXPECT_EQ(from_cache["kind"], "PodList");
    EXPECT_GE(std::stoll(from_cache["metadata"]["resourceVersion"].get<std::string>()),
              std::stoll(from_store["metadata"]["resourceVersion"].get<std::string>()))
        << q;
  }
  // Tables come from the cache too.
  const std::string table = "application/json;as=Table;v=v1;g=meta.k8s.io";
  Response t1 =
      serve(cached_, "GET", "/api/v1/namespaces/a/pods?labelSelector=app%3Dweb", nullptr, table);
  Response t2 =
      serve(plain_, "GET", "/api/v1/namespaces/a/pods?labelSelector=app%3Dweb", nullptr, table);
  json rows1 = json::parse(t1.body)["rows"];
  json rows2 = json::parse(t2.body)["rows"];
  ASSERT_EQ(rows1.size(), rows2.size());
  for (size_t i = 0; i < rows1.size(); ++i) {
    EXPECT_EQ(rows1[i]["object"]["metadata"]["name"], rows2[i]["object"]["metadata"]["name"]);
  }
}

TEST_F(RegistryCacheTest, ResourceVersionSemantics) {
  create_pod("a", "one", "web");
  json listed = list(cached_, "/api/v1/namespaces/a/pods");
  std::string first_rv = listed["metadata"]["resourceVersion"];

  // The cache falls behind the store.
  store_.pause(true);
  json two = create_pod("a", "two", "web");
  std::string two_rv = two["metadata"]["resourceVersion"];

  uint64_t before = cache_lists();
  // "0": any revision, the cache as it is.
  json any = list(cached_, "/api/v1/namespaces/a/pods?resourceVersion=0");
  EXPECT_EQ(names(any), std::vector<std::string>{"a/one"});
  EXPECT_EQ(any["metadata"]["resourceVersion"], first_rv);
  EXPECT_EQ(cache_lists(), before + 1);
  // "": consistent; the cache cannot catch up in time, so the store answers.
  json consistent = list(cached_, "/api/v1/namespaces/a/pods");
  EXPECT_EQ(names(consistent), (std::vector<std::string>{"a/one", "a/two"}));
  // N: not older than N; likewise.
  json not_older = list(cached_, "/api/v1/namespaces/a/pods?resourceVersion=" + two_rv);
  EXPECT_EQ(names(not_older), (std::vector<std::string>{"a/one", "a/two"}));
  // Exact: the store, at that revision.
  json exact = list(
      cached_, "/api/v1/namespaces/a/pods?resourceVersionMatch=Exact&resourceVersion=" + first_rv);
  EXPECT_EQ(names(exact), std::vector<std::string>{"a/one"});
  EXPECT_EQ(cache_lists(), before + 1);
  EXPECT_EQ(cached_.watch_cache("pods")->stats().fresh_timeouts, 2u);
  // A revision the store has not reached is refused at once.
  Response future = serve(cached_, "GET", "/api/v1/namespaces/a/pods?resourceVersion=999999");
  EXPECT_EQ(future.status, 504) << future.body;

  store_.pause(false);
  json caught_up = list(cached_, "/api/v1/namespaces/a/pods?resourceVersion=" + two_rv);
  EXPECT_EQ(names(caught_up), (std::vector<std::string>{"a/one", "a/two"}));
  EXPECT_EQ(cache_lists(), before + 2);
  json consistent_again = list(cached_, "/api/v1/namespaces/a/pods");
  EXPECT_EQ(names(consistent_again), (std::vector<std::string>{"a/one", "a/two"}));
  EXPECT_EQ(cache_lists(), before + 3);
}

TEST_F(RegistryCacheTest, ListOptionsAreValidatedAsUpstream) {
  create_pod("a", "one", "web");
  auto invalid = [&](const std::string& query, const std::string& message) {
    Response r = serve(cached_, "GET", "/api/v1/namespaces/a/pods?" + query);
    EXPECT_EQ(r.status, 422) << query << ": " << r.body;
    json status = json::parse(r.body, nullptr, false);
    EXPECT_EQ(status.value("reason", ""), "Invalid") << r.body;
    EXPECT_NE(status.value("message", "").find(message), std::string::npos) << r.body;
  };
  invalid("resourceVersionMatch=NotOlderThan",
          "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless "
          "resourceVersion is provided");
  invalid("resourceVersionMatch=Newest&resourceVersion=1",
          "resourceVersionMatch: Unsupported value: \"Newest\"");
  invalid("resourceVersionMatch=Exact&resourceVersion=0",
          "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"");
  json page = list(cached_, "/api/v1/namespaces/a/pods?limit=1");
  EXPECT_EQ(names(page), std::vector<std::string>{"a/one"});
  // A consistent list first: "resourceVersion=0" may be served by a cache not caught up yet.
  EXPECT_EQ(names(list(cached_, "/api/v1/namespaces/a/pods")), std::vector<std::string>{"a/one"});
  EXPECT_EQ(list(cached_,
                 "/api/v1/namespaces/a/pods?resourceVersionMatch=NotOlderThan&"
                 "resourceVersion=0")["items"]
                .size(),
            1u);
}

TEST_F(RegistryCacheTest, PagesFromTheCacheCarryTokensThatStayValid) {
  for (int i = 0; i < 7; ++i) create_pod("a", "p" + std::to_string(i), "web");
  list(cached_, "/api/v1/namespaces/a/pods");  // consistent: the cache has every pod now
  uint64_t before = cache_lists();
  json page1 = list(cached_, "/api/v1/namespaces/a/pods?resourceVersion=0&limit=3");
  EXPECT_EQ(cache_lists(), before + 1);
  EXPECT_EQ(names(page1), (std::vector<std::string>{"a/p0", "a/p1", "a/p2"}));
  EXPECT_EQ(page1["metadata"]["remainingItemCount"], 4);
  std::string token = page1["metadata"]["continue"];
  // Nothing changed: the cache is still at the token's revision and serves the next page.
  json page2 = list(cached_, "/api/v1/namespaces/a/pods?limit=3&continue=" + token);
  EXPECT_EQ(cache_lists(), before + 2);
  EXPECT_EQ(names(page2), (std::vector<std::string>{"a/p3", "a/p4", "a/p5"}));
  EXPECT_EQ(page2["metadata"]["resourceVersion"], page1["metadata"]["resourceVersion"]);
  // After a write the cache has moved on: the store serves the rest at the token's revision,
  // so the list stays consistent.
  json late = create_pod("a", "p55", "web");
  int64_t late_rv = std::stoll(late["metadata"]["resourceVersion"].get<std::string>());
  ASSERT_TRUE(eventually([&] { return cached_.watch_cache("pods")->revision() >= late_rv; }));
  json page3 = list(cached_, "/api/v1/namespaces/a/pods?limit=3&continue=" +
                                 page2["metadata"]["continue"].get<std::string>());
  EXPECT_EQ(cache_lists(), before + 2);
  EXPECT_EQ(names(page3), std::vector<std::string>{"a/p6"});
  EXPECT_FALSE(page3["metadata"].contains("continue"));
  // Limits with other resource versions go to the store, as upstream.
  json store_page = list(cached_, "/api/v1/namespaces/a/pods?limit=2");
  EXPECT_EQ(cache_lists(), before + 2);
  EXPECT_EQ(names(store_page), (std::vector<std::string>{"a/p0", "a/p1"}));
}

TEST_F(RegistryCacheTest, WatchesFromTheCache) {
  json one = create_pod("a", "one", "web");
  json listed = list(cached_, "/api/v1/namespaces/a/pods");
  std::string rv = listed["metadata"]["resourceVersion"];
  uint64_t watches = cached_.watch_cache("pods")->stats().watches;

  auto all = watch("/api/v1/namespaces/a/pods?watch=true&resourceVersion=" + rv);
  auto web = watch("/api/v1/pods?watch=true&labelSelector=app%3Dweb&resourceVersion=" + rv);
  auto initial = watch("/api/v1/namespaces/a/pods?watch=true");
  EXPECT_EQ(cached_.watch_cache("pods")->stats().watches, watches + 3);

  create_pod("a", "two", "db");
  patch_labels("a", "two", "web");  // enters the selection
  patch_labels("a", "one", "db");   // leaves it
  create_pod("b", "three", "web");  // another namespace
  serve(cached_, "DELETE", "/api/v1/namespaces/a/pods/two?gracePeriodSeconds=0");

  auto lines = all->wait_lines(4);
  ASSERT_EQ(lines.size(), 4u);
  std::vector<std::string> types;
  for (const json& l : lines)
    types.push_back(l["type"].get<std::string>() + " " +
                    l["object"]["metadata"]["name"].get<std::string>());
  EXPECT_EQ(types,
            (std::vector<std::string>{"ADDED two", "MODIFIED two", "MODIFIED one", "DELETED two"}));

  lines = web->wait_lines(4);
  ASSERT_EQ(lines.size(), 4u);
  types.clear();
  for (const json& l : lines)
    types.push_back(l["type"].get<std::string>() + " " +
                    l["object"]["metadata"]["name"].get<std::string>());
  EXPECT_EQ(types,
            (std::vector<std::string>{"ADDED two", "DELETED one", "ADDED three", "DELETED two"}));

  lines = initial->wait_lines(5);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0]["type"], "ADDED");
  EXPECT_EQ(lines[0]["object"]["metadata"]["name"], "one");
  EXPECT_EQ(lines[0]["object"]["metadata"]["resourceVersion"], one["metadata"]["resourceVersion"]);
  EXPECT_EQ(lines[1]["type"], "ADDED");
  EXPECT_EQ(lines[1]["object"]["metadata"]["name"], "two");
}

TEST_F(RegistryCacheTest, WatchFromBeforeTheWindowGetsGone) {
  json first = create_pod("a", "p", "web");
  for (int i = 0; i < 60; ++i) patch_labels("a", "p", "v" + std::to_string(i));  // > 50 events
  auto stream = watch("/api/v1/namespaces/a/pods?watch=true&resourceVersion=" +
                      first["metadata"]["resourceVersion"].get<std::string>());
  auto lines = stream->wait_lines(1);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["type"], "ERROR");
  EXPECT_EQ(lines[0]["object"]["code"], 410);
  EXPECT_EQ(lines[0]["object"]["reason"], "Expired");
  EXPECT_TRUE(
      lines[0]["object"]["message"].get<std::string>().starts_with("too old resource version: "))
      << lines[0];
  EXPECT_TRUE(stream->finished());
}

TEST_F(RegistryCacheTest, WatchersOfAResetCacheAreToldToRelist) {
  json p = create_pod("a", "p", "web");
  auto stream = watch("/api/v1/namespaces/a/pods?watch=true&resourceVersion=" +
                      p["metadata"]["resourceVersion"].get<std::string>());
  store_.pause(true);
  create_pod("a", "q", "web");
  create_pod("b", "r", "web");  // the history the cache needs (from q on) is compacted below
  auto now = inner_->current_revision();
  ASSERT_TRUE(inner_->compact(*now).is_ok());
  store_.fail(Status(StatusCode::kUnavailable, "member down"));
  auto lines = stream->wait_lines(1);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["type"], "ERROR");
  EXPECT_EQ(lines[0]["object"]["code"], 410);
  ASSERT_TRUE(eventually([&] { return stream->finished(); }));
  json listed = list(cached_, "/api/v1/namespaces/a/pods?resourceVersion=0");
  EXPECT_EQ(names(listed), (std::vector<std::string>{"a/p", "a/q"}));
}

}  // namespace
}  // namespace skiff::apiserver
