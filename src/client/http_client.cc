#include "client/http_client.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <sstream>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace skiff::client {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// Lists of tens of thousands of objects are tens of megabytes; this only guards against a
// runaway answer.
constexpr uint64_t kMaxResponseBytes = 1ull << 30;
constexpr uint32_t kMaxHeaderBytes = 1u << 20;

// ---------------------------------------------------------------------------------------------
// Small helpers

bool is_ip_address(const std::string& host) {
  beast::error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

std::string url_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// Builds "?a=b&c=d" from the parameters added to it (empty when none).
class Query {
 public:
  void add(std::string_view name, std::string_view value) {
    out_ += out_.empty() ? '?' : '&';
    out_ += name;
    out_ += '=';
    out_ += url_encode(value);
  }
  void add_if(std::string_view name, std::string_view value) {
    if (!value.empty()) add(name, value);
  }
  const std::string& str() const { return out_; }

 private:
  std::string out_;
};

void add_list_params(Query& q, const ListOptions& o) {
  q.add_if("labelSelector", o.label_selector);
  q.add_if("fieldSelector", o.field_selector);
  q.add_if("resourceVersion", o.resource_version);
  if (o.limit > 0) q.add("limit", std::to_string(o.limit));
  q.add_if("continue", o.continue_token);
}

std::string_view patch_content_type(PatchType type) {
  switch (type) {
    case PatchType::kJson:
      return "application/json-patch+json";
    case PatchType::kMerge:
      return "application/merge-patch+json";
    case PatchType::kStrategicMerge:
      return "application/strategic-merge-patch+json";
    case PatchType::kApply:
      return "application/apply-patch+yaml";
  }
  return "application/merge-patch+json";
}

StatusCode code_for_http(int http_code, std::string_view reason) {
  switch (http_code) {
    case 400:
    case 422:
      return StatusCode::kInvalidArgument;
    case 401:
      return StatusCode::kUnauthenticated;
    case 403:
      return StatusCode::kPermissionDenied;
    case 404:
      return StatusCode::kNotFound;
    case 405:
      return StatusCode::kUnimplemented;
    case 409:
      return reason == "AlreadyExists" ? StatusCode::kAlreadyExists : StatusCode::kAborted;
    case 410:
      return StatusCode::kCompacted;
    case 413:
      return StatusCode::kTooLarge;
    case 429:
    case 503:
    // 504 is the server giving up on its store in time: as transient as 503.
    case 504:
      return StatusCode::kUnavailable;
    default:
      break;
  }
  if (http_code >= 400 && http_code < 500) return StatusCode::kInvalidArgument;
  return StatusCode::kInternal;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::string excerpt(std::string_view s, size_t max = 200) {
  s = trim(s);
  if (s.size() <= max) return std::string(s);
  return std::string(s.substr(0, max)) + "...";
}

// The Status for a non-2xx answer: the Status object's message when the body is one, else the
// code and the start of the body.
Status error_from_response(int http_code, const std::string& body, std::string_view method,
                           std::string_view target) {
  Json parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object()) {
    auto m = parsed.find("message");
    if (m != parsed.end() && m->is_string() && !m->get_ref<const std::string&>().empty()) {
      return status_from_api_error(http_code, parsed);
    }
  }
  std::string message = std::string(method) + " " + std::string(target) + ": the server answered " +
                        std::to_string(http_code);
  if (!trim(body).empty()) message += ": " + excerpt(body);
  std::string_view reason;
  if (parsed.is_object()) {
    auto r = parsed.find("reason");
    if (r != parsed.end() && r->is_string()) reason = r->get_ref<const std::string&>();
  }
  return Status(code_for_http(http_code, reason), std::move(message));
}

Result<Json> parse_json_body(const std::string& body, std::string_view method,
                             std::string_view target) {
  if (trim(body).empty()) return Json::object();
  Json parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return Status(StatusCode::kInternal, std::string(method) + " " + std::string(target) +
                                             ": the answer is not JSON: " + excerpt(body));
  }
  return parsed;
}

std::string transport_message(const beast::error_code& ec) {
  if (ec == beast::error::timeout) return "timed out";
  if (ec == http::error::end_of_stream || ec == net::error::eof ||
      ec == net::ssl::error::stream_truncated) {
    return "the server closed the connection";
  }
  return ec.message();
}

