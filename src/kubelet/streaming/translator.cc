#include "kubelet/streaming/translator.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "base/log.h"
#include "httpserver/http.h"
#include "kubelet/streaming/spdy.h"
#include "kubelet/streaming/websocket.h"

namespace skiff::kubelet::streaming {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxHead = 64 * 1024;
constexpr size_t kMaxRuntimeErrorBody = 1024 * 1024;
constexpr size_t kReadPiece = 64 * 1024;
// After its close frame, how long a finished session waits for the client's close or its end.
constexpr int kCloseLingerMs = 2000;

// The v5 remote command channels.
constexpr uint8_t kChannelStdin = 0;
constexpr uint8_t kChannelStdout = 1;
constexpr uint8_t kChannelStderr = 2;
constexpr uint8_t kChannelError = 3;
constexpr uint8_t kChannelResize = 4;
constexpr uint8_t kChannelClose = 255;

// ---- HTTP heads --------------------------------------------------------------------------------

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Whether a comma-separated header value lists `token`; `case_sensitive` for subprotocol names
// (RFC 6455 compares them exactly), not for Upgrade and Connection tokens.
bool lists(std::string_view list, std::string_view token, bool case_sensitive) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = trim(list.substr(0, comma));
    if (case_sensitive ? item == token : iequals(item, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

struct Head {
  std::string start_line;
  std::vector<std::pair<std::string, std::string>> headers;

  // The first value; "" when absent.
  std::string get(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (iequals(n, name)) return v;
    }
    return "";
  }
  // Every value, joined with commas (repeated header lines mean a list).
  std::string joined(std::string_view name) const {
    std::string out;
    for (const auto& [n, v] : headers) {
      if (!iequals(n, name)) continue;
      if (!out.empty()) out += ", ";
      out += v;
    }
    return out;
  }
};

// `raw` is a whole head, "\r\n\r\n" included.
std::optional<Head> parse_head(std::string_view raw) {
  Head head;
  size_t end = raw.find("\r\n");
  if (end == std::string_view::npos || end == 0) return std::nullopt;
  head.start_line = std::string(raw.substr(0, end));
  size_t at = end + 2;
  while (true) {
    end = raw.find("\r\n", at);
    if (end == std::string_view::npos) return std::nullopt;
    if (end == at) break;
    std::string_view line = raw.substr(at, end - at);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    head.headers.emplace_back(std::string(trim(line.substr(0, colon))),
                              std::string(trim(line.substr(colon + 1))));
    at = end + 2;
  }
  return head;
}

std::string percent_encode(std::string_view in) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : in) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0xF]);
    }
  }
  return out;
}

std::string json_escape(std::string_view in) {
  std::string out;
  for (char c : in) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\u%04x", static_cast<unsigned>(c));
      out += hex;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// A v1 Status, as Kubernetes words failures.
std::string status_json(int code, std::string_view reason, std::string_view message) {
  return "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
         "\"message\":\"" +
         json_escape(message) + "\",\"reason\":\"" + std::string(reason) +
         "\",\"code\":" + std::to_string(code) + "}";
}

const char* reason_phrase(int code) {
  switch (code) {
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 426:
      return "Upgrade Required";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
  }
  return "Error";
}

std::string failure_answer(int code, std::string_view reason, std::string_view message,
                           std::string_view extra_headers = "") {
  std::string body = status_json(code, reason, message);
  return "HTTP/1.1 " + std::to_string(code) + " " + reason_phrase(code) +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n" + std::string(extra_headers) + "Connection: close\r\n\r\n" + body;
}

struct RuntimeUrl {
  std::string host;
  int port = 0;
  std::string target;
};

// http://HOST:PORT/PATH (HOST may be a bracketed IPv6 literal); nullopt for anything else.
std::optional<RuntimeUrl> parse_runtime_url(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (!url.starts_with(kScheme)) return std::nullopt;
  url.remove_prefix(kScheme.size());
  size_t slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  size_t colon = authority.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  std::string_view host = authority.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  RuntimeUrl out;
  std::string_view digits = authority.substr(colon + 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out.port);
  if (ec != std::errc() || end != digits.data() + digits.size() || out.port <= 0 ||
      out.port > 65535 || host.empty()) {
    return std::nullopt;
  }
  out.host = std::string(host);
  out.target = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  return out;
}

// ---- Sockets -----------------------------------------------------------------------------------

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Bytes into `into` (appended): > 0 read, 0 end of stream, -1 error, -2 the deadline passed.
ssize_t read_some(int fd, std::string& into, Clock::time_point deadline) {
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return -2;
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return -1;
    if (ready == 0) return -2;
    char buf[16 * 1024];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) into.append(buf, static_cast<size_t>(n));
    return n;
  }
}

// Reads until a whole head is buffered; the head (with its blank line) is cut from `buffer`.
// "" with `*why` set when the stream ended, broke, timed out or sent too long a head.
std::string read_head(int fd, std::string& buffer, Clock::time_point deadline, std::string* why) {
  while (true) {
    size_t end = buffer.find("\r\n\r\n");
    if (end != std::string::npos) {
      std::string head = buffer.substr(0, end + 4);
      buffer.erase(0, end + 4);
      return head;
    }
    if (buffer.size() > kMaxHead) {
      *why = "the head is longer than " + std::to_string(kMaxHead) + " bytes";
      return "";
    }
    ssize_t n = read_some(fd, buffer, deadline);
    if (n == -2) {
      *why = "i/o timeout";
      return "";
    }
    if (n <= 0) {
      *why = n == 0 ? "the connection ended" : std::string(std::strerror(errno));
      return "";
    }
  }
}

