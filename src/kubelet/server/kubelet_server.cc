#include "kubelet/server/kubelet_server.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <strings.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/log.h"
#include "base/pki.h"
#include "httpserver/http_server.h"
#include "kubelet/server/serving_cert.h"
#include "kubelet/streaming/translator.h"

namespace skiff::kubelet::server {
namespace {

using http::Request;
using http::Responder;
using http::Response;

// A log stream's writer waits while this much is queued for a slow client.
constexpr size_t kMaxQueuedLogBytes = 4 * 1024 * 1024;

enum class Port { kSecure, kReadOnly, kHealthz };

Response text(int status, std::string body) {
  Response r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  return r;
}

// Go's strconv.ParseBool, as upstream decodes query booleans.
std::optional<bool> parse_bool(std::string_view v) {
  if (v == "1" || v == "t" || v == "T" || v == "true" || v == "TRUE" || v == "True") return true;
  if (v == "0" || v == "f" || v == "F" || v == "false" || v == "FALSE" || v == "False") {
    return false;
  }
  return std::nullopt;
}

std::optional<int64_t> parse_int(std::string_view v) {
  int64_t out = 0;
  if (!v.empty() && v.front() == '+') v.remove_prefix(1);
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size() || v.empty()) return std::nullopt;
  return out;
}

// The last value of a query parameter (Go's url.Values decoding into a scalar takes the first;
// kubectl sends each once), nullopt when absent.
std::optional<std::string> param(const Request& req, std::string_view name) {
  if (!req.has_param(name)) return std::nullopt;
  return std::string(req.param(name));
}

bool authenticate(const KubeletServerOptions& options, const ssl_st* tls,
                  std::string_view authorization, http::UserInfo* user) {
  if (tls != nullptr) {
    X509* cert = SSL_get0_peer_certificate(tls);
    if (cert != nullptr) {
      if (SSL_get_verify_result(tls) != X509_V_OK) return false;
      Result<pki::CertInfo> info = pki::inspect_certificate(cert);
      if (!info.is_ok() || info->common_name.empty() ||
          info->not_after < std::chrono::system_clock::now()) {
        return false;
      }
      user->name = info->common_name;
      user->groups = info->organizations;
      user->groups.push_back("system:authenticated");
      return true;
    }
  }
  if (!authorization.empty()) {
    constexpr std::string_view kBearer = "bearer ";
    if (authorization.size() > kBearer.size() &&
        strncasecmp(authorization.data(), kBearer.data(), kBearer.size()) == 0) {
      if (!options.token_authenticator) return false;
      std::optional<http::UserInfo> found =
          options.token_authenticator(authorization.substr(kBearer.size()));
      if (!found) return false;
      *user = std::move(*found);
      user->groups.push_back("system:authenticated");
      return true;
    }
  }
  if (!options.anonymous_auth) return false;
  user->name = "system:anonymous";
  user->groups = {"system:unauthenticated"};
  return true;
}

// Splits "/containerLogs/ns/pod/container" into its three names.
bool split_log_path(std::string_view path, std::string* ns, std::string* pod,
                    std::string* container) {
  constexpr std::string_view kPrefix = "/containerLogs/";
  if (!path.starts_with(kPrefix)) return false;
  path.remove_prefix(kPrefix.size());
  std::string* out[3] = {ns, pod, container};
  for (int i = 0; i < 3; ++i) {
    size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    if (part.empty()) return false;
    *out[i] = std::string(part);
    if (i < 2) {
      if (slash == std::string_view::npos) return false;
      path.remove_prefix(slash + 1);
    } else if (slash != std::string_view::npos && slash + 1 != path.size()) {
      return false;
    }
  }
  return true;
}

// A path's segments ("/a/b/c" → a, b, c); empty when a segment is empty ("/a//b", "/a/").
std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  while (!path.empty()) {
    path.remove_prefix(1);  // the leading '/'
    size_t slash = path.find('/');
    parts.emplace_back(path.substr(0, slash));
    if (parts.back().empty()) return {};
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
  }
  return parts;
}

