#include "kubelet/images/registry_mirror.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "base/pki.h"
#include "base/process.h"
#include "kubelet/containerd/supervisor.h"
#include "kubelet/cri/grpc_runtime.h"
#include "kubelet/images/builtin.h"
#include "kubelet/images/import.h"
#include "kubelet/images/oci_image.h"
#include "support/eventually.h"
#include "support/mounts.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::images {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;
using skiff::testing::unmount_under;

constexpr const char* kSystemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
constexpr const char* kOciManifestType = "application/vnd.oci.image.manifest.v1+json";
constexpr const char* kOciIndexType = "application/vnd.oci.image.index.v1+json";

long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - t).count();
}

std::string random_suffix() {
  std::random_device rd;
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x", rd());
  return buf;
}

// ---- A small HTTP/1.1 client on raw sockets, so the server is checked byte for byte. ----

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  // The first error code of a registry error body.
  std::string error_code() const {
    Json doc = Json::parse(body, nullptr, false);
    if (!doc.is_object() || !doc.contains("errors") || !doc["errors"].is_array() ||
        doc["errors"].empty()) {
      return "";
    }
    return doc["errors"][0].value("code", "");
  }
};

// A socket made in network namespace `netns` ("" for the test's own); sockets keep the namespace
// they were made in whichever thread uses them.
int tcp_socket_in(const std::string& netns) {
  if (netns.empty()) return ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int fd = -1;
  std::thread t([&] {
    int ns = ::open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) return;
    if (::setns(ns, CLONE_NEWNET) == 0) fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ::close(ns);
  });
  t.join();
  return fd;
}

