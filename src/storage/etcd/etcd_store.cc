#include "storage/etcd/etcd_store.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>

#include "base/log.h"
#include "etcd_rpc.grpc.pb.h"
#include "storage/compactor.h"
#include "storage/watch_queue.h"

namespace skiff::storage {
namespace {

namespace pb = ::etcdserverpb;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// etcd 3.4.23 answers a WatchProgressRequest out of band: the answer can overtake events of
// revisions it covers (etcd-io/etcd#15220, fixed in 3.4.25), and it ignores watchers still
// replaying history. skiff therefore reports progress R only once a second progress request,
// sent after R arrived, has been answered too (by then etcd has flushed what it had queued),
// and only to watchers that etcd has had time to move from replaying history to live events.
constexpr milliseconds kCatchUpGrace{300};
constexpr milliseconds kProgressTick{50};
constexpr int64_t kStreamProgressWatchId = -1;

// ---------------------------------------------------------------------------------------------
// Conversions and error mapping.

KeyValuePtr to_kv(const mvccpb::KeyValue& in) {
  auto kv = std::make_shared<KeyValue>();
  kv->key = in.key();
  kv->value = in.value();
  kv->create_revision = in.create_revision();
  kv->mod_revision = in.mod_revision();
  kv->version = in.version();
  kv->lease = in.lease();
  return kv;
}

bool has(const std::string& text, std::string_view needle) {
  return text.find(needle) != std::string::npos;
}

// etcd reports leader elections as UNAVAILABLE, but older servers used other codes for some of
// them; the message is the stable part (see etcd's api/v3rpc/rpctypes).
bool is_retryable(const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
      s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return true;
  }
  const std::string& m = s.error_message();
  return has(m, "leader changed") || has(m, "no leader") || has(m, "not leader") ||
         has(m, "request timed out") || has(m, "too many requests");
}

Status from_grpc(const grpc::Status& s, std::string_view what) {
  const std::string& m = s.error_message();
  std::string msg = std::string(what) + ": " + m;
  if (has(m, "required revision has been compacted")) {
    return Status(StatusCode::kCompacted, std::move(msg));
  }
  if (has(m, "required revision is a future revision")) {
    return Status(StatusCode::kFutureRevision, std::move(msg));
  }
  if (has(m, "requested lease not found") || has(m, "lease not found")) {
    return Status(StatusCode::kNotFound, std::move(msg));
  }
  if (has(m, "request is too large") || has(m, "too many operations in txn") ||
      has(m, "larger than max")) {
    return Status(StatusCode::kTooLarge, std::move(msg));
  }
  switch (s.error_code()) {
    case grpc::StatusCode::CANCELLED:
      return Status(StatusCode::kCancelled, std::move(msg));
    case grpc::StatusCode::INVALID_ARGUMENT:
      return Status(StatusCode::kInvalidArgument, std::move(msg));
    case grpc::StatusCode::NOT_FOUND:
      return Status(StatusCode::kNotFound, std::move(msg));
    case grpc::StatusCode::ALREADY_EXISTS:
      return Status(StatusCode::kAlreadyExists, std::move(msg));
    case grpc::StatusCode::FAILED_PRECONDITION:
      return Status(StatusCode::kFailedPrecondition, std::move(msg));
    case grpc::StatusCode::OUT_OF_RANGE:
      return Status(StatusCode::kOutOfRange, std::move(msg));
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return Status(StatusCode::kResourceExhausted, std::move(msg));
    case grpc::StatusCode::UNAVAILABLE:
      return Status(StatusCode::kUnavailable, std::move(msg));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return Status(StatusCode::kDeadlineExceeded, std::move(msg));
    case grpc::StatusCode::UNAUTHENTICATED:
      return Status(StatusCode::kUnauthenticated, std::move(msg));
    case grpc::StatusCode::PERMISSION_DENIED:
      return Status(StatusCode::kPermissionDenied, std::move(msg));
    case grpc::StatusCode::UNIMPLEMENTED:
      return Status(StatusCode::kUnimplemented, std::move(msg));
    default:
      return Status(StatusCode::kInternal, std::move(msg));
  }
}

Result<std::string> grpc_target(const std::string& endpoint) {
  std::string_view e = endpoint;
  if (e.starts_with("https://")) {
    return Status(StatusCode::kUnimplemented,
                  "etcd endpoint " + endpoint + ": TLS is not supported by the etcd backend yet");
  }
  if (e.starts_with("http://")) e.remove_prefix(7);
  while (!e.empty() && e.back() == '/') e.remove_suffix(1);
  if (e.empty() || e.find('/') != std::string_view::npos) {
    return Status(StatusCode::kInvalidArgument,
                  "etcd endpoint \"" + endpoint + "\" is not host:port or http://host:port");
  }
  return std::string(e);
}

std::chrono::system_clock::time_point to_grpc_deadline(Clock::time_point deadline) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(deadline - Clock::now());
}

