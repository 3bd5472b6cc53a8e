#include "kubelet/logs/cri_log.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#include "support/temp_dir.h"

namespace skiff::kubelet::logs {
namespace {

using namespace std::chrono_literals;

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

void append_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << data;
}

std::string read_all(const std::string& path, const LogOptions& options) {
  std::string out;
  Status s = read_container_log(path, options, [&](std::string_view chunk) {
    out.append(chunk);
    return true;
  });
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  return out;
}

// One record with a timestamp `second` seconds into 2024-05-01T10:00:00Z.
std::string rec(int second, const char* stream, const char* tag, const std::string& text) {
  char ts[64];
  std::snprintf(ts, sizeof(ts), "2024-05-01T10:%02d:%02d.%09dZ", second / 60, second % 60,
                second * 1000);
  return std::string(ts) + " " + stream + " " + tag + " " + text + "\n";
}

constexpr int64_t kBase = 1714557600LL * 1'000'000'000;  // 2024-05-01T10:00:00Z

TEST(CriRecordTest, ParsesRecords) {
  auto r = parse_cri_record("2016-10-06T00:17:09.669794202Z stdout F log content 1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->timestamp, "2016-10-06T00:17:09.669794202Z");
  EXPECT_EQ(r->timestamp_ns, 1475713029669794202LL);
  EXPECT_EQ(r->stream, LogStream::kStdout);
  EXPECT_FALSE(r->partial);
  EXPECT_EQ(r->content, "log content 1");

  r = parse_cri_record("2016-10-06T00:17:09.669794203Z stderr P log content 2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->stream, LogStream::kStderr);
  EXPECT_TRUE(r->partial);
  EXPECT_EQ(r->content, "log content 2");

  // Empty content, with and without the separating space; spaces inside content stay.
  r = parse_cri_record("2016-10-06T00:17:09Z stdout F ");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->content, "");
  r = parse_cri_record("2016-10-06T00:17:09Z stdout F");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->content, "");
  r = parse_cri_record("2016-10-06T00:17:09Z stdout F  two  spaces ");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->content, " two  spaces ");

  EXPECT_FALSE(parse_cri_record(""));
  EXPECT_FALSE(parse_cri_record("not a record"));
  EXPECT_FALSE(parse_cri_record("2016-10-06T00:17:09Z stdin F x"));
  EXPECT_FALSE(parse_cri_record("2016-10-06T00:17:09Z stdout X x"));
  EXPECT_FALSE(parse_cri_record("2016-10-06 stdout F x"));
}

