#include "kubelet/cni/masquerade.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <chrono>

#include "base/process.h"

namespace skiff::kubelet::cni {
namespace {

using namespace std::chrono_literals;

TEST(MasqueradeRulesTest, OneRulePerFamilyLikeTheBridgePlugin) {
  auto script = render_masquerade_rules({"10.42.3.0/24", "fd00:42:3::/64"});
  ASSERT_TRUE(script.is_ok()) << script.status().to_string();
  EXPECT_NE(script->find("type nat hook postrouting priority srcnat"), std::string::npos);
  EXPECT_NE(script->find("ip saddr 10.42.3.0/24 ip daddr != 10.42.3.0/24 ip daddr != "
                         "224.0.0.0/4 masquerade"),
            std::string::npos)
      << *script;
  EXPECT_NE(script->find("ip6 saddr fd00:42:3::/64 ip6 daddr != fd00:42:3::/64 ip6 daddr != "
                         "ff00::/8 masquerade"),
            std::string::npos)
      << *script;
}

TEST(MasqueradeRulesTest, BadCidrsAreRefused) {
  EXPECT_EQ(render_masquerade_rules({}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(render_masquerade_rules({"10.42.3.0"}).status().code(), StatusCode::kInvalidArgument);
  // Nothing but CIDRs reaches the script.
  EXPECT_EQ(render_masquerade_rules({"10.42.3.0/24; flush ruleset"}).status().code(),
            StatusCode::kInvalidArgument);
}

// The rules in the kernel, in a network namespace of this test process's own.
class MasqueradeKernelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { own_netns_ = ::unshare(CLONE_NEWNET) == 0; }
  void SetUp() override {
    if (!own_netns_) GTEST_SKIP() << "needs CAP_SYS_ADMIN for a network namespace";
  }
  static std::string table() {
    auto out = run_command({"nft", "list", "table", "inet", kMasqueradeTable}, 10s);
    if (!out.is_ok() || !out->status.success()) return "";
    return out->out;
  }
  static inline bool own_netns_ = false;
};

TEST_F(MasqueradeKernelTest, AppliedReplacedAndRemoved) {
  ASSERT_TRUE(apply_masquerade_rules({"10.42.3.0/24"}).is_ok());
  std::string first = table();
  EXPECT_NE(first.find("ip saddr 10.42.3.0/24 ip daddr != 10.42.3.0/24"), std::string::npos)
      << first;
  EXPECT_NE(first.find("masquerade"), std::string::npos) << first;

  // A new CIDR replaces the rule; it is not added beside the old one.
  ASSERT_TRUE(apply_masquerade_rules({"10.42.7.0/24"}).is_ok());
  std::string second = table();
  EXPECT_NE(second.find("ip saddr 10.42.7.0/24"), std::string::npos) << second;
  EXPECT_EQ(second.find("10.42.3.0/24"), std::string::npos) << second;

  // A bad CIDR changes nothing.
  EXPECT_FALSE(apply_masquerade_rules({"10.42.9.0/33"}).is_ok());
  EXPECT_EQ(table(), second);

  ASSERT_TRUE(remove_masquerade_rules().is_ok());
  EXPECT_EQ(table(), "");
  EXPECT_TRUE(remove_masquerade_rules().is_ok());
}

}  // namespace
}  // namespace skiff::kubelet::cni
