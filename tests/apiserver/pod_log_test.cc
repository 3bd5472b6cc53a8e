// pods/log through a real API server to a fake kubelet: an HTTPS server in the test that
// requires the API server's client certificate and answers like a kubelet.

#include "apiserver/pod_log.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "apiserver/apiserver.h"
#include "base/kubeconfig.h"
#include "base/pki.h"
#include "client/http_client.h"
#include "httpserver/http_server.h"
#include "httpserver/proxy_client.h"
#include "support/ports.h"
#include "support/temp_dir.h"

namespace skiff::apiserver {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// What the fake kubelet saw of one request.
struct Seen {
  std::string path;
  std::string query;
  std::string user;
  std::vector<std::string> groups;
};

class FakeKubelet {
 public:
  FakeKubelet(const std::string& dir, const pki::CertificateAuthority& ca,
              const std::string& ca_file) {
    auto serving = ca.issue_serving_cert("node-1", {"127.0.0.1"});
    SKIFF_CHECK(serving.is_ok(), serving.status().to_string());
    write_file(dir + "/kubelet.crt", serving->cert_pem);
    write_file(dir + "/kubelet.key", serving->key_pem);
    http::HttpServerOptions o;
    o.bind_address = "127.0.0.1";
    o.port = 0;
    o.cert_file = dir + "/kubelet.crt";
    o.key_file = dir + "/kubelet.key";
    o.client_ca_file = ca_file;
    o.worker_threads = 4;
    server_ = std::make_unique<http::HttpServer>(
        o, [this](http::Request& req, http::Responder& r) { handle(req, r); },
        [](const ssl_st* tls, std::string_view, http::UserInfo* user) {
          X509* cert = tls ? SSL_get0_peer_certificate(tls) : nullptr;
          if (cert == nullptr || SSL_get_verify_result(tls) != X509_V_OK) return false;
          auto info = pki::inspect_certificate(cert);
          if (!info.is_ok()) return false;
          user->name = info->common_name;
          user->groups = info->organizations;
          return true;
        });
    SKIFF_CHECK(server_->start().is_ok(), "fake kubelet did not start");
  }
  ~FakeKubelet() {
    release();
    for (std::thread& t : producers_) t.join();
    server_->stop();
  }

  int port() const { return server_->port(); }

  std::vector<Seen> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }
  Seen last() {
    std::lock_guard lock(mu_);
    return seen_.empty() ? Seen{} : seen_.back();
  }
  // Lets the follow of solo/only send its second line and end.
  void release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  // The follow of web/main, which never ends on its own.
  std::shared_ptr<http::ResponseStream> endless_stream() {
    std::lock_guard lock(mu_);
    return endless_;
  }

 private:
  void handle(http::Request& req, http::Responder& r) {
    {
      std::lock_guard lock(mu_);
      seen_.push_back({req.path, req.raw_query, req.user.name, req.user.groups});
    }
    if (!req.authenticated) {
      r.respond({401, "text/plain", {}, "Unauthorized"});
      return;
    }
    if (req.path == "/containerLogs/default/web/main" ||
        req.path == "/containerLogs/default/solo/only") {
      if (!req.flag("follow")) {
        r.respond({200, "text/plain", {}, "hello\nworld\n"});
        return;
      }
      auto stream = r.stream(200, "text/plain");
      stream->write("line1\n");
      std::lock_guard lock(mu_);
      if (req.path == "/containerLogs/default/web/main") {
        endless_ = stream;
        return;
      }
      producers_.emplace_back([this, stream] {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return released_; });
        stream->write("line2\n");
        stream->finish();
      });
      return;
    }
    if (req.path == "/containerLogs/default/web/broken") {
      r.respond({400,
                 "text/plain",
                 {},
                 "container \"broken\" in pod \"web\" is waiting to start: ContainerCreating"});
      return;
    }
    if (req.path == "/containerLogs/default/web/boom") {
      r.respond({500, "text/plain", {}, "runtime exploded"});
      return;
    }
    r.respond({404, "text/plain", {}, "pod does not exist"});
  }

  std::unique_ptr<http::HttpServer> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;                          // guarded by mu_
  std::vector<Seen> seen_;                         // guarded by mu_
  std::shared_ptr<http::ResponseStream> endless_;  // guarded by mu_
  std::vector<std::thread> producers_;             // guarded by mu_
};

