#include "httpserver/proxy_client.h"

#include <openssl/ssl.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <limits>
#include <mutex>
#include <vector>

namespace skiff::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using ErrorCode = boost::system::error_code;

constexpr size_t kReadPiece = 64 * 1024;

bool is_ip_literal(const std::string& host) {
  ErrorCode ec;
  net::ip::make_address(host, ec);
  return !ec;
}

std::string host_port(const std::string& host, int port) {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

class ResponseImpl final : public ProxyResponse {
 public:
  ResponseImpl(ssl::context* tls, const ProxyClientOptions& options)
      : options_(options), piece_(kReadPiece) {
    if (tls) {
      tls_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc_, *tls);
    } else {
      plain_ = std::make_unique<beast::tcp_stream>(ioc_);
    }
    parser_.body_limit(std::numeric_limits<std::uint64_t>::max());
  }

  ~ResponseImpl() override { close(); }

  Status start(const std::string& host, int port, const std::string& target,
               const std::vector<HttpHeader>& headers) {
    url_ = std::string(tls_ ? "https://" : "http://") + host_port(host, port) + target;

    // Where to connect.
    std::vector<tcp::endpoint> endpoints;
    ErrorCode ec;
    net::ip::address address = net::ip::make_address(host, ec);
    if (!ec) {
      endpoints.emplace_back(address, static_cast<unsigned short>(port));
    } else {
      tcp::resolver resolver(ioc_);
      auto results = resolver.resolve(host, std::to_string(port), ec);
      if (ec) return failure("dial tcp " + host_port(host, port) + ": lookup " + host, ec);
      for (const auto& r : results) endpoints.push_back(r.endpoint());
    }

    lowest().expires_after(options_.connect_timeout);
    ec = run([&](auto handler) { lowest().async_connect(endpoints, handler); });
    if (ec) return failure("dial tcp " + host_port(host, port), ec);
    lowest().socket().set_option(tcp::no_delay(true), ec);

    if (tls_) {
      SSL* ssl_handle = tls_->native_handle();
      if (!is_ip_literal(host)) SSL_set_tlsext_host_name(ssl_handle, host.c_str());
      if (!options_.ca_file.empty()) {
        tls_->set_verify_callback(ssl::host_name_verification(host), ec);
        if (ec) return failure("tls", ec);
      }
      ec = run([&](auto handler) { tls_->async_handshake(ssl::stream_base::client, handler); });
      if (ec) return failure("tls", ec);
    }

    bhttp::request<bhttp::empty_body> req{bhttp::verb::get, target, 11};
    req.set(bhttp::field::host, host_port(host, port));
    req.set(bhttp::field::user_agent, "skiff");
    for (const HttpHeader& h : headers) req.insert(h.name, h.value);
    lowest().expires_after(options_.response_timeout);
    ec = with_stream(
        [&](auto& s) { return run([&](auto handler) { bhttp::async_write(s, req, handler); }); });
    if (ec) return failure("", ec);
    ec = with_stream([&](auto& s) {
      return run([&](auto handler) { bhttp::async_read_header(s, buffer_, parser_, handler); });
    });
    if (ec) return failure("", ec);
    lowest().expires_never();

    const auto& msg = parser_.get();
    head_.status = static_cast<int>(msg.result_int());
    head_.content_type = std::string(msg[bhttp::field::content_type]);
    for (const auto& field : msg) {
      head_.headers.push_back({std::string(field.name_string()), std::string(field.value())});
    }
    return Status::ok();
  }

  const ProxyHead& head() const override { return head_; }

  Result<std::string> read() override {
    {
      std::lock_guard lock(mu_);
      if (cancelled_) return cancelled();
      reading_ = true;
    }
    Result<std::string> out = read_piece();
    std::lock_guard lock(mu_);
    reading_ = false;
    if (cancelled_) return cancelled();
    return out;
  }

  void cancel() override {
    std::lock_guard lock(mu_);
    if (cancelled_) return;
    cancelled_ = true;
    cancel_seen_ = true;
    if (reading_) {
      // The reading thread owns the socket while it waits: close it from inside its
      // io_context, which wakes the read.
      net::post(ioc_, [this] { close(); });
    } else {
      close();
    }
  }

 private:
  Result<std::string> read_piece() {
    std::string out;
    while (out.empty() && !parser_.is_done()) {
      auto& body = parser_.get().body();
      body.data = piece_.data();
      body.size = piece_.size();
      ErrorCode ec = with_stream([&](auto& s) {
        return run([&](auto handler) { bhttp::async_read_some(s, buffer_, parser_, handler); });
      });
      out.append(piece_.data(), piece_.size() - body.size);
      if (ec == bhttp::error::need_buffer) ec = {};
      if (cancel_seen_) return Status(StatusCode::kCancelled, "cancelled");
      if (ec) {
        if (!out.empty()) {
          // Hand over what arrived; the error comes with the next read.
          pending_error_ = ec;
          return out;
        }
        close();
        return failure("", ec);
      }
    }
    if (out.empty() && pending_error_) {
      close();
      return failure("", pending_error_);
    }
    if (parser_.is_done() && out.empty()) close();
    return out;
  }

  beast::tcp_stream& lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : *plain_; }

  template <class F>
  ErrorCode with_stream(F&& f) {
    return tls_ ? f(*tls_) : f(*plain_);
  }

  // Starts one asynchronous operation and runs this response's io_context until it completed.
  template <class Start>
  ErrorCode run(Start&& start) {
    ErrorCode result;
    bool finished = false;
    start([&](ErrorCode ec, auto&&...) {
      result = ec;
      finished = true;
    });
    ioc_.restart();
    while (!finished && ioc_.run_one() > 0) {
    }
    if (!finished) result = net::error::operation_aborted;
    return result;
  }

  // With mu_ held.
  Status cancelled() {
    close();
    return Status(StatusCode::kCancelled, "cancelled");
  }

  Status failure(const std::string& what, ErrorCode ec) {
    std::string message = "Get \"" + url_ + "\": ";
    if (!what.empty()) message += what + ": ";
    if (ec == beast::error::timeout) {
      return Status(StatusCode::kDeadlineExceeded, message + "i/o timeout");
    }
    message += ec.message();
    return Status(StatusCode::kUnavailable, message);
  }

  void close() {
    ErrorCode ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().socket().close(ec);
  }

  const ProxyClientOptions options_;
  net::io_context ioc_{1};
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_;
  std::unique_ptr<beast::tcp_stream> plain_;
  beast::flat_buffer buffer_;
  bhttp::response_parser<bhttp::buffer_body> parser_;
  std::vector<char> piece_;
  ProxyHead head_;
  std::string url_;
  ErrorCode pending_error_;
  // Whether a read is under way (then only the reading thread touches the socket) and whether
  // cancel() was called.
  std::mutex mu_;
  bool reading_ = false;                  // guarded by mu_
  bool cancelled_ = false;                // guarded by mu_
  std::atomic<bool> cancel_seen_{false};  // cancelled_, for the reading thread
};

}  // namespace