class HttpConnection {
 public:
  explicit HttpConnection(int port, const std::string& netns = "") {
    fd_ = tcp_socket_in(netns);
    if (fd_ < 0) return;
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) close();
  }
  ~HttpConnection() { close(); }
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  bool connected() const { return fd_ >= 0; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool send_raw(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  Result<HttpResponse> request(const std::string& method, const std::string& target,
                               const std::map<std::string, std::string>& headers = {},
                               bool keep_alive = false) {
    if (fd_ < 0) return error(StatusCode::kUnavailable, "not connected");
    std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
    if (!keep_alive) req += "Connection: close\r\n";
    req += "\r\n";
    if (!send_raw(req)) return error(StatusCode::kUnavailable, "send failed");
    return read_response(method == "HEAD");
  }

  // Reads one response; the body by Content-Length, or to the end of the connection.
  Result<HttpResponse> read_response(bool head = false) {
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return error(StatusCode::kUnavailable, "connection ended in the header");
    }
    HttpResponse r;
    std::istringstream lines(buffer_.substr(0, end));
    std::string line;
    std::getline(lines, line);
    if (line.rfind("HTTP/1.1 ", 0) != 0) return error(StatusCode::kInternal, "bad status line");
    r.status = std::stoi(line.substr(9, 3));
    while (std::getline(lines, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      size_t value = line.find_first_not_of(' ', colon + 1);
      r.headers[name] = value == std::string::npos ? "" : line.substr(value);
    }
    buffer_.erase(0, end + 4);
    if (head) return r;
    if (r.headers.contains("content-length")) {
      size_t length = std::stoull(r.headers["content-length"]);
      while (buffer_.size() < length) {
        if (!fill()) return error(StatusCode::kUnavailable, "connection ended in the body");
      }
      r.body = buffer_.substr(0, length);
      buffer_.erase(0, length);
    } else {
      while (fill()) {
      }
      r.body = std::move(buffer_);
      buffer_.clear();
    }
    return r;
  }

  // True when the server closed the connection (EOF) within the receive timeout.
  bool closed_by_peer() {
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

 private:
  bool fill() {
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    buffer_.append(buf, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buffer_;
};

Result<HttpResponse> http(int port, const std::string& method, const std::string& target,
                          const std::map<std::string, std::string>& headers = {},
                          const std::string& netns = "") {
  HttpConnection c(port, netns);
  if (!c.connected()) return error(StatusCode::kUnavailable, "connect failed");
  return c.request(method, target, headers);
}

std::string read_all(const std::string& path) {
  auto data = pki::read_file(path);
  return data.is_ok() ? *data : "";
}

// Everything the mirror reported answering, in order.
class RequestLog {
 public:
  void add(const MirrorRequest& r) {
    std::lock_guard lock(mu_);
    requests_.push_back(r);
  }
  std::vector<MirrorRequest> all() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  std::vector<MirrorRequest> matching(const std::string& target_part) const {
    std::vector<MirrorRequest> out;
    for (const auto& r : all()) {
      if (r.target.find(target_part) != std::string::npos) out.push_back(r);
    }
    return out;
  }
  // The first request whose target contains `target_part`, made with `method` and answered with
  // `status`, waiting a little for it: the mirror reports a request after its last byte is
  // written, so the client can be a step ahead of the report.
  std::optional<MirrorRequest> wait_for(const std::string& target_part, const std::string& method,
                                        int status) const {
    std::optional<MirrorRequest> found;
    testing::eventually(
        [&] {
          for (const MirrorRequest& r : matching(target_part)) {
            if (r.method == method && r.status == status) {
              found = r;
              return true;
            }
          }
          return false;
        },
        seconds(5));
    return found;
  }
  void print(const std::string& title) const {
    std::printf("[ figures  ] %s: %zu requests to the mirror\n", title.c_str(), all().size());
    for (const auto& r : all()) {
      std::printf(
          "[ figures  ]   %s %s -> %d, %llu body bytes, %lld us; User-Agent: %s; Accept: %s%s%s\n",
          r.method.c_str(), r.target.c_str(), r.status,
          static_cast<unsigned long long>(r.body_bytes), static_cast<long long>(r.duration.count()),
          r.user_agent.c_str(), r.accept.c_str(),
          r.range.empty() ? "" : "; Range: ", r.range.c_str());
    }
  }

 private:
  mutable std::mutex mu_;
  std::vector<MirrorRequest> requests_;
};

// ---- The mirror over a content store made by the test, with a resolver of its own. ----

class RegistryMirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<testing::TempDir>("skiff-mirror");
    content_ = dir_->sub("content");
    std::filesystem::create_directories(content_ + "/blobs/sha256");

    // A layer of a few chunks and an odd size, its config, a manifest naming both, an index
    // without a mediaType (OCI allows that), and a JSON blob that is no manifest.
    std::mt19937 gen(7);
    layer_.resize(3 * 256 * 1024 + 12345);
    for (char& c : layer_) c = static_cast<char>(gen());
    layer_digest_ = put(layer_);
    config_ = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}})";
    config_digest_ = put(config_);
    manifest_ = Json{{"schemaVersion", 2},
                     {"mediaType", kOciManifestType},
                     {"config",
                      {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                       {"digest", config_digest_},
                       {"size", config_.size()}}},
                     {"layers",
                      {{{"mediaType", "application/vnd.oci.image.layer.v1.tar"},
                        {"digest", layer_digest_},
                        {"size", layer_.size()}}}}}
                    .dump();
    manifest_digest_ = put(manifest_);
    // Manifests that differ from it only in an annotation: one listed by the index (another
    // platform's), one listed by an index inside an index, one no served image names.
    auto variant = [&](const std::string& note) {
      Json m = Json::parse(manifest_);
      m["annotations"] = {{"skiff.test/variant", note}};
      return m.dump();
    };
    listed_manifest_digest_ = put(variant("listed"));
    nested_manifest_digest_ = put(variant("nested"));
    unserved_manifest_digest_ = put(variant("unserved"));
    index_ =
        Json{
            {"schemaVersion", 2},
            {"manifests",
             {{{"mediaType", kOciManifestType},
               {"digest", manifest_digest_},
               {"size", manifest_.size()}},
              {{"mediaType", kOciManifestType}, {"digest", listed_manifest_digest_}, {"size", 1}}}}}
            .dump();
    index_digest_ = put(index_);
    std::string inner = Json{
        {"schemaVersion", 2},
        {"mediaType", kOciIndexType},
        {"manifests",
         {{{"mediaType", kOciManifestType},
           {"digest", nested_manifest_digest_},
           {"size", 1}}}}}.dump();
    inner_index_digest_ = put(inner);
    outer_index_digest_ = put(Json{
        {"schemaVersion", 2},
        {"mediaType", kOciIndexType},
        {"manifests",
         {{{"mediaType", kOciIndexType}, {"digest", inner_index_digest_}, {"size", inner.size()}}}}}
                                  .dump());
    other_json_digest_ = put(R"({"schemaVersion":2,"hello":"world"})");
    missing_digest_ = "sha256:" + std::string(64, '0');
  }

  void TearDown() override {
    if (mirror_) mirror_->stop();
    mirror_.reset();
    dir_.reset();
  }

  std::string put(const std::string& data) {
    std::string digest = sha256_digest(data);
    std::ofstream(content_ + "/blobs/sha256/" + digest.substr(7), std::ios::binary) << data;
    return digest;
  }

  RegistryMirrorOptions options() {
    RegistryMirrorOptions o;
    o.content_dir = content_;
    o.hosts_dir = dir_->sub("certs.d");
    // What the resolver serves; the pulled image is on the node but was not imported, so it
    // resolves to nothing (containerd_tag_resolver's rule).
    o.resolve_tag.resolve =
        [this](const std::string& ref) -> Result<std::optional<ManifestDescriptor>> {
      {
        std::lock_guard lock(mu_);
        resolved_.push_back(ref);
      }
      if (ref == "docker.io/library/busybox:latest") {
        return std::optional<ManifestDescriptor>(
            ManifestDescriptor{kOciManifestType, manifest_digest_});
      }
      if (ref == "registry.k8s.io/pause:3.9") {
        return std::optional<ManifestDescriptor>(ManifestDescriptor{"", index_digest_});
      }
      if (ref == "docker.io/library/gone:latest") {
        return std::optional<ManifestDescriptor>(
            ManifestDescriptor{kOciManifestType, missing_digest_});
      }
      if (ref == "docker.io/library/nested:latest") {
        return std::optional<ManifestDescriptor>(ManifestDescriptor{"", outer_index_digest_});
      }
      if (ref == "docker.io/library/broken:latest") {
        return error(StatusCode::kUnavailable, "containerd is restarting");
      }
      return std::optional<ManifestDescriptor>();
    };
    o.resolve_tag.targets = [this]() -> Result<std::vector<ManifestDescriptor>> {
      {
        std::lock_guard lock(mu_);
        ++targets_calls_;
        if (targets_error_) return error(StatusCode::kUnavailable, "containerd is restarting");
      }
      std::vector<ManifestDescriptor> targets = {{kOciManifestType, manifest_digest_},
                                                 {"", index_digest_},
                                                 {kOciManifestType, missing_digest_},
                                                 {"", outer_index_digest_}};
      // Image records whose target is no manifest at all: still never served as one.
      for (const std::string& d : {layer_digest_, config_digest_, other_json_digest_}) {
        targets.push_back({"", d});
      }
      return targets;
    };
    o.on_request = [this](const MirrorRequest& r) { log_.add(r); };
    return o;
  }

  void start(RegistryMirrorOptions o) {
    mirror_ = std::make_unique<RegistryMirror>(std::move(o));
    Status s = mirror_->start();
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    port_ = mirror_->port();
    ASSERT_GT(port_, 0);
  }

  std::vector<std::string> resolved() {
    std::lock_guard lock(mu_);
    return resolved_;
  }

  HttpResponse get(const std::string& target, const std::map<std::string, std::string>& h = {}) {
    auto r = http(port_, "GET", target, h);
    EXPECT_TRUE(r.is_ok()) << target << ": " << r.status().to_string();
    return r.is_ok() ? *r : HttpResponse{};
  }
  HttpResponse head(const std::string& target) {
    auto r = http(port_, "HEAD", target);
    EXPECT_TRUE(r.is_ok()) << target << ": " << r.status().to_string();
    return r.is_ok() ? *r : HttpResponse{};
  }

  std::unique_ptr<testing::TempDir> dir_;
  std::string content_;
  std::string layer_, config_, manifest_, index_;
  std::string layer_digest_, config_digest_, manifest_digest_, index_digest_, other_json_digest_,
      missing_digest_;
  std::string listed_manifest_digest_, nested_manifest_digest_, unserved_manifest_digest_,
      inner_index_digest_, outer_index_digest_;
  std::unique_ptr<RegistryMirror> mirror_;
  int port_ = 0;
  RequestLog log_;
  std::mutex mu_;
  std::vector<std::string> resolved_;
  int targets_calls_ = 0;
  bool targets_error_ = false;
};

TEST_F(RegistryMirrorTest, AnswersTheVersionCheck) {
  start(options());
  for (const char* target : {"/v2/", "/v2"}) {
    HttpResponse r = get(target);
    EXPECT_EQ(r.status, 200) << target;
    EXPECT_EQ(r.body, "{}");
    EXPECT_EQ(r.header("docker-distribution-api-version"), "registry/2.0");
    EXPECT_EQ(r.header("content-type"), "application/json");
  }
  EXPECT_EQ(mirror_->url(), "http://127.0.0.1:" + std::to_string(port_));
}