struct Answer {
  int status = 0;
  std::string content_type;
  std::string body;
  json status_object;  // the body as JSON, when it is
};

class PodLogTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir("skiff-pod-log");
    // The cluster CA first, so the fake kubelet's certificate can come from it and the API
    // server verifies it.
    pki::PkiOptions pki_options;
    pki_options.include_interface_addresses = false;
    auto state = pki::ensure_pki(dir_->sub("tls"), pki_options);
    SKIFF_CHECK(state.is_ok(), state.status().to_string());
    ca_ = new pki::CertificateAuthority(state->ca);
    kubelet_ = new FakeKubelet(dir_->path(), *ca_, state->paths.ca_cert);

    ApiServerOptions o;
    o.data_dir = dir_->path();
    o.bind_address = "127.0.0.1";
    o.https_port = 0;
    o.store.backend = "memory";
    o.worker_threads = 8;
    o.kubelet_certificate_authority = state->paths.ca_cert;
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
    SKIFF_CHECK((*api)->create(kNodes, "", node("node-1", local, kubelet_->port())).is_ok(),
                "node-1");
    SKIFF_CHECK((*api)->create(kNodes, "", node("nowhere", json::array(), 10250)).is_ok(),
                "nowhere");
    dead_port_ = testing::free_tcp_port();
    SKIFF_CHECK((*api)->create(kNodes, "", node("dead", local, dead_port_)).is_ok(), "dead");

    auto pod = [](const std::string& name, const std::string& node_name,
                  std::vector<std::string> containers, std::vector<std::string> inits = {}) {
      json spec{{"containers", json::array()}};
      for (const std::string& c : containers) {
        spec["containers"].push_back({{"name", c}, {"image", "busybox"}});
      }
      for (const std::string& c : inits) {
        spec["initContainers"].push_back({{"name", c}, {"image", "busybox"}});
      }
      if (!node_name.empty()) spec["nodeName"] = node_name;
      return json{{"apiVersion", "v1"},
                  {"kind", "Pod"},
                  {"metadata", {{"name", name}, {"namespace", "default"}}},
                  {"spec", spec}};
    };
    for (const json& p : {pod("web", "node-1", {"main", "broken", "boom"}, {"init"}),
                          pod("solo", "node-1", {"only"}), pod("pending", "", {"app"}),
                          pod("lost", "ghost", {"app"}), pod("stranded", "nowhere", {"app"}),
                          pod("orphan", "dead", {"app"})}) {
      auto created = (*api)->create(kPods, "default", p);
      SKIFF_CHECK(created.is_ok(), created.status().to_string());
    }
    auto c = http::ProxyClient::create(
        {true, state->paths.ca_cert, state->paths.admin_cert, state->paths.admin_key});
    SKIFF_CHECK(c.is_ok(), c.status().to_string());
    client_ = c->release();
  }

  static void TearDownTestSuite() {
    delete client_;
    server_->stop();
    delete server_;
    delete kubelet_;
    delete ca_;
    delete dir_;
  }

  static Answer get(const std::string& target) {
    Answer a;
    auto r = client_->get("127.0.0.1", server_->port(), target);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (!r.is_ok()) return a;
    a.status = (*r)->head().status;
    a.content_type = (*r)->head().content_type;
    auto body = (*r)->read_all(1 << 20);
    EXPECT_TRUE(body.is_ok()) << body.status().to_string();
    a.body = body.is_ok() ? *body : "";
    a.status_object = json::parse(a.body, nullptr, false);
    return a;
  }

  static std::string log_path(const std::string& pod, const std::string& query = "") {
    return "/api/v1/namespaces/default/pods/" + pod + "/log" + query;
  }

  static testing::TempDir* dir_;
  static pki::CertificateAuthority* ca_;
  static FakeKubelet* kubelet_;
  static ApiServer* server_;
  static http::ProxyClient* client_;
  static int dead_port_;
};

