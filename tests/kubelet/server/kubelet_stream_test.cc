// The kubelet server's /exec, /attach and /portforward: an authenticated client's upgrade request
// is decoded into a StreamRequest, PodLookup::stream_url names the runtime's streaming server, and
// the connection is relayed there. The client here speaks HTTP over a raw TLS socket (OpenSSL) and
// the "runtime" is a raw plain socket in the test, so the bytes on both sides are visible.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/pki.h"
#include "kubelet/server/kubelet_server.h"
#include "support/ports.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::server {
namespace {

using namespace std::chrono_literals;

// Every blocking read or write gives up after this, so a broken relay fails a test instead of
// hanging it.
constexpr int kIoTimeoutSeconds = 20;

void write_file(const std::string& path, const std::string& data) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// ---- Raw connections ---------------------------------------------------------------------------

// A byte stream with buffered, timed reads.
class Wire {
 public:
  virtual ~Wire() = default;
  virtual bool write(std::string_view data) = 0;

  // Everything up to and including `delim`; "" when the stream ended (or timed out) first.
  std::string read_until(std::string_view delim) {
    while (true) {
      size_t at = buffered_.find(delim);
      if (at != std::string::npos) return take(at + delim.size());
      if (!fill()) return "";
    }
  }
  // n bytes, or fewer when the stream ended first.
  std::string read_exactly(size_t n) {
    while (buffered_.size() < n && fill()) {
    }
    return take(std::min(n, buffered_.size()));
  }
  std::string read_to_end() {
    while (fill()) {
    }
    return take(buffered_.size());
  }
  // Whatever arrives next (at least one byte unless the stream ended).
  std::string read_some() {
    if (buffered_.empty()) fill();
    return take(buffered_.size());
  }
  // True when the peer closed the stream (rather than a read timing out) with nothing unread.
  bool ended() { return buffered_.empty() && !fill() && !timed_out_; }

 protected:
  // Bytes read into `data`; 0 at the end of the stream, on an error or a timeout (then
  // timed_out_ is set).
  virtual size_t receive(char* data, size_t size) = 0;
  bool timed_out_ = false;