// A TCP connection to host:port within `timeout`; the error worded as Go's dialer words it.
Result<int> dial(const std::string& host, int port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string where =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) {
    return Status(StatusCode::kUnavailable,
                  "dial tcp: lookup " + host + ": " + std::string(gai_strerror(rc)));
  }
  std::string last = "no address";
  const Clock::time_point deadline = Clock::now() + timeout;
  for (addrinfo* a = found; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
      last = std::strerror(errno);
      continue;
    }
    int r = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (r != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      int ready = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
      if (ready == 1) {
        int err = 0;
        socklen_t len = sizeof(err);
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        r = err == 0 ? 0 : -1;
        errno = err;
      } else {
        r = -1;
        errno = ETIMEDOUT;
      }
    }
    if (r == 0) {
      ::freeaddrinfo(found);
      int flags = ::fcntl(fd, F_GETFL);
      ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return fd;
    }
    last = errno == ETIMEDOUT ? "i/o timeout" : "connect: " + std::string(std::strerror(errno));
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return Status(StatusCode::kUnavailable, "dial tcp " + where + ": " + last);
}

// The status code of an HTTP answer's start line; 0 when it is not one.
int answer_status(std::string_view start_line) {
  if (!start_line.starts_with("HTTP/1.") || start_line.size() < 12) return 0;
  int code = 0;
  std::string_view digits = start_line.substr(9, 3);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), code);
  if (ec != std::errc() || end != digits.data() + digits.size()) return 0;
  return code;
}

// The base64 form of a 16-byte Sec-WebSocket-Key.
bool valid_websocket_key(std::string_view key) {
  if (key.size() != 24 || key.substr(22) != "==") return false;
  for (char c : key.substr(0, 22)) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/') return false;
  }
  return true;
}

}  // namespace

Translation choose_translation(std::string_view kind, std::string_view upgrade,
                               std::string_view websocket_protocols) {
  if (!lists(upgrade, "websocket", false)) return Translation::kNone;
  if ((kind == "exec" || kind == "attach") && lists(websocket_protocols, kRemoteCommandV5, true)) {
    return Translation::kRemoteCommand;
  }
  if (kind == "portforward" && lists(websocket_protocols, kPortForwardTunnel, true)) {
    return Translation::kPortForwardTunnel;
  }
  return Translation::kNone;
}

// ---- The server --------------------------------------------------------------------------------

struct Translator::Impl {
  TranslatorOptions options;
  std::string secret;  // hex; the first path segment of every session
  int listen_fd = -1;
  int port = 0;
  int wake[2] = {-1, -1};
  std::thread acceptor;
  std::atomic<bool> stopping{false};

  // One session's thread and connections. The connections are registered here so that stop()
  // can shut them down (a blocked session then wakes up and ends).
  struct Slot {
    std::thread thread;
    std::atomic<bool> done{false};
    int fds[2] = {-1, -1};  // client, runtime; guarded by mu
  };
  mutable std::mutex mu;
  std::list<Slot> slots;  // guarded by mu

  void set_fd(Slot& slot, int which, int fd) {
    std::lock_guard lock(mu);
    slot.fds[which] = fd;
    if (stopping) ::shutdown(fd, SHUT_RDWR);
  }
  void close_fd(Slot& slot, int which) {
    std::lock_guard lock(mu);
    if (slot.fds[which] >= 0) ::close(slot.fds[which]);
    slot.fds[which] = -1;
  }

  void accept_loop();
  void reap();
};

namespace {

enum class Outcome {
  kRuntimeFinished,  // the runtime ended the session
  kClientClosed,     // the client sent a close frame
  kClientGone,       // the client's connection ended
  kClientBroke,      // the client broke the WebSocket protocol
  kRuntimeBroke,     // the runtime's connection broke, or it broke SPDY
  kStopped,          // the translator is stopping
};

// Once switched, bytes for each side are queued and written as its socket takes them, so that
// neither direction waits on the other: a runtime that stops reading stdin while its output waits
// to be read (a command filtering a large input) must not stall the output. A side is read only
// while the other side's queue is below this.
constexpr size_t kQueueHighWater = 1024 * 1024;
// How long a finished session may take to hand the client what is still queued.
constexpr auto kFinalFlush = std::chrono::seconds(30);

// What the client's next message is (Session::next_client_message).
enum class ClientRead { kData, kDrained, kEnded };

constexpr int kClientReadable = 1;
constexpr int kRuntimeReadable = 2;

// One session, on its own thread.
class Session {
 public:
  Session(Translator::Impl& server, Translator::Impl::Slot& slot, int client_fd)
      : server_(server), slot_(slot), client_(client_fd) {}

  void run() {
    serve();
    server_.close_fd(slot_, 1);
    server_.close_fd(slot_, 0);
  }

