// The kubelet server's /exec, /attach and /portforward (and /run): an authenticated client's
// upgrade request is decoded into a StreamRequest, PodLookup::stream_url names the runtime's
// streaming server, and the connection is relayed there. The client here speaks HTTP over a raw TLS
// socket (OpenSSL) and the "runtime" is a raw plain socket in the test, so the bytes on both sides
// are visible.

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/pki.h"
#include "kubelet/server/kubelet_server.h"
#include "kubelet/streaming/spdy.h"
#include "kubelet/streaming/websocket.h"
#include "support/ports.h"
#include "support/raw_http.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::server {
namespace {

using namespace std::chrono_literals;

using skiff::testing::Answer;
using skiff::testing::contains;
using skiff::testing::EchoUpstream;
using skiff::testing::EchoUpstreamOptions;
using skiff::testing::header_of;
using skiff::testing::read_answer;
using skiff::testing::TlsWire;
using skiff::testing::upper;
using skiff::testing::Wire;
using skiff::testing::write_file;

// ---- The runtime's streaming server ------------------------------------------------------------

// A plain HTTP listener on 127.0.0.1 that serves one connection at a time: it keeps the request
// head, answers 101 followed by "ready\n", then echoes what it gets upper-cased until a '!'
// (then it closes). A request for /refuse is answered 400 instead, as a runtime that does not
// speak the requested protocol does.
EchoUpstreamOptions runtime_options() {
  EchoUpstreamOptions o;
  o.switching =
      "HTTP/1.1 101 Switching Protocols\r\n"
      "Connection: Upgrade\r\n"
      "Upgrade: SPDY/3.1\r\n"
      "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
      "X-From-Runtime: yes\r\n"
      "\r\n";
  o.refusal = [](const std::string& head) -> std::string {
    if (head.find(" /refuse") == std::string::npos) return "";
    const std::string body = "websocket: the client is not using the websocket protocol";
    return "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  };
  return o;
}

// ---- The fixture -------------------------------------------------------------------------------

class KubeletStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = pki::CertificateAuthority::create("test-ca");
    ASSERT_TRUE(ca.is_ok()) << ca.status().to_string();
    write_file(dir_.sub("pki/ca.crt"), ca->cert_pem());
    write_file(dir_.sub("pki/ca.key"), ca->key_pem());
    auto client = ca->issue_client_cert("kube-apiserver-kubelet-client", {"system:masters"});
    ASSERT_TRUE(client.is_ok()) << client.status().to_string();
    write_file(dir_.sub("pki/client.crt"), client->cert_pem);
    write_file(dir_.sub("pki/client.key"), client->key_pem);

    options_.node_name = "node-1";
    options_.address = "127.0.0.1";
    options_.port = 0;
    options_.read_only_port.reset();
    options_.healthz_port.reset();
    options_.cert_dir = dir_.sub("kubelet-pki");
    options_.client_ca_file = dir_.sub("pki/ca.crt");
    options_.ca_key_file = dir_.sub("pki/ca.key");
  }

  void TearDown() override {
    if (server_) server_->stop();
  }

  // The runtime's answer for each pod name.
  Result<std::string> stream_url(const StreamRequest& r) {
    {
      std::lock_guard lock(mu_);
      requests_.push_back(r);
    }
    const std::string runtime = "http://127.0.0.1:" + std::to_string(runtime_.port());
    if (r.pod == "missing") {
      return Status(StatusCode::kNotFound, pod_not_found_message(r.pod));
    }
    if (r.pod == "pending") {
      return Status(StatusCode::kFailedPrecondition,
                    "container \"" + r.container + "\" in pod \"" + r.pod +
                        "\" is waiting to start: ContainerCreating");
    }
    if (r.pod == "tls") return std::string("https://127.0.0.1:1/exec/token");
    if (r.pod == "portless") return std::string("http://host-without-port/exec/token");
    if (r.pod == "badport") return std::string("http://127.0.0.1:99999/exec/token");
    if (r.pod == "gone") {
      return "http://127.0.0.1:" + std::to_string(skiff::testing::free_tcp_port()) + "/exec/x";
    }
    if (r.pod == "refusing") return runtime + "/refuse";
    if (r.pod == "spdy") {
      return "http://127.0.0.1:" + std::to_string(spdy_runtime_.port()) + "/" + r.kind + "/token";
    }
    if (r.kind == "portforward") return runtime + "/portforward/token?session=7";
    return runtime + "/" + r.kind + "/token";
  }