 private:
  bool fill() {
    char buf[16 * 1024];
    size_t n = receive(buf, sizeof(buf));
    buffered_.append(buf, n);
    return n > 0;
  }
  std::string take(size_t n) {
    std::string out = buffered_.substr(0, n);
    buffered_.erase(0, n);
    return out;
  }
  std::string buffered_;
};

void set_timeouts(int fd) {
  timeval tv{kIoTimeoutSeconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

class PlainWire final : public Wire {
 public:
  explicit PlainWire(int fd) : fd_(fd) { set_timeouts(fd_); }
  ~PlainWire() override { ::close(fd_); }
  bool write(std::string_view data) override {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

 protected:
  size_t receive(char* data, size_t size) override {
    ssize_t n = ::recv(fd_, data, size, 0);
    timed_out_ = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    return n > 0 ? static_cast<size_t>(n) : 0;
  }

 private:
  int fd_;
};

class TlsWire final : public Wire {
 public:
  // Takes both; the handshake is done by the caller.
  TlsWire(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) { set_timeouts(fd_); }
  ~TlsWire() override {
    SSL_free(ssl_);
    ::close(fd_);
  }
  bool write(std::string_view data) override {
    while (!data.empty()) {
      int n = SSL_write(ssl_, data.data(), static_cast<int>(data.size()));
      if (n <= 0) {
        ERR_clear_error();
        return false;
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

 protected:
  size_t receive(char* data, size_t size) override {
    errno = 0;
    int n = SSL_read(ssl_, data, static_cast<int>(size));
    if (n <= 0) {
      int error = SSL_get_error(ssl_, n);
      timed_out_ = (error == SSL_ERROR_SYSCALL || error == SSL_ERROR_WANT_READ) &&
                   (errno == EAGAIN || errno == EWOULDBLOCK);
      ERR_clear_error();
      return 0;
    }
    return static_cast<size_t>(n);
  }

 private:
  int fd_;
  SSL* ssl_;
};

int dial_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// The value of a header in a raw HTTP head ("" when absent); the name is matched without case.
std::string header_of(std::string_view head, std::string_view name) {
  size_t line = head.find("\r\n");
  while (line != std::string_view::npos) {
    size_t start = line + 2;
    size_t end = head.find("\r\n", start);
    if (end == std::string_view::npos || end == start) break;
    std::string_view field = head.substr(start, end - start);
    size_t colon = field.find(':');
    if (colon == name.size() && strncasecmp(field.data(), name.data(), name.size()) == 0) {
      std::string_view value = field.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      return std::string(value);
    }
    line = end;
  }
  return "";
}

// One HTTP answer as a client reads it.
struct Answer {
  int status = 0;
  std::string head;
  std::string body;
};

// Reads an answer's head and, unless it is 101, its body (by Content-Length or chunked; else to
// the end of the stream).
Answer read_answer(Wire& wire) {
  Answer a;
  a.head = wire.read_until("\r\n\r\n");
  if (a.head.size() < 12 || !a.head.starts_with("HTTP/1.")) return a;
  a.status = std::atoi(a.head.c_str() + 9);
  if (a.status == 101) return a;
  std::string length = header_of(a.head, "Content-Length");
  if (!length.empty()) {
    a.body = wire.read_exactly(static_cast<size_t>(std::stoul(length)));
  } else if (contains(header_of(a.head, "Transfer-Encoding"), "chunked")) {
    while (true) {
      std::string size_line = wire.read_until("\r\n");
      size_t n = size_line.empty() ? 0 : std::stoul(size_line, nullptr, 16);
      if (n == 0) {
        wire.read_until("\r\n");
        break;
      }
      a.body += wire.read_exactly(n);
      wire.read_exactly(2);
    }
  } else {
    a.body = wire.read_to_end();
  }
  return a;
}

// ---- The runtime's streaming server ------------------------------------------------------------

const char kRuntimeSwitching[] =
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Connection: Upgrade\r\n"
    "Upgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    "X-From-Runtime: yes\r\n"
    "\r\n";

// A plain HTTP listener on 127.0.0.1 that serves one connection at a time: it keeps the request
// head, answers 101 followed by "ready\n", then echoes what it gets upper-cased until a '!'
// (then it closes). A request for /refuse is answered 400 instead, as a runtime that does not
// speak the requested protocol does.
class FakeRuntime {
 public:
  FakeRuntime() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(fd_, 8), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeRuntime() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }

  int port() const { return port_; }

  // The request heads received so far.
  std::vector<std::string> heads() {
    std::lock_guard lock(mu_);
    return heads_;
  }
  // Waits (up to the I/O timeout) until `n` heads arrived; the last one, or "" on timeout.
  std::string wait_for_head(size_t n) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(kIoTimeoutSeconds), [&] { return heads_.size() >= n; });
    return heads_.size() >= n ? heads_[n - 1] : "";
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) != 1) continue;
      int fd = ::accept(fd_, nullptr, nullptr);
      if (fd < 0) continue;
      PlainWire conn(fd);
      std::string head = conn.read_until("\r\n\r\n");
      {
        std::lock_guard lock(mu_);
        heads_.push_back(head);
        cv_.notify_all();
      }
      if (head.empty()) continue;
      if (head.find(" /refuse") != std::string::npos) {
        const std::string body = "websocket: the client is not using the websocket protocol";
        conn.write("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
        continue;
      }
      if (!conn.write(std::string(kRuntimeSwitching) + "ready\n")) continue;
      while (true) {
        std::string got = conn.read_some();
        if (got.empty()) break;
        size_t bang = got.find('!');
        if (bang != std::string::npos) {
          conn.write(upper(got.substr(0, bang + 1)));
          break;
        }
        if (!conn.write(upper(got))) break;
      }
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> heads_;  // guarded by mu_
  std::thread thread_;
};

// ---- The fixture -------------------------------------------------------------------------------

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};

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
    }
    auto s = KubeletServer::create(options_, std::move(lookup));
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
  }

  // A TLS connection to the kubelet's secure port, with the client certificate or without.
  std::unique_ptr<TlsWire> dial(bool with_cert = true) {
    if (!ssl_ctx_) {
      ssl_ctx_.reset(SSL_CTX_new(TLS_client_method()));
      EXPECT_EQ(
          SSL_CTX_load_verify_locations(ssl_ctx_.get(), dir_.sub("pki/ca.crt").c_str(), nullptr),
          1);
      SSL_CTX_set_verify(ssl_ctx_.get(), SSL_VERIFY_PEER, nullptr);
    }
    int fd = dial_loopback(server_->port());
    if (fd < 0) return nullptr;
    SSL* ssl = SSL_new(ssl_ctx_.get());
    if (with_cert) {
      EXPECT_EQ(SSL_use_certificate_chain_file(ssl, dir_.sub("pki/client.crt").c_str()), 1);
      EXPECT_EQ(SSL_use_PrivateKey_file(ssl, dir_.sub("pki/client.key").c_str(), SSL_FILETYPE_PEM),
                1);
    }
    SSL_set_fd(ssl, fd);
    auto wire = std::make_unique<TlsWire>(fd, ssl);
    if (SSL_connect(ssl) != 1) {
      ERR_clear_error();
      return nullptr;
    }
    return wire;
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
  FakeRuntime runtime_;
  std::unique_ptr<KubeletServer> server_;
  std::unique_ptr<SSL_CTX, SslCtxFree> ssl_ctx_;
  std::mutex mu_;
  std::vector<StreamRequest> requests_;  // guarded by mu_
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

}  // namespace
}  // namespace skiff::kubelet::server
