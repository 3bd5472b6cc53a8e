// Probe actions against real sockets on loopback and the in-memory runtime, and the Prober's
// thresholds, startup gating and restarts.
#include "kubelet/prober.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "kubelet/cri/fake_runtime.h"
#include "support/eventually.h"

namespace skiff::kubelet {
namespace {

using skiff::testing::eventually;
using skiff::testing::stays;
using std::chrono::milliseconds;
namespace v1 = ::runtime::v1;

// A loopback HTTP server answering every request with `status`.
class TinyHttpServer {
 public:
  explicit TinyHttpServer(std::atomic<int>& status) : status_(status) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    ::listen(fd_, 16);
    thread_ = std::thread([this] {
      while (true) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        char buf[2048];
        ssize_t n = ::recv(c, buf, sizeof(buf), 0);
        if (n > 0) last_request_.assign(buf, static_cast<size_t>(n));
        std::string reply = "HTTP/1.1 " + std::to_string(status_.load()) +
                            " X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        ::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
        ::close(c);
      }
    });
  }
  ~TinyHttpServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int port() const { return port_; }
  std::string last_request() const { return last_request_; }

 private:
  std::atomic<int>& status_;
  int fd_ = -1;
  int port_ = 0;
  std::string last_request_;
  std::thread thread_;
};

int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

TEST(RunProbeTest, HttpGetTreats2xxAnd3xxAsHealthy) {
  std::atomic<int> status{200};
  TinyHttpServer server(status);
  Json container = {{"name", "c"},
                    {"ports", {{{"name", "web"}, {"containerPort", server.port()}}}}};
  Json probe = {{"httpGet",
                 {{"path", "/healthz"},
                  {"port", "web"},
                  {"httpHeaders", {{{"name", "X-Probe"}, {"value", "yes"}}}}}}};
  cri::FakeRuntime runtime;
  EXPECT_TRUE(run_probe(runtime, probe, container, "id", "127.0.0.1").success);
  EXPECT_NE(server.last_request().find("GET /healthz HTTP/1.1"), std::string::npos);
  EXPECT_NE(server.last_request().find("X-Probe: yes"), std::string::npos);
  EXPECT_NE(server.last_request().find("User-Agent: kube-probe/"), std::string::npos);
  status = 302;
  EXPECT_TRUE(run_probe(runtime, probe, container, "id", "127.0.0.1").success);
  status = 503;
  auto out = run_probe(runtime, probe, container, "id", "127.0.0.1");
  EXPECT_FALSE(out.success);
  EXPECT_EQ(out.message, "HTTP probe failed with statuscode: 503");
  probe["httpGet"]["port"] = closed_port();
  out = run_probe(runtime, probe, container, "id", "127.0.0.1");
  EXPECT_FALSE(out.success);
  EXPECT_NE(out.message.find("connection refused"), std::string::npos) << out.message;
  probe["httpGet"]["port"] = "nosuchport";
  EXPECT_FALSE(run_probe(runtime, probe, container, "id", "127.0.0.1").success);
}

TEST(RunProbeTest, TcpSocketAndExec) {
  std::atomic<int> status{200};
  TinyHttpServer server(status);
  cri::FakeRuntime runtime;
  Json container = {{"name", "c"}};
  EXPECT_TRUE(
      run_probe(runtime, {{"tcpSocket", {{"port", server.port()}}}}, container, "id", "127.0.0.1")
          .success);
  EXPECT_FALSE(
      run_probe(runtime, {{"tcpSocket", {{"port", closed_port()}}}}, container, "id", "127.0.0.1")
          .success);

  // exec runs through the runtime: exit 0 healthy, otherwise the output is the message.
  ASSERT_TRUE(runtime.add_image("busybox").size() > 0);
  v1::PodSandboxConfig sc;
  sc.mutable_metadata()->set_name("p");
  sc.mutable_metadata()->set_uid("u");
  sc.mutable_metadata()->set_namespace_("ns");
  auto sandbox = runtime.run_pod_sandbox(sc, "");
  ASSERT_TRUE(sandbox.is_ok()) << sandbox.status().to_string();
  v1::ContainerConfig cc;
  cc.mutable_metadata()->set_name("c");
  cc.mutable_image()->set_image("busybox");
  auto id = runtime.create_container(*sandbox, cc, sc);
  ASSERT_TRUE(id.is_ok());
  ASSERT_TRUE(runtime.start_container(*id).is_ok());
  v1::ExecSyncResponse bad;
  bad.set_exit_code(1);
  bad.set_stdout("not yet\n");
  runtime.set_exec_result({"cat", "/tmp/ready"}, bad);
  Json probe = {{"exec", {{"command", {"cat", "/tmp/ready"}}}}};
  auto out = run_probe(runtime, probe, container, *id, "");
  EXPECT_FALSE(out.success);
  EXPECT_EQ(out.message, "not yet\n");
  v1::ExecSyncResponse good;
  runtime.set_exec_result({"cat", "/tmp/ready"}, good);
  EXPECT_TRUE(run_probe(runtime, probe, container, *id, "").success);
}