TEST_F(RegistryMirrorTest, WritesHostsTomlAndRemovesItOnStop) {
  start(options());
  std::string file = dir_->sub("certs.d/_default/hosts.toml");
  std::string toml = read_all(file);
  EXPECT_EQ(toml, render_mirror_hosts_toml(mirror_->url()));
  EXPECT_NE(toml.find("[host.\"http://127.0.0.1:" + std::to_string(port_) + "\"]"),
            std::string::npos)
      << toml;
  EXPECT_NE(toml.find("capabilities = [\"pull\", \"resolve\"]"), std::string::npos) << toml;
  EXPECT_EQ(toml.find("server"), std::string::npos) << toml;  // the registry itself comes next
  EXPECT_EQ(mirror_->hosts_dir(), dir_->sub("certs.d"));

  EXPECT_EQ(mirror_->start().code(), StatusCode::kFailedPrecondition);
  mirror_->stop();
  EXPECT_FALSE(std::filesystem::exists(file));
  EXPECT_FALSE(http(port_, "GET", "/v2/").is_ok());  // nothing listens any more
  mirror_->stop();                                   // idempotent
}

TEST_F(RegistryMirrorTest, RefusesBadOptionsAndABusyPortWithoutWritingAnything) {
  RegistryMirrorOptions no_content = options();
  no_content.content_dir = "";
  EXPECT_EQ(RegistryMirror(no_content).start().code(), StatusCode::kInvalidArgument);
  RegistryMirrorOptions bad_address = options();
  bad_address.bind_address = "not-an-address";
  EXPECT_EQ(RegistryMirror(bad_address).start().code(), StatusCode::kInvalidArgument);
  RegistryMirrorOptions bad_namespace = options();
  bad_namespace.network_namespace = dir_->sub("no-such-netns");
  EXPECT_EQ(RegistryMirror(bad_namespace).start().code(), StatusCode::kInternal);

  start(options());
  RegistryMirrorOptions same_port = options();
  same_port.port = port_;
  same_port.hosts_dir = dir_->sub("other.d");
  RegistryMirror second(same_port);
  EXPECT_EQ(second.start().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(std::filesystem::exists(dir_->sub("other.d/_default/hosts.toml")));
}

TEST_F(RegistryMirrorTest, ResolvesTagsAndServesTheManifest) {
  start(options());
  const std::string target = "/v2/library/busybox/manifests/latest?ns=docker.io";
  HttpResponse h = head(target);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.header("content-type"), kOciManifestType);
  EXPECT_EQ(h.header("docker-content-digest"), manifest_digest_);
  EXPECT_EQ(h.header("content-length"), std::to_string(manifest_.size()));
  EXPECT_EQ(h.header("docker-distribution-api-version"), "registry/2.0");

  HttpResponse g = get(target, {{"Accept", kOciManifestType}});
  EXPECT_EQ(g.status, 200);
  EXPECT_EQ(g.body, manifest_);
  EXPECT_EQ(sha256_digest(g.body), g.header("docker-content-digest"));

  // Without ns the name is read as docker reads it; other registries keep their host.
  EXPECT_EQ(get("/v2/busybox/manifests/latest").status, 200);
  EXPECT_EQ(get("/v2/docker.io/library/busybox/manifests/latest").status, 200);
  HttpResponse pause = get("/v2/pause/manifests/3.9?ns=registry.k8s.io");
  EXPECT_EQ(pause.status, 200);
  // The resolver gave no media type: the document's shape tells it is an index.
  EXPECT_EQ(pause.header("content-type"), kOciIndexType);
  EXPECT_EQ(pause.body, index_);

  std::vector<std::string> asked = resolved();
  EXPECT_EQ(asked, (std::vector<std::string>{
                       "docker.io/library/busybox:latest", "docker.io/library/busybox:latest",
                       "docker.io/library/busybox:latest", "docker.io/library/busybox:latest",
                       "registry.k8s.io/pause:3.9"}));
}

TEST_F(RegistryMirrorTest, ServesManifestsByDigestOnlyWhenTheBlobIsOne) {
  start(options());
  HttpResponse m = get("/v2/library/busybox/manifests/" + manifest_digest_ + "?ns=docker.io");
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.body, manifest_);
  EXPECT_EQ(m.header("content-type"), kOciManifestType);
  EXPECT_EQ(m.header("docker-content-digest"), manifest_digest_);
  HttpResponse i = head("/v2/any/name/manifests/" + index_digest_);
  EXPECT_EQ(i.status, 200);
  EXPECT_EQ(i.header("content-type"), kOciIndexType);

  for (const std::string& not_a_manifest :
       {layer_digest_, config_digest_, other_json_digest_, missing_digest_}) {
    HttpResponse r = get("/v2/library/busybox/manifests/" + not_a_manifest + "?ns=docker.io");
    EXPECT_EQ(r.status, 404) << not_a_manifest;
    EXPECT_EQ(r.error_code(), "MANIFEST_UNKNOWN") << r.body;
    EXPECT_EQ(r.header("content-type"), "application/json");
  }
  EXPECT_TRUE(resolved().empty());  // digests never go to the tag resolver
}

TEST_F(RegistryMirrorTest, ServesByDigestOnlyManifestsOfServedImages) {
  start(options());
  auto status_of = [&](const std::string& digest) {
    return get("/v2/library/busybox/manifests/" + digest + "?ns=docker.io").status;
  };
  // A served image's target, and what its index lists, directly or through an inner index.
  EXPECT_EQ(status_of(manifest_digest_), 200);
  EXPECT_EQ(status_of(index_digest_), 200);
  HttpResponse listed = get("/v2/library/pause/manifests/" + listed_manifest_digest_);
  EXPECT_EQ(listed.status, 200);
  EXPECT_EQ(listed.header("content-type"), kOciManifestType);
  EXPECT_EQ(listed.header("docker-content-digest"), listed_manifest_digest_);
  EXPECT_EQ(sha256_digest(listed.body), listed_manifest_digest_);
  EXPECT_EQ(status_of(outer_index_digest_), 200);
  HttpResponse inner = head("/v2/library/nested/manifests/" + inner_index_digest_);
  EXPECT_EQ(inner.status, 200);
  EXPECT_EQ(inner.header("content-type"), kOciIndexType);
  EXPECT_EQ(status_of(nested_manifest_digest_), 200);
  EXPECT_EQ(get("/v2/library/nested/manifests/latest").status, 200);

  // A manifest in the content store that no served image names (pulled from a registry): 404,
  // so containerd asks the registry, with the pod's credentials.
  HttpResponse unserved =
      get("/v2/private/app/manifests/" + unserved_manifest_digest_ + "?ns=registry.example:5000");
  EXPECT_EQ(unserved.status, 404);
  EXPECT_EQ(unserved.error_code(), "MANIFEST_UNKNOWN");
  EXPECT_EQ(head("/v2/library/busybox/manifests/" + unserved_manifest_digest_).status, 404);
  // Its blobs are content-addressed and stay served.
  EXPECT_EQ(get("/v2/private/app/blobs/" + layer_digest_).status, 200);

  // The list of served images cannot be read: 503, as for tags.
  {
    std::lock_guard lock(mu_);
    targets_error_ = true;
  }
  HttpResponse broken = get("/v2/library/busybox/manifests/" + manifest_digest_);
  EXPECT_EQ(broken.status, 503);
  EXPECT_EQ(broken.error_code(), "UNAVAILABLE");
  std::lock_guard lock(mu_);
  EXPECT_GT(targets_calls_, 0);
}

