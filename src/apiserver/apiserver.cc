#include "apiserver/apiserver.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>

#include <nlohmann/json.hpp>

#include "api/errors.h"
#include "api/openapi.h"
#include "api/schema.h"
#include "apiserver/admission.h"
#include "apiserver/authn.h"
#include "apiserver/discovery.h"
#include "apiserver/pod_log.h"
#include "apiserver/registry.h"
#include "apiserver/request_info.h"
#include "apiserver/strategies.h"
#include "apiserver/tables.h"
#include "base/kubeconfig.h"
#include "base/log.h"
#include "base/pki.h"
#include "base/version.h"
#include "httpserver/http_server.h"

namespace skiff::apiserver {
namespace {

// --advertise-address, defaulted: the bind address, or the first non-loopback IPv4 address of
// the host when binding to all addresses (127.0.0.1 when there is none).
std::string resolve_advertise_address(const ApiServerOptions& o) {
  if (!o.advertise_address.empty()) return o.advertise_address;
  if (o.bind_address != "0.0.0.0" && !o.bind_address.empty()) return o.bind_address;
  ifaddrs* list = nullptr;
  std::string found = "127.0.0.1";
  if (::getifaddrs(&list) != 0) return found;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET || (a->ifa_flags & IFF_LOOPBACK)) {
      continue;
    }
    char buf[INET_ADDRSTRLEN];
    auto* in = reinterpret_cast<sockaddr_in*>(a->ifa_addr);
    if (::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf)) {
      found = buf;
      break;
    }
  }
  ::freeifaddrs(list);
  return found;
}

using nlohmann::json;

Response text(int status, std::string body) {
  Response r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  return r;
}

Response api_error(const api::ApiError& e) {
  Response r;
  r.status = e.code;
  r.body = e.to_json();
  return r;
}

// The first usable address of an IPv4 CIDR ("10.43.0.0/16" → "10.43.0.1").
Result<std::string> first_service_ip(const std::string& cidr) {
  size_t slash = cidr.find('/');
  std::string base = cidr.substr(0, slash);
  in_addr addr{};
  if (slash == std::string::npos || inet_pton(AF_INET, base.c_str(), &addr) != 1) {
    return Status(StatusCode::kInvalidArgument, "invalid service CIDR \"" + cidr + "\"");
  }
  int bits = std::atoi(cidr.c_str() + slash + 1);
  if (bits < 1 || bits > 30) {
    return Status(StatusCode::kInvalidArgument, "service CIDR \"" + cidr + "\" has a bad prefix");
  }
  uint32_t host = ntohl(addr.s_addr);
  uint32_t mask = bits == 32 ? 0xffffffffu : ~((1u << (32 - bits)) - 1);
  host = (host & mask) + 1;
  addr.s_addr = htonl(host);
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &addr, buf, sizeof(buf));
  return std::string(buf);
}

std::string version_json() {
  return json{{"major", kKubernetesMajor},
              {"minor", kKubernetesMinor},
              {"gitVersion", std::string("v") + kKubernetesMajor + "." + kKubernetesMinor +
                                 ".0-skiff." + kSkiffVersion},
              {"gitCommit", kGitCommit},
              {"gitTreeState", "clean"},
              {"buildDate", "1970-01-01T00:00:00Z"},
              {"goVersion", "none (C++)"},
              {"compiler", "gcc"},
              {"platform", "linux/amd64"}}
      .dump();
}

}  // namespace

struct ApiServer::Impl {
  ApiServerOptions options;
  std::unique_ptr<storage::Store> store;
  const api::Schema* schema = nullptr;
  std::unique_ptr<Registry> registry;
  std::unique_ptr<Discovery> discovery;
  std::unique_ptr<api::OpenApi> openapi;
  std::unique_ptr<Authenticator> authenticator;
  std::unique_ptr<PodLogs> pod_logs;
  std::unique_ptr<PodStreams> pod_streams;
  std::unique_ptr<http::HttpServer> server;
  std::string kubeconfig_path;
  std::string service_ip;
  std::atomic<bool> ready{false};

