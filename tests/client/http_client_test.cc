// HttpApiClient against a real in-process API server (memory store): CRUD, patches, error
// mapping, lists, watches, authentication, TLS verification, concurrency and reconnection; and
// against a scripted TLS server for the retry rules on stale keep-alive connections.

#include "client/http_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "apiserver/apiserver.h"
#include "base/kubeconfig.h"
#include "base/pki.h"
#include "support/ports.h"
#include "support/temp_dir.h"

namespace skiff::client {
namespace {

using namespace std::chrono_literals;
using resources::kConfigMaps;
using resources::kNamespaces;
using resources::kPods;
using Clock = std::chrono::steady_clock;

constexpr char kToken[] = "s3cret-t0ken";

struct Cluster {
  std::unique_ptr<testing::TempDir> dir;
  std::unique_ptr<apiserver::ApiServer> server;
  Kubeconfig admin;
};

// Starts an API server on 127.0.0.1 with a memory store and a token file naming kToken.
Cluster start_cluster(
    std::chrono::milliseconds compaction_window = storage::kDefaultCompactionWindow,
    std::unique_ptr<testing::TempDir> dir = nullptr, int port = 0) {
  Cluster c;
  c.dir = dir ? std::move(dir) : std::make_unique<testing::TempDir>("skiff-http-client");
  {
    std::ofstream tokens(c.dir->sub("tokens.csv"));
    tokens << kToken << ",alice,alice-uid,\"system:masters\"\n";
  }
  apiserver::ApiServerOptions o;
  o.data_dir = c.dir->path();
  o.bind_address = "127.0.0.1";
  o.https_port = port;
  o.token_auth_file = c.dir->sub("tokens.csv");
  o.store.backend = "memory";
  o.store.compaction_window = compaction_window;
  o.worker_threads = 8;
  auto server = apiserver::ApiServer::start(o);
  SKIFF_CHECK(server.is_ok(), server.status().to_string());
  c.server = std::move(server).value();
  auto kc = load_kubeconfig(c.server->admin_kubeconfig());
  SKIFF_CHECK(kc.is_ok(), kc.status().to_string());
  c.admin = std::move(kc).value();
  return c;
}

std::unique_ptr<HttpApiClient> make_client(const Kubeconfig& kc, HttpClientOptions o = {}) {
  auto c = HttpApiClient::create(kc, std::move(o));
  SKIFF_CHECK(c.is_ok(), c.status().to_string());
  return std::move(c).value();
}

Json configmap(const std::string& ns, const std::string& name, Json data = Json::object(),
               Json labels = Json::object()) {
  Json cm{{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"data", std::move(data)}};
  if (!labels.empty()) cm["metadata"]["labels"] = std::move(labels);
  return cm;
}

Json pod(const std::string& ns, const std::string& name) {
  return Json{{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata", {{"name", name}, {"namespace", ns}}},
              {"spec",
               {{"containers",
                 {{{"name", "c"}, {"image", "busybox:1.36"}},
                  {{"name", "d"}, {"image", "busybox:1.36"}}}}}}};
}

std::string event_type_name(WatchEventType t) {
  switch (t) {
    case WatchEventType::kAdded:
      return "ADDED";
    case WatchEventType::kModified:
      return "MODIFIED";
    case WatchEventType::kDeleted:
      return "DELETED";
    case WatchEventType::kBookmark:
      return "BOOKMARK";
    case WatchEventType::kError:
      return "ERROR";
  }
  return "?";
}

class HttpClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { cluster_ = new Cluster(start_cluster()); }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override {
    client_ = make_client(cluster_->admin);
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info->name();
    ns_ = "t-";
    for (char c : name)
      ns_ += static_cast<char>(std::isalnum(static_cast<unsigned char>(c))
                                   ? std::tolower(static_cast<unsigned char>(c))
                                   : '-');
    if (ns_.size() > 60) ns_.resize(60);
    auto created = client_->create(kNamespaces, "", Json{{"metadata", {{"name", ns_}}}});
    ASSERT_TRUE(created.is_ok()) << created.status().to_string();
  }

  static Cluster* cluster_;
  std::unique_ptr<HttpApiClient> client_;
  std::string ns_;
};

Cluster* HttpClientTest::cluster_ = nullptr;

TEST_F(HttpClientTest, CreateGetUpdateRemoveConfigMap) {
  auto created = client_->create(kConfigMaps, ns_, configmap(ns_, "cm", {{"k", "v"}}));
  ASSERT_TRUE(created.is_ok()) << created.status().to_string();
  EXPECT_EQ(name_of(*created), "cm");
  EXPECT_FALSE(uid_of(*created).empty());
  std::string rv1 = resource_version_of(*created);
  EXPECT_FALSE(rv1.empty());
  // The default field manager is recorded.
  ASSERT_TRUE((*created)["metadata"].contains("managedFields"));
  EXPECT_EQ((*created)["metadata"]["managedFields"][0]["manager"], "skiff");

  auto got = client_->get(kConfigMaps, ns_, "cm");
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  EXPECT_EQ((*got)["data"]["k"], "v");
  EXPECT_EQ(resource_version_of(*got), rv1);

  Json changed = *got;
  changed["data"]["k"] = "v2";
  auto updated = client_->update(kConfigMaps, ns_, changed);
  ASSERT_TRUE(updated.is_ok()) << updated.status().to_string();
  EXPECT_EQ((*updated)["data"]["k"], "v2");
  EXPECT_NE(resource_version_of(*updated), rv1);

  // The namespace defaults to the object's own.
  Json again = *updated;
  again["data"]["k"] = "v3";
  auto updated2 = client_->update(kConfigMaps, "", again);
  ASSERT_TRUE(updated2.is_ok()) << updated2.status().to_string();

  auto removed = client_->remove(kConfigMaps, ns_, "cm");
  ASSERT_TRUE(removed.is_ok()) << removed.status().to_string();
  auto gone = client_->get(kConfigMaps, ns_, "cm");
  ASSERT_FALSE(gone.is_ok());
  EXPECT_EQ(gone.status().code(), StatusCode::kNotFound);
}

TEST_F(HttpClientTest, ServerAndTokenWithTheClusterCaFromTheDataDir) {
  const std::string ca = cluster_->dir->sub("tls/ca.crt");
  auto joined = HttpApiClient::from_server_token(cluster_->admin.server, kToken, "", ca);
  ASSERT_TRUE(joined.is_ok()) << joined.status().to_string();
  auto got = (*joined)->get(kNamespaces, "", ns_);
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  EXPECT_EQ(name_of(*got), ns_);

  // An explicit CA file that cannot be read is an error, not a silent fallback.
  auto missing = HttpApiClient::from_server_token(cluster_->admin.server, kToken,
                                                  cluster_->dir->sub("no-such-ca.crt"), ca);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  // The same through connect(), as node components call it: the CA from the data dir.
  auto node = HttpApiClient::connect(
      {.server = cluster_->admin.server, .token = kToken, .data_dir = cluster_->dir->path()},
      "proxy");
  ASSERT_TRUE(node.is_ok()) << node.status().to_string();
  EXPECT_TRUE((*node)->get(kNamespaces, "", ns_).is_ok());
  auto nothing = HttpApiClient::connect({}, "proxy");
  ASSERT_FALSE(nothing.is_ok());
  EXPECT_EQ(nothing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(nothing.status().message(), "the proxy needs --kubeconfig or --server");

  // Without any CA the server's certificate is not trusted.
  auto untrusted = HttpApiClient::from_server_token(cluster_->admin.server, kToken, "",
                                                    cluster_->dir->sub("absent/ca.crt"));
  ASSERT_TRUE(untrusted.is_ok()) << untrusted.status().to_string();
  EXPECT_FALSE((*untrusted)->get(kNamespaces, "", ns_).is_ok());
}

TEST_F(HttpClientTest, PodCreateAndRemoveWithOptions) {
  auto created = client_->create(kPods, ns_, pod(ns_, "p"));
  ASSERT_TRUE(created.is_ok()) << created.status().to_string();
  // A precondition on a different uid is a conflict, and nothing is deleted.
  DeleteOptions wrong_uid;
  wrong_uid.precondition_uid = "00000000-0000-0000-0000-000000000000";
  auto refused = client_->remove(kPods, ns_, "p", wrong_uid);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kAborted) << refused.status().to_string();
  ASSERT_TRUE(client_->get(kPods, ns_, "p").is_ok());

  DeleteOptions o;
  o.grace_period_seconds = 0;
  o.precondition_uid = uid_of(*created);
  o.propagation_policy = "Background";
  auto removed = client_->remove(kPods, ns_, "p", o);
  ASSERT_TRUE(removed.is_ok()) << removed.status().to_string();
  auto gone = client_->get(kPods, ns_, "p");
  EXPECT_EQ(gone.status().code(), StatusCode::kNotFound);
}

TEST_F(HttpClientTest, Subresources) {
  ASSERT_TRUE(client_->create(kPods, ns_, pod(ns_, "p")).is_ok());
  // POST pods/p/binding assigns the node.
  Json binding{{"apiVersion", "v1"},
               {"kind", "Binding"},
               {"metadata", {{"name", "p"}, {"namespace", ns_}}},
               {"target", {{"apiVersion", "v1"}, {"kind", "Node"}, {"name", "node-1"}}}};
  auto bound = client_->create(kPods, ns_, binding, {}, "p", "binding");
  ASSERT_TRUE(bound.is_ok()) << bound.status().to_string();
  auto got = client_->get(kPods, ns_, "p");
  ASSERT_TRUE(got.is_ok());
  EXPECT_EQ((*got)["spec"]["nodeName"], "node-1");

  // PUT pods/p/status changes the status only.
  Json with_status = *got;
  with_status["status"]["phase"] = "Running";
  with_status["metadata"]["labels"] = {{"ignored", "by-status"}};
  auto updated = client_->update(kPods, ns_, with_status, {}, "status");
  ASSERT_TRUE(updated.is_ok()) << updated.status().to_string();
  EXPECT_EQ((*updated)["status"]["phase"], "Running");
  auto status = client_->get(kPods, ns_, "p", "status");
  ASSERT_TRUE(status.is_ok()) << status.status().to_string();
  EXPECT_EQ((*status)["status"]["phase"], "Running");
  EXPECT_FALSE((*status)["metadata"].contains("labels"));
}

TEST_F(HttpClientTest, DryRunStoresNothing) {
  WriteOptions dry;
  dry.dry_run = true;
  auto created = client_->create(kConfigMaps, ns_, configmap(ns_, "dry", {{"a", "b"}}), dry);
  ASSERT_TRUE(created.is_ok()) << created.status().to_string();
  EXPECT_EQ((*created)["data"]["a"], "b");
  EXPECT_EQ(client_->get(kConfigMaps, ns_, "dry").status().code(), StatusCode::kNotFound);
}

TEST_F(HttpClientTest, MergeStrategicAndJsonPatches) {
  ASSERT_TRUE(
      client_->create(kConfigMaps, ns_, configmap(ns_, "cm", {{"a", "1"}, {"b", "2"}})).is_ok());
  auto merged =
      client_->patch(kConfigMaps, ns_, "cm", PatchType::kMerge, R"({"data":{"a":null,"c":"3"}})");
  ASSERT_TRUE(merged.is_ok()) << merged.status().to_string();
  EXPECT_EQ((*merged)["data"], Json({{"b", "2"}, {"c", "3"}}));

  auto json_patched = client_->patch(kConfigMaps, ns_, "cm", PatchType::kJson,
                                     R"([{"op":"add","path":"/data/d","value":"4"},)"
                                     R"({"op":"remove","path":"/data/b"}])");
  ASSERT_TRUE(json_patched.is_ok()) << json_patched.status().to_string();
  EXPECT_EQ((*json_patched)["data"], Json({{"c", "3"}, {"d", "4"}}));

  ASSERT_TRUE(client_->create(kPods, ns_, pod(ns_, "p")).is_ok());
  // Strategic merge merges containers by name: "d" stays, "c" gets the new image.
  auto strategic = client_->patch(
      kPods, ns_, "p", PatchType::kStrategicMerge,
      R"({"metadata":{"labels":{"x":"y"}},"spec":{"containers":[{"name":"c","image":"busybox:1.37"}]}})");
  ASSERT_TRUE(strategic.is_ok()) << strategic.status().to_string();
  const Json& containers = (*strategic)["spec"]["containers"];
  ASSERT_EQ(containers.size(), 2u) << containers.dump();
  for (const Json& c : containers) {
    EXPECT_EQ(c["image"], c["name"] == "c" ? "busybox:1.37" : "busybox:1.36");
  }
  EXPECT_EQ((*strategic)["metadata"]["labels"]["x"], "y");
}

TEST_F(HttpClientTest, ServerSideApplyWithFieldManagersAndForce) {
  WriteOptions alice;
  alice.field_manager = "alice";
  std::string body = configmap(ns_, "applied", {{"k", "alice"}}).dump();
  auto first = client_->patch(kConfigMaps, ns_, "applied", PatchType::kApply, body, alice);
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_EQ((*first)["data"]["k"], "alice");

  WriteOptions bob;
  bob.field_manager = "bob";
  std::string bob_body = configmap(ns_, "applied", {{"k", "bob"}}).dump();
  auto conflict = client_->patch(kConfigMaps, ns_, "applied", PatchType::kApply, bob_body, bob);
  ASSERT_FALSE(conflict.is_ok());
  EXPECT_EQ(conflict.status().code(), StatusCode::kAborted) << conflict.status().to_string();
  EXPECT_NE(conflict.status().message().find("alice"), std::string::npos)
      << conflict.status().message();

  bob.force = true;
  auto forced = client_->patch(kConfigMaps, ns_, "applied", PatchType::kApply, bob_body, bob);
  ASSERT_TRUE(forced.is_ok()) << forced.status().to_string();
  EXPECT_EQ((*forced)["data"]["k"], "bob");
  bool bob_manages = false;
  for (const Json& m : (*forced)["metadata"]["managedFields"]) {
    if (m["manager"] == "bob" && m["operation"] == "Apply") bob_manages = true;
  }
  EXPECT_TRUE(bob_manages) << (*forced)["metadata"]["managedFields"].dump();
}

TEST_F(HttpClientTest, ErrorMapping) {
  auto missing = client_->get(kConfigMaps, ns_, "nope");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("\"nope\""), std::string::npos)
      << missing.status().message();