TEST_F(RegistryMirrorTest, WithoutTargetsNoManifestIsServedByDigest) {
  RegistryMirrorOptions o = options();
  o.resolve_tag.targets = nullptr;
  start(o);
  for (const std::string& digest : {manifest_digest_, index_digest_, listed_manifest_digest_}) {
    EXPECT_EQ(get("/v2/library/busybox/manifests/" + digest).status, 404) << digest;
  }
  // Tags still resolve.
  EXPECT_EQ(get("/v2/library/busybox/manifests/latest?ns=docker.io").status, 200);
}

TEST_F(RegistryMirrorTest, UnservedTagsAre404) {
  start(options());
  // "docker.io/library/pulled:latest" is an image the node pulled from a registry: the resolver
  // does not serve it, so the mirror sends containerd on to that registry.
  HttpResponse h = head("/v2/library/pulled/manifests/latest?ns=docker.io");
  EXPECT_EQ(h.status, 404);
  HttpResponse g = get("/v2/library/pulled/manifests/latest?ns=docker.io");
  EXPECT_EQ(g.status, 404);
  EXPECT_EQ(g.error_code(), "MANIFEST_UNKNOWN");
  EXPECT_EQ(resolved(), (std::vector<std::string>{"docker.io/library/pulled:latest",
                                                  "docker.io/library/pulled:latest"}));
}

TEST(ImportedImagesTest, ReadsCtrImportOutput) {
  EXPECT_TRUE(imported_images("").empty());
  const std::string a = "sha256:" + std::string(64, 'a');
  const std::string b = "sha256:" + std::string(64, 'b');
  std::string out = "unpacking docker.io/library/busybox:latest (" + a +
                    ")...done\n"
                    "unpacking registry.example:5000/team/app:v1 (sha256:short)...done\n"
                    "some other line\n"
                    "unpacking broken line without a digest\n"
                    "unpacking import-2024-01-01:latest (" +
                    b + ")...";
  EXPECT_EQ(imported_images(out),
            (std::vector<ImportedImage>{{"docker.io/library/busybox:latest", a},
                                        {"import-2024-01-01:latest", b}}));
}

TEST_F(RegistryMirrorTest, StreamsBlobsWithRanges) {
  start(options());
  const std::string target = "/v2/library/busybox/blobs/" + layer_digest_ + "?ns=docker.io";
  HttpResponse full = get(target);
  ASSERT_EQ(full.status, 200);
  EXPECT_EQ(full.body.size(), layer_.size());
  EXPECT_TRUE(full.body == layer_);
  EXPECT_EQ(sha256_digest(full.body), layer_digest_);
  EXPECT_EQ(full.header("docker-content-digest"), layer_digest_);
  EXPECT_EQ(full.header("content-type"), "application/octet-stream");
  EXPECT_EQ(full.header("accept-ranges"), "bytes");

  HttpResponse h = head(target);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.header("content-length"), std::to_string(layer_.size()));
  EXPECT_EQ(h.header("docker-content-digest"), layer_digest_);

  // containerd resumes an interrupted download with "bytes=<offset>-".
  const uint64_t size = layer_.size();
  HttpResponse tail = get(target, {{"Range", "bytes=300000-"}});
  EXPECT_EQ(tail.status, 206);
  EXPECT_EQ(tail.header("content-range"),
            "bytes 300000-" + std::to_string(size - 1) + "/" + std::to_string(size));
  EXPECT_TRUE(tail.body == layer_.substr(300000));
  HttpResponse middle = get(target, {{"Range", "bytes=10-19"}});
  EXPECT_EQ(middle.status, 206);
  EXPECT_EQ(middle.body, layer_.substr(10, 10));
  HttpResponse last = get(target, {{"Range", "bytes=-5"}});
  EXPECT_EQ(last.status, 206);
  EXPECT_EQ(last.body, layer_.substr(size - 5));
  HttpResponse past = get(target, {{"Range", "bytes=" + std::to_string(size) + "-"}});
  EXPECT_EQ(past.status, 416);
  EXPECT_EQ(past.header("content-range"), "bytes */" + std::to_string(size));
  // Several ranges are not served: the whole blob is (which the HTTP spec allows).
  HttpResponse several = get(target, {{"Range", "bytes=0-1,5-6"}});
  EXPECT_EQ(several.status, 200);
  EXPECT_EQ(several.body.size(), size);

  HttpResponse config = get("/v2/x/blobs/" + config_digest_);
  EXPECT_EQ(config.status, 200);
  EXPECT_EQ(config.body, config_);
}