TEST(CriRecordTest, Rfc3339Nanos) {
  EXPECT_EQ(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339_nanos("1970-01-01T00:00:01.5Z"), 1'500'000'000);
  EXPECT_EQ(parse_rfc3339_nanos("2024-05-01T12:00:00+02:00"), kBase);
  EXPECT_EQ(parse_rfc3339_nanos("2024-05-01T09:30:00.000000001-00:30"), kBase + 1);
  EXPECT_EQ(parse_rfc3339_nanos("2024-02-29T00:00:00Z"), 1709164800LL * 1'000'000'000);
  EXPECT_FALSE(parse_rfc3339_nanos("2024-05-01T10:00:00"));
  EXPECT_FALSE(parse_rfc3339_nanos("2024-05-01T10:00:00.Z"));
  EXPECT_FALSE(parse_rfc3339_nanos("2024-13-01T10:00:00Z"));
  EXPECT_FALSE(parse_rfc3339_nanos("2024-05-01T10:00:00Zjunk"));
}

TEST(CriRecordTest, Rfc3339NanoTrimsTrailingZeros) {
  EXPECT_EQ(rfc3339_nano("2024-05-01T10:00:00.123000000Z"), "2024-05-01T10:00:00.123Z");
  EXPECT_EQ(rfc3339_nano("2024-05-01T10:00:00.000000000Z"), "2024-05-01T10:00:00Z");
  EXPECT_EQ(rfc3339_nano("2024-05-01T10:00:00.669794202-07:00"),
            "2024-05-01T10:00:00.669794202-07:00");
  EXPECT_EQ(rfc3339_nano("2024-05-01T10:00:00Z"), "2024-05-01T10:00:00Z");
}

TEST(ReadContainerLogTest, JoinsPartialLinesAndKeepsBothStreams) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  write_file(path, rec(0, "stdout", "F", "one") + rec(1, "stdout", "P", "tw") +
                       rec(2, "stderr", "F", "oops") + rec(3, "stdout", "F", "o") +
                       "garbage that is skipped\n" + rec(4, "stderr", "F", "") +
                       rec(5, "stdout", "F", "three"));
  EXPECT_EQ(read_all(path, {}), "one\noops\ntwo\n\nthree\n");

  LogOptions out_only;
  out_only.stream = StreamSelection::kStdout;
  EXPECT_EQ(read_all(path, out_only), "one\ntwo\nthree\n");
  LogOptions err_only;
  err_only.stream = StreamSelection::kStderr;
  EXPECT_EQ(read_all(path, err_only), "oops\n\n");
}

TEST(ReadContainerLogTest, TimestampsPrefixEachLineOnce) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  write_file(path,
             "2024-05-01T10:00:00.100000000Z stdout P hel\n"
             "2024-05-01T10:00:00.200000000Z stdout F lo\n"
             "2024-05-01T12:00:01.000000000+02:00 stderr F bye\n");
  LogOptions options;
  options.timestamps = true;
  EXPECT_EQ(read_all(path, options),
            "2024-05-01T10:00:00.1Z hello\n2024-05-01T12:00:01+02:00 bye\n");
}

TEST(ReadContainerLogTest, TailCountsWholeLines) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  write_file(path, rec(0, "stdout", "F", "a") + rec(1, "stdout", "P", "b1") +
                       rec(2, "stdout", "P", "b2") + rec(3, "stdout", "F", "b3") +
                       rec(4, "stderr", "F", "c") + rec(5, "stdout", "F", "d"));
  LogOptions options;
  options.tail_lines = 2;
  EXPECT_EQ(read_all(path, options), "c\nd\n");
  options.tail_lines = 3;
  EXPECT_EQ(read_all(path, options), "b1b2b3\nc\nd\n");
  options.tail_lines = 4;
  EXPECT_EQ(read_all(path, options), "a\nb1b2b3\nc\nd\n");
  options.tail_lines = 100;
  EXPECT_EQ(read_all(path, options), "a\nb1b2b3\nc\nd\n");
  options.tail_lines = 0;
  EXPECT_EQ(read_all(path, options), "");
  // Only lines of the selected stream count.
  options.tail_lines = 2;
  options.stream = StreamSelection::kStdout;
  EXPECT_EQ(read_all(path, options), "b1b2b3\nd\n");
}

TEST(ReadContainerLogTest, TailOfAnUnfinishedLastLine) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  write_file(path, rec(0, "stdout", "F", "a") + rec(1, "stdout", "F", "b") +
                       rec(2, "stdout", "P", "partial"));
  LogOptions options;
  options.tail_lines = 1;
  EXPECT_EQ(read_all(path, options), "partial");
  options.tail_lines = 2;
  EXPECT_EQ(read_all(path, options), "b\npartial");
}

TEST(ReadContainerLogTest, TailAcrossReadBlocks) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  std::string data;
  std::string expected;
  std::string long_text(3000, 'x');
  for (int i = 0; i < 200; ++i) {
    std::string text = std::to_string(i) + long_text;
    data += rec(i % 3600, "stdout", "F", text);
    if (i >= 150) expected += text + "\n";
  }
  write_file(path, data);
  ASSERT_GT(data.size(), 3 * 64 * 1024u);
  LogOptions options;
  options.tail_lines = 50;
  EXPECT_EQ(read_all(path, options), expected);
  options.tail_lines = 200;
  EXPECT_EQ(read_all(path, options), read_all(path, {}));
  // The whole first line comes back when every line is asked for.
  options.tail_lines = 199;
  std::string all_but_first = read_all(path, options);
  EXPECT_EQ(all_but_first.substr(0, 4), "1xxx");
}

