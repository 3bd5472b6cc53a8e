#include "httpserver/http_server.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <strings.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>

#include "base/log.h"
#include "httpserver/server_tls.h"

namespace skiff::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Strand = net::strand<net::io_context::executor_type>;

constexpr size_t kMaxQueuedStreamBytes = 64 * 1024 * 1024;

std::string status_json(int code, const char* reason, const std::string& message) {
  std::string escaped;
  for (char c : message) {
    if (c == '"' || c == '\\') escaped.push_back('\\');
    escaped.push_back(c);
  }
  return "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
         "\"message\":\"" +
         escaped + "\",\"reason\":\"" + reason + "\",\"code\":" + std::to_string(code) + "}";
}

// Wakes a coroutine waiting on its strand from any thread. A wake that lands while the coroutine
// is not waiting (it may be between checking its condition and waiting: co_await can yield to the
// strand) is remembered, so it is never lost.
class Waker {
 public:
  explicit Waker(Strand strand) : strand_(strand), timer_(strand) {
    timer_.expires_at(net::steady_timer::time_point::max());
  }
  void wake() {
    net::post(strand_, [this] {
      woken_ = true;
      timer_.cancel();
    });
  }
  net::awaitable<void> wait() {
    if (!woken_) {
      boost::system::error_code ec;
      co_await timer_.async_wait(net::redirect_error(net::use_awaitable, ec));
      timer_.expires_at(net::steady_timer::time_point::max());
    }
    woken_ = false;
  }

 private:
  Strand strand_;
  net::steady_timer timer_;
  bool woken_ = false;  // strand only
};

class StreamImpl final : public ResponseStream, public std::enable_shared_from_this<StreamImpl> {
 public:
  explicit StreamImpl(Strand strand) : strand_(strand), waker_(strand) {}

  bool write(std::string chunk) override {
    if (chunk.empty()) return !closed();
    return write_shared(std::make_shared<const std::string>(std::move(chunk)));
  }

  bool write_shared(std::shared_ptr<const std::string> chunk) override {
    if (!chunk || chunk->empty()) return !closed();
    {
      std::lock_guard lock(mu_);
      if (closed_ || finished_) return false;
      queued_bytes_ += chunk->size();
      if (queued_bytes_ > kMaxQueuedStreamBytes) {
        // The client is not reading: drop it rather than buffer without bound.
        closed_ = true;
      } else {
        chunks_.push_back(std::move(chunk));
      }
    }
    waker_.wake();
    return !closed();
  }

  void finish() override {
    {
      std::lock_guard lock(mu_);
      finished_ = true;
    }
    waker_.wake();
  }

  void on_close(std::function<void()> cb) override {
    {
      std::lock_guard lock(mu_);
      if (!close_ran_) {
        close_callbacks_.push_back(std::move(cb));
        return;
      }
    }
    cb();
  }

  bool closed() const override {
    std::lock_guard lock(mu_);
    return closed_;
  }

  size_t queued_bytes() const override {
    std::lock_guard lock(mu_);
    return queued_bytes_;
  }

  void post(std::function<void()> fn) override {
    net::post(strand_, [self = shared_from_this(), fn = std::move(fn)] { fn(); });
  }

  // Server side.
  void mark_closed() {
    std::vector<std::function<void()>> callbacks;
    {
      std::lock_guard lock(mu_);
      closed_ = true;
      if (close_ran_) return;
      close_ran_ = true;
      callbacks.swap(close_callbacks_);
    }
    waker_.wake();
    for (auto& cb : callbacks) cb();
  }

  // Takes queued chunks; sets *done when the stream should end after them.
  void take(std::deque<std::shared_ptr<const std::string>>* out, bool* done) {
    std::lock_guard lock(mu_);
    out->swap(chunks_);
    queued_bytes_ = 0;
    // Once finished, no chunk can follow the ones taken here: end after writing them. (Waiting
    // for another wake-up instead would hang the stream, since finish() wakes the writer once.)
    *done = closed_ || finished_;
  }

  Waker& waker() { return waker_; }

