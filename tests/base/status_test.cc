#include "base/status.h"

#include <gtest/gtest.h>

namespace skiff {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0) return Status(StatusCode::kInvalidArgument, "not positive");
  return v;
}

Result<int> doubled(int v) {
  SKIFF_ASSIGN_OR_RETURN(int x, parse_positive(v));
  return x * 2;
}

TEST(StatusTest, OkAndError) {
  EXPECT_TRUE(Status::ok().is_ok());
  Status s(StatusCode::kNotFound, "nope");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.to_string(), "NotFound: nope");
}

TEST(StatusTest, ResultPropagates) {
  EXPECT_EQ(*doubled(4), 8);
  auto bad = doubled(-1);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(StatusDeathTest, ValueOfErrorCrashes) {
  auto bad = parse_positive(0);
  EXPECT_DEATH((void)bad.value(), "Result::value\\(\\) on error");
}

}  // namespace
}  // namespace skiff
