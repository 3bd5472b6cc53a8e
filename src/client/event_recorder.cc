#include "client/event_recorder.h"

#include <atomic>

#include "base/log.h"

namespace skiff::client {
namespace {

constexpr size_t kMaxQueued = 1000;
constexpr size_t kMaxSeen = 4096;

}  // namespace

EventRecorder::EventRecorder(ApiClient& client, std::string component, std::string host,
                             int workers, const Clock& clock)
    : client_(client), component_(std::move(component)), host_(std::move(host)), clock_(clock) {
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { worker(); });
}

EventRecorder::~EventRecorder() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void EventRecorder::event(const Json& involved, std::string_view type, std::string_view reason,
                          std::string message, std::string_view kind,
                          std::string_view api_version) {
  enqueue(involved, type, reason, std::move(message), kind, api_version, {});
}

void EventRecorder::event_from(std::string_view host, const Json& involved, std::string_view type,
                               std::string_view reason, std::string message) {
  enqueue(involved, type, reason, std::move(message), {}, {}, host);
}

void EventRecorder::enqueue(const Json& involved, std::string_view type, std::string_view reason,
                            std::string message, std::string_view kind,
                            std::string_view api_version, std::string_view host) {
  const Json& meta = involved.contains("metadata") ? involved["metadata"] : Json::object();
  Json ref = {{"kind", kind.empty() ? involved.value("kind", "") : std::string(kind)},
              {"apiVersion",
               api_version.empty() ? involved.value("apiVersion", "") : std::string(api_version)},
              {"name", meta.value("name", "")},
              {"uid", meta.value("uid", "")}};
  if (meta.contains("namespace")) ref["namespace"] = meta["namespace"];
  if (meta.contains("resourceVersion")) ref["resourceVersion"] = meta["resourceVersion"];
  std::lock_guard lock(mu_);
  if (stopping_ || queue_.size() >= kMaxQueued) return;
  queue_.push_back({std::move(ref), std::string(type), std::string(reason), std::move(message),
                    std::string(host)});
  cv_.notify_one();
}

void EventRecorder::flush() {
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [&] { return queue_.empty() && busy_ == 0; });
}

void EventRecorder::worker() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return !queue_.empty() || stopping_; });
    if (queue_.empty()) return;
    Pending p = std::move(queue_.front());
    queue_.pop_front();
    ++busy_;
    lock.unlock();
    write(p);
    lock.lock();
    --busy_;
    if (queue_.empty() && busy_ == 0) idle_cv_.notify_all();
  }
}

void EventRecorder::write(const Pending& p) {
  const std::string ns = p.involved_ref.value("namespace", "default");
  const std::string& host = p.host.empty() ? host_ : p.host;
  const std::string key = p.involved_ref.value("uid", "") + "/" + p.involved_ref.value("name", "") +
                          "/" + p.type + "/" + p.reason + "/" + p.message + "/" + host;
  const auto now = clock_.now();
  const std::string now_text =
      rfc3339(std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count());

  std::string existing_name;
  int64_t count = 1;
  std::string first_timestamp = now_text;
  {
    std::lock_guard lock(mu_);
    auto it = seen_.find(key);
    if (it != seen_.end()) {
      existing_name = it->second.name;
      count = ++it->second.count;
      first_timestamp = it->second.first_timestamp;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
    }
  }
  if (!existing_name.empty()) {
    Json patch = {{"count", count}, {"lastTimestamp", now_text}};
    auto r = client_.patch(resources::kEvents, ns, existing_name, PatchType::kMerge, patch.dump());
    if (r.is_ok()) return;
    // The Event expired or was deleted: write a new one.
  }
  // Named "<object>.<unix nanoseconds in hex>" as upstream, from the real clock (an injected
  // clock may stand still), made unique within the process by a sequence number.
  static std::atomic<uint64_t> sequence{0};
  uint64_t nanos = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count()) +
                   sequence.fetch_add(1);
  char suffix[32];
  std::snprintf(suffix, sizeof(suffix), ".%llx", static_cast<unsigned long long>(nanos));
  std::string name = p.involved_ref.value("name", "event") + suffix;
  Json source = {{"component", component_}};
  if (!host.empty()) source["host"] = host;
  Json ev = {{"apiVersion", "v1"},
             {"kind", "Event"},
             {"metadata", {{"name", name}, {"namespace", ns}}},
             {"involvedObject", p.involved_ref},
             {"reason", p.reason},
             {"message", p.message},
             {"type", p.type},
             {"source", source},
             {"firstTimestamp", first_timestamp},
             {"lastTimestamp", now_text},
             {"count", count},
             {"reportingComponent", component_},
             {"reportingInstance", host}};
  auto r = client_.create(resources::kEvents, ns, ev);
  if (!r.is_ok()) {
    SKIFF_LOG_DEBUG("event {} {}: {}", p.reason, name, r.status().to_string());
    return;
  }
  std::lock_guard lock(mu_);
  auto [it, inserted] = seen_.try_emplace(key);
  if (inserted) {
    lru_.push_front(key);
    it->second.lru = lru_.begin();
  }
  it->second.ns = ns;
  it->second.name = name;
  it->second.count = count;
  it->second.first_timestamp = first_timestamp;
  while (seen_.size() > kMaxSeen) {
    seen_.erase(lru_.back());
    lru_.pop_back();
  }
}

}  // namespace skiff::client