 private:
  Strand strand_;
  Waker waker_;
  mutable std::mutex mu_;
  std::deque<std::shared_ptr<const std::string>> chunks_;  // guarded by mu_
  size_t queued_bytes_ = 0;                                // guarded by mu_
  bool finished_ = false;                                  // guarded by mu_
  bool closed_ = false;                                    // guarded by mu_
  bool close_ran_ = false;                                 // guarded by mu_
  std::vector<std::function<void()>> close_callbacks_;     // guarded by mu_
};

// One request handed to the worker pool, and what the handler answered.
class Exchange final : public Responder {
 public:
  explicit Exchange(Strand strand) : strand_(strand), waker_(strand) {}

  void respond(Response response) override {
    std::lock_guard lock(mu_);
    response_ = std::move(response);
  }
  std::shared_ptr<ResponseStream> stream(int status, std::string content_type,
                                         std::vector<HttpHeader> headers) override {
    std::lock_guard lock(mu_);
    stream_ = std::make_shared<StreamImpl>(strand_);
    Response head;
    head.status = status;
    head.content_type = std::move(content_type);
    head.headers = std::move(headers);
    response_ = std::move(head);
    return stream_;
  }
  void upgrade(UpgradeTarget target) override {
    std::lock_guard lock(mu_);
    upgrade_ = std::move(target);
  }
  void done() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    waker_.wake();
  }
  bool is_done() {
    std::lock_guard lock(mu_);
    return done_;
  }
  Waker& waker() { return waker_; }
  std::optional<Response>& response() { return response_; }
  std::shared_ptr<StreamImpl>& stream() { return stream_; }
  std::optional<UpgradeTarget>& upgrade_target() { return upgrade_; }

 private:
  Strand strand_;
  Waker waker_;
  std::mutex mu_;
  bool done_ = false;                     // guarded by mu_
  std::optional<Response> response_;      // guarded by mu_ until done_
  std::shared_ptr<StreamImpl> stream_;    // guarded by mu_ until done_
  std::optional<UpgradeTarget> upgrade_;  // guarded by mu_ until done_
};

template <class Stream>
const ssl_st* tls_handle(Stream&) {
  return nullptr;
}
template <>
const ssl_st* tls_handle(beast::ssl_stream<beast::tcp_stream>& stream) {
  return stream.native_handle();
}

template <class Stream>
void close_stream(Stream& stream) {
  boost::system::error_code ec;
  beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_both, ec);
  beast::get_lowest_layer(stream).socket().close(ec);
}

Request to_request(bhttp::request<bhttp::string_body>& msg, const std::string& remote) {
  Request req;
  req.method = std::string(msg.method_string());
  std::string_view target(msg.target().data(), msg.target().size());
  size_t q = target.find('?');
  req.path = percent_decode(target.substr(0, q), false);
  if (q != std::string_view::npos) {
    req.raw_query = std::string(target.substr(q + 1));
    req.query = parse_query(req.raw_query);
  }
  for (const auto& field : msg) {
    req.headers.push_back({std::string(field.name_string()), std::string(field.value())});
  }
  req.body = std::move(msg.body());
  req.remote_address = remote;
  return req;
}

bhttp::response<bhttp::string_body> to_http(Response& r, unsigned version, bool keep_alive) {
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(r.status), version};
  res.set(bhttp::field::content_type, r.content_type);
  res.set(bhttp::field::cache_control, "no-cache, private");
  for (const HttpHeader& h : r.headers) res.insert(h.name, h.value);
  res.body() = std::move(r.body);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  return res;
}

// ---- Relaying upgraded connections (exec, attach, port-forward) --------------------------------

constexpr auto kUpstreamConnectTimeout = std::chrono::seconds(10);
constexpr auto kUpstreamResponseTimeout = std::chrono::seconds(60);
constexpr size_t kMaxUpstreamErrorBody = 1024 * 1024;
constexpr size_t kRelayPiece = 64 * 1024;

using ErrorCode = boost::system::error_code;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