TEST_F(RegistryMirrorTest, UnknownThingsAre404AndBadOnes400) {
  start(options());
  struct Case {
    std::string method, target;
    int status;
    std::string code;
  };
  const std::string hex63 = std::string(63, 'a');
  std::vector<Case> cases = {
      {"GET", "/v2/library/nothing/manifests/latest?ns=docker.io", 404, "MANIFEST_UNKNOWN"},
      {"GET", "/v2/library/busybox/manifests/v9?ns=docker.io", 404, "MANIFEST_UNKNOWN"},
      // The image record names content that is gone.
      {"GET", "/v2/library/gone/manifests/latest?ns=docker.io", 404, "MANIFEST_UNKNOWN"},
      {"GET", "/v2/library/busybox/blobs/" + missing_digest_ + "?ns=docker.io", 404,
       "BLOB_UNKNOWN"},
      {"GET", "/v2/library/broken/manifests/latest?ns=docker.io", 503, "UNAVAILABLE"},
      // Digests: sha256 and 64 lowercase hex digits only.
      {"GET", "/v2/library/busybox/blobs/sha256:" + hex63 + "g", 400, "DIGEST_INVALID"},
      {"GET", "/v2/library/busybox/blobs/sha256:" + hex63, 400, "DIGEST_INVALID"},
      {"GET", "/v2/library/busybox/blobs/sha256:" + std::string(64, 'A'), 400, "DIGEST_INVALID"},
      {"GET", "/v2/library/busybox/blobs/sha512:" + std::string(128, 'a'), 400, "DIGEST_INVALID"},
      {"GET", "/v2/library/busybox/blobs/latest", 400, "DIGEST_INVALID"},
      {"GET", "/v2/library/busybox/blobs/sha256:..", 400, "DIGEST_INVALID"},
      {"GET", "/v2/library/busybox/blobs/%2e%2e", 400, "DIGEST_INVALID"},
      {"HEAD", "/v2/library/busybox/manifests/sha256:zz", 400, "DIGEST_INVALID"},
      {"GET", "/v2/library/busybox/manifests/md5:abc", 400, "DIGEST_INVALID"},
      // Names, tags and registry hosts.
      {"GET", "/v2/Library/busybox/manifests/latest", 400, "NAME_INVALID"},
      {"GET", "/v2/library/../busybox/manifests/latest", 400, "NAME_INVALID"},
      {"GET", "/v2/library/busybox/manifests/-dash", 400, "TAG_INVALID"},
      {"GET", "/v2/library/busybox/manifests/latest?ns=evil%2F..", 400, "NAME_INVALID"},
      {"GET", "/v2/library/busybox/manifests/latest?ns=%zz", 400, "NAME_INVALID"},
      // Not the registry API, or not read-only.
      {"GET", "/etc/passwd", 404, "UNSUPPORTED"},
      {"GET", "/v2/library/busybox/tags/list", 404, "UNSUPPORTED"},
      {"POST", "/v2/library/busybox/blobs/uploads/", 405, "UNSUPPORTED"},
      {"DELETE", "/v2/library/busybox/manifests/" + manifest_digest_, 405, "UNSUPPORTED"},
  };
  // Traversal through the encoded path never reaches a file: the decoded path is split on its
  // slashes before anything is looked up.
  cases.push_back({"GET", "/v2/library/busybox/blobs/sha256:..%2F..%2F..%2F..%2Fetc%2Fpasswd", 404,
                   "UNSUPPORTED"});
  cases.push_back({"GET", "/v2/library/busybox/manifests/sha256:..%2f..%2f..", 404, "UNSUPPORTED"});
  for (const Case& c : cases) {
    auto r = http(port_, c.method, c.target);
    ASSERT_TRUE(r.is_ok()) << c.target << ": " << r.status().to_string();
    EXPECT_EQ(r->status, c.status) << c.method << " " << c.target << ": " << r->body;
    EXPECT_EQ(r->header("docker-distribution-api-version"), "registry/2.0") << c.target;
    if (c.method != "HEAD") {
      EXPECT_EQ(r->error_code(), c.code) << c.method << " " << c.target << ": " << r->body;
      EXPECT_EQ(r->header("content-type"), "application/json") << c.target;
      EXPECT_EQ(r->body.find("root:"), std::string::npos) << c.target;
    }
    if (c.status == 405) EXPECT_EQ(r->header("allow"), "GET, HEAD");
  }
  // A 404 to HEAD has the headers and no body, as containerd's resolver expects.
  auto h = http(port_, "HEAD", "/v2/library/nothing/manifests/latest?ns=docker.io");
  ASSERT_TRUE(h.is_ok());
  EXPECT_EQ(h->status, 404);
  EXPECT_TRUE(h->body.empty());
  // None of the bad requests reached the resolver.
  std::vector<std::string> asked_in_order = resolved();
  std::set<std::string> asked(asked_in_order.begin(), asked_in_order.end());
  EXPECT_EQ(asked, (std::set<std::string>{
                       "docker.io/library/nothing:latest", "docker.io/library/busybox:v9",
                       "docker.io/library/gone:latest", "docker.io/library/broken:latest"}));
}

TEST_F(RegistryMirrorTest, KeepsConnectionsAliveAndReportsEachRequest) {
  start(options());
  HttpConnection c(port_);
  ASSERT_TRUE(c.connected());
  auto first = c.request("HEAD", "/v2/library/busybox/manifests/latest?ns=docker.io",
                         {{"User-Agent", "skiff-test/1"}, {"Accept", kOciManifestType}},
                         /*keep_alive=*/true);
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_EQ(first->status, 200);
  auto second =
      c.request("GET", "/v2/library/busybox/blobs/" + config_digest_, {{"Range", "bytes=1-"}},
                /*keep_alive=*/true);
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_EQ(second->status, 206);
  EXPECT_EQ(second->body, config_.substr(1));
  auto third = c.request("GET", "/v2/nope/manifests/latest");
  ASSERT_TRUE(third.is_ok());
  EXPECT_EQ(third->status, 404);
  EXPECT_TRUE(c.closed_by_peer());  // "Connection: close" was honoured

  std::vector<MirrorRequest> seen = log_.all();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].method, "HEAD");
  EXPECT_EQ(seen[0].target, "/v2/library/busybox/manifests/latest?ns=docker.io");
  EXPECT_EQ(seen[0].user_agent, "skiff-test/1");
  EXPECT_EQ(seen[0].accept, kOciManifestType);
  EXPECT_EQ(seen[0].status, 200);
  EXPECT_EQ(seen[0].body_bytes, 0u);
  EXPECT_EQ(seen[1].range, "bytes=1-");
  EXPECT_EQ(seen[1].status, 206);
  EXPECT_EQ(seen[1].body_bytes, config_.size() - 1);
  EXPECT_EQ(seen[2].status, 404);
}

