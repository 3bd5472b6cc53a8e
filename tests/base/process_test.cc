#include "base/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "support/temp_dir.h"

namespace skiff {
namespace {

using std::chrono::milliseconds;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(FindExecutableTest, LooksUpPathAndKeepsExplicitPaths) {
  auto sh = find_executable("sh", "/nonexistent:/usr/bin:/bin");
  ASSERT_TRUE(sh.is_ok()) << sh.status().to_string();
  EXPECT_EQ(sh->find('/'), 0U);
  EXPECT_EQ(find_executable("definitely-not-a-program-xyz", "/usr/bin:/bin").status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(*find_executable("/bin/sh", ""), "/bin/sh");
  EXPECT_EQ(find_executable("/nonexistent/prog", "").status().code(), StatusCode::kNotFound);
}

TEST(RunCommandTest, CapturesStdoutStderrAndExitCode) {
  auto r = run_command({"sh", "-c", "echo out; echo err >&2; exit 3"}, milliseconds(5000));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_EQ(r->status.exit_code, 3);
  EXPECT_EQ(r->status.signal, 0);
  EXPECT_FALSE(r->status.success());
}

TEST(RunCommandTest, LargeOutputOnBothStreamsDoesNotDeadlock) {
  auto r = run_command({"sh", "-c", "head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2"},
                       milliseconds(10000));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->out.size(), 300000U);
  EXPECT_EQ(r->err.size(), 200000U);
  EXPECT_TRUE(r->status.success());
}

TEST(RunCommandTest, TimeoutKillsTheCommand) {
  auto start = std::chrono::steady_clock::now();
  auto r = run_command({"sh", "-c", "echo started; exec sleep 30"}, milliseconds(300));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(r.status().message().find("started"), std::string::npos) << r.status().message();
  EXPECT_LT(took, std::chrono::seconds(10));
}

TEST(RunCommandTest, EnvironmentOverridesAndCwd) {
  testing::TempDir dir("skiff-process");
  ProcessOptions base;
  base.env_overrides = {{"SKIFF_PROCESS_TEST", "hello world"}};
  base.cwd = dir.path();
  auto r = run_command({"sh", "-c", "echo \"$SKIFF_PROCESS_TEST\"; pwd"}, milliseconds(5000), base);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->out, "hello world\n" + dir.path() + "\n");

  ProcessOptions clean;
  clean.clear_env = true;
  clean.env_overrides = {{"ONLY", "1"}};
  auto env = run_command({"/usr/bin/env"}, milliseconds(5000), clean);
  ASSERT_TRUE(env.is_ok()) << env.status().to_string();
  EXPECT_EQ(env->out, "ONLY=1\n");
}

TEST(RunCommandTest, MissingProgramAndBadCwdAreErrors) {
  auto missing = run_command({"no-such-program-skiff"}, milliseconds(1000));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  ProcessOptions bad_cwd;
  bad_cwd.cwd = "/nonexistent/dir";
  auto r = run_command({"sh", "-c", "true"}, milliseconds(1000), bad_cwd);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("/nonexistent/dir"), std::string::npos)
      << r.status().message();
}

TEST(ProcessTest, SpawnLogsAndReportsExit) {
  testing::TempDir dir("skiff-process");
  ProcessOptions options;
  options.argv = {"sh", "-c", "echo to-log; echo err-to-log >&2; exit 7"};
  options.log_path = dir.sub("log");
  auto p = Process::spawn(options);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_GT(p->pid(), 0);
  ExitStatus status = p->wait();
  EXPECT_EQ(status.exit_code, 7);
  EXPECT_FALSE(p->running());
  EXPECT_EQ(p->pid(), -1);
  // The status stays available and nothing is signalled after reaping.
  EXPECT_EQ(p->try_wait()->exit_code, 7);
  EXPECT_FALSE(p->signal(SIGTERM));
  EXPECT_EQ(slurp(dir.sub("log")), "to-log\nerr-to-log\n");
}

TEST(ProcessTest, TryWaitWhileRunningThenTerminate) {
  ProcessOptions options;
  options.argv = {"sleep", "30"};
  auto p = Process::spawn(options);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_FALSE(p->try_wait().has_value());
  EXPECT_FALSE(p->wait_for(milliseconds(50)).has_value());
  ExitStatus status = p->terminate(milliseconds(5000));
  EXPECT_EQ(status.signal, SIGTERM);
  EXPECT_EQ(status.to_string().rfind("signal 15", 0), 0U) << status.to_string();
}

TEST(ProcessTest, TerminateEscalatesToSigkill) {
  ProcessOptions options;
  // Ignores SIGTERM; the shell reports readiness so the trap is in place before we signal.
  options.argv = {"sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"};
  testing::TempDir dir("skiff-process");
  options.log_path = dir.sub("log");
  auto p = Process::spawn(options);
  ASSERT_TRUE(p.is_ok());
  for (int i = 0; i < 500 && slurp(dir.sub("log")).empty(); ++i) usleep(10000);
  auto start = std::chrono::steady_clock::now();
  ExitStatus status = p->terminate(milliseconds(300));
  EXPECT_EQ(status.signal, SIGKILL);
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(300));
}

TEST(ProcessTest, ChildDoesNotInheritBlockedSignalsOrStrayDescriptors) {
  // Block SIGTERM in this thread (as a program with a signal-handling thread would) and open a
  // descriptor without CLOEXEC: neither may reach the child.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  int stray = fcntl(1, F_DUPFD, 100);
  ASSERT_GE(stray, 0);
  auto r = run_command({"sh", "-c", "grep SigBlk /proc/self/status; ls /proc/self/fd"},
                       milliseconds(5000));
  close(stray);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_NE(r->out.find("SigBlk:\t0000000000000000"), std::string::npos) << r->out;
  // ls sees stdio plus its own directory handle, never `stray`.
  EXPECT_EQ(r->out.find("\n" + std::to_string(stray) + "\n"), std::string::npos) << r->out;
}

TEST(ProcessTest, MoveTransfersOwnership) {
  ProcessOptions options;
  options.argv = {"sleep", "30"};
  auto p = Process::spawn(options);
  ASSERT_TRUE(p.is_ok());
  pid_t pid = p->pid();
  Process moved = std::move(p).value();
  EXPECT_EQ(moved.pid(), pid);
  EXPECT_EQ(kill(pid, 0), 0);
  { Process dropped = std::move(moved); }  // the destructor kills and reaps
  EXPECT_NE(kill(pid, 0), 0);
}

}  // namespace
}  // namespace skiff