Result<std::string> ProxyResponse::read_all(size_t max_bytes) {
  std::string out;
  while (true) {
    Result<std::string> piece = read();
    if (!piece.is_ok()) return piece.status();
    if (piece->empty()) return out;
    if (out.size() < max_bytes) out.append(piece->substr(0, max_bytes - out.size()));
  }
}

struct ProxyClient::Impl {
  ProxyClientOptions options;
  std::unique_ptr<ssl::context> tls;
};

ProxyClient::ProxyClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProxyClient::~ProxyClient() = default;

Result<std::unique_ptr<ProxyClient>> ProxyClient::create(ProxyClientOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  const ProxyClientOptions& o = impl->options;
  if (o.use_tls) {
    impl->tls = std::make_unique<ssl::context>(ssl::context::tls_client);
    ssl::context& ctx = *impl->tls;
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    ErrorCode ec;
    if (!o.ca_file.empty()) {
      ctx.load_verify_file(o.ca_file, ec);
      if (ec) {
        return Status(StatusCode::kInvalidArgument,
                      "loading CA " + o.ca_file + ": " + ec.message());
      }
      ctx.set_verify_mode(ssl::verify_peer, ec);
    } else {
      ctx.set_verify_mode(ssl::verify_none, ec);
    }
    if (!o.cert_file.empty()) {
      ctx.use_certificate_chain_file(o.cert_file, ec);
      if (ec) {
        return Status(StatusCode::kInvalidArgument,
                      "loading client certificate " + o.cert_file + ": " + ec.message());
      }
      ctx.use_private_key_file(o.key_file, ssl::context::pem, ec);
      if (ec) {
        return Status(StatusCode::kInvalidArgument,
                      "loading client key " + o.key_file + ": " + ec.message());
      }
    }
  }
  return std::unique_ptr<ProxyClient>(new ProxyClient(std::move(impl)));
}

Result<std::unique_ptr<ProxyResponse>> ProxyClient::get(
    const std::string& host, int port, const std::string& target,
    const std::vector<HttpHeader>& headers) const {
  auto response = std::make_unique<ResponseImpl>(impl_->tls.get(), impl_->options);
  Status started = response->start(host, port, target, headers);
  if (!started.is_ok()) return started;
  return std::unique_ptr<ProxyResponse>(std::move(response));
}

}  // namespace skiff::http
