// The HTTP server's upgrade relay (kubectl exec/attach/port-forward): a client's upgrade request
// goes to an upstream, a 101 answer turns the connection into a byte pipe both ways, any other
// answer is passed on. Upstreams here are raw sockets (plain or OpenSSL) on loopback, since an
// HttpServer cannot answer 101 itself.

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "base/pki.h"
#include "httpserver/http.h"
#include "httpserver/http_server.h"
#include "support/ports.h"
#include "support/raw_http.h"
#include "support/temp_dir.h"

namespace skiff::http {
namespace {

using namespace std::chrono_literals;

using skiff::testing::dial_plain;
using skiff::testing::echo_upper_until_bang;
using skiff::testing::Listener;
using skiff::testing::SslCtx;
using skiff::testing::TlsWire;
using skiff::testing::upper;

HttpServerOptions loopback_options() {
  HttpServerOptions options;
  options.bind_address = "127.0.0.1";
  options.port = 0;
  options.io_threads = 2;
  options.worker_threads = 4;
  return options;
}

// A handler relaying every request to 127.0.0.1:upstream_port (requests for /plain are answered
// directly).
HttpHandler relay_to(int upstream_port, std::string target_path) {
  return [upstream_port, target_path](Request& req, Responder& r) {
    if (req.path == "/plain") {
      r.respond(Response{200, "text/plain", {}, "plain answer"});
      return;
    }
    UpgradeTarget target;
    target.host = "127.0.0.1";
    target.port = upstream_port;
    target.method = req.method;
    target.target = target_path;
    target.headers = upgrade_headers(req);
    r.upgrade(std::move(target));
  };
}

const char kExecRequest[] =
    "POST /api/v1/namespaces/default/pods/p/exec?command=sh&stdin=true HTTP/1.1\r\n"
    "Host: skiff.test\r\n"
    "Authorization: Bearer secret-token\r\n"
    "User-Agent: kubectl/v1.32\r\n"
    "Connection: Upgrade\r\n"
    "Upgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    "X-Stream-Protocol-Version: v3.channel.k8s.io\r\n"
    "\r\n";

const char kSwitching[] =
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Connection: Upgrade\r\n"
    "Upgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    "X-Relay-Check: from-upstream\r\n"
    "\r\n";

TEST(UpgradeRelayTest, RelaysBothWaysUntilTheUpstreamCloses) {
  Listener upstream;
  std::promise<std::string> upstream_saw;
  std::jthread upstream_thread([&] {
    auto conn = upstream.accept_plain();
    if (!conn) {
      upstream_saw.set_value("no connection");
      return;
    }
    upstream_saw.set_value(conn->read_until("\r\n\r\n"));
    // Something sent right after the head, before the client sent anything.
    conn->write(std::string(kSwitching) + "welcome\n");
    echo_upper_until_bang(*conn, "\nbye\n");
  });

  HttpServerOptions options = loopback_options();
  options.max_in_flight = 1;
  HttpServer server(options, relay_to(upstream.port(), "/exec/abc?command=sh&stdin=true"), nullptr);
  ASSERT_TRUE(server.start().is_ok());
  auto client = dial_plain(server.port());
  ASSERT_TRUE(client);
  // Bytes right behind the request reach the upstream after it switched.
  ASSERT_TRUE(client->write(std::string(kExecRequest) + "early\n"));

  std::string head = client->read_until("\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("\r\nX-Relay-Check: from-upstream\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nUpgrade: SPDY/3.1\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"), std::string::npos)
      << head;
  EXPECT_EQ(client->read_exactly(8), "welcome\n");
  EXPECT_EQ(client->read_exactly(6), "EARLY\n");

  // The request line, Host and relayed headers, without the client's credentials.
  std::string up_head = upstream_saw.get_future().get();
  EXPECT_EQ(up_head.rfind("POST /exec/abc?command=sh&stdin=true HTTP/1.1\r\n", 0), 0u) << up_head;
  EXPECT_NE(up_head.find("\r\nHost: 127.0.0.1:" + std::to_string(upstream.port()) + "\r\n"),
            std::string::npos)
      << up_head;
  EXPECT_NE(up_head.find("\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                         "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
                         "X-Stream-Protocol-Version: v3.channel.k8s.io\r\n"),
            std::string::npos)
      << up_head;
  EXPECT_EQ(up_head.find("Authorization"), std::string::npos) << up_head;
  EXPECT_EQ(up_head.find("secret-token"), std::string::npos) << up_head;
  EXPECT_EQ(up_head.find("User-Agent"), std::string::npos) << up_head;
  EXPECT_EQ(up_head.find("Content-Length"), std::string::npos) << up_head;

  // A relay holds no in-flight slot: with max_in_flight = 1 another request still gets through.
  {
    auto other = dial_plain(server.port());
    ASSERT_TRUE(other);
    other->write("GET /plain HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    std::string reply = other->read_to_end();
    EXPECT_EQ(reply.rfind("HTTP/1.1 200", 0), 0u) << reply;
  }

  for (int i = 0; i < 5; ++i) {
    std::string message = "message " + std::to_string(i) + "\n";
    ASSERT_TRUE(client->write(message));
    EXPECT_EQ(client->read_exactly(message.size()), upper(message));
  }

  // 2 MiB each way at once: the relay streams instead of buffering whole messages (sending it
  // all before reading any would stall on full socket buffers otherwise).
  std::string big(2 * 1024 * 1024, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + (i * 7 + i / 13) % 26);
  std::thread writer([&] { EXPECT_TRUE(client->write(big)); });
  std::string echoed = client->read_exactly(big.size());
  writer.join();
  EXPECT_EQ(echoed.size(), big.size());
  EXPECT_TRUE(echoed == upper(big));

  ASSERT_TRUE(client->write("done!"));
  EXPECT_EQ(client->read_exactly(10), "DONE!\nbye\n");
  // The upstream closed: the client sees the end after all data.
  EXPECT_TRUE(client->ended());
  upstream_thread.join();
  server.stop();
}

TEST(UpgradeRelayTest, ClientHalfCloseStillReceivesTheUpstreamsRest) {
  Listener upstream;
  std::jthread upstream_thread([&] {
    auto conn = upstream.accept_plain();
    if (!conn) return;
    conn->read_until("\r\n\r\n");
    conn->write(kSwitching);
    // Collects until the relay passes the client's end on, then answers and closes.
    std::string all = conn->read_to_end();
    conn->write(upper(all) + (conn->timed_out() ? "TIMED OUT\n" : "END\n"));
  });

  HttpServer server(loopback_options(), relay_to(upstream.port(), "/attach"), nullptr);
  ASSERT_TRUE(server.start().is_ok());
  auto client = dial_plain(server.port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->write(kExecRequest));
  std::string head = client->read_until("\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 101 ", 0), 0u) << head;
  std::string data = "stdin data, then end of input;" + std::string(300 * 1024, 'q');
  ASSERT_TRUE(client->write(data));
  client->shutdown_write();
  std::string rest = client->read_to_end();
  EXPECT_EQ(rest.size(), data.size() + 4);
  EXPECT_TRUE(rest == upper(data) + "END\n") << rest.substr(0, 100);
  upstream_thread.join();
  server.stop();
}

TEST(UpgradeRelayTest, AnAnswerOtherThan101IsPassedOn) {
  Listener upstream;
  std::promise<std::string> upstream_saw;
  std::jthread upstream_thread([&] {
    auto conn = upstream.accept_plain();
    if (!conn) {
      upstream_saw.set_value("no connection");
      return;
    }
    std::string head = conn->read_until("\r\n\r\n");
    std::string body = conn->read_exactly(5);
    upstream_saw.set_value(head + body);
    conn->write(
        "HTTP/1.1 400 Bad Request\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Transfer-Encoding: chunked\r\n"
        "X-Detail: nope\r\n"
        "Connection: close, X-Hop\r\n"
        "X-Hop: for-the-relay-only\r\n"
        "\r\n"
        "5\r\nbad r\r\n6\r\nequest\r\n0\r\n\r\n");
  });

  HttpServer server(loopback_options(), relay_to(upstream.port(), "/portForward/x"), nullptr);
  ASSERT_TRUE(server.start().is_ok());
  auto client = dial_plain(server.port());
  ASSERT_TRUE(client);
  std::string request = kExecRequest;
  request.insert(request.size() - 2, "Content-Length: 5\r\n");
  ASSERT_TRUE(client->write(request + "hello"));
  std::string reply = client->read_to_end();
  EXPECT_EQ(reply.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << reply;
  EXPECT_NE(reply.find("\r\nContent-Type: text/plain; charset=utf-8\r\n"), std::string::npos)
      << reply;
  EXPECT_NE(reply.find("\r\nX-Detail: nope\r\n"), std::string::npos) << reply;
  EXPECT_NE(reply.find("\r\nContent-Length: 11\r\n"), std::string::npos) << reply;
  EXPECT_EQ(reply.find("chunked"), std::string::npos) << reply;
  EXPECT_EQ(reply.find("X-Hop"), std::string::npos) << reply;
  size_t body_at = reply.find("\r\n\r\n");
  ASSERT_NE(body_at, std::string::npos);
  EXPECT_EQ(reply.substr(body_at + 4), "bad request");

  // The request body went along, with its length.
  std::string up = upstream_saw.get_future().get();
  EXPECT_NE(up.find("\r\nContent-Length: 5\r\n"), std::string::npos) << up;
  EXPECT_EQ(up.substr(up.size() - 9), "\r\n\r\nhello") << up;
  upstream_thread.join();
  server.stop();
}

TEST(UpgradeRelayTest, UnreachableUpstreamIs502NamingIt) {
  int port = skiff::testing::free_tcp_port();
  HttpServer server(loopback_options(), relay_to(port, "/exec"), nullptr);
  ASSERT_TRUE(server.start().is_ok());
  auto client = dial_plain(server.port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->write(kExecRequest));
  std::string reply = client->read_to_end();
  EXPECT_EQ(reply.rfind("HTTP/1.1 502 ", 0), 0u) << reply;
  EXPECT_NE(reply.find("\"kind\":\"Status\""), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"code\":502"), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"message\":\"error dialing backend: dial tcp 127.0.0.1:" +
                       std::to_string(port) + ": connect: connection refused\""),
            std::string::npos)
      << reply;
  server.stop();
}

TEST(UpgradeRelayTest, StopEndsARelayPromptly) {
  Listener upstream;
  std::promise<bool> upstream_ended;  // true when the relay's side closed (not a timeout)
  std::jthread upstream_thread([&] {
    auto conn = upstream.accept_plain();
    if (!conn) {
      upstream_ended.set_value(false);
      return;
    }
    conn->read_until("\r\n\r\n");
    conn->write(kSwitching);
    conn->read_to_end();
    upstream_ended.set_value(!conn->timed_out());
  });
  auto server =
      std::make_unique<HttpServer>(loopback_options(), relay_to(upstream.port(), "/exec"), nullptr);
  ASSERT_TRUE(server->start().is_ok());
  auto client = dial_plain(server->port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->write(kExecRequest));
  std::string head = client->read_until("\r\n\r\n");
  ASSERT_EQ(head.rfind("HTTP/1.1 101 ", 0), 0u) << head;

  auto t0 = std::chrono::steady_clock::now();
  server->stop();
  server.reset();
  // Both ends see the relay go.
  EXPECT_TRUE(client->ended());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_TRUE(upstream_ended.get_future().get());
  upstream_thread.join();
}

// ---- TLS on both sides -------------------------------------------------------------------------

TEST(UpgradeRelayTest, TlsClientAndTlsUpstreamWithClientCertificate) {
  skiff::testing::TempDir dir;
  pki::PkiOptions pki_options;
  pki_options.include_interface_addresses = false;
  auto state = pki::ensure_pki(dir.sub("pki"), pki_options);
  ASSERT_TRUE(state.is_ok()) << state.status().to_string();
  const pki::PkiPaths& p = state->paths;
  auto other = pki::ensure_pki(dir.sub("other"), pki_options);
  ASSERT_TRUE(other.is_ok()) << other.status().to_string();

  // The upstream: TLS with the serving certificate, requiring a client certificate of the CA.
  SslCtx upstream_ctx(SSL_CTX_new(TLS_server_method()));
  ASSERT_EQ(SSL_CTX_use_certificate_chain_file(upstream_ctx.get(), p.server_cert.c_str()), 1);
  ASSERT_EQ(SSL_CTX_use_PrivateKey_file(upstream_ctx.get(), p.server_key.c_str(), SSL_FILETYPE_PEM),
            1);
  ASSERT_EQ(SSL_CTX_load_verify_locations(upstream_ctx.get(), p.ca_cert.c_str(), nullptr), 1);
  SSL_CTX_set_verify(upstream_ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                     nullptr);
  Listener upstream;
  std::promise<std::string> upstream_saw;  // client CN, SNI and request head
  std::jthread upstream_thread([&] {
    // The first connection (the relay with the wrong CA) fails its handshake; the second is
    // served.
    for (int attempt = 0; attempt < 3; ++attempt) {
      int fd = upstream.accept_fd();
      if (fd < 0) break;
      SSL* ssl = SSL_new(upstream_ctx.get());
      SSL_set_fd(ssl, fd);
      TlsWire conn(fd, ssl);
      if (SSL_accept(ssl) != 1) {
        ERR_clear_error();
        continue;
      }
      const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
      std::string seen =
          "cn=" + skiff::testing::peer_common_name(ssl) + " sni=" + (sni ? sni : "") + "\n";
      seen += conn.read_until("\r\n\r\n");
      upstream_saw.set_value(seen);
      conn.write(kSwitching);
      echo_upper_until_bang(conn, "\nbye\n");
      SSL_shutdown(ssl);
      return;
    }
    upstream_saw.set_value("no TLS connection");
  });

  HttpServerOptions options = loopback_options();
  options.cert_file = p.server_cert;
  options.key_file = p.server_key;
  int upstream_port = upstream.port();
  std::string wrong_ca = other->paths.ca_cert;
  HttpServer server(
      options,
      [&p, upstream_port, wrong_ca](Request& req, Responder& r) {
        UpgradeTarget target;
        target.host = "localhost";  // a DNS name: resolved, sent as SNI, verified
        target.port = upstream_port;
        target.tls = true;
        target.ca_file = req.path == "/wrong-ca" ? wrong_ca : p.ca_cert;
        target.cert_file = p.admin_cert;
        target.key_file = p.admin_key;
        target.method = req.method;
        target.target = "/exec/tls";
        target.headers = upgrade_headers(req);
        r.upgrade(std::move(target));
      },
      nullptr);
  ASSERT_TRUE(server.start().is_ok());

  SslCtx client_ctx(SSL_CTX_new(TLS_client_method()));
  ASSERT_EQ(SSL_CTX_load_verify_locations(client_ctx.get(), p.ca_cert.c_str(), nullptr), 1);
  SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_PEER, nullptr);
  auto tls_dial = [&] { return skiff::testing::dial_tls(server.port(), client_ctx.get()); };