testing::TempDir* PodLogTest::dir_ = nullptr;
pki::CertificateAuthority* PodLogTest::ca_ = nullptr;
FakeKubelet* PodLogTest::kubelet_ = nullptr;
ApiServer* PodLogTest::server_ = nullptr;
http::ProxyClient* PodLogTest::client_ = nullptr;
int PodLogTest::dead_port_ = 0;

TEST_F(PodLogTest, ProxiesToTheKubeletWithTheApiServersClientCertificate) {
  Answer a = get(log_path("web", "?container=main&tailLines=5&timestamps=true&limitBytes=100"));
  EXPECT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.content_type, "text/plain");
  EXPECT_EQ(a.body, "hello\nworld\n");
  Seen seen = kubelet_->last();
  EXPECT_EQ(seen.path, "/containerLogs/default/web/main");
  EXPECT_EQ(seen.query, "limitBytes=100&tailLines=5&timestamps=true");
  EXPECT_EQ(seen.user, "kube-apiserver-kubelet-client");
  EXPECT_EQ(seen.groups, std::vector<std::string>{"system:masters"});

  a = get(log_path("web", "?container=main&previous=true&sinceSeconds=30"));
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(kubelet_->last().query, "previous=true&sinceSeconds=30");
  a = get(log_path("web", "?container=main&sinceTime=2024-05-01T12%3A00%3A00%2B02%3A00"));
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(kubelet_->last().query, "sinceTime=2024-05-01T10%3A00%3A00Z");

  // The only container is the default.
  a = get(log_path("solo"));
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(kubelet_->last().path, "/containerLogs/default/solo/only");

  // The certificate is kept with the others.
  auto cert = pki::read_file(dir_->sub("tls/kubelet-client.crt"));
  ASSERT_TRUE(cert.is_ok());
  EXPECT_TRUE(ca_->signed_cert_pem(*cert));
}

TEST_F(PodLogTest, ContainerChoiceIsValidated) {
  size_t before = kubelet_->seen().size();
  Answer a = get(log_path("web"));
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(a.status_object.value("reason", ""), "BadRequest");
  EXPECT_EQ(a.status_object.value("message", ""),
            "a container name must be specified for pod web, choose one of: [init main broken "
            "boom]");
  a = get(log_path("web", "?container=nope"));
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(a.status_object.value("message", ""), "container nope is not valid for pod web");
  // Init containers have logs too.
  EXPECT_EQ(get(log_path("web", "?container=init")).status, 404);  // this fake has none
  EXPECT_EQ(kubelet_->seen().size(), before + 1);
}

TEST_F(PodLogTest, PodsNodesAndAddresses) {
  Answer a = get(log_path("nope"));
  EXPECT_EQ(a.status, 404);
  EXPECT_EQ(a.status_object.value("message", ""), "pods \"nope\" not found");
  // Not scheduled yet: nothing to show.
  a = get(log_path("pending"));
  EXPECT_EQ(a.status, 204);
  EXPECT_EQ(a.body, "");
  a = get(log_path("lost"));
  EXPECT_EQ(a.status, 404);
  EXPECT_EQ(a.status_object.value("message", ""), "nodes \"ghost\" not found");
  a = get(log_path("stranded"));
  EXPECT_EQ(a.status, 500);
  EXPECT_EQ(a.status_object.value("message", ""),
            "no preferred addresses found; known addresses: []");
  a = get(log_path("orphan"));
  EXPECT_EQ(a.status, 500);
  std::string want = "Get \"https://127.0.0.1:" + std::to_string(dead_port_) +
                     "/containerLogs/default/orphan/app\": dial tcp";
  EXPECT_EQ(a.status_object.value("message", "").substr(0, want.size()), want) << a.body;
}

TEST_F(PodLogTest, KubeletErrorsBecomeStatuses) {
  Answer a = get(log_path("web", "?container=broken"));
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(a.status_object.value("reason", ""), "BadRequest");
  EXPECT_EQ(a.status_object.value("message", ""),
            "container \"broken\" in pod \"web\" is waiting to start: ContainerCreating");
  a = get(log_path("web", "?container=boom"));
  EXPECT_EQ(a.status, 500);
  EXPECT_EQ(a.status_object.value("message", ""), "Internal error occurred: runtime exploded");
  a = get(log_path("web", "?container=init"));
  EXPECT_EQ(a.status, 404);
  EXPECT_EQ(a.status_object.value("reason", ""), "NotFound");
  EXPECT_EQ(a.status_object.value("message", ""),
            "the server could not find the requested resource ( pods/log web)");
}