  ASSERT_TRUE(client_->create(kConfigMaps, ns_, configmap(ns_, "dup")).is_ok());
  auto dup = client_->create(kConfigMaps, ns_, configmap(ns_, "dup"));
  ASSERT_FALSE(dup.is_ok());
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists) << dup.status().to_string();
  EXPECT_NE(dup.status().message().find("already exists"), std::string::npos);

  // A stale resourceVersion is a 409 Conflict.
  auto current = client_->get(kConfigMaps, ns_, "dup");
  ASSERT_TRUE(current.is_ok());
  Json first = *current;
  first["data"] = {{"x", "1"}};
  ASSERT_TRUE(client_->update(kConfigMaps, ns_, first).is_ok());
  Json stale = *current;
  stale["data"] = {{"x", "2"}};
  auto conflict = client_->update(kConfigMaps, ns_, stale);
  ASSERT_FALSE(conflict.is_ok());
  EXPECT_EQ(conflict.status().code(), StatusCode::kAborted) << conflict.status().to_string();

  // 422: an invalid name.
  auto invalid = client_->create(kConfigMaps, ns_, configmap(ns_, "Not_Valid"));
  ASSERT_FALSE(invalid.is_ok());
  EXPECT_EQ(invalid.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(invalid.status().message().find("Not_Valid"), std::string::npos)
      << invalid.status().message();

  // 400: a malformed label selector.
  ListOptions bad_selector;
  bad_selector.label_selector = "app in (";
  auto bad = client_->list(kConfigMaps, ns_, bad_selector);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << bad.status().to_string();

  // The mapping itself, for codes the server is hard to provoke into.
  EXPECT_EQ(status_from_api_error(410, Json{{"message", "too old"}}).code(),
            StatusCode::kCompacted);
  EXPECT_EQ(status_from_api_error(429, Json()).code(), StatusCode::kUnavailable);
  EXPECT_EQ(status_from_api_error(503, Json()).code(), StatusCode::kUnavailable);
  EXPECT_EQ(status_from_api_error(500, Json()).code(), StatusCode::kInternal);
  EXPECT_EQ(status_from_api_error(403, Json()).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(status_from_api_error(401, Json()).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(status_from_api_error(0, Json{{"code", 409}, {"reason", "AlreadyExists"}}).code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(status_from_api_error(0, Json{{"code", 409}, {"reason", "Conflict"}}).code(),
            StatusCode::kAborted);
}

TEST_F(HttpClientTest, ListWithSelectorsAndPages) {
  for (int i = 0; i < 25; ++i) {
    Json labels{{"tier", i % 2 == 0 ? "even" : "odd"}, {"n", std::to_string(i)}};
    auto c =
        client_->create(kConfigMaps, ns_, configmap(ns_, "cm-" + std::to_string(i), {}, labels));
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  }
  ListOptions even;
  even.label_selector = "tier=even";
  auto evens = client_->list(kConfigMaps, ns_, even);
  ASSERT_TRUE(evens.is_ok()) << evens.status().to_string();
  EXPECT_EQ((*evens)["items"].size(), 13u);
  EXPECT_FALSE((*evens)["metadata"]["resourceVersion"].get<std::string>().empty());

  // Set-based selectors need URL encoding (spaces, parentheses, commas).
  ListOptions set_based;
  set_based.label_selector = "n in (1, 2, 3),tier!=odd";
  auto set = client_->list(kConfigMaps, ns_, set_based);
  ASSERT_TRUE(set.is_ok()) << set.status().to_string();
  ASSERT_EQ((*set)["items"].size(), 1u);
  EXPECT_EQ(name_of((*set)["items"][0]), "cm-2");

  ListOptions by_field;
  by_field.field_selector = "metadata.name=cm-7";
  auto field = client_->list(kConfigMaps, ns_, by_field);
  ASSERT_TRUE(field.is_ok()) << field.status().to_string();
  ASSERT_EQ((*field)["items"].size(), 1u);

  std::set<std::string> seen;
  ListOptions page;
  page.limit = 10;
  int pages = 0;
  while (true) {
    auto l = client_->list(kConfigMaps, ns_, page);
    ASSERT_TRUE(l.is_ok()) << l.status().to_string();
    ++pages;
    EXPECT_LE((*l)["items"].size(), 10u);
    for (const Json& item : (*l)["items"]) seen.insert(name_of(item));
    std::string next = (*l)["metadata"].value("continue", "");
    if (next.empty()) break;
    page.continue_token = next;
    ASSERT_LT(pages, 10);
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen.size(), 25u);
}

TEST_F(HttpClientTest, LargeListAndWatchBodies) {
  // 24 objects of 1 MiB each: a list of about 24 MiB and watch lines of 1 MiB.
  std::string blob(1 << 20, 'x');
  for (int i = 0; i < 24; ++i) {
    blob[0] = static_cast<char>('a' + i);
    auto c = client_->create(kConfigMaps, ns_,
                             configmap(ns_, "big-" + std::to_string(i), {{"blob", blob}}));
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  }
  auto l = client_->list(kConfigMaps, ns_);
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  ASSERT_EQ((*l)["items"].size(), 24u);
  for (const Json& item : (*l)["items"]) {
    EXPECT_EQ(item["data"]["blob"].get_ref<const std::string&>().size(), size_t{1} << 20);
  }
  // resourceVersion "0" (or none) starts a watch with the current objects as ADDED events.
  ListOptions o;
  o.resource_version = "0";
  auto w = client_->watch(kConfigMaps, ns_, o);
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  std::set<std::string> names;
  for (int i = 0; i < 24; ++i) {
    auto ev = (*w)->next();
    ASSERT_TRUE(ev.is_ok()) << ev.status().to_string();
    EXPECT_EQ(ev->type, WatchEventType::kAdded);
    EXPECT_EQ(ev->object["data"]["blob"].get_ref<const std::string&>().size(), size_t{1} << 20);
    names.insert(name_of(ev->object));
  }
  EXPECT_EQ(names.size(), 24u);
}

TEST_F(HttpClientTest, WatchDeliversEventsInOrder) {
  auto l = client_->list(kConfigMaps, ns_);
  ASSERT_TRUE(l.is_ok());
  ListOptions o;
  o.resource_version = (*l)["metadata"]["resourceVersion"];
  auto w = client_->watch(kConfigMaps, ns_, o);
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();

  auto a = client_->create(kConfigMaps, ns_, configmap(ns_, "a"));
  ASSERT_TRUE(a.is_ok());
  Json a2 = *a;
  a2["data"] = {{"k", "v"}};
  ASSERT_TRUE(client_->update(kConfigMaps, ns_, a2).is_ok());
  ASSERT_TRUE(client_->create(kConfigMaps, ns_, configmap(ns_, "b")).is_ok());
  ASSERT_TRUE(client_->remove(kConfigMaps, ns_, "a").is_ok());

  std::vector<std::string> got;
  int64_t last_rv = 0;
  for (int i = 0; i < 4; ++i) {
    auto ev = (*w)->next();
    ASSERT_TRUE(ev.is_ok()) << ev.status().to_string();
    got.push_back(event_type_name(ev->type) + " " + name_of(ev->object));
    int64_t rv = std::stoll(resource_version_of(ev->object));
    EXPECT_GT(rv, last_rv);
    last_rv = rv;
  }
  EXPECT_EQ(got, (std::vector<std::string>{"ADDED a", "MODIFIED a", "ADDED b", "DELETED a"}));
}

TEST_F(HttpClientTest, WatchHonoursSelectors) {
  ListOptions o;
  o.label_selector = "app=web";
  o.resource_version = "0";
  auto w = client_->watch(kConfigMaps, ns_, o);
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  ASSERT_TRUE(
      client_->create(kConfigMaps, ns_, configmap(ns_, "other", {}, {{"app", "db"}})).is_ok());
  ASSERT_TRUE(
      client_->create(kConfigMaps, ns_, configmap(ns_, "web", {}, {{"app", "web"}})).is_ok());
  auto ev = (*w)->next();
  ASSERT_TRUE(ev.is_ok()) << ev.status().to_string();
  EXPECT_EQ(ev->type, WatchEventType::kAdded);
  EXPECT_EQ(name_of(ev->object), "web");
}

TEST_F(HttpClientTest, WatchCancelFromAnotherThreadIsPrompt) {
  ListOptions o;
  o.resource_version = "0";
  auto w = client_->watch(kConfigMaps, ns_, o);
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  WatchStream* stream = w->get();
  std::thread canceller([stream] {
    std::this_thread::sleep_for(300ms);
    stream->cancel();
  });
  auto t0 = Clock::now();
  auto ev = stream->next();  // nothing happens in this namespace: blocks until cancel()
  auto waited = Clock::now() - t0;
  canceller.join();
  ASSERT_FALSE(ev.is_ok());
  EXPECT_EQ(ev.status().code(), StatusCode::kCancelled);
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 2s);
  // Later calls keep saying so.
  EXPECT_EQ(stream->next().status().code(), StatusCode::kCancelled);

  // cancel() before any next() works too.
  auto w2 = client_->watch(kConfigMaps, ns_, o);
  ASSERT_TRUE(w2.is_ok());
  (*w2)->cancel();
  EXPECT_EQ((*w2)->next().status().code(), StatusCode::kCancelled);
}

TEST_F(HttpClientTest, WatchOutlivesItsClient) {
  ListOptions o;
  o.resource_version = "0";
  auto w = make_client(cluster_->admin)->watch(kConfigMaps, ns_, o);  // the client is gone
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  ASSERT_TRUE(client_->create(kConfigMaps, ns_, configmap(ns_, "later")).is_ok());
  auto ev = (*w)->next();
  ASSERT_TRUE(ev.is_ok()) << ev.status().to_string();
  EXPECT_EQ(name_of(ev->object), "later");
}

TEST_F(HttpClientTest, WatchEndIsUnavailable) {
  ListOptions o;
  o.resource_version = "0";
  o.timeout_seconds = 1;
  auto w = client_->watch(kConfigMaps, ns_, o);
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  auto t0 = Clock::now();
  auto ev = (*w)->next();
  ASSERT_FALSE(ev.is_ok());
  EXPECT_EQ(ev.status().code(), StatusCode::kUnavailable) << ev.status().to_string();
  EXPECT_LT(Clock::now() - t0, 10s);
  EXPECT_EQ((*w)->next().status().code(), StatusCode::kUnavailable);
}

TEST_F(HttpClientTest, WatchRequestErrorsComeFromWatch) {
  ListOptions o;
  o.resource_version = "not-a-number";
  auto w = client_->watch(kConfigMaps, ns_, o);
  ASSERT_FALSE(w.is_ok());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument) << w.status().to_string();
  EXPECT_NE(w.status().message().find("not-a-number"), std::string::npos);
}

TEST_F(HttpClientTest, BearerTokenAuthentication) {
  Kubeconfig kc = cluster_->admin;
  kc.client_certificate_data.clear();
  kc.client_key_data.clear();
  kc.token = kToken;
  auto token_client = make_client(kc);
  auto l = token_client->list(kNamespaces, "");
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  EXPECT_FALSE((*l)["items"].empty());
  auto created = token_client->create(kConfigMaps, ns_, configmap(ns_, "by-token"));
  ASSERT_TRUE(created.is_ok()) << created.status().to_string();

  kc.token = "wrong-token";
  auto wrong = make_client(kc)->list(kNamespaces, "");
  ASSERT_FALSE(wrong.is_ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kUnauthenticated) << wrong.status().to_string();

  kc.token.clear();
  auto anonymous = make_client(kc);
  EXPECT_EQ(anonymous->list(kNamespaces, "").status().code(), StatusCode::kUnauthenticated);
  // Unauthenticated endpoints still answer.
  auto ready = anonymous->raw("GET", "/readyz");
  ASSERT_TRUE(ready.is_ok()) << ready.status().to_string();
  EXPECT_EQ(*ready, "ok");
}

TEST_F(HttpClientTest, ServerVerification) {
  // A CA that did not sign the server's certificate.
  auto other_ca = pki::CertificateAuthority::create("not-the-cluster-ca");
  ASSERT_TRUE(other_ca.is_ok());
  Kubeconfig bad = cluster_->admin;
  bad.certificate_authority_data = other_ca->cert_pem();
  auto r = make_client(bad)->list(kNamespaces, "");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("certificate did not verify"), std::string::npos)
      << r.status().message();

  // insecure-skip-tls-verify accepts it anyway.
  bad.insecure_skip_tls_verify = true;
  auto insecure = make_client(bad)->list(kNamespaces, "");
  EXPECT_TRUE(insecure.is_ok()) << insecure.status().to_string();

  // tls-server-name replaces the host in the name check.
  Kubeconfig named = cluster_->admin;
  named.tls_server_name = "kubernetes.default.svc";
  auto ok = make_client(named)->list(kNamespaces, "");
  EXPECT_TRUE(ok.is_ok()) << ok.status().to_string();
  named.tls_server_name = "elsewhere.example.com";
  auto mismatch = make_client(named)->list(kNamespaces, "");
  ASSERT_FALSE(mismatch.is_ok());
  EXPECT_EQ(mismatch.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(mismatch.status().message().find("elsewhere.example.com"), std::string::npos)
      << mismatch.status().message();

  // A server that is not there.
  Kubeconfig nowhere = cluster_->admin;
  nowhere.server = "https://127.0.0.1:" + std::to_string(testing::free_tcp_port());
  auto refused = make_client(nowhere)->list(kNamespaces, "");
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("cannot connect"), std::string::npos)
      << refused.status().message();
}

TEST(HttpClientCreateTest, RejectsUnusableKubeconfigs) {
  Kubeconfig kc;
  kc.server = "http://127.0.0.1:6443";
  EXPECT_EQ(HttpApiClient::create(kc).status().code(), StatusCode::kInvalidArgument);
  kc.server = "https://";
  EXPECT_EQ(HttpApiClient::create(kc).status().code(), StatusCode::kInvalidArgument);
  kc.server = "https://127.0.0.1:99999";
  EXPECT_EQ(HttpApiClient::create(kc).status().code(), StatusCode::kInvalidArgument);
  kc.server = "https://127.0.0.1:6443";
  kc.certificate_authority_data = "not a certificate";
  EXPECT_EQ(HttpApiClient::create(kc).status().code(), StatusCode::kInvalidArgument);
  kc.certificate_authority_data.clear();
  kc.client_certificate_data = "-----BEGIN CERTIFICATE-----\n";
  EXPECT_EQ(HttpApiClient::create(kc).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(HttpApiClient::from_kubeconfig_file("/nonexistent/kubeconfig").is_ok());
}

TEST_F(HttpClientTest, FromKubeconfigFile) {
  auto c = HttpApiClient::from_kubeconfig_file(cluster_->server->admin_kubeconfig());
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_TRUE((*c)->get(kNamespaces, "", ns_).is_ok());
}

TEST_F(HttpClientTest, ManyThreadsShareThePool) {
  HttpClientOptions o;
  o.max_idle_connections = 32;
  auto pooled = make_client(cluster_->admin, o);
  constexpr int kThreads = 32;
  constexpr int kObjects = 2000;
  std::atomic<int> next{0};
  std::atomic<int> ok{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < kObjects; i = next++) {
        auto r = pooled->create(kConfigMaps, ns_, configmap(ns_, "cm-" + std::to_string(i)));
        if (r.is_ok()) {
          ++ok;
        } else {
          std::lock_guard lock(mu);
          failures.push_back(r.status().to_string());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kObjects) << (failures.empty() ? "" : failures.front());
  // Each thread holds at most one connection at a time, and they are reused.
  EXPECT_LE(pooled->connections_opened(), static_cast<uint64_t>(kThreads));
  EXPECT_LE(pooled->idle_connections(), static_cast<size_t>(kThreads));
  auto l = pooled->list(kConfigMaps, ns_);
  ASSERT_TRUE(l.is_ok());
  EXPECT_EQ((*l)["items"].size(), static_cast<size_t>(kObjects));
}

TEST_F(HttpClientTest, ListOfTenThousandPods) {
  constexpr int kPodCount = 10000;
  std::atomic<int> next{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < kPodCount; i = next++) {
        Json p = pod(ns_, "pod-" + std::to_string(i));
        p["metadata"]["labels"] = {{"app", "big-list"}, {"index", std::to_string(i)}};
        if (!client_->create(kPods, ns_, p).is_ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  auto l = client_->list(kPods, ns_);
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  ASSERT_EQ((*l)["items"].size(), static_cast<size_t>(kPodCount));
  EXPECT_GT((*l).dump().size(), size_t{10} << 20);
}

TEST_F(HttpClientTest, IdleConnectionsAreCapped) {
  HttpClientOptions o;
  o.max_idle_connections = 2;
  auto pooled = make_client(cluster_->admin, o);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        if (!pooled->get(kNamespaces, "", ns_).is_ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(pooled->idle_connections(), 2u);
  EXPECT_GE(pooled->idle_connections(), 1u);
}

TEST(HttpClientRateLimitTest, QpsSpacesRequests) {
  Cluster c = start_cluster();
  HttpClientOptions o;
  o.qps = 20;
  o.burst = 1;
  auto limited = make_client(c.admin, o);
  auto t0 = Clock::now();
  for (int i = 0; i < 11; ++i) ASSERT_TRUE(limited->get(kNamespaces, "", "default").is_ok());
  // 10 intervals of 50 ms after the first request.
  EXPECT_GE(Clock::now() - t0, 450ms);
}

// A continue token whose revision the store has compacted away: the API server answers 410
// (reason Expired), which is kCompacted.
TEST(HttpClientCompactionTest, ListContinueAfterCompactionIsCompacted) {
  Cluster c = start_cluster(200ms);
  auto client = make_client(c.admin);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        client->create(kConfigMaps, "default", configmap("default", "cm-" + std::to_string(i)))
            .is_ok());
  }
  ListOptions page;
  page.limit = 1;
  auto first = client->list(kConfigMaps, "default", page);
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  page.continue_token = (*first)["metadata"].value("continue", "");
  ASSERT_FALSE(page.continue_token.empty());
  // Writes after the token's revision, then a wait past the compaction window.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        client->create(kConfigMaps, "default", configmap("default", "later-" + std::to_string(i)))
            .is_ok());
  }
  auto deadline = Clock::now() + 20s;
  Result<Json> next = client->list(kConfigMaps, "default", page);
  while (next.is_ok() && Clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
    next = client->list(kConfigMaps, "default", page);
  }
  ASSERT_FALSE(next.is_ok());
  EXPECT_EQ(next.status().code(), StatusCode::kCompacted) << next.status().to_string();
}

// The server restarts on the same port: pooled connections are dead, and requests (a GET and a
// POST) succeed on new ones without the caller noticing.
TEST(HttpClientReconnectTest, SurvivesServerRestart) {
  Cluster c = start_cluster();
  auto client = make_client(c.admin);
  ASSERT_TRUE(client->get(kNamespaces, "", "default").is_ok());
  ASSERT_TRUE(client->get(kNamespaces, "", "default").is_ok());
  EXPECT_EQ(client->idle_connections(), 1u);
  uint64_t opened = client->connections_opened();
  EXPECT_EQ(opened, 1u);

  int port = c.server->port();
  c.server->stop();
  c.server.reset();
  Cluster again = start_cluster(storage::kDefaultCompactionWindow, std::move(c.dir), port);
  auto got = client->get(kNamespaces, "", "default");
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  EXPECT_EQ(client->connections_opened(), opened + 1);
  auto created = client->create(kConfigMaps, "default", configmap("default", "after-restart"));
  ASSERT_TRUE(created.is_ok()) << created.status().to_string();
}

// ---------------------------------------------------------------------------------------------
// A scripted HTTPS server: a function decides each answer from the request and its number
// (1-based): a JSON body, a chunked stream of lines, or closing the connection without answering
// (as a server does when an idle keep-alive connection times out just as a request arrives).

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

struct ScriptedReply {
  bool drop = false;  // close the connection without answering
  int status = 200;
  std::string body = R"({"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"x"}})";
  // When not empty: a chunked body made of these chunks, after which the response ends.
  std::vector<std::string> chunks;
};

