// gRPC probes against in-process gRPC servers on loopback: grpc++'s own health service (an
// independent implementation of the protocol), a server without one, a server that takes calls
// and never answers, and a socket that never speaks; then a grpc probe through the Prober.
#include <arpa/inet.h>
#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "kubelet/cri/fake_runtime.h"
#include "kubelet/grpc_health.h"
#include "kubelet/prober.h"
#include "support/eventually.h"

namespace skiff::kubelet {
namespace {

using skiff::testing::eventually;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
namespace v1 = ::runtime::v1;

// A gRPC server on 127.0.0.1:0 with grpc++'s default health service.
class HealthServer {
 public:
  HealthServer() {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    // grpc++ wants at least one service of its own besides health; the base generic service
    // answers any other method UNIMPLEMENTED.
    builder.RegisterCallbackGenericService(&unimplemented_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_NE(server_->GetHealthCheckService(), nullptr);
  }
  ~HealthServer() { server_->Shutdown(std::chrono::system_clock::now()); }
  int port() const { return port_; }
  void set(const std::string& service, bool serving) {
    server_->GetHealthCheckService()->SetServingStatus(service, serving);
  }

 private:
  int port_ = 0;
  grpc::CallbackGenericService unimplemented_;
  std::unique_ptr<grpc::Server> server_;
};

// A gRPC server without a health service. With `hang`, a generic handler takes every call,
// records its method and user agent, and never answers; without, calls are UNIMPLEMENTED.
class NoHealthServer {
 public:
  explicit NoHealthServer(bool hang) {
    grpc::ServerBuilder builder;
    builder.SetOption(std::make_unique<grpc::HealthCheckServiceServerBuilderOption>(nullptr));
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    if (hang) {
      builder.RegisterAsyncGenericService(&generic_);
      cq_ = builder.AddCompletionQueue();
    } else {
      builder.RegisterCallbackGenericService(&unimplemented_);
    }
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    if (hang) {
      generic_.RequestCall(&context_, &stream_, cq_.get(), cq_.get(), this);
      thread_ = std::thread([this] {
        void* tag = nullptr;
        bool ok = false;
        while (cq_->Next(&tag, &ok)) {
          if (tag == this && ok) {
            std::lock_guard lock(mu_);
            method_ = context_.method();
            auto ua = context_.client_metadata().find("user-agent");
            if (ua != context_.client_metadata().end()) {
              user_agent_.assign(ua->second.data(), ua->second.size());
            }
          }
        }
      });
    }
  }
  ~NoHealthServer() {
    server_->Shutdown(std::chrono::system_clock::now());
    if (cq_) {
      cq_->Shutdown();
      thread_.join();
    }
  }
  int port() const { return port_; }
  std::string method() const {
    std::lock_guard lock(mu_);
    return method_;
  }
  std::string user_agent() const {
    std::lock_guard lock(mu_);
    return user_agent_;
  }

