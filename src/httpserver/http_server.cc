#include "httpserver/http_server.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

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
#include <deque>
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

 private:
  Strand strand_;
  Waker waker_;
  std::mutex mu_;
  bool done_ = false;                   // guarded by mu_
  std::optional<Response> response_;    // guarded by mu_ until done_
  std::shared_ptr<StreamImpl> stream_;  // guarded by mu_ until done_
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
  if (s.workers) s.workers->join();
}

}  // namespace skiff::http
