#pragma once

// resource.Quantity: "100m", "1.5Gi", "2e3", ... parsed exactly and printed in canonical form,
// as upstream does.

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace skiff::api {

class Quantity {
 public:
  Quantity() = default;
  static Result<Quantity> parse(std::string_view text);

  // The value in thousandths (rounded up, as upstream's MilliValue), and in units (rounded up).
  int64_t milli_value() const;
  int64_t value() const;
  // Canonical form (e.g. "1500m" → "1500m", "1.5Gi" → "1536Mi", "0.5" → "500m").
  std::string to_string() const;

  int compare(const Quantity& other) const;
  bool operator==(const Quantity& o) const { return compare(o) == 0; }
  bool operator<(const Quantity& o) const { return compare(o) < 0; }
  Quantity& operator+=(const Quantity& o);
  Quantity& operator-=(const Quantity& o);

 private:
  enum class Format : uint8_t { kDecimalSI, kBinarySI, kDecimalExponent };

  // value = mantissa * 10^exponent (decimal) — binary-suffixed inputs are converted exactly.
  // Parsing rounds away from zero to nano units, as upstream does.
  __int128 mantissa_ = 0;
  int64_t exponent_ = 0;
  Format format_ = Format::kDecimalSI;
  // The input text when upstream would keep it as the canonical form (e.g. "1.500", "+1").
  std::string s_;
};

}  // namespace skiff::api
