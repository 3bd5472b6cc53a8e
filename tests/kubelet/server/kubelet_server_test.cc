#include "kubelet/server/kubelet_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "base/pki.h"
#include "httpserver/proxy_client.h"
#include "kubelet/server/serving_cert.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::server {
namespace {

using namespace std::chrono_literals;

void write_file(const std::string& path, const std::string& data) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

void append_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << data;
}

std::string rec(const char* ts_seconds, const char* stream, const char* tag,
                const std::string& text) {
  return std::string("2024-05-01T10:00:") + ts_seconds + ".5Z " + stream + " " + tag + " " + text +
         "\n";
}

struct Reply {
  int status = 0;
  std::string content_type;
  std::string body;
  std::string error;  // transport failure
};

Reply fetch(const http::ProxyClient& client, int port, const std::string& target,
            const std::vector<http::HttpHeader>& headers = {}) {
  Reply out;
  auto response = client.get("127.0.0.1", port, target, headers);
  if (!response.is_ok()) {
    out.error = response.status().to_string();
    return out;
  }
  out.status = (*response)->head().status;
  out.content_type = (*response)->head().content_type;
  auto body = (*response)->read_all(1 << 20);
  if (!body.is_ok()) {
    out.error = body.status().to_string();
    return out;
  }
  out.body = *body;
  return out;
}

// A CA, a client certificate it issued, a pod log tree and a server over them.
class KubeletServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = pki::CertificateAuthority::create("test-ca");
    ASSERT_TRUE(ca.is_ok());
    ca_ = std::make_unique<pki::CertificateAuthority>(*ca);
    write_file(dir_.sub("pki/ca.crt"), ca_->cert_pem());
    write_file(dir_.sub("pki/ca.key"), ca_->key_pem());
    auto client = ca_->issue_client_cert("kube-apiserver-kubelet-client", {"system:masters"});
    ASSERT_TRUE(client.is_ok());
    write_file(dir_.sub("pki/client.crt"), client->cert_pem);
    write_file(dir_.sub("pki/client.key"), client->key_pem);

    log_dir_ = dir_.sub("logs/default_web_uid-1/main");
    write_file(log_dir_ + "/0.log", rec("01", "stdout", "F", "previous run"));
    write_file(log_dir_ + "/1.log",
               rec("02", "stdout", "F", "one") + rec("03", "stderr", "P", "tw") +
                   rec("04", "stderr", "F", "o") + rec("05", "stdout", "F", "three"));
    write_file(dir_.sub("logs/default_fresh_uid-2/app/0.log"), rec("01", "stdout", "F", "hi"));

    options_.node_name = "node-1";
    options_.address = "127.0.0.1";
    options_.port = 0;
    options_.read_only_port = 0;
    options_.healthz_port = 0;
    options_.cert_dir = dir_.sub("kubelet-pki");
    options_.client_ca_file = dir_.sub("pki/ca.crt");
    options_.ca_key_file = dir_.sub("pki/ca.key");
    options_.follow_poll_interval = 50ms;
  }

  void TearDown() override {
    if (server_) server_->stop();
  }

  PodLookup lookup() {
    PodLookup l;
    l.pod_list = [] {
      return std::string(R"({"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]})");
    };
    l.container_log = [this](const std::string& ns, const std::string& pod,
                             const std::string& container) -> Result<ContainerLogTarget> {
      lookups_++;
      if (ns == "default" && pod == "web") {
        if (container != "main") {
          return Status(StatusCode::kNotFound, container_not_found_message(container, pod));
        }
        ContainerLogTarget t;
        t.container_log_dir = log_dir_;
        t.restart_count = 1;
        t.running = [this] { return running_.load(); };
        return t;
      }
      if (ns == "default" && pod == "fresh") {
        ContainerLogTarget t;
        t.container_log_dir = dir_.sub("logs/default_fresh_uid-2/app");
        return t;
      }
      if (ns == "default" && pod == "pending") {
        return Status(StatusCode::kFailedPrecondition,
                      "container \"" + container + "\" in pod \"" + pod +
                          "\" is waiting to start: ContainerCreating");
      }
      return Status(StatusCode::kNotFound, pod_not_found_message(pod));
    };
    return l;
  }

  void start() {
    auto s = KubeletServer::create(options_, lookup());
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
  }

  std::unique_ptr<http::ProxyClient> client(bool with_cert = true, bool verify = true) {
    http::ProxyClientOptions o;
    if (verify) o.ca_file = dir_.sub("pki/ca.crt");
    if (with_cert) {
      o.cert_file = dir_.sub("pki/client.crt");
      o.key_file = dir_.sub("pki/client.key");
    }
    auto c = http::ProxyClient::create(o);
    EXPECT_TRUE(c.is_ok()) << c.status().to_string();
    return std::move(c).value();
  }

  Reply logs(const std::string& query) {
    return fetch(*client(), server_->port(), "/containerLogs/default/web/main" + query);
  }

  testing::TempDir dir_;
  std::unique_ptr<pki::CertificateAuthority> ca_;
  std::string log_dir_;
  KubeletServerOptions options_;
  std::unique_ptr<KubeletServer> server_;
  std::atomic<bool> running_{true};
  std::atomic<int> lookups_{0};
};

