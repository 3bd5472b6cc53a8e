// POST /pods and DELETE /pods/{name} on the kubelet's HTTPS port, wired to a PodManager over an
// in-memory API and runtime: an authenticated POST runs the manifest as a static pod, bad
// manifests are 400, a second pod of that name 409, DELETE stops it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/fake_api_client.h"
#include "kubelet/cri/fake_runtime.h"
#include "kubelet/kubelet.h"
#include "kubelet/server/kubelet_server.h"
#include "support/eventually.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::server {
namespace {

using skiff::testing::eventually;
using std::chrono::milliseconds;

struct Reply {
  int status = 0;
  std::string body;
};

// One HTTP/1.1 request over TLS (or plain), read until the server closes.
Reply send_request(int port, bool tls, const std::string& method, const std::string& path,
                   const std::string& body, const std::string& content_type,
                   const std::string& token) {
  Reply reply;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return reply;
  }
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  if (tls) {
    ctx = SSL_CTX_new(TLS_client_method());
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
      SSL_free(ssl);
      SSL_CTX_free(ctx);
      ::close(fd);
      return reply;
    }
  }
  std::string request =
      method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
  if (!token.empty()) request += "Authorization: Bearer " + token + "\r\n";
  if (!content_type.empty()) request += "Content-Type: " + content_type + "\r\n";
  request += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  auto write_all = [&](const std::string& data) {
    return tls ? SSL_write(ssl, data.data(), static_cast<int>(data.size())) > 0
               : ::write(fd, data.data(), data.size()) > 0;
  };
  std::string raw;
  if (write_all(request)) {
    char buf[4096];
    while (true) {
      int n =
          tls ? SSL_read(ssl, buf, sizeof(buf)) : static_cast<int>(::read(fd, buf, sizeof(buf)));
      if (n <= 0) break;
      raw.append(buf, n);
    }
  }
  if (ssl != nullptr) SSL_free(ssl);
  if (ctx != nullptr) SSL_CTX_free(ctx);
  ::close(fd);
  if (raw.size() > 12) reply.status = std::stoi(raw.substr(9, 3));
  size_t end = raw.find("\r\n\r\n");
  if (end != std::string::npos) reply.body = raw.substr(end + 4);
  return reply;
}

class KubeletPodsPostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime_.add_image("busybox");
    PodManagerOptions o;
    o.node.node_name = "n1";
    o.node.node_ip = "192.0.2.10";
    o.node.log_root = tmp_.sub("logs");
    o.node.cgroup_root = "";
    o.pods_dir = tmp_.sub("pods");
    o.pleg_period = milliseconds(50);
    o.manifest_check_period = milliseconds(50);
    manager_ = std::make_unique<PodManager>(api_, runtime_, runtime_, o);
    manager_->start();
    ASSERT_TRUE(manager_->wait_for_sync(milliseconds(5000)));

    KubeletServerOptions so;
    so.node_name = "n1";
    so.address = "127.0.0.1";
    so.port = 0;
    so.read_only_port = 0;
    so.healthz_port = std::nullopt;
    so.cert_dir = tmp_.sub("tls");
    so.token_authenticator = [](std::string_view token) -> std::optional<http::UserInfo> {
      if (token != "admin-token") return std::nullopt;
      return http::UserInfo{.name = "admin", .uid = "", .groups = {}};
    };
    PodLookup lookup;
    lookup.pod_list = [] { return std::string("{}"); };
    lookup.container_log = [](const std::string&, const std::string& pod,
                              const std::string&) -> Result<ContainerLogTarget> {
      return error(StatusCode::kNotFound, pod_not_found_message(pod));
    };
    lookup.create_pod = [this](const std::string& manifest) -> Result<std::string> {
      SKIFF_ASSIGN_OR_RETURN(Json pod, manager_->add_api_pod(manifest));
      return pod.dump();
    };
    lookup.delete_pod = [this](const std::string& name) { return manager_->remove_api_pod(name); };
    auto server = KubeletServer::create(so, lookup);
    ASSERT_TRUE(server.is_ok()) << server.status().to_string();
    server_ = std::move(server).value();
  }
  void TearDown() override {
    if (server_) server_->stop();
    if (manager_) manager_->stop();
  }

  Reply post(const std::string& body, const std::string& type = "application/json",
             const std::string& token = "admin-token") {
    return send_request(server_->port(), true, "POST", "/pods", body, type, token);
  }

  testing::TempDir tmp_{"skiff-kubelet-pods-post"};
  client::FakeApiClient api_;
  cri::FakeRuntime runtime_;
  std::unique_ptr<PodManager> manager_;
  std::unique_ptr<KubeletServer> server_;
};

constexpr char kPod[] = R"({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "posted"},
  "spec": {"containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent"}]}})";

TEST_F(KubeletPodsPostTest, PostRunsThePodAndDeleteStopsIt) {
  Reply created = post(kPod);
  ASSERT_EQ(created.status, 201) << created.body;
  Json pod = Json::parse(created.body);
  EXPECT_EQ(pod["metadata"]["name"], "posted-n1");
  EXPECT_EQ(pod["metadata"]["annotations"]["kubernetes.io/config.source"], "kubelet-api");
  EXPECT_EQ(pod["spec"]["nodeName"], "n1");
  // The mirror pod shows it in the API.
  ASSERT_TRUE(eventually([&] {
    auto mirror = api_.get(client::resources::kPods, "default", "posted-n1");
    // The mirror is created before its first status is written: no status object yet.
    if (!mirror.is_ok()) return false;
    auto status = mirror->find("status");
    return status != mirror->end() && status->is_object() &&
           status->value("phase", "") == "Running";
  }));

  Reply again = post(kPod);
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_EQ(Json::parse(again.body)["reason"], "AlreadyExists");

  Reply unknown =
      send_request(server_->port(), true, "DELETE", "/pods/nope", "", "", "admin-token");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  Reply deleted =
      send_request(server_->port(), true, "DELETE", "/pods/posted-n1", "", "", "admin-token");
  EXPECT_EQ(deleted.status, 200) << deleted.body;
  ASSERT_TRUE(eventually(
      [&] { return !api_.get(client::resources::kPods, "default", "posted-n1").is_ok(); }));
  // The name is free again.
  EXPECT_EQ(post(kPod).status, 201);
}

TEST_F(KubeletPodsPostTest, YamlBodiesWork) {
  Reply created = post(
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: yml\n  namespace: kube-system\nspec:\n"
      "  containers:\n  - name: main\n    image: busybox\n",
      "application/yaml");
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(Json::parse(created.body)["metadata"]["namespace"], "kube-system");
}

TEST_F(KubeletPodsPostTest, BadRequestsAreRefused) {
  Reply unauthenticated = post(kPod, "application/json", "wrong");
  EXPECT_EQ(unauthenticated.status, 401);
  Reply bad = post(R"({"kind": "Pod", "metadata": {"name": "x"}, "spec": {}})");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(Json::parse(bad.body)["message"].get<std::string>().find("spec.containers"),
            std::string::npos);
  EXPECT_EQ(post("{ not: [json").status, 400);
  EXPECT_EQ(post(kPod, "application/vnd.kubernetes.protobuf").status, 415);
  // The read-only port never takes pods.
  EXPECT_EQ(
      send_request(server_->read_only_port(), false, "POST", "/pods", kPod, "application/json", "")
          .status,
      405);
  EXPECT_EQ(runtime_.call_count("RunPodSandbox"), 0);
}

}  // namespace
}  // namespace skiff::kubelet::server
