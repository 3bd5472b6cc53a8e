#include "apiserver/watch_cache.h"

#include <algorithm>

#include "apiserver/object.h"
#include "base/log.h"

namespace skiff::apiserver {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// How often a cache with readers waiting for freshness asks the store for progress again.
constexpr milliseconds kFreshProgressRetry{20};
constexpr milliseconds kFirstRetry{100};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Objects

const std::string* ObjectAttrs::field(std::string_view path) const {
  for (const auto& [p, v] : fields) {
    if (p == path) return &v;
  }
  return nullptr;
}

const ObjectAttrs& CachedObject::attrs(const std::vector<std::string>& field_paths) const {
  std::call_once(attrs_once_, [&] {
    nlohmann::json obj = nlohmann::json::parse(kv_->value, nullptr, /*allow_exceptions=*/false);
    if (!obj.is_object()) return;
    if (auto m = obj.find("metadata"); m != obj.end() && m->is_object()) {
      if (auto l = m->find("labels"); l != m->end()) attrs_.labels = *l;
    }
    attrs_.fields.reserve(field_paths.size());
    for (const std::string& path : field_paths) {
      attrs_.fields.emplace_back(path, field_value(obj, path));
    }
  });
  return attrs_;
}

// ---------------------------------------------------------------------------------------------
// Watchers

struct CacheWatcher::State {
  State(std::string prefix, size_t capacity, int64_t next)
      : key_prefix(std::move(prefix)), capacity(capacity), next_revision(next) {}

  // Queues the events of `batch` this watcher wants and has not had, and records that every
  // event up to `upto` has been offered to it. Returns false when the watcher has ended (or
  // ends now because its buffer would overflow: *cut is set then).
  bool deliver(const std::vector<CacheEventPtr>& batch, int64_t upto, bool* cut) {
    bool was_idle;
    {
      std::lock_guard lock(mu);
      if (ended) return false;
      size_t before = buffer.size();
      for (const CacheEventPtr& e : batch) {
        if (e->revision < next_revision || !e->key().starts_with(key_prefix)) continue;
        buffer.push_back(e);
      }
      next_revision = std::max(next_revision, upto + 1);
      if (buffer.size() == before) return true;
      if (buffer.size() > capacity) {
        // What was buffered stays, the end status follows it: the consumer never mistakes a
        // stream with a gap for a live one.
        buffer.resize(before);
        ended = true;
        end_status = Status(StatusCode::kResourceExhausted,
                            "watcher fell behind by more than " + std::to_string(capacity) +
                                " events and was cut off; re-list and watch again");
        *cut = true;
      }
      was_idle = polled_since_wake;
      polled_since_wake = false;
    }
    if (was_idle) wake();
    return !*cut;
  }

  void end(Status status) {
    bool was_idle;
    {
      std::lock_guard lock(mu);
      if (ended) return;
      ended = true;
      end_status = std::move(status);
      was_idle = polled_since_wake;
      polled_since_wake = false;
    }
    if (was_idle) wake();
  }

  void wake() {
    std::lock_guard lock(notify_mu);
    if (!closed && notify) notify();
  }

  const std::string key_prefix;
  const size_t capacity;
  std::mutex mu;
  std::vector<CacheEventPtr> buffer;  // guarded by mu
  int64_t next_revision;              // guarded by mu; the first revision not offered yet
  bool ended = false;                 // guarded by mu
  Status end_status;                  // guarded by mu
  bool polled_since_wake = true;      // guarded by mu; edge-triggers notify

  std::mutex notify_mu;          // held while notify runs
  std::function<void()> notify;  // guarded by notify_mu
  bool closed = false;           // guarded by notify_mu
};

// The live watchers of one cache, shared with their handles so a handle may outlive the cache.
struct CacheWatcher::Watchers {
  std::mutex mu;
  std::vector<std::shared_ptr<State>> list;  // guarded by mu
  bool closed = false;                       // guarded by mu
  std::atomic<uint64_t> cut_off{0};