TEST_F(KubeletServerTest, ServesContainerLogsWithOptions) {
  start();
  Reply r = logs("");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain");
  EXPECT_EQ(r.body, "one\ntwo\nthree\n");
  EXPECT_EQ(logs("?previous=true").body, "previous run\n");
  EXPECT_EQ(logs("?tailLines=2").body, "two\nthree\n");
  EXPECT_EQ(logs("?tail=1").body, "three\n");
  EXPECT_EQ(logs("?tail=all").body, "one\ntwo\nthree\n");
  EXPECT_EQ(logs("?limitBytes=6").body, "one\ntw");
  EXPECT_EQ(logs("?stream=Stderr").body, "two\n");
  EXPECT_EQ(logs("?timestamps=true&tailLines=1").body, "2024-05-01T10:00:05.5Z three\n");
  EXPECT_EQ(logs("?sinceTime=2024-05-01T10:00:04Z").body, "three\n");
  // Long ago: everything.
  EXPECT_EQ(logs("?sinceSeconds=3600000000").body, "one\ntwo\nthree\n");
  EXPECT_EQ(fetch(*client(), server_->port(), "/containerLogs/default/fresh/app").body, "hi\n");
}

TEST_F(KubeletServerTest, LogErrorsAreUpstreamsAnswers) {
  start();
  auto c = client();
  Reply r = fetch(*c, server_->port(), "/containerLogs/default/nope/main");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, "pod \"nope\" does not exist");
  r = fetch(*c, server_->port(), "/containerLogs/default/web/sidecar");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, "container \"sidecar\" not found in pod \"web\"");
  r = fetch(*c, server_->port(), "/containerLogs/default/pending/main");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, "container \"main\" in pod \"pending\" is waiting to start: ContainerCreating");
  r = fetch(*c, server_->port(), "/containerLogs/default/fresh/app?previous=true");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, "previous terminated container \"app\" in pod \"fresh\" not found");

  EXPECT_EQ(logs("?tailLines=abc").status, 400);
  EXPECT_EQ(logs("?follow=maybe").status, 400);
  EXPECT_EQ(logs("?sinceTime=yesterday").status, 400);
  r = logs("?tailLines=-1");
  EXPECT_EQ(r.status, 422);
  EXPECT_NE(r.body.find("tailLines"), std::string::npos) << r.body;
  EXPECT_EQ(logs("?limitBytes=0").status, 422);
  EXPECT_EQ(logs("?sinceSeconds=0").status, 422);
  EXPECT_EQ(logs("?sinceSeconds=5&sinceTime=2024-05-01T10:00:04Z").status, 422);
  EXPECT_EQ(logs("?stream=Both").status, 422);

  EXPECT_EQ(fetch(*c, server_->port(), "/containerLogs/default/web").status, 404);
  EXPECT_EQ(fetch(*c, server_->port(), "/containerLogs/default/web/main/extra").status, 404);
  EXPECT_EQ(fetch(*c, server_->port(), "/exec/default/web/main").status, 404);
}

TEST_F(KubeletServerTest, FollowStreamsAppendsUntilTheContainerStops) {
  start();
  auto c = client();
  auto response = c->get("127.0.0.1", server_->port(),
                         "/containerLogs/default/web/main?follow=true&tailLines=1");
  ASSERT_TRUE(response.is_ok()) << response.status().to_string();
  auto& r = **response;
  EXPECT_EQ(r.head().status, 200);
  EXPECT_EQ(server_->active_log_streams(), 1);
  std::string got;
  auto read_until = [&](const std::string& want) {
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (got != want && std::chrono::steady_clock::now() < deadline) {
      auto piece = r.read();
      if (!piece.is_ok() || piece->empty()) break;
      got += *piece;
    }
    return got;
  };
  EXPECT_EQ(read_until("three\n"), "three\n");
  append_file(log_dir_ + "/1.log", rec("06", "stdout", "F", "four"));
  EXPECT_EQ(read_until("three\nfour\n"), "three\nfour\n");
  append_file(log_dir_ + "/1.log", rec("07", "stdout", "F", "five"));
  running_ = false;
  // The rest of the file comes, then the body ends.
  std::string rest;
  while (true) {
    auto piece = r.read();
    ASSERT_TRUE(piece.is_ok()) << piece.status().to_string();
    if (piece->empty()) break;
    rest += *piece;
  }
  EXPECT_EQ(got + rest, "three\nfour\nfive\n");
}

