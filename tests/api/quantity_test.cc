#include "api/quantity.h"

#include <gtest/gtest.h>

#include <limits>

namespace skiff::api {
namespace {

Quantity q(std::string_view s) {
  Result<Quantity> r = Quantity::parse(s);
  EXPECT_TRUE(r.is_ok()) << s << ": " << r.status().to_string();
  return r.is_ok() ? r.value() : Quantity();
}

std::string canon(std::string_view s) {
  return q(s).to_string();
}

TEST(QuantityTest, CanonicalForms) {
  struct Case {
    const char* in;
    const char* out;
  } cases[] = {
      // Binary suffixes.
      {"1Ki", "1Ki"},
      {"1Mi", "1Mi"},
      {"1Gi", "1Gi"},
      {"1024Mi", "1Gi"},
      {"1536Mi", "1536Mi"},
      {"1.5Gi", "1536Mi"},
      {"0.5Mi", "512Ki"},
      {"8Ki", "8Ki"},
      {"1024Ki", "1Mi"},
      {"300Mi", "300Mi"},
      {"1001Gi", "1001Gi"},
      {"1Ti", "1Ti"},
      {"3Ei", "3Ei"},
      // Binary values below 1024, or fractional, print in decimal.
      {".001Ki", "1024m"},
      {".000001Ki", "1024u"},
      {".000000001Ki", "1024n"},
      {".000000000001Ki", "2n"},
      {"100.035Ki", "102435840m"},
      {"0.05Gi", "53687091200m"},
      // Decimal suffixes.
      {"1000m", "1"},
      {"1500m", "1500m"},
      {"0.1", "100m"},
      {"0.5", "500m"},
      {"1000M", "1G"},
      {"2000000", "2M"},
      {"50k", "50k"},
      {"40T", "40T"},
      {"300T", "300T"},
      {"12E", "12E"},
      {"1.01E", "1010P"},
      {"8.1k", "8100"},
      {"9.01", "9010m"},
      {"10.035M", "10.035M"},
      {"5n", "5n"},
      {"4u", "4u"},
      {"1080m", "1080m"},
      {"1.08", "1080m"},
      // Exponents.
      {"1e3", "1e3"},
      {"1E6", "1E6"},
      {"1e-3", "1e-3"},
      {"1.2e3", "1200"},
      {"1.3E+6", "1300e3"},
      {"0.5e0", "500e-3"},
      {"0.5e-2", "5e-3"},
      {"1000e0", "1e3"},
      // Rounding up to nano units.
      {"3.001n", "4n"},
      {"1.1E-9", "2e-9"},
      {"0.0000000001", "1n"},
      {"0.0000000005", "1n"},
      {"0.00000012345", "124n"},
      {"0.9n", "1n"},
      // Binary values are capped at MaxInt64.
      {"9Ei", "9223372036854775807"},
      {"9223372036854775807Ki", "9223372036854775807"},
      // Zero in all spellings.
      {"0", "0"},
      {"00", "0"},
      {"-0", "0"},
      {"0Gi", "0"},
      {"0.0", "0"},
      {"0e5", "0"},
      // Odd but accepted by upstream.
      {".001", "1m"},
      {".0001k", "100m"},
      {"1.", "1."},
      {"1.G", "1.G"},
      {"1.0", "1"},
      // Upstream keeps the input text when it is already in canonical shape.
      {"+1", "+1"},
      {"01", "01"},
      {"1.500", "1.500"},
      {"1025Ki", "1025Ki"},
      // Negative values.
      {"-1", "-1"},
      {"-1.5Gi", "-1536Mi"},
      {"-0.1", "-100m"},
      {"-1024Mi", "-1Gi"},
  };
  for (const Case& c : cases) EXPECT_EQ(canon(c.in), c.out) << c.in;
}

TEST(QuantityTest, LargeDecimalsBeyondSuffixes) {
  // 10^19 and beyond: upstream's int64 path falls back to big decimals; digits stay exact.
  EXPECT_EQ(canon("10000000000000000000"), "10E");
  EXPECT_EQ(canon("10.0000000000000000001E"), "10000000000000000000100m");
  EXPECT_EQ(canon("1.000000000000000001E"), "1000000000000000001");
  EXPECT_EQ(canon("1e100"), "10e99");
  EXPECT_EQ(canon("1e99"), "1e99");
  // Upstream has no suffix past "E" and would print a wrong value; skiff uses an exponent.
  EXPECT_EQ(canon("1000E"), "1e21");
}

TEST(QuantityTest, InvalidInputs) {
  const std::string format_wrong =
      "quantities must match the regular expression "
      "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
  for (const char* in :
       {"", "1.1.M", "1+1.0M", "aoeu", " 1", "1 ", "0.1am", "1KI", "1.5Gi ", "5x", "1/2"}) {
    Result<Quantity> r = Quantity::parse(in);
    ASSERT_FALSE(r.is_ok()) << in;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), format_wrong) << in;
  }
  for (const char* in : {"0.1mi", ".5i", "1i", "-3.01i", "-3.01e-", "1e", "1ki", "1Ki3", "--1",
                         "1Mi3", "1Ee3", "1e+", "1e99999999999999999999"}) {
    Result<Quantity> r = Quantity::parse(in);
    ASSERT_FALSE(r.is_ok()) << in;
    EXPECT_EQ(r.status().message(), "unable to parse quantity's suffix") << in;
  }
  Result<Quantity> r = Quantity::parse(".e-10");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().message(), "unable to parse numeric part of quantity");
}