// etcd spells "every key" as key "\0" with range_end "\0"; an empty key is an error there.
std::string etcd_key(const KeyRange& range) {
  if (range.key.empty() && !range.range_end.empty()) return std::string(1, '\0');
  return range.key;
}

void fill_range(pb::RangeRequest* req, const KeyRange& range, const RangeOptions& options) {
  req->set_key(etcd_key(range));
  req->set_range_end(range.range_end);
  req->set_limit(options.limit);
  req->set_revision(options.revision);
  req->set_keys_only(options.keys_only);
  req->set_count_only(options.count_only);
}

pb::Compare to_pb(const Compare& c) {
  pb::Compare out;
  out.set_key(c.key);
  switch (c.op) {
    case CompareOp::kEqual:
      out.set_result(pb::Compare::EQUAL);
      break;
    case CompareOp::kNotEqual:
      out.set_result(pb::Compare::NOT_EQUAL);
      break;
    case CompareOp::kGreater:
      out.set_result(pb::Compare::GREATER);
      break;
    case CompareOp::kLess:
      out.set_result(pb::Compare::LESS);
      break;
  }
  switch (c.target) {
    case CompareTarget::kVersion:
      out.set_target(pb::Compare::VERSION);
      out.set_version(c.number);
      break;
    case CompareTarget::kCreateRevision:
      out.set_target(pb::Compare::CREATE);
      out.set_create_revision(c.number);
      break;
    case CompareTarget::kModRevision:
      out.set_target(pb::Compare::MOD);
      out.set_mod_revision(c.number);
      break;
    case CompareTarget::kValue:
      out.set_target(pb::Compare::VALUE);
      out.set_value(c.value);
      break;
  }
  return out;
}

pb::RequestOp to_pb(const Op& op) {
  pb::RequestOp out;
  switch (op.type) {
    case Op::Type::kPut: {
      auto* put = out.mutable_request_put();
      put->set_key(op.range.key);
      put->set_value(op.value);
      put->set_lease(op.lease);
      put->set_prev_kv(op.prev_kv);
      break;
    }
    case Op::Type::kDelete: {
      auto* del = out.mutable_request_delete_range();
      del->set_key(etcd_key(op.range));
      del->set_range_end(op.range.range_end);
      del->set_prev_kv(op.prev_kv);
      break;
    }
    case Op::Type::kRange:
      fill_range(out.mutable_request_range(), op.range, op.range_options);
      break;
  }
  return out;
}