 private:
  void serve();
  // Answers the client (before any upgrade) and ends.
  void refuse(int code, std::string_view reason, std::string_view message,
              std::string_view extra_headers = "") {
    write_all(client_, failure_answer(code, reason, message, extra_headers));
    ::shutdown(client_, SHUT_WR);
  }
  // Dials the runtime and asks it to switch to SPDY/3.1 with `protocol`. True once it has; false
  // when the client has been answered instead.
  bool upgrade_runtime(const RuntimeUrl& url, std::string_view protocol);
  void pass_on_refusal(const Head& head);
  void switch_client(std::string_view protocol);

  // After the switch: queue bytes for a side.
  void to_client(std::string_view bytes) { to_client_ += bytes; }
  void to_client(uint8_t channel, std::string_view data) {
    std::string payload(1, static_cast<char>(channel));
    payload += data;
    to_client(ws::encode_frame(ws::Opcode::kBinary, payload));
  }
  void to_runtime(std::string_view bytes) { to_runtime_ += bytes; }
  // Writes what the sockets take and waits until a side may be read: kClientReadable and/or
  // kRuntimeReadable; -1 when a write failed (then *client_broke says which side).
  int pump(bool* client_broke);
  // Reads what a readable side has: > 0 bytes appended, 0 its end, -1 an error (errno set).
  static ssize_t receive(int fd, std::string& into);
  // The end of a session: the client gets what is queued and `close_frame` (if any) within
  // kFinalFlush, then this side stops writing and waits briefly for the client's close.
  void finish_client(std::string_view close_frame, bool linger);
  void log_end(Outcome outcome, const std::string& detail);

  void relay(const std::function<bool()>& go_on,
             const std::function<void(std::string&)>& from_runtime, ws::MessageReader& messages,
             Outcome* outcome, std::string* detail);
  ClientRead next_client_message(ws::MessageReader& messages, std::string* payload,
                                 uint16_t* close_code, Outcome* outcome, std::string* detail);
  void end_session(Outcome outcome, uint16_t client_close_code, const std::string& detail);
  void remote_command();
  void port_forward();

  Translator::Impl& server_;
  Translator::Impl::Slot& slot_;
  int client_;
  int runtime_ = -1;
  std::string client_buffer_;   // client bytes after its request head
  std::string runtime_buffer_;  // runtime bytes after its answer's head
  std::string to_client_;       // queued for the client
  std::string to_runtime_;      // queued for the runtime
  Head request_;
  std::string name_;
  SessionRequest session_;
  std::string key_;
};

// Sends what `fd` takes now; false when the connection broke.
bool send_some(int fd, std::string& queue) {
  while (!queue.empty()) {
    ssize_t n = ::send(fd, queue.data(), queue.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n <= 0) return false;
    queue.erase(0, static_cast<size_t>(n));
  }
  return true;
}

int Session::pump(bool* client_broke) {
  while (true) {
    pollfd fds[2] = {{client_, 0, 0}, {runtime_, 0, 0}};
    if (to_runtime_.size() < kQueueHighWater) fds[0].events |= POLLIN;
    if (!to_client_.empty()) fds[0].events |= POLLOUT;
    if (to_client_.size() < kQueueHighWater) fds[1].events |= POLLIN;
    if (!to_runtime_.empty()) fds[1].events |= POLLOUT;
    int n = ::poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *client_broke = false;
      return -1;
    }
    if ((fds[0].revents & POLLOUT) && !send_some(client_, to_client_)) {
      *client_broke = true;
      return -1;
    }
    if ((fds[1].revents & POLLOUT) && !send_some(runtime_, to_runtime_)) {
      *client_broke = false;
      return -1;
    }
    // A side that hung up or failed is "readable" even when held back: its read tells.
    constexpr short kReadable = POLLIN | POLLHUP | POLLERR;
    int ready = 0;
    if (fds[0].revents & kReadable) ready |= kClientReadable;
    if (fds[1].revents & kReadable) ready |= kRuntimeReadable;
    if (ready) return ready;
  }
}

ssize_t Session::receive(int fd, std::string& into) {
  char buf[kReadPiece];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;  // nothing after all
    if (n > 0) into.append(buf, static_cast<size_t>(n));
    return n;
  }
}

void Session::finish_client(std::string_view close_frame, bool linger) {
  to_client_ += close_frame;
  const Clock::time_point deadline = Clock::now() + kFinalFlush;
  while (!to_client_.empty()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return;
    pollfd p{client_, POLLOUT, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || !send_some(client_, to_client_)) return;
  }
  ::shutdown(client_, SHUT_WR);
  if (!linger) return;
  const Clock::time_point until = Clock::now() + std::chrono::milliseconds(kCloseLingerMs);
  std::string discard;
  while (read_some(client_, discard, until) > 0) discard.clear();
}

void Session::log_end(Outcome outcome, const std::string& detail) {
  const std::string why = detail.empty() ? "" : ": " + detail;
  switch (outcome) {
    case Outcome::kRuntimeFinished:
    case Outcome::kRuntimeBroke:
      SKIFF_LOG_INFO("kubelet: {}: translated session ended by the runtime{}", name_, why);
      break;
    case Outcome::kClientClosed:
      SKIFF_LOG_INFO("kubelet: {}: translated session closed by the client", name_);
      break;
    case Outcome::kClientBroke:
      SKIFF_LOG_WARN("kubelet: {}: translated session ended: the client broke WebSocket{}", name_,
                     why);
      break;
    case Outcome::kClientGone:
      SKIFF_LOG_INFO("kubelet: {}: translated session ended: the client went away", name_);
      break;
    case Outcome::kStopped:
      SKIFF_LOG_INFO("kubelet: {}: translated session ended: the kubelet is stopping", name_);
      break;
  }
}

