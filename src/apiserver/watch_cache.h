#pragma once

// The API server's watch cache: for one resource's key prefix (/registry/<resource>/), the
// current objects and a window of recent events, kept current by ONE store watch, so that lists
// and watches are served from memory instead of costing the store a range or a watch each (the
// role of upstream's cacher).
//
// - The cache starts with a range of its prefix and watches from the revision after it. It is
//   current at revision() once every event up to that revision has been applied; the store's
//   progress notifications advance it when other prefixes are written.
// - Objects are held as the store handed them out (the same immutable KeyValue, shared with the
//   event window and the watchers' buffers), so each version's bytes exist once. The labels and
//   the field values selectors need are parsed once per object version, on first use.
// - The event window keeps the most recent events, bounded by count and by age. A watch may
//   start after any revision >= oldest_revision(); older ones are answered kCompacted ("too old
//   resource version"), as a compacted store would.
// - Watchers get events through their own bounded buffer; the cache's dispatcher never waits
//   for them. One that lets more than its capacity pile up is cut off (kResourceExhausted).
// - When the store watch fails, the cache resumes it from the revision after its own; when
//   that history is gone too (kCompacted), it re-lists, and its watchers, which cannot be
//   continued, are ended with kCompacted.
//
// Thread-safety: every public method may be called from any thread. A CacheWatcher handle is
// owned by one consumer; its methods may be called from any thread but not concurrently with
// its destruction. The notify callback runs on the cache's dispatcher thread; it must be cheap
// and must not call back into the cache or destroy the handle.
//
// Lock order: WatchCache::mu_ before Watchers::mu before WatcherState::mu. ctl_mu_ is never held
// while taking another lock of the cache.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/status.h"
#include "storage/store.h"

namespace skiff::apiserver {

struct WatchCacheOptions {
  // The event window holds at most this many events, none older than max_event_age.
  size_t max_events = 100000;
  std::chrono::milliseconds max_event_age{150000};
  // Events a watcher may have waiting before it is cut off; 0 picks the store's default.
  size_t watcher_buffer_events = 0;
  // How long a read that needs a fresher cache waits for it before the caller falls back to
  // the store.
  std::chrono::milliseconds fresh_timeout{3000};
  // The cache asks the store for progress this often, so its revision (and the bookmarks sent
  // to watchers) follow the store's even when nothing under its prefix changes.
  std::chrono::milliseconds progress_interval{5000};
  // Longest wait between attempts to re-list or re-watch after a store failure.
  std::chrono::milliseconds max_retry_backoff{5000};
};

// What selectors read from one object: its labels and the field values of the cache's field
// paths, as field_value() computes them.
struct ObjectAttrs {
  nlohmann::json labels;  // null when the object has none
  std::vector<std::pair<std::string, std::string>> fields;

  // The value of a precomputed field path; nullptr when the path was not precomputed.
  const std::string* field(std::string_view path) const;
};

// One version of one object: the stored value and, on first use, its selector attributes.
class CachedObject {
 public:
  explicit CachedObject(storage::KeyValuePtr kv) : kv_(std::move(kv)) {}

  const storage::KeyValue& kv() const { return *kv_; }
  const storage::KeyValuePtr& kv_ptr() const { return kv_; }
  // Parsed from the stored bytes once (thread-safe); `field_paths` must be the same on every
  // call (the cache's field_paths()).
  const ObjectAttrs& attrs(const std::vector<std::string>& field_paths) const;

 private:
  const storage::KeyValuePtr kv_;
  mutable std::once_flag attrs_once_;
  mutable ObjectAttrs attrs_;
};
using CachedObjectPtr = std::shared_ptr<const CachedObject>;

// One change as the cache delivers it. kPut: `object` is the new version and `prev` the one it
// replaced (null when the key was created). kDelete: `object` is null and `prev` is the deleted
// version. kProgress: both null; every event up to `revision` has been delivered.
struct CacheEvent {
  storage::EventType type = storage::EventType::kPut;
  CachedObjectPtr object;
  CachedObjectPtr prev;
  int64_t revision = 0;
  std::chrono::steady_clock::time_point at;  // when the cache applied it

  const std::string& key() const { return object ? object->kv().key : prev->kv().key; }
};
using CacheEventPtr = std::shared_ptr<const CacheEvent>;

class WatchCache;

// A watcher's consumer handle. Destroying it stops the watch.
class CacheWatcher {
 public:
  struct State;
  struct Watchers;
  CacheWatcher(std::shared_ptr<Watchers> watchers, std::shared_ptr<State> state);
  ~CacheWatcher();
  CacheWatcher(const CacheWatcher&) = delete;
  CacheWatcher& operator=(const CacheWatcher&) = delete;

  // Called, from the cache's dispatcher thread, when events or the end of the watch become
  // available to poll(). Until it is set nobody is told; poll() once after setting it.
  void set_notify(std::function<void()> notify);

  // Appends the events delivered since the last call, in revision order with none skipped.
  // Returns OK while the watch is live; once it has ended, returns why (events appended by the
  // same call precede the end): kResourceExhausted (fell too far behind), kCompacted (the cache
  // lost the history this watch needs and re-listed), kUnavailable (the cache stopped).
  Status poll(std::vector<CacheEventPtr>* out);

  // Queues a kProgress event at the revision up to which this watcher has been sent everything.
  void request_bookmark();

