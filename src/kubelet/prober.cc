#include "kubelet/prober.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "base/log.h"
#include "kubelet/grpc_health.h"
#include "kubelet/json_fields.h"

namespace skiff::kubelet {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

}  // namespace

const char* probe_type_name(ProbeType t) {
  switch (t) {
    case ProbeType::kLiveness:
      return "Liveness";
    case ProbeType::kReadiness:
      return "Readiness";
    case ProbeType::kStartup:
      return "Startup";
  }
  return "?";
}

namespace {

const char* probe_field(ProbeType t) {
  switch (t) {
    case ProbeType::kLiveness:
      return "livenessProbe";
    case ProbeType::kReadiness:
      return "readinessProbe";
    case ProbeType::kStartup:
      return "startupProbe";
  }
  return "";
}

// A port given as a number or as the name of one of the container's ports.
int resolve_port(const Json& port, const Json& container) {
  if (port.is_number_integer()) return port.get<int>();
  if (port.is_string()) {
    std::string name = port.get<std::string>();
    for (const Json& p : member(container, "ports")) {
      if (member(p, "name") == name) return int_of(p, "containerPort", -1);
    }
    char* end = nullptr;
    long n = std::strtol(name.c_str(), &end, 10);
    if (end != nullptr && *end == '\0' && n > 0) return static_cast<int>(n);
  }
  return -1;
}

// Error text as Go spells it ("connection refused"), which upstream's probe messages carry.
std::string errno_text(int err) {
  std::string text = strerror(err);
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

class Socket {
 public:
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }

  // Connects within the deadline; "" on success, else the reason.
  std::string connect(const std::string& host, int port, Clock::time_point deadline) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) return "invalid host " + host;
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd_ < 0) return std::string("socket: ") + strerror(errno);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
        errno != EINPROGRESS) {
      return "dial tcp " + host + ":" + std::to_string(port) + ": " + errno_text(errno);
    }
    if (!wait(POLLOUT, deadline)) {
      return "dial tcp " + host + ":" + std::to_string(port) + ": i/o timeout";
    }
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      return "dial tcp " + host + ":" + std::to_string(port) + ": connect: " + errno_text(err);
    }
    int flags = ::fcntl(fd_, F_GETFL);
    ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
    return "";
  }

  bool wait(short events, Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, events, 0};
    return ::poll(&p, 1, static_cast<int>(left)) == 1;
  }

 private:
  int fd_ = -1;
};

ProbeOutcome http_probe(const Json& action, const Json& container, const std::string& pod_ip,
                        Clock::time_point deadline) {
  std::string host =
      member(action, "host").is_string() ? action["host"].get<std::string>() : pod_ip;
  int port = resolve_port(member(action, "port"), container);
  if (port <= 0) return {false, "invalid port " + member(action, "port").dump()};
  std::string path = member(action, "path").is_string() ? action["path"].get<std::string>() : "/";
  if (path.empty() || path.front() != '/') path = "/" + path;
  bool https = member(action, "scheme") == "HTTPS";
  std::string url =
      std::string(https ? "https" : "http") + "://" + host + ":" + std::to_string(port) + path;
  Socket sock;
  if (std::string err = sock.connect(host, port, deadline); !err.empty()) {
    return {false, "Get \"" + url + "\": " + err};
  }
  timeval tv{};
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  tv.tv_sec = std::max<long>(0, left / 1000);
  tv.tv_usec = std::max<long>(1000, (left % 1000) * 1000);
  ::setsockopt(sock.fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(sock.fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

  std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + host + ":" + std::to_string(port) +
                        "\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n";
  for (const Json& h : member(action, "httpHeaders")) {
    if (member(h, "name").is_string() && member(h, "value").is_string()) {
      request += h["name"].get<std::string>() + ": " + h["value"].get<std::string>() + "\r\n";
    }
  }
  request += "\r\n";

  std::string response;
  char buf[4096];
  if (https) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL* ssl = ctx ? SSL_new(ctx) : nullptr;
    bool ok = ssl != nullptr && SSL_set_fd(ssl, sock.fd()) == 1 && SSL_connect(ssl) == 1 &&
              SSL_write(ssl, request.data(), static_cast<int>(request.size())) > 0;
    while (ok && response.find("\r\n") == std::string::npos) {
      int n = SSL_read(ssl, buf, sizeof(buf));
      if (n <= 0) break;
      response.append(buf, n);
    }
    if (ssl) SSL_free(ssl);
    if (ctx) SSL_CTX_free(ctx);
  } else if (::send(sock.fd(), request.data(), request.size(), MSG_NOSIGNAL) ==
             static_cast<ssize_t>(request.size())) {
    while (response.find("\r\n") == std::string::npos) {
      ssize_t n = ::recv(sock.fd(), buf, sizeof(buf), 0);
      if (n <= 0) break;
      response.append(buf, static_cast<size_t>(n));
    }
  }
  // "HTTP/1.1 200 OK"
  if (response.size() < 12 || response.compare(0, 5, "HTTP/") != 0) {
    return {false,
            "Get \"" + url + "\": " +
                (Clock::now() >= deadline ? "context deadline exceeded" : "no HTTP response")};
  }
  int code = std::atoi(response.c_str() + response.find(' ') + 1);
  if (code >= 200 && code < 400) return {true, ""};
  return {false, "HTTP probe failed with statuscode: " + std::to_string(code)};
}

}  // namespace