TEST_F(RegistryMirrorTest, ServesConcurrentDownloads) {
  RegistryMirrorOptions o = options();
  o.io_threads = 2;
  start(o);
  std::atomic<int> good{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&] {
      for (int j = 0; j < 3; ++j) {
        auto r = http(port_, "GET", "/v2/library/busybox/blobs/" + layer_digest_);
        if (r.is_ok() && r->status == 200 && r->body == layer_) good.fetch_add(1);
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(good.load(), 24);
}

TEST_F(RegistryMirrorTest, ConnectionsBeyondTheLimitGet503) {
  RegistryMirrorOptions o = options();
  o.max_connections = 2;
  start(o);
  // Two connections held open after a request each, so both are being served.
  HttpConnection a(port_), b(port_);
  ASSERT_TRUE(a.request("GET", "/v2/", {}, true).is_ok());
  ASSERT_TRUE(b.request("GET", "/v2/", {}, true).is_ok());
  HttpConnection c(port_);
  ASSERT_TRUE(c.connected());
  auto refused = c.read_response();
  ASSERT_TRUE(refused.is_ok()) << refused.status().to_string();
  EXPECT_EQ(refused->status, 503);
  EXPECT_EQ(refused->error_code(), "TOOMANYREQUESTS");
  EXPECT_EQ(refused->header("docker-distribution-api-version"), "registry/2.0");

  // A slot frees up when a client leaves.
  a.close();
  int status = 0;
  for (auto deadline = Clock::now() + seconds(10); Clock::now() < deadline && status != 200;) {
    auto r = http(port_, "GET", "/v2/");
    status = r.is_ok() ? r->status : 0;
    if (status != 200) std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(status, 200);
}

TEST_F(RegistryMirrorTest, IdleConnectionsAreCutAndStopClosesTheRest) {
  RegistryMirrorOptions o = options();
  o.io_timeout = milliseconds(300);
  start(o);
  HttpConnection idle(port_);
  ASSERT_TRUE(idle.connected());
  auto t0 = Clock::now();
  EXPECT_TRUE(idle.closed_by_peer());
  EXPECT_LT(Clock::now() - t0, seconds(5));

  HttpConnection held(port_);
  ASSERT_TRUE(held.request("GET", "/v2/", {}, true).is_ok());
  auto stop_at = Clock::now();
  mirror_->stop();
  EXPECT_LT(Clock::now() - stop_at, seconds(2));
  EXPECT_TRUE(held.closed_by_peer());
}

// ---- With the real containerd: pulls through the mirror, offline. ----

class MirrorWithContainerdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to run containerd";
    for (const char* tool : {"containerd", "ctr", "nsenter", "ip", "tar"}) {
      if (!find_executable(tool, kSystemPath).is_ok()) {
        GTEST_SKIP() << tool << " is not installed (scripts/install-deps.sh test)";
      }
    }
    busybox_tar_ = std::string(SKIFF_BUILTIN_IMAGES_DIR) + "/" + kBusyboxArchive;
    if (!std::filesystem::exists(busybox_tar_)) {
      GTEST_SKIP() << busybox_tar_ << " was not built (busybox-static is missing)";
    }
    dir_ = std::make_unique<testing::TempDir>("skiff-mirror");
    std::string name = "skiff-mirror-test-" + random_suffix();
    auto added = run_command({"ip", "netns", "add", name}, seconds(30));
    ASSERT_TRUE(added.is_ok() && added->status.success()) << "ip netns add " << name;
    netns_ = name;
    auto up = run_command({"ip", "-n", netns_, "link", "set", "lo", "up"}, seconds(30));
    ASSERT_TRUE(up.is_ok() && up->status.success());
  }

  void TearDown() override {
    runtime_.reset();
    if (supervisor_) supervisor_->stop();
    supervisor_.reset();
    if (mirror_) mirror_->stop();
    mirror_.reset();
    if (!netns_.empty()) (void)run_command({"ip", "netns", "del", netns_}, seconds(30));
    if (dir_) unmount_under(dir_->path());
    dir_.reset();
  }

  std::string netns_path() const { return "/var/run/netns/" + netns_; }

  containerd::ContainerdOptions containerd_options() {
    containerd::ContainerdOptions o;
    o.data_dir = dir_->sub("agent");
    o.command_prefix = {"nsenter", "--net=" + netns_path()};
    o.sandbox_image = kPauseImage;
    return o;
  }

  // The mirror inside the test's network namespace, where containerd runs, and containerd
  // pointed at it.
  void start(const std::string& content_dir, TagResolver resolver) {
    RegistryMirrorOptions mo;
    mo.content_dir = content_dir;
    mo.hosts_dir = dir_->sub("agent/containerd/certs.d");
    mo.resolve_tag = std::move(resolver);
    mo.network_namespace = netns_path();
    mo.on_request = [this](const MirrorRequest& r) { log_.add(r); };
    mirror_ = std::make_unique<RegistryMirror>(mo);
    Status s = mirror_->start();
    ASSERT_TRUE(s.is_ok()) << s.to_string();

    containerd::ContainerdOptions co = containerd_options();
    co.registry_config_path = mirror_->hosts_dir();
    supervisor_ = std::make_unique<containerd::ContainerdSupervisor>(co);
    auto t0 = Clock::now();
    s = supervisor_->start();
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    std::printf("[ figures  ] containerd ready in %lld ms\n", ms_since(t0));
    std::string config = read_all(supervisor_->paths().config);
    EXPECT_NE(config.find("config_path = \"" + mirror_->hosts_dir() + "\""), std::string::npos)
        << config;

    cri::GrpcRuntimeOptions ro;
    ro.endpoint = supervisor_->address();
    ro.pull_timeout = seconds(120);
    auto runtime = cri::connect_runtime(ro, seconds(30));
    ASSERT_TRUE(runtime.is_ok()) << runtime.status().to_string();
    runtime_ = std::move(runtime).value();
  }

  // start() as the agent does it: the mirror serves containerd's own content store and asks
  // containerd for tags. Returns the content directory.
  std::string start_on_containerds_store() {
    auto paths = containerd::containerd_paths(containerd_options());
    EXPECT_TRUE(paths.is_ok());
    if (!paths.is_ok()) return "";
    std::string content = containerd_content_dir(paths->root);
    start(content, containerd_tag_resolver(paths->socket));
    return content;
  }

  Result<std::string> pull(const std::string& image, long long* took_ms = nullptr) {
    cri::v1::ImageSpec spec;
    spec.set_image(image);
    cri::v1::PodSandboxConfig sandbox;
    sandbox.mutable_metadata()->set_name("mirror-test");
    sandbox.mutable_metadata()->set_namespace_("default");
    sandbox.mutable_metadata()->set_uid("mirror-test-uid");
    auto t0 = Clock::now();
    auto pulled = runtime_->pull_image(spec, {}, sandbox);
    if (took_ms) *took_ms = ms_since(t0);
    return pulled;
  }

  std::optional<cri::v1::Image> image_status(const std::string& image) {
    cri::v1::ImageSpec spec;
    spec.set_image(image);
    auto status = runtime_->image_status(spec);
    EXPECT_TRUE(status.is_ok()) << status.status().to_string();
    return status.is_ok() ? *status : std::nullopt;
  }

  std::unique_ptr<testing::TempDir> dir_;
  std::string netns_;
  std::string busybox_tar_;
  std::unique_ptr<RegistryMirror> mirror_;
  std::unique_ptr<containerd::ContainerdSupervisor> supervisor_;
  std::unique_ptr<cri::GrpcRuntime> runtime_;
  RequestLog log_;
};

// The node's own image, imported with ctr, pulled as the kubelet pulls `image: busybox`
// (imagePullPolicy Always) with no registry reachable.
TEST_F(MirrorWithContainerdTest, ImportedImagePullsOfflineThroughTheMirror) {
  std::string content = start_on_containerds_store();
  if (HasFatalFailure()) return;
  auto t0 = Clock::now();
  Status imported = import_image_tar(supervisor_->address(), busybox_tar_, "");
  ASSERT_TRUE(imported.is_ok()) << imported.to_string();
  std::printf("[ figures  ] import busybox.tar: %lld ms\n", ms_since(t0));

  // What containerd's CRI says about an imported image: no repo digest to resolve the tag with.
  std::optional<cri::v1::Image> before = image_status("busybox");
  ASSERT_TRUE(before.has_value());
  std::printf(
      "[ figures  ] imported busybox through CRI ImageStatus: id %s, %d repo tags, %d "
      "repo digests\n",
      before->id().c_str(), before->repo_tags_size(), before->repo_digests_size());

  // containerd's image record is what the mirror resolves tags with.
  TagResolver resolver = containerd_tag_resolver(supervisor_->address());
  auto resolved = resolver.resolve("docker.io/library/busybox:latest");
  ASSERT_TRUE(resolved.is_ok()) << resolved.status().to_string();
  ASSERT_TRUE(resolved->has_value());
  const std::string manifest_digest = (*resolved)->digest;
  EXPECT_EQ((*resolved)->media_type, kOciManifestType);
  std::string manifest = read_all(content + "/blobs/sha256/" + manifest_digest.substr(7));
  ASSERT_FALSE(manifest.empty()) << manifest_digest;
  EXPECT_EQ(sha256_digest(manifest), manifest_digest);
  EXPECT_EQ(Json::parse(manifest)["config"]["digest"], before->id());
  auto absent = resolver.resolve("docker.io/library/skiff-absent:latest");
  ASSERT_TRUE(absent.is_ok()) << absent.status().to_string();
  EXPECT_FALSE(absent->has_value());
  auto wrong_namespace = containerd_tag_resolver(supervisor_->address(), "default")
                             .resolve("docker.io/library/busybox:latest");
  ASSERT_TRUE(wrong_namespace.is_ok());
  EXPECT_FALSE(wrong_namespace->has_value());

  // The pull: containerd asks the mirror first, which answers from the content store.
  long long pull_ms = 0;
  auto pulled = pull("busybox", &pull_ms);
  ASSERT_TRUE(pulled.is_ok()) << pulled.status().to_string() << "\n" << supervisor_->paths().log;
  EXPECT_EQ(*pulled, before->id());
  std::printf("[ figures  ] PullImage busybox (present, served by the mirror): %lld ms\n", pull_ms);
  log_.print("PullImage busybox");
  auto resolve = log_.wait_for("/v2/library/busybox/manifests/latest?ns=docker.io", "HEAD", 200);
  ASSERT_TRUE(resolve.has_value()) << "containerd did not resolve busybox through the mirror";
  EXPECT_NE(resolve->user_agent.find("containerd/"), std::string::npos) << resolve->user_agent;

  // The CRI pull recorded the repo digest the mirror served.
  std::optional<cri::v1::Image> after = image_status("busybox");
  ASSERT_TRUE(after.has_value());
  std::vector<std::string> digests(after->repo_digests().begin(), after->repo_digests().end());
  EXPECT_NE(
      std::find(digests.begin(), digests.end(), "docker.io/library/busybox@" + manifest_digest),
      digests.end());

  // Pulled again, and by digest.
  EXPECT_TRUE(pull("busybox", &pull_ms).is_ok());
  std::printf("[ figures  ] PullImage busybox again: %lld ms\n", pull_ms);
  auto by_digest = pull("docker.io/library/busybox@" + manifest_digest, &pull_ms);
  EXPECT_TRUE(by_digest.is_ok()) << by_digest.status().to_string();
  std::printf("[ figures  ] PullImage busybox@digest: %lld ms\n", pull_ms);
  EXPECT_TRUE(log_.wait_for("/v2/library/busybox/manifests/" + manifest_digest + "?ns=docker.io",
                            "HEAD", 200)
                  .has_value());

  // What the node does not have still goes to its registry, which is unreachable: the pull fails.
  for (const std::string& missing :
       {std::string("skiff.test/absent:v1"), std::string("docker.io/library/busybox:absent")}) {
    auto failed = pull(missing, &pull_ms);
    EXPECT_FALSE(failed.is_ok()) << missing;
    std::printf("[ figures  ] PullImage %s (absent) failed in %lld ms: %s\n", missing.c_str(),
                pull_ms, failed.status().to_string().c_str());
  }
  EXPECT_TRUE(log_.wait_for("/v2/absent/manifests/v1?ns=skiff.test", "HEAD", 404).has_value());
  EXPECT_TRUE(
      log_.wait_for("/v2/library/busybox/manifests/absent?ns=docker.io", "HEAD", 404).has_value());

  log_.print("every pull in this test");

  // Direct requests, from inside the namespace the mirror listens in.
  const std::string ns = netns_path();
  const int port = mirror_->port();
  auto m = http(port, "GET", "/v2/library/busybox/manifests/latest?ns=docker.io", {}, ns);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->status, 200);
  EXPECT_EQ(m->body, manifest);
  EXPECT_EQ(m->header("docker-content-digest"), manifest_digest);
  Json doc = Json::parse(manifest);
  for (const auto& layer : doc["layers"]) {
    std::string digest = layer["digest"];
    auto blob = http(port, "GET", "/v2/library/busybox/blobs/" + digest + "?ns=docker.io", {}, ns);
    ASSERT_TRUE(blob.is_ok());
    EXPECT_EQ(blob->status, 200);
    EXPECT_EQ(blob->body.size(), layer["size"].get<size_t>());
    EXPECT_EQ(sha256_digest(blob->body), digest);
  }
  auto missing_blob =
      http(port, "GET", "/v2/library/busybox/blobs/sha256:" + std::string(64, '0'), {}, ns);
  ASSERT_TRUE(missing_blob.is_ok());
  EXPECT_EQ(missing_blob->status, 404);
  EXPECT_EQ(missing_blob->error_code(), "BLOB_UNKNOWN");
  auto bad_digest = http(port, "GET", "/v2/library/busybox/blobs/sha256:%2e%2e", {}, ns);
  ASSERT_TRUE(bad_digest.is_ok());
  EXPECT_EQ(bad_digest->status, 400);
  EXPECT_EQ(bad_digest->error_code(), "DIGEST_INVALID");
  auto unknown_tag =
      http(port, "HEAD", "/v2/library/nothing/manifests/latest?ns=docker.io", {}, ns);
  ASSERT_TRUE(unknown_tag.is_ok());
  EXPECT_EQ(unknown_tag->status, 404);
}

