// Conformance tests that only the embedded backend has to pass: what survives a restart, and
// clear errors (never crashes) for a locked, corrupt or impossible data directory.

#include "storage/embedded/embedded_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "conformance/test_util.h"
#include "storage/store.h"
#include "support/temp_dir.h"
#include "support/watch_collector.h"

namespace skiff::storage {
namespace {

using namespace std::chrono_literals;
using conformance::must;
using skiff::testing::TempDir;
using skiff::testing::WatchCollector;
using Clock = std::chrono::steady_clock;

Result<std::unique_ptr<Store>> open_at(const std::string& dir) {
  EmbeddedStoreOptions options;
  options.data_dir = dir;
  options.compaction_window = 0ms;  // the tests compact by hand
  return open_embedded_store(std::move(options));
}

std::vector<std::string> describe(const std::vector<Event>& events) {
  std::vector<std::string> out;
  for (const Event& e : events) {
    std::string at = " @" + std::to_string(e.revision);
    switch (e.type) {
      case EventType::kPut:
        out.push_back("PUT " + (e.kv ? e.kv->key + "=" + e.kv->value : "<no kv>") + at);
        break;
      case EventType::kDelete:
        out.push_back("DEL " + (e.kv ? e.kv->key : "<no kv>") + at);
        break;
      case EventType::kProgress:
        out.push_back("PROGRESS" + at);
        break;
    }
  }
  return out;
}

TEST(EmbeddedStoreTest, ReopenKeepsDataRevisionsAndCompactionPoint) {
  TempDir tmp("skiff-embedded");
  const std::string dir = tmp.sub("data");
  int64_t r1, r2, r3, r4, r5;
  {
    auto store = must(open_at(dir));
    r1 = must(store->put("/a", "1"));
    r2 = must(store->put("/a", "2"));
    r3 = must(store->put("/b", "1"));
    EXPECT_EQ(must(store->del(KeyRange::single("/b"))), 1);
    r4 = must(store->current_revision());
    r5 = must(store->put("/c", "1"));
    must(store->compact(r2));
  }

  auto store = must(open_at(dir));
  EXPECT_EQ(must(store->current_revision()), r5);
  KeyValuePtr a = must(store->get("/a"));
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->value, "2");
  EXPECT_EQ(a->create_revision, r1);
  EXPECT_EQ(a->mod_revision, r2);
  EXPECT_EQ(a->version, 2);
  EXPECT_EQ(must(store->get("/b")), nullptr);
  ASSERT_NE(must(store->get("/c")), nullptr);

  // The compaction point survived.
  EXPECT_CODE(store->range(KeyRange::prefix("/"), {.revision = r1}), StatusCode::kCompacted);
  EXPECT_CODE(store->compact(r1), StatusCode::kCompacted);
  // History after it too.
  RangeResult at_r3 = must(store->range(KeyRange::prefix("/"), {.revision = r3}));
  ASSERT_EQ(at_r3.kvs.size(), 2u);
  EXPECT_EQ(at_r3.kvs[1]->key, "/b");
  EXPECT_EQ(at_r3.kvs[1]->value, "1");

  // A watch from before the restart replays the history, then continues live.
  WatchOptions options;
  options.range = KeyRange::prefix("/");
  options.start_revision = r3;
  auto w = must(WatchCollector::start(*store, std::move(options)));
  int64_t r6 = must(store->put("/d", "1"));
  EXPECT_EQ(r6, r5 + 1) << "revisions continue after a restart";
  EXPECT_EQ(describe(w->wait_for(4, 10s)),
            (std::vector<std::string>{
                "PUT /b=1 @" + std::to_string(r3), "DEL /b @" + std::to_string(r4),
                "PUT /c=1 @" + std::to_string(r5), "PUT /d=1 @" + std::to_string(r6)}));
}

TEST(EmbeddedStoreTest, ReopenAfterManyWritesKeepsEveryKey) {
  TempDir tmp("skiff-embedded");
  const std::string dir = tmp.sub("data");
  int64_t last = 0;
  for (int round = 0; round < 3; ++round) {
    auto store = must(open_at(dir));
    EXPECT_EQ(must(store->current_revision()), last);
    EXPECT_EQ(must(store->range(KeyRange::prefix("/k/"))).count, round * 200);
    for (int i = 0; i < 200; ++i) {
      last = must(store->put("/k/" + std::to_string(round) + "/" + std::to_string(i), "v"));
    }
  }
}

TEST(EmbeddedStoreTest, SecondOpenOfALockedDirFailsClearly) {
  TempDir tmp("skiff-embedded");
  const std::string dir = tmp.sub("data");
  auto first = must(open_at(dir));
  must(first->put("/a", "1"));

  auto second = open_at(dir);
  ASSERT_FALSE(second.is_ok()) << "a second store opened a data dir that is in use";
  EXPECT_NE(second.status().code(), StatusCode::kInternal) << second.status().to_string();
  EXPECT_NE(second.status().message().find(dir), std::string::npos)
      << "the error should name the directory: " << second.status().to_string();
  std::cout << "locked dir: " << second.status().to_string() << "\n";

  // The first store is unharmed, and the directory opens again once it is closed.
  int64_t r = must(first->put("/a", "2"));
  first.reset();
  auto third = must(open_at(dir));
  KeyValuePtr a = must(third->get("/a"));
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->value, "2");
  EXPECT_EQ(a->mod_revision, r);
}