std::string host_port(const std::string& host, int port) {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

// Socket errors worded as Go's net package words them, so kubectl users see familiar messages.
std::string go_error_text(const ErrorCode& ec) {
  if (ec == beast::error::timeout) return "i/o timeout";
  std::string text = ec.message();
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// Whether a header of the upstream's answer describes the upstream connection or framing rather
// than the answer: dropped when a non-101 answer is passed on (its length is recomputed).
bool is_hop_by_hop(std::string_view name, std::string_view connection) {
  static constexpr std::string_view kNames[] = {"Connection",
                                                "Keep-Alive",
                                                "Proxy-Connection",
                                                "Proxy-Authenticate",
                                                "Proxy-Authorization",
                                                "TE",
                                                "Trailer",
                                                "Transfer-Encoding",
                                                "Upgrade",
                                                "Content-Length"};
  for (std::string_view n : kNames) {
    if (iequals(name, n)) return true;
  }
  // Headers the Connection header names are hop-by-hop too.
  while (!connection.empty()) {
    size_t comma = connection.find(',');
    std::string_view token = connection.substr(0, comma);
    connection =
        comma == std::string_view::npos ? std::string_view() : connection.substr(comma + 1);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) {
      token.remove_prefix(1);
    }
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) {
      token.remove_suffix(1);
    }
    if (!token.empty() && iequals(name, token)) return true;
  }
  return false;
}

// Headers of the target the relay sets itself.
bool is_framing_header(std::string_view name) {
  return iequals(name, "Host") || iequals(name, "Content-Length") ||
         iequals(name, "Transfer-Encoding");
}

// The TLS client context for one upstream connection.
Result<std::shared_ptr<ssl::context>> upstream_tls_context(const UpgradeTarget& target) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ErrorCode ec;
  if (!target.ca_file.empty()) {
    ctx->load_verify_file(target.ca_file, ec);
    if (ec) {
      return Status(StatusCode::kInvalidArgument,
                    "loading CA " + target.ca_file + ": " + ec.message());
    }
    ctx->set_verify_mode(ssl::verify_peer, ec);
  } else {
    ctx->set_verify_mode(ssl::verify_none, ec);
  }
  if (!target.cert_file.empty()) {
    ctx->use_certificate_chain_file(target.cert_file, ec);
    if (ec) {
      return Status(StatusCode::kInvalidArgument,
                    "loading client certificate " + target.cert_file + ": " + ec.message());
    }
    ctx->use_private_key_file(target.key_file, ssl::context::pem, ec);
    if (ec) {
      return Status(StatusCode::kInvalidArgument,
                    "loading client key " + target.key_file + ": " + ec.message());
    }
  }
  return ctx;
}

// The connection to the upstream; `tls` is declared first so it outlives `stream`.
template <class Stream>
struct UpstreamConnection {
  UpstreamConnection(std::shared_ptr<ssl::context> context,
                     beast::tcp_stream tcp) requires std::is_same_v<Stream, TlsStream>
      : tls(std::move(context)), stream(std::move(tcp), *tls) {}
  explicit UpstreamConnection(
      beast::tcp_stream tcp) requires std::is_same_v<Stream, beast::tcp_stream>
      : stream(std::move(tcp)) {}

  std::shared_ptr<ssl::context> tls;
  Stream stream;
};

// Tells the upstream that the client sends nothing more. Over TLS there is no half-close that
// leaves the upstream's direction open without a close_notify exchange: the relay ends the
// upstream connection, as Kubernetes' own relays end both sides once either does (otherwise an
// upstream that waits for the client, such as a port-forward, would be held open for good).
void half_close(beast::tcp_stream& stream) {
  ErrorCode ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}
void half_close(TlsStream& stream) {
  close_stream(stream);
}

// Lets the relay wait, on its strand, for its client-to-upstream half to finish. The finished
// half moves the timer's expiry to the past, so a wait started before or after that completes.
struct RelayJoin {
  explicit RelayJoin(Strand strand) : timer(strand) {
    timer.expires_at(net::steady_timer::time_point::max());
  }
  void finish() {
    finished = true;
    timer.expires_at(net::steady_timer::time_point::min());
  }
  net::awaitable<void> wait() {
    while (!finished) {
      ErrorCode ec;
      co_await timer.async_wait(net::redirect_error(net::use_awaitable, ec));
    }
  }

  net::steady_timer timer;
  bool finished = false;  // strand only
};

template <class Client>
net::awaitable<void> answer_relay_failure(Client& client, int code, const char* reason,
                                          const std::string& message) {
  Response r{code, "application/json", {}, status_json(code, reason, message)};
  auto res = to_http(r, 11, false);
  ErrorCode ec;
  co_await bhttp::async_write(client, res, net::redirect_error(net::use_awaitable, ec));
}