// Sets the options every connection wants: no Nagle delay (requests are written whole) and TCP
// keep-alive probes, so a watch on a vanished peer fails instead of hanging.
void tune_socket(tcp::socket& socket) {
  beast::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  socket.set_option(net::socket_base::keep_alive(true), ec);
  int fd = socket.native_handle();
  int idle = 30, interval = 10, count = 3;
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

// ---------------------------------------------------------------------------------------------
// Server URL

struct ServerUrl {
  std::string host;       // without brackets
  std::string port;       // "443" when not given
  std::string base_path;  // "" or "/prefix" (no trailing slash)
  std::string host_header;
  std::string display;  // https://host:port
};

Result<ServerUrl> parse_server_url(const std::string& server) {
  std::string_view s = trim(server);
  auto lower_prefix = [&](std::string_view p) {
    if (s.size() < p.size()) return false;
    for (size_t i = 0; i < p.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(s[i])) != p[i]) return false;
    }
    return true;
  };
  if (lower_prefix("https://")) {
    s.remove_prefix(8);
  } else if (lower_prefix("http://")) {
    return Status(StatusCode::kInvalidArgument,
                  "server \"" + server + "\": plain http is not supported, use https");
  } else if (s.find("://") != std::string_view::npos) {
    return Status(StatusCode::kInvalidArgument,
                  "server \"" + server + "\": unsupported scheme, use https");
  }
  size_t end = s.find_first_of("/?#");
  std::string_view authority = s.substr(0, end);
  std::string_view path = end == std::string_view::npos ? std::string_view() : s.substr(end);
  if (size_t q = path.find_first_of("?#"); q != std::string_view::npos) path = path.substr(0, q);
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    authority.remove_prefix(at + 1);
  }
  ServerUrl url;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return Status(StatusCode::kInvalidArgument, "server \"" + server + "\": unterminated [");
    }
    url.host = std::string(authority.substr(1, close - 1));
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return Status(StatusCode::kInvalidArgument, "server \"" + server + "\": malformed host");
      }
      port = rest.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (url.host.empty()) {
    return Status(StatusCode::kInvalidArgument, "server \"" + server + "\": no host");
  }
  if (port.empty()) port = "443";
  for (char c : port) {
    if (c < '0' || c > '9') {
      return Status(StatusCode::kInvalidArgument, "server \"" + server + "\": bad port");
    }
  }
  if (port.size() > 5 || std::stoi(std::string(port)) > 65535 ||
      std::stoi(std::string(port)) == 0) {
    return Status(StatusCode::kInvalidArgument, "server \"" + server + "\": bad port");
  }
  url.port = std::string(port);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  url.base_path = std::string(path);
  bool v6 = url.host.find(':') != std::string::npos;
  std::string bracketed = v6 ? "[" + url.host + "]" : url.host;
  url.host_header = url.port == "443" ? bracketed : bracketed + ":" + url.port;
  url.display = "https://" + bracketed + ":" + url.port;
  return url;
}

// ---------------------------------------------------------------------------------------------
// Connections

// One TLS connection with the io_context its operations run on. Operations are asynchronous
// (so deadlines work) but run to completion on the calling thread: a connection is used by one
// thread at a time.
struct Connection {
  explicit Connection(std::shared_ptr<ssl::context> ctx)
      : tls(std::move(ctx)), ioc(1), stream(ioc, *tls) {}

  ~Connection() {
    beast::error_code ec;
    beast::get_lowest_layer(stream).socket().close(ec);
    // Let the handlers the close aborted finish (they touch nothing outside the connection).
    ioc.restart();
    ioc.poll();
  }

  std::shared_ptr<ssl::context> tls;  // the SSL_CTX outlives the SSL object
  net::io_context ioc;                // declared before the stream: destroyed after it
  TlsStream stream;
  beast::flat_buffer buffer;
  Clock::time_point last_used;
};

struct OpResult {
  beast::error_code ec;
  size_t bytes = 0;
};

// Starts the operation `initiate(handler)` on `ioc` and runs it to completion on this thread.
template <class Initiate>
OpResult run_op(net::io_context& ioc, Initiate&& initiate) {
  OpResult result;
  bool done = false;
  initiate([&result, &done](beast::error_code ec, auto... rest) {
    result.ec = ec;
    if constexpr (sizeof...(rest) == 1) {
      if constexpr ((std::is_integral_v<decltype(rest)> && ...)) result.bytes = (rest, ...);
    }
    done = true;
  });
  ioc.restart();
  ioc.run();
  if (!done) result.ec = net::error::operation_aborted;
  return result;
}

// True when an idle connection cannot carry another request: the peer closed it (readable
// with nothing expected is EOF or a TLS alert), or bytes are left over from the last answer.
bool unusable(Connection& c) {
  if (c.buffer.size() > 0) return true;
  if (SSL_pending(c.stream.native_handle()) > 0) return true;
  pollfd p{};
  p.fd = beast::get_lowest_layer(c.stream).socket().native_handle();
  p.events = POLLIN;
  int n = ::poll(&p, 1, 0);
  return n != 0;
}

// A token bucket: `qps` tokens a second up to `burst`; callers reserve a token and sleep until it
// is theirs, so waiters are served in order.
class RateLimiter {
 public:
  RateLimiter(double qps, int burst)
      : qps_(qps), burst_(std::max(1, burst)), tokens_(static_cast<double>(burst_)) {}