OpResult from_pb(const pb::ResponseOp& in) {
  OpResult out;
  switch (in.response_case()) {
    case pb::ResponseOp::kResponsePut:
      out.type = Op::Type::kPut;
      if (in.response_put().has_prev_kv()) out.prev_kv = to_kv(in.response_put().prev_kv());
      break;
    case pb::ResponseOp::kResponseDeleteRange:
      out.type = Op::Type::kDelete;
      out.count = in.response_delete_range().deleted();
      for (const auto& kv : in.response_delete_range().prev_kvs()) out.kvs.push_back(to_kv(kv));
      break;
    case pb::ResponseOp::kResponseRange:
      out.type = Op::Type::kRange;
      out.count = in.response_range().count();
      out.more = in.response_range().more();
      for (const auto& kv : in.response_range().kvs()) out.kvs.push_back(to_kv(kv));
      break;
    default:
      break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Connection: one gRPC channel per member and the retry/failover policy of unary calls.
// Thread-safe; immutable after construction except for the preferred endpoint (atomic).

struct Endpoint {
  std::string target;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::KV::Stub> kv;
  std::unique_ptr<pb::Watch::Stub> watch;
  std::unique_ptr<pb::Lease::Stub> lease;
};

class Connection {
 public:
  using Attempt = std::function<grpc::Status(Endpoint&, grpc::ClientContext&)>;

  Connection(std::vector<std::string> targets, milliseconds attempt_timeout,
             milliseconds request_timeout)
      : attempt_timeout_(attempt_timeout), request_timeout_(request_timeout) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    args.SetMaxSendMessageSize(-1);
    // A dead member must be noticed and a restarted one found again within a second or so.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    // Detects members that hang without closing the connection. etcd refuses pings more often
    // than every 5 s (--grpc-keepalive-min-time).
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    for (auto& target : targets) {
      Endpoint e;
      e.target = std::move(target);
      e.channel = grpc::CreateCustomChannel(e.target, grpc::InsecureChannelCredentials(), args);
      e.kv = pb::KV::NewStub(e.channel);
      e.watch = pb::Watch::NewStub(e.channel);
      e.lease = pb::Lease::NewStub(e.channel);
      endpoints_.push_back(std::move(e));
    }
  }

  size_t size() const { return endpoints_.size(); }
  Endpoint& endpoint(size_t i) { return endpoints_[i]; }
  size_t preferred() const { return preferred_.load(); }
  milliseconds request_timeout() const { return request_timeout_; }

  // Moves every caller off `failed`, unless another caller already moved on.
  void fail_over(size_t failed) {
    size_t expected = failed;
    preferred_.compare_exchange_strong(expected, (failed + 1) % endpoints_.size());
  }

  // Runs `attempt` on the preferred endpoint; on a retryable failure moves to the next one and
  // tries again until request_timeout has passed. A write whose answer was lost may be applied
  // twice (harmless for puts, seen as a failed compare for guarded transactions), but success
  // is only ever reported from etcd's own answer.
  Status call(std::string_view what, const Attempt& attempt) {
    const auto deadline = Clock::now() + request_timeout_;
    grpc::Status last;
    size_t failures = 0;
    milliseconds backoff{25};
    while (true) {
      size_t index = preferred();
      auto now = Clock::now();
      grpc::ClientContext context;
      context.set_deadline(to_grpc_deadline(std::min(now + attempt_timeout_, deadline)));
      grpc::Status s = attempt(endpoints_[index], context);
      if (s.ok()) return Status::ok();
      if (!is_retryable(s)) return from_grpc(s, what);
      last = s;
      ++failures;
      fail_over(index);
      now = Clock::now();
      if (now >= deadline) break;
      SKIFF_LOG_DEBUG("etcd {} on {} failed ({}); trying the next endpoint", what,
                      endpoints_[index].target, s.error_message());
      // After a full round of failures the cluster is probably electing a leader: pause.
      if (failures % endpoints_.size() == 0) {
        std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
        backoff = std::min(backoff * 2, milliseconds(500));
      }
    }
    return Status(StatusCode::kUnavailable, std::string(what) +
                                                ": no etcd endpoint answered within " +
                                                std::to_string(request_timeout_.count()) +
                                                " ms (last error: " + last.error_message() + ")");
  }

 private:
  const milliseconds attempt_timeout_;
  const milliseconds request_timeout_;
  std::vector<Endpoint> endpoints_;
  std::atomic<size_t> preferred_{0};
};

// ---------------------------------------------------------------------------------------------
// Watches: every watch of a store is multiplexed on one etcd Watch stream. A hub thread owns the
// stream: it opens it, (re)creates every live watch on it, reads and dispatches responses, and
// on a break resumes every watch on the next endpoint from the revision after the last one it
// delivered. A ticker thread drives progress requests that have to wait.

struct WatchState {
  WatchState(int64_t id, const WatchOptions& options, size_t capacity)
      : id(id),
        range(options.range),
        prev_kv(options.prev_kv),
        queue(capacity, options.notify),
        next_rev(options.start_revision) {}

  const int64_t id;
  const KeyRange range;
  const bool prev_kv;
  WatchQueue queue;
  std::atomic<int64_t> compact_revision{0};

  // Guarded by WatchHub::mu_.
  int64_t next_rev;       // first revision not delivered yet; 0 until "now" is pinned
  uint64_t sent_gen = 0;  // stream generation its create request went out on
  bool created = false;   // etcd acknowledged it on the current stream
  bool ever_created = false;
  bool catching_up = false;  // etcd may still be replaying history to it
  int64_t created_rev = 0;
  Clock::time_point created_at;
  bool progress_wanted = false;
  uint64_t progress_asked_in_round = 0;
};

struct WatchStream {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<pb::WatchRequest, pb::WatchResponse>> rw;
  std::mutex write_mu;
  bool finished = false;  // guarded by write_mu; no Write may follow Finish()

  void write(const pb::WatchRequest& req) {
    std::lock_guard lock(write_mu);
    if (!finished) rw->Write(req);  // a failed write shows up as a failed Read
  }
};

pb::WatchRequest progress_request() {
  pb::WatchRequest req;
  req.mutable_progress_request();
  return req;
}

pb::WatchRequest cancel_request(int64_t id) {
  pb::WatchRequest req;
  req.mutable_cancel_request()->set_watch_id(id);
  return req;
}

class WatchHub {
 public:
  WatchHub(std::shared_ptr<Connection> connection, size_t default_capacity)
      : connection_(std::move(connection)), default_capacity_(default_capacity) {}

  ~WatchHub() { stop(); }

  Result<std::shared_ptr<WatchState>> add(const WatchOptions& options) {
    auto state = std::make_shared<WatchState>(
        next_id_.fetch_add(1), options,
        options.max_buffered_events ? options.max_buffered_events : default_capacity_);
    std::shared_ptr<WatchStream> stream;
    pb::WatchRequest create;
    {
      std::unique_lock lock(mu_);
      if (stopping_) return Status(StatusCode::kUnavailable, "the etcd store is closed");
      start_threads_locked();
      watches_[state->id] = state;
      if (current_) {
        state->sent_gen = gen_;
        create = create_request_locked(*state);
        stream = current_;
      }
    }
    cv_.notify_all();
    if (stream) stream->write(create);

    // "From now" must mean from the moment watch() returns, so wait for etcd to pin it.
    auto deadline = Clock::now() + connection_->request_timeout();
    std::unique_lock lock(mu_);
    bool ready = cv_.wait_until(
        lock, deadline, [&] { return state->ever_created || state->queue.ended() || stopping_; });
    if (!ready || (stopping_ && !state->ever_created)) {
      lock.unlock();
      cancel(state, Status(StatusCode::kUnavailable, "watch was not created"));
      return Status(StatusCode::kUnavailable,
                    "no etcd endpoint accepted the watch within " +
                        std::to_string(connection_->request_timeout().count()) + " ms");
    }
    return state;
  }

  // Ends the watch with `why` and tells etcd to drop it.
  void cancel(const std::shared_ptr<WatchState>& state, Status why) {
    std::shared_ptr<WatchStream> stream;
    {
      std::lock_guard lock(mu_);
      auto it = watches_.find(state->id);
      if (it != watches_.end() && it->second == state) {
        watches_.erase(it);
        if (current_ && state->sent_gen == gen_) stream = current_;
      }
    }
    state->queue.end(std::move(why));
    if (stream) stream->write(cancel_request(state->id));
  }

  void request_progress(const std::shared_ptr<WatchState>& state) {
    {
      std::lock_guard lock(mu_);
      if (!watches_.count(state->id)) return;
      if (!state->progress_wanted) {
        state->progress_wanted = true;
        state->progress_asked_in_round = probe_round_;
      }
    }
    maybe_start_probe();
  }

  void stop() {
    std::shared_ptr<WatchStream> stream;
    std::map<int64_t, std::shared_ptr<WatchState>> watches;
    {
      std::lock_guard lock(mu_);
      if (stopping_ && !hub_thread_.joinable()) return;
      stopping_ = true;
      stream = current_;
      watches.swap(watches_);
    }
    cv_.notify_all();
    if (stream) stream->context.TryCancel();
    if (hub_thread_.joinable()) hub_thread_.join();
    if (ticker_thread_.joinable()) ticker_thread_.join();
    for (auto& [id, state] : watches) {
      state->queue.end(Status(StatusCode::kUnavailable, "the etcd store was closed"));
    }
  }

 private:
  void start_threads_locked() {
    if (hub_thread_.joinable()) return;
    hub_thread_ = std::thread([this] { run(); });
    ticker_thread_ = std::thread([this] { tick(); });
  }

  pb::WatchRequest create_request_locked(WatchState& state) {
    state.created = false;
    pb::WatchRequest req;
    auto* create = req.mutable_create_request();
    create->set_key(etcd_key(state.range));
    create->set_range_end(state.range.range_end);
    create->set_start_revision(state.next_rev);
    create->set_prev_kv(state.prev_kv);
    create->set_watch_id(state.id);
    return req;
  }

  void run() {
    // Start of the current run of failed streams; time_point{} while a stream works.
    Clock::time_point outage_since{};
    size_t failures = 0;
    milliseconds backoff{50};
    while (true) {
      {
        std::unique_lock lock(mu_);
        if (watches_.empty()) {
          // An outage nobody watched through does not count against the next watch.
          outage_since = {};
          cv_.wait(lock, [this] { return stopping_ || !watches_.empty(); });
        }
        if (stopping_) return;
      }
      size_t index = connection_->preferred();
      Endpoint& endpoint = connection_->endpoint(index);
      auto stream = std::make_shared<WatchStream>();
      // Makes a member that lost its leader end the stream, so the watch moves to a member
      // that still sees new revisions.
      stream->context.AddMetadata("hasleader", "true");
      stream->rw = endpoint.watch->Watch(&stream->context);
      std::vector<pb::WatchRequest> creates;
      {
        std::lock_guard lock(mu_);
        if (stopping_) stream->context.TryCancel();
        current_ = stream;
        ++gen_;
        handshake_pending_ = true;
        probe_phase_ = 0;
        for (auto& [id, state] : watches_) {
          state->sent_gen = gen_;
          creates.push_back(create_request_locked(*state));
        }
      }
      // The first progress answer on a fresh stream proves the member serves watches.
      stream->write(progress_request());
      for (const auto& req : creates) stream->write(req);

      pb::WatchResponse resp;
      bool answered = false;
      while (stream->rw->Read(&resp)) {
        if (!answered) {
          answered = true;
          outage_since = {};
          failures = 0;
          backoff = milliseconds(50);
        }
        dispatch(resp);
      }
      {
        std::lock_guard lock(stream->write_mu);
        stream->finished = true;
      }
      grpc::Status status = stream->rw->Finish();
      std::vector<std::shared_ptr<WatchState>> lost;
      {
        std::lock_guard lock(mu_);
        current_.reset();
        if (stopping_) return;
        SKIFF_LOG_WARN("etcd watch stream on {} broke ({}); resuming on the next endpoint",
                       endpoint.target, status.error_message());
        auto now = Clock::now();
        if (outage_since == Clock::time_point{}) outage_since = now;
        if (now - outage_since >= connection_->request_timeout()) {
          for (auto& [id, state] : watches_) lost.push_back(state);
          watches_.clear();
          outage_since = {};
        }
      }
      for (auto& state : lost) {
        state->queue.end(Status(
            StatusCode::kUnavailable,
            "lost the etcd watch stream and no endpoint took it over: " + status.error_message()));
      }
      connection_->fail_over(index);
      if (++failures % connection_->size() == 0) {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, backoff, [this] { return stopping_; });
        backoff = std::min(backoff * 2, milliseconds(1000));
      }
    }
  }

  void dispatch(const pb::WatchResponse& resp) {
    if (resp.created() || resp.canceled()) {
      handle_control(resp);
      return;
    }
    if (resp.events_size() == 0) {
      if (resp.watch_id() == kStreamProgressWatchId)
        handle_stream_progress(resp.header().revision());
      return;
    }
    std::shared_ptr<WatchState> state;
    std::vector<Event> events;
    {
      std::lock_guard lock(mu_);
      auto it = watches_.find(resp.watch_id());
      if (it == watches_.end()) return;
      state = it->second;
      events.reserve(resp.events_size());
      for (const auto& e : resp.events()) {
        int64_t rev = e.kv().mod_revision();
        // A resumed watch starts at next_rev; anything older was delivered already.
        if (rev < state->next_rev) continue;
        Event out;
        out.type = e.type() == mvccpb::Event::DELETE ? EventType::kDelete : EventType::kPut;
        out.kv = to_kv(e.kv());
        if (e.has_prev_kv() && state->prev_kv) out.prev_kv = to_kv(e.prev_kv());
        out.revision = rev;
        events.push_back(std::move(out));
      }
      if (events.empty()) return;
      state->next_rev = events.back().revision + 1;
      if (state->catching_up && events.back().revision >= state->created_rev) {
        state->catching_up = false;
      }
    }
    if (!state->queue.push(std::move(events))) {
      // Cut off as too slow (or cancelled meanwhile); the queue keeps its own end status.
      cancel(state, Status(StatusCode::kCancelled, "watch cancelled"));
    }
  }

  void handle_control(const pb::WatchResponse& resp) {
    std::shared_ptr<WatchState> state;
    std::shared_ptr<WatchStream> stream;
    bool orphan = false;
    {
      std::lock_guard lock(mu_);
      auto it = watches_.find(resp.watch_id());
      if (it == watches_.end()) {
        orphan = resp.created() && !resp.canceled();
        stream = current_;
      } else {
        state = it->second;
        if (resp.created() && !resp.canceled()) {
          state->created = true;
          state->ever_created = true;
          state->created_rev = resp.header().revision();
          state->created_at = Clock::now();
          if (state->next_rev == 0) state->next_rev = state->created_rev + 1;
          state->catching_up = state->next_rev <= state->created_rev;
        }
        if (resp.canceled()) watches_.erase(it);
      }
    }
    cv_.notify_all();
    if (orphan) {
      // Cancelled locally before etcd created it.
      if (stream) stream->write(cancel_request(resp.watch_id()));
      return;
    }
    if (!state || !resp.canceled()) return;
    if (resp.compact_revision() > 0) {
      state->compact_revision.store(resp.compact_revision());
      state->queue.end(
          Status(StatusCode::kCompacted, "etcd compacted the watched history up to revision " +
                                             std::to_string(resp.compact_revision())));
    } else {
      state->queue.end(
          Status(StatusCode::kUnavailable, "etcd cancelled the watch: " + resp.cancel_reason()));
    }
  }

  void handle_stream_progress(int64_t revision) {
    std::vector<std::pair<std::shared_ptr<WatchState>, int64_t>> answered;
    std::shared_ptr<WatchStream> stream;
    {
      std::lock_guard lock(mu_);
      if (handshake_pending_) {
        handshake_pending_ = false;
      } else if (probe_phase_ == 1) {
        probe_rev_ = revision;
        probe_phase_ = 2;
        stream = current_;
      } else if (probe_phase_ == 2) {
        probe_phase_ = 0;
        auto now = Clock::now();
        for (auto& [id, state] : watches_) {
          if (!state->progress_wanted || state->progress_asked_in_round >= probe_round_) continue;
          if (!state->created) continue;
          if (state->catching_up && now - state->created_at < kCatchUpGrace) continue;
          state->catching_up = false;
          state->progress_wanted = false;
          int64_t rev = std::max(probe_rev_, state->next_rev - 1);
          state->next_rev = rev + 1;
          answered.emplace_back(state, rev);
        }
      }
    }
    if (stream) stream->write(progress_request());
    for (auto& [state, rev] : answered) {
      Event e;
      e.type = EventType::kProgress;
      e.revision = rev;
      if (!state->queue.push(std::move(e))) {
        cancel(state, Status(StatusCode::kCancelled, "watch cancelled"));
      }
    }
    maybe_start_probe();
  }

  // Starts a progress round if some watch waits for one and could be answered by it.
  void maybe_start_probe() {
    std::shared_ptr<WatchStream> stream;
    {
      std::lock_guard lock(mu_);
      if (!current_ || handshake_pending_ || probe_phase_ != 0) return;
      auto now = Clock::now();
      bool useful = false;
      for (auto& [id, state] : watches_) {
        if (state->progress_wanted && state->created &&
            (!state->catching_up || now - state->created_at >= kCatchUpGrace)) {
          useful = true;
          break;
        }
      }
      if (!useful) return;
      ++probe_round_;
      probe_phase_ = 1;
      stream = current_;
    }
    stream->write(progress_request());
  }

  void tick() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, kProgressTick, [this] { return stopping_; });
      if (stopping_) return;
      lock.unlock();
      maybe_start_probe();
      lock.lock();
    }
  }

  const std::shared_ptr<Connection> connection_;
  const size_t default_capacity_;
  std::atomic<int64_t> next_id_{1};

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                                   // guarded by mu_
  std::map<int64_t, std::shared_ptr<WatchState>> watches_;  // guarded by mu_
  std::shared_ptr<WatchStream> current_;                    // guarded by mu_
  uint64_t gen_ = 0;                                        // guarded by mu_
  bool handshake_pending_ = false;                          // guarded by mu_
  int probe_phase_ = 0;       // guarded by mu_; 0 idle, 1 first answer due, 2 fence answer due
  uint64_t probe_round_ = 0;  // guarded by mu_
  int64_t probe_rev_ = 0;     // guarded by mu_
  std::thread hub_thread_;
  std::thread ticker_thread_;
};