using Script = std::function<ScriptedReply(int n, const http::request<http::string_body>&)>;

// Drops request number `n`, answers the rest with the default reply.
Script drop_request(int n) {
  return [n](int i, const auto&) {
    ScriptedReply r;
    r.drop = i == n;
    return r;
  };
}

class ScriptedServer {
 public:
  explicit ScriptedServer(Script script) : script_(std::move(script)) {
    auto ca = pki::CertificateAuthority::create("scripted-ca");
    SKIFF_CHECK(ca.is_ok(), ca.status().to_string());
    auto serving = ca->issue_serving_cert("scripted", {"127.0.0.1"});
    SKIFF_CHECK(serving.is_ok(), serving.status().to_string());
    ca_pem_ = ca->cert_pem();
    tls_.use_certificate_chain(net::buffer(serving->cert_pem));
    tls_.use_private_key(net::buffer(serving->key_pem), ssl::context::pem);
    acceptor_.open(tcp::v4());
    acceptor_.set_option(net::socket_base::reuse_address(true));
    acceptor_.bind(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    acceptor_.listen();
    accept();
    thread_ = std::thread([this] { ioc_.run(); });
  }

  ~ScriptedServer() {
    ioc_.stop();
    thread_.join();
  }

  Kubeconfig kubeconfig() const {
    Kubeconfig kc;
    kc.server = "https://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
    kc.certificate_authority_data = ca_pem_;
    return kc;
  }

  std::vector<std::string> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }
  int connections() const { return connections_.load(); }

