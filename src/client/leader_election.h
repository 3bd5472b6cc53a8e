#pragma once

// Leader election through a coordination.k8s.io/v1 Lease, as client-go's leaderelection does:
// a candidate takes the lease when it is free or its holder has not renewed it for
// lease_duration (measured on the candidate's own clock from when it last saw the record change,
// so clock skew between machines does not matter), and the leader renews it every retry_period.
// A leader that cannot renew within renew_deadline stops leading.
//
// Thread-safety: start()/stop() from one thread; is_leader() from any thread. Callbacks run on
// the elector's thread and may block only briefly (they should start or stop work and return).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>

#include "base/time.h"
#include "client/api_client.h"

namespace skiff::client {

struct LeaderElectionConfig {
  std::string lease_namespace = "kube-system";
  std::string lease_name;
  std::string identity;  // unique per candidate, e.g. hostname_uuid
  std::chrono::milliseconds lease_duration{15000};
  std::chrono::milliseconds renew_deadline{10000};
  std::chrono::milliseconds retry_period{2000};
  // On stop(), give the lease up so another candidate takes over at once.
  bool release_on_stop = true;
};

class LeaderElector {
 public:
  LeaderElector(ApiClient& client, LeaderElectionConfig config,
                std::function<void()> on_started_leading, std::function<void()> on_stopped_leading,
                const Clock& clock = SystemClock::instance());
  ~LeaderElector();

  // Campaigns in the background; after losing the lease the elector campaigns again.
  void start();
  // Stops campaigning; a leader calls on_stopped_leading and (with release_on_stop) gives the
  // lease up.
  void stop();
  bool is_leader() const { return leader_.load(); }
  const LeaderElectionConfig& config() const { return config_; }

  // One acquire-or-renew attempt (exposed for tests): true when this candidate holds the lease
  // afterwards.
  bool try_acquire_or_renew();

 private:
  void run();
  bool wait(std::chrono::milliseconds d);  // false when stopping
  void release();

  ApiClient& client_;
  const LeaderElectionConfig config_;
  const std::function<void()> on_started_;
  const std::function<void()> on_stopped_;
  const Clock& clock_;

  std::atomic<bool> leader_{false};
  // What this candidate last saw of the lease, and when (its own clock).
  std::string observed_holder_;
  std::string observed_renew_time_;
  std::chrono::system_clock::time_point observed_at_{};
  std::chrono::system_clock::time_point last_renewed_{};

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

// "<hostname>_<pid>_<nonce>": an identity unique to this process, as components use.
std::string unique_identity();

// Runs `lead` on a thread of its own during every term in which this candidate holds the lease;
// at the end of a term its stop token is requested and the thread joined. Returns once `stop` is
// requested (giving the lease up).
void run_leader_elected(ApiClient& client, LeaderElectionConfig config,
                        std::function<void(std::stop_token)> lead, std::stop_token stop);

}  // namespace skiff::client
