#pragma once

// An HTTPS server (the API server's front, and the kubelet's): accepts connections, completes
// TLS, reads requests (bodies over the limit get 413), authenticates them, runs the handler on a
// worker pool and writes the response, plain or chunked. Boost.Beast stays inside
// http_server.cc.
//
// Thread-safety: start() and stop() from one thread; the handler runs on worker threads.

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "httpserver/http.h"

struct ssl_st;

namespace skiff::http {

struct HttpServerOptions {
  std::string bind_address = "0.0.0.0";
  int port = 6443;  // 0 picks a free port
  // PEM files. Without a certificate the server speaks plain HTTP (tests of the HTTP layer only).
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;  // client certificates signed by it are verified
  size_t max_body_bytes = 3 * 1024 * 1024;
  int io_threads = 2;
  int worker_threads = 32;
  // Requests being served at once, long-running ones (watches, streams) aside; more are answered
  // 429 with Retry-After, as upstream's --max-requests-inflight.
  int max_in_flight = 400;
  std::function<bool(const Request&)> long_running;
};

// Fills *user from the TLS connection (null over plain HTTP) and the Authorization header value;
// returns false for anonymous or rejected credentials.
using AuthenticateFn =
    std::function<bool(const ssl_st* tls, std::string_view authorization, UserInfo* user)>;

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler, AuthenticateFn authenticator);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds, listens and starts serving in the background.
  Status start();
  // The bound port (useful with port 0).
  int port() const;
  // Stops accepting, closes connections, ends streams and joins every thread.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace skiff::http