// Client to upstream, until the client ends: first the bytes that came after its request, then
// whatever it sends. A clean end (EOF) half-closes the upstream so its answers keep flowing; a
// broken client ends the whole relay.
template <class Client, class Upstream>
net::awaitable<void> pump_client_to_upstream(std::shared_ptr<Client> client,
                                             std::shared_ptr<UpstreamConnection<Upstream>> up,
                                             std::string pending, std::shared_ptr<RelayJoin> join) {
  ErrorCode read_ec;
  ErrorCode write_ec;
  if (!pending.empty()) {
    co_await net::async_write(up->stream, net::buffer(pending),
                              net::redirect_error(net::use_awaitable, write_ec));
  }
  std::vector<char> piece(kRelayPiece);
  while (!write_ec && !read_ec) {
    size_t n = co_await client->async_read_some(net::buffer(piece),
                                                net::redirect_error(net::use_awaitable, read_ec));
    if (n > 0) {
      co_await net::async_write(up->stream, net::buffer(piece.data(), n),
                                net::redirect_error(net::use_awaitable, write_ec));
    }
  }
  if (!write_ec) {
    if (read_ec == net::error::eof || read_ec == ssl::error::stream_truncated) {
      half_close(up->stream);
    } else {
      // The client is gone (or the relay already closed it): end the upstream's half too.
      close_stream(up->stream);
    }
  }
  // A failed write means the upstream broke; its half sees that on its next read.
  join->finish();
}