  void acquire() {
    if (qps_ <= 0) return;
    double wait_s = 0;
    {
      std::lock_guard lock(mu_);
      auto now = Clock::now();
      if (last_ != Clock::time_point()) {
        double elapsed = std::chrono::duration<double>(now - last_).count();
        tokens_ = std::min(static_cast<double>(burst_), tokens_ + elapsed * qps_);
      }
      last_ = now;
      tokens_ -= 1;
      if (tokens_ < 0) wait_s = -tokens_ / qps_;
    }
    if (wait_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
  }

 private:
  const double qps_;
  const int burst_;
  std::mutex mu_;
  double tokens_;           // guarded by mu_; negative: reserved by sleeping callers
  Clock::time_point last_;  // guarded by mu_
};

// ---------------------------------------------------------------------------------------------
// Watch

WatchEventType parse_event_type(std::string_view t, bool* ok) {
  *ok = true;
  if (t == "ADDED") return WatchEventType::kAdded;
  if (t == "MODIFIED") return WatchEventType::kModified;
  if (t == "DELETED") return WatchEventType::kDeleted;
  if (t == "BOOKMARK") return WatchEventType::kBookmark;
  if (t == "ERROR") return WatchEventType::kError;
  *ok = false;
  return WatchEventType::kError;
}

class HttpWatchStream : public WatchStream {
 public:
  HttpWatchStream(std::unique_ptr<Connection> conn, std::string what)
      : conn_(std::move(conn)), what_(std::move(what)) {
    fd_ = beast::get_lowest_layer(conn_->stream).socket().native_handle();
    // A watch streams for as long as it lasts; its total is not limited. (Not boost::none: Beast
    // compares a Content-Length against the optional, and an empty one loses.)
    parser_.body_limit(std::numeric_limits<std::uint64_t>::max());
    parser_.header_limit(kMaxHeaderBytes);
    // Chunked bodies (what the API server sends) arrive here as they are parsed; anything else
    // goes to the parser's string body and is collected after each read.
    on_chunk_body_ = [this](std::uint64_t, beast::string_view data,
                            beast::error_code&) -> std::size_t {
      pending_.append(data.data(), data.size());
      return data.size();
    };
    parser_.on_chunk_body(on_chunk_body_);
  }

  ~HttpWatchStream() override {
    {
      std::lock_guard lock(fd_mu_);
      fd_ = -1;
    }
    // Closed first, while the parser and the fields an aborted read completes into still exist.
    conn_.reset();
  }

  // Writes the request and reads the answer's header. A non-200 answer is read whole and
  // returned as its Status.
  Status start(const http::request<http::string_body>& req, Clock::time_point deadline,
               std::optional<Clock::time_point> stream_deadline) {
    auto& lowest = beast::get_lowest_layer(conn_->stream);
    lowest.expires_at(deadline);
    OpResult w = run_op(conn_->ioc, [&](auto h) { http::async_write(conn_->stream, req, h); });
    if (w.ec) return transport_error(w.ec);
    OpResult r = run_op(conn_->ioc, [&](auto h) {
      http::async_read_header(conn_->stream, conn_->buffer, parser_, h);
    });
    if (r.ec) return transport_error(r.ec);
    int code = static_cast<int>(parser_.get().result_int());
    if (code != 200) {
      parser_.body_limit(kMaxResponseBytes);
      OpResult b = run_op(
          conn_->ioc, [&](auto h) { http::async_read(conn_->stream, conn_->buffer, parser_, h); });
      std::string body = std::move(pending_);
      body += parser_.get().body();
      if (b.ec && body.empty()) return transport_error(b.ec);
      return error_from_response(code, body, "GET", what_);
    }
    if (stream_deadline) {
      lowest.expires_at(*stream_deadline);
    } else {
      lowest.expires_never();
    }
    return Status::ok();
  }

  Result<WatchEvent> next() override {
    while (true) {
      if (cancelled_.load()) return Status(StatusCode::kCancelled, "watch cancelled");
      size_t nl = pending_.find('\n', scanned_);
      if (nl != std::string::npos) {
        std::string_view line = trim(std::string_view(pending_).substr(pos_, nl - pos_));
        pos_ = scanned_ = nl + 1;
        if (line.empty()) continue;
        return parse_event(line);
      }
      // Drop what has been consumed before reading more.
      pending_.erase(0, pos_);
      pos_ = 0;
      scanned_ = pending_.size();
      if (ended_) {
        std::string_view rest = trim(pending_);
        if (!rest.empty()) {
          std::string last(rest);
          pending_.clear();
          scanned_ = 0;
          return parse_event(last);
        }
        return end_status_;
      }
      read_more();
    }
  }