TEST(QuantityTest, MilliValueAndValueRoundAwayFromZero) {
  EXPECT_EQ(q("100m").milli_value(), 100);
  EXPECT_EQ(q("1").milli_value(), 1000);
  EXPECT_EQ(q("1.5").milli_value(), 1500);
  EXPECT_EQ(q("1n").milli_value(), 1);
  EXPECT_EQ(q("-1n").milli_value(), -1);
  EXPECT_EQ(q("1Ki").milli_value(), 1024000);
  EXPECT_EQ(q("1.5").value(), 2);
  EXPECT_EQ(q("-1.5").value(), -2);
  EXPECT_EQ(q("100m").value(), 1);
  EXPECT_EQ(q("0").value(), 0);
  EXPECT_EQ(q("1Gi").value(), 1073741824);
  EXPECT_EQ(q("9.01").value(), 10);
  EXPECT_EQ(q("1e3").value(), 1000);
  // Saturates instead of wrapping.
  EXPECT_EQ(q("100E").value(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(q("-100E").milli_value(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(q("9Ei").milli_value(), std::numeric_limits<int64_t>::max());
}

TEST(QuantityTest, Compare) {
  EXPECT_EQ(q("1"), q("1000m"));
  EXPECT_EQ(q("1Ki"), q("1024"));
  EXPECT_EQ(q("1e3"), q("1k"));
  EXPECT_EQ(q("0"), q("-0"));
  EXPECT_LT(q("999m"), q("1"));
  EXPECT_LT(q("-2"), q("-1"));
  EXPECT_LT(q("-1"), q("0"));
  EXPECT_LT(q("1G"), q("1Gi"));
  EXPECT_LT(q("1"), q("1e100"));
  EXPECT_LT(q("1e-9"), q("2n"));
  EXPECT_EQ(q("900m").compare(q("901m")), -1);
  EXPECT_EQ(q("901m").compare(q("900m")), 1);
  EXPECT_EQ(q("1.5Gi").compare(q("1536Mi")), 0);
}

TEST(QuantityTest, Arithmetic) {
  Quantity a = q("1");
  a += q("500m");
  EXPECT_EQ(a.to_string(), "1500m");
  a -= q("1500m");
  EXPECT_EQ(a.to_string(), "0");

  Quantity mem = q("1Gi");
  mem += q("512Mi");
  EXPECT_EQ(mem.to_string(), "1536Mi");
  mem -= q("2Gi");
  EXPECT_EQ(mem.to_string(), "-512Mi");

  // A zero quantity takes the other's format.
  Quantity zero;
  zero += q("1Mi");
  EXPECT_EQ(zero.to_string(), "1Mi");
  Quantity zero2;
  zero2 -= q("1Ki");
  EXPECT_EQ(zero2.to_string(), "-1Ki");

  // The cached input text is dropped once the value changes.
  Quantity plus = q("+1");
  plus += q("0");
  EXPECT_EQ(plus.to_string(), "1");

  Quantity cpu = q("100m");
  for (int i = 0; i < 9; ++i) cpu += q("100m");
  EXPECT_EQ(cpu.to_string(), "1");
  EXPECT_EQ(cpu.milli_value(), 1000);
}

TEST(QuantityTest, DefaultIsZero) {
  Quantity z;
  EXPECT_EQ(z.to_string(), "0");
  EXPECT_EQ(z.value(), 0);
  EXPECT_EQ(z, q("0"));
}

}  // namespace
}  // namespace skiff::api
