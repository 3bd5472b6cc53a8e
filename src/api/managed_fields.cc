#include "api/managed_fields.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <set>

namespace skiff::api {
namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// How the schema shapes a value

struct Shape {
  enum class Kind : uint8_t { kLeaf, kStruct, kMap, kList };
  Kind kind = Kind::kLeaf;
  const TypeInfo* type = nullptr;    // kStruct: the struct type
  const FieldInfo* field = nullptr;  // kMap / kList: the field whose elements these are
  bool set_list = false;             // kList: keyed by value, else by `keys`
  const std::vector<std::string>* keys = nullptr;  // kList: +listMapKey fields, or
  const std::string* merge_key = nullptr;          // the patch merge key when no listType
};

Shape struct_shape(const TypeInfo* t) {
  Shape s;
  if (t && t->scalar == FieldKind::kObject && t->struct_type != "atomic" && !t->fields.empty()) {
    s.kind = Shape::Kind::kStruct;
    s.type = t;
  }
  return s;
}

Shape value_shape(const FieldInfo& f, const Schema& schema) {
  if (f.kind != FieldKind::kObject) return Shape{};
  return struct_shape(schema.type(f.type_name));
}

// The shape of a whole field's value.
Shape field_shape(const FieldInfo* f, const Schema& schema) {
  Shape s;
  if (!f) return s;
  if (f->is_list) {
    if (f->list_type == "atomic") return s;
    if (f->list_type == "set") {
      s.kind = Shape::Kind::kList;
      s.field = f;
      s.set_list = true;
      return s;
    }
    if (f->list_type == "map" && !f->list_map_keys.empty()) {
      s.kind = Shape::Kind::kList;
      s.field = f;
      s.keys = &f->list_map_keys;
      return s;
    }
    // No listType: upstream treats lists with a patch merge key as maps keyed by it, and
    // everything else as atomic.
    if (f->list_type.empty() && !f->patch_merge_key.empty() && f->kind == FieldKind::kObject) {
      s.kind = Shape::Kind::kList;
      s.field = f;
      s.merge_key = &f->patch_merge_key;
      return s;
    }
    return s;
  }
  if (f->is_map) {
    if (f->map_type == "atomic") return s;
    s.kind = Shape::Kind::kMap;
    s.field = f;
    return s;
  }
  return value_shape(*f, schema);
}

Shape element_shape(const Shape& s, const Schema& schema) {
  return value_shape(*s.field, schema);
}

Shape child_shape(const Shape& s, const std::string& key, const Schema& schema,
                  bool* known = nullptr) {
  if (s.kind == Shape::Kind::kStruct) {
    const FieldInfo* f = s.type->field(key);
    if (known) *known = f != nullptr;
    return field_shape(f, schema);
  }
  if (known) *known = false;
  return element_shape(s, schema);
}

// Upstream defaults list-map key fields that the schema defaults (ports' protocol).
json default_key_value(const std::string& key) {
  if (key == "protocol") return "TCP";
  return json();
}

// The path element of a list item, or "" when none can be built.
std::string list_element(const Shape& s, const json& item, size_t index) {
  if (s.set_list) return "v:" + item.dump();
  if (!item.is_object()) return "i:" + std::to_string(index);
  json key = json::object();
  auto add = [&](const std::string& k) {
    auto it = item.find(k);
    if (it != item.end() && !it->is_null()) {
      key[k] = *it;
    } else if (json d = default_key_value(k); !d.is_null()) {
      key[k] = d;
    }
  };
  if (s.keys) {
    for (const std::string& k : *s.keys) add(k);
  } else if (s.merge_key) {
    add(*s.merge_key);
  }
  if (key.empty()) return "i:" + std::to_string(index);
  return "k:" + key.dump();
}

bool is_empty_container(const json* v) {
  return !v || v->is_null() || ((v->is_object() || v->is_array()) && v->empty());
}

// ---------------------------------------------------------------------------------------------
// Field sets of objects

void to_field_set(const json& v, const Shape& s, const Schema& schema, FieldPath& path,
                  FieldSet& out) {
  switch (s.kind) {
    case Shape::Kind::kLeaf:
      out.insert(path);
      return;
    case Shape::Kind::kStruct:
    case Shape::Kind::kMap: {
      if (!v.is_object()) return;
      for (auto it = v.begin(); it != v.end(); ++it) {
        bool known = false;
        Shape cs = child_shape(s, it.key(), schema, &known);
        path.push_back("f:" + it.key());
        to_field_set(*it, cs, schema, path, out);
        if (it->is_null() || (it->is_object() && it->empty()) || !known) out.insert(path);
        path.pop_back();
      }
      return;
    }
    case Shape::Kind::kList: {
      if (!v.is_array()) return;
      Shape es = element_shape(s, schema);
      std::map<std::string, int> seen;
      for (size_t i = 0; i < v.size(); ++i) ++seen[list_element(s, v[i], i)];
      for (size_t i = 0; i < v.size(); ++i) {
        std::string pe = list_element(s, v[i], i);
        path.push_back(pe);
        if (seen[pe] == 1) to_field_set(v[i], es, schema, path, out);
        out.insert(path);
        path.pop_back();
      }
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Comparison

void compare_values(const json* l, const json* r, const Shape& s, const Schema& schema,
                    FieldPath& path, Comparison& out);

void leaf_compare(const json* l, const json* r, const FieldPath& path, Comparison& out) {
  // A null is what a typed (Go) object holds for an unset field: the same as absent.
  if (l && l->is_null()) l = nullptr;
  if (r && r->is_null()) r = nullptr;
  if (!l && !r) return;
  if (!l) {
    out.added.insert(path);
  } else if (!r) {
    out.removed.insert(path);
  } else if (*l != *r) {
    out.modified.insert(path);
  }
}

void compare_values(const json* l, const json* r, const Shape& s, const Schema& schema,
                    FieldPath& path, Comparison& out) {
  bool leaf = s.kind == Shape::Kind::kLeaf;
  if (s.kind == Shape::Kind::kStruct || s.kind == Shape::Kind::kMap) {
    const json* lo = l && l->is_object() ? l : nullptr;
    const json* ro = r && r->is_object() ? r : nullptr;
    if ((l && !l->is_object() && !l->is_null()) || (r && !r->is_object() && !r->is_null())) {
      leaf = true;  // not an object where one is expected: compare as a value
    } else if (is_empty_container(lo) && is_empty_container(ro)) {
      leaf = true;
    } else {
      std::set<std::string> keys;
      if (lo) {
        for (auto it = lo->begin(); it != lo->end(); ++it) keys.insert(it.key());
      }
      if (ro) {
        for (auto it = ro->begin(); it != ro->end(); ++it) keys.insert(it.key());
      }
      bool meta = path.size() == 1 && path[0] == "f:metadata";
      for (const std::string& k : keys) {
        if (meta && k == "managedFields") continue;
        const json* lc = nullptr;
        const json* rc = nullptr;
        if (lo) {
          if (auto it = lo->find(k); it != lo->end()) lc = &*it;
        }
        if (ro) {
          if (auto it = ro->find(k); it != ro->end()) rc = &*it;
        }
        path.push_back("f:" + k);
        compare_values(lc, rc, child_shape(s, k, schema), schema, path, out);
        path.pop_back();
      }
    }
  } else if (s.kind == Shape::Kind::kList) {
    const json* la = l && l->is_array() ? l : nullptr;
    const json* ra = r && r->is_array() ? r : nullptr;
    if ((l && !l->is_array() && !l->is_null()) || (r && !r->is_array() && !r->is_null())) {
      leaf = true;
    } else if (is_empty_container(la) && is_empty_container(ra)) {
      leaf = true;
    } else {
      Shape es = element_shape(s, schema);
      std::map<std::string, std::vector<const json*>> lv, rv;
      std::vector<std::string> order;
      if (la) {
        for (size_t i = 0; i < la->size(); ++i) {
          std::string pe = list_element(s, (*la)[i], i);
          if (lv[pe].empty()) order.push_back(pe);
          lv[pe].push_back(&(*la)[i]);
        }
      }
      if (ra) {
        for (size_t i = 0; i < ra->size(); ++i) {
          std::string pe = list_element(s, (*ra)[i], i);
          if (rv[pe].empty() && !lv.count(pe)) order.push_back(pe);
          rv[pe].push_back(&(*ra)[i]);
        }
      }
      for (const std::string& pe : order) {
        const auto& ll = lv[pe];
        const auto& rl = rv[pe];
        path.push_back(pe);
        if (ll.size() <= 1 && rl.size() <= 1) {
          compare_values(ll.empty() ? nullptr : ll[0], rl.empty() ? nullptr : rl[0], es, schema,
                         path, out);
        } else if (ll.size() >= 2 && rl.size() >= 2) {
          bool equal = ll.size() == rl.size();
          for (size_t i = 0; equal && i < ll.size(); ++i) equal = *ll[i] == *rl[i];
          if (!equal) out.modified.insert(path);
        } else if (ll.size() >= 2) {
          if (!rl.empty()) compare_values(nullptr, rl[0], es, schema, path, out);
          out.removed.insert(path);
        } else {
          if (!ll.empty()) compare_values(ll[0], nullptr, es, schema, path, out);
          out.added.insert(path);
        }
        path.pop_back();
      }
    }
  }
  if (leaf) {
    leaf_compare(l, r, path, out);
    return;
  }
  if (!l) {
    out.added.insert(path);
  } else if (!r) {
    out.removed.insert(path);
  }
}

// ---------------------------------------------------------------------------------------------
// Merge

json merge_values(const json* l, const json& r, const Shape& s, const Schema& schema);

json merge_list(const json& l, const json& r, const Shape& s, const Schema& schema) {
  Shape es = element_shape(s, schema);
  std::vector<std::string> lpe, rpe;
  std::map<std::string, const json*> lseen, rseen;
  for (size_t i = 0; i < l.size(); ++i) {
    lpe.push_back(list_element(s, l[i], i));
    lseen.try_emplace(lpe.back(), &l[i]);
  }
  for (size_t i = 0; i < r.size(); ++i) {
    rpe.push_back(list_element(s, r[i], i));
    rseen.try_emplace(rpe.back(), &r[i]);
  }
  // Items on both sides come in the applied order; items only in the live list stay where
  // they were relative to them; new items come where the configuration puts them.
  std::vector<std::string> shared;
  for (const std::string& pe : rpe) {
    if (lseen.count(pe)) shared.push_back(pe);
  }
  size_t next_shared = 0;
  std::set<std::string> merged;
  json out = json::array();
  auto take = [&](const std::string& pe, const json* lc, const json* rc) {
    if (rc) {
      json m = merge_values(lc, *rc, es, schema);
      if (!m.is_null()) out.push_back(std::move(m));
    } else if (lc) {
      out.push_back(*lc);
    }
    (void)pe;
  };
  size_t li = 0, ri = 0;
  while (li < lpe.size() || ri < rpe.size()) {
    if (li < lpe.size() && ri < rpe.size()) {
      const std::string& pe = lpe[li];
      if (pe == rpe[ri]) {
        if (!merged.count(pe)) {
          merged.insert(pe);
          take(pe, lseen[pe], rseen[pe]);
        }
        ++li;
        ++ri;
        if (next_shared < shared.size() && shared[next_shared] == pe) ++next_shared;
        continue;
      }
      if (rseen.count(pe) && next_shared < shared.size() && shared[next_shared] != pe) {
        ++li;  // a shared item, but not the one due now: it comes later in applied order
        continue;
      }
    }
    if (li < lpe.size()) {
      const std::string& pe = lpe[li];
      if (!rseen.count(pe)) {
        out.push_back(l[li]);
        ++li;
        continue;
      }
      if (merged.count(pe)) ++li;
    }
    if (ri < rpe.size()) {
      const std::string& pe = rpe[ri];
      if (!merged.count(pe)) {
        merged.insert(pe);
        auto lit = lseen.find(pe);
        take(pe, lit == lseen.end() ? nullptr : lit->second, rseen[pe]);
      }
      ++ri;
      if (next_shared < shared.size() && shared[next_shared] == pe) ++next_shared;
    }
  }
  return out;
}

json merge_values(const json* l, const json& r, const Shape& s, const Schema& schema) {
  switch (s.kind) {
    case Shape::Kind::kLeaf:
      return r;
    case Shape::Kind::kStruct:
    case Shape::Kind::kMap: {
      if (!r.is_object()) return r;
      json out = l && l->is_object() ? *l : json::object();
      for (auto it = r.begin(); it != r.end(); ++it) {
        if (it->is_null()) {
          out.erase(it.key());
          continue;
        }
        auto lit = out.find(it.key());
        const json* lc = lit == out.end() ? nullptr : &*lit;
        json m = merge_values(lc, *it, child_shape(s, it.key(), schema), schema);
        out[it.key()] = std::move(m);
      }
      return out;
    }
    case Shape::Kind::kList:
      if (!r.is_array() || !l || !l->is_array()) return r;
      return merge_list(*l, r, s, schema);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Removing owned items and ensuring named fields

void remove_items(json& v, const FieldSet& set, const Shape& s, const Schema& schema) {
  if (s.kind == Shape::Kind::kStruct || s.kind == Shape::Kind::kMap) {
    if (!v.is_object()) return;
    for (const auto& [pe, child] : set.children()) {
      if (pe.rfind("f:", 0) != 0) continue;
      std::string key = pe.substr(2);
      auto it = v.find(key);
      if (it == v.end()) continue;
      if (child.member()) {
        v.erase(it);
      } else {
        remove_items(*it, child, child_shape(s, key, schema), schema);
      }
    }
  } else if (s.kind == Shape::Kind::kList) {
    if (!v.is_array()) return;
    Shape es = element_shape(s, schema);
    json out = json::array();
    for (size_t i = 0; i < v.size(); ++i) {
      auto it = set.children().find(list_element(s, v[i], i));
      if (it == set.children().end()) {
        out.push_back(std::move(v[i]));
      } else if (!it->second.member()) {
        remove_items(v[i], it->second, es, schema);
        out.push_back(std::move(v[i]));
      }
    }
    v = std::move(out);
  }
}

// Upstream's EnsureNamedFieldsAreMembers: a struct field with owned descendants counts as
// owned itself (map keys and list elements do not).
FieldSet ensure_named(const FieldSet& set, const Shape& s, const Schema& schema) {
  FieldSet out = set;
  if (s.kind == Shape::Kind::kLeaf) return out;
  for (auto& [pe, child] : out.mutable_children()) {
    Shape cs;
    if (s.kind == Shape::Kind::kList) {
      cs = element_shape(s, schema);
    } else {
      cs = child_shape(s, pe.rfind("f:", 0) == 0 ? pe.substr(2) : pe, schema);
    }
    child = ensure_named(child, cs, schema);
    if (s.kind == Shape::Kind::kStruct && !child.children().empty()) child.set_member(true);
  }
  return out;
}

// Update entries: upstream diffs against Go's zero-valued object, where structs and fields
// without omitempty (pod containers) are always present, so it never records them as added
// when they have fields below them. Keep "." on list elements and on omitempty maps and lists
// (labels, ports); drop it on struct fields and on lists and maps without omitempty.
void drop_struct_members(FieldSet& set, const Shape& s, const Schema& schema) {
  if (s.kind == Shape::Kind::kLeaf) return;
  for (auto& [pe, child] : set.mutable_children()) {
    Shape cs;
    if (s.kind == Shape::Kind::kList) {
      cs = element_shape(s, schema);
    } else {
      cs = child_shape(s, pe.rfind("f:", 0) == 0 ? pe.substr(2) : pe, schema);
    }
    drop_struct_members(child, cs, schema);
    bool always_present = cs.kind == Shape::Kind::kStruct ||
                          ((cs.kind == Shape::Kind::kList || cs.kind == Shape::Kind::kMap) &&
                           cs.field && !cs.field->omit_empty);
    if (s.kind == Shape::Kind::kStruct && always_present && !child.children().empty()) {
      child.set_member(false);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Managed fields entries

struct Entry {
  std::string manager;
  std::string operation;  // "Apply" or "Update"
  std::string api_version;
  std::string subresource;
  std::string time;
  FieldSet set;
  bool touched = false;  // this write changed the entry: set its time
};

bool same_identity(const Entry& e, const std::string& manager, const std::string& operation,
                   const std::string& api_version, const std::string& subresource) {
  if (e.manager != manager || e.operation != operation || e.subresource != subresource) {
    return false;
  }
  // Appliers keep one entry whatever version they apply.
  return operation == "Apply" || e.api_version == api_version;
}

std::string print_manager(const Entry& e) {
  std::string s = go_quote(e.manager);
  if (!e.subresource.empty()) s += " with subresource " + go_quote(e.subresource);
  if (e.operation == "Update") s += " using " + e.api_version;
  return s;
}

Result<std::vector<Entry>> decode_entries(const json& obj) {
  std::vector<Entry> out;
  if (!obj.is_object()) return out;
  auto meta = obj.find("metadata");
  if (meta == obj.end() || !meta->is_object()) return out;
  auto mf = meta->find("managedFields");
  if (mf == meta->end() || mf->is_null()) return out;
  if (!mf->is_array()) {
    return Status(StatusCode::kInvalidArgument, "metadata.managedFields must be a list");
  }
  for (const json& e : *mf) {
    if (!e.is_object()) {
      return Status(StatusCode::kInvalidArgument,
                    "metadata.managedFields: entries must be objects");
    }
    Entry entry;
    entry.manager = e.value("manager", "");
    entry.operation = e.value("operation", "");
    entry.api_version = e.value("apiVersion", "");
    entry.subresource = e.value("subresource", "");
    entry.time = e.contains("time") && e["time"].is_string() ? e["time"].get<std::string>() : "";
    std::string fields_type = e.value("fieldsType", "");
    if (!fields_type.empty() && fields_type != "FieldsV1") {
      return Status(StatusCode::kInvalidArgument,
                    "metadata.managedFields: unsupported fieldsType " + go_quote(fields_type));
    }
    if (auto f = e.find("fieldsV1"); f != e.end() && !f->is_null()) {
      auto set = FieldSet::from_fields_v1(*f);
      if (!set.is_ok()) return set.status();
      entry.set = std::move(set).value();
    }
    if (entry.operation != "Apply" && entry.operation != "Update") {
      return Status(StatusCode::kInvalidArgument,
                    "metadata.managedFields: operation must be Apply or Update");
    }
    out.push_back(std::move(entry));
  }
  return out;
}

json encode_entries(std::vector<Entry> entries) {
  std::sort(entries.begin(), entries.end(), [](const Entry& p, const Entry& q) {
    if (p.operation != q.operation) return p.operation < q.operation;
    if (p.time != q.time) return p.time < q.time;
    if (p.manager != q.manager) return p.manager < q.manager;
    if (p.api_version != q.api_version) return p.api_version < q.api_version;
    return p.subresource < q.subresource;
  });
  json out = json::array();
  for (const Entry& e : entries) {
    json j{{"manager", e.manager},
           {"operation", e.operation},
           {"apiVersion", e.api_version},
           {"fieldsType", "FieldsV1"},
           {"fieldsV1", e.set.to_fields_v1()}};
    if (!e.time.empty()) j["time"] = e.time;
    if (!e.subresource.empty()) j["subresource"] = e.subresource;
    out.push_back(std::move(j));
  }
  return out;
}

void set_entries(json& obj, const std::vector<Entry>& entries) {
  if (!obj["metadata"].is_object()) obj["metadata"] = json::object();
  if (entries.empty()) {
    obj["metadata"].erase("managedFields");
  } else {
    obj["metadata"]["managedFields"] = encode_entries(entries);
  }
}

// Fields nobody owns (upstream's stripmeta) and the writer's reset fields.
FieldSet owned_part(const FieldSet& set, const WriterInfo& w) {
  FieldSet stripped;
  for (const char* top : {"apiVersion", "kind", "metadata"})
    stripped.insert({std::string("f:") + top});
  for (const char* m : {"name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName",
                        "generation", "managedFields", "resourceVersion"}) {
    stripped.insert({"f:metadata", std::string("f:") + m});
  }
  FieldSet out = set.difference(stripped);
  if (w.has_status) {
    if (w.subresource == "status") {
      out = out.only("f:status");
    } else {
      FieldSet status;
      status.insert({"f:status"});
      out = out.recursive_difference(status);
    }
  }
  return out;
}

bool is_reset_request(const json& obj) {
  // managedFields: [{}] asks to clear ownership.
  const json* mf = nullptr;
  if (obj.is_object() && obj.contains("metadata") && obj["metadata"].is_object()) {
    auto it = obj["metadata"].find("managedFields");
    if (it != obj["metadata"].end()) mf = &*it;
  }
  return mf && mf->is_array() && mf->size() == 1 && (*mf)[0].is_object() && (*mf)[0].empty();
}

const json* managed_fields_of(const json& obj) {
  if (!obj.is_object()) return nullptr;
  auto meta = obj.find("metadata");
  if (meta == obj.end() || !meta->is_object()) return nullptr;
  auto mf = meta->find("managedFields");
  if (mf == meta->end() || mf->is_null() || (mf->is_array() && mf->empty())) return nullptr;
  return &*mf;
}

// ---------------------------------------------------------------------------------------------
// YAML

bool plain_null(const std::string& s) {
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}

std::optional<bool> plain_bool(const std::string& s) {
  // YAML 1.1 booleans, as sigs.k8s.io/yaml (go-yaml v2) reads them.
  static const char* kTrue[] = {"true", "True", "TRUE", "yes", "Yes", "YES",
                                "on",   "On",   "ON",   "y",   "Y"};
  static const char* kFalse[] = {"false", "False", "FALSE", "no", "No", "NO",
                                 "off",   "Off",   "OFF",   "n",  "N"};
  for (const char* t : kTrue) {
    if (s == t) return true;
  }
  for (const char* f : kFalse) {
    if (s == f) return false;
  }
  return std::nullopt;
}

std::optional<json> plain_number(const std::string& s) {
  if (s.empty()) return std::nullopt;
  std::string t;
  for (char c : s) {
    if (c != '_') t.push_back(c);
  }
  const char* b = t.c_str();
  char* end = nullptr;
  bool hexoct = t.size() > 2 && (t.rfind("0x", 0) == 0 || t.rfind("0o", 0) == 0);
  if (!hexoct) {
    errno = 0;
    long long v = std::strtoll(b, &end, 10);
    if (end && *end == '\0' && errno == 0 && end != b) return json(v);
  } else {
    int base = t[1] == 'x' ? 16 : 8;
    errno = 0;
    long long v = std::strtoll(b + 2, &end, base);
    if (end && *end == '\0' && errno == 0) return json(v);
  }
  if (t == ".inf" || t == ".Inf" || t == "+.inf" || t == "-.inf" || t == ".nan" || t == ".NaN") {
    return std::nullopt;  // JSON cannot carry them; keep as strings
  }
  bool has_digit = false;
  for (char c : t) {
    if (c >= '0' && c <= '9') has_digit = true;
    if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')) {
      return std::nullopt;
    }
  }
  if (!has_digit) return std::nullopt;
  double d = std::strtod(b, &end);
  if (end && *end == '\0') return json(d);
  return std::nullopt;
}

bool wants_string(FieldKind k) {
  switch (k) {
    case FieldKind::kString:
    case FieldKind::kBytes:
    case FieldKind::kTime:
    case FieldKind::kMicroTime:
    case FieldKind::kDuration:
      return true;
    default:
      return false;
  }
}

json yaml_scalar(const YAML::Node& n, const FieldInfo* f, bool element) {
  const std::string& text = n.Scalar();
  if (n.Tag() == "!") return text;  // quoted
  if (n.Tag() == "tag:yaml.org,2002:str") return text;
  if (plain_null(text)) return json();
  // The scalar's type when the schema gives it (a field, or an element of a list/map field).
  bool typed = false;
  FieldKind kind = FieldKind::kRaw;
  if (f && (element || (!f->is_list && !f->is_map)) &&
      !(f->kind == FieldKind::kObject && !f->type_name.empty())) {
    typed = true;
    kind = f->kind;
  }
  if (typed && wants_string(kind)) return text;
  if (auto b = plain_bool(text)) {
    if (!typed || kind == FieldKind::kBool || kind == FieldKind::kRaw) return *b;
    return text;  // "yes" for a string-ish or numeric field: keep the text
  }
  if (auto num = plain_number(text)) {
    if (typed && kind == FieldKind::kIntOrString && !num->is_number_integer()) return text;
    return *num;
  }
  return text;
}

Result<json> yaml_to_json(const YAML::Node& n, const TypeInfo* type, const FieldInfo* f,
                          bool element, const Schema& schema, int depth) {
  if (depth > 100) return Status(StatusCode::kInvalidArgument, "yaml: nesting too deep");
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return json();
    case YAML::NodeType::Scalar:
      return yaml_scalar(n, f, element);
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const YAML::Node& item : n) {
        auto v =
            yaml_to_json(item, nullptr, f && f->is_list ? f : nullptr, true, schema, depth + 1);
        if (!v.is_ok()) return v.status();
        out.push_back(std::move(v).value());
      }
      return out;
    }
    case YAML::NodeType::Map: {
      json out = json::object();
      const TypeInfo* t = type;
      bool map_values = false;
      if (f) {
        if (f->is_map && !element) {
          map_values = true;
        } else if (f->kind == FieldKind::kObject) {
          t = schema.type(f->type_name);
        } else {
          t = nullptr;
        }
      }
      for (auto it = n.begin(); it != n.end(); ++it) {
        if (!it->first.IsScalar()) {
          return Status(StatusCode::kInvalidArgument, "yaml: mapping keys must be strings");
        }
        std::string key = it->first.Scalar();
        const FieldInfo* cf = nullptr;
        bool ce = false;
        if (map_values) {
          cf = f;
          ce = true;
        } else if (t) {
          cf = t->field(key);
        }
        auto v = yaml_to_json(it->second, nullptr, cf, ce, schema, depth + 1);
        if (!v.is_ok()) return v.status();
        out[key] = std::move(v).value();
      }
      return out;
    }
  }
  return json();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// FieldSet

std::string field_path_string(const FieldPath& path) {
  std::string out;
  for (const std::string& pe : path) {
    if (pe.size() < 2) continue;
    std::string rest = pe.substr(2);
    switch (pe[0]) {
      case 'f':
        out += "." + rest;
        break;
      case 'k': {
        json key = json::parse(rest, nullptr, false);
        out += "[";
        bool first = true;
        if (key.is_object()) {
          for (auto it = key.begin(); it != key.end(); ++it) {
            if (!first) out += ",";
            first = false;
            out += it.key() + "=" + it->dump();
          }
        }
        out += "]";
        break;
      }
      case 'v':
        out += "[=" + rest + "]";
        break;
      case 'i':
        out += "[" + rest + "]";
        break;
      default:
        out += pe;
    }
  }
  return out;
}

void FieldSet::insert(const FieldPath& path) {
  FieldSet* node = this;
  for (const std::string& pe : path) node = &node->children_[pe];
  node->member_ = true;
}

bool FieldSet::has(const FieldPath& path) const {
  const FieldSet* node = this;
  for (const std::string& pe : path) {
    auto it = node->children_.find(pe);
    if (it == node->children_.end()) return false;
    node = &it->second;
  }
  return node->member_;
}

FieldSet FieldSet::union_with(const FieldSet& other) const {
  FieldSet out = *this;
  out.member_ = member_ || other.member_;
  for (const auto& [pe, child] : other.children_) {
    auto it = out.children_.find(pe);
    if (it == out.children_.end()) {
      out.children_.emplace(pe, child);
    } else {
      it->second = it->second.union_with(child);
    }
  }
  return out;
}

FieldSet FieldSet::difference(const FieldSet& other) const {
  FieldSet out;
  out.member_ = member_ && !other.member_;
  for (const auto& [pe, child] : children_) {
    auto it = other.children_.find(pe);
    FieldSet c = it == other.children_.end() ? child : child.difference(it->second);
    if (!c.empty()) out.children_.emplace(pe, std::move(c));
  }
  return out;
}

FieldSet FieldSet::intersection(const FieldSet& other) const {
  FieldSet out;
  out.member_ = member_ && other.member_;
  for (const auto& [pe, child] : children_) {
    auto it = other.children_.find(pe);
    if (it == other.children_.end()) continue;
    FieldSet c = child.intersection(it->second);
    if (!c.empty()) out.children_.emplace(pe, std::move(c));
  }
  return out;
}

FieldSet FieldSet::recursive_difference(const FieldSet& other) const {
  if (other.member_) return FieldSet();
  FieldSet out;
  out.member_ = member_;
  for (const auto& [pe, child] : children_) {
    auto it = other.children_.find(pe);
    FieldSet c = it == other.children_.end() ? child : child.recursive_difference(it->second);
    if (!c.empty()) out.children_.emplace(pe, std::move(c));
  }
  return out;
}

FieldSet FieldSet::only(std::string_view element) const {
  FieldSet out;
  auto it = children_.find(std::string(element));
  if (it != children_.end()) out.children_.emplace(it->first, it->second);
  return out;
}

void FieldSet::collect(FieldPath& prefix, std::vector<FieldPath>* out) const {
  if (member_) out->push_back(prefix);
  for (const auto& [pe, child] : children_) {
    prefix.push_back(pe);
    child.collect(prefix, out);
    prefix.pop_back();
  }
}

std::vector<FieldPath> FieldSet::paths() const {
  std::vector<FieldPath> out;
  FieldPath prefix;
  collect(prefix, &out);
  return out;
}

json FieldSet::to_fields_v1() const {
  json out = json::object();
  if (member_ && !children_.empty()) out["."] = json::object();
  for (const auto& [pe, child] : children_) {
    if (child.empty()) continue;
    out[pe] = child.children_.empty() ? json::object() : child.to_fields_v1();
  }
  return out;
}

Result<FieldSet> FieldSet::from_fields_v1(const json& fields) {
  if (!fields.is_object()) {
    return Status(StatusCode::kInvalidArgument, "fieldsV1: expected an object");
  }
  FieldSet out;
  for (auto it = fields.begin(); it != fields.end(); ++it) {
    const std::string& key = it.key();
    if (key == ".") {
      out.member_ = true;
      continue;
    }
    if (key.size() < 2 || key[1] != ':' ||
        (key[0] != 'f' && key[0] != 'k' && key[0] != 'v' && key[0] != 'i')) {
      return Status(StatusCode::kInvalidArgument,
                    "fieldsV1: unexpected path element " + go_quote(key));
    }
    auto child = from_fields_v1(*it);
    if (!child.is_ok()) return child.status();
    FieldSet c = std::move(child).value();
    if (it->empty()) c.member_ = true;
    out.children_.emplace(key, std::move(c));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Objects

FieldSet field_set_of(const json& obj, const TypeInfo& type, const Schema& schema) {
  FieldSet out;
  FieldPath path;
  Shape root = struct_shape(&type);
  to_field_set(obj, root, schema, path, out);
  return out;
}

Comparison compare_objects(const json& lhs, const json& rhs, const TypeInfo& type,
                           const Schema& schema) {
  Comparison out;
  FieldPath path;
  compare_values(&lhs, &rhs, struct_shape(&type), schema, path, out);
  return out;
}

json merge_applied(const json& live, const json& applied, const TypeInfo& type,
                   const Schema& schema) {
  return merge_values(&live, applied, struct_shape(&type), schema);
}

Result<ApplyResult> server_side_apply(const json& live_or_null, const json& applied,
                                      const WriterInfo& writer, bool force, const TypeInfo& type,
                                      const Schema& schema) {
  if (!applied.is_object()) {
    return Status(StatusCode::kInvalidArgument, "the applied configuration must be an object");
  }
  if (managed_fields_of(applied)) {
    return Status(StatusCode::kInvalidArgument, "metadata.managedFields must be nil");
  }
  Shape root = struct_shape(&type);
  bool exists = live_or_null.is_object();
  json live = exists ? live_or_null : json::object();
  std::vector<Entry> entries;
  if (exists) {
    auto decoded = decode_entries(live);
    // Unreadable ownership is dropped, as upstream resets it.
    if (decoded.is_ok()) entries = std::move(decoded).value();
    if (entries.empty()) {
      // Objects written before ownership was tracked: someone owns everything already there.
      Entry before;
      before.manager = "before-first-apply";
      before.operation = "Update";
      before.api_version = writer.api_version;
      before.set = owned_part(field_set_of(live, type, schema), writer);
      drop_struct_members(before.set, root, schema);
      if (!before.set.empty()) entries.push_back(std::move(before));
    }
  }

  json config = applied;
  json merged = merge_values(&live, config, root, schema);
  FieldSet applied_set = owned_part(field_set_of(config, type, schema), writer);

  // The applier's entry.
  FieldSet last;
  size_t mine = entries.size();
  for (size_t i = 0; i < entries.size(); ++i) {
    if (same_identity(entries[i], writer.manager, "Apply", writer.api_version,
                      writer.subresource)) {
      mine = i;
      last = entries[i].set;
    }
  }
  if (mine == entries.size()) {
    Entry e;
    e.manager = writer.manager;
    e.operation = "Apply";
    e.subresource = writer.subresource;
    entries.push_back(std::move(e));
  }
  bool applier_changed = entries[mine].set != applied_set;
  entries[mine].set = applied_set;
  entries[mine].api_version = writer.api_version;

  // Drop what this manager applied before, applies no more, and nobody else owns.
  if (!last.empty()) {
    FieldSet managed;
    for (const Entry& e : entries) managed = managed.union_with(e.set);
    FieldSet e_last = ensure_named(last, root, schema);
    FieldSet e_merged = ensure_named(field_set_of(merged, type, schema), root, schema);
    FieldSet e_managed = ensure_named(managed, root, schema);
    FieldSet removal = e_last.intersection(e_merged).difference(e_managed);
    if (!removal.empty()) remove_items(merged, removal, root, schema);
  }

  // Reset fields: the main resource does not write status, /status writes only status.
  if (writer.has_status) {
    if (writer.subresource == "status") {
      json only_status = live;
      if (merged.contains("status")) {
        only_status["status"] = merged["status"];
      } else {
        only_status.erase("status");
      }
      merged = std::move(only_status);
    } else if (live.contains("status")) {
      merged["status"] = live["status"];
    } else {
      merged.erase("status");
    }
  }

  Comparison cmp = compare_objects(live, merged, type, schema);
  FieldSet changed = owned_part(cmp.modified.union_with(cmp.added), writer);
  ApplyResult result;
  std::vector<FieldSet> lost(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i == mine) continue;
    FieldSet conflict = entries[i].set.intersection(changed);
    if (conflict.empty()) continue;
    lost[i] = conflict;
    for (const FieldPath& p : conflict.paths()) {
      result.conflicts.push_back({print_manager(entries[i]), field_path_string(p)});
    }
  }
  if (!force && !result.conflicts.empty()) return result;
  result.conflicts.clear();
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i == mine) continue;
    FieldSet next = entries[i].set.difference(lost[i]).difference(cmp.removed);
    if (next != entries[i].set) entries[i].set = std::move(next);
  }
  bool object_changed = !cmp.empty();
  if (object_changed || applier_changed || entries[mine].time.empty()) {
    entries[mine].time = writer.time;
  }
  std::vector<Entry> kept;
  for (Entry& e : entries) {
    if (!e.set.empty()) kept.push_back(std::move(e));
  }
  set_entries(merged, kept);
  result.object = std::move(merged);
  return result;
}

ApiError apply_conflict_error(const std::vector<FieldConflict>& conflicts) {
  ApiError e;
  e.code = 409;
  e.reason = "Conflict";
  for (const FieldConflict& c : conflicts) {
    e.causes.push_back({"FieldManagerConflict", "conflict with " + c.manager, c.path});
  }
  if (conflicts.size() == 1) {
    e.message = "Apply failed with 1 conflict: conflict with " + conflicts[0].manager + ": " +
                conflicts[0].path;
    return e;
  }
  std::map<std::string, std::vector<std::string>> by_manager;
  for (const FieldConflict& c : conflicts) by_manager[c.manager].push_back(c.path);
  std::string msg = "Apply failed with " + std::to_string(conflicts.size()) + " conflicts: ";
  bool first = true;
  for (const auto& [manager, paths] : by_manager) {
    if (!first) msg += "\n";
    first = false;
    msg += "conflicts with " + manager + ":";
    for (const std::string& p : paths) msg += "\n- " + p;
  }
  e.message = std::move(msg);
  return e;
}

json update_managed_fields(const json& old_or_null, json new_obj, const WriterInfo& writer,
                           const TypeInfo& type, const Schema& schema) {
  if (!new_obj.is_object()) return new_obj;
  if (!new_obj["metadata"].is_object()) new_obj["metadata"] = json::object();
  if (is_reset_request(new_obj)) {
    new_obj["metadata"].erase("managedFields");
    return new_obj;
  }
  bool exists = old_or_null.is_object();
  std::vector<Entry> entries;
  const json* sent = managed_fields_of(new_obj);
  const json* had = exists ? managed_fields_of(old_or_null) : nullptr;
  bool use_sent = sent && (!had || *sent != *had);
  if (auto decoded = decode_entries(use_sent ? new_obj : old_or_null); decoded.is_ok()) {
    entries = std::move(decoded).value();
  }
  Shape root = struct_shape(&type);
  static const json kEmpty = json::object();
  Comparison cmp = compare_objects(exists ? old_or_null : kEmpty, new_obj, type, schema);
  FieldSet added = owned_part(cmp.added, writer);
  FieldSet modified = owned_part(cmp.modified, writer);
  FieldSet removed = owned_part(cmp.removed, writer);
  FieldSet changed = added.union_with(modified);

  size_t mine = entries.size();
  for (size_t i = 0; i < entries.size(); ++i) {
    if (same_identity(entries[i], writer.manager, "Update", writer.api_version,
                      writer.subresource)) {
      mine = i;
    }
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i == mine) continue;
    entries[i].set = entries[i].set.difference(changed).difference(removed);
  }
  FieldSet mine_set = mine == entries.size() ? FieldSet() : entries[mine].set;
  FieldSet next = mine_set.difference(removed).union_with(changed);
  drop_struct_members(next, root, schema);
  if (mine == entries.size()) {
    if (!next.empty()) {
      Entry e;
      e.manager = writer.manager;
      e.operation = "Update";
      e.api_version = writer.api_version;
      e.subresource = writer.subresource;
      e.set = std::move(next);
      e.time = writer.time;
      entries.push_back(std::move(e));
    }
  } else {
    if (!cmp.empty() || next != entries[mine].set) entries[mine].time = writer.time;
    entries[mine].set = std::move(next);
  }
  std::vector<Entry> kept;
  for (Entry& e : entries) {
    if (!e.set.empty()) kept.push_back(std::move(e));
  }
  set_entries(new_obj, kept);
  return new_obj;
}

Result<json> decode_apply_body(std::string_view body, const TypeInfo& type, const Schema& schema) {
  size_t first = body.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) {
    return Status(StatusCode::kInvalidArgument, "the apply configuration is empty");
  }
  if (body[first] == '{') {
    json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded()) {
      if (!j.is_object()) {
        return Status(StatusCode::kInvalidArgument, "the apply configuration must be an object");
      }
      return j;
    }
    // Not strict JSON: fall through to YAML (a superset).
  }
  try {
    std::vector<YAML::Node> docs = YAML::LoadAll(std::string(body));
    std::vector<YAML::Node> nonempty;
    for (const YAML::Node& d : docs) {
      if (!d.IsNull()) nonempty.push_back(d);
    }
    if (nonempty.size() != 1) {
      return Status(StatusCode::kInvalidArgument,
                    nonempty.empty() ? "the apply configuration is empty"
                                     : "the apply configuration must be a single document");
    }
    if (!nonempty[0].IsMap()) {
      return Status(StatusCode::kInvalidArgument, "the apply configuration must be an object");
    }
    return yaml_to_json(nonempty[0], &type, nullptr, false, schema, 0);
  } catch (const YAML::Exception& e) {
    return Status(StatusCode::kInvalidArgument, std::string("error decoding YAML: ") + e.what());
  }
}

std::string manager_from_user_agent(std::string_view user_agent) {
  std::string_view name = user_agent.substr(0, user_agent.find('/'));
  std::string out;
  for (char c : name) {
    if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f) out.push_back(c);
  }
  if (out.size() > 128) out.resize(128);
  return out;
}

}  // namespace skiff::api
