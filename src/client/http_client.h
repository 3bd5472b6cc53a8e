#pragma once

// HttpApiClient: the ApiClient that talks to a real API server over HTTPS (HTTP/1.1, TLS through
// OpenSSL), authenticated by the kubeconfig's client certificate or bearer token.
//
// Requests borrow a keep-alive connection from a pool (a new one is opened when none is idle) and
// give it back afterwards, so any number of threads can issue requests at once. A request that
// fails on a reused connection the server has meanwhile closed is retried once on a new
// connection when that cannot apply it twice: GET, PUT and DELETE always, POST and PATCH only
// when nothing of the request had been written. Watches get a connection of their own and read
// the server's newline-delimited JSON stream incrementally.
//
// Thread-safety: HttpApiClient is safe to use from any number of threads at once. A WatchStream
// it returns is used by one thread at a time, except cancel(), which any thread may call; a
// WatchStream may outlive its client.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "base/kubeconfig.h"
#include "base/status.h"
#include "client/api_client.h"

namespace skiff::client {

struct HttpClientOptions {
  // Sent as User-Agent.
  std::string user_agent = "skiff";
  // The fieldManager of writes whose WriteOptions leave it empty ("" = send none; the server then
  // derives one from the User-Agent, except for apply patches, which require one).
  std::string field_manager = "skiff";
  // The longest a request (connect, TLS handshake, write and read) may take; then it fails with
  // kUnavailable ("timed out"), like other transport failures. Watches are exempt once their
  // response headers have arrived.
  std::chrono::milliseconds request_timeout{60000};
  // The longest connecting (TCP connect and TLS handshake) may take, within request_timeout.
  std::chrono::milliseconds connect_timeout{10000};
  // Connections kept open between requests (more may be open while requests are in flight).
  int max_idle_connections = 16;
  // Idle connections older than this are closed instead of reused (the server closes idle
  // keep-alive connections after a while too).
  std::chrono::milliseconds idle_connection_timeout{90000};
  // Client-side rate limit of requests (watches included) as a token bucket: `qps` per second
  // on average, bursts of up to `burst`. qps 0 = no limit.
  double qps = 0;
  int burst = 10;
};

class HttpApiClient : public ApiClient {
 public:
  // Validates the kubeconfig (server URL, PEM material) and prepares the TLS context; it does
  // not connect. kInvalidArgument for an unusable kubeconfig.
  static Result<std::unique_ptr<HttpApiClient>> create(const Kubeconfig& kubeconfig,
                                                       HttpClientOptions options = {});
  // load_kubeconfig(path, context) followed by create().
  static Result<std::unique_ptr<HttpApiClient>> from_kubeconfig_file(
      const std::string& path, HttpClientOptions options = {}, const std::string& context = "");
  // A server URL with a bearer token (how a node joins): the CA comes from `ca_file`, or from
  // `default_ca_file` when ca_file is empty and that file exists. kNotFound when ca_file is
  // given but cannot be read.
  // How a node component (the kubelet, the proxy) reaches the API server: its kubeconfig, or
  // a server URL with a bearer token whose CA is `ca_file` or <data_dir>/tls/ca.crt.
  // `component` ("kubelet") names it: user agent and field manager skiff-<component>.
  struct NodeConnection {
    std::string kubeconfig;
    std::string server;
    std::string token;
    std::string ca_file;
    std::string data_dir;
  };
  static Result<std::unique_ptr<HttpApiClient>> connect(const NodeConnection& connection,
                                                        const std::string& component);
  static Result<std::unique_ptr<HttpApiClient>> from_server_token(
      const std::string& server, const std::string& token, const std::string& ca_file,
      const std::string& default_ca_file, HttpClientOptions options = {});

  ~HttpApiClient() override;
  HttpApiClient(const HttpApiClient&) = delete;
  HttpApiClient& operator=(const HttpApiClient&) = delete;

  Result<Json> get(const Resource& r, std::string_view ns, std::string_view name,
                   std::string_view subresource = {}) override;
  Result<Json> list(const Resource& r, std::string_view ns,
                    const ListOptions& options = {}) override;
  Result<Json> create(const Resource& r, std::string_view ns, const Json& object,
                      const WriteOptions& options = {}, std::string_view name = {},
                      std::string_view subresource = {}) override;
  Result<Json> update(const Resource& r, std::string_view ns, const Json& object,
                      const WriteOptions& options = {}, std::string_view subresource = {}) override;
  Result<Json> patch(const Resource& r, std::string_view ns, std::string_view name, PatchType type,
                     std::string_view body, const WriteOptions& options = {},
                     std::string_view subresource = {}) override;
  Result<Json> remove(const Resource& r, std::string_view ns, std::string_view name,
                      const DeleteOptions& options = {}) override;
  // The watch request's own errors (a non-200 answer, a transport failure) come back here; once
  // the stream is open, errors the server reports in it arrive as kError events. Events are
  // returned as soon as their line is complete.
  Result<std::unique_ptr<WatchStream>> watch(const Resource& r, std::string_view ns,
                                             const ListOptions& options = {}) override;

  // A request outside the typed resources (e.g. "/version", "/readyz"): `path_and_query` is
  // appended to the server URL's path as given (already encoded). Returns the raw body of a 2xx
  // answer; other answers map to a Status as the typed calls do.
  Result<std::string> raw(std::string_view method, std::string_view path_and_query,
                          std::string_view body = {},
                          std::string_view content_type = "application/json");

  // Connections currently idle in the pool (for tests and metrics).
  size_t idle_connections() const;
  // Connections opened so far, pool and watches together (for tests and metrics).
  uint64_t connections_opened() const;

  struct Impl;

 private:
  explicit HttpApiClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The Status for an API error answer: `http_code` and, when `body` is a Status object, its message
// and reason (409 with reason AlreadyExists is kAlreadyExists, any other 409 kAborted, 410
// kCompacted, ...; see ApiClient). Useful for kError watch events too: pass the event object's
// "code" and the object.
Status status_from_api_error(int http_code, const Json& body);

}  // namespace skiff::client
