#pragma once

// Real etcd processes (Debian's etcd-server) on free loopback ports, for tests and benchmarks.
// Members are started as children and killed by PID; data lives under a directory the caller
// owns.

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace skiff::testing {

class EtcdCluster {
 public:
  // Starts `members` etcd members under base_dir and waits until the cluster has a leader.
  static Result<std::unique_ptr<EtcdCluster>> start(int members, const std::string& base_dir);
  ~EtcdCluster();  // kills every member still running (SIGKILL, by PID) and reaps it

  // Client URLs (http://127.0.0.1:PORT), one per member, in member order.
  std::vector<std::string> client_endpoints() const;
  int size() const;
  // Index of the current leader, asked of the members still running.
  Result<int> leader_index() const;
  // SIGKILL one member and reap it.
  Status kill_member(int index);
  bool running(int index) const;

 private:
  struct Member;
  EtcdCluster() = default;
  std::vector<Member> members_;
};

}  // namespace skiff::testing
