#include "api/quantity.h"

#include <algorithm>
#include <charconv>
#include <limits>

namespace skiff::api {
namespace {

using i128 = __int128;

constexpr std::string_view kErrFormatWrong =
    "quantities must match the regular expression "
    "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
constexpr std::string_view kErrNumeric = "unable to parse numeric part of quantity";
constexpr std::string_view kErrSuffix = "unable to parse quantity's suffix";
constexpr int kMaxDigits = 38;  // what an __int128 mantissa holds
constexpr int64_t kNano = -9;

Status parse_error(std::string_view msg) {
  return Status(StatusCode::kInvalidArgument, std::string(msg));
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

i128 abs128(i128 v) {
  return v < 0 ? -v : v;
}

std::string to_digits(i128 v) {  // |v| in decimal
  unsigned __int128 u =
      v < 0 ? static_cast<unsigned __int128>(-(v + 1)) + 1 : static_cast<unsigned __int128>(v);
  if (u == 0) return "0";
  std::string s;
  while (u > 0) {
    s.push_back(static_cast<char>('0' + static_cast<int>(u % 10)));
    u /= 10;
  }
  std::reverse(s.begin(), s.end());
  return s;
}

bool pow10(int64_t n, i128& out) {
  if (n < 0 || n > kMaxDigits) return false;
  out = 1;
  for (int64_t i = 0; i < n; ++i) out *= 10;
  return true;
}

bool mul_overflow(i128 a, i128 b, i128& out) {
  return __builtin_mul_overflow(a, b, &out);
}

// Strips trailing decimal zeros of m into e.
void normalize(i128& m, int64_t& e) {
  if (m == 0) {
    e = 0;
    return;
  }
  while (m % 10 == 0) {
    m /= 10;
    ++e;
  }
}

// m * 10^e divided by 10^k, rounded away from zero (k > 0).
i128 div_pow10_away(i128 m, int64_t k) {
  i128 p;
  if (!pow10(k, p)) return m == 0 ? 0 : (m > 0 ? 1 : -1);
  i128 q = m / p;
  if (m % p != 0) q += m > 0 ? 1 : -1;
  return q;
}

// upstream's scanner (parseQuantityString): sign, numerator, denominator, suffix.
struct Scanned {
  bool positive = true;
  std::string_view value;  // the numeric part as written, sign included
  std::string_view num;    // numerator digits without leading zeros ("0" when none)
  std::string_view denom;  // fraction digits
  std::string_view suffix;
};

bool scan(std::string_view str, Scanned& out) {
  size_t pos = 0, end = str.size();
  if (pos < end) {
    if (str[0] == '-') {
      out.positive = false;
      ++pos;
    } else if (str[0] == '+') {
      ++pos;
    }
  }
  while (true) {  // leading zeros
    if (pos >= end) {
      out.num = "0";
      out.value = "0";
      return true;
    }
    if (str[pos] != '0') break;
    ++pos;
  }
  size_t i = pos;
  while (i < end && is_digit(str[i])) ++i;
  out.num = str.substr(pos, i - pos);
  if (i >= end) {
    out.value = str;
    if (out.num.empty()) out.num = "0";
    return true;
  }
  pos = i;
  if (out.num.empty()) out.num = "0";
  if (str[pos] == '.') {
    ++pos;
    size_t j = pos;
    while (j < end && is_digit(str[j])) ++j;
    out.denom = str.substr(pos, j - pos);
    if (j >= end) {
      out.value = str;
      return true;
    }
    pos = j;
  }
  out.value = str.substr(0, pos);
  size_t suffix_start = pos;
  static constexpr std::string_view kSuffixChars = "eEinumkKMGTP";
  while (pos < end && kSuffixChars.find(str[pos]) != std::string_view::npos) ++pos;
  if (pos >= end) {
    out.suffix = str.substr(suffix_start);
    return true;
  }
  if (str[pos] == '-' || str[pos] == '+') ++pos;
  while (pos < end && is_digit(str[pos])) ++pos;
  if (pos >= end) {
    out.suffix = str.substr(suffix_start);
    return true;
  }
  return false;
}

enum class Base : uint8_t { kTen, kTwo };

bool interpret_suffix(std::string_view s, Base& base, int64_t& exponent, int& format) {
  // format: 0 DecimalSI, 1 BinarySI, 2 DecimalExponent
  struct Entry {
    std::string_view s;
    Base base;
    int64_t exp;
    int format;
  };
  static constexpr Entry kTable[] = {
      {"", Base::kTen, 0, 0},    {"n", Base::kTen, -9, 0},  {"u", Base::kTen, -6, 0},
      {"m", Base::kTen, -3, 0},  {"k", Base::kTen, 3, 0},   {"M", Base::kTen, 6, 0},
      {"G", Base::kTen, 9, 0},   {"T", Base::kTen, 12, 0},  {"P", Base::kTen, 15, 0},
      {"E", Base::kTen, 18, 0},  {"Ki", Base::kTwo, 10, 1}, {"Mi", Base::kTwo, 20, 1},
      {"Gi", Base::kTwo, 30, 1}, {"Ti", Base::kTwo, 40, 1}, {"Pi", Base::kTwo, 50, 1},
      {"Ei", Base::kTwo, 60, 1},
  };
  for (const Entry& e : kTable) {
    if (e.s == s) {
      base = e.base;
      exponent = e.exp;
      format = e.format;
      return true;
    }
  }
  if (s.size() > 1 && (s[0] == 'e' || s[0] == 'E')) {
    std::string_view rest = s.substr(1);
    std::string buf(rest[0] == '+' ? rest.substr(1) : rest);
    if (buf.empty() || buf == "-") return false;
    int64_t v = 0;
    auto [p, ec] = std::from_chars(buf.data(), buf.data() + buf.size(), v);
    if (ec != std::errc() || p != buf.data() + buf.size()) return false;
    base = Base::kTen;
    exponent = static_cast<int32_t>(v);  // upstream truncates to int32
    format = 2;
    return true;
  }
  return false;
}

// Compares |a| and |b| given as (mantissa, exponent), exactly.
int compare_magnitude(i128 ma, int64_t ea, i128 mb, int64_t eb) {
  ma = abs128(ma);
  mb = abs128(mb);
  if (ma == 0 || mb == 0) return (ma != 0) - (mb != 0);
  normalize(ma, ea);
  normalize(mb, eb);
  std::string da = to_digits(ma), db = to_digits(mb);
  int64_t pa = static_cast<int64_t>(da.size()) + ea;
  int64_t pb = static_cast<int64_t>(db.size()) + eb;
  if (pa != pb) return pa < pb ? -1 : 1;
  size_t n = std::max(da.size(), db.size());
  da.resize(n, '0');
  db.resize(n, '0');
  int c = da.compare(db);
  return (c > 0) - (c < 0);
}

// Value as an int64 after scaling by 10^-scale, rounded away from zero, saturated.
int64_t scaled_value(i128 m, int64_t e, int64_t scale) {
  constexpr i128 kMax = std::numeric_limits<int64_t>::max();
  constexpr i128 kMin = std::numeric_limits<int64_t>::min();
  if (m == 0) return 0;
  int64_t shift = e - scale;
  i128 v;
  if (shift >= 0) {
    i128 p;
    if (!pow10(shift, p) || mul_overflow(m, p, v)) {
      return m > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
    }
  } else {
    v = div_pow10_away(m, -shift);
  }
  if (v > kMax) return std::numeric_limits<int64_t>::max();
  if (v < kMin) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

}  // namespace

Result<Quantity> Quantity::parse(std::string_view str) {
  if (str.empty()) return parse_error(kErrFormatWrong);
  Quantity q;
  if (str == "0") {
    q.s_ = "0";
    return q;
  }
  Scanned sc;
  if (!scan(str, sc)) return parse_error(kErrFormatWrong);
  Base base;
  int64_t exponent;
  int format;
  if (!interpret_suffix(sc.suffix, base, exponent, format)) return parse_error(kErrSuffix);
  q.format_ = format == 0 ? Format::kDecimalSI
                          : (format == 1 ? Format::kBinarySI : Format::kDecimalExponent);

  // Upstream keeps the input text as the canonical form when its fast path parses it and the
  // text already looks canonical; reproduce that decision.
  const int64_t num_len = static_cast<int64_t>(sc.num.size());
  const int64_t denom_len = static_cast<int64_t>(sc.denom.size());
  std::string shifted = std::string(sc.num) + std::string(sc.denom);
  bool reuse_text = false;
  bool fast_path = false;
  if (base == Base::kTen) {
    int64_t precision = 18 - (num_len + denom_len);
    int64_t scale = exponent - denom_len;
    if (precision >= 0 && scale >= kNano) {
      fast_path = true;
      reuse_text =
          scale % 3 == 0 && !(shifted.size() >= 3 && shifted.ends_with("000")) && shifted[0] != '0';
    }
  } else if (denom_len == 0) {
    int64_t precision =
        15 - num_len - static_cast<int64_t>(static_cast<float>(exponent) * 3 / 10) - 1;
    if (precision >= 0) {
      int64_t v = 0;
      std::from_chars(shifted.data(), shifted.data() + shifted.size(), v);
      i128 r = static_cast<i128>(v) << exponent;
      if (r <= std::numeric_limits<int64_t>::max()) {
        fast_path = true;
        reuse_text = (v & 0x07) != 0;
      }
    }
  }
  // Upstream's slow path re-parses the numeric text, which fails when it has no digit (".").
  if (!fast_path && sc.value.find_first_of("0123456789") == std::string_view::npos) {
    return parse_error(kErrNumeric);
  }

  // The exact value: digits * 10^e (* 2^exponent for binary suffixes).
  std::string_view digits = shifted;
  while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
  int64_t e = (base == Base::kTen ? exponent : 0) - denom_len;
  while (digits.size() > 1 && digits.back() == '0') {
    digits.remove_suffix(1);
    ++e;
  }
  if (digits == "0") {
    q.mantissa_ = 0;
    q.exponent_ = 0;
    if (reuse_text) q.s_ = std::string(str);
    return q;
  }
  // Round to nano units, away from zero, before the digits can overflow.
  bool rounded_up = false;
  if (base == Base::kTen && e < kNano) {
    int64_t cut = kNano - e;
    if (cut >= static_cast<int64_t>(digits.size())) {
      digits = "1";
      e = kNano;
    } else {
      digits.remove_suffix(static_cast<size_t>(cut));
      e = kNano;
      rounded_up = true;  // the cut digits end in a non-zero digit
    }
  }
  if (static_cast<int>(digits.size()) > kMaxDigits) return parse_error(kErrNumeric);
  i128 m = 0;
  for (char c : digits) m = m * 10 + (c - '0');
  if (rounded_up) m += 1;

  if (base == Base::kTwo) {
    constexpr i128 kMax = std::numeric_limits<int64_t>::max();
    // Values above MaxInt64 are capped, so a huge value needs no exact product.
    if (static_cast<int64_t>(digits.size()) + e > 19 + 1) {
      m = kMax;
      e = 0;
    } else {
      i128 factor = static_cast<i128>(1) << exponent;
      if (mul_overflow(m, factor, m)) return parse_error(kErrNumeric);
      if (e < kNano) {
        m = div_pow10_away(m, kNano - e);
        e = kNano;
      }
      if (compare_magnitude(m, e, kMax, 0) > 0) {
        m = kMax;
        e = 0;
      }
    }
    if (compare_magnitude(m, e, 1, 0) < 0) q.format_ = Format::kDecimalSI;
  }
  q.mantissa_ = sc.positive ? m : -m;
  q.exponent_ = e;
  if (reuse_text) q.s_ = std::string(str);
  return q;
}

int64_t Quantity::milli_value() const {
  return scaled_value(mantissa_, exponent_, -3);
}

int64_t Quantity::value() const {
  return scaled_value(mantissa_, exponent_, 0);
}

std::string Quantity::to_string() const {
  if (!s_.empty()) return s_;
  if (mantissa_ == 0) return "0";
  i128 m = mantissa_;
  int64_t e = exponent_;
  normalize(m, e);
  const std::string sign = m < 0 ? "-" : "";
  Format format = format_;
  if (format == Format::kBinarySI) {
    if (compare_magnitude(m, e, 1024, 0) < 0 || e < 0) {
      format = Format::kDecimalSI;  // small or fractional: shown in decimal to stay exact
    } else {
      i128 n;
      i128 p;
      if (!pow10(e, p) || mul_overflow(m, p, n)) {
        format = Format::kDecimalSI;
      } else {
        n = abs128(n);
        int k = 0;
        while (k < 6 && n >= 1024 && n % 1024 == 0) {
          n /= 1024;
          ++k;
        }
        static constexpr std::string_view kBin[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
        return sign + to_digits(n) + std::string(kBin[k]);
      }
    }
  }
  std::string digits = to_digits(m);
  while (e % 3 != 0) {
    digits.push_back('0');
    --e;
  }
  if (format == Format::kDecimalSI && e >= -9 && e <= 18) {
    static constexpr std::string_view kDec[] = {"n", "u", "m", "", "k", "M", "G", "T", "P", "E"};
    return sign + digits + std::string(kDec[(e + 9) / 3]);
  }
  // DecimalExponent (and DecimalSI beyond "E", where upstream has no suffix).
  return sign + digits + (e == 0 ? "" : "e" + std::to_string(e));
}

int Quantity::compare(const Quantity& other) const {
  int sa = (mantissa_ > 0) - (mantissa_ < 0);
  int sb = (other.mantissa_ > 0) - (other.mantissa_ < 0);
  if (sa != sb) return sa < sb ? -1 : 1;
  if (sa == 0) return 0;
  int c = compare_magnitude(mantissa_, exponent_, other.mantissa_, other.exponent_);
  return sa > 0 ? c : -c;
}

namespace {

// a + b (b already negated for subtraction), exactly when the aligned sum fits.
void add_into(i128& ma, int64_t& ea, i128 mb, int64_t eb) {
  if (mb == 0) return;
  if (ma == 0) {
    ma = mb;
    ea = eb;
    return;
  }
  int64_t e = std::min(ea, eb);
  i128 pa, pb, a, b, sum;
  bool ok = pow10(ea - e, pa) && pow10(eb - e, pb) && !mul_overflow(ma, pa, a) &&
            !mul_overflow(mb, pb, b) && !__builtin_add_overflow(a, b, &sum);
  if (ok) {
    ma = sum;
    ea = e;
    normalize(ma, ea);
    return;
  }
  // Beyond 38 significant digits: keep the operand of larger magnitude (the other is below
  // its precision).
  if (compare_magnitude(mb, eb, ma, ea) > 0) {
    ma = mb;
    ea = eb;
  }
}

}  // namespace

Quantity& Quantity::operator+=(const Quantity& o) {
  s_.clear();
  if (mantissa_ == 0) format_ = o.format_;
  add_into(mantissa_, exponent_, o.mantissa_, o.exponent_);
  return *this;
}

Quantity& Quantity::operator-=(const Quantity& o) {
  s_.clear();
  if (mantissa_ == 0) format_ = o.format_;
  add_into(mantissa_, exponent_, -o.mantissa_, o.exponent_);
  return *this;
}

}  // namespace skiff::api
