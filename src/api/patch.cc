// JSON patch (RFC 6902) and JSON merge patch (RFC 7386) with the semantics and messages of the
// library the Kubernetes API server uses (evanphx/json-patch v4): negative array indices count
// from the end, "replace" of an absent object member adds it, a missing parent is an error.

#include "api/patch.h"

#include <charconv>
#include <string>
#include <vector>

#include "api/errors.h"

namespace skiff::api {
namespace {

using nlohmann::json;

Status patch_error(std::string msg) {
  return Status(StatusCode::kInvalidArgument, std::move(msg));
}

// RFC 6901 unescaping: "~1" → "/", "~0" → "~", in one left-to-right pass.
std::string decode_key(std::string_view k) {
  std::string out;
  out.reserve(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    if (k[i] == '~' && i + 1 < k.size() && (k[i + 1] == '1' || k[i + 1] == '0')) {
      out.push_back(k[i + 1] == '1' ? '/' : '~');
      ++i;
    } else {
      out.push_back(k[i]);
    }
  }
  return out;
}

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) {
      parts.push_back(path.substr(start));
      return parts;
    }
    parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
}

// Go's strconv.Atoi; on failure sets `err` to its message.
bool atoi(const std::string& s, int64_t& out, std::string& err) {
  std::string_view v = s;
  bool neg = false;
  if (!v.empty() && (v[0] == '+' || v[0] == '-')) {
    neg = v[0] == '-';
    v.remove_prefix(1);
  }
  bool digits = !v.empty();
  for (char c : v) digits = digits && c >= '0' && c <= '9';
  if (!digits) {
    err = "strconv.Atoi: parsing " + go_quote(s) + ": invalid syntax";
    return false;
  }
  std::string buf = (neg ? "-" : "") + std::string(v);
  auto [p, ec] = std::from_chars(buf.data(), buf.data() + buf.size(), out);
  if (ec != std::errc()) {
    err = "strconv.Atoi: parsing " + go_quote(s) + ": value out of range";
    return false;
  }
  return true;
}

std::string invalid_index(int64_t idx) {
  return "Unable to access invalid index: " + std::to_string(idx) + ": invalid index referenced";
}

// A container (object or array) and the last, decoded, path segment.
struct Target {
  json* container = nullptr;
  std::string key;
};

// Resolves an index into an array for get/replace/remove; "" error when fine.
bool array_index(const json& arr, const std::string& key, int64_t& idx, std::string& err) {
  if (!atoi(key, idx, err)) return false;
  int64_t n = static_cast<int64_t>(arr.size());
  if (idx < 0) {
    if (idx < -n) {
      err = invalid_index(idx);
      return false;
    }
    idx += n;
  }
  if (idx >= n) {
    err = invalid_index(idx);
    return false;
  }
  return true;
}

Target find_object(json& doc, const std::string& path) {
  std::vector<std::string_view> split = split_path(path);
  if (split.size() < 2) return {};
  json* cur = &doc;
  for (size_t i = 1; i + 1 < split.size(); ++i) {
    std::string part = decode_key(split[i]);
    json* next = nullptr;
    if (cur->is_object()) {
      auto it = cur->find(part);
      if (it != cur->end()) next = &*it;
    } else if (cur->is_array()) {
      int64_t idx;
      std::string err;
      if (array_index(*cur, part, idx, err)) next = &(*cur)[static_cast<size_t>(idx)];
    }
    if (next == nullptr || !(next->is_object() || next->is_array())) return {};
    cur = next;
  }
  return {cur, decode_key(split.back())};
}

// Container operations; each returns "" on success, else the library's message.
std::string container_get(json& c, const std::string& key, json** out) {
  *out = nullptr;
  if (c.is_object()) {
    auto it = c.find(key);
    if (it != c.end() && !it->is_null()) *out = &*it;
    return "";
  }
  int64_t idx;
  std::string err;
  if (!array_index(c, key, idx, err)) return err;
  json& v = c[static_cast<size_t>(idx)];
  if (!v.is_null()) *out = &v;
  return "";
}

std::string container_add(json& c, const std::string& key, json value) {
  if (c.is_object()) {
    c[key] = std::move(value);
    return "";
  }
  if (key == "-") {
    c.push_back(std::move(value));
    return "";
  }
  int64_t idx;
  std::string err;
  if (!atoi(key, idx, err)) return "value was not a proper array index: '" + key + "': " + err;
  int64_t size = static_cast<int64_t>(c.size()) + 1;
  if (idx >= size) return invalid_index(idx);
  if (idx < 0) {
    if (idx < -size) return invalid_index(idx);
    idx += size;
  }
  c.insert(c.begin() + idx, std::move(value));
  return "";
}

