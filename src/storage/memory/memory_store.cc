#include "storage/memory/memory_store.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "base/log.h"
#include "storage/compactor.h"
#include "storage/watch_queue.h"

namespace skiff::storage {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kLatest = std::numeric_limits<int64_t>::max();

bool is_tombstone(const KeyValuePtr& kv) {
  return kv->version == 0;
}

// Every write to one key still inside the retained history, oldest first.
struct KeyHistory {
  std::vector<KeyValuePtr> revisions;

  // The key's value at `rev`, or null when it did not exist then.
  const KeyValuePtr* at(int64_t rev) const {
    auto it =
        std::upper_bound(revisions.begin(), revisions.end(), rev,
                         [](int64_t r, const KeyValuePtr& kv) { return r < kv->mod_revision; });
    if (it == revisions.begin()) return nullptr;
    --it;
    return is_tombstone(*it) ? nullptr : &*it;
  }
};

struct Lease {
  int64_t ttl = 0;
  Clock::time_point expiry;
  std::set<std::string> keys;
};

class MemoryWatch;

// The watchers of one store, and the revision published to them. Shared with every watch handle
// so a handle may outlive the store. Lock order: WatchHub::mu before MemoryStore::mu_.
struct WatchHub {
  std::mutex mu;
  std::unordered_set<MemoryWatch*> watchers;  // guarded by mu
  int64_t published = 0;                      // guarded by mu
  bool closed = false;                        // guarded by mu
};

class MemoryWatch final : public Watch {
 public:
  MemoryWatch(std::shared_ptr<WatchHub> hub, WatchOptions& options, size_t capacity)
      : hub_(std::move(hub)),
        range_(std::move(options.range)),
        prev_kv_(options.prev_kv),
        queue_(capacity, std::move(options.notify)) {}

  ~MemoryWatch() override {
    {
      std::lock_guard lock(hub_->mu);
      hub_->watchers.erase(this);
    }
    queue_.close();
  }

  Status poll(std::vector<Event>* out) override { return queue_.poll(out); }

  void request_progress() override {
    std::lock_guard lock(hub_->mu);
    if (hub_->closed || queue_.ended()) return;
    Event e;
    e.type = EventType::kProgress;
    e.revision = hub_->published;
    if (!queue_.push(std::move(e))) hub_->watchers.erase(this);
  }

  void cancel() override {
    {
      std::lock_guard lock(hub_->mu);
      hub_->watchers.erase(this);
    }
    queue_.end(Status(StatusCode::kCancelled, "watch cancelled"));
  }

  int64_t compact_revision() const override { return compact_revision_; }

  // Called with hub->mu held. Returns false when the watcher has ended and must be dropped.
  bool deliver(const std::vector<Event>& events) {
    std::vector<Event> mine;
    for (const Event& e : events) {
      if (e.revision < next_revision_ || !range_.contains(e.kv->key)) continue;
      mine.push_back(e);
      if (!prev_kv_) mine.back().prev_kv.reset();
    }
    if (mine.empty()) return !queue_.ended();
    return queue_.push(std::move(mine));
  }

  void end(Status status) { queue_.end(std::move(status)); }
  void set_next_revision(int64_t rev) { next_revision_ = rev; }
  void set_compact_revision(int64_t rev) { compact_revision_ = rev; }