void Session::pass_on_refusal(const Head& head) {
  // The body: by its length, chunked, or to the end of the stream; capped.
  const Clock::time_point deadline = Clock::now() + server_.options.runtime_timeout;
  std::string body;
  std::string length = head.get("Content-Length");
  const bool chunked = lists(head.get("Transfer-Encoding"), "chunked", false);
  if (!length.empty()) {
    size_t want =
        std::min<size_t>(std::strtoull(length.c_str(), nullptr, 10), kMaxRuntimeErrorBody);
    while (runtime_buffer_.size() < want && read_some(runtime_, runtime_buffer_, deadline) > 0) {
    }
    body = runtime_buffer_.substr(0, want);
  } else if (chunked) {
    size_t at = 0;
    while (body.size() < kMaxRuntimeErrorBody) {
      size_t line_end = runtime_buffer_.find("\r\n", at);
      if (line_end == std::string::npos) {
        if (read_some(runtime_, runtime_buffer_, deadline) <= 0) break;
        continue;
      }
      size_t size = std::strtoull(runtime_buffer_.c_str() + at, nullptr, 16);
      if (size == 0) break;
      if (runtime_buffer_.size() < line_end + 2 + size) {
        if (read_some(runtime_, runtime_buffer_, deadline) <= 0) break;
        continue;
      }
      body += runtime_buffer_.substr(line_end + 2, size);
      at = line_end + 2 + size + 2;
    }
    body.resize(std::min(body.size(), kMaxRuntimeErrorBody));
  } else {
    while (runtime_buffer_.size() < kMaxRuntimeErrorBody &&
           read_some(runtime_, runtime_buffer_, deadline) > 0) {
    }
    body = runtime_buffer_.substr(0, kMaxRuntimeErrorBody);
  }
  std::string answer = head.start_line + "\r\n";
  const std::string connection = head.get("Connection");
  for (const auto& [name, value] : head.headers) {
    if (iequals(name, "Connection") || iequals(name, "Keep-Alive") ||
        iequals(name, "Transfer-Encoding") || iequals(name, "Content-Length") ||
        iequals(name, "Upgrade") || lists(connection, name, false)) {
      continue;
    }
    answer += name + ": " + value + "\r\n";
  }
  answer += "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  answer += body;
  write_all(client_, answer);
  ::shutdown(client_, SHUT_WR);
}

bool Session::upgrade_runtime(const RuntimeUrl& url, std::string_view protocol) {
  Result<int> fd = dial(url.host, url.port, server_.options.runtime_timeout);
  if (!fd.is_ok()) {
    SKIFF_LOG_WARN("kubelet: {}: the runtime's streaming server: {}", name_, fd.status().message());
    refuse(502, "ServiceUnavailable", "error dialing backend: " + fd.status().message());
    return false;
  }
  runtime_ = *fd;
  server_.set_fd(slot_, 1, runtime_);
  const std::string host =
      url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  std::string request = "POST " + url.target + " HTTP/1.1\r\nHost: " + host + ":" +
                        std::to_string(url.port) +
                        "\r\nUser-Agent: skiff-kubelet\r\nContent-Length: 0\r\n"
                        "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: " +
                        std::string(protocol) + "\r\n\r\n";
  if (!write_all(runtime_, request)) {
    refuse(502, "ServiceUnavailable",
           "error sending request to backend: " + std::string(std::strerror(errno)));
    return false;
  }
  std::string why;
  std::string raw =
      read_head(runtime_, runtime_buffer_, Clock::now() + server_.options.runtime_timeout, &why);
  std::optional<Head> head = raw.empty() ? std::nullopt : parse_head(raw);
  const int status = head ? answer_status(head->start_line) : 0;
  if (status == 0) {
    refuse(502, "ServiceUnavailable",
           "error reading response from backend: " + (why.empty() ? "malformed answer" : why));
    return false;
  }
  if (status != 101) {
    SKIFF_LOG_INFO("kubelet: {}: the runtime answered {} to SPDY/3.1 {}; passed on", name_, status,
                   protocol);
    pass_on_refusal(*head);
    return false;
  }
  const std::string chosen = head->get("X-Stream-Protocol-Version");
  if (chosen != protocol) {
    refuse(502, "ServiceUnavailable",
           "the runtime's streaming server switched to \"" + chosen + "\" instead of \"" +
               std::string(protocol) + "\"");
    return false;
  }
  return true;
}

void Session::switch_client(std::string_view protocol) {
  write_all(client_,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: " +
                ws::accept_key(key_) + "\r\nSec-WebSocket-Protocol: " + std::string(protocol) +
                "\r\n\r\n");
}