std::string container_remove(json& c, const std::string& key) {
  if (c.is_object()) {
    auto it = c.find(key);
    if (it == c.end() || it->is_null()) {
      return "Unable to remove nonexistent key: " + key + ": missing value";
    }
    c.erase(it);
    return "";
  }
  int64_t idx;
  std::string err;
  if (!atoi(key, idx, err)) return err;
  int64_t n = static_cast<int64_t>(c.size());
  if (idx >= n) return invalid_index(idx);
  if (idx < 0) {
    if (idx < -n) return invalid_index(idx);
    idx += n;
  }
  c.erase(c.begin() + idx);
  return "";
}

// The library compares scalars by their JSON text: 1 and 1.0 differ.
bool json_equal(const json& a, const json& b) {
  if (a.is_object() || b.is_object()) {
    if (!a.is_object() || !b.is_object() || a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      auto other = b.find(it.key());
      if (other == b.end()) return false;
      if (!json_equal(*it, *other)) return false;
    }
    return true;
  }
  if (a.is_array() || b.is_array()) {
    if (!a.is_array() || !b.is_array() || a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!json_equal(a[i], b[i])) return false;
    }
    return true;
  }
  if (a.is_number() && b.is_number()) {
    if (a.is_number_float() != b.is_number_float()) return false;
    return a == b;
  }
  return a == b;
}

// A string-valued member of an operation: missing → `missing` error; wrong type → decode error.
bool op_string(const json& op, const char* name, std::string& out, std::string& err,
               const std::string& missing) {
  auto it = op.find(name);
  if (it == op.end() || it->is_null()) {
    err = missing;
    return false;
  }
  if (!it->is_string()) {
    err =
        "json: cannot unmarshal " + std::string(it->type_name()) + " into Go value of type string";
    return false;
  }
  out = it->get<std::string>();
  return true;
}

const std::string kMissingPath = "operation missing path field: missing value";
const std::string kMissingFrom = "operation, missing from field: missing value";

json op_value(const json& op) {
  auto it = op.find("value");
  return it == op.end() ? json(nullptr) : *it;
}