 private:
  using Stream = beast::ssl_stream<beast::tcp_stream>;

  void accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;
      ++connections_;
      auto stream = std::make_shared<Stream>(std::move(socket), tls_);
      stream->async_handshake(ssl::stream_base::server, [this, stream](beast::error_code ec) {
        if (!ec) read(stream, std::make_shared<beast::flat_buffer>());
      });
      accept();
    });
  }

  void read(std::shared_ptr<Stream> stream, std::shared_ptr<beast::flat_buffer> buffer) {
    auto req = std::make_shared<http::request<http::string_body>>();
    http::async_read(
        *stream, *buffer, *req, [this, stream, buffer, req](beast::error_code ec, size_t) {
          if (ec) return;
          int n = 0;
          {
            std::lock_guard lock(mu_);
            requests_.push_back(std::string(req->method_string()) + " " +
                                std::string(req->target()));
            n = static_cast<int>(requests_.size());
          }
          ScriptedReply reply = script_(n, *req);
          if (reply.drop) {
            beast::error_code ignored;
            beast::get_lowest_layer(*stream).socket().close(ignored);
            return;
          }
          // The response as raw bytes, so chunk boundaries are exactly as scripted.
          auto wire =
              std::make_shared<std::string>("HTTP/1.1 " + std::to_string(reply.status) +
                                            " Scripted\r\n" + "Content-Type: application/json\r\n");
          if (reply.chunks.empty()) {
            *wire +=
                "Content-Length: " + std::to_string(reply.body.size()) + "\r\n\r\n" + reply.body;
          } else {
            *wire += "Transfer-Encoding: chunked\r\n\r\n";
            for (const std::string& chunk : reply.chunks) {
              char size[32];
              std::snprintf(size, sizeof(size), "%zx\r\n", chunk.size());
              *wire += size + chunk + "\r\n";
            }
            *wire += "0\r\n\r\n";
          }
          net::async_write(*stream, net::buffer(*wire),
                           [this, stream, buffer, wire](beast::error_code ec, size_t) {
                             if (!ec) read(stream, buffer);
                           });
        });
  }

  const Script script_;
  net::io_context ioc_;
  ssl::context tls_{ssl::context::tls_server};
  tcp::acceptor acceptor_{ioc_};
  std::string ca_pem_;
  std::mutex mu_;
  std::vector<std::string> requests_;  // guarded by mu_
  std::atomic<int> connections_{0};
  std::thread thread_;
};