  void cancel() override {
    cancelled_.store(true);
    {
      // Shutting the socket down tells the server at once; the fd stays open (and owned by the
      // reading thread) until the stream is destroyed, so this cannot hit a reused descriptor.
      std::lock_guard lock(fd_mu_);
      if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
    }
    conn_->ioc.stop();
  }

 private:
  Status transport_error(const beast::error_code& ec) {
    if (ec == beast::error::timeout) {
      return Status(StatusCode::kUnavailable, "GET " + what_ + ": timed out");
    }
    return Status(StatusCode::kUnavailable, "GET " + what_ + ": " + transport_message(ec));
  }

  Result<WatchEvent> parse_event(std::string_view line) {
    Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) {
      return Status(StatusCode::kInternal,
                    "watch " + what_ + ": malformed event: " + excerpt(line));
    }
    auto t = j.find("type");
    auto o = j.find("object");
    if (t == j.end() || !t->is_string() || o == j.end()) {
      return Status(StatusCode::kInternal,
                    "watch " + what_ + ": event without type or object: " + excerpt(line));
    }
    bool ok = false;
    WatchEvent ev;
    ev.type = parse_event_type(t->get_ref<const std::string&>(), &ok);
    if (!ok) {
      return Status(StatusCode::kInternal, "watch " + what_ + ": unknown event type \"" +
                                               t->get_ref<const std::string&>() + "\"");
    }
    ev.object = std::move(*o);
    return ev;
  }

  // Reads and parses more of the body into pending_, or marks the stream ended.
  void read_more() {
    conn_->ioc.restart();
    // cancel() may have stopped the io_context before restart() cleared that: check after.
    if (cancelled_.load()) return;
    op_done_ = false;
    http::async_read_some(conn_->stream, conn_->buffer, parser_,
                          [this](beast::error_code ec, std::size_t) {
                            op_ec_ = ec;
                            op_done_ = true;
                          });
    conn_->ioc.run();
    if (!op_done_) return;  // stopped by cancel(); the next loop turn reports it
    std::string& plain = parser_.get().body();
    if (!plain.empty()) {
      pending_ += plain;
      plain.clear();
    }
    if (cancelled_.load()) return;
    if (op_ec_) {
      ended_ = true;
      if (op_ec_ == beast::error::timeout) {
        end_status_ =
            Status(StatusCode::kUnavailable, "watch " + what_ + ": ended at its client deadline");
      } else {
        end_status_ = Status(StatusCode::kUnavailable,
                             "watch " + what_ + ": stream broken: " + transport_message(op_ec_));
      }
    } else if (parser_.is_done()) {
      ended_ = true;
      end_status_ = Status(StatusCode::kUnavailable, "watch " + what_ + ": the server ended it");
    }
  }

  std::unique_ptr<Connection> conn_;
  const std::string what_;
  // The parser keeps a reference to the callback: declared before it.
  std::function<std::size_t(std::uint64_t, beast::string_view, beast::error_code&)> on_chunk_body_;
  http::response_parser<http::string_body> parser_;
  std::string pending_;  // body bytes not yet returned as events
  size_t pos_ = 0;       // start of the first unconsumed line in pending_
  size_t scanned_ = 0;   // pending_ has no '\n' in [pos_, scanned_)
  bool ended_ = false;
  Status end_status_;
  beast::error_code op_ec_;  // set by the read handler (which only touches members)
  bool op_done_ = false;
  std::atomic<bool> cancelled_{false};
  std::mutex fd_mu_;
  int fd_ = -1;  // guarded by fd_mu_; -1 once the stream is being destroyed
};

}  // namespace

// -----------------------------------------------------------------------------------------------
// Status mapping

Status status_from_api_error(int http_code, const Json& body) {
  std::string message;
  std::string reason;
  if (body.is_object()) {
    if (auto m = body.find("message"); m != body.end() && m->is_string()) {
      message = m->get<std::string>();
    }
    if (auto r = body.find("reason"); r != body.end() && r->is_string()) {
      reason = r->get<std::string>();
    }
    if (http_code == 0) {
      if (auto c = body.find("code"); c != body.end() && c->is_number_integer()) {
        http_code = c->get<int>();
      }
    }
  }
  if (message.empty()) {
    message = "the server answered " + std::to_string(http_code);
    if (!reason.empty()) message += " (" + reason + ")";
  }
  return Status(code_for_http(http_code, reason), std::move(message));
}

// -----------------------------------------------------------------------------------------------
// The client

struct HttpApiClient::Impl {
  Impl(Kubeconfig kc, HttpClientOptions o, ServerUrl u, std::shared_ptr<ssl::context> ctx)
      : kubeconfig(std::move(kc)),
        options(std::move(o)),
        url(std::move(u)),
        tls(std::move(ctx)),
        limiter(options.qps, options.burst) {
    verify_name = kubeconfig.tls_server_name.empty() ? url.host : kubeconfig.tls_server_name;
    if (!is_ip_address(verify_name)) sni = verify_name;
    if (!kubeconfig.token.empty()) authorization = "Bearer " + kubeconfig.token;
  }

