// Static pods from the manifest URL and from the kubelet's API (add_api_pod), against an
// in-memory API and runtime and a loopback HTTP server whose body the tests change: pods appear
// with mirror pods, a changed body replaces them, a removed one stops, and failed fetches or
// bad bodies keep the last good pods. Names must not collide across sources.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>

#include "client/fake_api_client.h"
#include "httpserver/http_server.h"
#include "kubelet/cri/fake_runtime.h"
#include "kubelet/kubelet.h"
#include "kubelet/static_pods.h"
#include "support/eventually.h"
#include "support/temp_dir.h"

namespace skiff::kubelet {
namespace {

using client::resources::kPods;
using skiff::testing::eventually;
using skiff::testing::stays;
using std::chrono::milliseconds;

// A loopback HTTP server answering every GET with the current status and body.
class ManifestServer {
 public:
  ManifestServer() {
    http::HttpServerOptions o;
    o.bind_address = "127.0.0.1";
    o.port = 0;
    o.worker_threads = 2;
    server_ = std::make_unique<http::HttpServer>(
        o,
        [this](http::Request& req, http::Responder& r) {
          http::Response response;
          std::lock_guard lock(mu_);
          ++requests_;
          last_headers_ = req.headers;
          response.status = status_;
          response.content_type = "application/yaml";
          response.body = body_;
          r.respond(std::move(response));
        },
        nullptr);
    EXPECT_TRUE(server_->start().is_ok());
  }
  ~ManifestServer() { server_->stop(); }

  void serve(int status, std::string body) {
    std::lock_guard lock(mu_);
    status_ = status;
    body_ = std::move(body);
  }
  int requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  std::string header(const std::string& name) const {
    std::lock_guard lock(mu_);
    for (const auto& h : last_headers_) {
      if (strcasecmp(h.name.c_str(), name.c_str()) == 0) return h.value;
    }
    return "";
  }
  std::string url(const std::string& path = "/pods.yaml") const {
    return "http://127.0.0.1:" + std::to_string(server_->port()) + path;
  }