// Sends the request to a connected upstream and relays its answer.
template <class Client, class Upstream>
net::awaitable<void> relay_over(std::shared_ptr<Client> client, Strand strand,
                                beast::flat_buffer& client_buffer, std::string body,
                                const UpgradeTarget& target,
                                std::shared_ptr<UpstreamConnection<Upstream>> up) {
  const std::string where = host_port(target.host, target.port);
  beast::tcp_stream& lowest = beast::get_lowest_layer(up->stream);
  ErrorCode ec;

  bhttp::request<bhttp::string_body> request;
  request.method_string(target.method.empty() ? "GET" : target.method);
  request.target(target.target.empty() ? "/" : target.target);
  request.version(11);
  request.set(bhttp::field::host, where);
  for (const HttpHeader& h : target.headers) {
    if (!is_framing_header(h.name)) request.insert(h.name, h.value);
  }
  if (!body.empty()) {
    request.content_length(body.size());
    request.body() = std::move(body);
  }
  lowest.expires_after(kUpstreamResponseTimeout);
  co_await bhttp::async_write(up->stream, request, net::redirect_error(net::use_awaitable, ec));
  if (ec) {
    close_stream(up->stream);
    co_await answer_relay_failure(
        *client, 502, "ServiceUnavailable",
        "error sending request to backend " + where + ": " + go_error_text(ec));
    co_return;
  }

  // The answer's head; informational answers other than 101 are skipped.
  beast::flat_buffer upstream_buffer;
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser;
  for (int informational = 0;; ++informational) {
    parser.emplace();
    parser->header_limit(64 * 1024);
    parser->body_limit(std::numeric_limits<std::uint64_t>::max());
    co_await bhttp::async_read_header(up->stream, upstream_buffer, *parser,
                                      net::redirect_error(net::use_awaitable, ec));
    unsigned status = ec ? 0 : parser->get().result_int();
    if (ec || status == 101 || status / 100 != 1 || informational >= 8) break;
  }
  if (ec) {
    close_stream(up->stream);
    co_await answer_relay_failure(
        *client, 502, "ServiceUnavailable",
        "error reading response from backend " + where + ": " + go_error_text(ec));
    co_return;
  }
  auto& head = parser->get();

  if (head.result_int() != 101) {
    // Not switching: pass the answer on (its body capped) and end.
    std::string answer;
    std::vector<char> piece(kRelayPiece);
    while (!parser->is_done() && answer.size() < kMaxUpstreamErrorBody) {
      auto& b = head.body();
      b.data = piece.data();
      b.size = piece.size();
      co_await bhttp::async_read_some(up->stream, upstream_buffer, *parser,
                                      net::redirect_error(net::use_awaitable, ec));
      size_t got = piece.size() - b.size;
      answer.append(piece.data(), std::min(got, kMaxUpstreamErrorBody - answer.size()));
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) break;  // pass on what arrived
    }
    close_stream(up->stream);
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(head.result_int()), 11};
    res.reason(head.reason());
    auto connection_value = head[bhttp::field::connection];
    std::string_view connection(connection_value.data(), connection_value.size());
    for (const auto& field : head) {
      if (!is_hop_by_hop({field.name_string().data(), field.name_string().size()}, connection)) {
        res.insert(field.name_string(), field.value());
      }
    }
    unsigned status = head.result_int();
    bool bodiless = status / 100 == 1 || status == 204 || status == 304;
    if (!bodiless) res.body() = std::move(answer);
    res.keep_alive(false);
    if (!bodiless) res.prepare_payload();
    co_await bhttp::async_write(*client, res, net::redirect_error(net::use_awaitable, ec));
    co_return;
  }

  // Switching protocols: the upstream's head as it sent it, then bytes both ways.
  lowest.expires_never();
  std::string raw = "HTTP/" + std::to_string(head.version() / 10) + "." +
                    std::to_string(head.version() % 10) + " 101 " + std::string(head.reason()) +
                    "\r\n";
  for (const auto& field : head) {
    raw.append(field.name_string().data(), field.name_string().size());
    raw += ": ";
    raw.append(field.value().data(), field.value().size());
    raw += "\r\n";
  }
  raw += "\r\n";
  raw += beast::buffers_to_string(upstream_buffer.data());
  upstream_buffer.consume(upstream_buffer.size());
  std::string client_pending = beast::buffers_to_string(client_buffer.data());
  client_buffer.consume(client_buffer.size());

  co_await net::async_write(*client, net::buffer(raw), net::redirect_error(net::use_awaitable, ec));
  if (ec) {
    close_stream(up->stream);
    co_return;
  }
  auto join = std::make_shared<RelayJoin>(strand);
  net::co_spawn(strand, pump_client_to_upstream(client, up, std::move(client_pending), join),
                net::detached);

  // Upstream to client until the upstream ends; each piece is written before the next is read,
  // so everything the upstream sent has reached the client when it ends.
  std::vector<char> piece(kRelayPiece);
  while (true) {
    ErrorCode read_ec;
    size_t n = co_await up->stream.async_read_some(
        net::buffer(piece), net::redirect_error(net::use_awaitable, read_ec));
    if (n > 0) {
      co_await net::async_write(*client, net::buffer(piece.data(), n),
                                net::redirect_error(net::use_awaitable, ec));
      if (ec) break;
    }
    if (read_ec) break;
  }
  close_stream(up->stream);
  close_stream(*client);
  // The other half's pending read ends with the close; it uses nothing of this frame, but the
  // relay is over only once both halves are.
  co_await join->wait();
}

