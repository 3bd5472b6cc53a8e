#include "proxy/proxier.h"

#include "base/log.h"
#include "base/process.h"

namespace skiff::proxy {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kByService = "service";
constexpr const char* kServiceNameLabel = "kubernetes.io/service-name";

std::string slice_service_key(const Json& slice) {
  const Json& meta = slice.value("metadata", Json::object());
  const Json& labels = meta.value("labels", Json::object());
  auto it = labels.find(kServiceNameLabel);
  if (it == labels.end() || !it->is_string()) return "";
  return client::key_of(meta.value("namespace", ""), it->get<std::string>());
}

void drop_managed_fields(Json& obj) {
  auto meta = obj.find("metadata");
  if (meta != obj.end() && meta->is_object()) meta->erase("managedFields");
}

const ServicePort* find_port(const std::vector<ServicePort>& ports, const ServicePort& p) {
  for (const ServicePort& q : ports) {
    if (q.port_name == p.port_name && q.protocol == p.protocol) return &q;
  }
  return nullptr;
}

}  // namespace

ConntrackRunner make_conntrack_runner() {
  return [](const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"conntrack"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto out = run_command(argv, std::chrono::seconds(5));
    // Exit code 1 means no entry matched, which is the common case.
    if (!out.is_ok()) {
      SKIFF_LOG_WARN("proxy: conntrack: {}", out.status().message());
    } else if (out->status.exit_code > 1 || out->status.signal) {
      SKIFF_LOG_WARN("proxy: conntrack {}: {}", out->status.to_string(), out->err);
    }
  };
}

Proxier::Proxier(client::ApiClient& api, std::unique_ptr<Backend> backend, ProxierOptions options,
                 ConntrackRunner conntrack)
    : options_(std::move(options)),
      backend_(std::move(backend)),
      conntrack_(std::move(conntrack)),
      services_(api, client::resources::kServices),
      slices_(api, client::resources::kEndpointSlices) {
  services_.set_transform(drop_managed_fields);
  slices_.set_transform(drop_managed_fields);
  slices_.add_index(kByService, [](const Json& slice) -> std::vector<std::string> {
    std::string key = slice_service_key(slice);
    if (key.empty()) return {};
    return {key};
  });
  services_.add_handlers({
      .on_add = [this](const client::ObjectPtr& s) { mark(client::key_of(*s)); },
      .on_update = [this](const client::ObjectPtr&,
                          const client::ObjectPtr& s) { mark(client::key_of(*s)); },
      .on_delete = [this](const client::ObjectPtr& s) { mark(client::key_of(*s)); },
  });
  auto mark_slice = [this](const client::ObjectPtr& s) {
    std::string key = slice_service_key(*s);
    if (!key.empty()) mark(key);
  };
  slices_.add_handlers({
      .on_add = mark_slice,
      .on_update =
          [this, mark_slice](const client::ObjectPtr& old_slice, const client::ObjectPtr& s) {
            mark_slice(old_slice);
            mark_slice(s);
          },
      .on_delete = mark_slice,
  });
}

Proxier::~Proxier() {
  stop();
}

void Proxier::start() {
  services_.start();
  slices_.start();
  thread_ = std::thread([this] { run(); });
}

void Proxier::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  services_.stop();
  slices_.stop();
}

bool Proxier::wait_for_sync(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return synced_cv_.wait_for(lock, timeout, [&] { return first_synced_; });
}

SyncStats Proxier::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Proxier::mark(const std::string& key) {
  {
    std::lock_guard lock(mu_);
    changed_.insert(key);
  }
  cv_.notify_all();
}

void Proxier::run() {
  // The first sync waits for both caches, so it never writes a state missing half the cluster.
  while (!services_.wait_for_sync(std::chrono::milliseconds(200)) ||
         !slices_.wait_for_sync(std::chrono::milliseconds(200))) {
    std::lock_guard lock(mu_);
    if (stopping_) return;
  }
  auto next_periodic = Clock::now();
  while (true) {
    std::set<std::string> changed;
    bool periodic = false;
    {
      std::unique_lock lock(mu_);
      cv_.wait_until(lock, next_periodic, [&] { return stopping_ || !changed_.empty(); });
      if (stopping_) return;
      periodic = Clock::now() >= next_periodic;
    }
    if (!periodic) {
      // Let a burst of changes gather into one transaction.
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, options_.min_sync_period, [&] { return stopping_; });
      if (stopping_) return;
    }
    {
      std::lock_guard lock(mu_);
      changed.swap(changed_);
    }
    if (periodic) {
      // Every Service the caches or the kernel state know of gets compared again.
      for (const auto& s : services_.list()) changed.insert(client::key_of(*s));
      for (const auto& [key, ports] : state_) changed.insert(key);
    }
    bool ok = true;
    sync_once(changed, need_full_);
    {
      std::lock_guard lock(mu_);
      ok = stats_.last_error.empty();
      if (ok && !first_synced_) {
        first_synced_ = true;
        synced_cv_.notify_all();
      }
    }
    if (periodic || !ok) {
      next_periodic = Clock::now() + (ok ? options_.sync_period : options_.retry_period);
    }
  }
}

