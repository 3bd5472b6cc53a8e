// pods/exec, pods/attach and pods/portforward through a real API server to a fake kubelet: a raw
// TLS listener in the test that requires the API server's kubelet client certificate, keeps each
// request head, answers 101 and echoes. The client speaks HTTP over a raw TLS socket (OpenSSL) so
// the upgrade and the bytes after it are visible on both sides.

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apiserver/apiserver.h"
#include "base/kubeconfig.h"
#include "base/log.h"
#include "base/pki.h"
#include "client/http_client.h"
#include "httpserver/http.h"
#include "support/ports.h"
#include "support/raw_http.h"
#include "support/temp_dir.h"

namespace skiff::apiserver {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

using skiff::testing::contains;
using skiff::testing::EchoUpstream;
using skiff::testing::header_of;
using skiff::testing::target_of;
using skiff::testing::TlsWire;
using skiff::testing::upper;
using skiff::testing::write_file;
// What the fake kubelet saw of one connection.
using KubeletSaw = skiff::testing::UpstreamSaw;

// One HTTP answer as a client reads it; `status_object` is the body as JSON when it is.
struct Answer : skiff::testing::Answer {
  json status_object;
};

// The message of a Status answer; "" when the body is not a JSON object.
std::string message_of(const Answer& a) {
  return a.status_object.is_object() ? a.status_object.value("message", "") : "";
}

// Reads an answer's head and, unless it is 101, its body and that as JSON.
Answer read_answer(TlsWire& wire) {
  Answer a;
  static_cast<skiff::testing::Answer&>(a) = skiff::testing::read_answer(wire);
  if (a.status != 0 && a.status != 101) a.status_object = json::parse(a.body, nullptr, false);
  return a;
}

// ---- The fake kubelet --------------------------------------------------------------------------

// A TLS listener on 127.0.0.1 serving one connection at a time with `cert_file`, requiring a
// client certificate issued by `client_ca_file`. It keeps each request head, then answers 101
// followed by "ready\n" and echoes what it gets upper-cased until a '!' (then it closes).
// Requests for container "d" of pod "p" are answered 400 instead, as a kubelet whose runtime
// does not speak the requested protocol does.
EchoUpstream* new_fake_kubelet(const std::string& cert_file, const std::string& key_file,
                               const std::string& client_ca_file) {
  skiff::testing::EchoUpstreamOptions o;
  o.tls = skiff::testing::server_tls_context(cert_file, key_file, client_ca_file);
  SKIFF_CHECK(o.tls != nullptr, "fake kubelet TLS context");
  o.switching =
      "HTTP/1.1 101 Switching Protocols\r\n"
      "Upgrade: websocket\r\n"
      "Connection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
      "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
      "\r\n";
  o.refusal = [](const std::string& head) -> std::string {
    if (!target_of(head).starts_with("/exec/default/p/d?")) return "";
    const std::string body = "websocket: the client is not using the websocket protocol";
    return "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  };
  return new EchoUpstream(std::move(o));
}

// ---- The fixture -------------------------------------------------------------------------------

// The upgrade headers a WebSocket client (kubectl 1.30+) sends.
const char kWebSocketHeaders[] =
    "Connection: Upgrade\r\n"
    "Upgrade: websocket\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
    "Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n";

// The upgrade headers of SPDY/3.1 (older kubectl, and port-forward).
const char kSpdyHeaders[] =
    "Connection: Upgrade\r\n"
    "Upgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: portforward.k8s.io\r\n";

class PodStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new skiff::testing::TempDir("skiff-pod-stream");
    pki::PkiOptions pki_options;
    pki_options.include_interface_addresses = false;
    auto state = pki::ensure_pki(dir_->sub("tls"), pki_options);
    SKIFF_CHECK(state.is_ok(), state.status().to_string());
    ca_file_ = state->paths.ca_cert;
    // The client's TLS: the admin certificate, and the API server's verified against the CA.
    client_ctx_ = skiff::testing::client_tls_context(ca_file_, state->paths.admin_cert,
                                                     state->paths.admin_key)
                      .release();
    SKIFF_CHECK(client_ctx_ != nullptr, "client TLS context");

    // The kubelet's serving certificate comes from the cluster CA, so the API server can verify
    // it; the impostor's from another CA.
    auto serving = state->ca.issue_serving_cert("node-1", {"127.0.0.1"});
    SKIFF_CHECK(serving.is_ok(), serving.status().to_string());
    write_file(dir_->sub("kubelet.crt"), serving->cert_pem);
    write_file(dir_->sub("kubelet.key"), serving->key_pem);
    kubelet_ = new_fake_kubelet(dir_->sub("kubelet.crt"), dir_->sub("kubelet.key"), ca_file_);
    auto other = pki::CertificateAuthority::create("other-ca");
    SKIFF_CHECK(other.is_ok(), other.status().to_string());
    auto forged = other->issue_serving_cert("node-1", {"127.0.0.1"});
    SKIFF_CHECK(forged.is_ok(), forged.status().to_string());
    write_file(dir_->sub("impostor.crt"), forged->cert_pem);
    write_file(dir_->sub("impostor.key"), forged->key_pem);
    impostor_ = new_fake_kubelet(dir_->sub("impostor.crt"), dir_->sub("impostor.key"), ca_file_);

    ApiServerOptions o;
    o.data_dir = dir_->path();
    o.bind_address = "127.0.0.1";
    o.https_port = 0;
    o.store.backend = "memory";
    o.worker_threads = 8;
    o.kubelet_certificate_authority = ca_file_;
    auto server = ApiServer::start(o);
    SKIFF_CHECK(server.is_ok(), server.status().to_string());
    server_ = server->release();

    auto kc = load_kubeconfig(server_->admin_kubeconfig());
    SKIFF_CHECK(kc.is_ok(), kc.status().to_string());
    auto api = client::HttpApiClient::create(*kc);
    SKIFF_CHECK(api.is_ok(), api.status().to_string());
    using client::resources::kNodes;
    using client::resources::kPods;
    auto node = [](const std::string& name, json addresses, int port) {
      return json{{"apiVersion", "v1"},
                  {"kind", "Node"},
                  {"metadata", {{"name", name}}},
                  {"status",
                   {{"addresses", addresses},
                    {"daemonEndpoints", {{"kubeletEndpoint", {{"Port", port}}}}}}}};
    };
    json local = json::array({{{"type", "Hostname"}, {"address", "node-1.invalid"}},
                              {{"type", "InternalIP"}, {"address", "127.0.0.1"}}});
    dead_port_ = skiff::testing::free_tcp_port();
    for (const json& n :
         {node("node-1", local, kubelet_->port()), node("nowhere", json::array(), 10250),
          node("dead", local, dead_port_), node("impostor", local, impostor_->port())}) {
      auto created = (*api)->create(kNodes, "", n);
      SKIFF_CHECK(created.is_ok(), created.status().to_string());
    }

    auto pod = [](const std::string& name, const std::string& node_name,
                  std::vector<std::string> containers) {
      json spec{{"containers", json::array()}};
      for (const std::string& c : containers) {
        spec["containers"].push_back({{"name", c}, {"image", "busybox"}});
      }
      if (!node_name.empty()) spec["nodeName"] = node_name;
      return json{{"apiVersion", "v1"},
                  {"kind", "Pod"},
                  {"metadata", {{"name", name}, {"namespace", "default"}}},
                  {"spec", spec}};
    };
    for (const json& p : {pod("p", "node-1", {"c", "d"}), pod("solo", "node-1", {"only"}),
                          pod("pending", "", {"app"}), pod("lost", "ghost", {"app"}),
                          pod("stranded", "nowhere", {"app"}), pod("orphan", "dead", {"app"}),
                          pod("fake", "impostor", {"app"})}) {
      auto created = (*api)->create(kPods, "default", p);
      SKIFF_CHECK(created.is_ok(), created.status().to_string());
    }
    for (auto [name, phase] : {std::pair<std::string, std::string>{"succeeded", "Succeeded"},
                               std::pair<std::string, std::string>{"failed", "Failed"}}) {
      auto created = (*api)->create(kPods, "default", pod(name, "node-1", {"app"}));
      SKIFF_CHECK(created.is_ok(), created.status().to_string());
      json finished = *created;
      finished["status"]["phase"] = phase;
      auto updated = (*api)->update(kPods, "default", finished, {}, "status");
      SKIFF_CHECK(updated.is_ok(), updated.status().to_string());
      SKIFF_CHECK((*updated)["status"].value("phase", "") == phase, updated->dump());
    }
  }