// Relays the client's upgrade request to `target` (see UpgradeTarget in http.h). Runs on the
// connection's strand; the caller closes the client connection afterwards.
template <class Client>
net::awaitable<void> relay_upgrade(std::shared_ptr<Client> client, Strand strand,
                                   beast::flat_buffer& client_buffer, std::string body,
                                   UpgradeTarget target) {
  const std::string where = host_port(target.host, target.port);
  const char* kReason = "ServiceUnavailable";
  if (target.port <= 0 || target.port > 65535) {
    co_await answer_relay_failure(*client, 502, kReason,
                                  "error dialing backend: dial tcp " + where + ": invalid port");
    co_return;
  }
  std::shared_ptr<ssl::context> tls;
  if (target.tls) {
    Result<std::shared_ptr<ssl::context>> made = upstream_tls_context(target);
    if (!made.is_ok()) {
      SKIFF_LOG_ERROR("http: relay to {}: {}", where, made.status().to_string());
      co_await answer_relay_failure(*client, 500, "InternalError",
                                    "error dialing backend: " + made.status().message());
      co_return;
    }
    tls = std::move(made).value();
  }

  ErrorCode ec;
  std::vector<tcp::endpoint> endpoints;
  net::ip::address address = net::ip::make_address(target.host, ec);
  bool ip_literal = !ec;
  if (ip_literal) {
    endpoints.emplace_back(address, static_cast<unsigned short>(target.port));
  } else {
    // The lookup counts against the connect timeout; the timer's handler keeps the resolver
    // alive, since it may run after this frame is gone.
    auto resolver = std::make_shared<tcp::resolver>(strand);
    net::steady_timer deadline(strand);
    deadline.expires_after(kUpstreamConnectTimeout);
    deadline.async_wait([resolver](ErrorCode timer_ec) {
      if (!timer_ec) resolver->cancel();
    });
    auto results = co_await resolver->async_resolve(target.host, std::to_string(target.port),
                                                    net::redirect_error(net::use_awaitable, ec));
    deadline.cancel();
    if (ec) {
      std::string why = ec == net::error::operation_aborted ? "i/o timeout" : go_error_text(ec);
      co_await answer_relay_failure(
          *client, 502, kReason,
          "error dialing backend: dial tcp: lookup " + target.host + ": " + why);
      co_return;
    }
    for (const auto& r : results) endpoints.push_back(r.endpoint());
  }

  beast::tcp_stream tcp_upstream(strand);
  tcp_upstream.expires_after(kUpstreamConnectTimeout);
  co_await tcp_upstream.async_connect(endpoints, net::redirect_error(net::use_awaitable, ec));
  if (ec) {
    std::string why = ec == beast::error::timeout ? "i/o timeout" : "connect: " + go_error_text(ec);
    co_await answer_relay_failure(*client, 502, kReason,
                                  "error dialing backend: dial tcp " + where + ": " + why);
    co_return;
  }
  tcp_upstream.socket().set_option(tcp::no_delay(true), ec);

  if (!tls) {
    auto up = std::make_shared<UpstreamConnection<beast::tcp_stream>>(std::move(tcp_upstream));
    co_await relay_over(client, strand, client_buffer, std::move(body), target, up);
    co_return;
  }
  auto up = std::make_shared<UpstreamConnection<TlsStream>>(tls, std::move(tcp_upstream));
  if (!ip_literal) SSL_set_tlsext_host_name(up->stream.native_handle(), target.host.c_str());
  if (!target.ca_file.empty()) {
    up->stream.set_verify_callback(ssl::host_name_verification(target.host), ec);
  }
  beast::get_lowest_layer(up->stream).expires_after(kUpstreamConnectTimeout);
  if (!ec) {
    co_await up->stream.async_handshake(ssl::stream_base::client,
                                        net::redirect_error(net::use_awaitable, ec));
  }
  if (ec) {
    close_stream(up->stream);
    std::string why = ec == beast::error::timeout ? "i/o timeout" : ec.message();
    co_await answer_relay_failure(
        *client, 502, kReason, "error dialing backend: tls handshake with " + where + ": " + why);
    co_return;
  }
  co_await relay_over(client, strand, client_buffer, std::move(body), target, up);
}

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpHandler handler;
  AuthenticateFn authenticator;
  net::io_context ioc;
  std::optional<ssl::context> tls;
  tcp::acceptor acceptor{ioc};
  std::unique_ptr<net::thread_pool> workers;
  std::vector<std::thread> io_threads;
  std::atomic<bool> stopped{false};
  std::atomic<int> in_flight{0};

  net::awaitable<void> accept_loop() {
    while (true) {
      boost::system::error_code ec;
      Strand strand = net::make_strand(ioc);
      tcp::socket socket(strand);
      co_await acceptor.async_accept(socket, net::redirect_error(net::use_awaitable, ec));
      if (ec) {
        if (!acceptor.is_open()) co_return;
        continue;
      }
      socket.set_option(tcp::no_delay(true), ec);
      std::string remote;
      if (auto ep = socket.remote_endpoint(ec); !ec) {
        remote = ep.address().to_string() + ":" + std::to_string(ep.port());
      }
      if (tls) {
        auto stream = std::make_shared<beast::ssl_stream<beast::tcp_stream>>(
            beast::tcp_stream(std::move(socket)), *tls);
        net::co_spawn(strand, serve_tls(stream, strand, remote), net::detached);
      } else {
        auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
        net::co_spawn(strand, serve(stream, strand, remote), net::detached);
      }
    }
  }

  net::awaitable<void> serve_tls(std::shared_ptr<beast::ssl_stream<beast::tcp_stream>> stream,
                                 Strand strand, std::string remote) {
    boost::system::error_code ec;
    beast::get_lowest_layer(*stream).expires_after(std::chrono::seconds(10));
    co_await stream->async_handshake(ssl::stream_base::server,
                                     net::redirect_error(net::use_awaitable, ec));
    if (ec) {
      close_stream(*stream);
      co_return;
    }
    co_await serve(stream, strand, std::move(remote));
  }

  template <class Stream>
  net::awaitable<void> serve(std::shared_ptr<Stream> stream, Strand strand, std::string remote) {
    beast::flat_buffer buffer;
    while (!stopped) {
      boost::system::error_code ec;
      bhttp::request_parser<bhttp::string_body> parser;
      parser.body_limit(options.max_body_bytes);
      parser.header_limit(1024 * 1024);
      // Idle keep-alive connections are closed after a while.
      beast::get_lowest_layer(*stream).expires_after(std::chrono::seconds(300));
      co_await bhttp::async_read(*stream, buffer, parser,
                                 net::redirect_error(net::use_awaitable, ec));
      if (ec == bhttp::error::body_limit) {
        Response r{413,
                   "application/json",
                   {},
                   status_json(413, "RequestEntityTooLarge",
                               "the request body is larger than " +
                                   std::to_string(options.max_body_bytes) + " bytes")};
        auto res = to_http(r, 11, false);
        co_await bhttp::async_write(*stream, res, net::redirect_error(net::use_awaitable, ec));
        // Closing with unread request bytes makes the kernel reset the connection, which can
        // destroy the 413 before the client reads it: read and drop the rest for a moment first.
        beast::get_lowest_layer(*stream).expires_after(std::chrono::seconds(2));
        std::vector<char> sink(64 * 1024);
        size_t drained = 0;
        while (!ec && drained < 64 * 1024 * 1024) {
          drained += co_await stream->async_read_some(net::buffer(sink),
                                                      net::redirect_error(net::use_awaitable, ec));
        }
        break;
      }
      if (ec) break;
      beast::get_lowest_layer(*stream).expires_never();
      auto& msg = parser.get();
      bool keep_alive = msg.keep_alive();
      unsigned version = msg.version();
      Request req = to_request(msg, remote);
      if (authenticator) {
        req.authenticated =
            authenticator(tls_handle(*stream), req.header("Authorization"), &req.user);
      }

      bool counted = !(options.long_running && options.long_running(req));
      if (counted && in_flight.fetch_add(1) >= options.max_in_flight) {
        in_flight.fetch_sub(1);
        Response busy{
            429,
            "application/json",
            {{"Retry-After", "1"}},
            status_json(429, "TooManyRequests", "Too many requests, please try again later.")};
        auto res = to_http(busy, version, keep_alive && !stopped);
        co_await bhttp::async_write(*stream, res, net::redirect_error(net::use_awaitable, ec));
        if (ec || !keep_alive) break;
        continue;
      }
      auto exchange = std::make_shared<Exchange>(strand);
      net::post(*workers, [this, exchange, &req] {
        handler(req, *exchange);
        exchange->done();
      });
      while (!exchange->is_done()) co_await exchange->waker().wait();
      if (counted) in_flight.fetch_sub(1);

      std::shared_ptr<StreamImpl> streaming = exchange->stream();
      if (!streaming && exchange->upgrade_target()) {
        // Counted requests were released above: a relay may last for hours.
        co_await relay_upgrade(stream, strand, buffer, std::move(req.body),
                               std::move(*exchange->upgrade_target()));
        break;  // the relay ends the connection
      }
      if (!exchange->response()) {
        exchange->response() =
            Response{500, "application/json", {}, status_json(500, "InternalError", "no response")};
      }
      if (!streaming) {
        auto res = to_http(*exchange->response(), version, keep_alive && !stopped);
        co_await bhttp::async_write(*stream, res, net::redirect_error(net::use_awaitable, ec));
        if (ec || !keep_alive) break;
        continue;
      }
      co_await write_stream(stream, strand, *exchange->response(), version, streaming);
      break;  // a streamed response ends the connection
    }
    close_stream(*stream);
  }

  template <class Stream>
  net::awaitable<void> write_stream(std::shared_ptr<Stream> stream, Strand strand, Response& head,
                                    unsigned version, std::shared_ptr<StreamImpl> s) {
    boost::system::error_code ec;
    bhttp::response<bhttp::empty_body> res{static_cast<bhttp::status>(head.status), version};
    res.set(bhttp::field::content_type, head.content_type);
    res.set(bhttp::field::cache_control, "no-cache, private");
    for (const HttpHeader& h : head.headers) res.insert(h.name, h.value);
    res.chunked(true);
    bhttp::response_serializer<bhttp::empty_body> sr{res};
    co_await bhttp::async_write_header(*stream, sr, net::redirect_error(net::use_awaitable, ec));
    if (ec) {
      s->mark_closed();
      co_return;
    }
    // The client sends nothing more; a read completing means it went away.
    net::co_spawn(
        strand,
        [stream, s]() -> net::awaitable<void> {
          char byte;
          boost::system::error_code rec;
          while (!rec) {
            co_await stream->async_read_some(net::buffer(&byte, 1),
                                             net::redirect_error(net::use_awaitable, rec));
          }
          s->mark_closed();
        },
        net::detached);
    std::deque<std::shared_ptr<const std::string>> chunks;
    std::vector<net::const_buffer> buffers;
    while (true) {
      bool done = false;
      s->take(&chunks, &done);
      if (!chunks.empty()) {
        // Everything queued goes out as one HTTP chunk: one write, full TLS records.
        buffers.clear();
        for (const auto& chunk : chunks) buffers.push_back(net::buffer(*chunk));
        co_await net::async_write(*stream, bhttp::make_chunk(buffers),
                                  net::redirect_error(net::use_awaitable, ec));
      }
      chunks.clear();
      if (ec) break;
      if (done) {
        if (!s->closed()) {
          co_await net::async_write(*stream, bhttp::make_chunk_last(),
                                    net::redirect_error(net::use_awaitable, ec));
        }
        break;
      }
      co_await s->waker().wait();
    }
    s->mark_closed();
  }
};

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler, AuthenticateFn authenticator)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
  impl_->authenticator = std::move(authenticator);
}

