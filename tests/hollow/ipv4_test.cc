#include "hollow/ipv4.h"

#include <gtest/gtest.h>

#include <set>

namespace skiff::hollow {
namespace {

TEST(Ipv4, ParsesAndFormatsAddresses) {
  EXPECT_EQ(parse_ipv4("10.1.2.3"), 0x0a010203u);
  EXPECT_EQ(parse_ipv4("255.255.255.255"), 0xffffffffu);
  EXPECT_EQ(format_ipv4(0x0a800001), "10.128.0.1");
  for (const char* bad : {"", "10.1.2", "10.1.2.3.4", "256.1.1.1", "1.2.3.04", "a.b.c.d",
                          "10.1.2.3 ", "::1", "10..2.3"}) {
    EXPECT_FALSE(parse_ipv4(bad).has_value()) << bad;
  }
}

TEST(Ipv4Cidr, ParsesAndClearsHostBits) {
  auto c = Ipv4Cidr::parse("10.128.5.7/9").value();
  EXPECT_EQ(c.to_string(), "10.128.0.0/9");
  EXPECT_EQ(c.size(), uint64_t{1} << 23);
  EXPECT_TRUE(c.contains(*parse_ipv4("10.255.255.255")));
  EXPECT_FALSE(c.contains(*parse_ipv4("10.127.255.255")));
  EXPECT_FALSE(c.contains(*parse_ipv4("11.0.0.0")));
  EXPECT_EQ(Ipv4Cidr::parse("0.0.0.0/0")->size(), uint64_t{1} << 32);
  for (const char* bad : {"10.0.0.0", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/", "fd00::/64",
                          "10.0.0.0/08", "10.0.0.0/8x"}) {
    EXPECT_FALSE(Ipv4Cidr::parse(bad).is_ok()) << bad;
  }
}

TEST(Ipv4Cidr, BlocksCountFromTheBase) {
  auto c = Ipv4Cidr::parse("10.128.0.0/9").value();
  EXPECT_EQ(c.block(24, 0)->to_string(), "10.128.0.0/24");
  EXPECT_EQ(c.block(24, 1)->to_string(), "10.128.1.0/24");
  EXPECT_EQ(c.block(24, 4999)->to_string(), "10.147.135.0/24");
  EXPECT_EQ(c.block(24, 32767)->to_string(), "10.255.255.0/24");
  EXPECT_EQ(c.block(24, 32768).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c.block(8, 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(PodAddressPool, SkipsNetworkGatewayAndBroadcastAndReusesLowestFreed) {
  PodAddressPool pool(Ipv4Cidr::parse("10.128.3.0/24").value());
  EXPECT_EQ(pool.capacity(), 253u);
  EXPECT_EQ(format_ipv4(*pool.allocate()), "10.128.3.2");
  EXPECT_EQ(format_ipv4(*pool.allocate()), "10.128.3.3");
  EXPECT_EQ(format_ipv4(*pool.allocate()), "10.128.3.4");
  pool.release(*parse_ipv4("10.128.3.3"));
  EXPECT_EQ(pool.used(), 2u);
  EXPECT_EQ(format_ipv4(*pool.allocate()), "10.128.3.3");
  EXPECT_FALSE(pool.reserve(*parse_ipv4("10.128.3.0")));
  EXPECT_FALSE(pool.reserve(*parse_ipv4("10.128.3.1")));
  EXPECT_FALSE(pool.reserve(*parse_ipv4("10.128.3.255")));
  EXPECT_FALSE(pool.reserve(*parse_ipv4("10.128.4.7")));
  EXPECT_FALSE(pool.reserve(*parse_ipv4("10.128.3.2")));  // taken
  EXPECT_TRUE(pool.reserve(*parse_ipv4("10.128.3.200")));
  EXPECT_TRUE(pool.in_use(*parse_ipv4("10.128.3.200")));
  pool.release(*parse_ipv4("10.128.3.99"));  // not taken: ignored
  EXPECT_EQ(pool.used(), 4u);
}

TEST(PodAddressPool, RunsOut) {
  PodAddressPool pool(Ipv4Cidr::parse("10.0.0.0/29").value());
  std::set<uint32_t> got;
  while (auto a = pool.allocate()) got.insert(*a);
  EXPECT_EQ(got.size(), 5u);  // .2 - .6
  EXPECT_EQ(format_ipv4(*got.begin()), "10.0.0.2");
  EXPECT_EQ(format_ipv4(*got.rbegin()), "10.0.0.6");
  pool.release(*parse_ipv4("10.0.0.5"));
  EXPECT_EQ(format_ipv4(*pool.allocate()), "10.0.0.5");
  EXPECT_FALSE(pool.allocate().has_value());
}

}  // namespace
}  // namespace skiff::hollow