void Session::serve() {
  std::string why;
  std::string raw =
      read_head(client_, client_buffer_, Clock::now() + server_.options.request_timeout, &why);
  std::optional<Head> head = raw.empty() ? std::nullopt : parse_head(raw);
  if (!head) {
    if (!raw.empty() || why.find("longer") != std::string::npos) {
      refuse(400, "BadRequest", "malformed request: " + (why.empty() ? "bad head" : why));
    }
    return;
  }
  request_ = std::move(*head);
  // "GET /<secret>/session?<query> HTTP/1.1"
  std::string_view line = request_.start_line;
  size_t sp1 = line.find(' ');
  size_t sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 <= sp1) {
    refuse(400, "BadRequest", "malformed request line");
    return;
  }
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view query;
  if (size_t q = target.find('?'); q != std::string_view::npos) {
    query = target.substr(q + 1);
    target = target.substr(0, q);
  }
  const std::string& secret = server_.secret;
  const std::string expected_suffix = "/session";
  if (target.size() != 1 + secret.size() + expected_suffix.size() || target[0] != '/' ||
      CRYPTO_memcmp(target.data() + 1, secret.data(), secret.size()) != 0 ||
      target.substr(1 + secret.size()) != expected_suffix) {
    refuse(404, "NotFound", "the server could not find the requested resource");
    return;
  }
  std::string translation;
  std::string to;
  for (const auto& [k, v] : http::parse_query(query)) {
    if (k == "translation") translation = v;
    if (k == "to") to = v;
    if (k == "name") session_.name = v;
    if (k == "stdin") session_.in = v == "1";
    if (k == "stdout") session_.out = v == "1";
    if (k == "stderr") session_.err = v == "1";
    if (k == "tty") session_.tty = v == "1";
  }
  name_ = session_.name.empty() ? "stream" : session_.name;
  std::string_view client_protocol;
  std::string_view runtime_protocol;
  if (translation == "remotecommand") {
    session_.translation = Translation::kRemoteCommand;
    client_protocol = kRemoteCommandV5;
    runtime_protocol = kRemoteCommandV4;
  } else if (translation == "portforward") {
    session_.translation = Translation::kPortForwardTunnel;
    client_protocol = kPortForwardTunnel;
    runtime_protocol = kPortForward;
  } else {
    refuse(400, "BadRequest", "unknown translation \"" + translation + "\"");
    return;
  }
  std::optional<RuntimeUrl> url = parse_runtime_url(to);
  if (!url) {
    refuse(400, "BadRequest", "the runtime URL \"" + to + "\" is not http://HOST:PORT/PATH");
    return;
  }
  // The WebSocket handshake (RFC 6455 §4.2.1).
  if (!lists(request_.joined("Upgrade"), "websocket", false) ||
      !lists(request_.joined("Connection"), "upgrade", false)) {
    refuse(400, "BadRequest", "the request is not a WebSocket upgrade");
    return;
  }
  if (request_.get("Sec-WebSocket-Version") != "13") {
    refuse(426, "BadRequest", "only WebSocket version 13 is supported",
           "Sec-WebSocket-Version: 13\r\n");
    return;
  }
  key_ = request_.get("Sec-WebSocket-Key");
  if (!valid_websocket_key(key_)) {
    refuse(400, "BadRequest", "the request has no valid Sec-WebSocket-Key");
    return;
  }
  if (!lists(request_.joined("Sec-WebSocket-Protocol"), client_protocol, true)) {
    refuse(400, "BadRequest",
           "the client does not offer the subprotocol " + std::string(client_protocol));
    return;
  }
  if (!upgrade_runtime(*url, runtime_protocol)) return;
  if (session_.translation == Translation::kRemoteCommand) {
    remote_command();
  } else {
    port_forward();
  }
}

// Moves bytes both ways until `go_on` says to stop or a side ends: the runtime's bytes go to
// `from_runtime`, the client's to `messages` (whose handlers drain them in `go_on`).
void Session::relay(const std::function<bool()>& go_on,
                    const std::function<void(std::string&)>& from_runtime,
                    ws::MessageReader& messages, Outcome* outcome, std::string* detail) {
  std::string in;
  while (go_on()) {
    if (server_.stopping) {
      *outcome = Outcome::kStopped;
      return;
    }
    bool client_broke = false;
    const int ready = pump(&client_broke);
    if (ready < 0) {
      *detail = std::strerror(errno);
      *outcome = client_broke ? Outcome::kClientGone : Outcome::kRuntimeBroke;
      return;
    }
    if (ready & kRuntimeReadable) {
      in.clear();
      ssize_t n = receive(runtime_, in);
      if (n <= 0) {
        if (n < 0) *detail = std::strerror(errno);
        *outcome = n == 0 ? Outcome::kRuntimeFinished : Outcome::kRuntimeBroke;
        return;
      }
      from_runtime(in);
    }
    if (ready & kClientReadable) {
      in.clear();
      if (receive(client_, in) <= 0) {
        *outcome = Outcome::kClientGone;
        return;
      }
      messages.feed(in);
    }
  }
}

