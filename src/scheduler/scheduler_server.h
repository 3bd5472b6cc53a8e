#pragma once

// The scheduler as a component (kube-scheduler's main loop): informers feed the cache and the
// scheduling queue; one scheduling thread runs the algorithm pod by pod; binder threads write
// pods/binding through the API concurrently (upstream binds asynchronously too); pods that fit
// nowhere get PodScheduled=False and a FailedScheduling event, and wait in the queue for a
// cluster change. Behind a leader election Lease (kube-system/kube-scheduler).
//
// Thread-safety: run_scheduler() blocks on the calling thread until `stop` is requested.

#include <chrono>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "client/api_client.h"
#include "scheduler/framework.h"

namespace skiff::scheduler {

struct SchedulerServerOptions {
  std::string kubeconfig;
  bool leader_elect = true;
  std::string leader_elect_namespace = "kube-system";
  std::string leader_elect_name = "kube-scheduler";
  std::chrono::milliseconds lease_duration{15000};
  std::chrono::milliseconds renew_deadline{10000};
  std::chrono::milliseconds retry_period{2000};
  // Concurrent pods/binding requests.
  int bind_workers = 16;
  // 0: adaptive (upstream's default); otherwise 1..100.
  int percentage_of_nodes_to_score = 0;
  // Out-of-tree plugins (upstream's app.WithPlugin): registered under their names and enabled
  // in the profile after the in-tree plugins, before the binder.
  std::vector<std::pair<std::string, PluginFactory>> extra_plugins;
};

Status run_scheduler(const SchedulerServerOptions& options, std::stop_token stop);

// The same against an existing client, without leader election (tests use a fake API).
// Returns once `stop` is requested.
Status run_scheduler_with(client::ApiClient& api, const SchedulerServerOptions& options,
                          std::stop_token stop);

}  // namespace skiff::scheduler