 private:
  int port_ = 0;
  grpc::AsyncGenericService generic_;
  grpc::CallbackGenericService unimplemented_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  grpc::GenericServerContext context_;
  grpc::GenericServerAsyncReaderWriter stream_{&context_};
  std::unique_ptr<grpc::Server> server_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::string method_;
  std::string user_agent_;
};

// A loopback socket that completes TCP handshakes (the kernel's backlog) but never speaks.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    EXPECT_EQ(::listen(fd_, 16), 0);
  }
  ~SilentListener() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
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

Json grpc_probe(int port, const std::string& service = "", int timeout = 1) {
  Json action = {{"port", port}};
  if (!service.empty()) action["service"] = service;
  return {{"grpc", action}, {"timeoutSeconds", timeout}};
}

std::string addr_of(int port) {
  return "127.0.0.1:" + std::to_string(port);
}

TEST(GrpcHealthWireTest, EncodesAndDecodesTheTwoMessages) {
  EXPECT_EQ(encode_health_check_request(""), "");
  EXPECT_EQ(encode_health_check_request("svc"), std::string("\x0a\x03svc", 5));
  std::string long_name(200, 'x');
  EXPECT_EQ(encode_health_check_request(long_name), std::string("\x0a\xc8\x01", 3) + long_name);

  EXPECT_EQ(decode_health_check_response("").value(), kServingStatusUnknown);
  EXPECT_EQ(decode_health_check_response(std::string("\x08\x01", 2)).value(), 1);
  EXPECT_EQ(decode_health_check_response(std::string("\x08\x02", 2)).value(), 2);
  // Unknown fields of every wire type are skipped.
  std::string with_unknown(
      "\x12\x02hi\x18\x05\x21"
      "12345678"
      "\x2d"
      "1234"
      "\x08\x03",
      22);
  EXPECT_EQ(decode_health_check_response(with_unknown).value(), 3);
  EXPECT_FALSE(decode_health_check_response(std::string("\x08", 1)).is_ok());
  EXPECT_FALSE(decode_health_check_response(std::string("\x12\x05hi", 4)).is_ok());
  EXPECT_FALSE(decode_health_check_response(std::string("\x0b\x01", 2)).is_ok());

  EXPECT_EQ(serving_status_name(1), "SERVING");
  EXPECT_EQ(serving_status_name(2), "NOT_SERVING");
  EXPECT_EQ(serving_status_name(3), "SERVICE_UNKNOWN");
  EXPECT_EQ(serving_status_name(0), "UNKNOWN");
  EXPECT_EQ(serving_status_name(7), "7");
  EXPECT_EQ(go_duration_seconds(1), "1s");
  EXPECT_EQ(go_duration_seconds(60), "1m0s");
  EXPECT_EQ(go_duration_seconds(3725), "1h2m5s");
}

TEST(GrpcProbeTest, ServingIsHealthyAndNotServingIsNot) {
  HealthServer server;
  server.set("svc", true);
  cri::FakeRuntime runtime;
  Json container = {{"name", "c"}};
  // No service: the server's overall health, which grpc++ reports as SERVING.
  auto out = run_probe(runtime, grpc_probe(server.port()), container, "id", "127.0.0.1");
  EXPECT_TRUE(out.success) << out.message;
  out = run_probe(runtime, grpc_probe(server.port(), "svc"), container, "id", "127.0.0.1");
  EXPECT_TRUE(out.success) << out.message;

  server.set("svc", false);
  out = run_probe(runtime, grpc_probe(server.port(), "svc"), container, "id", "127.0.0.1");
  EXPECT_FALSE(out.success);
  EXPECT_EQ(out.message, "service unhealthy (responded with \"NOT_SERVING\")");
  // Only the named service is affected.
  EXPECT_TRUE(run_probe(runtime, grpc_probe(server.port()), container, "id", "127.0.0.1").success);
}

TEST(GrpcProbeTest, UnknownServiceFails) {
  HealthServer server;
  server.set("svc", true);
  auto out = check_grpc_health("127.0.0.1", server.port(), "other", std::chrono::seconds(1));
  EXPECT_FALSE(out.serving);
  EXPECT_EQ(
      out.message.rfind("error: health rpc probe failed: rpc error: code = NotFound desc = ", 0),
      0u)
      << out.message;
}

TEST(GrpcProbeTest, ServerWithoutHealthServiceFails) {
  NoHealthServer server(/*hang=*/false);
  auto out = check_grpc_health("127.0.0.1", server.port(), "", std::chrono::seconds(1));
  EXPECT_FALSE(out.serving);
  EXPECT_EQ(out.message.rfind("error: this server does not implement the grpc health protocol "
                              "(grpc.health.v1.Health): ",
                              0),
            0u)
      << out.message;
}

TEST(GrpcProbeTest, NothingListeningFailsFast) {
  int port = closed_port();
  cri::FakeRuntime runtime;
  auto start = Clock::now();
  auto out = run_probe(runtime, grpc_probe(port, "", 10), {{"name", "c"}}, "id", "127.0.0.1");
  EXPECT_LT(Clock::now() - start, milliseconds(3000));
  EXPECT_FALSE(out.success);
  EXPECT_EQ(out.message, "error: failed to connect service at \"" + addr_of(port) +
                             "\": dial tcp " + addr_of(port) + ": connect: connection refused");
}

TEST(GrpcProbeTest, CallThatIsNeverAnsweredTimesOut) {
  NoHealthServer server(/*hang=*/true);
  cri::FakeRuntime runtime;
  auto start = Clock::now();
  auto out =
      run_probe(runtime, grpc_probe(server.port(), "svc", 1), {{"name", "c"}}, "id", "127.0.0.1");
  auto took = Clock::now() - start;
  EXPECT_FALSE(out.success);
  EXPECT_EQ(out.message, "timeout: health rpc did not complete within 1s");
  EXPECT_GE(took, milliseconds(900));
  EXPECT_LT(took, milliseconds(3000));
  // The call reached the server as upstream's prober makes it.
  EXPECT_EQ(server.method(), "/grpc.health.v1.Health/Check");
  EXPECT_EQ(server.user_agent().rfind("kube-probe/", 0), 0u) << server.user_agent();
}

TEST(GrpcProbeTest, PeerThatNeverSpeaksTimesOut) {
  SilentListener listener;
  auto start = Clock::now();
  auto out = check_grpc_health("127.0.0.1", listener.port(), "", std::chrono::seconds(1));
  auto took = Clock::now() - start;
  EXPECT_FALSE(out.serving);
  // Depending on when gRPC deems the connection ready, the connect or the call times out.
  EXPECT_EQ(out.message.rfind("timeout: ", 0), 0u) << out.message;
  EXPECT_GE(took, milliseconds(900));
  EXPECT_LT(took, milliseconds(3000));
}

TEST(GrpcProbeTest, BadActionsFail) {
  cri::FakeRuntime runtime;
  Json container = {{"name", "c"}};
  EXPECT_FALSE(
      run_probe(runtime, {{"grpc", {{"port", "web"}}}}, container, "id", "127.0.0.1").success);
  EXPECT_FALSE(
      run_probe(runtime, {{"grpc", Json::object()}}, container, "id", "127.0.0.1").success);
  auto out = run_probe(runtime, grpc_probe(closed_port()), container, "id", "");
  EXPECT_FALSE(out.success);
  EXPECT_NE(out.message.find("failed to connect service"), std::string::npos) << out.message;
}

TEST(GrpcProbeTest, ProberRunsGrpcReadinessProbes) {
  HealthServer server;
  server.set("svc", false);
  cri::FakeRuntime runtime;
  runtime.add_image("busybox");
  v1::PodSandboxConfig sc;
  sc.mutable_metadata()->set_name("p");
  sc.mutable_metadata()->set_uid("uid-1");
  sc.mutable_metadata()->set_namespace_("ns");
  std::string sandbox = runtime.run_pod_sandbox(sc, "").value();
  v1::ContainerConfig cc;
  cc.mutable_metadata()->set_name("c");
  cc.mutable_image()->set_image("busybox");
  std::string container_id = runtime.create_container(sandbox, cc, sc).value();
  ASSERT_TRUE(runtime.start_container(container_id).is_ok());

  std::mutex mu;
  std::vector<std::string> messages;
  Prober prober(runtime, Prober::Callbacks{
                             .on_change = [](const std::string&) {},
                             .on_failure =
                                 [&](const Json&, const std::string&, ProbeType,
                                     const std::string& message, bool) {
                                   std::lock_guard lock(mu);
                                   messages.push_back(message);
                                 },
                         });
  Json pod = {{"metadata", {{"name", "p"}, {"namespace", "ns"}, {"uid", "uid-1"}}}};
  Json probe = grpc_probe(server.port(), "svc");
  probe["periodSeconds"] = 1;
  probe["failureThreshold"] = 1;
  Json c = {{"name", "c"}, {"readinessProbe", probe}};
  prober.ensure(pod, c, container_id, "127.0.0.1");
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mu);
    return !messages.empty();
  }));
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(messages.front(), "service unhealthy (responded with \"NOT_SERVING\")");
  }
  EXPECT_FALSE(prober.ready("uid-1", "c"));
  server.set("svc", true);
  ASSERT_TRUE(eventually([&] { return prober.ready("uid-1", "c"); }, milliseconds(5000)));
  server.set("svc", false);
  ASSERT_TRUE(eventually([&] { return !prober.ready("uid-1", "c"); }, milliseconds(5000)));
}

}  // namespace
}  // namespace skiff::kubelet