 private:
  const std::shared_ptr<Watchers> watchers_;
  const std::shared_ptr<State> state_;
};

class WatchCache {
 public:
  // `field_paths` are the field paths whose values attrs() precomputes for selectors.
  WatchCache(storage::Store& store, std::string prefix, std::vector<std::string> field_paths,
             WatchCacheOptions options = {});
  ~WatchCache();  // stop()s

  // Starts the dispatcher, which lists the prefix and starts the store watch (and keeps trying
  // while the store fails; callers fall back to the store until the cache is ready).
  void start();
  // Waits up to `wait` for the first list; returns whether the cache is ready.
  bool wait_ready(std::chrono::milliseconds wait);
  // Stops the dispatcher and ends every watcher with kUnavailable.
  void stop();

  const std::string& prefix() const { return prefix_; }
  const std::vector<std::string>& field_paths() const { return field_paths_; }
  bool ready() const;
  // The revision the cache is current at.
  int64_t revision() const;

  struct Snapshot {
    // In key order.
    std::vector<CachedObjectPtr> objects;
    int64_t revision = 0;
  };
  // The objects whose keys start with `key_prefix` and are >= `start_key`, as of the cache's
  // revision, which is at least `min_revision` (the call waits up to fresh_timeout for it).
  // With `exact_revision` > 0, only a cache exactly at that revision answers.
  // Errors: kUnavailable (not ready), kDeadlineExceeded (not fresh enough in time),
  // kFailedPrecondition (not at exact_revision). Callers fall back to the store on any of them.
  Result<Snapshot> list(std::string_view key_prefix, std::string_view start_key = {},
                        int64_t min_revision = 0, int64_t exact_revision = 0);

  struct WatchRequest {
    // Only keys starting with this (the cache's prefix or a narrower one).
    std::string key_prefix;
    // false: deliver the events after after_revision (a negative value: after the cache's
    // current revision). true: snapshot the current objects (at a revision >= min_revision,
    // waiting up to fresh_timeout for it) and deliver the events after the snapshot.
    bool initial = false;
    int64_t after_revision = -1;
    int64_t min_revision = 0;
  };
  struct WatchStart {
    std::unique_ptr<CacheWatcher> watcher;
    // initial: the snapshot, in key order.
    std::vector<CachedObjectPtr> initial;
    // The revision the watch continues from: events after it are delivered.
    int64_t revision = 0;
  };
  // Errors: kCompacted when after_revision is older than the event window ("too old resource
  // version: N (M)"); otherwise those of list().
  Result<WatchStart> watch(const WatchRequest& request);

  struct Stats {
    bool ready = false;
    int64_t revision = 0;
    int64_t oldest_revision = 0;
    size_t objects = 0;
    size_t events = 0;
    size_t watchers = 0;
    uint64_t lists = 0;             // served by list()
    uint64_t watches = 0;           // started by watch()
    uint64_t fresh_timeouts = 0;    // reads that waited for freshness in vain
    uint64_t relists = 0;           // after the start: resets after lost history
    uint64_t rewatches = 0;         // store watches resumed without a re-list
    uint64_t watchers_cut_off = 0;  // too slow
  };
  Stats stats() const;

 private:
  void run();
  // Lists the prefix and resets the cache to it. Returns false on a store error.
  bool relist();
  // Starts the store watch after the cache's revision. Returns false on a store error.
  bool start_store_watch();
  void apply(std::vector<storage::Event>& events);
  void trim_locked(std::chrono::steady_clock::time_point now);
  // Waits until the cache is at least at `revision`, through store watches being set up again
  // and re-lists; false when that did not happen within fresh_timeout or the cache is stopping.
  bool wait_fresh(int64_t revision);

  storage::Store& store_;
  const std::string prefix_;
  const std::vector<std::string> field_paths_;
  const WatchCacheOptions options_;
  const std::shared_ptr<CacheWatcher::Watchers> watchers_;

  mutable std::shared_mutex mu_;
  // Keys view the key of the object they map to.
  std::map<std::string_view, CachedObjectPtr> objects_;  // guarded by mu_
  std::deque<CacheEventPtr> events_;                     // guarded by mu_
  int64_t revision_ = 0;                                 // guarded by mu_
  // Every event after this revision is in events_.
  int64_t oldest_revision_ = 0;  // guarded by mu_
  bool ready_ = false;           // guarded by mu_

  // The dispatcher's store watch: used by the dispatcher thread only.
  std::unique_ptr<storage::Watch> watch_;

  // Control: the dispatcher's wake-ups and the readers waiting for freshness.
  mutable std::mutex ctl_mu_;
  std::condition_variable wake_cv_;   // the dispatcher waits on it
  std::condition_variable fresh_cv_;  // readers wait on it
  bool notified_ = false;             // guarded by ctl_mu_; the store watch has news
  bool stopping_ = false;             // guarded by ctl_mu_
  bool started_ = false;              // guarded by ctl_mu_
  int64_t fresh_revision_ = 0;        // guarded by ctl_mu_; mirrors revision_
  int waiting_readers_ = 0;           // guarded by ctl_mu_
  bool fresh_wanted_ = false;         // guarded by ctl_mu_; a reader has just started waiting
  bool listed_ = false;               // guarded by ctl_mu_; the first list succeeded
  std::thread dispatcher_;

  std::atomic<uint64_t> lists_{0};
  std::atomic<uint64_t> watches_started_{0};
  std::atomic<uint64_t> fresh_timeouts_{0};
  std::atomic<uint64_t> relists_{0};
  std::atomic<uint64_t> rewatches_{0};
};

}  // namespace skiff::apiserver