void Proxier::sync_once(std::set<std::string> changed, bool full) {
  auto started = Clock::now();
  ProxyState previous;  // the changed Services' ports before this sync (for conntrack)
  if (full) {
    // Start again from the caches.
    for (const auto& s : services_.list()) changed.insert(client::key_of(*s));
    for (const auto& [key, ports] : state_) changed.insert(key);
  }
  for (const std::string& key : changed) {
    auto old = state_.find(key);
    if (old != state_.end()) previous[key] = old->second;
    client::ObjectPtr service = services_.get(key);
    if (!service) {
      state_.erase(key);
      continue;
    }
    std::vector<client::ObjectPtr> slice_objects = slices_.by_index(kByService, key);
    std::vector<const Json*> slices;
    slices.reserve(slice_objects.size());
    for (const auto& s : slice_objects) slices.push_back(s.get());
    std::vector<ServicePort> ports = build_service_ports(*service, slices, options_.node_name);
    if (ports.empty()) {
      state_.erase(key);
    } else {
      state_[key] = std::move(ports);
    }
  }
  Status s = backend_->sync(state_, changed, full);
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
  {
    std::lock_guard lock(mu_);
    stats_.syncs++;
    stats_.last_duration = took;
    stats_.last_changed = changed.size();
    stats_.last_error = s.is_ok() ? "" : s.message();
    if (!s.is_ok()) stats_.failures++;
  }
  if (!s.is_ok()) {
    // The kernel keeps the last good rules; the retry rewrites everything from the caches.
    SKIFF_LOG_WARN("proxy: {} sync failed: {}", backend_->name(), s.message());
    need_full_ = true;
    return;
  }
  need_full_ = false;
  SKIFF_LOG_DEBUG("proxy: synced {} services in {} us{}", changed.size(), took.count(),
                  full ? " (full)" : "");
  static const std::vector<ServicePort> kNone;
  for (const std::string& key : changed) {
    auto before = previous.find(key);
    auto after = state_.find(key);
    flush_stale_udp(before == previous.end() ? kNone : before->second,
                    after == state_.end() ? kNone : after->second);
  }
}

void Proxier::flush_stale_udp(const std::vector<ServicePort>& before,
                              const std::vector<ServicePort>& after) {
  for (const ServicePort& old : before) {
    if (old.protocol != "udp") continue;
    const ServicePort* now = find_port(after, old);
    std::set<std::string> kept;
    if (now) {
      for (const Endpoint* e : now->cluster_endpoints()) kept.insert(e->ip);
    }
    for (const Endpoint* e : old.cluster_endpoints()) {
      if (kept.count(e->ip)) continue;
      // Entries translated to an endpoint that is gone would keep blackholing the flow.
      conntrack_({"-D", "-p", "udp", "--orig-dst", old.cluster_ip, "--dst-nat", e->ip});
      if (old.node_port) {
        conntrack_(
            {"-D", "-p", "udp", "--dport", std::to_string(old.node_port), "--dst-nat", e->ip});
      }
    }
  }
  for (const ServicePort& now : after) {
    if (now.protocol != "udp" || now.cluster_endpoints().empty()) continue;
    const ServicePort* old = find_port(before, now);
    if (old && !old->cluster_endpoints().empty()) continue;
    // Packets sent while the Service had no endpoints left untranslated entries behind.
    conntrack_(
        {"-D", "-p", "udp", "--orig-dst", now.cluster_ip, "--dport", std::to_string(now.port)});
    if (now.node_port) {
      conntrack_({"-D", "-p", "udp", "--dport", std::to_string(now.node_port)});
    }
  }
}

}  // namespace skiff::proxy
