#include "support/raw_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "base/check.h"

namespace skiff::testing {

namespace {

void set_io_timeouts(int fd) {
  timeval tv{kRawIoTimeoutSeconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

}  // namespace

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

void write_file(const std::string& path, const std::string& data) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// ---- Wire --------------------------------------------------------------------------------------

std::string Wire::read_until(std::string_view delim) {
  while (true) {
    size_t at = buffered_.find(delim);
    if (at != std::string::npos) return take(at + delim.size());
    if (!fill()) return "";
  }
}

std::string Wire::read_exactly(size_t n) {
  while (buffered_.size() < n && fill()) {
  }
  return take(std::min(n, buffered_.size()));
}

std::string Wire::read_to_end() {
  while (fill()) {
  }
  return take(buffered_.size());
}

std::string Wire::read_some() {
  if (buffered_.empty()) fill();
  return take(buffered_.size());
}

bool Wire::ended() {
  return buffered_.empty() && !fill() && !timed_out_;
}

bool Wire::fill() {
  char buf[16 * 1024];
  size_t n = receive(buf, sizeof(buf));
  buffered_.append(buf, n);
  return n > 0;
}

std::string Wire::take(size_t n) {
  std::string out = buffered_.substr(0, n);
  buffered_.erase(0, n);
  return out;
}

PlainWire::PlainWire(int fd) : fd_(fd) {
  set_io_timeouts(fd_);
}

PlainWire::~PlainWire() {
  ::close(fd_);
}

bool PlainWire::write(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

void PlainWire::shutdown_write() {
  ::shutdown(fd_, SHUT_WR);
}

size_t PlainWire::receive(char* data, size_t size) {
  ssize_t n = ::recv(fd_, data, size, 0);
  timed_out_ = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  return n > 0 ? static_cast<size_t>(n) : 0;
}

TlsWire::TlsWire(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {
  set_io_timeouts(fd_);
}

TlsWire::~TlsWire() {
  SSL_free(ssl_);
  ::close(fd_);
}

bool TlsWire::write(std::string_view data) {
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

void TlsWire::shutdown_write() {
  SSL_shutdown(ssl_);
}

size_t TlsWire::receive(char* data, size_t size) {
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

// ---- TLS contexts and dialing ------------------------------------------------------------------

SslCtx client_tls_context(const std::string& ca_file, const std::string& cert_file,
                          const std::string& key_file) {
  SslCtx ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx || SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  if (!cert_file.empty() &&
      (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_file.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1)) {
    ERR_clear_error();
    return nullptr;
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  return ctx;
}

SslCtx server_tls_context(const std::string& cert_file, const std::string& key_file,
                          const std::string& client_ca_file) {
  SslCtx ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx || SSL_CTX_use_certificate_chain_file(ctx.get(), cert_file.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(ctx.get(), client_ca_file.c_str(), nullptr) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return ctx;
}

int dial_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
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

std::unique_ptr<PlainWire> dial_plain(int port) {
  int fd = dial_loopback(port);
  return fd < 0 ? nullptr : std::make_unique<PlainWire>(fd);
}

std::unique_ptr<TlsWire> dial_tls(int port, SSL_CTX* ctx, const std::string& cert_file,
                                  const std::string& key_file) {
  int fd = dial_loopback(port);
  if (fd < 0) return nullptr;
  SSL* ssl = SSL_new(ctx);
  auto wire = std::make_unique<TlsWire>(fd, ssl);
  if (!cert_file.empty() &&
      (SSL_use_certificate_chain_file(ssl, cert_file.c_str()) != 1 ||
       SSL_use_PrivateKey_file(ssl, key_file.c_str(), SSL_FILETYPE_PEM) != 1)) {
    ERR_clear_error();
    return nullptr;
  }
  SSL_set_fd(ssl, fd);
  if (SSL_connect(ssl) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  return wire;
}

std::string peer_common_name(SSL* ssl) {
  X509* peer = SSL_get0_peer_certificate(ssl);
  if (!peer) return "";
  char cn[256] = "";
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof(cn)) < 0) {
    return "";
  }
  return cn;
}

// ---- Parsing -----------------------------------------------------------------------------------

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

std::string target_of(std::string_view head) {
  size_t first = head.find(' ');
  if (first == std::string_view::npos) return "";
  size_t second = head.find(' ', first + 1);
  if (second == std::string_view::npos) return "";
  return std::string(head.substr(first + 1, second - first - 1));
}

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

void echo_upper_until_bang(Wire& wire, std::string_view after_bang) {
  while (true) {
    std::string got = wire.read_some();
    if (got.empty()) return;
    size_t bang = got.find('!');
    if (bang != std::string::npos) {
      wire.write(upper(got.substr(0, bang + 1)) + std::string(after_bang));
      return;
    }
    if (!wire.write(upper(got))) return;
  }
}

// ---- Listener and EchoUpstream -----------------------------------------------------------------

Listener::Listener() {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  SKIFF_CHECK(fd_ >= 0, "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  SKIFF_CHECK(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0, "bind");
  SKIFF_CHECK(::listen(fd_, 8) == 0, "listen");
  socklen_t len = sizeof(addr);
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
}

Listener::~Listener() {
  ::close(fd_);
}

int Listener::accept_fd(int timeout_ms) {
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return -1;
  return ::accept(fd_, nullptr, nullptr);
}

std::unique_ptr<PlainWire> Listener::accept_plain() {
  int fd = accept_fd();
  return fd < 0 ? nullptr : std::make_unique<PlainWire>(fd);
}

EchoUpstream::EchoUpstream(EchoUpstreamOptions options) : options_(std::move(options)) {
  thread_ = std::thread([this] { serve(); });
}

EchoUpstream::~EchoUpstream() {
  stop_ = true;
  thread_.join();
}

std::vector<UpstreamSaw> EchoUpstream::saw() {
  std::lock_guard lock(mu_);
  return saw_;
}

std::vector<std::string> EchoUpstream::heads() {
  std::vector<std::string> out;
  for (const UpstreamSaw& s : saw()) out.push_back(s.head);
  return out;
}

UpstreamSaw EchoUpstream::wait_for(size_t n) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, std::chrono::seconds(kRawIoTimeoutSeconds), [&] { return saw_.size() >= n; });
  return saw_.size() >= n ? saw_[n - 1] : UpstreamSaw{};
}

void EchoUpstream::record(UpstreamSaw s) {
  std::lock_guard lock(mu_);
  saw_.push_back(std::move(s));
  cv_.notify_all();
}

void EchoUpstream::serve() {
  while (!stop_) {
    int fd = listener_.accept_fd(50);
    if (fd < 0) continue;
    if (!options_.tls) {
      PlainWire wire(fd);
      serve_one(wire, nullptr);
      continue;
    }
    SSL* ssl = SSL_new(options_.tls.get());
    SSL_set_fd(ssl, fd);
    TlsWire wire(fd, ssl);
    if (SSL_accept(ssl) != 1) {
      ERR_clear_error();
      record({});
      continue;
    }
    serve_one(wire, ssl);
    SSL_shutdown(ssl);
  }
}

void EchoUpstream::serve_one(Wire& wire, SSL* ssl) {
  UpstreamSaw seen;
  if (ssl) seen.client_cn = peer_common_name(ssl);
  seen.head = wire.read_until("\r\n\r\n");
  std::string head = seen.head;
  record(std::move(seen));
  if (head.empty()) return;
  if (options_.refusal) {
    std::string answer = options_.refusal(head);
    if (!answer.empty()) {
      wire.write(answer);
      return;
    }
  }
  if (!wire.write(options_.switching + options_.greeting)) return;
  echo_upper_until_bang(wire);
}

}  // namespace skiff::testing