TEST(HttpClientRetryTest, IdempotentRequestIsRetriedOnANewConnection) {
  ScriptedServer server(drop_request(2));
  auto client = make_client(server.kubeconfig());
  ASSERT_TRUE(client->get(kConfigMaps, "ns", "x").is_ok());
  auto second = client->get(kConfigMaps, "ns", "x");  // dropped, then retried
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_EQ(name_of(*second), "x");
  EXPECT_EQ(server.requests().size(), 3u);
  EXPECT_EQ(server.connections(), 2);
}

TEST(HttpClientRetryTest, PostIsNotRetriedOnceWritten) {
  ScriptedServer server(drop_request(2));
  auto client = make_client(server.kubeconfig());
  ASSERT_TRUE(client->get(kConfigMaps, "ns", "x").is_ok());
  auto post = client->create(kConfigMaps, "ns", configmap("ns", "x"));
  ASSERT_FALSE(post.is_ok());
  EXPECT_EQ(post.status().code(), StatusCode::kUnavailable) << post.status().to_string();
  EXPECT_NE(post.status().message().find("closed the connection"), std::string::npos)
      << post.status().message();
  // The server saw the POST exactly once.
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].rfind("POST ", 0), 0u) << seen[1];
  // The next request gets a new connection.
  EXPECT_TRUE(client->get(kConfigMaps, "ns", "x").is_ok());
}

