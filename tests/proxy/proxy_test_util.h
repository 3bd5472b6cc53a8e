// Fixtures shared by the proxy backend tests: a typical service port, and a test base that runs
// the suite in a network namespace of its own (the host's rules are never touched).
// Thread-safety: test-thread only.
#pragma once

#include <gtest/gtest.h>
#include <sched.h>

#include <set>
#include <string>

#include "proxy/model.h"

namespace skiff::proxy::testing {

// default/web port "http" 80/TCP at 10.43.0.20, with `endpoints` ready endpoints
// 10.42.0.10, .11, ... on port 8080.
inline ServicePort web_port(int endpoints) {
  ServicePort sp;
  sp.ns = "default";
  sp.service = "web";
  sp.port_name = "http";
  sp.protocol = "tcp";
  sp.cluster_ip = "10.43.0.20";
  sp.port = 80;
  for (int i = 0; i < endpoints; ++i) {
    Endpoint e;
    e.ip = "10.42.0." + std::to_string(10 + i);
    e.port = 8080;
    sp.endpoints.push_back(e);
  }
  return sp;
}

// The incremental step the kernel tests of both backends take from their starting state:
// default/web scales to three endpoints and drops its affinity, default/empty (UDP at
// 10.43.0.21) gets one endpoint, default/local goes. Returns the Service keys that changed.
inline std::set<std::string> scale_fill_and_delete(ProxyState& state) {
  state["default/web"][0].endpoints.push_back(web_port(3).endpoints[2]);
  state["default/web"][0].affinity_timeout_seconds = 0;
  ServicePort empty = web_port(1);
  empty.service = "empty";
  empty.protocol = "udp";
  empty.cluster_ip = "10.43.0.21";
  state["default/empty"] = {empty};
  state.erase("default/local");
  return {"default/web", "default/empty", "default/local"};
}

// A suite whose process moves into a fresh network namespace first (needs CAP_SYS_ADMIN;
// skipped otherwise). The namespace goes away with the process.
template <typename Base = ::testing::Test>
class OwnNetns : public Base {
 protected:
  static void SetUpTestSuite() { in_own_netns_ = ::unshare(CLONE_NEWNET) == 0; }
  void SetUp() override {
    if (!in_own_netns_) GTEST_SKIP() << "needs CAP_SYS_ADMIN for a network namespace";
  }
  static inline bool in_own_netns_ = false;
};

}  // namespace skiff::proxy::testing
