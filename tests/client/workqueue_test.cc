#include "client/workqueue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace skiff::client {
namespace {

using namespace std::chrono_literals;

TEST(WorkQueue, DeduplicatesQueuedKeys) {
  WorkQueue q;
  q.add("a");
  q.add("b");
  q.add("a");
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(*q.get(), "a");
  EXPECT_EQ(*q.get(), "b");
  EXPECT_EQ(q.size(), 0u);
}

TEST(WorkQueue, KeyReaddedWhileProcessingIsQueuedOnDone) {
  WorkQueue q;
  q.add("a");
  auto k = q.get();
  ASSERT_EQ(*k, "a");
  q.add("a");
  EXPECT_EQ(q.size(), 0u) << "a key in process must not be handed to a second worker";
  q.add("a");
  q.done("a");
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(*q.get(), "a");
  q.done("a");
  EXPECT_EQ(q.size(), 0u);
}

TEST(WorkQueue, NeverGivesOneKeyToTwoWorkersAtOnce) {
  WorkQueue q;
  std::atomic<int> in_process{0};
  std::atomic<bool> overlap{false};
  std::atomic<int> processed{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < 4; ++i) {
    workers.emplace_back([&] {
      while (auto k = q.get()) {
        if (in_process.fetch_add(1) != 0) overlap = true;
        std::this_thread::sleep_for(100us);
        in_process.fetch_sub(1);
        processed++;
        q.done(*k);
      }
    });
  }
  for (int i = 0; i < 2000; ++i) q.add("same");
  std::this_thread::sleep_for(50ms);
  q.shut_down();
  for (auto& t : workers) t.join();
  EXPECT_FALSE(overlap.load());
  EXPECT_GE(processed.load(), 1);
  EXPECT_LT(processed.load(), 2000) << "adds of a queued key must coalesce";
}

TEST(WorkQueue, AddAfterDelaysAndKeepsEarliest) {
  WorkQueue q;
  auto start = std::chrono::steady_clock::now();
  q.add_after("late", 300ms);
  q.add_after("late", 50ms);  // earlier time wins
  auto k = q.get();
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(*k, "late");
  EXPECT_GE(waited, 45ms);
  EXPECT_LT(waited, 290ms);
  q.done("late");
}

TEST(WorkQueue, RateLimitedBackoffGrowsAndForgetResets) {
  WorkQueue q(10ms, 1s);
  q.add_rate_limited("k");  // 10 ms
  EXPECT_EQ(q.retries("k"), 1);
  auto t0 = std::chrono::steady_clock::now();
  q.get();
  q.done("k");
  auto first = std::chrono::steady_clock::now() - t0;
  q.add_rate_limited("k");  // 20 ms
  q.add_rate_limited("k");  // 40 ms, but the earlier pending time (20 ms) wins
  EXPECT_EQ(q.retries("k"), 3);
  t0 = std::chrono::steady_clock::now();
  q.get();
  q.done("k");
  auto second = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(first, 9ms);
  EXPECT_GE(second, 18ms);
  q.forget("k");
  EXPECT_EQ(q.retries("k"), 0);
}

TEST(WorkQueue, ShutDownReleasesBlockedWorkers) {
  WorkQueue q;
  std::thread t([&] { EXPECT_FALSE(q.get().has_value()); });
  std::this_thread::sleep_for(20ms);
  q.shut_down();
  t.join();
  q.add("x");
  EXPECT_EQ(q.size(), 0u);
}

}  // namespace
}  // namespace skiff::client