Status apply_op(json& doc, const json& op) {
  std::string kind = "unknown";
  if (auto it = op.find("op"); it != op.end() && it->is_string()) kind = it->get<std::string>();
  std::string path, from, err;

  if (kind == "add") {
    if (!op_string(op, "path", path, err, kMissingPath)) {
      return patch_error("add operation failed to decode path: missing value");
    }
    Target t = find_object(doc, path);
    if (t.container == nullptr) {
      return patch_error("add operation does not apply: doc is missing path: \"" + path +
                         "\": missing value");
    }
    if (std::string e = container_add(*t.container, t.key, op_value(op)); !e.empty()) {
      return patch_error("error in add for path: '" + path + "': " + e);
    }
    return Status::ok();
  }
  if (kind == "remove") {
    if (!op_string(op, "path", path, err, kMissingPath)) {
      return patch_error("remove operation failed to decode path: missing value");
    }
    Target t = find_object(doc, path);
    if (t.container == nullptr) {
      return patch_error("remove operation does not apply: doc is missing path: \"" + path +
                         "\": missing value");
    }
    if (std::string e = container_remove(*t.container, t.key); !e.empty()) {
      return patch_error("error in remove for path: '" + path + "': " + e);
    }
    return Status::ok();
  }
  if (kind == "replace") {
    if (!op_string(op, "path", path, err, kMissingPath)) {
      return patch_error("replace operation failed to decode path: " + err);
    }
    if (path.empty()) {
      json v = op_value(op);
      if (!v.is_object() && !v.is_array()) {
        return patch_error("replace operation value must be object or array: %!w(<nil>)");
      }
      doc = std::move(v);
      return Status::ok();
    }
    Target t = find_object(doc, path);
    if (t.container == nullptr) {
      return patch_error("replace operation does not apply: doc is missing path: " + path +
                         ": missing value");
    }
    json* existing;
    if (!container_get(*t.container, t.key, &existing).empty()) {
      return patch_error("replace operation does not apply: doc is missing key: " + path +
                         ": missing value");
    }
    if (t.container->is_object()) {
      (*t.container)[t.key] = op_value(op);
    } else {
      int64_t idx;
      std::string e;
      array_index(*t.container, t.key, idx, e);
      (*t.container)[static_cast<size_t>(idx)] = op_value(op);
    }
    return Status::ok();
  }
  if (kind == "move") {
    if (!op_string(op, "from", from, err, kMissingFrom)) {
      return patch_error("move operation failed to decode from: " + err);
    }
    Target src = find_object(doc, from);
    if (src.container == nullptr) {
      return patch_error("move operation does not apply: doc is missing from path: " + from +
                         ": missing value");
    }
    json* v;
    if (std::string e = container_get(*src.container, src.key, &v); !e.empty()) {
      return patch_error("error in move for path: '" + src.key + "': " + e);
    }
    json value = v ? *v : json(nullptr);
    if (std::string e = container_remove(*src.container, src.key); !e.empty()) {
      return patch_error("error in move for path: '" + src.key + "': " + e);
    }
    if (!op_string(op, "path", path, err, kMissingPath)) {
      return patch_error("move operation failed to decode path: " + err);
    }
    Target dst = find_object(doc, path);
    if (dst.container == nullptr) {
      return patch_error("move operation does not apply: doc is missing destination path: " + path +
                         ": missing value");
    }
    if (std::string e = container_add(*dst.container, dst.key, std::move(value)); !e.empty()) {
      return patch_error("error in move for path: '" + path + "': " + e);
    }
    return Status::ok();
  }
  if (kind == "test") {
    if (!op_string(op, "path", path, err, kMissingPath)) {
      return patch_error("test operation failed to decode path: " + err);
    }
    auto value_it = op.find("value");
    bool has_value = value_it != op.end() && !value_it->is_null();
    const std::string failed = "testing value " + path + " failed: test failed";
    if (path.empty()) {
      if (has_value && json_equal(doc, *value_it)) return Status::ok();
      return patch_error(failed);
    }
    Target t = find_object(doc, path);
    if (t.container == nullptr) {
      return patch_error("test operation does not apply: is missing path: " + path +
                         ": missing value");
    }
    json* v;
    if (std::string e = container_get(*t.container, t.key, &v); !e.empty()) {
      return patch_error("error in test for path: '" + path + "': " + e);
    }
    if (v == nullptr) return has_value ? patch_error(failed) : Status::ok();
    if (!has_value || !json_equal(*v, *value_it)) return patch_error(failed);
    return Status::ok();
  }
  if (kind == "copy") {
    if (!op_string(op, "from", from, err, kMissingFrom)) {
      return patch_error("copy operation failed to decode from: " + err);
    }
    Target src = find_object(doc, from);
    if (src.container == nullptr) {
      return patch_error("copy operation does not apply: doc is missing from path: " + from +
                         ": missing value");
    }
    json* v;
    if (std::string e = container_get(*src.container, src.key, &v); !e.empty()) {
      return patch_error("error in copy for from: '" + from + "': " + e);
    }
    json value = v ? *v : json(nullptr);
    if (!op_string(op, "path", path, err, kMissingPath)) {
      return patch_error("copy operation failed to decode path: missing value");
    }
    Target dst = find_object(doc, path);
    if (dst.container == nullptr) {
      return patch_error("copy operation does not apply: doc is missing destination path: " + path +
                         ": missing value");
    }
    if (std::string e = container_add(*dst.container, dst.key, std::move(value)); !e.empty()) {
      return patch_error("error while adding value during copy: " + e);
    }
    return Status::ok();
  }
  return patch_error("Unexpected kind: " + kind);
}

// Removes null members of objects, recursively (arrays keep their null elements).
void prune_nulls(json& v) {
  if (v.is_object()) {
    for (auto it = v.begin(); it != v.end();) {
      if (it->is_null()) {
        it = v.erase(it);
      } else {
        prune_nulls(*it);
        ++it;
      }
    }
  } else if (v.is_array()) {
    for (json& e : v) {
      if (!e.is_null()) prune_nulls(e);
    }
  }
}

void merge_into(json& doc, const json& patch) {
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it->is_null()) {
      doc.erase(it.key());
      continue;
    }
    auto cur = doc.find(it.key());
    if (cur == doc.end() || cur->is_null() || !cur->is_object()) {
      json v = *it;
      prune_nulls(v);
      doc[it.key()] = std::move(v);
    } else if (it->is_object()) {
      merge_into(*cur, *it);
    } else {
      *cur = *it;
    }
  }
}

}  // namespace

Result<nlohmann::json> apply_json_patch(const nlohmann::json& doc, const nlohmann::json& patch) {
  if (!patch.is_array()) {
    return patch_error("json: cannot unmarshal " + std::string(patch.type_name()) +
                       " into Go value of type jsonpatch.Patch");
  }
  for (const json& op : patch) {
    if (!op.is_object()) {
      return patch_error("json: cannot unmarshal " + std::string(op.type_name()) +
                         " into Go value of type jsonpatch.Operation");
    }
  }
  if (!doc.is_object() && !doc.is_array()) return patch_error("invalid JSON document");
  json result = doc;
  for (const json& op : patch) SKIFF_RETURN_IF_ERROR(apply_op(result, op));
  return result;
}

nlohmann::json apply_merge_patch(const nlohmann::json& doc, const nlohmann::json& patch) {
  if (!patch.is_object()) return patch;
  json result = doc.is_object() ? doc : json::object();
  merge_into(result, patch);
  return result;
}

}  // namespace skiff::api
