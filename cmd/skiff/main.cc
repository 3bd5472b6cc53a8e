// skiff: one binary, one subcommand per component.

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <semaphore>

#include "base/log.h"
#include "base/version.h"
#include "storage/open.h"

namespace {

std::binary_semaphore g_stop{0};

void on_signal(int) {
  g_stop.release();
}

int run_server(const std::string& data_dir, const std::string& store,
               const std::vector<std::string>& etcd_servers) {
  skiff::storage::StoreConfig config;
  config.backend = store;
  config.data_dir = data_dir;
  config.etcd_endpoints = etcd_servers;
  auto opened = skiff::storage::open_store(config);
  if (!opened.is_ok()) {
    std::fprintf(stderr, "skiff server: %s\n", opened.status().message().c_str());
    return 1;
  }
  auto revision = opened.value()->current_revision();
  SKIFF_LOG_INFO("store ({}) ready at revision {}", store, revision.is_ok() ? *revision : -1);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  g_stop.acquire();
  SKIFF_LOG_INFO("shutting down");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"skiff: a Kubernetes-compatible container orchestrator"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error");

  auto* version = app.add_subcommand("version", "Print the version");

  auto* server = app.add_subcommand("server", "Run the control plane with its store");
  std::string data_dir = "/var/lib/skiff";
  std::string store = "embedded";
  std::vector<std::string> etcd_servers;
  server->add_option("--data-dir", data_dir, "State directory")->capture_default_str();
  server->add_option("--store", store, "Store backend: embedded or etcd")->capture_default_str();
  server->add_option("--etcd-servers", etcd_servers, "etcd client URLs (with --store etcd)")
      ->delimiter(',');

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
  if (*server) return run_server(data_dir, store, etcd_servers);
  return 0;
}
