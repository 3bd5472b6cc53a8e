#include "apiserver/wire.h"

#include <set>

namespace skiff::apiserver {

using nlohmann::json;

std::string table_content_type(std::string_view accept) {
  std::string_view rest = accept;
  bool v1beta1 = false;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (item.find("as=Table") == std::string_view::npos) continue;
    if (item.find("g=meta.k8s.io") == std::string_view::npos) continue;
    if (item.find("v=v1beta1") != std::string_view::npos) {
      v1beta1 = true;
    } else if (item.find("v=v1") != std::string_view::npos) {
      return "application/json;as=Table;v=v1;g=meta.k8s.io";
    }
  }
  return v1beta1 ? "application/json;as=Table;v=v1beta1;g=meta.k8s.io" : "";
}

std::optional<json> parse_json(std::string_view body, std::vector<std::string>* duplicates,
                               std::string* error) {
  // Track the keys seen in each open object to find duplicates, which nlohmann drops silently.
  std::vector<std::set<std::string>> seen;
  std::vector<std::string> path;
  std::string last_key;
  auto cb = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
        seen.emplace_back();
        if (depth > 0) path.push_back(last_key);
        break;
      case json::parse_event_t::object_end:
        if (!seen.empty()) seen.pop_back();
        if (!path.empty() && depth > 0) path.pop_back();
        break;
      case json::parse_event_t::key: {
        last_key = parsed.get<std::string>();
        if (!seen.empty() && !seen.back().insert(last_key).second && duplicates) {
          std::string p;
          for (size_t i = 0; i < path.size(); ++i) p += path[i] + ".";
          duplicates->push_back(p + last_key);
        }
        break;
      }
      case json::parse_event_t::array_start:
        if (depth > 0) path.push_back(last_key);
        break;
      case json::parse_event_t::array_end:
        if (!path.empty() && depth > 0) path.pop_back();
        break;
      default:
        break;
    }
    return true;
  };
  json out = json::parse(body.begin(), body.end(), cb, /*allow_exceptions=*/false);
  if (out.is_discarded()) {
    // Re-run without the callback for the error text.
    try {
      (void)json::parse(body.begin(), body.end());
    } catch (const json::exception& e) {
      *error = e.what();
    }
    if (error->empty()) *error = "invalid JSON";
    return std::nullopt;
  }
  return out;
}

namespace {

bool type_matches(const json& v, api::FieldKind kind) {
  if (v.is_null()) return true;
  switch (kind) {
    case api::FieldKind::kString:
    case api::FieldKind::kBytes:
    case api::FieldKind::kTime:
    case api::FieldKind::kMicroTime:
    case api::FieldKind::kDuration:
      return v.is_string();
    case api::FieldKind::kQuantity:
      return v.is_string() || v.is_number();
    case api::FieldKind::kInt32:
    case api::FieldKind::kInt64:
      return v.is_number_integer() ||
             (v.is_number_float() && v.get<double>() == static_cast<int64_t>(v.get<double>()));
    case api::FieldKind::kDouble:
      return v.is_number();
    case api::FieldKind::kBool:
      return v.is_boolean();
    case api::FieldKind::kIntOrString:
      return v.is_string() || v.is_number_integer();
    case api::FieldKind::kObject:
      return v.is_object();
    case api::FieldKind::kRaw:
      return true;
  }
  return true;
}

void check_value(json& v, const api::FieldInfo& f, const api::Schema& schema,
                 const std::string& path, std::vector<std::string>* unknown,
                 std::vector<std::string>* mistyped);

void check_single(json& v, const api::FieldInfo& f, const api::Schema& schema,
                  const std::string& path, std::vector<std::string>* unknown,
                  std::vector<std::string>* mistyped) {
  if (!type_matches(v, f.kind)) {
    mistyped->push_back(path);
    return;
  }
  if (f.kind == api::FieldKind::kObject && v.is_object()) {
    if (const api::TypeInfo* t = schema.type(f.type_name)) {
      prune_unknown_fields(v, *t, schema, path, unknown, mistyped);
    }
  }
}

void check_value(json& v, const api::FieldInfo& f, const api::Schema& schema,
                 const std::string& path, std::vector<std::string>* unknown,
                 std::vector<std::string>* mistyped) {
  if (v.is_null()) return;
  if (f.is_list) {
    if (!v.is_array()) {
      mistyped->push_back(path);
      return;
    }
    for (size_t i = 0; i < v.size(); ++i) {
      check_single(v[i], f, schema, path + "[" + std::to_string(i) + "]", unknown, mistyped);
    }
    return;
  }
  if (f.is_map) {
    if (!v.is_object()) {
      mistyped->push_back(path);
      return;
    }
    for (auto it = v.begin(); it != v.end(); ++it) {
      check_single(it.value(), f, schema, path + "[" + it.key() + "]", unknown, mistyped);
    }
    return;
  }
  check_single(v, f, schema, path, unknown, mistyped);
}

}  // namespace

void prune_unknown_fields(json& value, const api::TypeInfo& type, const api::Schema& schema,
                          const std::string& path, std::vector<std::string>* unknown,
                          std::vector<std::string>* mistyped) {
  if (!value.is_object() || type.scalar != api::FieldKind::kObject) return;
  for (auto it = value.begin(); it != value.end();) {
    const api::FieldInfo* f = type.field(it.key());
    std::string child = path.empty() ? it.key() : path + "." + it.key();
    if (!f) {
      unknown->push_back(child);
      it = value.erase(it);
      continue;
    }
    check_value(it.value(), *f, schema, child, unknown, mistyped);
    ++it;
  }
}

}  // namespace skiff::apiserver
