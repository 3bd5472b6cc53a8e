#include "apiserver/pod_log.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "api/errors.h"
#include "base/log.h"
#include "base/time.h"

namespace skiff::apiserver {

using nlohmann::json;

namespace {

constexpr char kClientCertName[] = "kube-apiserver-kubelet-client";
constexpr char kClientCertGroup[] = "system:masters";
constexpr int kDefaultKubeletPort = 10250;
// How much of a kubelet's error answer becomes the message (upstream's maxReadLength).
constexpr size_t kMaxErrorBody = 50000;
// A relay stops reading from the kubelet while this much is queued for a slow client.
constexpr size_t kMaxQueuedBytes = 4 * 1024 * 1024;

Response error_response(const api::ApiError& e) {
  Response r;
  r.status = e.code;
  r.body = e.to_json();
  return r;
}

// PodLogOptions as decoded from the query.
struct LogOptions {
  std::string container;
  bool follow = false;
  bool previous = false;
  bool timestamps = false;
  std::optional<int64_t> tail_lines;
  std::optional<int64_t> since_seconds;
  std::optional<int64_t> since_time;  // unix seconds
  std::optional<int64_t> limit_bytes;
  std::optional<std::string> stream;
};

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
  if (v.empty()) return std::nullopt;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size()) return std::nullopt;
  return out;
}

// Decodes and validates the options; an error is the answer.
std::optional<api::ApiError> decode_options(const Request& req, const std::string& pod,
                                            LogOptions* o) {
  o->container = std::string(req.param("container"));
  struct Bool {
    const char* name;
    bool* out;
  } bools[] = {{"follow", &o->follow}, {"previous", &o->previous}, {"timestamps", &o->timestamps}};
  for (const Bool& b : bools) {
    if (!req.has_param(b.name)) continue;
    std::string_view v = req.param(b.name);
    std::optional<bool> parsed = v.empty() ? std::optional<bool>(false) : parse_bool(v);
    if (!parsed) {
      return api::ApiError::bad_request(std::string(b.name) + ": strconv.ParseBool: parsing " +
                                        api::go_quote(v) + ": invalid syntax");
    }
    *b.out = *parsed;
  }
  struct Int {
    const char* name;
    std::optional<int64_t>* out;
  } ints[] = {{"tailLines", &o->tail_lines},
              {"sinceSeconds", &o->since_seconds},
              {"limitBytes", &o->limit_bytes}};
  for (const Int& i : ints) {
    std::string_view v = req.param(i.name);
    if (v.empty()) continue;
    std::optional<int64_t> parsed = parse_int(v);
    if (!parsed) {
      return api::ApiError::bad_request(std::string(i.name) + ": strconv.ParseInt: parsing " +
                                        api::go_quote(v) + ": invalid syntax");
    }
    *i.out = parsed;
  }
  if (std::string_view v = req.param("sinceTime"); !v.empty()) {
    int64_t t = parse_rfc3339(v);
    if (t < 0) {
      return api::ApiError::bad_request("sinceTime: parsing time " + api::go_quote(v) +
                                        " as RFC 3339: invalid time");
    }
    o->since_time = t;
  }
  if (req.has_param("stream")) o->stream = std::string(req.param("stream"));

  api::FieldErrors errors;
  if (o->tail_lines && *o->tail_lines < 0) {
    errors.invalid_value("tailLines", *o->tail_lines, "must be greater than or equal to 0");
  }
  if (o->limit_bytes && *o->limit_bytes < 1) {
    errors.invalid_value("limitBytes", *o->limit_bytes, "must be greater than 0");
  }
  if (o->since_seconds && o->since_time) {
    errors.forbidden("", "at most one of `sinceTime` or `sinceSeconds` may be specified");
  } else if (o->since_seconds && *o->since_seconds < 1) {
    errors.invalid_value("sinceSeconds", *o->since_seconds, "must be greater than 0");
  }
  if (o->stream && *o->stream != "All" && *o->stream != "Stdout" && *o->stream != "Stderr") {
    errors.not_supported("stream", *o->stream, {"All", "Stderr", "Stdout"});
  }
  if (!errors.empty()) return api::ApiError::invalid("PodLogOptions", "", pod, errors.take());
  return std::nullopt;
}