 private:
  const std::shared_ptr<WatchHub> hub_;
  const KeyRange range_;
  const bool prev_kv_;
  WatchQueue queue_;
  int64_t next_revision_ = 0;  // guarded by hub_->mu; the start revision
  int64_t compact_revision_ = 0;
};

// Wakes the thread that submitted a unit of work once the commit thread is done with it. Not a
// semaphore: libstdc++'s semaphores spin with sched_yield before they sleep, and on a loaded
// machine those spins take CPU from the commit thread the waiters wait for (a tenth of the API
// server's CPU under 32 concurrent creates). signal() notifies under the lock, so the waiter,
// which may destroy this right after wait() returns, never meets a notify still in flight.
class Completion {
 public:
  void signal() {
    std::lock_guard lock(mu_);
    done_ = true;
    cv_.notify_one();
  }
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return done_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;  // guarded by mu_
};

// A unit of work for the commit thread.
struct Pending {
  enum class Kind { kTxn, kLeaseGrant, kLeaseRevoke, kCompact };
  Kind kind = Kind::kTxn;
  const Txn* txn = nullptr;
  int64_t number = 0;  // lease id, ttl or compaction revision
  Result<TxnResult> txn_result{Status(StatusCode::kInternal, "not run")};
  Status status;
  int64_t out = 0;
  Completion done;
};

class MemoryStore final : public Store {
 public:
  MemoryStore(MemoryStoreOptions options, std::unique_ptr<CommitLog> log, RecoveredState recovered)
      : options_(std::move(options)),
        log_(std::move(log)),
        hub_(std::make_shared<WatchHub>()),
        rng_(std::random_device{}()) {
    recover(std::move(recovered));
    committer_ = std::thread([this] { commit_loop(); });
    if (options_.compaction_window.count() > 0) {
      compactor_ = std::make_unique<Compactor>(*this, options_.compaction_window);
      compactor_->start();
    }
  }

  ~MemoryStore() override {
    if (compactor_) compactor_->stop();
    {
      std::lock_guard lock(queue_mu_);
      stopping_ = true;
    }
    queue_cv_.notify_all();
    committer_.join();
    std::lock_guard lock(hub_->mu);
    hub_->closed = true;
    for (MemoryWatch* w : hub_->watchers) w->end(Status(StatusCode::kUnavailable, "store closed"));
    hub_->watchers.clear();
  }

  Result<RangeResult> range(const KeyRange& range, const RangeOptions& options) override {
    SKIFF_RETURN_IF_ERROR(validate_range(range, options));
    std::shared_lock lock(mu_);
    int64_t published = published_.load(std::memory_order_acquire);
    int64_t rev = options.revision == 0 ? published : options.revision;
    if (rev > published) return future_revision(rev, published);
    if (rev < compact_revision_) return compacted(rev);
    RangeResult result;
    result.revision = published;
    read_range(range, rev, options, &result.kvs, &result.count, &result.more);
    return result;
  }

  Result<TxnResult> txn(const Txn& txn) override {
    SKIFF_RETURN_IF_ERROR(validate_txn(txn, options_.limits));
    Pending p;
    p.kind = Pending::Kind::kTxn;
    p.txn = &txn;
    submit(p);
    return std::move(p.txn_result);
  }

  Result<std::unique_ptr<Watch>> watch(WatchOptions options) override {
    if (options.range.key.empty()) {
      return Status(StatusCode::kInvalidArgument, "empty key in watch");
    }
    if (options.start_revision < 0) {
      return Status(StatusCode::kInvalidArgument, "negative start revision");
    }
    size_t capacity = options.max_buffered_events ? options.max_buffered_events
                                                  : options_.limits.watch_buffer_events;
    int64_t start = options.start_revision;
    auto w = std::make_unique<MemoryWatch>(hub_, options, capacity);
    std::lock_guard hub_lock(hub_->mu);
    if (hub_->closed) return Status(StatusCode::kUnavailable, "store closed");
    std::vector<Event> history;
    {
      std::shared_lock lock(mu_);
      if (start == 0) start = hub_->published + 1;
      if (start < compact_revision_) {
        w->set_compact_revision(compact_revision_);
        w->end(Status(StatusCode::kCompacted, "watch from revision " + std::to_string(start) +
                                                  ": history has been compacted up to revision " +
                                                  std::to_string(compact_revision_)));
        return std::unique_ptr<Watch>(std::move(w));
      }
      // Replay what was published since `start`; later revisions arrive through publish().
      auto it = std::lower_bound(log_events_.begin(), log_events_.end(), start,
                                 [](const Event& e, int64_t r) { return e.revision < r; });
      for (; it != log_events_.end() && it->revision <= hub_->published; ++it) {
        history.push_back(*it);
      }
    }
    w->set_next_revision(start);
    if (w->deliver(history)) hub_->watchers.insert(w.get());
    return std::unique_ptr<Watch>(std::move(w));
  }