TEST(EmbeddedStoreTest, CorruptDatabaseIsAClearError) {
  TempDir tmp("skiff-embedded");
  const std::string dir = tmp.sub("data");
  {
    auto store = must(open_at(dir));
    for (int i = 0; i < 50; ++i) must(store->put("/k" + std::to_string(i), "value"));
  }
  // Garbage over every file the store left behind.
  std::mt19937 rng(42);
  int files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    size_t size = std::max<size_t>(entry.file_size(), 8192);
    std::string garbage(size, '\0');
    for (char& c : garbage) c = static_cast<char>(rng());
    std::ofstream out(entry.path(), std::ios::binary | std::ios::trunc);
    out.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    ASSERT_TRUE(out.good()) << entry.path();
    ++files;
  }
  ASSERT_GT(files, 0) << "the store wrote no files under " << dir;

  auto reopened = open_at(dir);
  ASSERT_FALSE(reopened.is_ok()) << "a corrupt database opened without an error";
  EXPECT_NE(reopened.status().message().find(dir), std::string::npos)
      << "the error should name the database: " << reopened.status().to_string();
  std::cout << "corrupt database: " << reopened.status().to_string() << "\n";
}

TEST(EmbeddedStoreTest, DataDirThatIsAFileIsAClearError) {
  TempDir tmp("skiff-embedded");
  const std::string file = tmp.sub("not-a-dir");
  std::ofstream(file) << "I am a file\n";

  auto opened = open_at(file);
  ASSERT_FALSE(opened.is_ok()) << "opened a store in a regular file";
  EXPECT_NE(opened.status().message().find(file), std::string::npos) << opened.status().to_string();
  std::cout << "file as data dir: " << opened.status().to_string() << "\n";

  auto below = open_at(file + "/data");
  ASSERT_FALSE(below.is_ok()) << "opened a store below a regular file";
  EXPECT_NE(below.status().message().find(file), std::string::npos) << below.status().to_string();
}

TEST(EmbeddedStoreTest, LeasesSurviveRestart) {
  TempDir tmp("skiff-embedded");
  const std::string dir = tmp.sub("data");
  int64_t short_lease, long_lease;
  {
    auto store = must(open_at(dir));
    short_lease = must(store->lease_grant(3));
    long_lease = must(store->lease_grant(600));
    must(store->put("/short", "1", short_lease));
    must(store->put("/long", "1", long_lease));
  }

  auto store = must(open_at(dir));
  KeyValuePtr s = must(store->get("/short"));
  ASSERT_NE(s, nullptr) << "a key with a live lease vanished over a restart";
  EXPECT_EQ(s->lease, short_lease);
  KeyValuePtr l = must(store->get("/long"));
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->lease, long_lease);
  EXPECT_GE(must(store->lease_keep_alive(long_lease)), 1) << "the lease is known after restart";

  // The short lease still expires.
  WatchOptions options;
  options.range = KeyRange::single("/short");
  auto w = must(WatchCollector::start(*store, std::move(options)));
  auto events = w->wait_for(1, 15s);
  ASSERT_EQ(events.size(), 1u) << "a lease recovered at restart never expired";
  EXPECT_EQ(events[0].type, EventType::kDelete);
  EXPECT_EQ(must(store->get("/short")), nullptr);
  EXPECT_CODE(store->lease_keep_alive(short_lease), StatusCode::kNotFound);

  // The long one is still there and can be revoked.
  int64_t before = must(store->current_revision());
  must(store->lease_revoke(long_lease));
  EXPECT_EQ(must(store->current_revision()), before + 1);
  EXPECT_EQ(must(store->get("/long")), nullptr);
}

}  // namespace
}  // namespace skiff::storage