class EtcdWatch final : public Watch {
 public:
  EtcdWatch(std::shared_ptr<WatchHub> hub, std::shared_ptr<WatchState> state)
      : hub_(std::move(hub)), state_(std::move(state)) {}
  ~EtcdWatch() override {
    state_->queue.close();  // no notify after the handle is gone
    cancel();
  }

  Status poll(std::vector<Event>* out) override { return state_->queue.poll(out); }
  void request_progress() override { hub_->request_progress(state_); }
  void cancel() override {
    hub_->cancel(state_, Status(StatusCode::kCancelled, "watch cancelled"));
  }
  int64_t compact_revision() const override { return state_->compact_revision.load(); }

 private:
  const std::shared_ptr<WatchHub> hub_;
  const std::shared_ptr<WatchState> state_;
};

// ---------------------------------------------------------------------------------------------

// Thread-safety: every method may be called concurrently (see Store).
class EtcdStore final : public Store {
 public:
  EtcdStore(EtcdStoreOptions options, std::shared_ptr<Connection> connection)
      : options_(std::move(options)),
        connection_(std::move(connection)),
        hub_(std::make_shared<WatchHub>(connection_, options_.limits.watch_buffer_events)) {}

  ~EtcdStore() override {
    if (compactor_) compactor_->stop();
    hub_->stop();
  }