// Every container name of the pod, in upstream's VisitContainers order: init containers,
// containers, ephemeral containers.
std::vector<std::string> container_names(const json& pod) {
  std::vector<std::string> out;
  const json& spec = pod.contains("spec") ? pod["spec"] : json::object();
  for (const char* list : {"initContainers", "containers", "ephemeralContainers"}) {
    auto it = spec.find(list);
    if (it == spec.end() || !it->is_array()) continue;
    for (const json& c : *it) {
      if (c.is_object() && c.contains("name") && c["name"].is_string()) {
        out.push_back(c["name"].get<std::string>());
      }
    }
  }
  return out;
}

size_t regular_container_count(const json& pod) {
  auto spec = pod.find("spec");
  if (spec == pod.end() || !spec->is_object()) return 0;
  auto it = spec->find("containers");
  return it != spec->end() && it->is_array() ? it->size() : 0;
}

// Go's %v of a []string: "[a b c]".
std::string go_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += " ";
    out += items[i];
  }
  return out + "]";
}

// upstream's validateContainer: the container to read, or the error to answer.
std::optional<api::ApiError> pick_container(const json& pod, const std::string& name,
                                            std::string* container) {
  std::vector<std::string> names = container_names(pod);
  if (container->empty()) {
    size_t regular = regular_container_count(pod);
    if (regular == 1) {
      *container = pod["spec"]["containers"][0].value("name", "");
      return std::nullopt;
    }
    if (regular == 0) {
      return api::ApiError::bad_request("a container name must be specified for pod " + name);
    }
    return api::ApiError::bad_request("a container name must be specified for pod " + name +
                                      ", choose one of: " + go_list(names));
  }
  if (std::find(names.begin(), names.end(), *container) == names.end()) {
    return api::ApiError::bad_request("container " + *container + " is not valid for pod " + name);
  }
  return std::nullopt;
}

// The kubelet's address, by upstream's preference among the node's addresses; the error text
// when it has none.
Result<std::string> node_address(const json& node) {
  std::vector<std::pair<std::string, std::string>> addresses;  // type, address
  const json* list = nullptr;
  if (auto st = node.find("status"); st != node.end() && st->is_object()) {
    if (auto a = st->find("addresses"); a != st->end() && a->is_array()) list = &*a;
  }
  if (list) {
    for (const json& a : *list) {
      if (!a.is_object()) continue;
      addresses.emplace_back(a.value("type", ""), a.value("address", ""));
    }
  }
  for (const char* type : {"InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS", "Hostname"}) {
    for (const auto& [t, address] : addresses) {
      if (t == type && !address.empty()) return address;
    }
  }
  std::string known = "[";
  for (size_t i = 0; i < addresses.size(); ++i) {
    if (i > 0) known += " ";
    known += "{" + addresses[i].first + " " + addresses[i].second + "}";
  }
  known += "]";
  return Status(StatusCode::kNotFound, "no preferred addresses found; known addresses: " + known);
}

int kubelet_port(const json& node) {
  const json* p = nullptr;
  if (auto st = node.find("status"); st != node.end() && st->is_object()) {
    if (auto de = st->find("daemonEndpoints"); de != st->end() && de->is_object()) {
      if (auto ke = de->find("kubeletEndpoint"); ke != de->end() && ke->is_object()) {
        if (auto port = ke->find("Port"); port != ke->end()) p = &*port;
      }
    }
  }
  if (p && p->is_number_integer() && p->get<int64_t>() > 0 && p->get<int64_t>() < 65536) {
    return static_cast<int>(p->get<int64_t>());
  }
  return kDefaultKubeletPort;
}

std::string url_escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// The kubelet's URL path and query, with the parameters in Go's url.Values.Encode order
// (sorted by name).
std::string kubelet_target(const std::string& ns, const std::string& pod,
                           const std::string& container, const LogOptions& o) {
  std::vector<std::pair<std::string, std::string>> params;
  if (o.follow) params.emplace_back("follow", "true");
  if (o.limit_bytes) params.emplace_back("limitBytes", std::to_string(*o.limit_bytes));
  if (o.previous) params.emplace_back("previous", "true");
  if (o.since_seconds) params.emplace_back("sinceSeconds", std::to_string(*o.since_seconds));
  if (o.since_time) params.emplace_back("sinceTime", rfc3339(*o.since_time));
  if (o.stream) params.emplace_back("stream", *o.stream);
  if (o.tail_lines) params.emplace_back("tailLines", std::to_string(*o.tail_lines));
  if (o.timestamps) params.emplace_back("timestamps", "true");
  std::string target =
      "/containerLogs/" + url_escape(ns) + "/" + url_escape(pod) + "/" + url_escape(container);
  for (size_t i = 0; i < params.size(); ++i) {
    target += (i == 0 ? "?" : "&") + params[i].first + "=" + url_escape(params[i].second);
  }
  return target;
}

