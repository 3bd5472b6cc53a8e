#include "api/cron_schedule.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <map>
#include <vector>

#include "base/strings.h"

namespace skiff::api {
namespace {

constexpr int64_t kDay = 86400;
constexpr int64_t kMinute = 60;
// How far a daylight-saving change can move wall-clock time (generously).
constexpr int64_t kMaxShift = 3 * 3600;
// How far next()/prev() search, as upstream's parser does.
constexpr int kSearchYears = 5;

struct Field {
  const char* name;
  int min;
  int max;
  const std::map<std::string, int>* names;
};

const std::map<std::string, int> kMonthNames = {{"jan", 1}, {"feb", 2},  {"mar", 3},  {"apr", 4},
                                                {"may", 5}, {"jun", 6},  {"jul", 7},  {"aug", 8},
                                                {"sep", 9}, {"oct", 10}, {"nov", 11}, {"dec", 12}};
const std::map<std::string, int> kDayNames = {{"sun", 0}, {"mon", 1}, {"tue", 2}, {"wed", 3},
                                              {"thu", 4}, {"fri", 5}, {"sat", 6}};

const Field kFields[5] = {{"minute", 0, 59, nullptr},
                          {"hour", 0, 23, nullptr},
                          {"day-of-month", 1, 31, nullptr},
                          {"month", 1, 12, &kMonthNames},
                          {"day-of-week", 0, 6, &kDayNames}};

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

std::chrono::year_month_day civil(int64_t day) {
  return std::chrono::year_month_day(std::chrono::sys_days(std::chrono::days(day)));
}

int64_t day_number(int y, unsigned m, unsigned d) {
  using namespace std::chrono;
  return sys_days(year_month_day(year(y), month(m), std::chrono::day(d)))
      .time_since_epoch()
      .count();
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? s.size() - start : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

Status field_error(const Field& f, std::string_view expr, const std::string& why) {
  return error(StatusCode::kInvalidArgument,
               std::string(f.name) + " field \"" + std::string(expr) + "\": " + why);
}

Result<int> parse_value(const Field& f, std::string_view part, std::string_view expr) {
  if (f.names) {
    std::string lower(part);
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (auto it = f.names->find(lower); it != f.names->end()) return it->second;
  }
  if (part.empty() || part.size() > 9 || !std::all_of(part.begin(), part.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      })) {
    return field_error(
        f, expr, "\"" + std::string(part) + "\" is not a number" + (f.names ? " or a name" : ""));
  }
  return std::stoi(std::string(part));
}

// One comma-separated part: "*", "?", "a", "a-b", each optionally "/step".
Status parse_range(const Field& f, std::string_view expr, uint64_t& bits, bool& star) {
  auto range_and_step = split(expr, '/');
  if (range_and_step.size() > 2) return field_error(f, expr, "too many slashes");
  std::string_view range = range_and_step[0];
  int start = 0, end = 0, step = 1;
  bool is_star = range == "*" || range == "?";
  if (is_star) {
    start = f.min;
    end = f.max;
  } else {
    auto low_high = split(range, '-');
    if (low_high.size() > 2) return field_error(f, expr, "too many hyphens");
    SKIFF_ASSIGN_OR_RETURN(start, parse_value(f, low_high[0], expr));
    end = start;
    if (low_high.size() == 2) {
      SKIFF_ASSIGN_OR_RETURN(end, parse_value(f, low_high[1], expr));
    } else if (range_and_step.size() == 2) {
      end = f.max;  // "a/n" means "a-max/n"
    }
  }
  if (range_and_step.size() == 2) {
    std::string_view s = range_and_step[1];
    if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c));
        })) {
      return field_error(f, expr, "step \"" + std::string(s) + "\" is not a number");
    }
    step = std::stoi(std::string(s));
    if (step == 0) return field_error(f, expr, "step must be a positive number");
  }
  if (start < f.min) {
    return field_error(f, expr,
                       "beginning of range (" + std::to_string(start) + ") below minimum (" +
                           std::to_string(f.min) + ")");
  }
  if (end > f.max) {
    return field_error(
        f, expr,
        "end of range (" + std::to_string(end) + ") above maximum (" + std::to_string(f.max) + ")");
  }
  if (start > end) {
    return field_error(f, expr,
                       "beginning of range (" + std::to_string(start) + ") beyond end of range (" +
                           std::to_string(end) + ")");
  }
  for (int v = start; v <= end; v += step) bits |= uint64_t{1} << v;
  // A star with a step above one restricts the field, as upstream's parser treats it.
  if (is_star && step == 1) star = true;
  return Status::ok();
}