// "/exec/ns/pod/container", "/attach/ns/pod/container" or "/portforward/ns/pod" with the
// request's options; nullopt for any other path.
std::optional<StreamRequest> parse_stream_request(const Request& req) {
  std::vector<std::string> parts = split_path(req.path);
  StreamRequest r;
  if (parts.size() == 4 && (parts[0] == "exec" || parts[0] == "attach")) {
    r.container = std::string(parts[3]);
  } else if (parts.size() != 3 || parts[0] != "portforward") {
    return std::nullopt;
  }
  r.kind = std::string(parts[0]);
  r.ns = std::string(parts[1]);
  r.pod = std::string(parts[2]);
  // The API server sends input/output/error (upstream's names); PodExecOptions' own names work
  // too.
  r.in = req.flag("input") || req.flag("stdin");
  r.out = req.flag("output") || req.flag("stdout");
  r.err = req.flag("error") || req.flag("stderr");
  r.tty = req.flag("tty");
  r.command = req.params("command");
  return r;
}

// "/run/ns/pod/container" or "/run/ns/pod/uid/container" with the cmd parameter; nullopt for
// any other path.
std::optional<RunRequest> parse_run_request(const Request& req) {
  std::vector<std::string> parts = split_path(req.path);
  if ((parts.size() != 4 && parts.size() != 5) || parts[0] != "run") return std::nullopt;
  RunRequest r;
  r.ns = parts[1];
  r.pod = parts[2];
  if (parts.size() == 5) r.uid = parts[3];
  r.container = parts.back();
  std::string_view cmd = req.param("cmd");
  for (;;) {
    size_t space = cmd.find(' ');
    r.command.emplace_back(cmd.substr(0, space));
    if (space == std::string_view::npos) break;
    cmd.remove_prefix(space + 1);
  }
  return r;
}