TEST(HttpClientRetryTest, FreshConnectionFailuresAreNotRetried) {
  ScriptedServer server(drop_request(1));
  auto client = make_client(server.kubeconfig());
  auto r = client->get(kConfigMaps, "ns", "x");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(server.requests().size(), 1u);
}

// What the API server sends for a watch from a compacted revision: 200, then an ERROR event
// with a 410 Status, then the end of the stream. The event comes back as kError; its Status maps
// to kCompacted; the end of the stream is kUnavailable. Lines split across chunks are joined.
TEST(HttpClientScriptedWatchTest, GoneAsErrorEvent) {
  ScriptedServer server([](int, const auto&) {
    ScriptedReply r;
    std::string added =
        R"j({"type":"ADDED","object":{"kind":"ConfigMap","metadata":{"name":"a"}}})j"
        "\n";
    std::string error =
        R"j({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure",)j"
        R"j("message":"too old resource version: 3 (7)","reason":"Expired","code":410}})j"
        "\n";
    r.chunks = {added.substr(0, 10), added.substr(10) + error.substr(0, 30), error.substr(30)};
    return r;
  });
  auto client = make_client(server.kubeconfig());
  ListOptions o;
  o.resource_version = "3";
  o.allow_watch_bookmarks = true;
  o.timeout_seconds = 30;
  o.label_selector = "a in (x, y)";
  auto w = client->watch(kConfigMaps, "ns", o);
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  auto added = (*w)->next();
  ASSERT_TRUE(added.is_ok()) << added.status().to_string();
  EXPECT_EQ(added->type, WatchEventType::kAdded);
  EXPECT_EQ(name_of(added->object), "a");
  auto gone = (*w)->next();
  ASSERT_TRUE(gone.is_ok()) << gone.status().to_string();
  EXPECT_EQ(gone->type, WatchEventType::kError);
  Status s = status_from_api_error(0, gone->object);
  EXPECT_EQ(s.code(), StatusCode::kCompacted);
  EXPECT_EQ(s.message(), "too old resource version: 3 (7)");
  auto end = (*w)->next();
  ASSERT_FALSE(end.is_ok());
  EXPECT_EQ(end.status().code(), StatusCode::kUnavailable);
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(server.requests()[0],
            "GET /api/v1/namespaces/ns/configmaps?watch=1&labelSelector=a%20in%20%28x%2C%20y%29"
            "&resourceVersion=3&allowWatchBookmarks=true&timeoutSeconds=30");
}

