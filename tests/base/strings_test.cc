#include "base/strings.h"

#include <gtest/gtest.h>

namespace skiff {
namespace {

using Words = std::vector<std::string_view>;

TEST(Strings, TrimSpace) {
  EXPECT_EQ(trim_space("  a b\t\n"), "a b");
  EXPECT_EQ(trim_space("a"), "a");
  EXPECT_EQ(trim_space(" \t\r\n"), "");
  EXPECT_EQ(trim_space(""), "");
}

TEST(Strings, SplitSpace) {
  EXPECT_EQ(split_space("*/5  * \t* * 1-5"), (Words{"*/5", "*", "*", "*", "1-5"}));
  EXPECT_EQ(split_space("  sleep 5\n"), (Words{"sleep", "5"}));
  EXPECT_EQ(split_space("one"), (Words{"one"}));
  EXPECT_TRUE(split_space("").empty());
  EXPECT_TRUE(split_space(" \t ").empty());
}

}  // namespace
}  // namespace skiff
