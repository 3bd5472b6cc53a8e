#include "support/etcd_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "support/ports.h"

namespace skiff::testing {

struct EtcdCluster::Member {
  std::string name;
  std::string dir;
  int client_port = 0;
  int peer_port = 0;
  pid_t pid = -1;  // -1 once killed and reaped

  std::string client_url() const { return "http://127.0.0.1:" + std::to_string(client_port); }
  std::string peer_url() const { return "http://127.0.0.1:" + std::to_string(peer_port); }
  std::string log_path() const { return dir + "/etcd.log"; }
};

namespace {

constexpr const char* kEtcdBinary = "/usr/bin/etcd";
constexpr auto kStartTimeout = std::chrono::seconds(30);

// One HTTP/1.1 POST over a plain socket; returns the whole response (headers and body).
std::optional<std::string> http_post(int port, const std::string& path, const std::string& body) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return std::nullopt;
  }
  std::string req =
      "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
      "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nConnection: close\r\n\r\n" + body;
  size_t sent = 0;
  while (sent < req.size()) {
    ssize_t n = send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      close(fd);
      return std::nullopt;
    }
    sent += static_cast<size_t>(n);
  }
  std::string resp;
  char buf[4096];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0) {
      close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  if (!resp.starts_with("HTTP/1.1 200")) return std::nullopt;
  return resp;
}

// The JSON gateway prints uint64 fields as strings: "leader":"123".
std::string json_field(const std::string& text, const std::string& name) {
  std::string needle = "\"" + name + "\":";
  size_t pos = text.find(needle);
  if (pos == std::string::npos) return {};
  pos += needle.size();
  while (pos < text.size() && (text[pos] == '"' || text[pos] == ' ')) ++pos;
  size_t end = pos;
  while (end < text.size() && text[end] != '"' && text[end] != ',' && text[end] != '}') ++end;
  return text.substr(pos, end - pos);
}

struct MemberStatus {
  std::string member_id;
  std::string leader;
};

std::optional<MemberStatus> member_status(int client_port) {
  auto resp = http_post(client_port, "/v3/maintenance/status", "{}");
  if (!resp) return std::nullopt;
  size_t header = resp->find("\"header\"");
  if (header == std::string::npos) return std::nullopt;
  MemberStatus s;
  s.member_id = json_field(resp->substr(header), "member_id");
  s.leader = json_field(*resp, "leader");
  if (s.member_id.empty()) return std::nullopt;
  return s;
}

std::string tail_of_file(const std::string& path, size_t bytes) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

}  // namespace

