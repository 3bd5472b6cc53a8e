#include "controllers/endpoints/endpoint_util.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>

#include "client/fake_api_client.h"
#include "controller_test_util.h"

namespace skiff::controllers::endpoint_util {
namespace {

using client::resources::kServices;
using namespace std::chrono_literals;

Json service(const std::string& name, Json selector) {
  Json s = {{"metadata", {{"namespace", "default"}, {"name", name}}}, {"spec", Json::object()}};
  if (!selector.is_null()) s["spec"]["selector"] = std::move(selector);
  return s;
}

ObjectPtr pod(Json labels, const std::string& ip = "10.0.0.1") {
  return std::make_shared<const Json>(
      Json{{"metadata", {{"namespace", "default"}, {"name", "p"}, {"labels", std::move(labels)}}},
           {"status", {{"podIP", ip}}}});
}

// Services "web" (app=web), "db" (app=db), "all" (an empty selector: every pod) and "manual"
// (no selector) in an informer, and the handlers on a queue.
class EndpointHandlersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    api_.seed(kServices, service("web", {{"app", "web"}}));
    api_.seed(kServices, service("db", {{"app", "db"}}));
    api_.seed(kServices, service("all", Json::object()));
    api_.seed(kServices, service("manual", Json()));
    services_.start();
    ASSERT_TRUE(services_.wait_for_sync(5s));
  }
  void TearDown() override {
    services_.stop();
    queue_.shut_down();
  }

  std::set<std::string> drain() { return controllers::testing::drain(queue_); }

  client::FakeApiClient api_;
  client::Informer services_{api_, kServices};
  client::WorkQueue queue_;
};

TEST_F(EndpointHandlersTest, ServiceEventsQueueTheService) {
  client::EventHandlers h = service_handlers(queue_);
  ObjectPtr web = services_.get("default", "web");
  ASSERT_NE(web, nullptr);
  h.on_add(web);
  EXPECT_EQ(drain(), std::set<std::string>{"default/web"});
  h.on_update(web, web);
  EXPECT_EQ(drain(), std::set<std::string>{"default/web"});
  h.on_delete(web);
  EXPECT_EQ(drain(), std::set<std::string>{"default/web"});
}

TEST_F(EndpointHandlersTest, PodEventsQueueTheServicesSelectingThePod) {
  client::EventHandlers h = pod_handlers(services_, queue_);
  h.on_add(pod({{"app", "web"}}));
  EXPECT_EQ(drain(), (std::set<std::string>{"default/web", "default/all"}));
  h.on_delete(pod({{"app", "db"}}));
  EXPECT_EQ(drain(), (std::set<std::string>{"default/db", "default/all"}));
  // Nothing endpoints are built from changed: nothing.
  h.on_update(pod({{"app", "web"}}), pod({{"app", "web"}}));
  EXPECT_EQ(drain(), std::set<std::string>{});
  // A new address: the Services selecting it now.
  h.on_update(pod({{"app", "web"}}), pod({{"app", "web"}}, "10.0.0.2"));
  EXPECT_EQ(drain(), (std::set<std::string>{"default/web", "default/all"}));
  // New labels: the Services selecting it now and before.
  h.on_update(pod({{"app", "web"}}), pod({{"app", "db"}}));
  EXPECT_EQ(drain(), (std::set<std::string>{"default/web", "default/db", "default/all"}));
}

}  // namespace
}  // namespace skiff::controllers::endpoint_util