// A kubelet's error answer as upstream's GenericHttpResponseChecker reports it.
api::ApiError kubelet_error(int code, const std::string& body, const std::string& pod) {
  if (code == 500) return api::ApiError::internal(body);
  if (code == 400) return api::ApiError::bad_request(body);
  api::ApiError e;
  e.code = code;
  std::string message;
  switch (code) {
    case 404:
      e.reason = "NotFound";
      message = "the server could not find the requested resource";
      break;
    case 401:
      e.reason = "Unauthorized";
      message = "the server has asked for the client to provide credentials";
      break;
    case 403:
      e.reason = "Forbidden";
      message = body;
      break;
    case 405:
      e.reason = "MethodNotAllowed";
      message = "the server does not allow this method on the requested resource";
      break;
    case 422:
      e.reason = "Invalid";
      message = "the server rejected our request due to an error in our request";
      break;
    case 429:
      e.reason = "TooManyRequests";
      message = "the server has received too many requests and has asked us to try again later";
      break;
    case 503:
      e.reason = "ServiceUnavailable";
      message = "the server is currently unable to handle the request";
      break;
    default:
      if (code >= 500) {
        e.reason = "InternalError";
        message = "an error on the server (" + api::go_quote(body) +
                  ") has prevented the request from succeeding";
      } else {
        message = "the server responded with the status code " + std::to_string(code) +
                  " but did not return more information";
      }
  }
  e.message = message + " ( pods/log " + pod + ")";
  e.kind = "pods/log";
  e.name = pod;
  return e;
}

}  // namespace

struct PodLogs::Relay {
  std::thread thread;
  std::atomic<bool> done{false};
  std::atomic<bool> cancelled{false};
  std::shared_ptr<http::ProxyResponse> upstream;
};

Result<KubeletClientCert> ensure_kubelet_client_cert(const std::string& dir,
                                                     const pki::CertificateAuthority& ca) {
  KubeletClientCert out;
  out.cert_file = dir + "/kubelet-client.crt";
  out.key_file = dir + "/kubelet-client.key";
  std::string problem;
  Result<std::string> cert = pki::read_file(out.cert_file);
  Result<std::string> key = pki::read_file(out.key_file);
  if (!cert.is_ok() || !key.is_ok()) {
    problem = "missing";
  } else if (Result<pki::CertInfo> info = pki::inspect_certificate_pem(*cert); !info.is_ok()) {
    problem = "unreadable";
  } else if (info->common_name != kClientCertName ||
             info->organizations != std::vector<std::string>{kClientCertGroup}) {
    problem = "another subject";
  } else if (info->not_after - std::chrono::system_clock::now() < pki::kRenewBefore) {
    problem = "expiring";
  } else if (!ca.signed_cert_pem(*cert)) {
    problem = "not issued by the cluster CA";
  }
  if (problem.empty()) return out;
  SKIFF_ASSIGN_OR_RETURN(pki::CertAndKey issued,
                         ca.issue_client_cert(kClientCertName, {kClientCertGroup}));
  SKIFF_RETURN_IF_ERROR(pki::write_file_atomic(out.key_file, issued.key_pem, 0600));
  SKIFF_RETURN_IF_ERROR(pki::write_file_atomic(out.cert_file, issued.cert_pem, 0644));
  out.issued = true;
  SKIFF_LOG_INFO("apiserver: issued the kubelet client certificate {} ({})", out.cert_file,
                 problem);
  return out;
}

PodLogs::PodLogs(Registry& registry, std::unique_ptr<http::ProxyClient> kubelets)
    : registry_(registry), kubelets_(std::move(kubelets)) {}

PodLogs::~PodLogs() {
  stop();
}

