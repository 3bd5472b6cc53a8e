#include "client/leader_election.h"

#include <unistd.h>

#include <condition_variable>
#include <memory>

#include "base/log.h"

namespace skiff::client {

LeaderElector::LeaderElector(ApiClient& client, LeaderElectionConfig config,
                             std::function<void()> on_started_leading,
                             std::function<void()> on_stopped_leading, const Clock& clock)
    : client_(client),
      config_(std::move(config)),
      on_started_(std::move(on_started_leading)),
      on_stopped_(std::move(on_stopped_leading)),
      clock_(clock) {}

LeaderElector::~LeaderElector() {
  stop();
}

void LeaderElector::start() {
  if (thread_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { run(); });
}

void LeaderElector::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool LeaderElector::wait(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [&] { return stopping_; });
}

bool LeaderElector::try_acquire_or_renew() {
  const auto now = clock_.now();
  const std::string now_text = rfc3339_micro(now);
  const int64_t duration_s =
      std::chrono::duration_cast<std::chrono::seconds>(config_.lease_duration).count();
  auto got = client_.get(resources::kLeases, config_.lease_namespace, config_.lease_name);
  if (!got.is_ok()) {
    if (got.status().code() != StatusCode::kNotFound) {
      SKIFF_LOG_WARN("leader election {}: {}", config_.lease_name, got.status().to_string());
      return false;
    }
    Json lease = {
        {"apiVersion", "coordination.k8s.io/v1"},
        {"kind", "Lease"},
        {"metadata", {{"name", config_.lease_name}, {"namespace", config_.lease_namespace}}},
        {"spec",
         {{"holderIdentity", config_.identity},
          {"leaseDurationSeconds", duration_s},
          {"acquireTime", now_text},
          {"renewTime", now_text},
          {"leaseTransitions", 0}}}};
    if (!client_.create(resources::kLeases, config_.lease_namespace, lease).is_ok()) return false;
    observed_holder_ = config_.identity;
    observed_renew_time_ = now_text;
    observed_at_ = now;
    return true;
  }
  Json lease = std::move(got.value());
  Json& spec = lease["spec"];
  std::string holder = spec.value("holderIdentity", "");
  std::string renew_time = spec.value("renewTime", "");
  if (holder != observed_holder_ || renew_time != observed_renew_time_) {
    observed_holder_ = holder;
    observed_renew_time_ = renew_time;
    observed_at_ = now;
  }
  auto held_for = std::chrono::milliseconds(spec.value("leaseDurationSeconds", duration_s) * 1000);
  if (!holder.empty() && holder != config_.identity && observed_at_ + held_for > now) {
    return false;  // somebody else holds a live lease
  }
  if (holder != config_.identity) {
    spec["acquireTime"] = now_text;
    spec["leaseTransitions"] = spec.value("leaseTransitions", 0) + (holder.empty() ? 0 : 1);
  }
  spec["holderIdentity"] = config_.identity;
  spec["leaseDurationSeconds"] = duration_s;
  spec["renewTime"] = now_text;
  auto updated = client_.update(resources::kLeases, config_.lease_namespace, lease);
  if (!updated.is_ok()) return false;
  observed_holder_ = config_.identity;
  observed_renew_time_ = now_text;
  observed_at_ = now;
  return true;
}

void LeaderElector::release() {
  auto got = client_.get(resources::kLeases, config_.lease_namespace, config_.lease_name);
  if (!got.is_ok()) return;
  Json lease = std::move(got.value());
  if (lease["spec"].value("holderIdentity", "") != config_.identity) return;
  lease["spec"]["holderIdentity"] = "";
  lease["spec"]["leaseDurationSeconds"] = 1;
  lease["spec"]["renewTime"] = rfc3339_micro(clock_.now());
  (void)client_.update(resources::kLeases, config_.lease_namespace, lease);
}

void LeaderElector::run() {
  while (true) {
    // Campaign.
    while (!try_acquire_or_renew()) {
      if (!wait(config_.retry_period)) return;
    }
    last_renewed_ = clock_.now();
    leader_ = true;
    SKIFF_LOG_INFO("leader election {}: {} became the leader", config_.lease_name,
                   config_.identity);
    if (on_started_) on_started_();
    // Lead: renew until stopped or the renew deadline passes without a successful renewal.
    bool stopped = false;
    while (true) {
      if (!wait(config_.retry_period)) {
        stopped = true;
        break;
      }
      if (try_acquire_or_renew()) {
        last_renewed_ = clock_.now();
      } else if (clock_.now() - last_renewed_ >= config_.renew_deadline) {
        SKIFF_LOG_WARN("leader election {}: {} lost the lease", config_.lease_name,
                       config_.identity);
        break;
      }
    }
    leader_ = false;
    if (on_stopped_) on_stopped_();
    if (stopped) {
      if (config_.release_on_stop) release();
      return;
    }
  }
}

std::string unique_identity() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return std::string(host) + "_" + std::to_string(getpid()) + "_" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
}

void run_leader_elected(ApiClient& client, LeaderElectionConfig config,
                        std::function<void(std::stop_token)> lead, std::stop_token stop) {
  std::mutex mu;
  std::unique_ptr<std::jthread> term;  // guarded by mu
  auto started = [&] {
    std::lock_guard lock(mu);
    term = std::make_unique<std::jthread>(lead);
  };
  auto stopped = [&] {
    std::unique_ptr<std::jthread> ending;
    {
      std::lock_guard lock(mu);
      ending = std::move(term);
    }
    ending.reset();  // requests stop and joins
  };
  LeaderElector elector(client, std::move(config), started, stopped);
  elector.start();
  std::condition_variable_any cv;
  {
    std::unique_lock lock(mu);
    cv.wait(lock, stop, [] { return false; });
  }
  elector.stop();
}

}  // namespace skiff::client