TEST_F(KubeletServerTest, FollowEndsWhenTheClientGoes) {
  start();
  auto c = client();
  auto response =
      c->get("127.0.0.1", server_->port(), "/containerLogs/default/web/main?follow=true");
  ASSERT_TRUE(response.is_ok());
  auto first = (*response)->read();
  ASSERT_TRUE(first.is_ok());
  EXPECT_FALSE(first->empty());
  std::thread canceller([&] {
    std::this_thread::sleep_for(100ms);
    (*response)->cancel();
  });
  // Blocked until the cancel.
  auto more = (*response)->read();
  canceller.join();
  EXPECT_EQ(more.status().code(), StatusCode::kCancelled);
  response->reset();
  // The server notices and its stream ends.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (server_->active_log_streams() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(server_->active_log_streams(), 0);
}

TEST_F(KubeletServerTest, ClientsMustAuthenticate) {
  start();
  Reply r = fetch(*client(/*with_cert=*/false), server_->port(), "/containerLogs/default/web/main");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body, "Unauthorized");
  EXPECT_EQ(fetch(*client(false), server_->port(), "/pods").status, 401);
  EXPECT_EQ(fetch(*client(false), server_->port(), "/healthz").status, 401);
  // A bearer token without a token authenticator is refused too.
  EXPECT_EQ(
      fetch(*client(false), server_->port(), "/pods", {{"Authorization", "Bearer abc"}}).status,
      401);
  EXPECT_EQ(lookups_.load(), 0);

  // A certificate from another CA is refused.
  auto other = pki::CertificateAuthority::create("other-ca");
  ASSERT_TRUE(other.is_ok());
  auto stranger = other->issue_client_cert("mallory", {"system:masters"});
  ASSERT_TRUE(stranger.is_ok());
  write_file(dir_.sub("pki/stranger.crt"), stranger->cert_pem);
  write_file(dir_.sub("pki/stranger.key"), stranger->key_pem);
  http::ProxyClientOptions o;
  o.cert_file = dir_.sub("pki/stranger.crt");
  o.key_file = dir_.sub("pki/stranger.key");
  auto c = http::ProxyClient::create(o);
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(fetch(**c, server_->port(), "/pods").status, 401);
}