 private:
  mutable std::mutex mu_;
  int status_ = 200;
  std::string body_;
  int requests_ = 0;
  std::vector<http::HttpHeader> last_headers_;
  std::unique_ptr<http::HttpServer> server_;
};

std::string pod_yaml(const std::string& name, const std::string& image = "busybox",
                     const std::string& ns = "") {
  return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n" +
         (ns.empty() ? "" : "  namespace: " + ns + "\n") +
         "spec:\n  containers:\n  - name: main\n    image: " + image +
         "\n    imagePullPolicy: IfNotPresent\n";
}

TEST(ManifestUrlTest, ParsesHeaderFlags) {
  auto h = parse_url_header("Authorization:Bearer abc:def");
  ASSERT_TRUE(h.is_ok());
  EXPECT_EQ(h->name, "Authorization");
  EXPECT_EQ(h->value, "Bearer abc:def");
  EXPECT_FALSE(parse_url_header("no-colon").is_ok());
  EXPECT_FALSE(parse_url_header(":value").is_ok());
  EXPECT_FALSE(parse_url_header("Bad Name:v").is_ok());
}

TEST(ManifestUrlTest, FetchSendsHeadersAndRejectsErrors) {
  ManifestServer server;
  server.serve(200, "hello");
  auto body = fetch_manifest_url(server.url(), {{"X-Token", "secret"}, {"Accept", "a/b"}});
  ASSERT_TRUE(body.is_ok()) << body.status().to_string();
  EXPECT_EQ(*body, "hello");
  EXPECT_EQ(server.header("X-Token"), "secret");
  EXPECT_EQ(server.header("Accept"), "a/b");

  server.serve(404, "nope");
  auto missing = fetch_manifest_url(server.url(), {});
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(missing.status().message().find("404"), std::string::npos);

  EXPECT_EQ(fetch_manifest_url("ftp://x/y", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(fetch_manifest_url("http://127.0.0.1:0/", {}).status().code(),
            StatusCode::kInvalidArgument);
  // A bound socket that does not listen: connecting is refused.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::string closed = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/";
  EXPECT_EQ(fetch_manifest_url(closed, {}).status().code(), StatusCode::kUnavailable);
  ::close(fd);
}

TEST(ManifestUrlTest, PodsFromTheUrlSourceAreMarkedHttp) {
  auto pods =
      static_pods_from(pod_yaml("a") + "---\n" + pod_yaml("b"), "http://x/p", "n1", kHttpSource);
  ASSERT_TRUE(pods.is_ok());
  ASSERT_EQ(pods->size(), 2u);
  EXPECT_EQ((*pods)[0]["metadata"]["name"], "a-n1");
  EXPECT_EQ((*pods)[0]["metadata"]["annotations"][kConfigSourceAnnotation], "http");
  // The origin takes part in the UID: the same pod from a file is another pod.
  auto from_file = static_pods_from(pod_yaml("a"), "http://x/p", "n1");
  ASSERT_TRUE(from_file.is_ok());
  EXPECT_EQ((*from_file)[0]["metadata"]["annotations"][kConfigSourceAnnotation], "file");
  auto elsewhere = static_pods_from(pod_yaml("a"), "http://y/p", "n1", kHttpSource);
  EXPECT_NE((*elsewhere)[0]["metadata"]["uid"], (*pods)[0]["metadata"]["uid"]);
}

class StaticPodSourcesTest : public ::testing::Test {
 protected:
  StaticPodSourcesTest() {
    api_.set_graceful_pod_deletion(true);
    runtime_.add_image("busybox");
    runtime_.add_image("busybox:1");
    options_.node.node_name = "n1";
    options_.node.node_ip = "192.0.2.10";
    options_.node.log_root = tmp_.sub("logs");
    options_.node.cgroup_root = "";
    options_.pods_dir = tmp_.sub("pods");
    options_.pleg_period = milliseconds(50);
    options_.resync_period = milliseconds(500);
    options_.manifest_check_period = milliseconds(50);
    options_.manifest_url_period = milliseconds(100);
  }
  ~StaticPodSourcesTest() override {
    if (manager_) manager_->stop();
  }

  void start() {
    manager_ = std::make_unique<PodManager>(api_, runtime_, runtime_, options_);
    manager_->start();
    ASSERT_TRUE(manager_->wait_for_sync(milliseconds(5000)));
  }

  Json get(const std::string& name, const std::string& ns = "default") {
    auto p = api_.get(kPods, ns, name);
    return p.is_ok() ? *p : Json();
  }
  std::string phase(const std::string& name) {
    Json p = get(name);
    if (!p.is_object()) return "";
    return p.value("status", Json::object()).value("phase", "");
  }
  // The static pod's UID, from its mirror pod.
  std::string hash(const std::string& name) {
    Json p = get(name);
    if (!p.is_object()) return "";
    return p["metadata"]["annotations"].value(kConfigMirrorAnnotation, "");
  }
  std::string source(const std::string& name) {
    Json p = get(name);
    if (!p.is_object()) return "";
    return p["metadata"]["annotations"].value(kConfigSourceAnnotation, "");
  }
  std::string running_container(const std::string& uid) {
    v1::ContainerFilter f;
    (*f.mutable_label_selector())[kPodUidLabel] = uid;
    auto list = runtime_.list_containers(f);
    if (!list.is_ok()) return "";
    for (const auto& c : *list) {
      if (c.state() == v1::CONTAINER_RUNNING) return c.id();
    }
    return "";
  }
  bool gone(const std::string& name) { return !api_.get(kPods, "default", name).is_ok(); }

  testing::TempDir tmp_{"skiff-static-sources-test"};
  client::FakeApiClient api_;
  cri::FakeRuntime runtime_;
  PodManagerOptions options_;
  std::unique_ptr<PodManager> manager_;
};

TEST_F(StaticPodSourcesTest, UrlPodsAppearChangeAndGo) {
  ManifestServer server;
  server.serve(200, pod_yaml("web") + "---\n" + pod_yaml("side"));
  options_.manifest_url = server.url();
  options_.manifest_url_headers = {{"X-Node", "n1"}};
  start();
  ASSERT_TRUE(eventually([&] { return phase("web-n1") == "Running"; }));
  ASSERT_TRUE(eventually([&] { return phase("side-n1") == "Running"; }));
  EXPECT_EQ(source("web-n1"), "http");
  EXPECT_EQ(server.header("X-Node"), "n1");
  std::string web = hash("web-n1");
  std::string side = hash("side-n1");
  ASSERT_FALSE(running_container(web).empty());

  // The same body again leaves the pods alone.
  int seen = server.requests();
  ASSERT_TRUE(eventually([&] { return server.requests() >= seen + 3; }));
  EXPECT_EQ(hash("web-n1"), web);
  EXPECT_EQ(runtime_.call_count("RunPodSandbox"), 2);

  // A changed pod replaces the old one; a removed pod stops and its mirror goes.
  server.serve(200, pod_yaml("web", "busybox:1"));
  ASSERT_TRUE(eventually([&] { return !hash("web-n1").empty() && hash("web-n1") != web; }));
  std::string web2 = hash("web-n1");
  ASSERT_TRUE(eventually([&] { return !running_container(web2).empty(); }));
  ASSERT_TRUE(eventually([&] { return running_container(web).empty(); }));
  ASSERT_TRUE(eventually([&] { return running_container(side).empty(); }));
  ASSERT_TRUE(eventually([&] { return gone("side-n1"); }));

  // A failed fetch keeps the pods; so does a body that is not pods.
  std::string running = running_container(web2);
  server.serve(500, "oops");
  seen = server.requests();
  ASSERT_TRUE(eventually([&] { return server.requests() >= seen + 3; }));
  server.serve(200, "kind: Service\nmetadata:\n  name: x\n");
  seen = server.requests();
  ASSERT_TRUE(eventually([&] { return server.requests() >= seen + 3; }));
  server.serve(200, "{ not yaml: [");
  seen = server.requests();
  ASSERT_TRUE(eventually([&] { return server.requests() >= seen + 3; }));
  EXPECT_TRUE(stays([&] { return running_container(web2) == running; }, milliseconds(300)));
  EXPECT_EQ(hash("web-n1"), web2);

  // An empty body (as upstream: no pods) stops them.
  server.serve(200, "");
  ASSERT_TRUE(eventually([&] { return running_container(web2).empty(); }));
  ASSERT_TRUE(eventually([&] { return gone("web-n1"); }));
}

TEST_F(StaticPodSourcesTest, UnreachableUrlKeepsPodsAndOtherSourcesRun) {
  auto server = std::make_unique<ManifestServer>();
  server->serve(200,
                "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n"
                "  metadata: {name: listed}\n  spec:\n    containers:\n"
                "    - {name: main, image: busybox, imagePullPolicy: IfNotPresent}\n");
  options_.manifest_url = server->url();
  std::string dir = tmp_.sub("manifests");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/file.yaml") << pod_yaml("fromfile");
  options_.manifest_dir = dir;
  start();
  ASSERT_TRUE(eventually([&] { return phase("listed-n1") == "Running"; }));
  ASSERT_TRUE(eventually([&] { return phase("fromfile-n1") == "Running"; }));
  EXPECT_EQ(source("fromfile-n1"), "file");
  std::string listed = hash("listed-n1");
  std::string running = running_container(listed);
  server.reset();  // the URL no longer answers
  EXPECT_TRUE(stays([&] { return running_container(listed) == running; }, milliseconds(600)));
  EXPECT_FALSE(gone("listed-n1"));
}

TEST_F(StaticPodSourcesTest, SameNameFromALaterSourceIsRefused) {
  ManifestServer server;
  server.serve(200, pod_yaml("dup", "busybox:1") + "---\n" + pod_yaml("urlonly"));
  options_.manifest_url = server.url();
  std::string dir = tmp_.sub("manifests");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/dup.yaml") << pod_yaml("dup");
  options_.manifest_dir = dir;
  start();
  ASSERT_TRUE(eventually([&] { return phase("urlonly-n1") == "Running"; }));
  ASSERT_TRUE(eventually([&] { return phase("dup-n1") == "Running"; }));
  EXPECT_EQ(source("dup-n1"), "file");
  EXPECT_TRUE(stays([&] { return source("dup-n1") == "file"; }, milliseconds(300)));
  EXPECT_EQ(runtime_.call_count("RunPodSandbox"), 2);
  // The API source cannot take a name the others have.
  auto added = manager_->add_api_pod(pod_yaml("urlonly"));
  ASSERT_FALSE(added.is_ok());
  EXPECT_EQ(added.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(added.status().message().find("http"), std::string::npos);
  // Once the file goes, the URL's pod of that name runs.
  std::filesystem::remove(dir + "/dup.yaml");
  ASSERT_TRUE(eventually([&] { return source("dup-n1") == "http"; }));
  ASSERT_TRUE(eventually([&] { return phase("dup-n1") == "Running"; }));
}

TEST_F(StaticPodSourcesTest, ApiPodsRunUntilRemoved) {
  start();
  auto added = manager_->add_api_pod(
      R"({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "posted"},
          "spec": {"containers": [{"name": "main", "image": "busybox",
                                   "imagePullPolicy": "IfNotPresent"}]}})");
  ASSERT_TRUE(added.is_ok()) << added.status().to_string();
  EXPECT_EQ((*added)["metadata"]["name"], "posted-n1");
  EXPECT_EQ((*added)["metadata"]["namespace"], "default");
  EXPECT_EQ((*added)["spec"]["nodeName"], "n1");
  EXPECT_EQ((*added)["metadata"]["annotations"][kConfigSourceAnnotation], "kubelet-api");
  std::string uid = (*added)["metadata"]["uid"];
  ASSERT_TRUE(eventually([&] { return phase("posted-n1") == "Running"; }));
  EXPECT_EQ(hash("posted-n1"), uid);
  EXPECT_EQ(source("posted-n1"), "kubelet-api");
  ASSERT_FALSE(running_container(uid).empty());

  // The same name again is a conflict.
  auto again = manager_->add_api_pod(pod_yaml("posted"));
  ASSERT_FALSE(again.is_ok());
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);

  EXPECT_EQ(manager_->remove_api_pod("posted").code(), StatusCode::kNotFound);
  ASSERT_TRUE(manager_->remove_api_pod("posted-n1").is_ok());
  ASSERT_TRUE(eventually([&] { return running_container(uid).empty(); }));
  ASSERT_TRUE(eventually([&] { return gone("posted-n1"); }));
  EXPECT_EQ(manager_->remove_api_pod("posted-n1").code(), StatusCode::kNotFound);
}

TEST_F(StaticPodSourcesTest, BadApiPodsAreRefused) {
  start();
  struct Case {
    std::string body;
    std::string message;
  } cases[] = {
      {"{ not: [json", "invalid YAML"},
      {R"({"kind": "Service", "metadata": {"name": "x"}})", "not a Pod"},
      {R"({"kind": "Pod", "metadata": {}, "spec": {"containers": [{"name": "c"}]}})",
       "metadata.name"},
      {R"({"kind": "Pod", "metadata": {"name": "x"}, "spec": {}})", "spec.containers"},
      {R"({"kind": "Pod", "metadata": {"name": "Bad_Name"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})",
       "metadata.name: Invalid value"},
      {R"({"kind": "Pod", "metadata": {"name": "x", "namespace": "a.b"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})",
       "metadata.namespace: Invalid value"},
      {pod_yaml("one") + "---\n" + pod_yaml("two"), "exactly one Pod"},
      {"", "exactly one Pod"},
  };
  for (const Case& c : cases) {
    auto added = manager_->add_api_pod(c.body);
    ASSERT_FALSE(added.is_ok()) << c.body;
    EXPECT_EQ(added.status().code(), StatusCode::kInvalidArgument) << c.body;
    EXPECT_NE(added.status().message().find(c.message), std::string::npos)
        << added.status().message();
  }
  EXPECT_TRUE(stays([&] { return runtime_.call_count("RunPodSandbox") == 0; }, milliseconds(200)));
}

}  // namespace
}  // namespace skiff::kubelet