void PodLogs::handle(const RequestInfo& info, Request& req, Responder& responder) {
  if (info.verb != "get") {
    responder.respond(error_response(api::ApiError::method_not_allowed(
        "the server does not allow this method on the requested resource")));
    return;
  }
  LogOptions options;
  if (auto e = decode_options(req, info.name, &options)) {
    responder.respond(error_response(*e));
    return;
  }
  const api::Schema& schema = api::Schema::builtin();
  const api::ResourceInfo* pods = schema.resource("", "v1", "pods");
  const api::ResourceInfo* nodes = schema.resource("", "v1", "nodes");
  SKIFF_CHECK(pods && nodes, "the schema lacks pods or nodes");

  auto pod = registry_.read(*pods, info.ns, info.name);
  if (!pod.is_ok()) {
    responder.respond(error_response(api::ApiError::from_storage(pod.status())));
    return;
  }
  if (!*pod) {
    responder.respond(error_response(api::ApiError::not_found("pods", info.name)));
    return;
  }
  std::string container = options.container;
  if (auto e = pick_container(**pod, info.name, &container)) {
    responder.respond(error_response(*e));
    return;
  }
  std::string node_name;
  if (auto spec = (*pod)->find("spec"); spec != (*pod)->end() && spec->is_object()) {
    node_name = spec->value("nodeName", "");
  }
  if (node_name.empty()) {
    // Not scheduled: nothing to show yet.
    Response r;
    r.status = 204;
    r.content_type = "text/plain";
    responder.respond(std::move(r));
    return;
  }
  auto node = registry_.read(*nodes, "", node_name);
  if (!node.is_ok()) {
    responder.respond(error_response(api::ApiError::from_storage(node.status())));
    return;
  }
  if (!*node) {
    responder.respond(error_response(api::ApiError::not_found("nodes", node_name)));
    return;
  }
  Result<std::string> host = node_address(**node);
  if (!host.is_ok()) {
    api::ApiError e;
    e.code = 500;
    e.message = host.status().message();
    responder.respond(error_response(e));
    return;
  }
  int port = kubelet_port(**node);
  std::string target = kubelet_target(info.ns, info.name, container, options);

  auto upstream = kubelets_->get(*host, port, target);
  if (!upstream.is_ok()) {
    SKIFF_LOG_WARN("apiserver: pods/log {}/{}: {}", info.ns, info.name,
                   upstream.status().message());
    api::ApiError e;
    e.code = 500;
    e.message = upstream.status().message();
    responder.respond(error_response(e));
    return;
  }
  std::shared_ptr<http::ProxyResponse> response = std::move(upstream).value();
  int status = response->head().status;
  if (status < 200 || status > 206) {
    auto body = response->read_all(kMaxErrorBody);
    std::string text = body.is_ok() ? *body : body.status().message();
    responder.respond(error_response(kubelet_error(status, text, info.name)));
    return;
  }

  std::lock_guard lock(mu_);
  if (stopped_) {
    responder.respond(
        error_response(api::ApiError::service_unavailable("the server is shutting down")));
    return;
  }
  for (auto it = relays_.begin(); it != relays_.end();) {
    if (it->done.load()) {
      it->thread.join();
      it = relays_.erase(it);
    } else {
      ++it;
    }
  }
  std::shared_ptr<ResponseStream> stream = responder.stream(200, "text/plain");
  std::weak_ptr<http::ProxyResponse> weak = response;
  stream->on_close([weak] {
    if (auto r = weak.lock()) r->cancel();
  });
  Relay& relay = relays_.emplace_back();
  relay.upstream = response;
  relay.thread = std::thread([stream, response, &relay] {
    while (true) {
      Result<std::string> piece = response->read();
      if (!piece.is_ok() || piece->empty()) break;
      while (stream->queued_bytes() > kMaxQueuedBytes && !stream->closed() &&
             !relay.cancelled.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      if (relay.cancelled.load() || !stream->write(std::move(*piece))) break;
    }
    response->cancel();  // done with the kubelet's connection (a no-op once it ended)
    stream->finish();
    relay.done = true;
  });
}

void PodLogs::stop() {
  std::lock_guard lock(mu_);
  stopped_ = true;
  for (Relay& r : relays_) {
    r.cancelled = true;
    r.upstream->cancel();
  }
  for (Relay& r : relays_) {
    if (r.thread.joinable()) r.thread.join();
  }
  relays_.clear();
}

PodStreams::PodStreams(Registry& registry, http::UpgradeTarget kubelet_tls)
    : registry_(registry), kubelet_tls_(std::move(kubelet_tls)) {}

void PodStreams::handle(const RequestInfo& info, Request& req, Responder& responder) {
  auto fail = [&](const api::ApiError& e) { responder.respond(error_response(e)); };
  if (info.verb != "get" && info.verb != "create") {
    fail(api::ApiError::method_not_allowed(
        "the server does not allow this method on the requested resource"));
    return;
  }
  const std::string& kind = info.subresource;
  const bool exec = kind == "exec";
  const bool portforward = kind == "portforward";
  const bool in = req.flag("stdin");
  const bool out = req.flag("stdout");
  const bool err = req.flag("stderr");
  const bool tty = req.flag("tty");
  std::vector<std::string> command = req.params("command");
  if (exec && command.empty()) {
    fail(api::ApiError::bad_request("you must specify at least one command for the container"));
    return;
  }
  if (!portforward && !in && !out && !err) {
    fail(api::ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    return;
  }
  std::vector<int> ports;
  if (portforward) {
    for (const std::string& p : req.params("ports")) {
      int port = 0;
      auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
      if (ec != std::errc() || end != p.data() + p.size() || port < 1 || port > 65535) {
        fail(api::ApiError::bad_request("invalid port \"" + p +
                                        "\": ports must be numbers in the range 1-65535"));
        return;
      }
      ports.push_back(port);
    }
  }

  const api::Schema& schema = api::Schema::builtin();
  const api::ResourceInfo* pods = schema.resource("", "v1", "pods");
  const api::ResourceInfo* nodes = schema.resource("", "v1", "nodes");
  SKIFF_CHECK(pods && nodes, "the schema lacks pods or nodes");
  auto pod = registry_.read(*pods, info.ns, info.name);
  if (!pod.is_ok()) return fail(api::ApiError::from_storage(pod.status()));
  if (!*pod) return fail(api::ApiError::not_found("pods", info.name));
  const json& p = **pod;
  std::string container(req.param("container"));
  if (!portforward) {
    if (auto e = pick_container(p, info.name, &container)) return fail(*e);
    std::string phase;
    if (auto st = p.find("status"); st != p.end() && st->is_object()) {
      phase = st->value("phase", "");
    }
    if (phase == "Succeeded" || phase == "Failed") {
      return fail(
          api::ApiError::bad_request(std::string(exec ? "cannot exec into" : "cannot attach to") +
                                     " a container in a completed pod; current phase is " + phase));
    }
  }
  std::string node_name;
  if (auto spec = p.find("spec"); spec != p.end() && spec->is_object()) {
    node_name = spec->value("nodeName", "");
  }
  if (node_name.empty()) {
    return fail(api::ApiError::bad_request("pod " + info.name + " does not have a host assigned"));
  }
  auto node = registry_.read(*nodes, "", node_name);
  if (!node.is_ok()) return fail(api::ApiError::from_storage(node.status()));
  if (!*node) return fail(api::ApiError::not_found("nodes", node_name));
  Result<std::string> host = node_address(**node);
  if (!host.is_ok()) {
    api::ApiError e;  // as pods/log: the bare message
    e.code = 500;
    e.message = host.status().message();
    return fail(e);
  }

  http::UpgradeTarget target = kubelet_tls_;
  target.host = *host;
  target.port = kubelet_port(**node);
  target.tls = true;
  target.method = req.method;
  target.headers = http::upgrade_headers(req);
  target.target = "/" + kind + "/" + url_escape(info.ns) + "/" + url_escape(info.name);
  if (portforward) {
    // PodPortForwardOptions.ports, passed on as upstream does (port=N each).
    for (size_t i = 0; i < ports.size(); ++i) {
      target.target += (i ? "&port=" : "?port=") + std::to_string(ports[i]);
    }
  } else {
    target.target += "/" + url_escape(container);
    // Go's url.Values.Encode order: sorted by name.
    std::vector<std::string> params;
    for (const std::string& c : command) params.push_back("command=" + url_escape(c));
    if (err) params.push_back("error=1");
    if (in) params.push_back("input=1");
    if (out) params.push_back("output=1");
    if (tty) params.push_back("tty=1");
    for (size_t i = 0; i < params.size(); ++i) target.target += (i ? "&" : "?") + params[i];
  }
  responder.upgrade(std::move(target));
}

}  // namespace skiff::apiserver