HttpServer::~HttpServer() {
  stop();
}

Status HttpServer::start() {
  Impl& s = *impl_;
  boost::system::error_code ec;
  if (!s.options.cert_file.empty()) {
    s.tls.emplace(ssl::context::tls_server);
    Status configured = configure_server_tls(
        s.tls->native_handle(),
        ServerTlsFiles{s.options.cert_file, s.options.key_file, s.options.client_ca_file});
    if (!configured.is_ok()) return configured;
  }
  auto address = net::ip::make_address(s.options.bind_address, ec);
  if (ec) {
    return Status(StatusCode::kInvalidArgument,
                  "bad bind address \"" + s.options.bind_address + "\": " + ec.message());
  }
  tcp::endpoint endpoint(address, static_cast<unsigned short>(s.options.port));
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status(StatusCode::kUnavailable, "cannot listen on " + s.options.bind_address + ":" +
                                                std::to_string(s.options.port) + ": " +
                                                ec.message());
  }
  s.workers = std::make_unique<net::thread_pool>(static_cast<size_t>(s.options.worker_threads));
  net::co_spawn(s.ioc, s.accept_loop(), net::detached);
  for (int i = 0; i < std::max(1, s.options.io_threads); ++i) {
    s.io_threads.emplace_back([&s] { s.ioc.run(); });
  }
  return Status::ok();
}

int HttpServer::port() const {
  boost::system::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void HttpServer::stop() {
  Impl& s = *impl_;
  if (s.stopped.exchange(true)) return;
  net::post(s.ioc, [&s] {
    boost::system::error_code ec;
    s.acceptor.close(ec);
  });
  s.ioc.stop();
  for (auto& t : s.io_threads) t.join();
  s.io_threads.clear();
  // The posted close may not have run before the context stopped: without it the kernel would
  // keep accepting connections that nobody answers.
  boost::system::error_code ec;
  s.acceptor.close(ec);
  if (s.workers) s.workers->join();
}

}  // namespace skiff::http