TEST(ReadContainerLogTest, SinceSkipsOlderLines) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  write_file(path, rec(0, "stdout", "F", "old") + rec(9, "stdout", "P", "mixed-") +
                       rec(11, "stdout", "F", "line") + rec(10, "stdout", "F", "edge") +
                       rec(20, "stderr", "F", "new"));
  LogOptions options;
  options.since_ns = kBase + 10LL * 1'000'000'000;  // just before the record at :10
  // A line counts from its first record: "mixed-line" started before since.
  EXPECT_EQ(read_all(path, options), "edge\nnew\n");
}

TEST(ReadContainerLogTest, LimitBytesCutsWithinALineAndCountsTimestamps) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  write_file(path, rec(0, "stdout", "F", "hello") + rec(1, "stdout", "F", "world"));
  LogOptions options;
  options.limit_bytes = 8;
  EXPECT_EQ(read_all(path, options), "hello\nwo");
  options.limit_bytes = 6;
  EXPECT_EQ(read_all(path, options), "hello\n");
  options.limit_bytes = 1000;
  EXPECT_EQ(read_all(path, options), "hello\nworld\n");
  options.limit_bytes = 10;
  options.timestamps = true;
  EXPECT_EQ(read_all(path, options), "2024-05-01");
}

TEST(ReadContainerLogTest, MissingFileIsNotFound) {
  testing::TempDir dir;
  Status s = read_container_log(dir.sub("nope.log"), {}, [](std::string_view) { return true; });
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.to_string();
  EXPECT_NE(s.message().find("nope.log"), std::string::npos);
}

TEST(ReadContainerLogTest, WriterReturningFalseStops) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  std::string data;
  for (int i = 0; i < 5000; ++i) data += rec(i % 3600, "stdout", "F", std::string(100, 'y'));
  write_file(path, data);
  int calls = 0;
  Status s = read_container_log(path, {}, [&](std::string_view) {
    ++calls;
    return false;
  });
  EXPECT_TRUE(s.is_ok());
  EXPECT_EQ(calls, 1);
}

// Collects output from a follower running on another thread.
class Follower {
 public:
  Follower(std::string path, LogOptions options, FollowControl control = {})
      : path_(std::move(path)), options_(std::move(options)), control_(std::move(control)) {
    options_.follow = true;
    if (!control_.cancelled) control_.cancelled = [this] { return cancel_.load(); };
    control_.poll_interval = 50ms;
    thread_ = std::thread([this] {
      status_ = read_container_log(
          path_, options_,
          [this](std::string_view chunk) {
            std::lock_guard lock(mu_);
            out_.append(chunk);
            return true;
          },
          control_);
      finished_ = true;
    });
  }
  ~Follower() {
    cancel_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::string output() {
    std::lock_guard lock(mu_);
    return out_;
  }
  // Waits until the output equals `want` (or 5 s pass); returns the output.
  std::string wait_for(const std::string& want) {
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline && output() != want) {
      std::this_thread::sleep_for(10ms);
    }
    return output();
  }
  bool wait_finished(std::chrono::milliseconds timeout = 5s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline && !finished_) {
      std::this_thread::sleep_for(10ms);
    }
    return finished_;
  }
  void cancel() { cancel_ = true; }
  const Status& status() const { return status_; }

 private:
  std::string path_;
  LogOptions options_;
  FollowControl control_;
  std::mutex mu_;
  std::string out_;
  std::atomic<bool> cancel_{false};
  std::atomic<bool> finished_{false};
  Status status_;
  std::thread thread_;
};