  void remove(const std::shared_ptr<State>& state) {
    std::lock_guard lock(mu);
    auto it = std::find(list.begin(), list.end(), state);
    if (it == list.end()) return;
    *it = std::move(list.back());
    list.pop_back();
  }
};

CacheWatcher::CacheWatcher(std::shared_ptr<Watchers> watchers, std::shared_ptr<State> state)
    : watchers_(std::move(watchers)), state_(std::move(state)) {}

CacheWatcher::~CacheWatcher() {
  {
    std::lock_guard lock(state_->notify_mu);
    state_->closed = true;
    state_->notify = nullptr;
  }
  watchers_->remove(state_);
  state_->end(Status(StatusCode::kCancelled, "watch cancelled"));
}

void CacheWatcher::set_notify(std::function<void()> notify) {
  std::lock_guard lock(state_->notify_mu);
  if (!state_->closed) state_->notify = std::move(notify);
}

Status CacheWatcher::poll(std::vector<CacheEventPtr>* out) {
  std::lock_guard lock(state_->mu);
  state_->polled_since_wake = true;
  if (!state_->buffer.empty()) {
    if (out->empty()) {
      out->swap(state_->buffer);
    } else {
      for (auto& e : state_->buffer) out->push_back(std::move(e));
    }
    state_->buffer.clear();
  }
  if (state_->ended) return state_->end_status;
  return Status::ok();
}

void CacheWatcher::request_bookmark() {
  bool was_idle;
  {
    std::lock_guard lock(state_->mu);
    if (state_->ended) return;
    auto e = std::make_shared<CacheEvent>();
    e->type = storage::EventType::kProgress;
    e->revision = state_->next_revision - 1;
    e->at = Clock::now();
    state_->buffer.push_back(std::move(e));
    was_idle = state_->polled_since_wake;
    state_->polled_since_wake = false;
  }
  if (was_idle) state_->wake();
}

// ---------------------------------------------------------------------------------------------
// The cache

WatchCache::WatchCache(storage::Store& store, std::string prefix,
                       std::vector<std::string> field_paths, WatchCacheOptions options)
    : store_(store),
      prefix_(std::move(prefix)),
      field_paths_(std::move(field_paths)),
      options_(options),
      watchers_(std::make_shared<CacheWatcher::Watchers>()) {}

WatchCache::~WatchCache() {
  stop();
}

void WatchCache::start() {
  {
    std::lock_guard lock(ctl_mu_);
    if (started_ || stopping_) return;
    started_ = true;
  }
  dispatcher_ = std::thread([this] { run(); });
}

bool WatchCache::wait_ready(milliseconds wait) {
  {
    std::unique_lock lock(ctl_mu_);
    fresh_cv_.wait_for(lock, wait, [this] { return listed_ || stopping_; });
  }
  return ready();
}

void WatchCache::stop() {
  {
    std::lock_guard lock(ctl_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_cv_.notify_all();
  fresh_cv_.notify_all();
  if (dispatcher_.joinable()) dispatcher_.join();
  {
    std::unique_lock lock(mu_);
    ready_ = false;
  }
  std::vector<std::shared_ptr<CacheWatcher::State>> ended;
  {
    std::lock_guard lock(watchers_->mu);
    watchers_->closed = true;
    ended.swap(watchers_->list);
  }
  for (auto& w : ended) w->end(Status(StatusCode::kUnavailable, "the watch cache was stopped"));
}

bool WatchCache::ready() const {
  std::shared_lock lock(mu_);
  return ready_;
}

int64_t WatchCache::revision() const {
  std::shared_lock lock(mu_);
  return revision_;
}

void WatchCache::run() {
  bool need_list = true;
  milliseconds backoff{0};
  auto next_progress = Clock::now() + options_.progress_interval;
  auto last_fresh_request = Clock::time_point{};
  while (true) {
    if (!watch_) {
      bool ok = true;
      bool resumed = !need_list;
      if (need_list) {
        ok = relist();
        if (ok) need_list = false;
      }
      if (ok) {
        ok = start_store_watch();
        if (ok && resumed) ++rewatches_;
      }
      if (ok) {
        backoff = milliseconds(0);
      } else {
        backoff =
            backoff.count() == 0 ? kFirstRetry : std::min(backoff * 2, options_.max_retry_backoff);
        std::unique_lock lock(ctl_mu_);
        wake_cv_.wait_for(lock, backoff, [this] { return stopping_; });
        if (stopping_) break;
        continue;
      }
    }

    bool progress = false;
    {
      std::unique_lock lock(ctl_mu_);
      auto until = next_progress;
      if (waiting_readers_ > 0) until = std::min(until, Clock::now() + kFreshProgressRetry);
      wake_cv_.wait_until(lock, until, [this] { return stopping_ || notified_ || fresh_wanted_; });
      if (stopping_) break;
      notified_ = false;
      fresh_wanted_ = false;
      auto now = Clock::now();
      if (waiting_readers_ > 0 && now - last_fresh_request >= kFreshProgressRetry) {
        progress = true;
        last_fresh_request = now;
      }
      if (now >= next_progress) {
        progress = true;
        next_progress = now + options_.progress_interval;
      }
    }
    // Never call the store with ctl_mu_ held: its notify callback takes ctl_mu_.
    if (progress) watch_->request_progress();

    std::vector<storage::Event> events;
    Status status = watch_->poll(&events);
    if (!events.empty()) {
      apply(events);
    } else {
      std::unique_lock lock(mu_);
      trim_locked(Clock::now());
    }
    if (!status.is_ok()) {
      SKIFF_LOG_WARN("watch cache {}: the store watch ended ({}); {}", prefix_, status.to_string(),
                     status.code() == StatusCode::kCompacted ? "re-listing" : "resuming it");
      watch_.reset();
      if (status.code() == StatusCode::kCompacted) need_list = true;
    }
  }
  watch_.reset();
}

bool WatchCache::relist() {
  auto listed = store_.range(storage::KeyRange::prefix(prefix_));
  if (!listed.is_ok()) {
    SKIFF_LOG_WARN("watch cache {}: list failed: {}", prefix_, listed.status().to_string());
    return false;
  }
  std::map<std::string_view, CachedObjectPtr> objects;
  for (storage::KeyValuePtr& kv : listed->kvs) {
    auto obj = std::make_shared<const CachedObject>(std::move(kv));
    objects.emplace(obj->kv().key, obj);
  }
  std::deque<CacheEventPtr> old_events;
  std::vector<std::shared_ptr<CacheWatcher::State>> lost;
  bool reset;
  {
    std::unique_lock lock(mu_);
    reset = ready_;
    objects_.swap(objects);
    events_.swap(old_events);
    revision_ = listed->revision;
    oldest_revision_ = listed->revision;
    ready_ = true;
    if (reset) {
      // The events between the old revision and the new list are gone: no watcher can be
      // continued. Taken under mu_ so that no watch registers against the old state unseen.
      std::lock_guard wlock(watchers_->mu);
      lost.swap(watchers_->list);
    }
  }
  if (reset) {
    ++relists_;
    Status why(StatusCode::kCompacted, "too old resource version: the watch cache re-listed at " +
                                           std::to_string(listed->revision));
    for (auto& w : lost) w->end(why);
  }
  {
    std::lock_guard lock(ctl_mu_);
    fresh_revision_ = listed->revision;
    listed_ = true;
  }
  fresh_cv_.notify_all();
  return true;
}

bool WatchCache::start_store_watch() {
  storage::WatchOptions wo;
  wo.range = storage::KeyRange::prefix(prefix_);
  wo.start_revision = revision() + 1;
  // Previous values come from the cache itself; the store need not send them.
  wo.prev_kv = false;
  wo.notify = [this] {
    {
      std::lock_guard lock(ctl_mu_);
      notified_ = true;
    }
    wake_cv_.notify_one();
  };
  auto w = store_.watch(std::move(wo));
  if (!w.is_ok()) {
    SKIFF_LOG_WARN("watch cache {}: watch failed: {}", prefix_, w.status().to_string());
    return false;
  }
  watch_ = std::move(w).value();
  {
    std::lock_guard lock(ctl_mu_);
    notified_ = true;  // poll once right away: the watch may have ended already
  }
  return true;
}

void WatchCache::apply(std::vector<storage::Event>& events) {
  auto now = Clock::now();
  std::vector<CacheEventPtr> batch;
  batch.reserve(events.size());
  int64_t upto;
  {
    std::unique_lock lock(mu_);
    for (storage::Event& e : events) {
      if (e.type == storage::EventType::kProgress) {
        revision_ = std::max(revision_, e.revision);
        continue;
      }
      auto it = objects_.find(e.kv->key);
      auto ev = std::make_shared<CacheEvent>();
      ev->type = e.type;
      ev->revision = e.revision;
      ev->at = now;
      if (it != objects_.end()) ev->prev = it->second;
      if (e.type == storage::EventType::kPut) {
        auto obj = std::make_shared<const CachedObject>(std::move(e.kv));
        ev->object = obj;
        if (it == objects_.end()) {
          objects_.emplace(obj->kv().key, std::move(obj));
        } else {
          // The key views the object's own key: re-key the node to the new version.
          auto node = objects_.extract(it);
          node.key() = obj->kv().key;
          node.mapped() = std::move(obj);
          objects_.insert(std::move(node));
        }
      } else {
        if (it == objects_.end()) continue;  // nothing cached to delete
        objects_.erase(it);
      }
      revision_ = std::max(revision_, e.revision);
      events_.push_back(ev);
      batch.push_back(std::move(ev));
    }
    trim_locked(now);
    upto = revision_;
  }
  {
    std::lock_guard lock(ctl_mu_);
    fresh_revision_ = upto;
  }
  fresh_cv_.notify_all();

  std::vector<std::shared_ptr<CacheWatcher::State>> targets;
  {
    std::lock_guard lock(watchers_->mu);
    targets = watchers_->list;
  }
  for (const auto& w : targets) {
    bool cut = false;
    if (!w->deliver(batch, upto, &cut)) {
      if (cut) ++watchers_->cut_off;
      watchers_->remove(w);
    }
  }
}

void WatchCache::trim_locked(Clock::time_point now) {
  while (!events_.empty()) {
    bool too_many = events_.size() > options_.max_events;
    bool too_old = now - events_.front()->at > options_.max_event_age;
    if (!too_many && !too_old) break;
    // Every event of one revision goes together, so that every event after oldest_revision_
    // stays in the window.
    int64_t rev = events_.front()->revision;
    while (!events_.empty() && events_.front()->revision == rev) events_.pop_front();
    oldest_revision_ = rev;
  }
}

bool WatchCache::wait_fresh(int64_t revision) {
  std::unique_lock lock(ctl_mu_);
  if (fresh_revision_ >= revision) return true;
  // A store watch being set up or resumed is no reason to give up (the cache is ready before
  // its first watch starts): as upstream's waitUntilFreshAndBlock, wait for the cache to catch
  // up, up to fresh_timeout.
  if (stopping_) return false;
  ++waiting_readers_;
  fresh_wanted_ = true;
  wake_cv_.notify_one();  // the dispatcher asks the store for progress
  auto deadline = Clock::now() + options_.fresh_timeout;
  bool fresh = fresh_cv_.wait_until(lock, deadline,
                                    [&] { return fresh_revision_ >= revision || stopping_; });
  fresh = fresh && fresh_revision_ >= revision;
  --waiting_readers_;
  if (!fresh) ++fresh_timeouts_;
  return fresh;
}

Result<WatchCache::Snapshot> WatchCache::list(std::string_view key_prefix,
                                              std::string_view start_key, int64_t min_revision,
                                              int64_t exact_revision) {
  if (!ready()) return Status(StatusCode::kUnavailable, "the watch cache is not ready");
  if (min_revision > 0 && !wait_fresh(min_revision)) {
    return Status(StatusCode::kDeadlineExceeded,
                  "the watch cache did not reach revision " + std::to_string(min_revision));
  }
  Snapshot snap;
  std::string_view from = std::max(key_prefix, start_key);
  std::shared_lock lock(mu_);
  if (!ready_) return Status(StatusCode::kUnavailable, "the watch cache is not ready");
  if (exact_revision > 0 && revision_ != exact_revision) {
    return Status(StatusCode::kFailedPrecondition,
                  "the watch cache is not at revision " + std::to_string(exact_revision));
  }
  snap.revision = revision_;
  for (auto it = objects_.lower_bound(from);
       it != objects_.end() && it->first.starts_with(key_prefix); ++it) {
    snap.objects.push_back(it->second);
  }
  ++lists_;
  return snap;
}

Result<WatchCache::WatchStart> WatchCache::watch(const WatchRequest& request) {
  if (!ready()) return Status(StatusCode::kUnavailable, "the watch cache is not ready");
  if (request.initial && request.min_revision > 0 && !wait_fresh(request.min_revision)) {
    return Status(StatusCode::kDeadlineExceeded,
                  "the watch cache did not reach revision " + std::to_string(request.min_revision));
  }
  WatchStart start;
  std::vector<CacheEventPtr> replay;
  std::shared_lock lock(mu_);
  if (!ready_) return Status(StatusCode::kUnavailable, "the watch cache is not ready");
  int64_t after;
  if (request.initial) {
    after = revision_;
    for (auto it = objects_.lower_bound(request.key_prefix);
         it != objects_.end() && it->first.starts_with(request.key_prefix); ++it) {
      start.initial.push_back(it->second);
    }
  } else {
    after = request.after_revision < 0 ? revision_ : request.after_revision;
    if (after < oldest_revision_) {
      return Status(StatusCode::kCompacted, "too old resource version: " + std::to_string(after) +
                                                " (" + std::to_string(oldest_revision_) + ")");
    }
    auto it =
        std::upper_bound(events_.begin(), events_.end(), after,
                         [](int64_t rev, const CacheEventPtr& e) { return rev < e->revision; });
    for (; it != events_.end(); ++it) {
      if ((*it)->key().starts_with(request.key_prefix)) replay.push_back(*it);
    }
  }
  size_t capacity = options_.watcher_buffer_events ? options_.watcher_buffer_events
                                                   : storage::kDefaultWatchBufferEvents;
  auto state = std::make_shared<CacheWatcher::State>(request.key_prefix, capacity,
                                                     std::max(after, revision_) + 1);
  state->buffer = std::move(replay);
  {
    std::lock_guard wlock(watchers_->mu);
    if (watchers_->closed) return Status(StatusCode::kUnavailable, "the watch cache was stopped");
    watchers_->list.push_back(state);
  }
  ++watches_started_;
  start.revision = after;
  start.watcher = std::make_unique<CacheWatcher>(watchers_, std::move(state));
  return start;
}

WatchCache::Stats WatchCache::stats() const {
  Stats s;
  {
    std::shared_lock lock(mu_);
    s.ready = ready_;
    s.revision = revision_;
    s.oldest_revision = oldest_revision_;
    s.objects = objects_.size();
    s.events = events_.size();
  }
  {
    std::lock_guard lock(watchers_->mu);
    s.watchers = watchers_->list.size();
  }
  s.lists = lists_;
  s.watches = watches_started_;
  s.fresh_timeouts = fresh_timeouts_;
  s.relists = relists_;
  s.rewatches = rewatches_;
  s.watchers_cut_off = watchers_->cut_off;
  return s;
}

}  // namespace skiff::apiserver