// The client's next data message: pings are answered and pongs dropped on the way. kEnded, with
// *outcome, *close_code and *detail set, on the client's close or a broken frame; kDrained when
// nothing complete is left.
ClientRead Session::next_client_message(ws::MessageReader& messages, std::string* payload,
                                        uint16_t* close_code, Outcome* outcome,
                                        std::string* detail) {
  while (std::optional<ws::Message> m = messages.next()) {
    switch (m->opcode) {
      case ws::Opcode::kPing:
        to_client(ws::encode_frame(ws::Opcode::kPong, m->payload));
        break;
      case ws::Opcode::kPong:
        break;
      case ws::Opcode::kClose: {
        std::optional<ws::CloseInfo> info = ws::parse_close(m->payload);
        *close_code = info && info->code != ws::kCloseNoStatus ? info->code : ws::kCloseNormal;
        *outcome = Outcome::kClientClosed;
        return ClientRead::kEnded;
      }
      default:
        *payload = std::move(m->payload);
        return ClientRead::kData;
    }
  }
  if (!messages.error().is_ok()) {
    *detail = messages.error().message();
    *close_code = messages.close_code();
    *outcome = Outcome::kClientBroke;
    return ClientRead::kEnded;
  }
  return ClientRead::kDrained;
}

// The end of a switched session: the runtime's connection is done with in every case (what the
// client sent before its close goes out if the socket takes it now); the client's gets its last
// frames.
void Session::end_session(Outcome outcome, uint16_t client_close_code, const std::string& detail) {
  if (outcome == Outcome::kClientClosed) send_some(runtime_, to_runtime_);
  server_.close_fd(slot_, 1);
  switch (outcome) {
    case Outcome::kRuntimeFinished:
    case Outcome::kRuntimeBroke:
      finish_client(ws::encode_close(ws::kCloseNormal), /*linger=*/true);
      break;
    case Outcome::kClientClosed:
      finish_client(ws::encode_close(client_close_code), /*linger=*/false);
      break;
    case Outcome::kClientBroke:
      finish_client(ws::encode_close(client_close_code, detail), /*linger=*/false);
      break;
    case Outcome::kClientGone:
      break;
    case Outcome::kStopped:
      to_client_.clear();
      finish_client(ws::encode_close(ws::kCloseGoingAway, "the kubelet is stopping"), false);
      break;
  }
  log_end(outcome, detail);
}