TEST(FollowContainerLogTest, FollowsAppendsUntilCancelled) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  write_file(path, rec(0, "stdout", "F", "first") + rec(1, "stdout", "F", "second"));
  LogOptions options;
  options.tail_lines = 1;
  Follower f(path, options);
  EXPECT_EQ(f.wait_for("second\n"), "second\n");
  append_file(path, rec(2, "stdout", "F", "third"));
  EXPECT_EQ(f.wait_for("second\nthird\n"), "second\nthird\n");
  // A partial record waits for the rest of its line.
  append_file(path, rec(3, "stderr", "P", "par"));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(f.output(), "second\nthird\n");
  append_file(path, rec(4, "stderr", "F", "tial"));
  EXPECT_EQ(f.wait_for("second\nthird\npartial\n"), "second\nthird\npartial\n");
  // A record written in two pieces is read whole.
  std::string r = rec(5, "stdout", "F", "torn");
  append_file(path, r.substr(0, 20));
  std::this_thread::sleep_for(150ms);
  append_file(path, r.substr(20));
  EXPECT_EQ(f.wait_for("second\nthird\npartial\ntorn\n"), "second\nthird\npartial\ntorn\n");
  EXPECT_FALSE(f.wait_finished(100ms));
  f.cancel();
  EXPECT_TRUE(f.wait_finished());
  EXPECT_TRUE(f.status().is_ok());
}

TEST(FollowContainerLogTest, EndsWhenTheSourceIsDoneAfterReadingTheRest) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  write_file(path, rec(0, "stdout", "F", "a"));
  std::atomic<bool> done{false};
  FollowControl control;
  control.source_done = [&] { return done.load(); };
  Follower f(path, {}, control);
  EXPECT_EQ(f.wait_for("a\n"), "a\n");
  append_file(path, rec(1, "stdout", "F", "b") + rec(2, "stdout", "P", "unfinished"));
  done = true;
  EXPECT_TRUE(f.wait_finished());
  EXPECT_EQ(f.output(), "a\nb\nunfinished");
}

TEST(FollowContainerLogTest, ContinuesInTheNewFileAfterRotation) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  write_file(path, rec(0, "stdout", "F", "before"));
  Follower f(path, {});
  EXPECT_EQ(f.wait_for("before\n"), "before\n");
  append_file(path, rec(1, "stdout", "F", "last of old"));
  ASSERT_EQ(std::rename(path.c_str(), dir.sub("0.log.20240501-100000").c_str()), 0);
  write_file(path, rec(2, "stdout", "F", "first of new"));
  EXPECT_EQ(f.wait_for("before\nlast of old\nfirst of new\n"),
            "before\nlast of old\nfirst of new\n");
  append_file(path, rec(3, "stdout", "F", "more"));
  EXPECT_EQ(f.wait_for("before\nlast of old\nfirst of new\nmore\n"),
            "before\nlast of old\nfirst of new\nmore\n");
}

TEST(FollowContainerLogTest, EndsWhenTheFileIsRemoved) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  write_file(path, rec(0, "stdout", "F", "x"));
  FollowControl control;
  control.reopen_grace = 200ms;
  Follower f(path, {}, control);
  EXPECT_EQ(f.wait_for("x\n"), "x\n");
  ASSERT_EQ(std::remove(path.c_str()), 0);
  EXPECT_TRUE(f.wait_finished());
  EXPECT_TRUE(f.status().is_ok());
}

TEST(FollowContainerLogTest, LimitBytesEndsFollowing) {
  testing::TempDir dir;
  std::string path = dir.sub("0.log");
  write_file(path, rec(0, "stdout", "F", "abc"));
  LogOptions options;
  options.limit_bytes = 6;
  Follower f(path, options);
  EXPECT_EQ(f.wait_for("abc\n"), "abc\n");
  EXPECT_FALSE(f.wait_finished(100ms));
  append_file(path, rec(1, "stdout", "F", "defgh"));
  EXPECT_TRUE(f.wait_finished());
  EXPECT_EQ(f.output(), "abc\nde");
}

}  // namespace
}  // namespace skiff::kubelet::logs