// A server may also refuse the watch request itself with 410: watch() returns kCompacted.
TEST(HttpClientScriptedWatchTest, GoneAsResponse) {
  ScriptedServer server([](int, const auto&) {
    ScriptedReply r;
    r.status = 410;
    r.body = R"({"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old",)"
             R"("reason":"Expired","code":410})";
    return r;
  });
  auto client = make_client(server.kubeconfig());
  auto w = client->watch(kConfigMaps, "ns", {});
  ASSERT_FALSE(w.is_ok());
  EXPECT_EQ(w.status().code(), StatusCode::kCompacted);
  EXPECT_EQ(w.status().message(), "too old");
}

TEST(HttpClientScriptedWatchTest, MalformedLinesAreErrors) {
  ScriptedServer server([](int, const auto&) {
    ScriptedReply r;
    r.chunks = {"not json\n",
                R"({"type":"SOMETHING","object":{}})"
                "\n",
                R"({"type":"DELETED","object":{"metadata":{"name":"z"}}})"};  // no final newline
    return r;
  });
  auto client = make_client(server.kubeconfig());
  auto w = client->watch(kConfigMaps, "ns", {});
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  EXPECT_EQ((*w)->next().status().code(), StatusCode::kInternal);
  EXPECT_EQ((*w)->next().status().code(), StatusCode::kInternal);
  auto last = (*w)->next();  // the unterminated last line still counts once the stream ends
  ASSERT_TRUE(last.is_ok()) << last.status().to_string();
  EXPECT_EQ(last->type, WatchEventType::kDeleted);
  EXPECT_EQ((*w)->next().status().code(), StatusCode::kUnavailable);
}

