// kill -9 durability of the embedded store: a child process (durability_writer) writes with
// several threads and reports every acknowledged write; after SIGKILL, the store reopened here
// must hold every acknowledged write at the revision it was acknowledged with. Several rounds
// run on the same data directory.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "conformance/test_util.h"
#include "storage/embedded/embedded_store.h"
#include "storage/store.h"
#include "support/temp_dir.h"

#ifndef DURABILITY_WRITER
#error "DURABILITY_WRITER must name the durability_writer binary"
#endif

namespace skiff::storage {
namespace {

using namespace std::chrono_literals;
using conformance::must;
using Clock = std::chrono::steady_clock;

constexpr size_t kAcksPerRound = 2000;
constexpr int kRounds = 3;
constexpr char kThreads[] = "4";

struct Ack {
  std::string key;
  int64_t revision = 0;
};

// The writer child, started by fork/exec with its stdout on a pipe. The destructor kills it
// (SIGKILL, by PID) and reaps it, so a failing test leaks no process; PR_SET_PDEATHSIG covers a
// test process that dies.
class WriterProcess {
 public:
  explicit WriterProcess(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      error_ = std::string("pipe2: ") + std::strerror(errno);
      return;
    }
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls between fork and exec.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(126);
      if (dup2(fds[1], STDOUT_FILENO) < 0) _exit(125);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    if (pid_ < 0) {
      error_ = std::string("fork: ") + std::strerror(errno);
      close(fds[0]);
      return;
    }
    fd_ = fds[0];
  }

  ~WriterProcess() {
    kill_and_reap();
    if (fd_ >= 0) close(fd_);
  }

  const std::string& error() const { return error_; }
  const std::vector<Ack>& acks() const { return acks_; }
  int wait_status() const { return wait_status_; }
  bool eof() const { return eof_; }

  // Reads acks until there are at least n, the child closes its stdout, or the deadline passes.
  // Returns whether n were reached.
  bool read_acks(size_t n, Clock::time_point deadline) {
    while (acks_.size() < n && !eof_ && error_.empty()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left <= 0ms) break;
      pollfd p{fd_, POLLIN, 0};
      int ready = ::poll(&p, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno != EINTR) error_ = std::string("poll: ") + std::strerror(errno);
      if (ready > 0) read_some();
    }
    return acks_.size() >= n;
  }

  // After the kill: the acks still in the pipe were acknowledged too.
  void read_to_end() {
    while (!eof_ && error_.empty()) read_some();
  }

