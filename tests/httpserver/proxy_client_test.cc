#include "httpserver/proxy_client.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include "base/pki.h"
#include "httpserver/http_server.h"
#include "support/ports.h"
#include "support/temp_dir.h"

namespace skiff::http {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<ProxyClient> plain_client() {
  ProxyClientOptions o;
  o.use_tls = false;
  auto c = ProxyClient::create(o);
  EXPECT_TRUE(c.is_ok()) << c.status().to_string();
  return std::move(c).value();
}

TEST(ProxyClientTest, ReadsAStreamedBodyAsItArrives) {
  std::promise<void> second;
  std::shared_future<void> second_go = second.get_future().share();
  std::thread producer;
  HttpServerOptions options;
  options.bind_address = "127.0.0.1";
  options.port = 0;
  HttpServer server(
      options,
      [&](Request& req, Responder& r) {
        if (req.path == "/plain") {
          r.respond(Response{201, "text/plain", {{"X-Extra", "yes"}}, "whole body"});
          return;
        }
        auto stream = r.stream(200, "text/plain");
        stream->write("first\n");
        producer = std::thread([stream, second_go] {
          second_go.wait();
          stream->write("second\n");
          stream->finish();
        });
      },
      nullptr);
  ASSERT_TRUE(server.start().is_ok());
  auto client = plain_client();

  auto plain = client->get("127.0.0.1", server.port(), "/plain");
  ASSERT_TRUE(plain.is_ok()) << plain.status().to_string();
  EXPECT_EQ((*plain)->head().status, 201);
  EXPECT_EQ((*plain)->head().content_type, "text/plain");
  bool extra = false;
  for (const HttpHeader& h : (*plain)->head().headers) extra |= h.name == "X-Extra";
  EXPECT_TRUE(extra);
  EXPECT_EQ(*(*plain)->read_all(1024), "whole body");

  auto streamed = client->get("127.0.0.1", server.port(), "/stream?follow=true");
  ASSERT_TRUE(streamed.is_ok()) << streamed.status().to_string();
  EXPECT_EQ((*streamed)->head().status, 200);
  // The first chunk is readable while the server still holds the second back.
  auto first = (*streamed)->read();
  ASSERT_TRUE(first.is_ok());
  EXPECT_EQ(*first, "first\n");
  second.set_value();
  auto rest = (*streamed)->read_all(1024);
  ASSERT_TRUE(rest.is_ok()) << rest.status().to_string();
  EXPECT_EQ(*rest, "second\n");
  EXPECT_EQ(*(*streamed)->read(), "");  // stays at the end
  producer.join();
  server.stop();
}

TEST(ProxyClientTest, ReadAllKeepsAtMostTheLimit) {
  HttpServerOptions options;
  options.bind_address = "127.0.0.1";
  options.port = 0;
  HttpServer server(
      options,
      [](Request&, Responder& r) {
        r.respond(Response{200, "text/plain", {}, "0123456789"});
      },
      nullptr);
  ASSERT_TRUE(server.start().is_ok());
  auto response = plain_client()->get("127.0.0.1", server.port(), "/");
  ASSERT_TRUE(response.is_ok());
  EXPECT_EQ(*(*response)->read_all(4), "0123");
}

TEST(ProxyClientTest, ConnectionFailuresNameTheUrl) {
  int port = skiff::testing::free_tcp_port();
  auto response = plain_client()->get("127.0.0.1", port, "/containerLogs/a/b/c");
  ASSERT_FALSE(response.is_ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  std::string want = "Get \"http://127.0.0.1:" + std::to_string(port) +
                     "/containerLogs/a/b/c\": dial tcp 127.0.0.1:" + std::to_string(port) + ": ";
  EXPECT_EQ(response.status().message().substr(0, want.size()), want)
      << response.status().message();
}

TEST(ProxyClientTest, CancelWakesABlockedRead) {
  HttpServerOptions options;
  options.bind_address = "127.0.0.1";
  options.port = 0;
  std::shared_ptr<ResponseStream> held;
  std::mutex mu;
  HttpServer server(
      options,
      [&](Request&, Responder& r) {
        std::lock_guard lock(mu);
        held = r.stream(200, "text/plain");
      },
      nullptr);
  ASSERT_TRUE(server.start().is_ok());
  auto response = plain_client()->get("127.0.0.1", server.port(), "/");
  ASSERT_TRUE(response.is_ok());
  std::thread canceller([&] {
    std::this_thread::sleep_for(100ms);
    (*response)->cancel();
  });
  auto t0 = std::chrono::steady_clock::now();
  auto piece = (*response)->read();
  canceller.join();
  EXPECT_EQ(piece.status().code(), StatusCode::kCancelled);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ((*response)->read().status().code(), StatusCode::kCancelled);
  // The server sees the client go.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    std::lock_guard lock(mu);
    if (held && held->closed()) break;
    std::this_thread::sleep_for(10ms);
  }
  std::lock_guard lock(mu);
  ASSERT_TRUE(held);
  EXPECT_TRUE(held->closed());
  server.stop();
}

TEST(ProxyClientTest, TlsWithClientCertificateAndVerification) {
  skiff::testing::TempDir dir;
  pki::PkiOptions pki_options;
  pki_options.include_interface_addresses = false;
  auto state = pki::ensure_pki(dir.sub("pki"), pki_options);
  ASSERT_TRUE(state.is_ok()) << state.status().to_string();
  const pki::PkiPaths& p = state->paths;

  HttpServerOptions options;
  options.bind_address = "127.0.0.1";
  options.port = 0;
  options.cert_file = p.server_cert;
  options.key_file = p.server_key;
  options.client_ca_file = p.ca_cert;
  HttpServer server(
      options,
      [](Request& req, Responder& r) {
        r.respond(Response{200, "text/plain", {}, req.authenticated ? req.user.name : "anonymous"});
      },
      [](const ssl_st* tls, std::string_view, UserInfo* user) {
        if (tls == nullptr) return false;
        X509* cert = SSL_get0_peer_certificate(tls);
        if (cert == nullptr || SSL_get_verify_result(tls) != X509_V_OK) return false;
        auto info = pki::inspect_certificate(cert);
        if (!info.is_ok()) return false;
        user->name = info->common_name;
        return true;
      });
  ASSERT_TRUE(server.start().is_ok());

  ProxyClientOptions with_cert;
  with_cert.ca_file = p.ca_cert;
  with_cert.cert_file = p.admin_cert;
  with_cert.key_file = p.admin_key;
  auto client = ProxyClient::create(with_cert);
  ASSERT_TRUE(client.is_ok()) << client.status().to_string();
  auto response = (*client)->get("127.0.0.1", server.port(), "/");
  ASSERT_TRUE(response.is_ok()) << response.status().to_string();
  EXPECT_EQ(*(*response)->read_all(1024), "system:admin");
  // By DNS name too (SNI, name verification).
  response = (*client)->get("localhost", server.port(), "/");
  ASSERT_TRUE(response.is_ok()) << response.status().to_string();

  ProxyClientOptions anonymous;
  anonymous.ca_file = p.ca_cert;
  auto anon = ProxyClient::create(anonymous);
  ASSERT_TRUE(anon.is_ok());
  response = (*anon)->get("127.0.0.1", server.port(), "/");
  ASSERT_TRUE(response.is_ok());
  EXPECT_EQ(*(*response)->read_all(1024), "anonymous");

  // A server whose certificate another CA issued is refused.
  auto other = pki::ensure_pki(dir.sub("other"), pki_options);
  ASSERT_TRUE(other.is_ok());
  ProxyClientOptions wrong_ca;
  wrong_ca.ca_file = other->paths.ca_cert;
  auto strict = ProxyClient::create(wrong_ca);
  ASSERT_TRUE(strict.is_ok());
  response = (*strict)->get("127.0.0.1", server.port(), "/");
  ASSERT_FALSE(response.is_ok());
  EXPECT_NE(response.status().message().find("tls"), std::string::npos)
      << response.status().message();

  ProxyClientOptions missing;
  missing.cert_file = dir.sub("nope.crt");
  missing.key_file = dir.sub("nope.key");
  auto bad = ProxyClient::create(missing);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  server.stop();
}

}  // namespace
}  // namespace skiff::http