void Session::remote_command() {
  spdy::FrameWriter writer;
  spdy::FrameReader reader;
  ws::MessageReader messages;
  std::string detail;

  // The streams, as upstream's remote command client opens them: the error stream first.
  uint32_t next_id = 1;
  uint32_t error_id = 0, stdin_id = 0, stdout_id = 0, stderr_id = 0, resize_id = 0;
  std::string opening;
  Status opened = Status::ok();
  auto open = [&](const char* type) -> uint32_t {
    const uint32_t id = next_id;
    next_id += 2;
    spdy::SynStreamFrame syn;
    syn.stream_id = id;
    syn.headers = {{"streamtype", type}};
    Result<std::string> bytes = writer.encode(syn);
    if (!bytes.is_ok()) {
      opened = bytes.status();
    } else {
      opening += *bytes;
    }
    return id;
  };
  error_id = open("error");
  if (session_.in) stdin_id = open("stdin");
  if (session_.out) stdout_id = open("stdout");
  if (session_.err && !session_.tty) stderr_id = open("stderr");
  if (session_.tty) resize_id = open("resize");
  if (!opened.is_ok() || !write_all(runtime_, opening)) {
    refuse(502, "ServiceUnavailable",
           "error opening streams to the runtime: " +
               (opened.is_ok() ? std::string(std::strerror(errno)) : opened.message()));
    return;
  }
  switch_client(kRemoteCommandV5);
  SKIFF_LOG_INFO("kubelet: {}: WebSocket {} translated to SPDY/3.1 {}", name_, kRemoteCommandV5,
                 kRemoteCommandV4);

  // The streams whose data the client is still owed (until their FIN or reset), and the ones this
  // side may still send on.
  std::set<uint32_t> owed = {error_id};
  if (stdout_id) owed.insert(stdout_id);
  if (stderr_id) owed.insert(stderr_id);
  std::set<uint32_t> sending = {error_id};
  for (uint32_t id : {stdin_id, stdout_id, stderr_id, resize_id}) {
    if (id) sending.insert(id);
  }
  bool status_seen = false;
  bool runtime_going_away = false;
  Outcome outcome = Outcome::kRuntimeFinished;
  uint16_t client_close_code = ws::kCloseNormal;

  // Queues a frame for the runtime; false when it cannot be encoded.
  auto frame_to_runtime = [&](const spdy::Frame& frame) -> bool {
    Result<std::string> bytes = writer.encode(frame);
    if (!bytes.is_ok()) {
      detail = bytes.status().message();
      return false;
    }
    to_runtime(*bytes);
    return true;
  };
  auto finish_sending = [&](uint32_t id) -> bool {
    if (!sending.erase(id)) return true;
    spdy::DataFrame fin;
    fin.stream_id = id;
    fin.flags = spdy::kFlagFin;
    return frame_to_runtime(fin);
  };

  // Handles what the client sent; false when the session ends (outcome set).
  auto drain_client = [&]() -> bool {
    std::string payload;
    ClientRead read;
    while ((read = next_client_message(messages, &payload, &client_close_code, &outcome,
                                       &detail)) == ClientRead::kData) {
      if (payload.empty()) continue;
      const auto channel = static_cast<uint8_t>(payload[0]);
      std::string_view data = std::string_view(payload).substr(1);
      bool ok = true;
      if (channel == kChannelStdin && stdin_id && sending.count(stdin_id) && !data.empty()) {
        ok = frame_to_runtime(spdy::DataFrame{stdin_id, 0, std::string(data)});
      } else if (channel == kChannelResize && resize_id && sending.count(resize_id)) {
        ok = frame_to_runtime(spdy::DataFrame{resize_id, 0, std::string(data)});
      } else if (channel == kChannelClose && !data.empty() &&
                 static_cast<uint8_t>(data[0]) == kChannelStdin && stdin_id) {
        ok = finish_sending(stdin_id);
      }
      if (!ok) {
        outcome = Outcome::kRuntimeBroke;
        return false;
      }
    }
    return read == ClientRead::kDrained;
  };

  // Handles what the runtime sent; false when the session ends (outcome set).
  auto drain_runtime = [&]() -> bool {
    while (true) {
      Result<std::optional<spdy::Frame>> next = reader.next();
      if (!next.is_ok()) {
        detail = next.status().message();
        outcome = Outcome::kRuntimeBroke;
        return false;
      }
      if (!next->has_value()) break;
      spdy::Frame& frame = **next;
      bool ok = true;
      if (auto* data = std::get_if<spdy::DataFrame>(&frame)) {
        uint8_t channel = 0;
        if (stdout_id && data->stream_id == stdout_id) channel = kChannelStdout;
        if (stderr_id && data->stream_id == stderr_id) channel = kChannelStderr;
        if (data->stream_id == error_id) channel = kChannelError;
        if (channel != 0 && !data->data.empty()) {
          if (channel == kChannelError) status_seen = true;
          to_client(channel, data->data);
        }
        if (data->flags & spdy::kFlagFin) owed.erase(data->stream_id);
      } else if (auto* reply = std::get_if<spdy::SynReplyFrame>(&frame)) {
        if (reply->flags & spdy::kFlagFin) owed.erase(reply->stream_id);
      } else if (auto* headers = std::get_if<spdy::HeadersFrame>(&frame)) {
        if (headers->flags & spdy::kFlagFin) owed.erase(headers->stream_id);
      } else if (auto* reset = std::get_if<spdy::RstStreamFrame>(&frame)) {
        owed.erase(reset->stream_id);
        sending.erase(reset->stream_id);
      } else if (auto* ping = std::get_if<spdy::PingFrame>(&frame)) {
        ok = frame_to_runtime(*ping);
      } else if (auto* syn = std::get_if<spdy::SynStreamFrame>(&frame)) {
        // Streams are this side's to open.
        ok = frame_to_runtime(spdy::RstStreamFrame{syn->stream_id, spdy::kRstRefusedStream});
      } else if (std::holds_alternative<spdy::GoAwayFrame>(frame) && !runtime_going_away) {
        // The runtime is closing: it may wait for the streams to close on both sides, so this
        // side finishes its halves and reads on until the runtime is done.
        runtime_going_away = true;
        for (uint32_t id : std::vector<uint32_t>(sending.begin(), sending.end())) {
          ok = ok && finish_sending(id);
        }
      }
      // SETTINGS and WINDOW_UPDATE need nothing: like Go's spdystream, this side does not hold
      // back data for flow control, and the runtime's window is never exhausted by this side.
      if (!ok) {
        outcome = Outcome::kRuntimeBroke;
        return false;
      }
    }
    if (owed.empty()) {
      outcome = Outcome::kRuntimeFinished;
      return false;
    }
    return true;
  };

  messages.feed(client_buffer_);
  client_buffer_.clear();
  reader.feed(runtime_buffer_);
  runtime_buffer_.clear();
  relay([&] { return drain_client() && drain_runtime(); },
        [&](std::string& in) { reader.feed(in); }, messages, &outcome, &detail);

  if ((outcome == Outcome::kRuntimeFinished || outcome == Outcome::kRuntimeBroke) && !status_seen &&
      (outcome == Outcome::kRuntimeBroke || !owed.empty())) {
    // The runtime went away without the command's status: say so rather than let the client
    // take the silence for success.
    std::string why = "the runtime's streaming connection ended before the command's status";
    if (!detail.empty()) why += ": " + detail;
    to_client(kChannelError, status_json(500, "InternalError", why));
  }
  end_session(outcome, client_close_code, detail);
}

void Session::port_forward() {
  switch_client(kPortForwardTunnel);
  SKIFF_LOG_INFO("kubelet: {}: WebSocket {} translated to SPDY/3.1 {}", name_, kPortForwardTunnel,
                 kPortForward);
  ws::MessageReader messages;
  Outcome outcome = Outcome::kRuntimeFinished;
  std::string detail;
  uint16_t client_close_code = ws::kCloseNormal;

  auto drain_client = [&]() -> bool {
    std::string payload;
    ClientRead read;
    while ((read = next_client_message(messages, &payload, &client_close_code, &outcome,
                                       &detail)) == ClientRead::kData) {
      to_runtime(payload);
    }
    return read == ClientRead::kDrained;
  };

  messages.feed(client_buffer_);
  client_buffer_.clear();
  if (!runtime_buffer_.empty()) {
    to_client(ws::encode_frame(ws::Opcode::kBinary, runtime_buffer_));
    runtime_buffer_.clear();
  }
  relay(
      drain_client,
      [&](std::string& in) {
        if (!in.empty()) to_client(ws::encode_frame(ws::Opcode::kBinary, in));
      },
      messages, &outcome, &detail);

  end_session(outcome, client_close_code, detail);
}

}  // namespace

