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

void set_default(Json& obj, std::string_view name, Json value) {
  if (!obj.contains(name) || obj[name].is_null()) obj[name] = std::move(value);
}

}  // namespace skiff::controllers
