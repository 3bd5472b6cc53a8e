#include "storage/watch_queue.h"

#include <gtest/gtest.h>

#include <atomic>

namespace skiff::storage {
namespace {

Event put_event(int64_t rev) {
  auto kv = std::make_shared<KeyValue>();
  kv->key = "k";
  kv->mod_revision = rev;
  kv->version = 1;
  return Event{EventType::kPut, kv, nullptr, rev};
}

TEST(WatchQueueTest, NotifiesOncePerPoll) {
  std::atomic<int> notified{0};
  WatchQueue q(10, [&] { ++notified; });
  EXPECT_TRUE(q.push(put_event(1)));
  EXPECT_TRUE(q.push(put_event(2)));
  EXPECT_EQ(notified, 1);  // edge-triggered: the consumer has not polled yet
  std::vector<Event> out;
  EXPECT_TRUE(q.poll(&out).is_ok());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].revision, 1);
  EXPECT_EQ(out[1].revision, 2);
  EXPECT_TRUE(q.push(put_event(3)));
  EXPECT_EQ(notified, 2);
}

TEST(WatchQueueTest, OverflowCutsOffAfterBufferedEvents) {
  WatchQueue q(2, nullptr);
  EXPECT_TRUE(q.push(put_event(1)));
  EXPECT_TRUE(q.push(put_event(2)));
  EXPECT_FALSE(q.push(put_event(3)));
  EXPECT_FALSE(q.push(put_event(4)));  // stays ended
  std::vector<Event> out;
  Status s = q.poll(&out);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  ASSERT_EQ(out.size(), 2u);  // what was buffered before the cut-off is still delivered
  EXPECT_EQ(out[1].revision, 2);
}

TEST(WatchQueueTest, EndIsReportedWithLastEvents) {
  std::atomic<int> notified{0};
  WatchQueue q(10, [&] { ++notified; });
  EXPECT_TRUE(q.push(put_event(1)));
  q.end(Status(StatusCode::kCancelled, "bye"));
  q.end(Status(StatusCode::kUnavailable, "ignored: first end wins"));
  std::vector<Event> out;
  EXPECT_EQ(q.poll(&out).code(), StatusCode::kCancelled);
  EXPECT_EQ(out.size(), 1u);
  out.clear();
  EXPECT_EQ(q.poll(&out).code(), StatusCode::kCancelled);
  EXPECT_TRUE(out.empty());
}

TEST(WatchQueueTest, CloseSilencesNotify) {
  std::atomic<int> notified{0};
  WatchQueue q(10, [&] { ++notified; });
  q.close();
  EXPECT_FALSE(q.push(put_event(1)));
  EXPECT_EQ(notified, 0);
  std::vector<Event> out;
  EXPECT_EQ(q.poll(&out).code(), StatusCode::kCancelled);
}

}  // namespace
}  // namespace skiff::storage
