#include "api/time_zone.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

namespace skiff::api {
namespace {

using std::chrono::day;
using std::chrono::days;
using std::chrono::month;
using std::chrono::sys_days;
using std::chrono::weekday;
using std::chrono::year;
using std::chrono::year_month_day;

constexpr int64_t kDay = 86400;
constexpr size_t kMaxZoneFileSize = 1 << 20;

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int64_t days_from_civil(int y, unsigned m, unsigned d) {
  return sys_days(year_month_day(year(y), month(m), day(d))).time_since_epoch().count();
}

year_month_day civil_from_days(int64_t days_since_epoch) {
  return year_month_day(sys_days(days(days_since_epoch)));
}

bool is_leap(int y) {
  return year(y).is_leap();
}

unsigned days_in_month(int y, unsigned m) {
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : kDays[m - 1];
}

// The local day (days since 1970-01-01) a POSIX rule date falls on in year `y`.
int64_t rule_day(const TimeZone::PosixRule::Date& date, int y) {
  int64_t jan1 = days_from_civil(y, 1, 1);
  switch (date.kind) {
    case TimeZone::PosixRule::Date::kJulianNoLeap:
      // Jn counts 1..365 and never names February 29.
      return jan1 + (date.day - 1) + (is_leap(y) && date.day >= 60 ? 1 : 0);
    case TimeZone::PosixRule::Date::kZeroBasedDay:
      return jan1 + date.day;
    case TimeZone::PosixRule::Date::kMonthWeekDay: {
      int64_t first = days_from_civil(y, static_cast<unsigned>(date.month), 1);
      unsigned first_wd = weekday(sys_days(days(first))).c_encoding();
      int64_t d = first + (date.day - static_cast<int>(first_wd) + 7) % 7 + (date.week - 1) * 7;
      int64_t last = first + days_in_month(y, static_cast<unsigned>(date.month)) - 1;
      while (d > last) d -= 7;
      return d;
    }
  }
  return jan1;
}

// A small cursor over a POSIX TZ string.
class RuleParser {
 public:
  explicit RuleParser(std::string_view s) : s_(s) {}
  bool done() const { return pos_ >= s_.size(); }
  char peek() const { return done() ? '\0' : s_[pos_]; }
  bool consume(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }
  // A zone abbreviation: three or more letters, or anything but '>' inside <...>.
  bool name() {
    if (consume('<')) {
      size_t end = s_.find('>', pos_);
      if (end == std::string_view::npos || end - pos_ < 3) return false;
      pos_ = end + 1;
      return true;
    }
    size_t start = pos_;
    while (!done() && std::isalpha(static_cast<unsigned char>(peek()))) ++pos_;
    return pos_ - start >= 3;
  }
  // [+-]h[h[h]][:mm[:ss]] as seconds; hours up to `max_hours`.
  bool duration(int64_t max_hours, int64_t& out) {
    int sign = 1;
    if (consume('-')) {
      sign = -1;
    } else {
      consume('+');
    }
    int64_t parts[3] = {0, 0, 0};
    for (int i = 0; i < 3; ++i) {
      if (i > 0 && !consume(':')) break;
      size_t start = pos_;
      int64_t v = 0;
      while (!done() && std::isdigit(static_cast<unsigned char>(peek())) && pos_ - start < 3) {
        v = v * 10 + (peek() - '0');
        ++pos_;
      }
      if (pos_ == start) return false;
      if ((i == 0 && v > max_hours) || (i > 0 && v > 59)) return false;
      parts[i] = v;
    }
    out = sign * (parts[0] * 3600 + parts[1] * 60 + parts[2]);
    return true;
  }
  bool number(int lo, int hi, int& out) {
    size_t start = pos_;
    int v = 0;
    while (!done() && std::isdigit(static_cast<unsigned char>(peek())) && pos_ - start < 4) {
      v = v * 10 + (peek() - '0');
      ++pos_;
    }
    if (pos_ == start || v < lo || v > hi) return false;
    out = v;
    return true;
  }
  bool date(TimeZone::PosixRule::Date& d) {
    if (consume('J')) {
      d.kind = TimeZone::PosixRule::Date::kJulianNoLeap;
      if (!number(1, 365, d.day)) return false;
    } else if (consume('M')) {
      d.kind = TimeZone::PosixRule::Date::kMonthWeekDay;
      if (!number(1, 12, d.month) || !consume('.') || !number(1, 5, d.week) || !consume('.') ||
          !number(0, 6, d.day)) {
        return false;
      }
    } else {
      d.kind = TimeZone::PosixRule::Date::kZeroBasedDay;
      if (!number(0, 365, d.day)) return false;
    }
    d.time = 7200;
    if (consume('/')) return duration(167, d.time);
    return true;
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

class ByteReader {
 public:
  explicit ByteReader(std::string_view data) : data_(data) {}
  bool has(size_t n) const { return pos_ + n <= data_.size(); }
  size_t pos() const { return pos_; }
  void skip(size_t n) { pos_ += n; }
  uint8_t u8() { return static_cast<uint8_t>(data_[pos_++]); }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | u8();
    return v;
  }
  int64_t i64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | u8();
    return static_cast<int64_t>(v);
  }
  std::string_view rest() const { return data_.substr(pos_); }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

struct TzifHeader {
  char version = 0;
  uint32_t isutcnt = 0, isstdcnt = 0, leapcnt = 0, timecnt = 0, typecnt = 0, charcnt = 0;
};

bool read_header(ByteReader& r, TzifHeader& h) {
  if (!r.has(44)) return false;
  if (r.rest().substr(0, 4) != "TZif") return false;
  r.skip(4);
  h.version = static_cast<char>(r.u8());
  r.skip(15);
  h.isutcnt = r.u32();
  h.isstdcnt = r.u32();
  h.leapcnt = r.u32();
  h.timecnt = r.u32();
  h.typecnt = r.u32();
  h.charcnt = r.u32();
  return true;
}

size_t block_size(const TzifHeader& h, size_t time_size) {
  return h.timecnt * time_size + h.timecnt + h.typecnt * 6 + h.charcnt +
         h.leapcnt * (time_size + 4) + h.isstdcnt + h.isutcnt;
}

bool valid_zone_name(std::string_view name) {
  if (name.empty() || name.size() > 255 || name.front() == '/') return false;
  for (char c : name) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '_' || c == '-' ||
              c == '+' || c == '.';
    if (!ok) return false;
  }
  // No path component may be "." or "..".
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    std::string_view part = name.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream buf;
  buf << in.rdbuf();
  out = buf.str();
  return out.size() <= kMaxZoneFileSize;
}

}  // namespace

std::shared_ptr<const TimeZone> TimeZone::utc() {
  static const std::shared_ptr<const TimeZone> kUtc = fixed(0, "UTC");
  return kUtc;
}

std::shared_ptr<const TimeZone> TimeZone::fixed(int offset_seconds, std::string name) {
  std::shared_ptr<TimeZone> tz(new TimeZone());
  tz->name_ = std::move(name);
  tz->initial_offset_ = offset_seconds;
  return tz;
}

Result<TimeZone::PosixRule> TimeZone::parse_posix_rule(std::string_view text) {
  auto bad = [&] {
    return error(StatusCode::kInvalidArgument,
                 "invalid POSIX TZ rule \"" + std::string(text) + "\"");
  };
  RuleParser p(text);
  PosixRule rule;
  int64_t v = 0;
  if (!p.name() || !p.duration(24, v)) return bad();
  rule.std_offset = static_cast<int>(-v);
  if (p.done()) return rule;
  if (!p.name()) return bad();
  rule.has_dst = true;
  rule.dst_offset = rule.std_offset + 3600;
  if (!p.done() && p.peek() != ',') {
    if (!p.duration(24, v)) return bad();
    rule.dst_offset = static_cast<int>(-v);
  }
  if (p.done()) {
    // No dates: the rule POSIX leaves to the implementation; as Go, the US rule.
    rule.start = {PosixRule::Date::kMonthWeekDay, 0, 2, 3, 7200};
    rule.end = {PosixRule::Date::kMonthWeekDay, 0, 1, 11, 7200};
    return rule;
  }
  if (!p.consume(',') || !p.date(rule.start) || !p.consume(',') || !p.date(rule.end) || !p.done()) {
    return bad();
  }
  return rule;
}

Result<std::shared_ptr<const TimeZone>> TimeZone::from_tzif(std::string_view name,
                                                            std::string_view data) {
  auto bad = [&](const std::string& why) {
    return error(StatusCode::kInvalidArgument,
                 "time zone " + std::string(name) + ": malformed zone file: " + why);
  };
  ByteReader r(data);
  TzifHeader h;
  if (!read_header(r, h)) return bad("no TZif header");
  size_t time_size = 4;
  if (h.version >= '2') {
    // Skip the 32-bit block; the 64-bit block and the footer follow.
    size_t skip = block_size(h, 4);
    if (!r.has(skip)) return bad("truncated");
    r.skip(skip);
    if (!read_header(r, h)) return bad("no second TZif header");
    time_size = 8;
  }
  if (h.typecnt == 0) return bad("no local time types");
  if (!r.has(block_size(h, time_size))) return bad("truncated");
  std::vector<int64_t> times(h.timecnt);
  for (auto& t : times) {
    t = time_size == 8 ? r.i64() : static_cast<int64_t>(static_cast<int32_t>(r.u32()));
  }
  std::vector<uint8_t> type_of(h.timecnt);
  for (auto& i : type_of) {
    i = r.u8();
    if (i >= h.typecnt) return bad("transition names an unknown type");
  }
  std::vector<int> offsets(h.typecnt);
  for (auto& o : offsets) {
    o = static_cast<int32_t>(r.u32());
    r.skip(2);  // isdst, abbreviation index
  }
  r.skip(h.charcnt + h.leapcnt * (time_size + 4) + h.isstdcnt + h.isutcnt);

  std::shared_ptr<TimeZone> tz(new TimeZone());
  tz->name_ = std::string(name);
  tz->initial_offset_ = offsets[0];
  for (size_t i = 0; i < times.size(); ++i) {
    if (i > 0 && times[i] <= times[i - 1]) return bad("transitions out of order");
    tz->transitions_.push_back({times[i], offsets[type_of[i]]});
  }
  if (time_size == 8) {
    std::string_view footer = r.rest();
    if (footer.size() >= 2 && footer.front() == '\n') {
      size_t end = footer.find('\n', 1);
      if (end == std::string_view::npos) return bad("unterminated footer");
      std::string_view rule_text = footer.substr(1, end - 1);
      if (!rule_text.empty()) {
        auto rule = parse_posix_rule(rule_text);
        if (!rule.is_ok()) return bad(rule.status().message());
        tz->rule_ = rule.value();
      }
    }
  }
  return std::shared_ptr<const TimeZone>(std::move(tz));
}

Result<std::shared_ptr<const TimeZone>> TimeZone::load(std::string_view name) {
  if (name.empty() || name == "UTC" || name == "Etc/UTC") return utc();
  if (name == "Local") {
    return error(StatusCode::kInvalidArgument,
                 "time zone Local is not supported: name an IANA time zone");
  }
  if (!valid_zone_name(name)) {
    return error(StatusCode::kInvalidArgument, "unknown time zone " + std::string(name));
  }
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const TimeZone>, std::less<>> cache;
  {
    std::lock_guard lock(mu);
    if (auto it = cache.find(name); it != cache.end()) return it->second;
  }
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("ZONEINFO"); env && *env) dirs.emplace_back(env);
  for (const char* d :
       {"/usr/share/zoneinfo", "/usr/share/lib/zoneinfo", "/usr/lib/locale/TZ", "/etc/zoneinfo"}) {
    dirs.emplace_back(d);
  }
  for (const auto& dir : dirs) {
    std::string data;
    if (!read_file(dir + "/" + std::string(name), data)) continue;
    SKIFF_ASSIGN_OR_RETURN(auto tz, from_tzif(name, data));
    std::lock_guard lock(mu);
    cache.emplace(std::string(name), tz);
    return tz;
  }
  return error(StatusCode::kNotFound, "unknown time zone " + std::string(name));
}