  void start(bool with_stream_url = true) {
    PodLookup lookup;
    lookup.pod_list = [] {
      return std::string(R"({"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]})");
    };
    lookup.container_log = [](const std::string&, const std::string& pod,
                              const std::string&) -> Result<ContainerLogTarget> {
      return Status(StatusCode::kNotFound, pod_not_found_message(pod));
    };
    if (with_stream_url) {
      lookup.stream_url = [this](const StreamRequest& r) { return stream_url(r); };
      lookup.run = [this](const RunRequest& r) -> Result<std::string> {
        {
          std::lock_guard lock(mu_);
          runs_.push_back(r);
        }
        if (r.pod == "missing") return Status(StatusCode::kNotFound, pod_not_found_message(r.pod));
        if (r.pod == "failing") {
          return Status(StatusCode::kInternal, "command 'false' exited with 1: ");
        }
        std::string out;
        for (const std::string& arg : r.command) out += "[" + arg + "]";
        return out;
      };
    }
    auto s = KubeletServer::create(options_, std::move(lookup));
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
  }

  // A TLS connection to the kubelet's secure port, with the client certificate or without.
  std::unique_ptr<TlsWire> dial(bool with_cert = true) {
    if (!ssl_ctx_) ssl_ctx_ = skiff::testing::client_tls_context(dir_.sub("pki/ca.crt"));
    EXPECT_TRUE(ssl_ctx_);
    if (!ssl_ctx_) return nullptr;
    if (!with_cert) return skiff::testing::dial_tls(server_->port(), ssl_ctx_.get());
    return skiff::testing::dial_tls(server_->port(), ssl_ctx_.get(), dir_.sub("pki/client.crt"),
                                    dir_.sub("pki/client.key"));
  }

  // Sends a request head (no body) on a new connection and reads the answer.
  Answer request(const std::string& method, const std::string& target,
                 const std::string& extra_headers = "", bool with_cert = true) {
    auto wire = dial(with_cert);
    EXPECT_TRUE(wire);
    if (!wire) return {};
    EXPECT_TRUE(
        wire->write(method + " " + target +
                    " HTTP/1.1\r\nHost: node-1\r\nConnection: Upgrade\r\n"
                    "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n" +
                    extra_headers + "\r\n"));
    return read_answer(*wire);
  }

  std::vector<StreamRequest> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

  skiff::testing::TempDir dir_;
  KubeletServerOptions options_;
  EchoUpstream runtime_{runtime_options()};
  // A runtime the test plays itself, byte by byte (pod "spdy").
  skiff::testing::Listener spdy_runtime_;
  std::unique_ptr<KubeletServer> server_;
  skiff::testing::SslCtx ssl_ctx_;
  std::mutex mu_;
  std::vector<StreamRequest> requests_;  // guarded by mu_
  std::vector<RunRequest> runs_;         // guarded by mu_
};

// After a 101: "ready\n" from the runtime, then an upper-cased echo until '!'.
void expect_echo(Wire& wire) {
  EXPECT_EQ(wire.read_exactly(6), "ready\n");
  ASSERT_TRUE(wire.write("echo hi\n"));
  EXPECT_EQ(wire.read_exactly(8), "ECHO HI\n");
  // One side at a time (an SSL object is not shared between threads): a size the socket
  // buffers hold.
  std::string big(48 * 1024, 'q');
  ASSERT_TRUE(wire.write(big));
  EXPECT_TRUE(wire.read_exactly(big.size()) == upper(big));
  ASSERT_TRUE(wire.write("bye!"));
  EXPECT_EQ(wire.read_exactly(4), "BYE!");
  // The runtime closed: so does the relay.
  EXPECT_TRUE(wire.ended());
}