  const Kubeconfig kubeconfig;
  const HttpClientOptions options;
  const ServerUrl url;
  const std::shared_ptr<ssl::context> tls;
  std::string verify_name;    // checked against the server certificate's SANs
  std::string sni;            // sent in the handshake; empty for IP addresses
  std::string authorization;  // "Bearer <token>" or empty
  RateLimiter limiter;

  mutable std::mutex pool_mu;
  std::vector<std::unique_ptr<Connection>> idle;  // guarded by pool_mu; most recent last
  std::atomic<uint64_t> opened{0};

  // Opens a TLS connection to the server within `deadline`.
  Result<std::unique_ptr<Connection>> connect(Clock::time_point deadline) {
    auto conn = std::make_unique<Connection>(tls);
    auto connect_deadline = std::min(deadline, Clock::now() + options.connect_timeout);
    std::vector<tcp::endpoint> endpoints;
    beast::error_code ec;
    if (auto addr = net::ip::make_address(url.host, ec); !ec) {
      endpoints.emplace_back(addr, static_cast<unsigned short>(std::stoi(url.port)));
    } else {
      tcp::resolver resolver(conn->ioc);
      auto results = resolver.resolve(url.host, url.port, ec);
      if (ec) {
        return Status(StatusCode::kUnavailable,
                      "cannot resolve " + url.host + " (" + url.display + "): " + ec.message());
      }
      for (const auto& e : results) endpoints.push_back(e.endpoint());
    }
    auto& lowest = beast::get_lowest_layer(conn->stream);
    beast::error_code last;
    bool connected = false;
    for (const auto& ep : endpoints) {
      lowest.expires_at(connect_deadline);
      OpResult c = run_op(conn->ioc, [&](auto h) { lowest.async_connect(ep, h); });
      if (!c.ec) {
        connected = true;
        break;
      }
      last = c.ec;
      lowest.socket().close(ec);
      if (c.ec == beast::error::timeout) break;
    }
    if (!connected) {
      if (last == beast::error::timeout) {
        return Status(StatusCode::kUnavailable,
                      "cannot connect to " + url.display + ": timed out after " +
                          std::to_string(options.connect_timeout.count()) + "ms");
      }
      return Status(StatusCode::kUnavailable,
                    "cannot connect to " + url.display + ": " + last.message());
    }
    tune_socket(lowest.socket());

    SSL* ssl_handle = conn->stream.native_handle();
    if (!sni.empty()) SSL_set_tlsext_host_name(ssl_handle, sni.c_str());
    if (!kubeconfig.insecure_skip_tls_verify) {
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl_handle);
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      int ok = is_ip_address(verify_name)
                   ? X509_VERIFY_PARAM_set1_ip_asc(param, verify_name.c_str())
                   : X509_VERIFY_PARAM_set1_host(param, verify_name.c_str(), verify_name.size());
      if (ok != 1) {
        return Status(StatusCode::kInvalidArgument,
                      "cannot check the server certificate against \"" + verify_name + "\"");
      }
    }
    OpResult h = run_op(conn->ioc, [&](auto handler) {
      conn->stream.async_handshake(ssl::stream_base::client, handler);
    });
    if (h.ec) {
      long verify = SSL_get_verify_result(ssl_handle);
      if (verify != X509_V_OK && !kubeconfig.insecure_skip_tls_verify) {
        std::string hint =
            verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH
                ? " (checked \"" + verify_name + "\" against the certificate's names)"
                : " (is certificate-authority-data the cluster's CA?)";
        return Status(StatusCode::kUnavailable,
                      "TLS handshake with " + url.display +
                          " failed: the server certificate did not verify: " +
                          X509_verify_cert_error_string(verify) + hint);
      }
      if (h.ec == beast::error::timeout) {
        return Status(StatusCode::kUnavailable,
                      "TLS handshake with " + url.display + " failed: timed out");
      }
      return Status(StatusCode::kUnavailable,
                    "TLS handshake with " + url.display + " failed: " + transport_message(h.ec));
    }
    opened.fetch_add(1);
    return conn;
  }

  // An idle connection that still looks usable, or null.
  std::unique_ptr<Connection> take_idle() {
    auto now = Clock::now();
    while (true) {
      std::unique_ptr<Connection> c;
      {
        std::lock_guard lock(pool_mu);
        if (idle.empty()) return nullptr;
        c = std::move(idle.back());
        idle.pop_back();
      }
      if (now - c->last_used < options.idle_connection_timeout && !unusable(*c)) return c;
      // Dropped here, outside the lock.
    }
  }

  void give_back(std::unique_ptr<Connection> c) {
    c->last_used = Clock::now();
    {
      std::lock_guard lock(pool_mu);
      if (static_cast<int>(idle.size()) < options.max_idle_connections) {
        idle.push_back(std::move(c));
        return;
      }
    }
    c.reset();  // over the limit: closed, outside the lock
  }

  http::request<http::string_body> make_request(http::verb method, std::string target,
                                                std::string body, std::string_view content_type) {
    http::request<http::string_body> req{method, url.base_path + target, 11};
    req.set(http::field::host, url.host_header);
    req.set(http::field::user_agent, options.user_agent);
    req.set(http::field::accept, "application/json");
    if (!authorization.empty()) req.set(http::field::authorization, authorization);
    if (!body.empty()) {
      req.set(http::field::content_type,
              beast::string_view(content_type.data(), content_type.size()));
    }
    req.keep_alive(true);
    req.body() = std::move(body);
    req.prepare_payload();
    return req;
  }

  struct Reply {
    int code = 0;
    std::string body;
  };

  // One request/response on a pooled connection, with one transparent retry on a reused
  // connection the server had closed.
  Result<Reply> round_trip(http::verb method, std::string target, std::string body,
                           std::string_view content_type = "application/json") {
    limiter.acquire();
    auto deadline = Clock::now() + options.request_timeout;
    auto req = make_request(method, std::move(target), std::move(body), content_type);
    std::string verb_name(http::to_string(method));
    const std::string shown(req.target());
    bool idempotent = method == http::verb::get || method == http::verb::put ||
                      method == http::verb::delete_ || method == http::verb::head;
    for (int attempt = 0;; ++attempt) {
      std::unique_ptr<Connection> conn = attempt == 0 ? take_idle() : nullptr;
      bool reused = conn != nullptr;
      if (!conn) {
        auto c = connect(deadline);
        if (!c.is_ok()) {
          return Status(c.status().code(),
                        std::string(verb_name) + " " + shown + ": " + c.status().message());
        }
        conn = std::move(c).value();
      }
      auto& lowest = beast::get_lowest_layer(conn->stream);
      lowest.expires_at(deadline);
      OpResult w = run_op(conn->ioc, [&](auto h) { http::async_write(conn->stream, req, h); });
      beast::error_code failure = w.ec;
      bool got_answer_bytes = false;
      http::response_parser<http::string_body> parser;
      parser.body_limit(kMaxResponseBytes);
      parser.header_limit(kMaxHeaderBytes);
      if (!failure) {
        OpResult r = run_op(
            conn->ioc, [&](auto h) { http::async_read(conn->stream, conn->buffer, parser, h); });
        failure = r.ec;
        got_answer_bytes = parser.got_some();
      }
      if (!failure) {
        Reply reply;
        reply.code = static_cast<int>(parser.get().result_int());
        reply.body = std::move(parser.get().body());
        if (parser.get().keep_alive()) {
          lowest.expires_never();
          give_back(std::move(conn));
        }
        return reply;
      }
      conn.reset();
      if (failure == beast::error::timeout) {
        return Status(StatusCode::kUnavailable,
                      std::string(verb_name) + " " + shown + ": timed out: no answer within " +
                          std::to_string(options.request_timeout.count()) + "ms");
      }
      bool nothing_written = w.ec && w.bytes == 0;
      if (attempt == 0 && reused && !got_answer_bytes && (idempotent || nothing_written)) {
        continue;  // the server closed the idle connection: once more on a new one
      }
      return Status(StatusCode::kUnavailable, std::string(verb_name) + " " + shown + " to " +
                                                  url.display + ": " + transport_message(failure));
    }
  }

  // round_trip() whose 2xx JSON answer is the result.
  Result<Json> call(http::verb method, std::string target, std::string body = {},
                    std::string_view content_type = "application/json") {
    std::string shown = target;
    SKIFF_ASSIGN_OR_RETURN(Reply reply,
                           round_trip(method, std::move(target), std::move(body), content_type));
    std::string verb_name(http::to_string(method));
    if (reply.code < 200 || reply.code >= 300) {
      return error_from_response(reply.code, reply.body, verb_name, shown);
    }
    return parse_json_body(reply.body, verb_name, shown);
  }

  void add_write_params(Query& q, const WriteOptions& o) const {
    const std::string& manager = o.field_manager.empty() ? options.field_manager : o.field_manager;
    q.add_if("fieldManager", manager);
    if (o.dry_run) q.add("dryRun", "All");
  }
};