TEST(HttpClientScriptedWatchTest, RequestsCarryTheRightParameters) {
  ScriptedServer server([](int, const auto&) { return ScriptedReply(); });
  auto client = make_client(server.kubeconfig());
  WriteOptions w;
  w.dry_run = true;
  w.field_manager = "me & you";
  w.force = true;
  ASSERT_TRUE(client->patch(kConfigMaps, "ns", "x", PatchType::kApply, "{}", w).is_ok());
  ASSERT_TRUE(client->create(kConfigMaps, "ns", configmap("ns", "x")).is_ok());
  ListOptions l;
  l.field_selector = "metadata.name=x";
  l.limit = 5;
  l.continue_token = "abc+/=";
  ASSERT_TRUE(client->list(kConfigMaps, "", l).is_ok());
  ASSERT_TRUE(client->remove(kConfigMaps, "ns", "x").is_ok());
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(
      seen[0],
      "PATCH /api/v1/namespaces/ns/configmaps/x?fieldManager=me%20%26%20you&dryRun=All&force=true");
  EXPECT_EQ(seen[1], "POST /api/v1/namespaces/ns/configmaps?fieldManager=skiff");
  EXPECT_EQ(seen[2],
            "GET /api/v1/configmaps?fieldSelector=metadata.name%3Dx&limit=5&continue=abc%2B%2F%3D");
  EXPECT_EQ(seen[3], "DELETE /api/v1/namespaces/ns/configmaps/x");
}

TEST(HttpClientRetryTest, RequestTimeout) {
  // A TCP listener that never completes the TLS handshake.
  net::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  Kubeconfig kc;
  kc.server = "https://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  kc.insecure_skip_tls_verify = true;
  HttpClientOptions o;
  o.request_timeout = 300ms;
  auto client = make_client(kc, o);
  auto t0 = Clock::now();
  auto r = client->get(kConfigMaps, "ns", "x");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_NE(r.status().message().find("timed out"), std::string::npos) << r.status().message();
  EXPECT_LT(Clock::now() - t0, 3s);
}

}  // namespace
}  // namespace skiff::client