TEST_F(KubeletStreamTest, ExecIsDecodedAndRelayedToTheRuntime) {
  start();
  auto wire = dial();
  ASSERT_TRUE(wire);
  ASSERT_TRUE(wire->write(
      "POST /exec/ns/pod/c?command=sh&command=-c&command=echo%20hi&input=1&output=1&tty=1 "
      "HTTP/1.1\r\n"
      "Host: node-1:10250\r\n"
      "Authorization: Bearer not-for-the-runtime\r\n"
      "User-Agent: kube-apiserver\r\n"
      "Connection: Upgrade\r\n"
      "Upgrade: SPDY/3.1\r\n"
      "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
      "X-Stream-Protocol-Version: v3.channel.k8s.io\r\n"
      "\r\n"));
  Answer a = read_answer(*wire);
  EXPECT_EQ(a.status, 101) << a.head;
  EXPECT_TRUE(a.head.starts_with("HTTP/1.1 101 Switching Protocols\r\n")) << a.head;
  EXPECT_EQ(header_of(a.head, "X-From-Runtime"), "yes") << a.head;
  EXPECT_EQ(header_of(a.head, "X-Stream-Protocol-Version"), "v4.channel.k8s.io") << a.head;
  expect_echo(*wire);

  // What the runtime was asked: its own URL, the upgrade headers, none of the client's
  // credentials or other headers.
  std::vector<std::string> heads = runtime_.heads();
  ASSERT_EQ(heads.size(), 1u);
  const std::string& up = heads[0];
  EXPECT_TRUE(up.starts_with("POST /exec/token HTTP/1.1\r\n")) << up;
  EXPECT_EQ(header_of(up, "Host"), "127.0.0.1:" + std::to_string(runtime_.port())) << up;
  EXPECT_TRUE(contains(up,
                       "\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                       "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
                       "X-Stream-Protocol-Version: v3.channel.k8s.io\r\n"))
      << up;
  EXPECT_EQ(header_of(up, "Authorization"), "") << up;
  EXPECT_FALSE(contains(up, "not-for-the-runtime")) << up;
  EXPECT_EQ(header_of(up, "User-Agent"), "") << up;

  std::vector<StreamRequest> seen = requests();
  ASSERT_EQ(seen.size(), 1u);
  const StreamRequest& r = seen[0];
  EXPECT_EQ(r.kind, "exec");
  EXPECT_EQ(r.ns, "ns");
  EXPECT_EQ(r.pod, "pod");
  EXPECT_EQ(r.container, "c");
  EXPECT_EQ(r.command, (std::vector<std::string>{"sh", "-c", "echo hi"}));
  EXPECT_TRUE(r.in);
  EXPECT_TRUE(r.out);
  EXPECT_FALSE(r.err);
  EXPECT_TRUE(r.tty);
}

TEST_F(KubeletStreamTest, AttachWithPodExecOptionsNamesAndABearerToken) {
  // Relayed as it came, v5.channel.k8s.io included (translation is tested below).
  options_.translate_streams = false;
  options_.token_authenticator = [](std::string_view token) -> std::optional<http::UserInfo> {
    if (token != "secret") return std::nullopt;
    return http::UserInfo{"apiserver", "", {}};
  };
  start();
  auto wire = dial(/*with_cert=*/false);
  ASSERT_TRUE(wire);
  ASSERT_TRUE(
      wire->write("GET /attach/kube-system/web-0/main?stdin=true&stdout=1&stderr=True HTTP/1.1\r\n"
                  "Host: node-1\r\n"
                  "Authorization: Bearer secret\r\n"
                  "Connection: Upgrade\r\n"
                  "Upgrade: websocket\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
                  "Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n"
                  "\r\n"));
  Answer a = read_answer(*wire);
  EXPECT_EQ(a.status, 101) << a.head;
  expect_echo(*wire);

  std::string up = runtime_.wait_for_head(1);
  EXPECT_TRUE(up.starts_with("GET /attach/token HTTP/1.1\r\n")) << up;
  EXPECT_TRUE(contains(up,
                       "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n"
                       "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
                       "Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n"))
      << up;
  EXPECT_EQ(header_of(up, "Authorization"), "") << up;
  EXPECT_FALSE(contains(up, "secret")) << up;

  std::vector<StreamRequest> seen = requests();
  ASSERT_EQ(seen.size(), 1u);
  const StreamRequest& r = seen[0];
  EXPECT_EQ(r.kind, "attach");
  EXPECT_EQ(r.ns, "kube-system");
  EXPECT_EQ(r.pod, "web-0");
  EXPECT_EQ(r.container, "main");
  EXPECT_TRUE(r.command.empty());
  EXPECT_TRUE(r.in);
  EXPECT_TRUE(r.out);
  EXPECT_TRUE(r.err);
  EXPECT_FALSE(r.tty);
}