HttpApiClient::HttpApiClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpApiClient::~HttpApiClient() = default;

Result<std::unique_ptr<HttpApiClient>> HttpApiClient::create(const Kubeconfig& kubeconfig,
                                                             HttpClientOptions options) {
  SKIFF_ASSIGN_OR_RETURN(ServerUrl url, parse_server_url(kubeconfig.server));
  if (options.max_idle_connections < 0) options.max_idle_connections = 0;
  if (options.request_timeout.count() <= 0) {
    return Status(StatusCode::kInvalidArgument, "request_timeout must be positive");
  }
  if (options.connect_timeout.count() <= 0) options.connect_timeout = options.request_timeout;

  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  beast::error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                   ec);
  if (kubeconfig.insecure_skip_tls_verify) {
    ctx->set_verify_mode(ssl::verify_none, ec);
  } else {
    if (!kubeconfig.certificate_authority_data.empty()) {
      ctx->add_certificate_authority(net::buffer(kubeconfig.certificate_authority_data), ec);
      if (ec) {
        return Status(StatusCode::kInvalidArgument,
                      "certificate-authority-data is not a PEM certificate: " + ec.message());
      }
    } else {
      ctx->set_default_verify_paths(ec);
      if (ec) {
        return Status(StatusCode::kInvalidArgument,
                      "cannot load the system's trusted certificates: " + ec.message());
      }
    }
    ctx->set_verify_mode(ssl::verify_peer, ec);
  }
  bool has_cert = !kubeconfig.client_certificate_data.empty();
  bool has_key = !kubeconfig.client_key_data.empty();
  if (has_cert != has_key) {
    return Status(StatusCode::kInvalidArgument,
                  has_cert ? "client-certificate-data without client-key-data"
                           : "client-key-data without client-certificate-data");
  }
  if (has_cert) {
    ctx->use_certificate_chain(net::buffer(kubeconfig.client_certificate_data), ec);
    if (ec) {
      return Status(StatusCode::kInvalidArgument,
                    "client-certificate-data is not a PEM certificate: " + ec.message());
    }
    ctx->use_private_key(net::buffer(kubeconfig.client_key_data), ssl::context::pem, ec);
    if (ec) {
      return Status(
          StatusCode::kInvalidArgument,
          "client-key-data is not a PEM private key for the certificate: " + ec.message());
    }
  }
  auto impl =
      std::make_unique<Impl>(kubeconfig, std::move(options), std::move(url), std::move(ctx));
  return std::unique_ptr<HttpApiClient>(new HttpApiClient(std::move(impl)));
}

