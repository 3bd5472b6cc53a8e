#pragma once

// Reading fields of API objects held as JSON (pods, containers, probes), tolerating fields that
// are absent or of another type, as the kubelet must for objects written by any client.
//
// Thread-safety: pure functions.

#include <nlohmann/json.hpp>
#include <string>

namespace skiff::kubelet {

// obj[key], or a null value when obj is not an object or has no such key.
inline const nlohmann::json& member(const nlohmann::json& obj, const char* key) {
  static const nlohmann::json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

// obj[key] when it is a string, else `fallback`.
inline std::string str(const nlohmann::json& obj, const char* key,
                       const std::string& fallback = "") {
  const nlohmann::json& v = member(obj, key);
  return v.is_string() ? v.get<std::string>() : fallback;
}

// obj[key] when it is an integer, else `fallback`.
inline int int_of(const nlohmann::json& obj, const char* key, int fallback) {
  const nlohmann::json& v = member(obj, key);
  return v.is_number_integer() ? v.get<int>() : fallback;
}

}  // namespace skiff::kubelet
