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

// The offset of `key` (a quoted key with its colon and opening brace, as the serializer writes
// it) among the top-level members of the JSON object `json`, or npos. Nested objects may hold
// the same key (a ControllerRevision's data holds a pod template's metadata), so depth counts.
size_t top_level_key(std::string_view json, std::string_view key) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    char c = json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        if (depth == 1 && json.compare(i, key.size(), key) == 0) return i;
        in_string = true;
        break;
      case '{':
      case '[':
        ++depth;
        break;
      case '}':
      case ']':
        --depth;
        break;
      default:
        break;
    }
  }
  return std::string_view::npos;
}

}  // namespace

void append_with_resource_version(std::string& out, std::string_view stored,
                                  int64_t resource_version) {
  static constexpr std::string_view kMeta = "\"metadata\":{";
  char rv[48];
  int n = std::snprintf(rv, sizeof(rv), "\"resourceVersion\":\"%lld\"",
                        static_cast<long long>(resource_version));
  std::string_view rv_field(rv, static_cast<size_t>(n));
  size_t at = top_level_key(stored, kMeta);
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