  static void TearDownTestSuite() {
    server_->stop();
    delete server_;
    delete impostor_;
    delete kubelet_;
    SSL_CTX_free(client_ctx_);
    delete dir_;
  }

  // A TLS connection to the API server with the admin certificate.
  static std::unique_ptr<TlsWire> dial() {
    return skiff::testing::dial_tls(server_->port(), client_ctx_);
  }

  // Sends `method target` with `headers` on `wire` and reads the answer's head (and body, unless
  // it is 101).
  static Answer send(TlsWire& wire, const std::string& method, const std::string& target,
                     const std::string& headers) {
    EXPECT_TRUE(
        wire.write(method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + "\r\n"));
    return read_answer(wire);
  }
  // The same on a connection of its own.
  static Answer request(const std::string& method, const std::string& target,
                        const std::string& headers = kWebSocketHeaders) {
    auto wire = dial();
    EXPECT_TRUE(wire);
    if (!wire) return {};
    return send(*wire, method, target, headers);
  }

  static std::string pod_path(const std::string& pod, const std::string& rest) {
    return "/api/v1/namespaces/default/pods/" + pod + "/" + rest;
  }

  // An error answer: a Status with this code and message.
  static void expect_status(const Answer& a, int code, const std::string& reason,
                            const std::string& message) {
    EXPECT_EQ(a.status, code) << a.head << a.body;
    EXPECT_EQ(header_of(a.head, "Content-Type"), "application/json") << a.head;
    ASSERT_TRUE(a.status_object.is_object()) << a.body;
    EXPECT_EQ(a.status_object.value("kind", ""), "Status") << a.body;
    EXPECT_EQ(a.status_object.value("status", ""), "Failure") << a.body;
    EXPECT_EQ(a.status_object.value("code", 0), code) << a.body;
    EXPECT_EQ(a.status_object.value("reason", ""), reason) << a.body;
    EXPECT_EQ(a.status_object.value("message", ""), message) << a.body;
  }