  void handle(Request& req, Responder& responder) {
    const std::string& path = req.path;
    if (path == "/healthz" || path == "/livez" || path == "/readyz" || path == "/healthz/ping" ||
        path == "/livez/ping") {
      if (path == "/readyz" && !ready) {
        responder.respond(text(500, "[-]bootstrap not finished\nreadyz check failed\n"));
        return;
      }
      responder.respond(text(200, "ok"));
      return;
    }
    if (path == "/version" || path == "/version/") {
      Response r;
      r.body = version_json();
      responder.respond(std::move(r));
      return;
    }
    if (!req.authenticated) {
      responder.respond(api_error(api::ApiError::unauthorized()));
      return;
    }
    if (auto o = openapi->serve(req.method, path, req.param("hash"), req.header("Accept"),
                                req.header("If-None-Match"))) {
      Response r;
      r.status = o->status;
      r.content_type = std::move(o->content_type);
      for (auto& [name, value] : o->headers) r.headers.push_back({name, std::move(value)});
      r.body = std::move(o->body);
      responder.respond(std::move(r));
      return;
    }
    if (auto d = discovery->serve(path, req.header("Accept"))) {
      if (req.method != "GET" && req.method != "HEAD") {
        responder.respond(api_error(api::ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource")));
        return;
      }
      responder.respond(std::move(*d));
      return;
    }
    RequestInfo info = parse_request_info(req);
    if (info.is_resource_request && info.group.empty() && info.resource == "pods" &&
        info.subresource == "log" && !info.name.empty()) {
      pod_logs->handle(info, req, responder);
      return;
    }
    if (info.is_resource_request && info.group.empty() && info.resource == "pods" &&
        !info.name.empty() &&
        (info.subresource == "exec" || info.subresource == "attach" ||
         info.subresource == "portforward")) {
      pod_streams->handle(info, req, responder);
      return;
    }
    if (info.is_resource_request) {
      registry->handle(info, req, responder);
      return;
    }
    responder.respond(api_error(api::ApiError::not_found_path()));
  }

  Status bootstrap() {
    auto resource = [&](const char* group, const char* res) {
      const api::ResourceInfo* r = schema->resource(group, "v1", res);
      SKIFF_CHECK(r != nullptr, std::string("schema lacks ") + res);
      return r;
    };
    for (const char* ns : {"default", "kube-system", "kube-public", "kube-node-lease"}) {
      SKIFF_RETURN_IF_ERROR(
          registry->ensure(*resource("", "namespaces"), json{{"metadata", {{"name", ns}}}}));
    }
    json svc{{"metadata",
              {{"name", "kubernetes"},
               {"namespace", "default"},
               {"labels", {{"component", "apiserver"}, {"provider", "kubernetes"}}}}},
             {"spec",
              {{"type", "ClusterIP"},
               {"clusterIP", service_ip},
               {"clusterIPs", {service_ip}},
               {"sessionAffinity", "None"},
               {"ipFamilies", {"IPv4"}},
               {"ipFamilyPolicy", "SingleStack"},
               {"internalTrafficPolicy", "Cluster"},
               {"ports",
                {{{"name", "https"},
                  {"port", 443},
                  {"protocol", "TCP"},
                  {"targetPort", server->port()}}}}}}};
    SKIFF_RETURN_IF_ERROR(registry->ensure(*resource("", "services"), svc));
    const std::string address = resolve_advertise_address(options);
    json ep{{"metadata",
             {{"name", "kubernetes"},
              {"namespace", "default"},
              {"labels", {{"endpointslice.kubernetes.io/skip-mirror", "true"}}}}},
            {"subsets",
             {{{"addresses", {{{"ip", address}}}},
               {"ports", {{{"name", "https"}, {"port", server->port()}, {"protocol", "TCP"}}}}}}}};
    SKIFF_RETURN_IF_ERROR(registry->ensure(*resource("", "endpoints"), ep));
    // The proxy reads EndpointSlices; upstream's API server keeps this one next to the
    // Endpoints.
    json slice{{"metadata",
                {{"name", "kubernetes"},
                 {"namespace", "default"},
                 {"labels", {{"kubernetes.io/service-name", "kubernetes"}}}}},
               {"addressType", "IPv4"},
               {"endpoints", {{{"addresses", {address}}, {"conditions", {{"ready", true}}}}}},
               {"ports", {{{"name", "https"}, {"port", server->port()}, {"protocol", "TCP"}}}}};
    const api::ResourceInfo* slices = schema->resource("discovery.k8s.io", "v1", "endpointslices");
    SKIFF_CHECK(slices != nullptr, "schema lacks endpointslices");
    SKIFF_RETURN_IF_ERROR(registry->ensure(*slices, slice));
    const api::ResourceInfo* classes =
        schema->resource("scheduling.k8s.io", "v1", "priorityclasses");
    SKIFF_CHECK(classes != nullptr, "schema lacks priorityclasses");
    for (const SystemPriorityClass& c : system_priority_classes()) {
      SKIFF_RETURN_IF_ERROR(registry->ensure(*classes, json{{"metadata", {{"name", c.name}}},
                                                            {"value", c.value},
                                                            {"description", c.description}}));
    }
    return Status::ok();
  }
};

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ApiServer::~ApiServer() {
  stop();
}

Result<std::unique_ptr<ApiServer>> ApiServer::start(ApiServerOptions options) {
  auto impl = std::make_unique<Impl>();
  Impl& s = *impl;
  s.options = std::move(options);
  const std::string& dir = s.options.data_dir;
  SKIFF_ASSIGN_OR_RETURN(s.service_ip, first_service_ip(s.options.service_cidr));

  storage::StoreConfig store_config = s.options.store;
  if (store_config.backend == "embedded" && store_config.data_dir.empty()) {
    store_config.data_dir = dir + "/db";
  }
  SKIFF_ASSIGN_OR_RETURN(s.store, storage::open_store(store_config));

  pki::PkiOptions pki_options;
  pki_options.extra_sans = s.options.tls_sans;
  pki_options.service_ip = s.service_ip;
  SKIFF_ASSIGN_OR_RETURN(pki::PkiState tls, pki::ensure_pki(dir + "/tls", pki_options));

  TokenFile tokens;
  if (!s.options.token_auth_file.empty()) {
    SKIFF_ASSIGN_OR_RETURN(tokens, TokenFile::load(s.options.token_auth_file));
  }
  s.authenticator = std::make_unique<Authenticator>(std::move(tokens));

  s.schema = &api::Schema::builtin();
  s.registry = std::make_unique<Registry>(*s.store, *s.schema);
  StrategyConfig strategy_config;
  strategy_config.service_cidr = s.options.service_cidr;
  strategy_config.event_ttl_seconds = s.options.event_ttl_seconds;
  strategy_config.not_ready_toleration_seconds = s.options.default_not_ready_toleration_seconds;
  strategy_config.unreachable_toleration_seconds = s.options.default_unreachable_toleration_seconds;
  SKIFF_RETURN_IF_ERROR(install_strategies(*s.registry, strategy_config));
  install_tables(*s.registry);
  install_admission(*s.registry);
  // Before the bootstrap writes, so every write since the start is in the caches' windows.
  s.registry->start_watch_caches();
  // pods/log reaches kubelets with a client certificate of the API server's own.
  SKIFF_ASSIGN_OR_RETURN(KubeletClientCert kubelet_cert,
                         ensure_kubelet_client_cert(tls.paths.dir, tls.ca));
  http::ProxyClientOptions kubelet_client;
  kubelet_client.ca_file = s.options.kubelet_certificate_authority;
  kubelet_client.cert_file = kubelet_cert.cert_file;
  kubelet_client.key_file = kubelet_cert.key_file;
  SKIFF_ASSIGN_OR_RETURN(std::unique_ptr<http::ProxyClient> kubelets,
                         http::ProxyClient::create(kubelet_client));
  s.pod_logs = std::make_unique<PodLogs>(*s.registry, std::move(kubelets));
  http::UpgradeTarget kubelet_tls;
  kubelet_tls.ca_file = kubelet_client.ca_file;
  kubelet_tls.cert_file = kubelet_client.cert_file;
  kubelet_tls.key_file = kubelet_client.key_file;
  s.pod_streams = std::make_unique<PodStreams>(*s.registry, std::move(kubelet_tls));
  s.discovery = std::make_unique<Discovery>(*s.schema);
  s.openapi = std::make_unique<api::OpenApi>(*s.schema);

  http::HttpServerOptions http_options;
  http_options.bind_address = s.options.bind_address;
  http_options.port = s.options.https_port;
  http_options.cert_file = tls.paths.server_cert;
  http_options.key_file = tls.paths.server_key;
  http_options.client_ca_file = tls.paths.ca_cert;
  http_options.worker_threads = s.options.worker_threads;
  http_options.long_running = [](const Request& req) {
    return req.flag("watch") || req.path.find("/watch/") != std::string::npos ||
           req.flag("follow") || req.path.ends_with("/exec") || req.path.ends_with("/attach") ||
           req.path.ends_with("/portforward") || req.path.ends_with("/proxy");
  };
  Impl* self = impl.get();
  s.server = std::make_unique<http::HttpServer>(
      http_options, [self](Request& req, Responder& r) { self->handle(req, r); },
      [self](const ssl_st* tls_conn, std::string_view authorization, UserInfo* user) {
        AuthnResult result = self->authenticator->authenticate_connection(tls_conn, authorization);
        if (result.authenticated()) *user = std::move(result.user);
        return result.authenticated();
      });
  SKIFF_RETURN_IF_ERROR(s.server->start());

  Kubeconfig kc;
  kc.server = "https://127.0.0.1:" + std::to_string(s.server->port());
  SKIFF_ASSIGN_OR_RETURN(kc.certificate_authority_data, pki::read_file(tls.paths.ca_cert));
  SKIFF_ASSIGN_OR_RETURN(kc.client_certificate_data, pki::read_file(tls.paths.admin_cert));
  SKIFF_ASSIGN_OR_RETURN(kc.client_key_data, pki::read_file(tls.paths.admin_key));
  s.kubeconfig_path = dir + "/admin.kubeconfig";
  SKIFF_RETURN_IF_ERROR(write_kubeconfig(s.kubeconfig_path, kc));

  SKIFF_RETURN_IF_ERROR(s.bootstrap());
  s.ready = true;
  SKIFF_LOG_INFO("API server listening on {}:{}", s.options.bind_address, s.server->port());
  return std::unique_ptr<ApiServer>(new ApiServer(std::move(impl)));
}

std::string ApiServer::advertise_address() const {
  return resolve_advertise_address(impl_->options);
}

int ApiServer::port() const {
  return impl_->server->port();
}

const std::string& ApiServer::admin_kubeconfig() const {
  return impl_->kubeconfig_path;
}

void ApiServer::stop() {
  if (!impl_) return;
  if (impl_->registry) impl_->registry->shutdown();
  // Log relays write to the server's connections: they end before it stops.
  if (impl_->pod_logs) impl_->pod_logs->stop();
  if (impl_->server) impl_->server->stop();
}

}  // namespace skiff::apiserver
