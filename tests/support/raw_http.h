#pragma once

// Raw HTTP/1.1 over loopback sockets for tests that must see the bytes of an upgrade on both
// sides of a relay: buffered, timed byte streams (plain or OpenSSL TLS), dialing, header parsing,
// reading one answer (Content-Length, chunked or to the end), a bare listener, and an upstream
// that answers 101 and echoes upper-cased.
//
// Thread safety: a Wire, Listener or SslCtx belongs to one thread at a time (an SSL object is never
// shared between threads). EchoUpstream serves on a thread of its own; its saw(), heads() and
// wait_for*() may be called from any thread. The free functions are thread-safe.

#include <openssl/ssl.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace skiff::testing {

// Every blocking read, write or accept gives up after this, so a broken relay fails a test instead
// of hanging it.
constexpr int kRawIoTimeoutSeconds = 20;

// `s` with ASCII letters upper-cased.
std::string upper(std::string s);
bool contains(std::string_view haystack, std::string_view needle);
// Writes `data` to `path`, creating the parent directories.
void write_file(const std::string& path, const std::string& data);

// One end of a byte stream with buffered reads that time out (kRawIoTimeoutSeconds).
class Wire {
 public:
  virtual ~Wire() = default;
  // All of `data`; false when the stream broke.
  virtual bool write(std::string_view data) = 0;
  // Ends this side's sending (the peer reads the end of the stream).
  virtual void shutdown_write() = 0;

  // Everything up to and including `delim`; "" when the stream ended (or timed out) first. The
  // rest stays for later reads.
  std::string read_until(std::string_view delim);
  // n bytes, or fewer when the stream ended first.
  std::string read_exactly(size_t n);
  std::string read_to_end();
  // Whatever arrives next (at least one byte unless the stream ended).
  std::string read_some();
  // True when the peer closed the stream (rather than a read timing out) with nothing unread.
  bool ended();
  // Whether the last read gave up waiting (rather than seeing the stream end).
  bool timed_out() const { return timed_out_; }

 protected:
  // Bytes read into `data`; 0 at the end of the stream, on an error or a timeout (then
  // timed_out_ is set).
  virtual size_t receive(char* data, size_t size) = 0;
  bool timed_out_ = false;

 private:
  bool fill();
  std::string take(size_t n);
  std::string buffered_;
};

// A plain socket. Owns the descriptor.
class PlainWire final : public Wire {
 public:
  explicit PlainWire(int fd);
  ~PlainWire() override;
  PlainWire(const PlainWire&) = delete;
  PlainWire& operator=(const PlainWire&) = delete;
  bool write(std::string_view data) override;
  void shutdown_write() override;

 protected:
  size_t receive(char* data, size_t size) override;

 private:
  int fd_;
};

// A TLS stream. Owns the descriptor and the SSL object; the handshake is the caller's.
class TlsWire final : public Wire {
 public:
  TlsWire(int fd, SSL* ssl);
  ~TlsWire() override;
  TlsWire(const TlsWire&) = delete;
  TlsWire& operator=(const TlsWire&) = delete;
  bool write(std::string_view data) override;
  // Sends close_notify.
  void shutdown_write() override;
  SSL* ssl() const { return ssl_; }

 protected:
  size_t receive(char* data, size_t size) override;

 private:
  int fd_;
  SSL* ssl_;
};

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtx = std::unique_ptr<SSL_CTX, SslCtxFree>;

// A client context verifying the server against `ca_file`, presenting `cert_file`/`key_file` when
// given; nullptr when a file does not load.
SslCtx client_tls_context(const std::string& ca_file, const std::string& cert_file = "",
                          const std::string& key_file = "");
// A server context serving `cert_file`/`key_file` that requires a client certificate issued by
// `client_ca_file`; nullptr when a file does not load.
SslCtx server_tls_context(const std::string& cert_file, const std::string& key_file,
                          const std::string& client_ca_file);

// A connected socket to 127.0.0.1:port; -1 when refused.
int dial_loopback(int port);
// A plain connection to 127.0.0.1:port; nullptr when refused.
std::unique_ptr<PlainWire> dial_plain(int port);
// A TLS connection to 127.0.0.1:port with `ctx`, presenting `cert_file`/`key_file` when given;
// nullptr when refused or when the handshake (or loading a file) failed.
std::unique_ptr<TlsWire> dial_tls(int port, SSL_CTX* ctx, const std::string& cert_file = "",
                                  const std::string& key_file = "");
// The common name of the peer's certificate; "" without one.
std::string peer_common_name(SSL* ssl);

// The value of a header in a raw HTTP head ("" when absent); the name is matched without case.
std::string header_of(std::string_view head, std::string_view name);
// The request line's target ("GET /a?b HTTP/1.1" -> "/a?b").
std::string target_of(std::string_view head);

// One HTTP answer as a client reads it.
struct Answer {
  int status = 0;
  std::string head;
  std::string body;
};
// Reads an answer's head and, unless it is 101, its body (by Content-Length or chunked; else to
// the end of the stream).
Answer read_answer(Wire& wire);

// Echoes what arrives upper-cased until a chunk with a '!' came: then writes that chunk's part up
// to the '!' upper-cased followed by `after_bang`, and returns (also when the stream ends).
void echo_upper_until_bang(Wire& wire, std::string_view after_bang = "");

// A listening socket on 127.0.0.1 (aborts when it cannot bind).
class Listener {
 public:
  Listener();
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  int port() const { return port_; }
  // The next connection; -1 when none came within `timeout_ms` (default the I/O timeout).
  int accept_fd(int timeout_ms = kRawIoTimeoutSeconds * 1000);
  std::unique_ptr<PlainWire> accept_plain();

 private:
  int fd_ = -1;
  int port_ = 0;
};

// What an EchoUpstream saw of one connection.
struct UpstreamSaw {
  std::string client_cn;  // TLS only; "" when the handshake failed or without a certificate
  std::string head;       // "" when no request head arrived
};

struct EchoUpstreamOptions {
  // TLS with this server context; plain without one.
  SslCtx tls;
  // The 101 answer's head, sent followed by `greeting`.
  std::string switching;
  std::string greeting = "ready\n";
  // A whole answer to send instead of switching (then the connection closes); "" to switch.
  std::function<std::string(const std::string& head)> refusal;
};

// An upstream on 127.0.0.1 serving one connection at a time on a thread of its own: it records
// each request head, then answers `switching` + `greeting` and echoes what it gets upper-cased
// until a '!' (then it closes), unless `refusal` answers for the head.
class EchoUpstream {
 public:
  explicit EchoUpstream(EchoUpstreamOptions options);
  ~EchoUpstream();
  EchoUpstream(const EchoUpstream&) = delete;
  EchoUpstream& operator=(const EchoUpstream&) = delete;

  int port() const { return listener_.port(); }
  std::vector<UpstreamSaw> saw();
  std::vector<std::string> heads();
  // Waits (up to the I/O timeout) until `n` connections were seen; the n-th, or {} on timeout.
  UpstreamSaw wait_for(size_t n);
  std::string wait_for_head(size_t n) { return wait_for(n).head; }

 private:
  void serve();
  void serve_one(Wire& wire, SSL* ssl);
  void record(UpstreamSaw s);

  EchoUpstreamOptions options_;
  Listener listener_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<UpstreamSaw> saw_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace skiff::testing