  Result<int64_t> lease_grant(int64_t ttl_seconds) override {
    if (ttl_seconds < 1) return Status(StatusCode::kInvalidArgument, "lease TTL must be >= 1 s");
    Pending p;
    p.kind = Pending::Kind::kLeaseGrant;
    p.number = ttl_seconds;
    submit(p);
    if (!p.status.is_ok()) return p.status;
    return p.out;
  }

  Status lease_revoke(int64_t lease_id) override {
    Pending p;
    p.kind = Pending::Kind::kLeaseRevoke;
    p.number = lease_id;
    submit(p);
    return p.status;
  }

  Result<int64_t> lease_keep_alive(int64_t lease_id) override {
    std::unique_lock lock(mu_);
    auto it = leases_.find(lease_id);
    if (it == leases_.end() || it->second.expiry <= Clock::now()) return lease_not_found(lease_id);
    it->second.expiry = Clock::now() + std::chrono::seconds(it->second.ttl);
    return it->second.ttl;
  }

  Status compact(int64_t revision) override {
    Pending p;
    p.kind = Pending::Kind::kCompact;
    p.number = revision;
    submit(p);
    return p.status;
  }

  Result<int64_t> current_revision() override { return published_.load(std::memory_order_acquire); }

 private:
  static Status future_revision(int64_t rev, int64_t current) {
    return Status(StatusCode::kFutureRevision, "revision " + std::to_string(rev) +
                                                   " is newer than the current revision " +
                                                   std::to_string(current));
  }
  Status compacted(int64_t rev) const {
    return Status(StatusCode::kCompacted, "revision " + std::to_string(rev) +
                                              " has been compacted (compacted up to " +
                                              std::to_string(compact_revision_) + ")");
  }
  static Status lease_not_found(int64_t id) {
    return Status(StatusCode::kNotFound, "lease " + std::to_string(id) + " not found");
  }

  // Reads [range) at `rev`. Caller holds mu_.
  void read_range(const KeyRange& range, int64_t rev, const RangeOptions& options,
                  std::vector<KeyValuePtr>* kvs, int64_t* count, bool* more) const {
    auto take = [&](const KeyValuePtr& kv) {
      ++*count;
      if (options.count_only) return;
      if (options.limit > 0 && static_cast<int64_t>(kvs->size()) >= options.limit) {
        *more = true;
        return;
      }
      if (options.keys_only) {
        auto copy = std::make_shared<KeyValue>(*kv);
        copy->value.clear();
        kvs->push_back(std::move(copy));
      } else {
        kvs->push_back(kv);
      }
    };
    if (range.is_single()) {
      auto it = index_.find(range.key);
      if (it == index_.end()) return;
      if (const KeyValuePtr* kv = it->second.at(rev)) take(*kv);
      return;
    }
    for (auto it = index_.lower_bound(range.key); it != index_.end() && range.contains(it->first);
         ++it) {
      if (const KeyValuePtr* kv = it->second.at(rev)) take(*kv);
    }
  }

  void submit(Pending& p) {
    {
      std::lock_guard lock(queue_mu_);
      if (stopping_) {
        Status closed(StatusCode::kUnavailable, "store closed");
        p.status = closed;
        p.txn_result = closed;
        return;
      }
      queue_.push_back(&p);
    }
    queue_cv_.notify_one();
    p.done.wait();
  }