  void start_compactor() {
    if (options_.compaction_window.count() <= 0) return;
    compactor_ = std::make_unique<Compactor>(*this, options_.compaction_window);
    compactor_->start();
  }

  Result<RangeResult> range(const KeyRange& range, const RangeOptions& options) override {
    SKIFF_RETURN_IF_ERROR(validate_range(range, options));
    pb::RangeRequest req;
    fill_range(&req, range, options);
    pb::RangeResponse resp;
    SKIFF_RETURN_IF_ERROR(connection_->call("range", [&](Endpoint& e, grpc::ClientContext& ctx) {
      resp.Clear();
      return e.kv->Range(&ctx, req, &resp);
    }));
    RangeResult out;
    out.kvs.reserve(resp.kvs_size());
    for (const auto& kv : resp.kvs()) out.kvs.push_back(to_kv(kv));
    out.count = resp.count();
    out.more = resp.more();
    out.revision = resp.header().revision();
    return out;
  }

  Result<TxnResult> txn(const Txn& txn) override {
    SKIFF_RETURN_IF_ERROR(validate_txn(txn, options_.limits));
    pb::TxnRequest req;
    for (const auto& c : txn.compare) *req.add_compare() = to_pb(c);
    for (const auto& op : txn.success) *req.add_success() = to_pb(op);
    for (const auto& op : txn.failure) *req.add_failure() = to_pb(op);
    pb::TxnResponse resp;
    SKIFF_RETURN_IF_ERROR(connection_->call("txn", [&](Endpoint& e, grpc::ClientContext& ctx) {
      resp.Clear();
      return e.kv->Txn(&ctx, req, &resp);
    }));
    TxnResult out;
    out.succeeded = resp.succeeded();
    out.revision = resp.header().revision();
    out.results.reserve(resp.responses_size());
    for (const auto& r : resp.responses()) out.results.push_back(from_pb(r));
    return out;
  }

