#pragma once

// The HTTP layer's view of a request and its response, free of any networking library so that
// handlers and their tests do not pull Boost.Beast in. Shared by the API server and the kubelet's
// server.
//
// Thread-safety: Request and Response are plain values. A ResponseStream may be written from any
// thread.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace skiff::http {

// Who sent a request, as the server's authenticator established it.
struct UserInfo {
  std::string name;
  std::string uid;
  std::vector<std::string> groups;
};

struct HttpHeader {
  std::string name;
  std::string value;
};

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // decoded path, without the query
  std::string raw_query;
  std::vector<std::pair<std::string, std::string>> query;  // decoded, in order
  std::vector<HttpHeader> headers;
  std::string body;
  bool authenticated = false;
  UserInfo user;
  std::string remote_address;

  // Case-insensitive; "" when absent.
  std::string_view header(std::string_view name) const;
  // The first value of a query parameter; "" when absent.
  std::string_view param(std::string_view name) const;
  bool has_param(std::string_view name) const;
  std::vector<std::string> params(std::string_view name) const;
  // Booleans as Kubernetes reads them: "true"/"True"/"1" (and "" when present for flags).
  bool flag(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<HttpHeader> headers;
  std::string body;
};

// A response written over time (watch events, followed logs): chunked transfer encoding.
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;
  // Queues a chunk without blocking; false once the client has gone or the stream finished.
  virtual bool write(std::string chunk) = 0;
  // The same for bytes shared with other streams (one encoded watch event sent to many).
  virtual bool write_shared(std::shared_ptr<const std::string> chunk) = 0;
  // Ends the response after the queued chunks.
  virtual void finish() = 0;
  // `cb` runs once, on a server thread, when the client disconnects or the stream finishes.
  // It must not block.
  virtual void on_close(std::function<void()> cb) = 0;
  virtual bool closed() const = 0;
  // Bytes queued and not yet written to the connection. A producer that can wait (a log
  // reader) holds back while this is large, instead of letting a slow client be cut off.
  virtual size_t queued_bytes() const { return 0; }
  // Runs `fn` on the stream's own serialized executor (never concurrently with another fn of
  // this stream). Producers use it to turn notifications into writes without blocking.
  virtual void post(std::function<void()> fn) = 0;
};

// Where an upgrade request (exec, attach, port-forward) is relayed to: the server sends
// `method target` with `headers` (and a Host header of its own) to host:port and passes the
// answer back to the client. A 101 Switching Protocols answer is passed on with its headers and
// then bytes flow both ways, as each side sends them, until one side closes; any other answer
// is passed on (status, headers, body) and the connection ends.
struct UpgradeTarget {
  std::string host;  // an IP literal or a DNS name
  int port = 0;
  bool tls = false;
  // With TLS: the CA the upstream's certificate must chain to ("" skips verification) and the
  // client certificate presented ("" for none), PEM files.
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  std::string method;  // as the client sent it
  std::string target;  // path and query, encoded
  // What the upstream needs of the client's request (Connection, Upgrade, the WebSocket and
  // stream-protocol headers); never the client's credentials.
  std::vector<HttpHeader> headers;
};

// How a handler answers: exactly one of respond(), stream() or upgrade().
class Responder {
 public:
  virtual ~Responder() = default;
  virtual void respond(Response response) = 0;
  // Starts a chunked response with this status, content type and headers.
  virtual std::shared_ptr<ResponseStream> stream(int status, std::string content_type,
                                                 std::vector<HttpHeader> headers = {}) = 0;
  // Relays the request to an upstream (see UpgradeTarget); the connection to the client ends
  // with it. An upstream that cannot be reached is answered 502 with a Status naming it.
  // Responders without a connection (tests) answer 500.
  virtual void upgrade(UpgradeTarget target);
};

// The headers of `request` that an upgrade relay passes on: Connection, Upgrade,
// Sec-WebSocket-* and X-Stream-Protocol-Version (each occurrence).
std::vector<HttpHeader> upgrade_headers(const Request& request);

// Handles one request. Runs on a worker thread and may block (store calls do).
using HttpHandler = std::function<void(Request&, Responder&)>;

// Percent-decoding for paths and query components ('+' is a space in queries only).
std::string percent_decode(std::string_view in, bool plus_is_space);
std::vector<std::pair<std::string, std::string>> parse_query(std::string_view raw);

}  // namespace skiff::http