class ProberTest : public ::testing::Test {
 protected:
  ProberTest() {
    runtime_.add_image("busybox");
    v1::PodSandboxConfig sc;
    sc.mutable_metadata()->set_name("p");
    sc.mutable_metadata()->set_uid("uid-1");
    sc.mutable_metadata()->set_namespace_("ns");
    sandbox_ = runtime_.run_pod_sandbox(sc, "").value();
    v1::ContainerConfig cc;
    cc.mutable_metadata()->set_name("c");
    cc.mutable_image()->set_image("busybox");
    container_id_ = runtime_.create_container(sandbox_, cc, sc).value();
    EXPECT_TRUE(runtime_.start_container(container_id_).is_ok());
  }

  Json pod() const {
    return {{"metadata", {{"name", "p"}, {"namespace", "ns"}, {"uid", "uid-1"}}},
            {"spec", {{"terminationGracePeriodSeconds", 1}}}};
  }

  void set_healthy(bool healthy) {
    v1::ExecSyncResponse r;
    r.set_exit_code(healthy ? 0 : 1);
    runtime_.set_exec_result({"check"}, r);
  }

  cri::FakeRuntime runtime_;
  std::string sandbox_;
  std::string container_id_;
  std::atomic<int> changes_{0};
  std::atomic<int> failures_{0};
  std::atomic<int> restarts_{0};
  Prober prober_{runtime_, Prober::Callbacks{
                               .on_change = [this](const std::string&) { ++changes_; },
                               .on_failure =
                                   [this](const Json&, const std::string&, ProbeType,
                                          const std::string&, bool restarting) {
                                     ++failures_;
                                     if (restarting) ++restarts_;
                                   },
                           }};
};

TEST_F(ProberTest, ReadinessFollowsThresholds) {
  set_healthy(false);
  Json c = {{"name", "c"},
            {"readinessProbe",
             {{"exec", {{"command", {"check"}}}},
              {"periodSeconds", 1},
              {"failureThreshold", 1},
              {"successThreshold", 2}}}};
  prober_.ensure(pod(), c, container_id_, "");
  EXPECT_FALSE(prober_.ready("uid-1", "c"));  // readiness starts false
  ASSERT_TRUE(eventually([&] { return failures_ >= 1; }));
  EXPECT_FALSE(prober_.ready("uid-1", "c"));
  set_healthy(true);
  // Two successes in a row are needed.
  ASSERT_TRUE(eventually([&] { return prober_.ready("uid-1", "c"); }, milliseconds(5000)));
  EXPECT_EQ(prober_.readiness("uid-1").at("c"), true);
  set_healthy(false);
  ASSERT_TRUE(eventually([&] { return !prober_.ready("uid-1", "c"); }, milliseconds(5000)));
  EXPECT_GE(changes_, 2);
  EXPECT_EQ(restarts_, 0);  // readiness never restarts
  prober_.forget_pod("uid-1");
  EXPECT_TRUE(prober_.ready("uid-1", "c"));  // no probe any more
}

TEST_F(ProberTest, LivenessFailureStopsTheContainer) {
  set_healthy(true);
  Json c = {{"name", "c"},
            {"livenessProbe",
             {{"exec", {{"command", {"check"}}}}, {"periodSeconds", 1}, {"failureThreshold", 2}}}};
  prober_.ensure(pod(), c, container_id_, "");
  EXPECT_TRUE(stays(
      [&] { return runtime_.container_status(container_id_)->state() == v1::CONTAINER_RUNNING; },
      milliseconds(1500)));
  set_healthy(false);
  ASSERT_TRUE(eventually([&] { return restarts_ == 1; }, milliseconds(6000)));
  ASSERT_TRUE(eventually(
      [&] { return runtime_.container_status(container_id_)->state() == v1::CONTAINER_EXITED; }));
  EXPECT_GE(failures_, 2);
}

TEST_F(ProberTest, StartupProbeGatesTheOthers) {
  set_healthy(false);
  v1::ExecSyncResponse ok;
  runtime_.set_exec_result({"ready"}, ok);
  Json c = {{"name", "c"},
            {"startupProbe",
             {{"exec", {{"command", {"check"}}}}, {"periodSeconds", 1}, {"failureThreshold", 30}}},
            {"readinessProbe", {{"exec", {{"command", {"ready"}}}}, {"periodSeconds", 1}}}};
  prober_.ensure(pod(), c, container_id_, "");
  EXPECT_TRUE(stays([&] { return !prober_.ready("uid-1", "c"); }, milliseconds(1500)));
  EXPECT_FALSE(prober_.started("uid-1", "c"));
  EXPECT_EQ(prober_.readiness("uid-1").at("c"), false);
  set_healthy(true);
  ASSERT_TRUE(eventually([&] { return prober_.started("uid-1", "c"); }, milliseconds(5000)));
  ASSERT_TRUE(eventually([&] { return prober_.ready("uid-1", "c"); }, milliseconds(5000)));
}

}  // namespace
}  // namespace skiff::kubelet