  Result<std::unique_ptr<Watch>> watch(WatchOptions options) override {
    if (options.range.key.empty() && options.range.range_end.empty()) {
      return Status(StatusCode::kInvalidArgument, "empty key in watch");
    }
    if (options.start_revision < 0) {
      return Status(StatusCode::kInvalidArgument, "negative start revision");
    }
    const auto& r = options.range;
    if (!r.range_end.empty() && r.range_end != std::string(1, '\0') && r.range_end <= r.key) {
      return Status(StatusCode::kInvalidArgument, "watch range end must be after its key");
    }
    SKIFF_ASSIGN_OR_RETURN(auto state, hub_->add(options));
    return std::unique_ptr<Watch>(new EtcdWatch(hub_, std::move(state)));
  }

  Result<int64_t> lease_grant(int64_t ttl_seconds) override {
    if (ttl_seconds < 1) return Status(StatusCode::kInvalidArgument, "lease TTL must be >= 1 s");
    pb::LeaseGrantRequest req;
    req.set_ttl(ttl_seconds);
    pb::LeaseGrantResponse resp;
    SKIFF_RETURN_IF_ERROR(
        connection_->call("lease grant", [&](Endpoint& e, grpc::ClientContext& ctx) {
          resp.Clear();
          return e.lease->LeaseGrant(&ctx, req, &resp);
        }));
    if (!resp.error().empty()) {
      return Status(StatusCode::kInternal, "lease grant: " + resp.error());
    }
    return resp.id();
  }