int TimeZone::rule_offset_at(int64_t u) const {
  const PosixRule& r = *rule_;
  if (!r.has_dst) return r.std_offset;
  int y = static_cast<int>(civil_from_days(floor_div(u + r.std_offset, kDay)).year());
  int64_t start = rule_day(r.start, y) * kDay + r.start.time - r.std_offset;
  int64_t end = rule_day(r.end, y) * kDay + r.end.time - r.dst_offset;
  bool dst = start < end ? (u >= start && u < end) : !(u >= end && u < start);
  return dst ? r.dst_offset : r.std_offset;
}

int TimeZone::offset_at(int64_t u) const {
  if (transitions_.empty()) return rule_ ? rule_offset_at(u) : initial_offset_;
  if (u < transitions_.front().at) return initial_offset_;
  if (rule_ && u > transitions_.back().at) return rule_offset_at(u);
  auto it = std::upper_bound(transitions_.begin(), transitions_.end(), u,
                             [](int64_t v, const Transition& t) { return v < t.at; });
  return std::prev(it)->offset;
}

std::vector<int64_t> TimeZone::instants_at(int64_t local) const {
  if (is_fixed()) return {local - initial_offset_};
  // Offsets change at most a few times a year, so those in effect within two days either side
  // are every offset `local` could have been read under.
  std::vector<int> offsets;
  for (int64_t d : {-2 * kDay, -kDay, int64_t{0}, kDay, 2 * kDay}) {
    int o = offset_at(local + d);
    if (std::find(offsets.begin(), offsets.end(), o) == offsets.end()) offsets.push_back(o);
  }
  std::vector<int64_t> out;
  for (int o : offsets) {
    int64_t u = local - o;
    if (offset_at(u) == o) out.push_back(u);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string format_rfc3339_in(int64_t unix_seconds, const TimeZone& zone) {
  int offset = zone.offset_at(unix_seconds);
  int64_t local = unix_seconds + offset;
  int64_t d = floor_div(local, kDay);
  int64_t sod = local - d * kDay;
  year_month_day ymd = civil_from_days(d);
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%04d-%02u-%02uT%02d:%02d:%02d", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(sod / 3600), static_cast<int>(sod / 60 % 60),
                static_cast<int>(sod % 60));
  std::string out = buf;
  if (offset == 0) return out + "Z";
  int a = offset < 0 ? -offset : offset;
  std::snprintf(buf, sizeof(buf), "%c%02d:%02d", offset < 0 ? '-' : '+', a / 3600, a / 60 % 60);
  return out + buf;
}

}  // namespace skiff::api