  // An upstream whose certificate does not chain to the given CA is refused: 502.
  {
    auto client = tls_dial();
    ASSERT_TRUE(client);
    std::string request = kExecRequest;
    request.replace(request.find(' ') + 1, request.find(" HTTP/") - request.find(' ') - 1,
                    "/wrong-ca");
    ASSERT_TRUE(client->write(request));
    std::string reply = client->read_to_end();
    EXPECT_EQ(reply.rfind("HTTP/1.1 502 ", 0), 0u) << reply;
    EXPECT_NE(reply.find("error dialing backend: tls handshake with localhost:" +
                         std::to_string(upstream_port)),
              std::string::npos)
        << reply;
  }

  auto client = tls_dial();
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->write(kExecRequest));
  std::string head = client->read_until("\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("\r\nX-Relay-Check: from-upstream\r\n"), std::string::npos) << head;
  std::string seen = upstream_saw.get_future().get();
  EXPECT_EQ(seen.rfind("cn=system:admin sni=localhost\nPOST /exec/tls HTTP/1.1\r\n", 0), 0u)
      << seen;
  EXPECT_NE(seen.find("\r\nHost: localhost:" + std::to_string(upstream_port) + "\r\n"),
            std::string::npos)
      << seen;

  ASSERT_TRUE(client->write("over tls\n"));
  EXPECT_EQ(client->read_exactly(9), "OVER TLS\n");
  // One side at a time (an SSL object is not shared between threads), so a size the socket
  // buffers hold.
  std::string bulk(48 * 1024, 'z');
  ASSERT_TRUE(client->write(bulk));
  EXPECT_TRUE(client->read_exactly(bulk.size()) == upper(bulk));
  ASSERT_TRUE(client->write("end!"));
  EXPECT_EQ(client->read_exactly(9), "END!\nbye\n");
  EXPECT_TRUE(client->ended());
  upstream_thread.join();
  server.stop();
}

// ---- Pieces without a connection ---------------------------------------------------------------

TEST(UpgradeHeadersTest, PicksExactlyTheUpgradeHeadersInOrder) {
  Request req;
  req.headers = {
      {"Host", "skiff"},
      {"connection", "Upgrade"},
      {"Authorization", "Bearer x"},
      {"UPGRADE", "websocket"},
      {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
      {"Sec-WebSocket-Accept", "not-a-request-header"},
      {"sec-websocket-version", "13"},
      {"Sec-WebSocket-Protocol", "v5.channel.k8s.io"},
      {"Sec-WebSocket-Protocol", "v4.channel.k8s.io"},
      {"Sec-WebSocket-Extensions", "permessage-deflate"},
      {"Cookie", "c=1"},
      {"X-Stream-Protocol-Version", "v4.channel.k8s.io"},
      {"Content-Length", "0"},
      {"x-stream-protocol-version", "v3.channel.k8s.io"},
      {"X-Stream-Protocol-Versions", "near miss"},
      {"Upgrade-Insecure-Requests", "1"},
  };
  std::vector<HttpHeader> got = upgrade_headers(req);
  std::vector<std::pair<std::string, std::string>> flat;
  for (const HttpHeader& h : got) flat.emplace_back(h.name, h.value);
  std::vector<std::pair<std::string, std::string>> want = {
      {"connection", "Upgrade"},
      {"UPGRADE", "websocket"},
      {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
      {"sec-websocket-version", "13"},
      {"Sec-WebSocket-Protocol", "v5.channel.k8s.io"},
      {"Sec-WebSocket-Protocol", "v4.channel.k8s.io"},
      {"Sec-WebSocket-Extensions", "permessage-deflate"},
      {"X-Stream-Protocol-Version", "v4.channel.k8s.io"},
      {"x-stream-protocol-version", "v3.channel.k8s.io"},
  };
  EXPECT_EQ(flat, want);
  EXPECT_TRUE(upgrade_headers(Request{}).empty());
}

class RecordingResponder final : public Responder {
 public:
  void respond(Response response) override { response_ = std::move(response); }
  std::shared_ptr<ResponseStream> stream(int, std::string, std::vector<HttpHeader>) override {
    return nullptr;
  }
  const Response& response() const { return response_; }

 private:
  Response response_{0, "", {}, ""};
};

TEST(UpgradeHeadersTest, ResponderWithoutAConnectionAnswers500) {
  RecordingResponder r;
  UpgradeTarget target;
  target.host = "127.0.0.1";
  target.port = 1;
  r.upgrade(std::move(target));
  EXPECT_EQ(r.response().status, 500);
  EXPECT_EQ(r.response().content_type, "application/json");
  EXPECT_NE(r.response().body.find("\"kind\":\"Status\""), std::string::npos);
  EXPECT_NE(r.response().body.find("\"message\":\"this server cannot relay upgrades\""),
            std::string::npos)
      << r.response().body;
  EXPECT_NE(r.response().body.find("\"code\":500"), std::string::npos);
}

}  // namespace
}  // namespace skiff::http