// http://HOST:PORT/PATH → where to relay; nullopt for anything else (https, no port).
std::optional<http::UpgradeTarget> streaming_target(std::string_view url) {
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
  int port = 0;
  std::string_view digits = authority.substr(colon + 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (ec != std::errc() || end != digits.data() + digits.size() || port <= 0 || port > 65535) {
    return std::nullopt;
  }
  http::UpgradeTarget target;
  target.host = std::string(host);
  target.port = port;
  target.target = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  return target;
}

// Every value of a header, joined with commas (repeated lines are one list).
std::string joined_header(const Request& req, std::string_view name) {
  std::string out;
  for (const http::HttpHeader& h : req.headers) {
    if (h.name.size() != name.size() || strncasecmp(h.name.data(), name.data(), name.size())) {
      continue;
    }
    if (!out.empty()) out += ", ";
    out += h.value;
  }
  return out;
}

// A v1 Status, as the API server words errors.
Response status_response(int code, const std::string& reason, const std::string& message) {
  Response r;
  r.status = code;
  r.content_type = "application/json";
  nlohmann::json body = {{"kind", "Status"},
                         {"apiVersion", "v1"},
                         {"metadata", nlohmann::json::object()},
                         {"status", code < 300 ? "Success" : "Failure"},
                         {"message", message},
                         {"code", code}};
  if (!reason.empty()) body["reason"] = reason;
  r.body = body.dump();
  return r;
}

// Whether a POST /pods body of this Content-Type can be a manifest (JSON or YAML).
bool manifest_content_type(std::string_view type) {
  type = type.substr(0, type.find(';'));
  while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
  return type.empty() || type == "application/json" || type == "application/yaml" ||
         type == "application/x-yaml" || type == "text/yaml" || type == "text/x-yaml" ||
         type == "text/plain";
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

std::string pod_not_found_message(const std::string& pod) {
  return "pod \"" + pod + "\" does not exist";
}

std::string container_not_found_message(const std::string& container, const std::string& pod) {
  return "container \"" + container + "\" not found in pod \"" + pod + "\"";
}

Result<ContainerLogQuery> parse_container_log_query(const Request& req, int64_t now_ns) {
  ContainerLogQuery q;
  for (const char* name : {"follow", "previous", "timestamps"}) {
    std::optional<std::string> v = param(req, name);
    if (!v) continue;
    std::optional<bool> b = v->empty() ? std::optional<bool>(true) : parse_bool(*v);
    if (!b) {
      return Status(StatusCode::kInvalidArgument,
                    std::string("invalid value for ") + name + ": \"" + *v + "\" is not a boolean");
    }
    if (std::string_view(name) == "follow") q.options.follow = *b;
    if (std::string_view(name) == "previous") q.previous = *b;
    if (std::string_view(name) == "timestamps") q.options.timestamps = *b;
  }
  // "tail" is the older name of tailLines; "all" means no limit.
  std::optional<std::string> tail = param(req, "tailLines");
  if (!tail) {
    tail = param(req, "tail");
    if (tail && *tail == "all") tail.reset();
  }
  std::optional<int64_t> since_seconds;
  struct IntParam {
    const char* name;
    std::optional<std::string> value;
    std::optional<int64_t>* out;
  } ints[] = {{"tailLines", tail, &q.options.tail_lines},
              {"limitBytes", param(req, "limitBytes"), &q.options.limit_bytes},
              {"sinceSeconds", param(req, "sinceSeconds"), &since_seconds}};
  for (IntParam& p : ints) {
    if (!p.value || p.value->empty()) continue;
    std::optional<int64_t> n = parse_int(*p.value);
    if (!n) {
      return Status(StatusCode::kInvalidArgument, std::string("invalid value for ") + p.name +
                                                      ": \"" + *p.value + "\" is not an integer");
    }
    *p.out = n;
  }
  std::optional<int64_t> since_time;
  if (std::optional<std::string> v = param(req, "sinceTime"); v && !v->empty()) {
    since_time = logs::parse_rfc3339_nanos(*v);
    if (!since_time) {
      return Status(StatusCode::kInvalidArgument,
                    "invalid value for sinceTime: \"" + *v + "\" is not an RFC 3339 time");
    }
  }
  if (std::optional<std::string> v = param(req, "stream"); v && !v->empty()) {
    if (*v == "All") {
      q.options.stream = logs::StreamSelection::kAll;
    } else if (*v == "Stdout") {
      q.options.stream = logs::StreamSelection::kStdout;
    } else if (*v == "Stderr") {
      q.options.stream = logs::StreamSelection::kStderr;
    } else {
      return Status(StatusCode::kOutOfRange, "stream: Unsupported value: \"" + *v +
                                                 "\": supported values: \"All\", \"Stderr\", "
                                                 "\"Stdout\"");
    }
  }
  if (q.options.tail_lines && *q.options.tail_lines < 0) {
    return Status(StatusCode::kOutOfRange,
                  "tailLines: Invalid value: " + std::to_string(*q.options.tail_lines) +
                      ": must be greater than or equal to 0");
  }
  if (q.options.limit_bytes && *q.options.limit_bytes < 1) {
    return Status(StatusCode::kOutOfRange,
                  "limitBytes: Invalid value: " + std::to_string(*q.options.limit_bytes) +
                      ": must be greater than 0");
  }
  if (since_seconds && since_time) {
    return Status(StatusCode::kOutOfRange,
                  "at most one of `sinceTime` or `sinceSeconds` may be specified");
  }
  if (since_seconds) {
    if (*since_seconds < 1) {
      return Status(StatusCode::kOutOfRange,
                    "sinceSeconds: Invalid value: " + std::to_string(*since_seconds) +
                        ": must be greater than 0");
    }
    q.options.since_ns = now_ns - *since_seconds * 1'000'000'000;
  }
  if (since_time) q.options.since_ns = since_time;
  return q;
}

struct KubeletServer::Impl {
  KubeletServerOptions options;
  PodLookup lookup;
  std::string cert_file;
  std::unique_ptr<http::HttpServer> secure;
  std::unique_ptr<http::HttpServer> read_only;
  std::unique_ptr<http::HttpServer> healthz;
  std::unique_ptr<streaming::Translator> translator;  // null when off

  struct StreamThread {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  std::atomic<bool> stopping{false};
  mutable std::mutex streams_mu;
  std::list<StreamThread> streams;  // guarded by streams_mu

  void handle(Port port, Request& req, Responder& responder) {
    const std::string& path = req.path;
    if (port == Port::kSecure && !req.authenticated) {
      responder.respond(text(401, "Unauthorized"));
      return;
    }
    if (path == "/healthz") {
      Status healthy = options.health_check ? options.health_check() : Status::ok();
      if (!healthy.is_ok()) {
        responder.respond(text(500, "[-]" + healthy.message() + "\nhealthz check failed\n"));
        return;
      }
      responder.respond(text(200, "ok"));
      return;
    }
    if (port == Port::kHealthz) {
      responder.respond(text(404, "404 page not found\n"));
      return;
    }
    if (path == "/pods" || path == "/pods/") {
      if (req.method == "POST" && port == Port::kSecure && lookup.create_pod) {
        serve_create_pod(req, responder);
        return;
      }
      if (req.method != "GET") {
        responder.respond(text(405, "405: Method Not Allowed"));
        return;
      }
      Response r;
      r.body = lookup.pod_list();
      responder.respond(std::move(r));
      return;
    }
    if (path == "/stats/summary" || path == "/stats/summary/") {
      serve_summary(req, responder);
      return;
    }
    if ((path == "/metrics/resource" || path == "/metrics/resource/") && lookup.resource_metrics) {
      if (req.method != "GET") {
        responder.respond(text(405, "405: Method Not Allowed"));
        return;
      }
      Response r = text(200, lookup.resource_metrics());
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      responder.respond(std::move(r));
      return;
    }
    if (port == Port::kSecure && path.starts_with("/pods/") &&
        path.find('/', 6) == std::string::npos) {
      if (req.method != "DELETE" || !lookup.delete_pod) {
        responder.respond(text(405, "405: Method Not Allowed"));
        return;
      }
      std::string name = path.substr(6);
      Status removed = lookup.delete_pod(name);
      if (removed.code() == StatusCode::kNotFound) {
        responder.respond(status_response(404, "NotFound", removed.message()));
      } else if (!removed.is_ok()) {
        responder.respond(status_response(500, "InternalError", removed.message()));
      } else {
        responder.respond(status_response(200, "", "pod \"" + name + "\" deleted"));
      }
      return;
    }
    std::string ns, pod, container;
    if (port == Port::kSecure && split_log_path(path, &ns, &pod, &container)) {
      serve_logs(req, responder, ns, pod, container);
      return;
    }
    if (port == Port::kSecure && lookup.run) {
      if (std::optional<RunRequest> run = parse_run_request(req)) {
        serve_run(req, responder, *run);
        return;
      }
    }
    if (port == Port::kSecure && lookup.stream_url) {
      if (std::optional<StreamRequest> stream = parse_stream_request(req)) {
        serve_stream(req, responder, *stream);
        return;
      }
    }
    responder.respond(text(404, "404 page not found\n"));
  }

  void serve_run(Request& req, Responder& responder, const RunRequest& run) {
    if (req.method != "POST") {
      responder.respond(text(405, "405: Method Not Allowed"));
      return;
    }
    Result<std::string> output = lookup.run(run);
    if (!output.is_ok()) {
      int code = output.status().code() == StatusCode::kNotFound ? 404 : 500;
      responder.respond(text(code, output.status().message()));
      return;
    }
    Response r = text(200, std::move(output).value());
    r.content_type = "application/json";  // as upstream labels it, whatever the command wrote
    responder.respond(std::move(r));
  }

  void serve_stream(Request& req, Responder& responder, const StreamRequest& stream) {
    if (req.method != "GET" && req.method != "POST") {
      responder.respond(text(405, "405: Method Not Allowed"));
      return;
    }
    StreamRequest request = stream;
    for (const std::string& p : req.params("port")) {
      int32_t port = 0;
      auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
      if (ec != std::errc() || end != p.data() + p.size() || port < 1 || port > 65535) {
        responder.respond(text(400, "invalid port \"" + p + "\""));
        return;
      }
      request.ports.push_back(port);
    }
    Result<std::string> url = lookup.stream_url(request);
    if (!url.is_ok()) {
      int code = url.status().code() == StatusCode::kNotFound ? 404 : 400;
      responder.respond(text(code, url.status().message()));
      return;
    }
    std::optional<http::UpgradeTarget> target = streaming_target(*url);
    if (!target) {
      responder.respond(
          text(500, "the runtime answered a streaming URL skiff cannot use: " + *url));
      return;
    }
    target->method = req.method;
    target->headers = http::upgrade_headers(req);
    if (translator) {
      // What the runtime does not speak goes through the translator, which dials the runtime.
      streaming::Translation translation =
          streaming::choose_translation(request.kind, joined_header(req, "Upgrade"),
                                        joined_header(req, "Sec-WebSocket-Protocol"));
      if (translation != streaming::Translation::kNone) {
        streaming::SessionRequest session;
        session.translation = translation;
        session.runtime_url = *url;
        session.name = request.kind + " " + request.ns + "/" + request.pod;
        if (!request.container.empty()) session.name += "/" + request.container;
        session.in = request.in;
        session.out = request.out;
        session.err = request.err;
        session.tty = request.tty;
        target->host = "127.0.0.1";
        target->port = translator->port();
        target->tls = false;
        target->target = translator->session_target(session);
      }
    }
    responder.upgrade(std::move(*target));
  }

  void serve_create_pod(Request& req, Responder& responder) {
    std::string_view type = req.header("Content-Type");
    if (!manifest_content_type(type)) {
      responder.respond(
          status_response(415, "UnsupportedMediaType",
                          "the body of POST /pods must be a Pod manifest in JSON or YAML, not " +
                              std::string(type)));
      return;
    }
    Result<std::string> pod = lookup.create_pod(req.body);
    if (!pod.is_ok()) {
      StatusCode code = pod.status().code();
      if (code == StatusCode::kInvalidArgument) {
        responder.respond(status_response(400, "BadRequest", pod.status().message()));
      } else if (code == StatusCode::kAlreadyExists) {
        responder.respond(status_response(409, "AlreadyExists", pod.status().message()));
      } else {
        responder.respond(status_response(500, "InternalError", pod.status().message()));
      }
      return;
    }
    Response r;
    r.status = 201;
    r.body = std::move(pod).value();
    responder.respond(std::move(r));
  }

  void serve_summary(Request& req, Responder& responder) {
    if (!lookup.stats_summary) {
      responder.respond(text(404, "404 page not found\n"));
      return;
    }
    if (req.method != "GET" && req.method != "POST") {
      responder.respond(text(405, "405: Method Not Allowed"));
      return;
    }
    // As upstream: only a single, parseable value turns it on.
    bool only_cpu_and_memory = false;
    if (std::vector<std::string> v = req.params("only_cpu_and_memory"); v.size() == 1) {
      only_cpu_and_memory = parse_bool(v[0]).value_or(false);
    }
    Result<std::string> summary = lookup.stats_summary(only_cpu_and_memory);
    if (!summary.is_ok()) {
      SKIFF_LOG_ERROR("kubelet: /stats/summary: {}", summary.status().to_string());
      responder.respond(text(500, "Internal Error: " + summary.status().message()));
      return;
    }
    Response r;
    r.body = std::move(summary).value();
    responder.respond(std::move(r));
  }

  void serve_logs(Request& req, Responder& responder, const std::string& ns, const std::string& pod,
                  const std::string& container) {
    if (req.method != "GET") {
      responder.respond(text(405, "405: Method Not Allowed"));
      return;
    }
    int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    Result<ContainerLogQuery> query = parse_container_log_query(req, now_ns);
    if (!query.is_ok()) {
      int code = query.status().code() == StatusCode::kOutOfRange ? 422 : 400;
      responder.respond(text(code, query.status().message()));
      return;
    }
    Result<ContainerLogTarget> target = lookup.container_log(ns, pod, container);
    if (!target.is_ok()) {
      int code = target.status().code() == StatusCode::kNotFound ? 404 : 400;
      responder.respond(text(code, target.status().message()));
      return;
    }
    int instance = target->restart_count - (query->previous ? 1 : 0);
    std::string file = target->container_log_dir + "/" + std::to_string(instance) + ".log";
    if (query->previous && (instance < 0 || !file_exists(file))) {
      responder.respond(text(400, "previous terminated container \"" + container + "\" in pod \"" +
                                      pod + "\" not found"));
      return;
    }
    if (!file_exists(file)) {
      responder.respond(
          text(400, "failed to open log file \"" + file + "\": " + std::strerror(ENOENT)));
      return;
    }

    std::lock_guard lock(streams_mu);
    if (stopping.load()) {
      responder.respond(text(503, "the kubelet is shutting down"));
      return;
    }
    reap_locked();
    if (static_cast<int>(streams.size()) >= options.max_log_streams) {
      Response busy = text(429, "too many log streams, please try again later");
      busy.headers.push_back({"Retry-After", "1"});
      responder.respond(std::move(busy));
      return;
    }
    std::shared_ptr<http::ResponseStream> stream = responder.stream(200, "text/plain", {});
    StreamThread& slot = streams.emplace_back();
    logs::FollowControl follow;
    follow.poll_interval = options.follow_poll_interval;
    follow.cancelled = [this, stream] { return stopping.load() || stream->closed(); };
    if (query->previous) {
      follow.source_done = [] { return true; };  // a previous instance writes nothing more
    } else if (target->running) {
      follow.source_done = [running = target->running] { return !running(); };
    }
    slot.thread = std::thread([this, stream, file, options = query->options, follow, &slot] {
      Status s = logs::read_container_log(
          file, options,
          [this, &stream](std::string_view chunk) {
            while (stream->queued_bytes() > kMaxQueuedLogBytes && !stream->closed() &&
                   !stopping.load()) {
              std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
            return stream->write(std::string(chunk));
          },
          follow);
      if (!s.is_ok()) SKIFF_LOG_WARN("kubelet: reading {}: {}", file, s.message());
      stream->finish();
      slot.done = true;
    });
  }

  // Joins the threads of finished log streams.
  void reap_locked() {
    for (auto it = streams.begin(); it != streams.end();) {
      if (it->done.load()) {
        it->thread.join();
        it = streams.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Log streams end first (their threads write to the servers' connections), and translated
  // sessions (their relays are the secure server's connections), then the servers; a request
  // arriving meanwhile starts no new stream (stopping is set).
  void stop() {
    stopping = true;
    if (translator) translator->stop();
    {
      std::lock_guard lock(streams_mu);
      for (StreamThread& s : streams) {
        if (s.thread.joinable()) s.thread.join();
      }
      streams.clear();
    }
    for (auto* server : {&secure, &read_only, &healthz}) {
      if (*server) (*server)->stop();
    }
  }
};

KubeletServer::KubeletServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

KubeletServer::~KubeletServer() {
  stop();
}

Result<std::unique_ptr<KubeletServer>> KubeletServer::create(KubeletServerOptions options,
                                                             PodLookup lookup) {
  if (!lookup.pod_list || !lookup.container_log) {
    return Status(StatusCode::kInvalidArgument,
                  "the kubelet server needs every PodLookup callback");
  }
  auto impl = std::make_unique<Impl>();
  Impl& s = *impl;
  s.options = std::move(options);
  s.lookup = std::move(lookup);
  const KubeletServerOptions& o = s.options;

  std::string key_file;
  if (!o.tls_cert_file.empty() || !o.tls_key_file.empty()) {
    s.cert_file = o.tls_cert_file;
    key_file = o.tls_key_file;
  } else {
    ServingCertOptions cert;
    cert.cert_dir = o.cert_dir;
    cert.node_name = o.node_name;
    cert.sans = o.serving_sans;
    if (!o.ca_key_file.empty()) {
      cert.ca_cert_file = o.client_ca_file;
      cert.ca_key_file = o.ca_key_file;
    }
    SKIFF_ASSIGN_OR_RETURN(ServingCert serving, ensure_serving_cert(cert));
    s.cert_file = serving.cert_file;
    key_file = serving.key_file;
  }

  if (o.translate_streams && s.lookup.stream_url) {
    SKIFF_ASSIGN_OR_RETURN(s.translator, streaming::Translator::start());
  }

  Impl* self = impl.get();
  auto handler = [self](Port port) {
    return [self, port](Request& req, Responder& r) { self->handle(port, req, r); };
  };
  http::HttpServerOptions secure;
  secure.bind_address = o.address;
  secure.port = o.port;
  secure.cert_file = s.cert_file;
  secure.key_file = key_file;
  secure.client_ca_file = o.client_ca_file;
  secure.worker_threads = o.worker_threads;
  secure.long_running = [](const Request& req) {
    return req.flag("follow") || req.path.starts_with("/exec/") ||
           req.path.starts_with("/attach/") || req.path.starts_with("/portforward/") ||
           req.path.starts_with("/run/");
  };
  s.secure = std::make_unique<http::HttpServer>(
      secure, handler(Port::kSecure),
      [self](const ssl_st* tls, std::string_view authorization, http::UserInfo* user) {
        return authenticate(self->options, tls, authorization, user);
      });
  SKIFF_RETURN_IF_ERROR(s.secure->start());

  if (o.read_only_port) {
    http::HttpServerOptions ro;
    ro.bind_address = o.address;
    ro.port = *o.read_only_port;
    ro.worker_threads = 2;
    s.read_only = std::make_unique<http::HttpServer>(ro, handler(Port::kReadOnly), nullptr);
    Status started = s.read_only->start();
    if (!started.is_ok()) {
      s.stop();
      return started;
    }
  }
  if (o.healthz_port) {
    http::HttpServerOptions hz;
    hz.bind_address = o.healthz_bind_address;
    hz.port = *o.healthz_port;
    hz.io_threads = 1;
    hz.worker_threads = 1;
    s.healthz = std::make_unique<http::HttpServer>(hz, handler(Port::kHealthz), nullptr);
    Status started = s.healthz->start();
    if (!started.is_ok()) {
      // As upstream: a healthz port that cannot be bound (another kubelet on this machine has
      // it) is reported, not fatal.
      SKIFF_LOG_WARN("kubelet: healthz server not started: {}", started.message());
      s.healthz->stop();
      s.healthz.reset();
    }
  }
  SKIFF_LOG_INFO("kubelet: serving on {}:{} (read-only port {}, healthz {}:{})", o.address,
                 s.secure->port(), s.read_only ? s.read_only->port() : 0, o.healthz_bind_address,
                 s.healthz ? s.healthz->port() : 0);
  return std::unique_ptr<KubeletServer>(new KubeletServer(std::move(impl)));
}

int KubeletServer::port() const {
  return impl_->secure ? impl_->secure->port() : 0;
}

int KubeletServer::read_only_port() const {
  return impl_->read_only ? impl_->read_only->port() : 0;
}

int KubeletServer::healthz_port() const {
  return impl_->healthz ? impl_->healthz->port() : 0;
}

const std::string& KubeletServer::cert_file() const {
  return impl_->cert_file;
}

int KubeletServer::active_log_streams() const {
  std::lock_guard lock(impl_->streams_mu);
  int n = 0;
  for (const Impl::StreamThread& s : impl_->streams) n += s.done.load() ? 0 : 1;
  return n;
}

void KubeletServer::stop() {
  if (impl_) impl_->stop();
}

}  // namespace skiff::kubelet::server