  static skiff::testing::TempDir* dir_;
  static std::string ca_file_;
  static SSL_CTX* client_ctx_;
  static EchoUpstream* kubelet_;
  static EchoUpstream* impostor_;
  static ApiServer* server_;
  static int dead_port_;
};

skiff::testing::TempDir* PodStreamTest::dir_ = nullptr;
std::string PodStreamTest::ca_file_;
SSL_CTX* PodStreamTest::client_ctx_ = nullptr;
EchoUpstream* PodStreamTest::kubelet_ = nullptr;
EchoUpstream* PodStreamTest::impostor_ = nullptr;
ApiServer* PodStreamTest::server_ = nullptr;
int PodStreamTest::dead_port_ = 0;

// After a 101: "ready\n" from the kubelet, then an upper-cased echo until '!'.
void expect_echo(TlsWire& wire) {
  EXPECT_EQ(wire.read_exactly(6), "ready\n");
  ASSERT_TRUE(wire.write("total 0\n"));
  EXPECT_EQ(wire.read_exactly(8), "TOTAL 0\n");
  // One side at a time (an SSL object is not shared between threads): a size the socket
  // buffers hold.
  std::string bulk(48 * 1024, 'z');
  ASSERT_TRUE(wire.write(bulk));
  EXPECT_TRUE(wire.read_exactly(bulk.size()) == upper(bulk));
  ASSERT_TRUE(wire.write("exit!"));
  EXPECT_EQ(wire.read_exactly(5), "EXIT!");
  // The kubelet closed: so does the relay.
  EXPECT_TRUE(wire.ended());
}