// An image containerd has but skiff did not import (here: imported without the mark, which is how
// a pull from a registry leaves it) is not served, by tag or by digest; importing its archive again
// marks it, and then it is.
TEST_F(MirrorWithContainerdTest, OnlyImportedImagesAreServed) {
  std::string content = start_on_containerds_store();
  if (HasFatalFailure()) return;
  ImportOptions unmarked;
  unmarked.mark_imported = false;
  Status imported = import_image_tar(supervisor_->address(), busybox_tar_, "", unmarked);
  ASSERT_TRUE(imported.is_ok()) << imported.to_string();
  ASSERT_TRUE(image_status("busybox").has_value());

  TagResolver resolver = containerd_tag_resolver(supervisor_->address());
  auto resolved = resolver.resolve(kBusyboxImage);
  ASSERT_TRUE(resolved.is_ok()) << resolved.status().to_string();
  EXPECT_FALSE(resolved->has_value());
  auto targets = resolver.targets();
  ASSERT_TRUE(targets.is_ok()) << targets.status().to_string();
  EXPECT_TRUE(targets->empty());

  // The image's manifest digest, from the archive.
  std::string layout = dir_->sub("layout");
  std::filesystem::create_directories(layout);
  auto untar = run_command({"tar", "-xf", busybox_tar_, "-C", layout}, seconds(60));
  ASSERT_TRUE(untar.is_ok() && untar->status.success());
  const std::string manifest_digest =
      Json::parse(read_all(layout + "/index.json"))["manifests"][0]["digest"];
  const std::string ns = netns_path();
  const int port = mirror_->port();
  auto status_of = [&](const std::string& method, const std::string& target) {
    auto r = http(port, method, target, {}, ns);
    EXPECT_TRUE(r.is_ok()) << target << ": " << r.status().to_string();
    return r.is_ok() ? r->status : 0;
  };
  const std::string by_tag = "/v2/library/busybox/manifests/latest?ns=docker.io";
  const std::string by_digest =
      "/v2/library/busybox/manifests/" + manifest_digest + "?ns=docker.io";
  EXPECT_EQ(status_of("HEAD", by_tag), 404);
  EXPECT_EQ(status_of("GET", by_tag), 404);
  EXPECT_EQ(status_of("GET", by_digest), 404);
  // With the mirror saying 404, containerd goes to docker.io, which this namespace cannot reach.
  long long pull_ms = 0;
  auto failed = pull("busybox", &pull_ms);
  EXPECT_FALSE(failed.is_ok());
  std::printf("[ figures  ] PullImage of an unmarked busybox failed in %lld ms: %s\n", pull_ms,
              failed.status().to_string().c_str());
  EXPECT_TRUE(log_.wait_for(by_tag, "HEAD", 404).has_value());

  // The archive imported again (as the kubelet does on every start) marks the existing image.
  imported = import_image_tar(supervisor_->address(), busybox_tar_, "");
  ASSERT_TRUE(imported.is_ok()) << imported.to_string();
  resolved = resolver.resolve(kBusyboxImage);
  ASSERT_TRUE(resolved.is_ok()) << resolved.status().to_string();
  ASSERT_TRUE(resolved->has_value());
  EXPECT_EQ((*resolved)->digest, manifest_digest);
  targets = resolver.targets();
  ASSERT_TRUE(targets.is_ok()) << targets.status().to_string();
  ASSERT_EQ(targets->size(), 1u);
  EXPECT_EQ(targets->front().digest, manifest_digest);
  EXPECT_EQ(status_of("HEAD", by_tag), 200);
  EXPECT_EQ(status_of("GET", by_digest), 200);
  auto pulled = pull("busybox", &pull_ms);
  EXPECT_TRUE(pulled.is_ok()) << pulled.status().to_string();
  // The CRI pull keeps the mark (it rewrites the image record's labels, not the content's).
  resolved = resolver.resolve(kBusyboxImage);
  ASSERT_TRUE(resolved.is_ok() && resolved->has_value());
  log_.print("unmarked, then marked busybox");
}