ProbeOutcome run_probe(cri::RuntimeService& runtime, const Json& probe, const Json& container,
                       const std::string& container_id, const std::string& pod_ip) {
  int timeout = std::max(1, int_of(probe, "timeoutSeconds", 1));
  auto deadline = Clock::now() + std::chrono::seconds(timeout);
  if (probe.contains("exec")) {
    std::vector<std::string> cmd;
    for (const Json& c : member(probe["exec"], "command")) {
      if (c.is_string()) cmd.push_back(c.get<std::string>());
    }
    auto result = runtime.exec_sync(container_id, cmd, timeout);
    if (!result.is_ok()) {
      if (result.status().code() == StatusCode::kDeadlineExceeded) {
        return {false, "command timed out: \"" + (cmd.empty() ? "" : cmd[0]) +
                           "\" timed out after " + std::to_string(timeout) + "s"};
      }
      return {false, result.status().message()};
    }
    if (result->exit_code() == 0) return {true, ""};
    return {false, result->stdout() + result->stderr()};
  }
  if (probe.contains("tcpSocket")) {
    const Json& action = probe["tcpSocket"];
    std::string host =
        member(action, "host").is_string() ? action["host"].get<std::string>() : pod_ip;
    int port = resolve_port(member(action, "port"), container);
    if (port <= 0) return {false, "invalid port " + member(action, "port").dump()};
    Socket sock;
    std::string err = sock.connect(host, port, deadline);
    return {err.empty(), err};
  }
  if (probe.contains("httpGet")) return http_probe(probe["httpGet"], container, pod_ip, deadline);
  if (probe.contains("grpc")) {
    const Json& action = probe["grpc"];
    const Json& port = member(action, "port");
    if (!port.is_number_integer()) return {false, "invalid port " + port.dump()};
    std::string service =
        member(action, "service").is_string() ? action["service"].get<std::string>() : "";
    HealthCheckOutcome out =
        check_grpc_health(pod_ip, port.get<int>(), service, std::chrono::seconds(timeout));
    return {out.serving, out.message};
  }
  return {false, "probe has no action"};
}

Prober::Prober(cri::RuntimeService& runtime, Callbacks callbacks, int workers)
    : runtime_(runtime),
      callbacks_(std::move(callbacks)),
      queue_(milliseconds(100), milliseconds(10000)) {
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { run_loop(); });
}

Prober::~Prober() {
  queue_.shut_down();
  for (auto& t : threads_) t.join();
}

void Prober::ensure(const Json& pod, const Json& container, const std::string& container_id,
                    const std::string& pod_ip) {
  std::string uid = member(pod, "metadata").value("uid", "");
  std::string name = container.value("name", "");
  // One lock for all three: a readiness or liveness worker queued before the startup worker
  // exists would probe before the startup probe gates it.
  std::lock_guard lock(mu_);
  for (ProbeType type : {ProbeType::kLiveness, ProbeType::kReadiness, ProbeType::kStartup}) {
    const Json& probe = member(container, probe_field(type));
    std::string key = uid + "/" + name + "/" + probe_field(type);
    if (!probe.is_object()) {
      workers_.erase(key);
      continue;
    }
    auto it = workers_.find(key);
    if (it != workers_.end() && it->second.container_id == container_id &&
        it->second.probe == probe) {
      it->second.pod = pod;
      continue;
    }
    Worker w;
    w.pod = pod;
    w.container = container;
    w.probe = probe;
    w.container_id = container_id;
    w.pod_ip = pod_ip;
    w.type = type;
    auto delay = std::chrono::seconds(std::max(0, int_of(probe, "initialDelaySeconds", 0)));
    w.first_run = Clock::now() + delay;
    workers_[key] = std::move(w);
    queue_.add_after(key, std::chrono::duration_cast<milliseconds>(delay));
  }
}