Result<std::unique_ptr<HttpApiClient>> HttpApiClient::from_kubeconfig_file(
    const std::string& path, HttpClientOptions options, const std::string& context) {
  SKIFF_ASSIGN_OR_RETURN(Kubeconfig kc, load_kubeconfig(path, context));
  return create(kc, std::move(options));
}

Result<std::unique_ptr<HttpApiClient>> HttpApiClient::connect(const NodeConnection& c,
                                                              const std::string& component) {
  HttpClientOptions http;
  http.user_agent = "skiff-" + component;
  http.field_manager = "skiff-" + component;
  if (!c.kubeconfig.empty()) return from_kubeconfig_file(c.kubeconfig, http);
  if (c.server.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "the " + component + " needs --kubeconfig or --server");
  }
  return from_server_token(c.server, c.token, c.ca_file, c.data_dir + "/tls/ca.crt", http);
}

Result<std::unique_ptr<HttpApiClient>> HttpApiClient::from_server_token(
    const std::string& server, const std::string& token, const std::string& ca_file,
    const std::string& default_ca_file, HttpClientOptions options) {
  Kubeconfig config;
  config.server = server;
  config.token = token;
  std::ifstream in(ca_file.empty() ? default_ca_file : ca_file);
  if (in) {
    std::stringstream pem;
    pem << in.rdbuf();
    config.certificate_authority_data = pem.str();
  } else if (!ca_file.empty()) {
    return Status(StatusCode::kNotFound, "cannot read " + ca_file);
  }
  return create(config, std::move(options));
}

Result<Json> HttpApiClient::get(const Resource& r, std::string_view ns, std::string_view name,
                                std::string_view subresource) {
  if (name.empty()) return Status(StatusCode::kInvalidArgument, "get: empty name");
  return impl_->call(http::verb::get, r.object_path(ns, name, subresource));
}

Result<Json> HttpApiClient::list(const Resource& r, std::string_view ns,
                                 const ListOptions& options) {
  Query q;
  add_list_params(q, options);
  return impl_->call(http::verb::get, r.collection_path(ns) + q.str());
}

Result<Json> HttpApiClient::create(const Resource& r, std::string_view ns, const Json& object,
                                   const WriteOptions& options, std::string_view name,
                                   std::string_view subresource) {
  std::string object_ns;
  if (ns.empty() && r.namespaced) {
    object_ns = namespace_of(object);
    ns = object_ns;
  }
  Query q;
  impl_->add_write_params(q, options);
  std::string path = name.empty() ? r.collection_path(ns) : r.object_path(ns, name, subresource);
  return impl_->call(http::verb::post, path + q.str(), object.dump());
}