  // The commit thread: applies queued work in order, makes each batch durable with one commit,
  // publishes it to readers and watchers, then acknowledges it.
  void commit_loop() {
    std::vector<Pending*> batch;
    while (true) {
      {
        std::unique_lock lock(queue_mu_);
        queue_cv_.wait_for(lock, options_.lease_check_interval,
                           [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty() && stopping_) break;
        batch.assign(queue_.begin(), queue_.end());
        queue_.clear();
      }
      CommitBatch commit;
      std::vector<Event> events;
      {
        std::unique_lock lock(mu_);
        for (Pending* p : batch) apply(*p, commit, events);
        revoke_expired(commit, events);
        commit.revision = current_revision_;
      }
      if (log_ && (!commit.mutations.empty() || !commit.lease_grants.empty() ||
                   !commit.lease_revokes.empty() || commit.compact_revision > 0)) {
        Status s = log_->commit(commit);
        SKIFF_CHECK(s.is_ok(), "store commit failed, cannot continue: " + s.to_string());
      }
      publish(events, commit.revision);
      for (Pending* p : batch) p->done.signal();
      batch.clear();
    }
    for (Pending* p : queue_) {
      p->status = Status(StatusCode::kUnavailable, "store closed");
      p->txn_result = p->status;
      p->done.signal();
    }
    queue_.clear();
  }

  void publish(const std::vector<Event>& events, int64_t revision) {
    std::lock_guard lock(hub_->mu);
    hub_->published = revision;
    published_.store(revision, std::memory_order_release);
    if (events.empty()) return;
    for (auto it = hub_->watchers.begin(); it != hub_->watchers.end();) {
      if ((*it)->deliver(events)) {
        ++it;
      } else {
        it = hub_->watchers.erase(it);
      }
    }
  }

  // Everything below runs on the commit thread with mu_ held exclusively.

  void apply(Pending& p, CommitBatch& commit, std::vector<Event>& events) {
    switch (p.kind) {
      case Pending::Kind::kTxn:
        p.txn_result = apply_txn(*p.txn, commit, events);
        return;
      case Pending::Kind::kLeaseGrant: {
        int64_t id;
        do {
          id = static_cast<int64_t>(rng_() & 0x3fffffffffffffffULL);
        } while (id == 0 || leases_.count(id));
        leases_[id] = Lease{p.number, Clock::now() + std::chrono::seconds(p.number), {}};
        commit.lease_grants.emplace_back(id, p.number);
        p.out = id;
        return;
      }
      case Pending::Kind::kLeaseRevoke:
        if (!leases_.count(p.number)) {
          p.status = lease_not_found(p.number);
          return;
        }
        revoke(p.number, commit, events);
        return;
      case Pending::Kind::kCompact:
        p.status = apply_compact(p.number, commit);
        return;
    }
  }

  bool compare_holds(const Compare& c) const {
    const KeyValuePtr* kv = nullptr;
    if (auto it = index_.find(c.key); it != index_.end()) kv = it->second.at(kLatest);
    if (c.target == CompareTarget::kValue) {
      if (!kv) return false;
      int cmp = (*kv)->value.compare(c.value);
      switch (c.op) {
        case CompareOp::kEqual:
          return cmp == 0;
        case CompareOp::kNotEqual:
          return cmp != 0;
        case CompareOp::kGreater:
          return cmp > 0;
        case CompareOp::kLess:
          return cmp < 0;
      }
      return false;
    }
    int64_t actual = 0;
    if (kv) {
      switch (c.target) {
        case CompareTarget::kVersion:
          actual = (*kv)->version;
          break;
        case CompareTarget::kCreateRevision:
          actual = (*kv)->create_revision;
          break;
        case CompareTarget::kModRevision:
          actual = (*kv)->mod_revision;
          break;
        case CompareTarget::kValue:
          break;
      }
    }
    switch (c.op) {
      case CompareOp::kEqual:
        return actual == c.number;
      case CompareOp::kNotEqual:
        return actual != c.number;
      case CompareOp::kGreater:
        return actual > c.number;
      case CompareOp::kLess:
        return actual < c.number;
    }
    return false;
  }

  Result<TxnResult> apply_txn(const Txn& txn, CommitBatch& commit, std::vector<Event>& events) {
    TxnResult result;
    result.succeeded = std::all_of(txn.compare.begin(), txn.compare.end(),
                                   [this](const Compare& c) { return compare_holds(c); });
    const std::vector<Op>& ops = result.succeeded ? txn.success : txn.failure;
    // Check leases before anything is written, so a bad one leaves no partial transaction.
    for (const Op& op : ops) {
      if (op.type == Op::Type::kPut && op.lease != 0 && !leases_.count(op.lease)) {
        return lease_not_found(op.lease);
      }
    }
    int64_t rev = current_revision_ + 1;
    int64_t sub = 0;
    for (const Op& op : ops) {
      OpResult& r = result.results.emplace_back();
      r.type = op.type;
      switch (op.type) {
        case Op::Type::kRange:
          read_range(op.range, kLatest, op.range_options, &r.kvs, &r.count, &r.more);
          break;
        case Op::Type::kPut: {
          KeyHistory& h = index_[op.range.key];
          const KeyValuePtr* prev = h.at(kLatest);
          auto kv = std::make_shared<KeyValue>();
          kv->key = op.range.key;
          kv->value = op.value;
          kv->mod_revision = rev;
          kv->create_revision = prev ? (*prev)->create_revision : rev;
          kv->version = prev ? (*prev)->version + 1 : 1;
          kv->lease = op.lease;
          KeyValuePtr prev_kv = prev ? *prev : nullptr;
          if (op.prev_kv) r.prev_kv = prev_kv;
          if (prev_kv && prev_kv->lease != 0 && prev_kv->lease != op.lease) {
            detach(prev_kv->lease, op.range.key);
          }
          if (op.lease != 0) leases_[op.lease].keys.insert(op.range.key);
          record(h, std::move(kv), std::move(prev_kv), sub++, commit, events);
          break;
        }
        case Op::Type::kDelete: {
          std::vector<std::string> keys;
          if (op.range.is_single()) {
            if (auto it = index_.find(op.range.key); it != index_.end() && it->second.at(kLatest)) {
              keys.push_back(op.range.key);
            }
          } else {
            for (auto it = index_.lower_bound(op.range.key);
                 it != index_.end() && op.range.contains(it->first); ++it) {
              if (it->second.at(kLatest)) keys.push_back(it->first);
            }
          }
          for (const std::string& key : keys) {
            KeyHistory& h = index_[key];
            KeyValuePtr prev_kv = *h.at(kLatest);
            if (op.prev_kv) r.kvs.push_back(prev_kv);
            if (prev_kv->lease != 0) detach(prev_kv->lease, key);
            record(h, tombstone(key, rev), std::move(prev_kv), sub++, commit, events);
          }
          r.count = static_cast<int64_t>(keys.size());
          break;
        }
      }
    }
    if (sub > 0) current_revision_ = rev;
    result.revision = current_revision_;
    return result;
  }

  static KeyValuePtr tombstone(const std::string& key, int64_t rev) {
    auto kv = std::make_shared<KeyValue>();
    kv->key = key;
    kv->mod_revision = rev;
    return kv;
  }

  void record(KeyHistory& h, KeyValuePtr kv, KeyValuePtr prev, int64_t sub, CommitBatch& commit,
              std::vector<Event>& events) {
    h.revisions.push_back(kv);
    Event e;
    e.type = is_tombstone(kv) ? EventType::kDelete : EventType::kPut;
    e.revision = kv->mod_revision;
    e.kv = kv;
    e.prev_kv = std::move(prev);
    log_events_.push_back(e);
    events.push_back(std::move(e));
    commit.mutations.push_back(Mutation{sub, std::move(kv)});
  }

  void detach(int64_t lease, const std::string& key) {
    if (auto it = leases_.find(lease); it != leases_.end()) it->second.keys.erase(key);
  }

  void revoke(int64_t id, CommitBatch& commit, std::vector<Event>& events) {
    auto node = leases_.extract(id);
    int64_t rev = current_revision_ + 1;
    int64_t sub = 0;
    for (const std::string& key : node.mapped().keys) {
      auto it = index_.find(key);
      if (it == index_.end()) continue;
      const KeyValuePtr* prev = it->second.at(kLatest);
      if (!prev || (*prev)->lease != id) continue;
      KeyValuePtr prev_kv = *prev;
      record(it->second, tombstone(key, rev), std::move(prev_kv), sub++, commit, events);
    }
    if (sub > 0) current_revision_ = rev;
    commit.lease_revokes.push_back(id);
  }

  void revoke_expired(CommitBatch& commit, std::vector<Event>& events) {
    auto now = Clock::now();
    std::vector<int64_t> expired;
    for (const auto& [id, lease] : leases_) {
      if (lease.expiry <= now) expired.push_back(id);
    }
    for (int64_t id : expired) revoke(id, commit, events);
  }

  Status apply_compact(int64_t rev, CommitBatch& commit) {
    if (rev <= compact_revision_) return compacted(rev);
    if (rev > current_revision_) return future_revision(rev, current_revision_);
    compact_revision_ = rev;
    commit.compact_revision = rev;
    for (auto it = index_.begin(); it != index_.end();) {
      auto& revs = it->second.revisions;
      // Keep the newest write at or before `rev` (it answers reads at `rev`) unless it is a
      // tombstone older than `rev`; drop everything before it.
      auto newer =
          std::upper_bound(revs.begin(), revs.end(), rev,
                           [](int64_t r, const KeyValuePtr& kv) { return r < kv->mod_revision; });
      if (newer != revs.begin()) {
        auto keep = std::prev(newer);
        if (is_tombstone(*keep) && (*keep)->mod_revision < rev) keep = newer;
        revs.erase(revs.begin(), keep);
      }
      it = revs.empty() ? index_.erase(it) : std::next(it);
    }
    while (!log_events_.empty() && log_events_.front().revision < rev) log_events_.pop_front();
    return Status::ok();
  }

  void recover(RecoveredState state) {
    compact_revision_ = state.compact_revision;
    current_revision_ = state.current_revision;
    for (Mutation& m : state.mutations) {
      KeyHistory& h = index_[m.kv->key];
      const KeyValuePtr* prev = h.at(kLatest);
      current_revision_ = std::max(current_revision_, m.kv->mod_revision);
      if (m.kv->mod_revision >= compact_revision_) {
        Event e;
        e.type = m.tombstone() ? EventType::kDelete : EventType::kPut;
        e.revision = m.kv->mod_revision;
        e.kv = m.kv;
        if (prev) e.prev_kv = *prev;
        log_events_.push_back(std::move(e));
      }
      h.revisions.push_back(std::move(m.kv));
    }
    auto now = Clock::now();
    for (auto [id, ttl] : state.leases) {
      leases_[id] = Lease{ttl, now + std::chrono::seconds(ttl), {}};
    }
    for (const auto& [key, h] : index_) {
      const KeyValuePtr* kv = h.at(kLatest);
      if (!kv || (*kv)->lease == 0) continue;
      if (auto it = leases_.find((*kv)->lease); it != leases_.end()) it->second.keys.insert(key);
    }
    published_.store(current_revision_);
    hub_->published = current_revision_;
  }

  const MemoryStoreOptions options_;
  const std::unique_ptr<CommitLog> log_;
  const std::shared_ptr<WatchHub> hub_;

  std::shared_mutex mu_;
  std::map<std::string, KeyHistory, std::less<>> index_;  // guarded by mu_
  std::deque<Event> log_events_;                          // guarded by mu_; revision order
  std::unordered_map<int64_t, Lease> leases_;             // guarded by mu_
  int64_t current_revision_ = 0;                          // guarded by mu_; may be unpublished
  int64_t compact_revision_ = 0;                          // guarded by mu_
  std::mt19937_64 rng_;                                   // commit thread only
  // The newest revision visible to readers: durable and delivered to watchers.
  std::atomic<int64_t> published_{0};

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Pending*> queue_;  // guarded by queue_mu_
  bool stopping_ = false;       // guarded by queue_mu_
  std::thread committer_;
  std::unique_ptr<Compactor> compactor_;
};

}  // namespace

std::unique_ptr<Store> new_memory_store(MemoryStoreOptions options) {
  return std::make_unique<MemoryStore>(std::move(options), nullptr, RecoveredState{});
}

std::unique_ptr<Store> new_memory_store(MemoryStoreOptions options, std::unique_ptr<CommitLog> log,
                                        RecoveredState recovered) {
  return std::make_unique<MemoryStore>(std::move(options), std::move(log), std::move(recovered));
}

}  // namespace skiff::storage