TEST_F(KubeletStreamTest, PortForwardHasNoContainerAndKeepsTheRuntimesQuery) {
  start();
  auto wire = dial();
  ASSERT_TRUE(wire);
  ASSERT_TRUE(
      wire->write("POST /portforward/default/db?port=5432&port=80 HTTP/1.1\r\n"
                  "Host: node-1\r\n"
                  "Connection: Upgrade\r\n"
                  "Upgrade: SPDY/3.1\r\n"
                  "X-Stream-Protocol-Version: portforward.k8s.io\r\n"
                  "\r\n"));
  Answer a = read_answer(*wire);
  EXPECT_EQ(a.status, 101) << a.head;
  expect_echo(*wire);

  std::string up = runtime_.wait_for_head(1);
  EXPECT_TRUE(up.starts_with("POST /portforward/token?session=7 HTTP/1.1\r\n")) << up;
  EXPECT_EQ(header_of(up, "X-Stream-Protocol-Version"), "portforward.k8s.io") << up;

  std::vector<StreamRequest> seen = requests();
  ASSERT_EQ(seen.size(), 1u);
  const StreamRequest& r = seen[0];
  EXPECT_EQ(r.kind, "portforward");
  EXPECT_EQ(r.ns, "default");
  EXPECT_EQ(r.pod, "db");
  EXPECT_EQ(r.container, "");
  EXPECT_TRUE(r.command.empty());
  EXPECT_EQ(r.ports, (std::vector<int32_t>{5432, 80}));
  EXPECT_FALSE(r.in || r.out || r.err || r.tty);

  // A port that is not one is refused before the runtime is asked.
  for (const char* target : {"/portforward/default/db?port=0", "/portforward/default/db?port=x",
                             "/portforward/default/db?port=70000"}) {
    a = request("POST", target);
    EXPECT_EQ(a.status, 400) << target << "\n" << a.head;
  }
  EXPECT_EQ(requests().size(), 1u);
}

TEST_F(KubeletStreamTest, LookupErrorsAndUnusableUrlsAreAnswered) {
  start();
  Answer a = request("POST", "/exec/ns/missing/c?command=ls&output=1");
  EXPECT_EQ(a.status, 404) << a.head;
  EXPECT_EQ(a.body, "pod \"missing\" does not exist");

  a = request("POST", "/attach/ns/pending/c?output=1");
  EXPECT_EQ(a.status, 400) << a.head;
  EXPECT_EQ(a.body, "container \"c\" in pod \"pending\" is waiting to start: ContainerCreating");

  for (const char* pod : {"tls", "portless", "badport"}) {
    a = request("GET", std::string("/exec/ns/") + pod + "/c?command=ls&output=1");
    EXPECT_EQ(a.status, 500) << pod << "\n" << a.head;
    EXPECT_TRUE(contains(a.body, "the runtime answered a streaming URL skiff cannot use: "))
        << a.body;
  }
  EXPECT_TRUE(contains(request("GET", "/exec/ns/tls/c?command=ls&output=1").body,
                       "https://127.0.0.1:1/exec/token"));
  EXPECT_TRUE(contains(request("GET", "/exec/ns/portless/c?command=ls&output=1").body,
                       "http://host-without-port/exec/token"));

  // None of them reached the runtime.
  EXPECT_TRUE(runtime_.heads().empty());
  EXPECT_EQ(requests().size(), 7u);
}

TEST_F(KubeletStreamTest, TheRuntimesRefusalAndAbsenceReachTheClient) {
  start();
  // A runtime that does not switch: its answer is passed on as it is.
  Answer a = request("POST", "/exec/ns/refusing/c?command=ls&output=1");
  EXPECT_EQ(a.status, 400) << a.head;
  EXPECT_EQ(header_of(a.head, "Content-Type"), "text/plain") << a.head;
  EXPECT_EQ(a.body, "websocket: the client is not using the websocket protocol");
  EXPECT_TRUE(runtime_.wait_for_head(1).starts_with("POST /refuse HTTP/1.1\r\n"));

  // A runtime that is not there: 502.
  a = request("POST", "/exec/ns/gone/c?command=ls&output=1");
  EXPECT_EQ(a.status, 502) << a.head;
  EXPECT_TRUE(contains(a.body, "error dialing backend: dial tcp 127.0.0.1:")) << a.body;
}