Result<Json> HttpApiClient::update(const Resource& r, std::string_view ns, const Json& object,
                                   const WriteOptions& options, std::string_view subresource) {
  std::string name = name_of(object);
  if (name.empty()) {
    return Status(StatusCode::kInvalidArgument, "update: the object has no metadata.name");
  }
  std::string object_ns;
  if (ns.empty() && r.namespaced) {
    object_ns = namespace_of(object);
    ns = object_ns;
  }
  Query q;
  impl_->add_write_params(q, options);
  return impl_->call(http::verb::put, r.object_path(ns, name, subresource) + q.str(),
                     object.dump());
}

Result<Json> HttpApiClient::patch(const Resource& r, std::string_view ns, std::string_view name,
                                  PatchType type, std::string_view body,
                                  const WriteOptions& options, std::string_view subresource) {
  if (name.empty()) return Status(StatusCode::kInvalidArgument, "patch: empty name");
  Query q;
  impl_->add_write_params(q, options);
  if (options.force && type == PatchType::kApply) q.add("force", "true");
  return impl_->call(http::verb::patch, r.object_path(ns, name, subresource) + q.str(),
                     std::string(body), patch_content_type(type));
}

Result<Json> HttpApiClient::remove(const Resource& r, std::string_view ns, std::string_view name,
                                   const DeleteOptions& options) {
  if (name.empty()) return Status(StatusCode::kInvalidArgument, "remove: empty name");
  Json body{{"kind", "DeleteOptions"}, {"apiVersion", "v1"}};
  if (options.grace_period_seconds) body["gracePeriodSeconds"] = *options.grace_period_seconds;
  if (!options.propagation_policy.empty()) body["propagationPolicy"] = options.propagation_policy;
  if (!options.precondition_uid.empty() || !options.precondition_resource_version.empty()) {
    Json pre = Json::object();
    if (!options.precondition_uid.empty()) pre["uid"] = options.precondition_uid;
    if (!options.precondition_resource_version.empty()) {
      pre["resourceVersion"] = options.precondition_resource_version;
    }
    body["preconditions"] = std::move(pre);
  }
  return impl_->call(http::verb::delete_, r.object_path(ns, name), body.dump());
}

Result<std::unique_ptr<WatchStream>> HttpApiClient::watch(const Resource& r, std::string_view ns,
                                                          const ListOptions& options) {
  Impl& s = *impl_;
  s.limiter.acquire();
  Query q;
  q.add("watch", "1");
  add_list_params(q, options);
  if (options.allow_watch_bookmarks) q.add("allowWatchBookmarks", "true");
  if (options.timeout_seconds > 0) q.add("timeoutSeconds", std::to_string(options.timeout_seconds));
  std::string target = r.collection_path(ns) + q.str();
  auto deadline = Clock::now() + s.options.request_timeout;
  auto conn = s.connect(deadline);
  if (!conn.is_ok()) {
    return Status(conn.status().code(), "GET " + target + ": " + conn.status().message());
  }
  auto req = s.make_request(http::verb::get, target, {}, {});
  // A server that forgets timeoutSeconds must not hold the watch forever.
  std::optional<Clock::time_point> stream_deadline;
  if (options.timeout_seconds > 0) {
    stream_deadline =
        Clock::now() + std::chrono::seconds(options.timeout_seconds) + s.options.request_timeout;
  }
  auto stream =
      std::make_unique<HttpWatchStream>(std::move(conn).value(), std::string(req.target()));
  SKIFF_RETURN_IF_ERROR(stream->start(req, deadline, stream_deadline));
  return std::unique_ptr<WatchStream>(std::move(stream));
}

Result<std::string> HttpApiClient::raw(std::string_view method, std::string_view path_and_query,
                                       std::string_view body, std::string_view content_type) {
  http::verb verb = http::string_to_verb(beast::string_view(method.data(), method.size()));
  if (verb == http::verb::unknown) {
    return Status(StatusCode::kInvalidArgument,
                  "unknown HTTP method \"" + std::string(method) + "\"");
  }
  std::string target(path_and_query);
  SKIFF_ASSIGN_OR_RETURN(Impl::Reply reply,
                         impl_->round_trip(verb, target, std::string(body), content_type));
  if (reply.code < 200 || reply.code >= 300) {
    return error_from_response(reply.code, reply.body, method, target);
  }
  return std::move(reply.body);
}

size_t HttpApiClient::idle_connections() const {
  std::lock_guard lock(impl_->pool_mu);
  return impl_->idle.size();
}

uint64_t HttpApiClient::connections_opened() const {
  return impl_->opened.load();
}

}  // namespace skiff::client
