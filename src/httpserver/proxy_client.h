#pragma once

// ProxyClient: what a server uses to fetch from an upstream server and pass the answer on (the
// API server reading container logs from kubelets). One GET per connection over HTTP/1.1,
// TLS with an optional client certificate; the response head is returned once it arrives and
// the body is read piece by piece as the upstream sends it (chunked or not), so a streamed
// answer can be relayed as it is produced.
//
// Thread-safety: ProxyClient is immutable after create() and may start requests from any number
// of threads at once. A ProxyResponse is read by one thread at a time; cancel() may be called
// from any thread, also while another thread is blocked reading. A ProxyResponse must not
// outlive the ProxyClient that made it.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "httpserver/http.h"

namespace skiff::http {

struct ProxyClientOptions {
  bool use_tls = true;
  // PEM file of the CA the upstream's serving certificate must chain to, checked together with
  // the host (IP or DNS SAN). "" skips verification (upstream's kube-apiserver default without
  // --kubelet-certificate-authority).
  std::string ca_file;
  // The client certificate and key presented to the upstream (PEM files); "" for none.
  std::string cert_file;
  std::string key_file;
  // Connecting and the TLS handshake.
  std::chrono::milliseconds connect_timeout{10000};
  // From the request being sent until the response head arrived.
  std::chrono::milliseconds response_timeout{60000};
};

struct ProxyHead {
  int status = 0;
  std::string content_type;
  std::vector<HttpHeader> headers;
};

// One response being read.
class ProxyResponse {
 public:
  virtual ~ProxyResponse() = default;
  virtual const ProxyHead& head() const = 0;
  // Blocks until more of the body is there; "" once the body ended. kCancelled after cancel(),
  // kUnavailable when the connection failed.
  virtual Result<std::string> read() = 0;
  // Reads the rest of the body, keeping at most `max_bytes` of it.
  Result<std::string> read_all(size_t max_bytes);
  // Makes a blocked or later read() return kCancelled and drops the connection.
  virtual void cancel() = 0;
};

class ProxyClient {
 public:
  // Loads the TLS material; kInvalidArgument when a file cannot be used.
  static Result<std::unique_ptr<ProxyClient>> create(ProxyClientOptions options);
  ~ProxyClient();
  ProxyClient(const ProxyClient&) = delete;
  ProxyClient& operator=(const ProxyClient&) = delete;

  // GET `target` (path and query, already encoded) from host:port (host: an IP literal or a DNS
  // name). Returns once the response head arrived; kUnavailable when connecting, the handshake
  // or the exchange failed (the message names the URL, as Go's client errors do), kDeadlineExceeded
  // on a timeout.
  Result<std::unique_ptr<ProxyResponse>> get(const std::string& host, int port,
                                             const std::string& target,
                                             const std::vector<HttpHeader>& headers = {}) const;

 private:
  struct Impl;
  explicit ProxyClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace skiff::http