  Status lease_revoke(int64_t lease_id) override {
    pb::LeaseRevokeRequest req;
    req.set_id(lease_id);
    pb::LeaseRevokeResponse resp;
    return connection_->call("lease revoke", [&](Endpoint& e, grpc::ClientContext& ctx) {
      return e.lease->LeaseRevoke(&ctx, req, &resp);
    });
  }

  Result<int64_t> lease_keep_alive(int64_t lease_id) override {
    pb::LeaseKeepAliveRequest req;
    req.set_id(lease_id);
    pb::LeaseKeepAliveResponse resp;
    SKIFF_RETURN_IF_ERROR(
        connection_->call("lease keep-alive", [&](Endpoint& e, grpc::ClientContext& ctx) {
          resp.Clear();
          // One request on etcd's bidi stream, as etcd's own KeepAliveOnce does.
          auto rw = e.lease->LeaseKeepAlive(&ctx);
          bool answered = rw->Write(req) && rw->WritesDone() && rw->Read(&resp);
          if (answered) {
            pb::LeaseKeepAliveResponse extra;
            while (rw->Read(&extra)) {
            }
          }
          grpc::Status status = rw->Finish();
          if (answered) return grpc::Status::OK;
          if (!status.ok()) return status;
          return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "keep-alive stream ended without an answer");
        }));
    if (resp.ttl() <= 0) {
      return Status(StatusCode::kNotFound,
                    "lease " + std::to_string(lease_id) + " has expired or does not exist");
    }
    return resp.ttl();
  }

  Status compact(int64_t revision) override {
    pb::CompactionRequest req;
    req.set_revision(revision);
    pb::CompactionResponse resp;
    return connection_->call("compact", [&](Endpoint& e, grpc::ClientContext& ctx) {
      return e.kv->Compact(&ctx, req, &resp);
    });
  }

  Result<int64_t> current_revision() override {
    // A linearizable count of one key: cheap, and its header carries the revision.
    pb::RangeRequest req;
    req.set_key(std::string(1, '\0'));
    req.set_count_only(true);
    pb::RangeResponse resp;
    SKIFF_RETURN_IF_ERROR(
        connection_->call("current revision", [&](Endpoint& e, grpc::ClientContext& ctx) {
          resp.Clear();
          return e.kv->Range(&ctx, req, &resp);
        }));
    return resp.header().revision();
  }

 private:
  const EtcdStoreOptions options_;
  const std::shared_ptr<Connection> connection_;
  const std::shared_ptr<WatchHub> hub_;
  std::unique_ptr<Compactor> compactor_;
};

}  // namespace

Result<std::unique_ptr<Store>> open_etcd_store(EtcdStoreOptions options) {
  if (options.endpoints.empty()) {
    return Status(StatusCode::kInvalidArgument, "the etcd store needs at least one endpoint");
  }
  if (options.attempt_timeout.count() <= 0 || options.request_timeout.count() <= 0) {
    return Status(StatusCode::kInvalidArgument, "etcd timeouts must be positive");
  }
  std::vector<std::string> targets;
  for (const auto& endpoint : options.endpoints) {
    SKIFF_ASSIGN_OR_RETURN(auto target, grpc_target(endpoint));
    targets.push_back(std::move(target));
  }
  auto connection = std::make_shared<Connection>(std::move(targets), options.attempt_timeout,
                                                 options.request_timeout);
  auto store = std::make_unique<EtcdStore>(std::move(options), std::move(connection));
  if (auto rev = store->current_revision(); !rev.is_ok()) {
    return Status(rev.status().code(), "etcd is not reachable: " + rev.status().message());
  }
  store->start_compactor();
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace skiff::storage