Result<std::unique_ptr<EtcdCluster>> EtcdCluster::start(int members, const std::string& base_dir) {
  if (members < 1) return Status(StatusCode::kInvalidArgument, "an etcd cluster needs a member");
  if (access(kEtcdBinary, X_OK) != 0) {
    return Status(StatusCode::kFailedPrecondition,
                  std::string(kEtcdBinary) + " not found (install Debian's etcd-server)");
  }
  // One try at starting the cluster; *member_exited tells a member died during start.
  auto start_once = [&](bool* member_exited) -> Result<std::unique_ptr<EtcdCluster>> {
    std::unique_ptr<EtcdCluster> cluster(new EtcdCluster());
    std::string token = "skiff-" + std::to_string(std::random_device{}());
    std::string initial_cluster;
    for (int i = 0; i < members; ++i) {
      Member m;
      m.name = "m" + std::to_string(i);
      m.dir = base_dir + "/" + m.name;
      m.client_port = free_tcp_port();
      m.peer_port = free_tcp_port();
      std::error_code ec;
      std::filesystem::create_directories(m.dir, ec);
      if (ec) return Status(StatusCode::kInternal, "cannot create " + m.dir + ": " + ec.message());
      if (!initial_cluster.empty()) initial_cluster += ",";
      initial_cluster += m.name + "=" + m.peer_url();
      cluster->members_.push_back(std::move(m));
    }
    for (auto& m : cluster->members_) {
      std::vector<std::string> args = {
          kEtcdBinary,
          "--name=" + m.name,
          "--data-dir=" + m.dir + "/data",
          "--listen-client-urls=" + m.client_url(),
          "--advertise-client-urls=" + m.client_url(),
          "--listen-peer-urls=" + m.peer_url(),
          "--initial-advertise-peer-urls=" + m.peer_url(),
          "--initial-cluster=" + initial_cluster,
          "--initial-cluster-state=new",
          "--initial-cluster-token=" + token,
          // Quick elections keep failover tests short.
          "--heartbeat-interval=50",
          "--election-timeout=500",
          // Above skiff's own 1.5 MiB value limit, so that limit is the one tests see.
          "--max-request-bytes=8388608",
          "--logger=zap",
          "--log-outputs=stderr",
      };
      int log_fd = open(m.log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (log_fd < 0) return Status(StatusCode::kInternal, "cannot open " + m.log_path());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      pid_t parent = getpid();
      pid_t pid = fork();
      if (pid < 0) {
        close(log_fd);
        return Status(StatusCode::kInternal, "fork failed");
      }
      if (pid == 0) {
        // Child: only async-signal-safe calls from here to exec.
        // If the test process dies without running destructors, the member goes too.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd >= 0) dup2(null_fd, 0);
        dup2(log_fd, 1);
        dup2(log_fd, 2);
        execv(argv[0], argv.data());
        _exit(127);
      }
      close(log_fd);
      m.pid = pid;
    }

    // Wait until every member answers and one of them is the leader.
    auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
    while (true) {
      bool all_answer = true;
      for (size_t i = 0; i < cluster->members_.size(); ++i) {
        auto& m = cluster->members_[i];
        int wstatus = 0;
        if (waitpid(m.pid, &wstatus, WNOHANG) == m.pid) {
          m.pid = -1;
          *member_exited = true;
          return Status(StatusCode::kInternal, "etcd member " + m.name + " exited at start:\n" +
                                                   tail_of_file(m.log_path(), 2000));
        }
        if (!member_status(m.client_port)) all_answer = false;
      }
      if (all_answer && cluster->leader_index().is_ok()) break;
      if (std::chrono::steady_clock::now() > deadline) {
        std::string logs;
        for (auto& m : cluster->members_) {
          logs += "--- " + m.name + "\n" + tail_of_file(m.log_path(), 1500) + "\n";
        }
        return Status(StatusCode::kDeadlineExceeded,
                      "etcd cluster did not elect a leader within 30 s:\n" + logs);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return cluster;
  };
  // A free port can be taken by someone else before etcd binds it; a member that exits at start
  // (almost always for that reason) makes the whole cluster start again on fresh ports.
  Result<std::unique_ptr<EtcdCluster>> result = Status(StatusCode::kInternal, "not started");
  for (int attempt = 0; attempt < 3; ++attempt) {
    bool member_exited = false;
    result = start_once(&member_exited);
    if (result.is_ok() || !member_exited) break;
    for (int i = 0; i < members; ++i) {
      std::error_code ec;
      std::filesystem::remove_all(base_dir + "/m" + std::to_string(i), ec);
    }
  }
  return result;
}

EtcdCluster::~EtcdCluster() {
  for (size_t i = 0; i < members_.size(); ++i) {
    if (running(static_cast<int>(i))) (void)kill_member(static_cast<int>(i));
  }
}

std::vector<std::string> EtcdCluster::client_endpoints() const {
  std::vector<std::string> out;
  for (const auto& m : members_) out.push_back(m.client_url());
  return out;
}

int EtcdCluster::size() const {
  return static_cast<int>(members_.size());
}

Result<int> EtcdCluster::leader_index() const {
  // Only a running member that names itself leader counts: survivors keep naming a killed
  // leader until they notice it is gone.
  for (size_t i = 0; i < members_.size(); ++i) {
    const auto& m = members_[i];
    if (m.pid < 0) continue;
    auto status = member_status(m.client_port);
    if (status && !status->leader.empty() && status->leader != "0" &&
        status->leader == status->member_id) {
      return static_cast<int>(i);
    }
  }
  return Status(StatusCode::kUnavailable, "no running etcd member is the leader");
}

Status EtcdCluster::kill_member(int index) {
  if (index < 0 || index >= size()) {
    return Status(StatusCode::kInvalidArgument, "no etcd member " + std::to_string(index));
  }
  auto& m = members_[static_cast<size_t>(index)];
  if (m.pid < 0) return Status(StatusCode::kFailedPrecondition, m.name + " is not running");
  kill(m.pid, SIGKILL);
  int wstatus = 0;
  while (waitpid(m.pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  m.pid = -1;
  return Status::ok();
}

bool EtcdCluster::running(int index) const {
  return index >= 0 && index < size() && members_[static_cast<size_t>(index)].pid > 0;
}

}  // namespace skiff::testing
