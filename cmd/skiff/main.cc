// skiff: one binary, one subcommand per component.

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <semaphore>

#include "apiserver/apiserver.h"
#include "base/log.h"
#include "base/version.h"

namespace {

std::binary_semaphore g_stop{0};

void on_signal(int) {
  g_stop.release();
}

struct ServerFlags {
  skiff::apiserver::ApiServerOptions api;
  bool disable_agent = false;
};

void add_server_flags(CLI::App* cmd, ServerFlags& f) {
  auto& o = f.api;
  cmd->add_option("--data-dir", o.data_dir, "State directory")->capture_default_str();
  cmd->add_option("--bind-address", o.bind_address, "Address to serve HTTPS on")
      ->capture_default_str();
  cmd->add_option("--https-port", o.https_port, "HTTPS port (0 picks a free one)")
      ->capture_default_str();
  cmd->add_option("--tls-san", o.tls_sans, "Extra DNS name or IP for the serving certificate")
      ->delimiter(',');
  cmd->add_option("--token-auth-file", o.token_auth_file,
                  "Bearer tokens: CSV lines token,user,uid,\"group1,group2\"");
  cmd->add_option("--service-cidr", o.service_cidr, "Service IP range")->capture_default_str();
  cmd->add_option("--event-ttl", o.event_ttl_seconds,
                  "Seconds an Event is kept after its last update")
      ->capture_default_str();
  cmd->add_option("--store", o.store.backend, "Store backend: embedded or etcd")
      ->capture_default_str();
  cmd->add_option("--etcd-servers", o.store.etcd_endpoints, "etcd client URLs (--store etcd)")
      ->delimiter(',');
}

int run_apiserver(ServerFlags& flags) {
  auto server = skiff::apiserver::ApiServer::start(flags.api);
  if (!server.is_ok()) {
    std::fprintf(stderr, "skiff: %s\n", server.status().message().c_str());
    return 1;
  }
  std::printf("skiff is ready. To use kubectl:\n  export KUBECONFIG=%s\n",
              server.value()->admin_kubeconfig().c_str());
  std::fflush(stdout);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  g_stop.acquire();
  SKIFF_LOG_INFO("shutting down");
  server.value()->stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"skiff: a Kubernetes-compatible container orchestrator"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error");

  auto* version = app.add_subcommand("version", "Print the version");

  ServerFlags server_flags;
  auto* server = app.add_subcommand(
      "server", "Run the control plane (API server with its store) and the components that exist");
  add_server_flags(server, server_flags);
  server->add_flag("--disable-agent", server_flags.disable_agent,
                   "Do not run a node agent in this process");

  ServerFlags apiserver_flags;
  auto* apiserver = app.add_subcommand("apiserver", "Run the API server alone");
  add_server_flags(apiserver, apiserver_flags);

  CLI11_PARSE(app, argc, argv);
  if (!skiff::set_log_level(log_level)) {
    std::fprintf(stderr, "skiff: unknown log level \"%s\"\n", log_level.c_str());
    return 2;
  }

  if (*version) {
    std::printf("skiff %s (commit %s), Kubernetes API v%s.%s\n", skiff::kSkiffVersion,
                skiff::kGitCommit, skiff::kKubernetesMajor, skiff::kKubernetesMinor);
    return 0;
  }
  if (*server) return run_apiserver(server_flags);
  if (*apiserver) return run_apiserver(apiserver_flags);
  return 0;
}