TEST_F(PodStreamTest, ExecReachesTheKubeletWithTheUpgradeHeaders) {
  size_t before = kubelet_->saw().size();
  auto wire = dial();
  ASSERT_TRUE(wire);
  Answer a = send(*wire, "GET",
                  pod_path("p", "exec?command=ls&command=-l&stdout=true&stderr=true&container=c"),
                  std::string(kWebSocketHeaders) + "User-Agent: kubectl/v1.32.0\r\n");
  EXPECT_EQ(a.status, 101) << a.head;
  EXPECT_TRUE(a.head.starts_with("HTTP/1.1 101 Switching Protocols\r\n")) << a.head;
  EXPECT_EQ(header_of(a.head, "Upgrade"), "websocket") << a.head;
  EXPECT_EQ(header_of(a.head, "Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") << a.head;
  EXPECT_EQ(header_of(a.head, "Sec-WebSocket-Protocol"), "v5.channel.k8s.io") << a.head;
  expect_echo(*wire);

  KubeletSaw seen = kubelet_->wait_for(before + 1);
  EXPECT_EQ(seen.client_cn, "kube-apiserver-kubelet-client");
  EXPECT_TRUE(
      seen.head.starts_with("GET /exec/default/p/c?command=ls&command=-l&error=1&output=1 "
                            "HTTP/1.1\r\n"))
      << seen.head;
  EXPECT_EQ(header_of(seen.head, "Host"), "127.0.0.1:" + std::to_string(kubelet_->port()))
      << seen.head;
  EXPECT_TRUE(contains(seen.head, std::string("\r\n") + kWebSocketHeaders)) << seen.head;
  EXPECT_EQ(header_of(seen.head, "User-Agent"), "") << seen.head;
  EXPECT_EQ(header_of(seen.head, "Authorization"), "") << seen.head;
  EXPECT_EQ(kubelet_->saw().size(), before + 1);
}

TEST_F(PodStreamTest, ExecOverPostWithStdinAndTty) {
  size_t before = kubelet_->saw().size();
  auto wire = dial();
  ASSERT_TRUE(wire);
  Answer a = send(*wire, "POST",
                  pod_path("p",
                           "exec?container=c&command=sh&command=-c&command=echo%20a%26b%3Dc"
                           "&stdin=true&stdout=1&tty=true"),
                  kSpdyHeaders);
  EXPECT_EQ(a.status, 101) << a.head;
  expect_echo(*wire);

  KubeletSaw seen = kubelet_->wait_for(before + 1);
  EXPECT_TRUE(seen.head.starts_with("POST /exec/default/p/c?")) << seen.head;
  std::string target = target_of(seen.head);
  std::string query = target.substr(target.find('?') + 1);
  // Sorted by name, each argument in order, the values escaped so they decode to what was sent.
  std::vector<std::pair<std::string, std::string>> want = {
      {"command", "sh"}, {"command", "-c"}, {"command", "echo a&b=c"},
      {"input", "1"},    {"output", "1"},   {"tty", "1"}};
  EXPECT_EQ(http::parse_query(query), want) << target;
  EXPECT_TRUE(contains(seen.head, std::string("\r\n") + kSpdyHeaders)) << seen.head;
}

TEST_F(PodStreamTest, AttachPicksThePodsOnlyContainer) {
  size_t before = kubelet_->saw().size();
  auto wire = dial();
  ASSERT_TRUE(wire);
  Answer a = send(*wire, "POST", pod_path("solo", "attach?stdin=true&stdout=true&tty=true"),
                  kWebSocketHeaders);
  EXPECT_EQ(a.status, 101) << a.head;
  expect_echo(*wire);
  KubeletSaw seen = kubelet_->wait_for(before + 1);
  EXPECT_EQ(target_of(seen.head), "/attach/default/solo/only?input=1&output=1&tty=1") << seen.head;
  EXPECT_TRUE(seen.head.starts_with("POST ")) << seen.head;
}

TEST_F(PodStreamTest, PortForwardNeedsNoCommandNorContainer) {
  size_t before = kubelet_->saw().size();
  auto wire = dial();
  ASSERT_TRUE(wire);
  Answer a = send(*wire, "GET", pod_path("p", "portforward"), kSpdyHeaders);
  EXPECT_EQ(a.status, 101) << a.head;
  expect_echo(*wire);
  KubeletSaw seen = kubelet_->wait_for(before + 1);
  EXPECT_TRUE(seen.head.starts_with("GET /portforward/default/p HTTP/1.1\r\n")) << seen.head;
  EXPECT_EQ(header_of(seen.head, "X-Stream-Protocol-Version"), "portforward.k8s.io") << seen.head;

  // PodPortForwardOptions.ports go on as port=N; a port out of range never leaves.
  wire = dial();
  ASSERT_TRUE(wire);
  a = send(*wire, "GET", pod_path("p", "portforward?ports=80&ports=8080"), kSpdyHeaders);
  EXPECT_EQ(a.status, 101) << a.head;
  expect_echo(*wire);
  EXPECT_EQ(target_of(kubelet_->wait_for(before + 2).head),
            "/portforward/default/p?port=80&port=8080");
  expect_status(request("GET", pod_path("p", "portforward?ports=0")), 400, "BadRequest",
                "invalid port \"0\": ports must be numbers in the range 1-65535");
  expect_status(request("GET", pod_path("p", "portforward?ports=http")), 400, "BadRequest",
                "invalid port \"http\": ports must be numbers in the range 1-65535");
  EXPECT_EQ(kubelet_->saw().size(), before + 2);
}

TEST_F(PodStreamTest, TheKubeletsRefusalIsPassedOn) {
  // kubectl falls back from WebSocket to SPDY on such an answer, so it must arrive as it is.
  size_t before = kubelet_->saw().size();
  Answer a = request("GET", pod_path("p", "exec?command=ls&stdout=true&container=d"));
  EXPECT_EQ(a.status, 400) << a.head;
  EXPECT_EQ(header_of(a.head, "Content-Type"), "text/plain; charset=utf-8") << a.head;
  EXPECT_EQ(a.body, "websocket: the client is not using the websocket protocol");
  EXPECT_EQ(target_of(kubelet_->wait_for(before + 1).head),
            "/exec/default/p/d?command=ls&output=1");
}

TEST_F(PodStreamTest, InvalidRequestsNeverReachTheKubelet) {
  size_t before = kubelet_->saw().size();
  expect_status(request("GET", pod_path("p", "exec?stdout=true&container=c")), 400, "BadRequest",
                "you must specify at least one command for the container");
  expect_status(request("GET", pod_path("p", "exec?command=ls&container=c")), 400, "BadRequest",
                "you must specify at least 1 of stdin, stdout, stderr");
  expect_status(request("GET", pod_path("p", "exec?command=ls&stdout=false&container=c")), 400,
                "BadRequest", "you must specify at least 1 of stdin, stdout, stderr");
  expect_status(request("POST", pod_path("p", "attach?container=c")), 400, "BadRequest",
                "you must specify at least 1 of stdin, stdout, stderr");
  expect_status(request("GET", pod_path("nope", "exec?command=ls&stdout=true")), 404, "NotFound",
                "pods \"nope\" not found");
  expect_status(request("GET", pod_path("nope", "portforward")), 404, "NotFound",
                "pods \"nope\" not found");
  expect_status(request("GET", pod_path("p", "exec?command=ls&stdout=true&container=nope")), 400,
                "BadRequest", "container nope is not valid for pod p");
  expect_status(request("GET", pod_path("p", "exec?command=ls&stdout=true")), 400, "BadRequest",
                "a container name must be specified for pod p, choose one of: [c d]");
  expect_status(request("GET", pod_path("pending", "exec?command=ls&stdout=true")), 400,
                "BadRequest", "pod pending does not have a host assigned");
  expect_status(request("GET", pod_path("pending", "portforward")), 400, "BadRequest",
                "pod pending does not have a host assigned");
  expect_status(request("GET", pod_path("succeeded", "exec?command=ls&stdout=true")), 400,
                "BadRequest",
                "cannot exec into a container in a completed pod; current phase is Succeeded");
  Answer a = request("POST", pod_path("failed", "attach?stdout=true"));
  EXPECT_EQ(a.status, 400) << a.body;
  EXPECT_TRUE(contains(message_of(a), "a container in a completed pod; current phase is Failed"))
      << a.body;
  for (const char* method : {"DELETE", "PUT", "PATCH"}) {
    expect_status(request(method, pod_path("p", "exec?command=ls&stdout=true&container=c")), 405,
                  "MethodNotAllowed",
                  "the server does not allow this method on the requested resource");
  }
  expect_status(request("GET", pod_path("lost", "exec?command=ls&stdout=true")), 404, "NotFound",
                "nodes \"ghost\" not found");
  // A node without an address: 500 naming the addresses it has.
  a = request("GET", pod_path("stranded", "exec?command=ls&stdout=true"));
  EXPECT_EQ(a.status, 500) << a.body;
  EXPECT_TRUE(a.status_object.is_object() && a.status_object.value("code", 0) == 500) << a.body;
  EXPECT_TRUE(contains(message_of(a), "no preferred addresses found; known addresses: []"))
      << a.body;
  EXPECT_EQ(kubelet_->saw().size(), before);
}

TEST_F(PodStreamTest, AnUnreachableKubeletIs502) {
  expect_status(request("GET", pod_path("orphan", "exec?command=ls&stdout=true")), 502,
                "ServiceUnavailable",
                "error dialing backend: dial tcp 127.0.0.1:" + std::to_string(dead_port_) +
                    ": connect: connection refused");
}

TEST_F(PodStreamTest, AKubeletWhoseCertificateTheClusterCaDidNotIssueIsRefused) {
  size_t before = impostor_->saw().size();
  Answer a = request("GET", pod_path("fake", "exec?command=ls&stdout=true"));
  EXPECT_EQ(a.status, 502) << a.head << a.body;
  EXPECT_TRUE(contains(message_of(a), "error dialing backend: tls handshake with 127.0.0.1:" +
                                          std::to_string(impostor_->port())))
      << a.body;
  // The impostor saw a connection but never a request.
  KubeletSaw seen = impostor_->wait_for(before + 1);
  EXPECT_EQ(seen.head, "");
}

}  // namespace
}  // namespace skiff::apiserver