void Translator::Impl::reap() {
  std::lock_guard lock(mu);
  for (auto it = slots.begin(); it != slots.end();) {
    if (it->done) {
      it->thread.join();
      it = slots.erase(it);
    } else {
      ++it;
    }
  }
}

void Translator::Impl::accept_loop() {
  while (!stopping) {
    pollfd fds[2] = {{listen_fd, POLLIN, 0}, {wake[0], POLLIN, 0}};
    int n = ::poll(fds, 2, 1000);
    reap();
    if (n <= 0 || stopping) continue;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::lock_guard lock(mu);
    size_t active = 0;
    for (const Slot& s : slots) active += s.done ? 0 : 1;
    if (static_cast<int>(active) >= options.max_sessions) {
      std::string answer =
          failure_answer(429, "TooManyRequests", "too many streaming sessions, try again later");
      ::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
      continue;
    }
    Slot& slot = slots.emplace_back();
    slot.fds[0] = fd;
    slot.thread = std::thread([this, &slot, fd] {
      Session(*this, slot, fd).run();
      slot.done = true;
    });
  }
}

Translator::Translator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Translator::~Translator() {
  stop();
}

Result<std::unique_ptr<Translator>> Translator::start(TranslatorOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  unsigned char random[16];
  if (RAND_bytes(random, sizeof(random)) != 1) {
    return Status(StatusCode::kInternal, "stream translator: no randomness for its secret");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char c : random) {
    impl->secret.push_back(kHex[c >> 4]);
    impl->secret.push_back(kHex[c & 0xF]);
  }

  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (::inet_pton(AF_INET, impl->options.bind_address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    addr_len = sizeof(sockaddr_in);
  } else if (::inet_pton(AF_INET6, impl->options.bind_address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    addr_len = sizeof(sockaddr_in6);
  } else {
    return Status(StatusCode::kInvalidArgument, "stream translator: bind address \"" +
                                                    impl->options.bind_address +
                                                    "\" is not an IP address");
  }
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return Status(StatusCode::kInternal,
                  "stream translator: socket: " + std::string(std::strerror(errno)));
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0 || ::listen(fd, 64) != 0) {
    std::string why = std::strerror(errno);
    ::close(fd);
    return Status(StatusCode::kUnavailable,
                  "stream translator: listening on " + impl->options.bind_address + ": " + why);
  }
  addr_len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &addr_len);
  impl->port = ntohs(addr.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
  impl->listen_fd = fd;
  if (::pipe2(impl->wake, O_CLOEXEC) != 0) {
    ::close(fd);
    return Status(StatusCode::kInternal,
                  "stream translator: pipe: " + std::string(std::strerror(errno)));
  }
  Impl* self = impl.get();
  impl->acceptor = std::thread([self] { self->accept_loop(); });
  return std::unique_ptr<Translator>(new Translator(std::move(impl)));
}

int Translator::port() const {
  return impl_->port;
}

std::string Translator::session_target(const SessionRequest& request) const {
  std::string target = "/" + impl_->secret + "/session?translation=";
  target +=
      request.translation == Translation::kPortForwardTunnel ? "portforward" : "remotecommand";
  target += "&to=" + percent_encode(request.runtime_url);
  if (!request.name.empty()) target += "&name=" + percent_encode(request.name);
  if (request.translation == Translation::kRemoteCommand) {
    target += std::string("&stdin=") + (request.in ? "1" : "0");
    target += std::string("&stdout=") + (request.out ? "1" : "0");
    target += std::string("&stderr=") + (request.err ? "1" : "0");
    target += std::string("&tty=") + (request.tty ? "1" : "0");
  }
  return target;
}

int Translator::active_sessions() const {
  std::lock_guard lock(impl_->mu);
  int n = 0;
  for (const Impl::Slot& s : impl_->slots) n += s.done ? 0 : 1;
  return n;
}

void Translator::stop() {
  Impl& s = *impl_;
  if (s.stopping.exchange(true)) return;
  char byte = 1;
  [[maybe_unused]] ssize_t w = ::write(s.wake[1], &byte, 1);
  if (s.acceptor.joinable()) s.acceptor.join();
  {
    std::lock_guard lock(s.mu);
    for (Impl::Slot& slot : s.slots) {
      for (int fd : slot.fds) {
        if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
      }
    }
  }
  // Sessions end on their own once their connections are shut down; join them without the lock
  // (they take it to close their connections).
  std::list<Impl::Slot> slots;
  {
    std::lock_guard lock(s.mu);
    slots.splice(slots.end(), s.slots);
  }
  for (Impl::Slot& slot : slots) {
    if (slot.thread.joinable()) slot.thread.join();
  }
  ::close(s.listen_fd);
  ::close(s.wake[0]);
  ::close(s.wake[1]);
}

}  // namespace skiff::kubelet::streaming