TEST_F(PodLogTest, OptionsAreValidated) {
  Answer a = get(log_path("web", "?container=main&tailLines=-1"));
  EXPECT_EQ(a.status, 422);
  EXPECT_EQ(a.status_object.value("message", ""),
            "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater "
            "than or equal to 0");
  EXPECT_EQ(get(log_path("web", "?container=main&tailLines=lots")).status, 400);
  EXPECT_EQ(get(log_path("web", "?container=main&follow=perhaps")).status, 400);
  EXPECT_EQ(get(log_path("web", "?container=main&limitBytes=0")).status, 422);
  EXPECT_EQ(
      get(log_path("web", "?container=main&sinceSeconds=1&sinceTime=2024-05-01T10:00:00Z")).status,
      422);
  EXPECT_EQ(get(log_path("web", "?container=main&stream=Both")).status, 422);
}

TEST_F(PodLogTest, FollowStreamsAsTheKubeletWrites) {
  auto r = client_->get("127.0.0.1", server_->port(), log_path("solo", "?follow=true"));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ((*r)->head().status, 200);
  bool chunked = false;
  for (const auto& h : (*r)->head().headers) {
    chunked |= h.name == "Transfer-Encoding" && h.value == "chunked";
  }
  EXPECT_TRUE(chunked);
  // The first line arrives while the kubelet still holds the second back.
  auto first = (*r)->read();
  ASSERT_TRUE(first.is_ok());
  EXPECT_EQ(*first, "line1\n");
  kubelet_->release();
  auto rest = (*r)->read_all(1024);
  ASSERT_TRUE(rest.is_ok()) << rest.status().to_string();
  EXPECT_EQ(*rest, "line2\n");
}

TEST_F(PodLogTest, AClientLeavingEndsTheKubeletStream) {
  auto r =
      client_->get("127.0.0.1", server_->port(), log_path("web", "?container=main&follow=true"));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  auto first = (*r)->read();
  ASSERT_TRUE(first.is_ok());
  EXPECT_EQ(*first, "line1\n");
  auto upstream = kubelet_->endless_stream();
  ASSERT_TRUE(upstream);
  EXPECT_FALSE(upstream->closed());
  (*r)->cancel();
  r->reset();
  // The API server drops its connection to the kubelet.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!upstream->closed() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(upstream->closed());
}

TEST(KubeletClientCertTest, IssuedOnceAndReusedWhileValid) {
  testing::TempDir dir;
  auto ca = pki::CertificateAuthority::create("test-ca");
  ASSERT_TRUE(ca.is_ok());
  auto first = ensure_kubelet_client_cert(dir.path(), *ca);
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_TRUE(first->issued);
  auto pem = pki::read_file(first->cert_file);
  ASSERT_TRUE(pem.is_ok());
  auto info = pki::inspect_certificate_pem(*pem);
  ASSERT_TRUE(info.is_ok());
  EXPECT_EQ(info->common_name, "kube-apiserver-kubelet-client");
  EXPECT_EQ(info->organizations, std::vector<std::string>{"system:masters"});
  EXPECT_TRUE(ca->signed_cert_pem(*pem));

  auto again = ensure_kubelet_client_cert(dir.path(), *ca);
  ASSERT_TRUE(again.is_ok());
  EXPECT_FALSE(again->issued);
  EXPECT_EQ(*pki::read_file(again->cert_file), *pem);

  // Another CA (a re-created cluster): issued anew.
  auto other = pki::CertificateAuthority::create("other-ca");
  ASSERT_TRUE(other.is_ok());
  auto reissued = ensure_kubelet_client_cert(dir.path(), *other);
  ASSERT_TRUE(reissued.is_ok());
  EXPECT_TRUE(reissued->issued);
  EXPECT_TRUE(other->signed_cert_pem(*pki::read_file(reissued->cert_file)));
}

}  // namespace
}  // namespace skiff::apiserver