void Prober::retain(const std::string& uid, const std::vector<std::string>& keep) {
  std::lock_guard lock(mu_);
  std::string prefix = uid + "/";
  for (auto it = workers_.lower_bound(prefix);
       it != workers_.end() && it->first.rfind(prefix, 0) == 0;) {
    std::string name =
        it->first.substr(prefix.size(), it->first.find('/', prefix.size()) - prefix.size());
    if (std::find(keep.begin(), keep.end(), name) == keep.end()) {
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

void Prober::forget_pod(const std::string& uid) {
  retain(uid, {});
}

bool Prober::ready(const std::string& uid, const std::string& container) const {
  std::lock_guard lock(mu_);
  auto it = workers_.find(uid + "/" + container + "/readinessProbe");
  if (it == workers_.end()) return true;
  return it->second.result == 1;
}

bool Prober::started(const std::string& uid, const std::string& container) const {
  std::lock_guard lock(mu_);
  auto it = workers_.find(uid + "/" + container + "/startupProbe");
  if (it == workers_.end()) return true;
  return it->second.result == 1;
}

std::map<std::string, bool> Prober::readiness(const std::string& uid) const {
  std::map<std::string, bool> out;
  std::lock_guard lock(mu_);
  std::string prefix = uid + "/";
  for (auto it = workers_.lower_bound(prefix);
       it != workers_.end() && it->first.rfind(prefix, 0) == 0; ++it) {
    const std::string& key = it->first;
    std::string name = key.substr(prefix.size(), key.find('/', prefix.size()) - prefix.size());
    if (key.ends_with("/readinessProbe")) {
      out[name] = out.count(name) ? out[name] && it->second.result == 1 : it->second.result == 1;
    } else if (key.ends_with("/startupProbe") && it->second.result != 1) {
      out[name] = false;  // not started: not ready either
    }
  }
  return out;
}

void Prober::run_loop() {
  while (auto key = queue_.get()) {
    probe_once(*key);
    queue_.done(*key);
  }
}

void Prober::probe_once(const std::string& key) {
  Worker w;
  {
    std::lock_guard lock(mu_);
    auto it = workers_.find(key);
    if (it == workers_.end()) return;
    w = it->second;
    // Liveness and readiness wait for the startup probe.
    if (w.type != ProbeType::kStartup) {
      std::string uid = member(w.pod, "metadata").value("uid", "");
      auto startup = workers_.find(uid + "/" + w.container.value("name", "") + "/startupProbe");
      if (startup != workers_.end() && startup->second.result != 1) {
        queue_.add_after(key,
                         milliseconds(1000 * std::max(1, int_of(w.probe, "periodSeconds", 10))));
        return;
      }
    }
  }
  ProbeOutcome outcome = run_probe(runtime_, w.probe, w.container, w.container_id, w.pod_ip);
  bool flipped = false;
  bool failed_for_good = false;
  int period = std::max(1, int_of(w.probe, "periodSeconds", 10));
  {
    std::lock_guard lock(mu_);
    auto it = workers_.find(key);
    if (it == workers_.end() || it->second.container_id != w.container_id) return;
    Worker& live = it->second;
    if (outcome.success) {
      live.failures = 0;
      ++live.successes;
      int threshold =
          w.type == ProbeType::kReadiness ? std::max(1, int_of(w.probe, "successThreshold", 1)) : 1;
      if (live.successes >= threshold && live.result != 1) {
        live.result = 1;
        flipped = true;
      }
    } else {
      live.successes = 0;
      ++live.failures;
      if (live.failures >= std::max(1, int_of(w.probe, "failureThreshold", 3)) &&
          live.result != 0) {
        live.result = 0;
        flipped = true;
        failed_for_good = w.type != ProbeType::kReadiness;
      }
    }
  }
  std::string uid = member(w.pod, "metadata").value("uid", "");
  std::string name = w.container.value("name", "");
  if (!outcome.success && callbacks_.on_failure) {
    callbacks_.on_failure(w.pod, name, w.type, outcome.message, failed_for_good);
  }
  if (!outcome.success) {
    SKIFF_LOG_DEBUG("kubelet: {} probe of {}/{} container {} failed: {}", probe_type_name(w.type),
                    member(w.pod, "metadata").value("namespace", ""),
                    member(w.pod, "metadata").value("name", ""), name, outcome.message);
  }
  if (failed_for_good) {
    int64_t grace =
        member(w.probe, "terminationGracePeriodSeconds").is_number_integer()
            ? w.probe["terminationGracePeriodSeconds"].get<int64_t>()
        : member(member(w.pod, "spec"), "terminationGracePeriodSeconds").is_number_integer()
            ? w.pod["spec"]["terminationGracePeriodSeconds"].get<int64_t>()
            : 30;
    Status s = runtime_.stop_container(w.container_id, grace);
    if (!s.is_ok())
      SKIFF_LOG_WARN("kubelet: stopping unhealthy container {}: {}", name, s.to_string());
    std::lock_guard lock(mu_);
    workers_.erase(key);  // the restarted container gets fresh probes
  } else {
    queue_.add_after(key, milliseconds(1000 * period));
  }
  if (flipped && callbacks_.on_change) callbacks_.on_change(uid);
}

}  // namespace skiff::kubelet