// A node without the image pulls every blob from the mirror: here the mirror serves an OCI layout
// (the same directory shape as containerd's content store) to a containerd that has nothing.
TEST_F(MirrorWithContainerdTest, EmptyNodeFetchesManifestConfigAndLayerFromTheMirror) {
  std::string layout = dir_->sub("layout");
  std::filesystem::create_directories(layout);
  auto untar = run_command({"tar", "-xf", busybox_tar_, "-C", layout}, seconds(60));
  ASSERT_TRUE(untar.is_ok() && untar->status.success());
  Json index = Json::parse(read_all(layout + "/index.json"));
  ASSERT_EQ(index["manifests"].size(), 1u);
  const Json& entry = index["manifests"][0];
  const std::string ref =
      entry["annotations"]["org.opencontainers.image.ref.name"].get<std::string>();
  ASSERT_EQ(ref, kBusyboxImage);
  const ManifestDescriptor desc{entry["mediaType"].get<std::string>(),
                                entry["digest"].get<std::string>()};
  Json manifest = Json::parse(read_all(layout + "/blobs/sha256/" + desc.digest.substr(7)));
  const std::string config_digest = manifest["config"]["digest"];
  const std::string layer_digest = manifest["layers"][0]["digest"];
  const uint64_t layer_size = manifest["layers"][0]["size"];

  TagResolver layout_resolver;
  layout_resolver.resolve =
      [ref, desc](const std::string& asked) -> Result<std::optional<ManifestDescriptor>> {
    if (asked == ref) return std::optional<ManifestDescriptor>(desc);
    return std::optional<ManifestDescriptor>();
  };
  layout_resolver.targets = [desc]() -> Result<std::vector<ManifestDescriptor>> {
    return std::vector<ManifestDescriptor>{desc};
  };
  start(layout, layout_resolver);
  if (HasFatalFailure()) return;
  EXPECT_FALSE(image_status("busybox").has_value());

  long long pull_ms = 0;
  auto pulled = pull("busybox", &pull_ms);
  ASSERT_TRUE(pulled.is_ok()) << pulled.status().to_string();
  EXPECT_EQ(*pulled, config_digest);
  std::printf(
      "[ figures  ] PullImage busybox into an empty node, %llu-byte layer from the "
      "mirror: %lld ms\n",
      static_cast<unsigned long long>(layer_size), pull_ms);
  log_.print("PullImage busybox (empty node)");

  auto ok_request = [&](const std::string& part, const std::string& method) {
    auto found = log_.wait_for(part, method, 200);
    EXPECT_TRUE(found.has_value()) << "no successful " << method << " " << part;
    return found.value_or(MirrorRequest{});
  };
  ok_request("/v2/library/busybox/manifests/latest?ns=docker.io", "HEAD");
  ok_request("/v2/library/busybox/manifests/" + desc.digest + "?ns=docker.io", "GET");
  ok_request("/v2/library/busybox/blobs/" + config_digest + "?ns=docker.io", "GET");
  MirrorRequest layer =
      ok_request("/v2/library/busybox/blobs/" + layer_digest + "?ns=docker.io", "GET");
  EXPECT_EQ(layer.body_bytes, layer_size);

  std::optional<cri::v1::Image> status = image_status("busybox");
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->id(), config_digest);
  std::vector<std::string> digests(status->repo_digests().begin(), status->repo_digests().end());
  EXPECT_NE(std::find(digests.begin(), digests.end(), "docker.io/library/busybox@" + desc.digest),
            digests.end());
  // The layer arrived whole: containerd stored the blob under its digest.
  auto paths = supervisor_->paths();
  std::string stored =
      read_all(containerd_content_dir(paths.root) + "/blobs/sha256/" + layer_digest.substr(7));
  EXPECT_EQ(sha256_digest(stored), layer_digest);
}

}  // namespace
}  // namespace skiff::kubelet::images