TEST_F(KubeletStreamTest, OnlyGetAndPostAndOnlyWellFormedPaths) {
  start();
  for (const char* method : {"DELETE", "PUT", "PATCH"}) {
    Answer a = request(method, "/exec/ns/pod/c?command=ls&output=1");
    EXPECT_EQ(a.status, 405) << method << "\n" << a.head;
    EXPECT_EQ(a.body, "405: Method Not Allowed");
  }
  for (const char* target : {"/exec/ns/pod", "/exec/ns//c", "/exec//pod/c", "/exec/ns/pod/c/",
                             "/exec/ns/pod/c/extra", "/attach/ns/pod", "/portforward/ns",
                             "/portforward/ns/pod/c", "/portforward//pod", "/exec"}) {
    Answer a = request("POST", target);
    EXPECT_EQ(a.status, 404) << target << "\n" << a.head;
  }
  EXPECT_TRUE(requests().empty());
  EXPECT_TRUE(runtime_.heads().empty());
}

TEST_F(KubeletStreamTest, ClientsMustAuthenticate) {
  start();
  Answer a = request("POST", "/exec/ns/pod/c?command=ls&output=1", "", /*with_cert=*/false);
  EXPECT_EQ(a.status, 401) << a.head;
  EXPECT_EQ(a.body, "Unauthorized");
  // A token without a token authenticator is no better.
  a = request("POST", "/portforward/ns/pod", "Authorization: Bearer secret\r\n", false);
  EXPECT_EQ(a.status, 401) << a.head;
  EXPECT_TRUE(requests().empty());
  EXPECT_TRUE(runtime_.heads().empty());
}

TEST_F(KubeletStreamTest, WithoutAStreamUrlThePathsDoNotExist) {
  start(/*with_stream_url=*/false);
  for (const char* target :
       {"/exec/ns/pod/c?command=ls&output=1", "/attach/ns/pod/c?output=1", "/portforward/ns/pod"}) {
    Answer a = request("POST", target);
    EXPECT_EQ(a.status, 404) << target << "\n" << a.head;
  }
  EXPECT_TRUE(runtime_.heads().empty());
}

TEST_F(KubeletStreamTest, RunAnswersTheCommandsOutput) {
  start();
  Answer a = request("POST", "/run/ns/pod/c?cmd=echo%20a%20b");
  EXPECT_EQ(a.status, 200) << a.head;
  EXPECT_EQ(header_of(a.head, "Content-Type"), "application/json") << a.head;
  EXPECT_EQ(a.body, "[echo][a][b]");
  // Split at every space, as upstream: two spaces make an empty argument.
  a = request("POST", "/run/ns/pod/uid-1/c?cmd=ls%20%20-l");
  EXPECT_EQ(a.status, 200) << a.head;
  EXPECT_EQ(a.body, "[ls][][-l]");
  {
    std::lock_guard lock(mu_);
    ASSERT_EQ(runs_.size(), 2u);
    EXPECT_EQ(runs_[0].ns, "ns");
    EXPECT_EQ(runs_[0].pod, "pod");
    EXPECT_EQ(runs_[0].uid, "");
    EXPECT_EQ(runs_[0].container, "c");
    EXPECT_EQ(runs_[1].uid, "uid-1");
    EXPECT_EQ(runs_[1].container, "c");
  }
  EXPECT_TRUE(requests().empty());  // nothing was streamed
  EXPECT_TRUE(runtime_.heads().empty());
}

TEST_F(KubeletStreamTest, RunErrorsMethodsAndPaths) {
  start();
  Answer a = request("POST", "/run/ns/missing/c?cmd=ls");
  EXPECT_EQ(a.status, 404) << a.head;
  EXPECT_EQ(a.body, "pod \"missing\" does not exist");
  a = request("POST", "/run/ns/failing/c?cmd=false");
  EXPECT_EQ(a.status, 500) << a.head;
  EXPECT_EQ(a.body, "command 'false' exited with 1: ");
  for (const char* method : {"GET", "PUT", "DELETE"}) {
    a = request(method, "/run/ns/pod/c?cmd=ls");
    EXPECT_EQ(a.status, 405) << method << "\n" << a.head;
  }
  for (const char* target : {"/run/ns/pod", "/run/ns//c", "/run/ns/pod/u/c/x", "/run"}) {
    a = request("POST", target);
    EXPECT_EQ(a.status, 404) << target << "\n" << a.head;
  }
  a = request("POST", "/run/ns/pod/c?cmd=ls", "", /*with_cert=*/false);
  EXPECT_EQ(a.status, 401) << a.head;
  std::lock_guard lock(mu_);
  EXPECT_EQ(runs_.size(), 2u);  // the two first requests only
}