TEST_F(KubeletServerTest, BearerTokensWhenConfigured) {
  options_.token_authenticator = [](std::string_view token) -> std::optional<http::UserInfo> {
    if (token != "secret") return std::nullopt;
    return http::UserInfo{"apiserver", "", {}};
  };
  start();
  auto c = client(false);
  EXPECT_EQ(fetch(*c, server_->port(), "/pods", {{"Authorization", "Bearer secret"}}).status, 200);
  EXPECT_EQ(fetch(*c, server_->port(), "/pods", {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(fetch(*c, server_->port(), "/containerLogs/default/web/main?tailLines=1",
                  {{"Authorization", "bearer secret"}})
                .body,
            "three\n");
}

TEST_F(KubeletServerTest, PodsHealthzAndTheOtherPorts) {
  std::atomic<bool> sick{false};
  options_.health_check = [&]() -> Status {
    if (sick) return Status(StatusCode::kUnavailable, "runtime down");
    return Status::ok();
  };
  start();
  Reply pods = fetch(*client(), server_->port(), "/pods");
  EXPECT_EQ(pods.status, 200);
  EXPECT_EQ(pods.content_type, "application/json");
  EXPECT_EQ(pods.body, R"({"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]})");
  EXPECT_EQ(fetch(*client(), server_->port(), "/healthz").body, "ok");

  http::ProxyClientOptions plain_options;
  plain_options.use_tls = false;
  auto plain = http::ProxyClient::create(plain_options);
  ASSERT_TRUE(plain.is_ok());
  ASSERT_NE(server_->read_only_port(), 0);
  ASSERT_NE(server_->healthz_port(), 0);
  // Read-only: pods without credentials, but no logs.
  EXPECT_EQ(fetch(**plain, server_->read_only_port(), "/pods").body, pods.body);
  EXPECT_EQ(fetch(**plain, server_->read_only_port(), "/containerLogs/default/web/main").status,
            404);
  // Healthz: only /healthz.
  EXPECT_EQ(fetch(**plain, server_->healthz_port(), "/pods").status, 404);
  EXPECT_EQ(fetch(**plain, server_->healthz_port(), "/healthz").body, "ok");
  sick = true;
  Reply unhealthy = fetch(**plain, server_->healthz_port(), "/healthz");
  EXPECT_EQ(unhealthy.status, 500);
  EXPECT_NE(unhealthy.body.find("runtime down"), std::string::npos) << unhealthy.body;
}

TEST_F(KubeletServerTest, PortsOffByOption) {
  options_.read_only_port.reset();
  options_.healthz_port.reset();
  start();
  EXPECT_EQ(server_->read_only_port(), 0);
  EXPECT_EQ(server_->healthz_port(), 0);
  EXPECT_NE(server_->port(), 0);
}

TEST_F(KubeletServerTest, ATakenHealthzPortIsNotFatal) {
  start();
  int taken = server_->healthz_port();
  ASSERT_NE(taken, 0);
  options_.healthz_port = taken;
  auto second = KubeletServer::create(options_, lookup());
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_EQ((*second)->healthz_port(), 0);
  EXPECT_NE((*second)->port(), 0);
  // But the main port is: it is what the API server needs.
  options_.port = server_->port();
  options_.healthz_port.reset();
  EXPECT_FALSE(KubeletServer::create(options_, lookup()).is_ok());
}

TEST_F(KubeletServerTest, SelfSignedWithoutTheCaKey) {
  options_.ca_key_file.clear();
  start();
  // The cluster CA did not issue it, so a verifying client refuses it...
  Reply verified = fetch(*client(true, /*verify=*/true), server_->port(), "/healthz");
  EXPECT_EQ(verified.status, 0);
  EXPECT_NE(verified.error, "");
  // ...and one that does not verify (the API server's default) gets through.
  EXPECT_EQ(fetch(*client(true, /*verify=*/false), server_->port(), "/healthz").body, "ok");
}

TEST(ServingCertTest, ReusedUntilSomethingChanges) {
  testing::TempDir dir;
  auto ca = pki::CertificateAuthority::create("test-ca");
  ASSERT_TRUE(ca.is_ok());
  write_file(dir.sub("ca.crt"), ca->cert_pem());
  write_file(dir.sub("ca.key"), ca->key_pem());
  ServingCertOptions o;
  o.cert_dir = dir.sub("certs");
  o.node_name = "Node-1";
  o.sans = {"10.0.0.5"};
  o.ca_cert_file = dir.sub("ca.crt");
  o.ca_key_file = dir.sub("ca.key");
  auto first = ensure_serving_cert(o);
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_TRUE(first->issued);
  EXPECT_TRUE(first->ca_signed);
  auto pem = pki::read_file(first->cert_file);
  ASSERT_TRUE(pem.is_ok());
  EXPECT_TRUE(ca->signed_cert_pem(*pem));
  auto info = pki::inspect_certificate_pem(*pem);
  ASSERT_TRUE(info.is_ok());
  EXPECT_EQ(info->common_name, "Node-1");
  EXPECT_NE(std::find(info->ip_addresses.begin(), info->ip_addresses.end(), "10.0.0.5"),
            info->ip_addresses.end());
  EXPECT_NE(std::find(info->dns_names.begin(), info->dns_names.end(), "node-1"),
            info->dns_names.end());

  auto again = ensure_serving_cert(o);
  ASSERT_TRUE(again.is_ok());
  EXPECT_FALSE(again->issued);
  EXPECT_EQ(*pki::read_file(again->cert_file), *pem);

  o.sans.push_back("10.0.0.6");
  auto widened = ensure_serving_cert(o);
  ASSERT_TRUE(widened.is_ok());
  EXPECT_TRUE(widened->issued);
  EXPECT_NE(*pki::read_file(widened->cert_file), *pem);

  // Self-signed: its own CA follows the leaf in the file.
  o.cert_dir = dir.sub("self");
  o.ca_key_file.clear();
  o.ca_cert_file.clear();
  auto self = ensure_serving_cert(o);
  ASSERT_TRUE(self.is_ok());
  EXPECT_FALSE(self->ca_signed);
  std::string chain = *pki::read_file(self->cert_file);
  EXPECT_FALSE(ca->signed_cert_pem(chain));
  size_t first_end = chain.find("-----END CERTIFICATE-----");
  EXPECT_NE(chain.find("-----BEGIN CERTIFICATE-----", first_end), std::string::npos);
}

}  // namespace
}  // namespace skiff::kubelet::server