Status parse_field(const Field& f, std::string_view expr, uint64_t& bits, bool& star) {
  for (std::string_view part : split(expr, ',')) {
    if (part.empty()) return field_error(f, expr, "empty list element");
    SKIFF_RETURN_IF_ERROR(parse_range(f, part, bits, star));
  }
  return Status::ok();
}

// Lowest set bit >= from, or -1.
int next_bit(uint64_t bits, int from, int max) {
  for (int i = from; i <= max; ++i) {
    if (bits & (uint64_t{1} << i)) return i;
  }
  return -1;
}

// Highest set bit <= from, or -1.
int prev_bit(uint64_t bits, int from) {
  for (int i = from; i >= 0; --i) {
    if (bits & (uint64_t{1} << i)) return i;
  }
  return -1;
}

}  // namespace

Result<CronSchedule> CronSchedule::parse(std::string_view spec,
                                         std::shared_ptr<const TimeZone> zone) {
  std::string_view s = trim_space(spec);
  if (s.empty()) return error(StatusCode::kInvalidArgument, "empty schedule");
  CronSchedule out;
  out.zone_ = zone ? std::move(zone) : TimeZone::utc();
  for (std::string_view prefix : {"CRON_TZ=", "TZ="}) {
    if (s.substr(0, prefix.size()) != prefix) continue;
    size_t space = s.find_first_of(" \t");
    if (space == std::string_view::npos) {
      return error(StatusCode::kInvalidArgument,
                   "schedule \"" + std::string(spec) + "\": a time zone prefix needs a schedule");
    }
    std::string_view name = s.substr(prefix.size(), space - prefix.size());
    auto loaded = TimeZone::load(name);
    if (!loaded.is_ok()) {
      return error(StatusCode::kInvalidArgument,
                   "provided bad location " + std::string(name) + ": " + loaded.status().message());
    }
    out.zone_ = loaded.value();
    out.zone_from_spec_ = true;
    s = trim_space(s.substr(space));
    break;
  }
  std::string expanded;
  if (s.front() == '@') {
    static const std::map<std::string_view, const char*> kDescriptors = {
        {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"}};
    auto it = kDescriptors.find(s);
    if (it == kDescriptors.end()) {
      if (s.substr(0, 6) == "@every") {
        return error(StatusCode::kInvalidArgument,
                     "schedule \"" + std::string(s) +
                         "\": @every is not supported for CronJobs; use a five-field schedule");
      }
      return error(StatusCode::kInvalidArgument,
                   "unrecognized descriptor \"" + std::string(s) +
                       "\" (one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, "
                       "@hourly)");
    }
    expanded = it->second;
    s = expanded;
  }
  auto fields = split_space(s);
  if (fields.size() != 5) {
    return error(StatusCode::kInvalidArgument,
                 "expected exactly 5 fields (minute hour day-of-month month day-of-week), found " +
                     std::to_string(fields.size()) + ": \"" + std::string(s) + "\"");
  }
  uint64_t bits[5] = {0, 0, 0, 0, 0};
  bool stars[5] = {false, false, false, false, false};
  for (int i = 0; i < 5; ++i) {
    SKIFF_RETURN_IF_ERROR(parse_field(kFields[i], fields[i], bits[i], stars[i]));
  }
  out.minutes_ = bits[0];
  out.hours_ = static_cast<uint32_t>(bits[1]);
  out.days_of_month_ = static_cast<uint32_t>(bits[2]);
  out.months_ = static_cast<uint32_t>(bits[3]);
  out.days_of_week_ = static_cast<uint32_t>(bits[4]);
  out.dom_star_ = stars[2];
  out.dow_star_ = stars[4];
  return out;
}

bool CronSchedule::day_matches(int64_t day) const {
  auto ymd = civil(day);
  unsigned wd = std::chrono::weekday(std::chrono::sys_days(std::chrono::days(day))).c_encoding();
  bool dom = days_of_month_ & (uint32_t{1} << static_cast<unsigned>(ymd.day()));
  bool dow = days_of_week_ & (uint32_t{1} << wd);
  if (dom_star_ || dow_star_) return dom && dow;
  return dom || dow;
}

std::optional<int64_t> CronSchedule::next_wall(int64_t wall) const {
  int64_t day = floor_div(wall, kDay);
  int64_t minute_of_day = (wall - day * kDay) / kMinute;
  int hour = static_cast<int>(minute_of_day / 60);
  int minute = static_cast<int>(minute_of_day % 60);
  const int limit = static_cast<int>(civil(day).year()) + kSearchYears;
  while (true) {
    auto ymd = civil(day);
    int y = static_cast<int>(ymd.year());
    if (y > limit) return std::nullopt;
    unsigned m = static_cast<unsigned>(ymd.month());
    if (!(months_ & (uint32_t{1} << m))) {
      day = m == 12 ? day_number(y + 1, 1, 1) : day_number(y, m + 1, 1);
      hour = minute = 0;
      continue;
    }
    if (!day_matches(day)) {
      ++day;
      hour = minute = 0;
      continue;
    }
    int h = next_bit(hours_, hour, 23);
    if (h < 0) {
      ++day;
      hour = minute = 0;
      continue;
    }
    if (h != hour) {
      hour = h;
      minute = 0;
    }
    int mi = next_bit(minutes_, minute, 59);
    if (mi < 0) {
      minute = 0;
      if (++hour == 24) {
        ++day;
        hour = 0;
      }
      continue;
    }
    return day * kDay + hour * 3600 + mi * kMinute;
  }
}

std::optional<int64_t> CronSchedule::prev_wall(int64_t wall) const {
  int64_t day = floor_div(wall, kDay);
  int64_t minute_of_day = (wall - day * kDay) / kMinute;
  int hour = static_cast<int>(minute_of_day / 60);
  int minute = static_cast<int>(minute_of_day % 60);
  const int limit = static_cast<int>(civil(day).year()) - kSearchYears;
  while (true) {
    auto ymd = civil(day);
    int y = static_cast<int>(ymd.year());
    if (y < limit) return std::nullopt;
    unsigned m = static_cast<unsigned>(ymd.month());
    if (!(months_ & (uint32_t{1} << m))) {
      day = day_number(y, m, 1) - 1;  // the last day of the month before
      hour = 23;
      minute = 59;
      continue;
    }
    if (!day_matches(day)) {
      --day;
      hour = 23;
      minute = 59;
      continue;
    }
    int h = prev_bit(hours_, hour);
    if (h < 0) {
      --day;
      hour = 23;
      minute = 59;
      continue;
    }
    if (h != hour) {
      hour = h;
      minute = 59;
    }
    int mi = prev_bit(minutes_, minute);
    if (mi < 0) {
      minute = 59;
      if (--hour < 0) {
        --day;
        hour = 23;
      }
      continue;
    }
    return day * kDay + hour * 3600 + mi * kMinute;
  }
}

std::optional<int64_t> CronSchedule::next(int64_t t) const {
  if (zone_->is_fixed()) {
    int off = zone_->offset_at(t);
    // The first whole local minute strictly after t.
    int64_t wall = (floor_div(t + off, kMinute) + 1) * kMinute;
    auto w = next_wall(wall);
    if (!w) return std::nullopt;
    return *w - off;
  }
  // Wall-clock order and instant order differ only within a daylight-saving shift, so walk the
  // matching wall times from a shift before t's and keep the earliest instant after t.
  int64_t wall = floor_div(t + zone_->offset_at(t) - kMaxShift, kMinute) * kMinute;
  std::optional<int64_t> best;
  int64_t best_wall = 0;
  while (true) {
    auto w = next_wall(wall);
    if (!w || (best && *w > best_wall + kMaxShift)) break;
    for (int64_t u : zone_->instants_at(*w)) {
      if (u > t && (!best || u < *best)) {
        best = u;
        best_wall = *w;
      }
    }
    wall = *w + kMinute;
  }
  return best;
}

std::optional<int64_t> CronSchedule::prev(int64_t t) const {
  if (zone_->is_fixed()) {
    int off = zone_->offset_at(t);
    auto w = prev_wall(floor_div(t + off, kMinute) * kMinute);
    if (!w) return std::nullopt;
    return *w - off;
  }
  int64_t wall = floor_div(t + zone_->offset_at(t) + kMaxShift, kMinute) * kMinute;
  std::optional<int64_t> best;
  int64_t best_wall = 0;
  while (true) {
    auto w = prev_wall(wall);
    if (!w || (best && *w < best_wall - kMaxShift)) break;
    for (int64_t u : zone_->instants_at(*w)) {
      if (u <= t && (!best || u > *best)) {
        best = u;
        best_wall = *w;
      }
    }
    wall = *w - kMinute;
  }
  return best;
}

}  // namespace skiff::api