  void kill_and_reap() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    while (waitpid(pid_, &wait_status_, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  std::string describe_exit() const {
    if (WIFSIGNALED(wait_status_))
      return "killed by signal " + std::to_string(WTERMSIG(wait_status_));
    if (WIFEXITED(wait_status_))
      return "exited with status " + std::to_string(WEXITSTATUS(wait_status_));
    return "wait status " + std::to_string(wait_status_);
  }

 private:
  void read_some() {
    char buf[16384];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n < 0) {
      if (errno != EINTR && errno != EAGAIN) error_ = std::string("read: ") + std::strerror(errno);
      return;
    }
    if (n == 0) {
      eof_ = true;
      if (!partial_.empty()) error_ = "the writer's output ends in a partial line: " + partial_;
      return;
    }
    partial_.append(buf, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
      parse(partial_.substr(start, nl - start));
    }
    partial_.erase(0, start);
  }

  void parse(const std::string& line) {
    std::istringstream in(line);
    std::string word;
    Ack ack;
    if (!(in >> word >> ack.key >> ack.revision) || word != "ack" || ack.revision <= 0) {
      error_ = "unexpected line from the writer: " + line;
      return;
    }
    acks_.push_back(std::move(ack));
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  int wait_status_ = 0;
  bool eof_ = false;
  std::string partial_;
  std::string error_;
  std::vector<Ack> acks_;
};

Result<std::unique_ptr<Store>> open_at(const std::string& dir) {
  EmbeddedStoreOptions options;
  options.data_dir = dir;
  return open_embedded_store(std::move(options));
}

// "<tag>/<thread>/<n>" -> "<tag>/<thread>".
std::string writer_of(const std::string& key) {
  return key.substr(0, key.rfind('/'));
}

TEST(EmbeddedDurabilityTest, AcknowledgedWritesSurviveKill9) {
  skiff::testing::TempDir tmp("skiff-durability");
  const std::string dir = tmp.sub("data");
  std::map<std::string, int64_t> acked;  // every round's acknowledged writes

  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string tag = "/round" + std::to_string(round);
    int64_t revision_before = 0;
    if (round > 0) {
      auto store = must(open_at(dir));
      revision_before = must(store->current_revision());
    }

    {
      WriterProcess writer({DURABILITY_WRITER, dir, kThreads, tag});
      ASSERT_TRUE(writer.error().empty()) << writer.error();
      auto deadline = Clock::now() + 120s;

      ASSERT_TRUE(writer.read_acks(50, deadline))
          << "the writer acknowledged " << writer.acks().size() << " writes, then "
          << (writer.eof() ? "closed its output" : "went quiet") << " " << writer.error();
      // While the child writes, its data dir is locked against this process.
      {
        auto intruder = open_at(dir);
        EXPECT_FALSE(intruder.is_ok()) << "opened a data dir that another process is writing to";
        if (!intruder.is_ok()) {
          std::cout << "locked by the writer: " << intruder.status().to_string() << "\n";
        }
      }

      ASSERT_TRUE(writer.read_acks(kAcksPerRound, deadline))
          << "the writer acknowledged only " << writer.acks().size()
          << " writes: " << (writer.eof() ? "it closed its output" : "timed out") << " "
          << writer.error();
      writer.kill_and_reap();
      EXPECT_TRUE(WIFSIGNALED(writer.wait_status()) && WTERMSIG(writer.wait_status()) == SIGKILL)
          << "the writer " << writer.describe_exit() << " before the kill";
      writer.read_to_end();
      ASSERT_TRUE(writer.error().empty()) << writer.error();

      // Each writer thread's acks come with increasing revisions, all newer than the last round.
      std::map<std::string, int64_t> last_of_writer;
      for (const Ack& ack : writer.acks()) {
        EXPECT_GT(ack.revision, revision_before) << ack.key;
        int64_t& last = last_of_writer[writer_of(ack.key)];
        EXPECT_GT(ack.revision, last) << ack.key;
        last = ack.revision;
        EXPECT_TRUE(acked.emplace(ack.key, ack.revision).second) << ack.key << " acked twice";
      }
      std::cout << "round " << round << ": " << writer.acks().size()
                << " acknowledged writes before SIGKILL\n";
    }

    auto store = must(open_at(dir));
    int64_t current = must(store->current_revision());
    RangeResult all = must(store->range(KeyRange::prefix("/round")));
    std::map<std::string, KeyValuePtr> stored;
    std::set<int64_t> revisions;
    for (const auto& kv : all.kvs) {
      stored[kv->key] = kv;
      EXPECT_TRUE(revisions.insert(kv->mod_revision).second)
          << "two keys share revision " << kv->mod_revision;
      EXPECT_EQ(kv->value, "value-of-" + kv->key) << "torn or foreign value";
      EXPECT_LE(kv->mod_revision, current) << kv->key;
    }

    size_t missing = 0, wrong = 0;
    for (const auto& [key, revision] : acked) {
      auto it = stored.find(key);
      if (it == stored.end()) {
        if (++missing <= 10)
          ADD_FAILURE() << "acknowledged write lost: " << key << " @" << revision;
        continue;
      }
      const KeyValue& kv = *it->second;
      if (kv.mod_revision != revision || kv.create_revision != revision || kv.version != 1) {
        if (++wrong <= 10) {
          ADD_FAILURE() << key << " acknowledged @" << revision << " but stored with mod "
                        << kv.mod_revision << ", create " << kv.create_revision << ", version "
                        << kv.version;
        }
      }
      EXPECT_LE(revision, current) << key;
    }
    EXPECT_EQ(missing, 0u) << "of " << acked.size() << " acknowledged writes";
    EXPECT_EQ(wrong, 0u) << "of " << acked.size() << " acknowledged writes";
    EXPECT_GE(stored.size(), acked.size());

    // The reopened store takes writes at the next revision.
    EXPECT_EQ(must(store->put("/after/" + std::to_string(round), "v")), current + 1);
  }
}

}  // namespace
}  // namespace skiff::storage
