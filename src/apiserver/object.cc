#include "apiserver/object.h"

#include <time.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>

namespace skiff::apiserver {
namespace {

std::mt19937_64& rng() {
  thread_local std::mt19937_64 gen(std::random_device{}());
  return gen;
}

}  // namespace

void append_with_resource_version(std::string& out, std::string_view stored,
                                  int64_t resource_version) {
  static constexpr std::string_view kMeta = "\"metadata\":{";
  char rv[48];
  int n = std::snprintf(rv, sizeof(rv), "\"resourceVersion\":\"%lld\"",
                        static_cast<long long>(resource_version));
  std::string_view rv_field(rv, static_cast<size_t>(n));
  size_t at = stored.find(kMeta);
  if (at == std::string_view::npos) {
    // No metadata object: add one at the front.
    out.append("{\"metadata\":{").append(rv_field).append("}");
    if (stored.size() > 2) out.push_back(',');
    out.append(stored.substr(1));
    return;
  }
  size_t insert = at + kMeta.size();
  out.append(stored.substr(0, insert)).append(rv_field);
  if (insert < stored.size() && stored[insert] != '}') out.push_back(',');
  out.append(stored.substr(insert));
}

std::string with_resource_version(std::string_view stored, int64_t resource_version) {
  std::string out;
  out.reserve(stored.size() + 48);
  append_with_resource_version(out, stored, resource_version);
  return out;
}

std::string rfc3339(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string rfc3339_now() {
  return rfc3339(std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count());
}

int64_t parse_rfc3339(std::string_view text) {
  struct tm tm = {};
  int consumed = 0;
  std::string s(text);
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6) {
    return -1;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  int64_t t = timegm(&tm);
  std::string_view rest = text.substr(static_cast<size_t>(consumed));
  if (!rest.empty() && rest[0] == '.') {
    size_t i = 1;
    while (i < rest.size() && std::isdigit(static_cast<unsigned char>(rest[i]))) ++i;
    rest = rest.substr(i);
  }
  if (rest == "Z" || rest == "z") return t;
  int hh = 0, mm = 0;
  if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') &&
      std::sscanf(std::string(rest.substr(1)).c_str(), "%2d:%2d", &hh, &mm) == 2) {
    int64_t offset = hh * 3600 + mm * 60;
    return rest[0] == '+' ? t - offset : t + offset;
  }
  return -1;
}

std::string new_uid() {
  uint64_t a = rng()();
  uint64_t b = rng()();
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  char buf[37];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff),
                static_cast<unsigned>(b >> 48),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

std::string random_name_suffix() {
  static constexpr char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
  std::string out;
  for (int i = 0; i < 5; ++i) out.push_back(kAlphabet[rng()() % (sizeof(kAlphabet) - 1)]);
  return out;
}

std::string field_value(const nlohmann::json& obj, std::string_view path) {
  const nlohmann::json* cur = &obj;
  while (!path.empty()) {
    size_t dot = path.find('.');
    std::string part(path.substr(0, dot));
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
    if (!cur->is_object()) return "";
    auto it = cur->find(part);
    if (it == cur->end()) return "";
    cur = &*it;
  }
  if (cur->is_string()) return cur->get<std::string>();
  if (cur->is_boolean()) return cur->get<bool>() ? "true" : "false";
  if (cur->is_number()) return cur->dump();
  return "";
}

}  // namespace skiff::apiserver
