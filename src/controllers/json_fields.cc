#include "controllers/json_fields.h"

namespace skiff::controllers {

const Json& empty_object() {
  static const Json kEmpty = Json::object();
  return kEmpty;
}

const Json& null_json() {
  static const Json kNull;
  return kNull;
}

const Json& field(const Json& obj, std::string_view name) {
  if (!obj.is_object()) return empty_object();
  auto it = obj.find(name);
  return it == obj.end() || it->is_null() ? empty_object() : *it;
}

const Json& member(const Json& obj, std::string_view name) {
  if (!obj.is_object()) return null_json();
  auto it = obj.find(name);
  return it == obj.end() ? null_json() : *it;
}

std::string string_field(const Json& obj, std::string_view name) {
  const Json& v = member(obj, name);
  return v.is_string() ? v.get<std::string>() : std::string();
}

int64_t int_field(const Json& obj, std::string_view name, int64_t fallback) {
  const Json& v = member(obj, name);
  return v.is_number_integer() ? v.get<int64_t>() : fallback;
}

int64_t numeric_int_field(const Json& obj, std::string_view name, int64_t fallback) {
  const Json& v = member(obj, name);
  return v.is_number() ? v.get<int64_t>() : fallback;
}

Json without_empty_values(const Json& value) {
  if (value.is_object()) {
    Json out = Json::object();
    for (auto it = value.begin(); it != value.end(); ++it) {
      Json v = without_empty_values(it.value());
      if (v.is_null() || ((v.is_object() || v.is_array()) && v.empty())) continue;
      out[it.key()] = std::move(v);
    }
    return out;
  }
  if (value.is_array()) {
    Json out = Json::array();
    for (const auto& v : value) out.push_back(without_empty_values(v));
    return out;
  }
  return value;
}

void set_default(Json& obj, std::string_view name, Json value) {
  if (!obj.contains(name) || obj[name].is_null()) obj[name] = std::move(value);
}

}  // namespace skiff::controllers