// ---- Translated sessions -----------------------------------------------------------------------

namespace spdy = streaming::spdy;
namespace ws = streaming::ws;

constexpr std::array<uint8_t, 4> kMask = {1, 2, 3, 4};

// The next SPDY frame the test's runtime gets; nullopt when the connection ended first.
std::optional<spdy::Frame> read_frame(Wire& wire, spdy::FrameReader& reader) {
  while (true) {
    Result<std::optional<spdy::Frame>> f = reader.next();
    if (!f.is_ok() || f->has_value()) return f.is_ok() ? std::move(*f) : std::nullopt;
    std::string more = wire.read_some();
    if (more.empty()) return std::nullopt;
    reader.feed(more);
  }
}

// The next WebSocket message the client gets.
std::optional<ws::Message> read_message(Wire& wire, ws::MessageReader& reader) {
  while (true) {
    if (std::optional<ws::Message> m = reader.next()) return m;
    if (!reader.error().is_ok()) return std::nullopt;
    std::string more = wire.read_some();
    if (more.empty()) return std::nullopt;
    reader.feed(more);
  }
}

std::string websocket_request(const std::string& target, const std::string& protocol) {
  return "GET " + target +
         " HTTP/1.1\r\nHost: node-1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
         "Sec-WebSocket-Protocol: " +
         protocol + "\r\n\r\n";
}

TEST_F(KubeletStreamTest, WebSocketV5ExecIsTranslatedToSpdy) {
  start();
  auto wire = dial();
  ASSERT_TRUE(wire);
  ASSERT_TRUE(wire->write(
      websocket_request("/exec/ns/spdy/c?command=sh&command=-c&command=echo%20hi&output=1&error=1",
                        "v5.channel.k8s.io")));

  // The runtime is asked for SPDY/3.1 with v4.channel.k8s.io, at its own URL, with no
  // WebSocket header of the client's.
  std::unique_ptr<skiff::testing::PlainWire> runtime = spdy_runtime_.accept_plain();
  ASSERT_TRUE(runtime);
  std::string up = runtime->read_until("\r\n\r\n");
  EXPECT_TRUE(up.starts_with("POST /exec/token HTTP/1.1\r\n")) << up;
  EXPECT_EQ(header_of(up, "Upgrade"), "SPDY/3.1") << up;
  EXPECT_EQ(header_of(up, "X-Stream-Protocol-Version"), "v4.channel.k8s.io") << up;
  EXPECT_EQ(header_of(up, "Sec-WebSocket-Key"), "") << up;
  ASSERT_TRUE(runtime->write(
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
      "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"));

  // Then the client gets its 101, for v5.
  Answer a = read_answer(*wire);
  ASSERT_EQ(a.status, 101) << a.head << a.body;
  EXPECT_EQ(header_of(a.head, "Sec-WebSocket-Protocol"), "v5.channel.k8s.io") << a.head;
  EXPECT_EQ(header_of(a.head, "Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") << a.head;

  // The runtime sees the streams of the request: error, stdout, stderr.
  spdy::FrameReader frames;
  spdy::FrameWriter writer;
  std::vector<std::string> types;
  for (int i = 0; i < 3; ++i) {
    std::optional<spdy::Frame> f = read_frame(*runtime, frames);
    ASSERT_TRUE(f);
    const auto& syn = std::get<spdy::SynStreamFrame>(*f);
    types.push_back(spdy::header_value(syn.headers, "streamtype").value_or(""));
    runtime->write(*writer.encode(spdy::SynReplyFrame{syn.stream_id, 0, {}}));
  }
  EXPECT_EQ(types, (std::vector<std::string>{"error", "stdout", "stderr"}));
  const std::string success = R"({"metadata":{},"status":"Success"})";
  runtime->write(*writer.encode(spdy::DataFrame{3, 0, "hi\n"}));
  runtime->write(*writer.encode(spdy::DataFrame{1, spdy::kFlagFin, success}));
  runtime->write(*writer.encode(spdy::DataFrame{3, spdy::kFlagFin, ""}));
  runtime->write(*writer.encode(spdy::DataFrame{5, spdy::kFlagFin, ""}));

  ws::MessageReader messages(1 << 20, /*require_mask=*/false);
  std::optional<ws::Message> m = read_message(*wire, messages);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->payload, "\x01hi\n");
  m = read_message(*wire, messages);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->payload, "\x03" + success);
  m = read_message(*wire, messages);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->opcode, ws::Opcode::kClose);
  EXPECT_EQ(ws::parse_close(m->payload)->code, ws::kCloseNormal);
  wire->write(ws::encode_close(ws::kCloseNormal, "", kMask));
  EXPECT_TRUE(runtime->ended());
}

