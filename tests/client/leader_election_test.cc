#include "client/leader_election.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <stop_token>
#include <thread>

#include "client/fake_api_client.h"

namespace skiff::client {
namespace {

using namespace std::chrono_literals;

LeaderElectionConfig config(const std::string& id) {
  LeaderElectionConfig c;
  c.lease_name = "skiff-test";
  c.identity = id;
  c.lease_duration = 15s;
  c.renew_deadline = 10s;
  c.retry_period = 2s;
  return c;
}

TEST(LeaderElection, FirstCandidateTakesTheLeaseOthersWaitForItToExpire) {
  FakeApiClient api;
  FakeClock clock;
  LeaderElector a(api, config("a"), nullptr, nullptr, clock);
  LeaderElector b(api, config("b"), nullptr, nullptr, clock);
  EXPECT_TRUE(a.try_acquire_or_renew());
  EXPECT_FALSE(b.try_acquire_or_renew());
  auto lease = api.get(resources::kLeases, "kube-system", "skiff-test").value();
  EXPECT_EQ(lease["spec"]["holderIdentity"], "a");
  EXPECT_EQ(lease["spec"]["leaseDurationSeconds"], 15);

  // a renews: b keeps waiting even past the first lease duration.
  clock.advance(10s);
  EXPECT_TRUE(a.try_acquire_or_renew());
  EXPECT_FALSE(b.try_acquire_or_renew());
  clock.advance(10s);
  EXPECT_FALSE(b.try_acquire_or_renew());

  // a stopped renewing at t=10 s, which b saw at t=10 s: b takes over after t=25 s.
  clock.advance(4s);
  EXPECT_FALSE(b.try_acquire_or_renew());
  clock.advance(2s);
  EXPECT_TRUE(b.try_acquire_or_renew());
  lease = api.get(resources::kLeases, "kube-system", "skiff-test").value();
  EXPECT_EQ(lease["spec"]["holderIdentity"], "b");
  EXPECT_EQ(lease["spec"]["leaseTransitions"], 1);
  // a, back, sees a live lease held by b.
  EXPECT_FALSE(a.try_acquire_or_renew());
}

TEST(LeaderElection, ConflictingWritesLetOnlyOneWin) {
  FakeApiClient api;
  FakeClock clock;
  LeaderElector a(api, config("a"), nullptr, nullptr, clock);
  // A create that collides with another candidate's create fails cleanly.
  api.fail("create", "leases.coordination.k8s.io",
           error(StatusCode::kAlreadyExists, "leases \"skiff-test\" already exists"));
  EXPECT_FALSE(a.try_acquire_or_renew());
  EXPECT_TRUE(a.try_acquire_or_renew());
  api.fail("update", "leases.coordination.k8s.io", error(StatusCode::kAborted, "conflict"));
  EXPECT_FALSE(a.try_acquire_or_renew());
}

TEST(LeaderElection, RunsCallbacksLosesLeaseAndReleasesOnStop) {
  FakeApiClient api;
  auto c = config("a");
  c.lease_duration = 300ms;
  c.renew_deadline = 200ms;
  c.retry_period = 20ms;
  std::atomic<int> started{0}, stopped{0};
  LeaderElector a(
      api, c, [&] { started++; }, [&] { stopped++; });
  a.start();
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!a.is_leader() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(a.is_leader());
  EXPECT_EQ(started.load(), 1);

  // The API refuses renewals for longer than the renew deadline: a must stop leading.
  api.fail("update", "leases.coordination.k8s.io", error(StatusCode::kUnavailable, "down"),
           1000000);
  deadline = std::chrono::steady_clock::now() + 5s;
  while (a.is_leader() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_FALSE(a.is_leader());
  EXPECT_EQ(stopped.load(), 1);
  a.stop();
}

TEST(LeaderElection, ReleasedLeaseIsTakenAtOnce) {
  FakeApiClient api;
  auto ca = config("a");
  ca.retry_period = 10ms;
  LeaderElector a(api, ca, nullptr, nullptr);
  a.start();
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!a.is_leader() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(a.is_leader());
  a.stop();
  auto lease = api.get(resources::kLeases, "kube-system", "skiff-test").value();
  EXPECT_EQ(lease["spec"]["holderIdentity"], "");
  LeaderElector b(api, config("b"), nullptr, nullptr);
  EXPECT_TRUE(b.try_acquire_or_renew());
}

TEST(LeaderElection, RunLeaderElectedRunsOneTermAtATimeAndHandsOver) {
  FakeApiClient api;
  std::atomic<int> running{0}, max_running{0}, terms{0};
  auto lead = [&](std::stop_token term) {
    int now = ++running;
    max_running = std::max(max_running.load(), now);
    ++terms;
    std::mutex mu;
    std::condition_variable_any cv;
    std::unique_lock lock(mu);
    cv.wait(lock, term, [] { return false; });
    --running;
  };
  auto config = [](const std::string& id) {
    LeaderElectionConfig c;
    c.lease_name = "handover";
    c.identity = id;
    c.retry_period = 10ms;
    return c;
  };
  std::stop_source stop_a, stop_b;
  std::thread a([&] { run_leader_elected(api, config("a"), lead, stop_a.get_token()); });
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (terms.load() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(terms.load(), 1);
  std::thread b([&] { run_leader_elected(api, config("b"), lead, stop_b.get_token()); });
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(terms.load(), 1) << "b must wait while a holds the lease";
  stop_a.request_stop();  // a gives the lease up; b takes it
  a.join();
  deadline = std::chrono::steady_clock::now() + 5s;
  while (terms.load() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(terms.load(), 2);
  EXPECT_EQ(max_running.load(), 1);
  stop_b.request_stop();
  b.join();
  EXPECT_EQ(running.load(), 0);
}

}  // namespace
}  // namespace skiff::client