TEST_F(KubeletStreamTest, ThePortForwardTunnelIsUnwrapped) {
  start();
  auto wire = dial();
  ASSERT_TRUE(wire);
  ASSERT_TRUE(
      wire->write(websocket_request("/portforward/default/spdy", "SPDY/3.1+portforward.k8s.io")));
  std::unique_ptr<skiff::testing::PlainWire> runtime = spdy_runtime_.accept_plain();
  ASSERT_TRUE(runtime);
  std::string up = runtime->read_until("\r\n\r\n");
  EXPECT_TRUE(up.starts_with("POST /portforward/token HTTP/1.1\r\n")) << up;
  EXPECT_EQ(header_of(up, "X-Stream-Protocol-Version"), "portforward.k8s.io") << up;
  ASSERT_TRUE(runtime->write(
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
      "X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"));
  Answer a = read_answer(*wire);
  ASSERT_EQ(a.status, 101) << a.head << a.body;
  EXPECT_EQ(header_of(a.head, "Sec-WebSocket-Protocol"), "SPDY/3.1+portforward.k8s.io");

  // The client's SPDY bytes reach the runtime unwrapped; the runtime's come back wrapped.
  ASSERT_TRUE(wire->write(
      ws::encode_frame(ws::Opcode::kBinary, std::string("\x80\x03\x00\x01", 4), true, kMask)));
  EXPECT_EQ(runtime->read_exactly(4), std::string("\x80\x03\x00\x01", 4));
  ASSERT_TRUE(runtime->write(std::string("\x80\x03\x00\x02", 4)));
  ws::MessageReader messages(1 << 20, /*require_mask=*/false);
  std::optional<ws::Message> m = read_message(*wire, messages);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->opcode, ws::Opcode::kBinary);
  EXPECT_EQ(m->payload, std::string("\x80\x03\x00\x02", 4));
  // The runtime ends: a normal close.
  runtime.reset();
  m = read_message(*wire, messages);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->opcode, ws::Opcode::kClose);
}

TEST_F(KubeletStreamTest, ATranslatedSessionsRefusalReachesTheClient) {
  start();
  auto wire = dial();
  ASSERT_TRUE(wire);
  ASSERT_TRUE(wire->write(
      websocket_request("/exec/ns/refusing/c?command=ls&output=1", "v5.channel.k8s.io")));
  // No 101: the runtime's own answer, so that kubectl falls back to SPDY.
  Answer a = read_answer(*wire);
  EXPECT_EQ(a.status, 400) << a.head;
  EXPECT_EQ(a.body, "websocket: the client is not using the websocket protocol");
  std::string up = runtime_.wait_for_head(1);
  EXPECT_TRUE(up.starts_with("POST /refuse HTTP/1.1\r\n")) << up;
  EXPECT_EQ(header_of(up, "Upgrade"), "SPDY/3.1") << up;
}

TEST_F(KubeletStreamTest, WhatTheRuntimeSpeaksIsNotTranslated) {
  start();
  // WebSocket v4 (the Python client) and a WebSocket port-forward by ports: as they came.
  for (const char* target : {"/exec/ns/pod/c?command=ls&output=1", "/portforward/ns/pod?port=80"}) {
    auto wire = dial();
    ASSERT_TRUE(wire);
    ASSERT_TRUE(wire->write(websocket_request(target, "v4.channel.k8s.io")));
    Answer a = read_answer(*wire);
    EXPECT_EQ(a.status, 101) << a.head;
    EXPECT_EQ(header_of(a.head, "X-From-Runtime"), "yes") << a.head;
    expect_echo(*wire);
  }
  std::vector<std::string> heads = runtime_.heads();
  ASSERT_EQ(heads.size(), 2u);
  for (const std::string& up : heads) {
    EXPECT_TRUE(up.starts_with("GET /")) << up;
    EXPECT_EQ(header_of(up, "Sec-WebSocket-Protocol"), "v4.channel.k8s.io") << up;
  }
}

}  // namespace
}  // namespace skiff::kubelet::server
