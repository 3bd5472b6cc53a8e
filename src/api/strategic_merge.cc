// Strategic merge patch, as the API server applies it (k8s.io/apimachinery strategicpatch with
// MergeParallelList and IgnoreUnmatchedNulls): merge keys and patch strategies come from the
// schema; the directives $patch, $retainKeys, $setElementOrder/<list> and
// $deleteFromPrimitiveList/<list> are honoured; messages follow upstream's.

#include <algorithm>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

#include "api/patch.h"

namespace skiff::api {
namespace {

using nlohmann::json;

constexpr std::string_view kDirective = "$patch";
constexpr std::string_view kDelete = "delete";
constexpr std::string_view kReplace = "replace";
constexpr std::string_view kMerge = "merge";
constexpr std::string_view kRetainKeys = "$retainKeys";
constexpr std::string_view kRetainKeysStrategy = "retainKeys";
constexpr std::string_view kDeleteFromPrimitiveList = "$deleteFromPrimitiveList";
constexpr std::string_view kSetElementOrder = "$setElementOrder";

Status smp_error(std::string msg) {
  return Status(StatusCode::kInvalidArgument, std::move(msg));
}

// ---- Go-style rendering of values, for messages that upstream formats with %v / %s ----

std::string go_number(const json& v) {
  if (v.is_number_integer()) return v.dump();
  double d = v.get<double>();
  char buf[64];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof(buf), "%.*g", prec, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  return buf;
}

std::string go_v(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "<nil>";
    case json::value_t::boolean:
      return v.get<bool>() ? "true" : "false";
    case json::value_t::string:
      return v.get<std::string>();
    case json::value_t::array: {
      std::string s = "[";
      for (size_t i = 0; i < v.size(); ++i) {
        if (i > 0) s += " ";
        s += go_v(v[i]);
      }
      return s + "]";
    }
    case json::value_t::object: {
      std::string s = "map[";
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) s += " ";
        first = false;
        s += it.key() + ":" + go_v(*it);
      }
      return s + "]";
    }
    default:
      return go_number(v);
  }
}

std::string go_type(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "%!s(<nil>)";
    case json::value_t::boolean:
      return "bool";
    case json::value_t::string:
      return "string";
    case json::value_t::array:
      return "[]interface {}";
    case json::value_t::object:
      return "map[string]interface {}";
    default:
      return "float64";
  }
}

Status err_bad_arg_type(std::string_view expected, const json& actual) {
  return smp_error("expected a " + std::string(expected) + ", but received a " + go_type(actual));
}
constexpr std::string_view kMapType = "map[string]interface {}";
constexpr std::string_view kSliceType = "[]interface {}";

Status err_no_merge_key(const json& m, const std::string& key) {
  return smp_error("map: " + go_v(m) + " does not contain declared merge key: " + key);
}
Status err_bad_patch_type(const json& t, const json& m) {
  std::string ts = t.is_string() ? t.get<std::string>() : "%!s(" + go_type(t) + "=" + go_v(t) + ")";
  return smp_error("unknown patch type: " + ts + " in map: " + go_v(m));
}
Status err_set_element_order() {
  return smp_error("invalid patch format of setElementOrder list");
}
Status err_retain_keys() {
  return smp_error("invalid patch format of retainKeys");
}
Status err_primitive_list() {
  return smp_error("invalid patch format of primitive list");
}

// JSON kinds as Go's reflect sees decoded JSON: all numbers are float64.
enum class Kind : uint8_t { kNull, kBool, kNumber, kString, kSlice, kMap };
Kind kind_of(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return Kind::kNull;
    case json::value_t::boolean:
      return Kind::kBool;
    case json::value_t::string:
      return Kind::kString;
    case json::value_t::array:
      return Kind::kSlice;
    case json::value_t::object:
      return Kind::kMap;
    default:
      return Kind::kNumber;
  }
}

// A key under which Go's interface equality holds (numbers compare as float64).
std::string identity(const json& v) {
  switch (kind_of(v)) {
    case Kind::kNull:
      return "z";
    case Kind::kBool:
      return v.get<bool>() ? "b1" : "b0";
    case Kind::kNumber: {
      char buf[40];
      std::snprintf(buf, sizeof(buf), "n%.17g", v.get<double>());
      return buf;
    }
    case Kind::kString:
      return "s" + v.get<std::string>();
    default:
      return "o" + v.dump(-1, ' ', false, json::error_handler_t::replace);
  }
}

bool go_equal(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) return a.get<double>() == b.get<double>();
  return a == b;
}

bool has_directive(const json& v) {
  return v.is_object() && v.contains(kDirective);
}

// ---- Patch metadata from the schema ----

// What the schema says about one JSON object level.
struct Meta {
  const Schema* schema = nullptr;
  const TypeInfo* type = nullptr;     // a struct
  const FieldInfo* map_of = nullptr;  // a map whose values this field describes
  // Neither: free-form JSON, merged without strategies.
};

struct FieldMeta {
  Meta sub;  // the field's value (for lists: one element)
  std::string strategy;
  std::string merge_key;
  std::string name = "struct";  // upstream's schema.Name() of the element, for messages
};

std::string short_type_name(const std::string& name) {
  size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

bool equal_fold(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

const FieldInfo* find_field(const TypeInfo& type, const std::string& key) {
  if (const FieldInfo* f = type.field(key)) return f;
  for (const FieldInfo& f : type.fields) {
    if (f.json_name == key) return &f;
  }
  // Go's JSON field matching falls back to a case-insensitive match.
  for (const FieldInfo& f : type.fields) {
    if (equal_fold(f.json_name, key)) return &f;
  }
  return nullptr;
}

Meta value_meta(const Schema* schema, const FieldInfo& f, bool element) {
  Meta m;
  m.schema = schema;
  if (f.is_map && !element) {
    m.map_of = &f;
    return m;
  }
  if (f.kind == FieldKind::kObject && !f.type_name.empty() && schema != nullptr) {
    m.type = schema->type(f.type_name);
    // Named scalars (Quantity, Time, IntOrString, RawExtension...) have no fields to look up.
    if (m.type != nullptr && m.type->scalar != FieldKind::kObject) m.type = nullptr;
  }
  return m;
}

Result<FieldMeta> lookup(const Meta& meta, const std::string& key, bool for_slice) {
  FieldMeta out;
  out.sub.schema = meta.schema;
  if (meta.type != nullptr) {
    const FieldInfo* f = find_field(*meta.type, key);
    if (f == nullptr) {
      return smp_error("unable to find api field in struct " + short_type_name(meta.type->name) +
                       " for the json field " + "\"" + key + "\"");
    }
    if (for_slice && !f->is_list) {
      return smp_error("expected slice or array type, but got: struct");
    }
    // Upstream splits the strategy on ',' and separates out retainKeys.
    std::vector<std::string> strategies;
    size_t start = 0;
    const std::string& ps = f->patch_strategy;
    while (true) {
      size_t comma = ps.find(',', start);
      strategies.push_back(ps.substr(start, comma == std::string::npos ? comma : comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (strategies.size() == 1) {
      if (strategies[0] != kRetainKeysStrategy) out.strategy = strategies[0];
    } else if (strategies.size() == 2 &&
               (strategies[0] == kRetainKeysStrategy || strategies[1] == kRetainKeysStrategy)) {
      out.strategy = strategies[0] == kRetainKeysStrategy ? strategies[1] : strategies[0];
    } else {
      std::string list;
      for (size_t i = 0; i < strategies.size(); ++i) list += (i ? " " : "") + strategies[i];
      return smp_error("unexpected patch strategy: [" + list + "]");
    }
    out.merge_key = f->patch_merge_key;
    out.sub = value_meta(meta.schema, *f, for_slice);
    if (f->kind != FieldKind::kObject) out.name = "string";
    return out;
  }
  if (meta.map_of != nullptr) {
    out.sub = value_meta(meta.schema, *meta.map_of, true);
    return out;
  }
  out.name = "interface";
  return out;
}

// ---- The merge, mirroring upstream's mergeMap / mergeSlice ----

Result<json> merge_map(json original, json patch, const Meta& meta);

// Drops directive-bearing maps (recursively) from a value about to be stored as is.
bool remove_directives(json& v) {
  if (v.is_object()) {
    if (v.contains(kDirective)) return false;
    for (auto it = v.begin(); it != v.end();) {
      if (!remove_directives(*it)) {
        it = v.erase(it);
      } else {
        ++it;
      }
    }
  } else if (v.is_array()) {
    json kept = json::array();
    for (json& e : v) {
      if (remove_directives(e)) kept.push_back(std::move(e));
    }
    v = std::move(kept);
  }
  return true;
}

void discard_nulls(json& v) {
  if (v.is_object()) {
    for (auto it = v.begin(); it != v.end();) {
      if (it->is_null()) {
        it = v.erase(it);
      } else {
        discard_nulls(*it);
        ++it;
      }
    }
  } else if (v.is_array()) {
    for (json& e : v) discard_nulls(e);
  }
}

Result<Kind> slice_element_kind(std::initializer_list<const json*> slices) {
  bool found = false;
  Kind kind = Kind::kNull;
  for (const json* s : slices) {
    if (s == nullptr) continue;
    for (const json& v : *s) {
      Kind k = kind_of(v);
      if (!found) {
        if (k == Kind::kSlice) return smp_error("lists of lists are not supported");
        kind = k;
        found = true;
      } else if (k != kind) {
        std::string all = "[";
        bool first = true;
        for (const json* t : slices) {
          if (!first) all += " ";
          first = false;
          all += t ? go_v(*t) : "[]";
        }
        return smp_error("list element types are not identical: " + all + "]");
      }
    }
  }
  if (!found) return smp_error("no elements in any of the given slices");
  return kind;
}

// The comparison value of a list item: its merge key's value for maps, else the item.
const json& item_key(const json& item, const std::string& merge_key, Kind kind) {
  static const json kNull;
  if (kind != Kind::kMap) return item;
  if (!item.is_object()) return kNull;
  auto it = item.find(merge_key);
  return it == item.end() ? kNull : *it;
}

// Position of each item's key in `order` (first match), or -1.
std::vector<int64_t> positions(const json& items, const json* order, const std::string& merge_key,
                               Kind kind) {
  std::unordered_map<std::string, int64_t> first;
  if (order != nullptr) {
    for (size_t i = 0; i < order->size(); ++i) {
      first.emplace(identity(item_key((*order)[i], merge_key, kind)), static_cast<int64_t>(i));
    }
  }
  std::vector<int64_t> out;
  out.reserve(items.size());
  for (const json& item : items) {
    auto it = first.find(identity(item_key(item, merge_key, kind)));
    out.push_back(it == first.end() ? -1 : it->second);
  }
  return out;
}

Status validate_merge_key_in(const json* list, const std::string& merge_key) {
  if (list == nullptr) return Status::ok();
  for (const json& item : *list) {
    if (!item.is_object()) return err_bad_arg_type(kMapType, item);
    if (!item.contains(merge_key)) return err_no_merge_key(item, merge_key);
  }
  return Status::ok();
}

// Upstream's normalizeSliceOrder: stable sort by position in `order`; items of maps marked
// "$patch: delete" go last.
Result<json> normalize_slice_order(json to_sort, const json* order, const std::string& merge_key,
                                   Kind kind) {
  json to_delete = json::array();
  if (kind == Kind::kMap) {
    SKIFF_RETURN_IF_ERROR(validate_merge_key_in(&to_sort, merge_key));
    SKIFF_RETURN_IF_ERROR(validate_merge_key_in(order, merge_key));
    json keep = json::array();
    for (json& v : to_sort) {
      auto d = v.find(kDirective);
      if (d != v.end() && d->is_string() && *d == kDelete) {
        to_delete.push_back(std::move(v));
      } else {
        keep.push_back(std::move(v));
      }
    }
    to_sort = std::move(keep);
  }
  std::vector<int64_t> pos = positions(to_sort, order, merge_key, kind);
  std::vector<size_t> idx(to_sort.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  bool all_found = std::all_of(pos.begin(), pos.end(), [](int64_t p) { return p >= 0; });
  if (all_found) {
    std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return pos[a] < pos[b]; });
  } else {
    // Upstream's comparator says "less" whenever either item is unknown; Go's stable sort is an
    // insertion sort at these sizes, reproduced here.
    auto less = [&](size_t a, size_t b) {
      return (pos[a] >= 0 && pos[b] >= 0) ? pos[a] < pos[b] : true;
    };
    for (size_t i = 1; i < idx.size(); ++i) {
      for (size_t j = i; j > 0 && less(idx[j], idx[j - 1]); --j) std::swap(idx[j], idx[j - 1]);
    }
  }
  json out = json::array();
  for (size_t i : idx) out.push_back(std::move(to_sort[i]));
  for (json& v : to_delete) out.push_back(std::move(v));
  return out;
}

// Upstream's mergeSortedSlice: server-only items interleaved into the patch items by their
// order in the live list.
json merge_sorted(json left, json right, const json* server_order, const std::string& merge_key,
                  Kind kind) {
  std::vector<int64_t> lp = positions(left, server_order, merge_key, kind);
  std::vector<int64_t> rp = positions(right, server_order, merge_key, kind);
  json out = json::array();
  size_t i = 0, j = 0;
  while (i < left.size() || j < right.size()) {
    if (i >= left.size()) {
      out.push_back(std::move(right[j++]));
    } else if (j >= right.size()) {
      out.push_back(std::move(left[i++]));
    } else if (lp[i] >= 0 && rp[j] >= 0 && lp[i] < rp[j]) {
      out.push_back(std::move(left[i++]));
    } else {
      out.push_back(std::move(right[j++]));
    }
  }
  return out;
}

Result<json> normalize_element_order(json patch_items, json server_only, const json* patch_order,
                                     const json* server_order, const std::string& merge_key,
                                     Kind kind) {
  SKIFF_ASSIGN_OR_RETURN(
      json p, normalize_slice_order(std::move(patch_items), patch_order, merge_key, kind));
  SKIFF_ASSIGN_OR_RETURN(
      json s, normalize_slice_order(std::move(server_only), server_order, merge_key, kind));
  return merge_sorted(std::move(s), std::move(p), server_order, merge_key, kind);
}

// Index of the first map in `list` whose `key` equals `value`, or -1.
Result<int64_t> find_map_by_key(const json& list, const std::string& key, const json& value) {
  for (size_t i = 0; i < list.size(); ++i) {
    const json& v = list[i];
    if (!v.is_object()) return smp_error("value for key " + std::to_string(i) + " is not a map");
    auto it = v.find(key);
    if (it != v.end() && go_equal(*it, value)) return static_cast<int64_t>(i);
  }
  return -1;
}

// Splits `merged` into items present in `by` and the others (server-only).
Status partition(const json& merged, const json* by, const std::string& merge_key, json& in_patch,
                 json& server_only) {
  in_patch = json::array();
  server_only = json::array();
  if (merge_key.empty()) {
    std::unordered_map<std::string, bool> present;
    if (by != nullptr) {
      for (const json& v : *by) present[identity(v)] = true;
    }
    for (const json& v : merged) {
      (present.count(identity(v)) ? in_patch : server_only).push_back(v);
    }
    return Status::ok();
  }
  static const json kEmpty = json::array();
  for (const json& v : merged) {
    if (!v.is_object()) return err_bad_arg_type(kMapType, v);
    auto key = v.find(merge_key);
    if (key == v.end()) return err_no_merge_key(v, merge_key);
    SKIFF_ASSIGN_OR_RETURN(int64_t at, find_map_by_key(by ? *by : kEmpty, merge_key, *key));
    (at >= 0 ? in_patch : server_only).push_back(v);
  }
  return Status::ok();
}

Result<json> merge_slice(json original, json patch, const Meta& element, const FieldMeta& fm,
                         bool is_delete_list) {
  const std::string& merge_key = fm.merge_key;
  if (original.empty() && patch.empty()) return original;
  SKIFF_ASSIGN_OR_RETURN(Kind kind, slice_element_kind({&original, &patch}));
  json merged = json::array();
  if (kind != Kind::kMap) {
    if (is_delete_list) {
      std::unordered_map<std::string, bool> remove;
      for (const json& v : patch) remove[identity(v)] = true;
      json kept = json::array();
      for (json& v : original) {
        if (!remove.count(identity(v))) kept.push_back(std::move(v));
      }
      return kept;
    }
    std::unordered_map<std::string, bool> seen;
    for (const json* list : {&original, &patch}) {
      for (const json& v : *list) {
        if (seen.emplace(identity(v), true).second) merged.push_back(v);
      }
    }
  } else {
    if (merge_key.empty()) {
      return smp_error("cannot merge lists without merge key for " + fm.name);
    }
    // Special elements: "$patch: delete" removes by key, "$patch: replace" replaces the list.
    json plain = json::array();
    bool replace = false;
    for (json& v : patch) {
      auto d = v.find(kDirective);
      if (d == v.end()) {
        plain.push_back(std::move(v));
        continue;
      }
      if (d->is_string() && *d == kDelete) {
        auto key = v.find(merge_key);
        if (key == v.end()) return err_no_merge_key(v, merge_key);
        json kept = json::array();
        for (size_t i = 0; i < original.size(); ++i) {
          json& o = original[i];
          if (!o.is_object()) {
            return smp_error("value for key " + std::to_string(i) + " is not a map");
          }
          auto ok = o.find(merge_key);
          if (!(ok != o.end() && go_equal(*ok, *key))) kept.push_back(std::move(o));
        }
        original = std::move(kept);
      } else if (d->is_string() && *d == kReplace) {
        replace = true;
      } else if (d->is_string() && *d == kMerge) {
        return smp_error("merging lists cannot yet be specified in the patch");
      } else {
        return err_bad_patch_type(*d, v);
      }
    }
    if (replace) {
      original = std::move(plain);
      patch = json::array();
    } else {
      patch = std::move(plain);
    }
    // Merge items that share a key; append the others.
    merged = original;
    for (json& v : patch) {
      auto key = v.find(merge_key);
      if (key == v.end()) return err_no_merge_key(v, merge_key);
      SKIFF_ASSIGN_OR_RETURN(int64_t at, find_map_by_key(merged, merge_key, *key));
      if (at >= 0) {
        SKIFF_ASSIGN_OR_RETURN(json m,
                               merge_map(std::move(merged[static_cast<size_t>(at)]), v, element));
        merged[static_cast<size_t>(at)] = std::move(m);
      } else {
        merged.push_back(v);
      }
    }
  }
  json in_patch, server_only;
  SKIFF_RETURN_IF_ERROR(partition(merged, &patch, merge_key, in_patch, server_only));
  return normalize_element_order(std::move(in_patch), std::move(server_only), &patch, &original,
                                 merge_key, kind);
}

Result<json> merge_slice_handler(json original, json patch, const FieldMeta& fm,
                                 bool is_delete_list) {
  if (!original.is_array()) return err_bad_arg_type(kSliceType, original);
  if (!patch.is_array()) return err_bad_arg_type(kSliceType, patch);
  if (fm.strategy == kMerge || is_delete_list) {
    return merge_slice(std::move(original), std::move(patch), fm.sub, fm, is_delete_list);
  }
  return patch;
}

Status apply_retain_keys(json& original, json& patch) {
  auto it = patch.find(kRetainKeys);
  if (it == patch.end()) return Status::ok();
  json retain = std::move(*it);
  patch.erase(it);
  if (!retain.is_array()) return err_retain_keys();
  std::unordered_map<std::string, bool> keep;
  for (const json& v : retain) {
    if (v.is_string()) keep[v.get<std::string>()] = true;
  }
  for (auto p = patch.begin(); p != patch.end(); ++p) {
    if (p->is_null() || p.key().starts_with(kDeleteFromPrimitiveList) ||
        p.key().starts_with(kSetElementOrder)) {
      continue;
    }
    if (!keep.count(p.key())) return err_retain_keys();
  }
  for (auto o = original.begin(); o != original.end();) {
    if (!keep.count(o.key())) {
      o = original.erase(o);
    } else {
      ++o;
    }
  }
  return Status::ok();
}

// "$setElementOrder/containers" → "containers".
Result<std::string> directive_target(const std::string& key, std::string_view prefix) {
  size_t slash = key.find('/');
  if (slash == std::string::npos || std::string_view(key).substr(0, slash) != prefix) {
    return prefix == kSetElementOrder ? err_set_element_order() : err_primitive_list();
  }
  return key.substr(slash + 1);
}

Status validate_with_set_order(const json* patch_list, const json& set_order,
                               const std::string& merge_key) {
  if (set_order.empty() || patch_list == nullptr || patch_list->empty()) return Status::ok();
  json non_delete = json::array();
  if (!merge_key.empty()) {
    for (const json& v : *patch_list) {
      if (!v.is_object()) return err_bad_arg_type(kMapType, v);
      auto d = v.find(kDirective);
      if (!(d != v.end() && d->is_string() && *d == kDelete)) non_delete.push_back(v);
    }
  } else {
    non_delete = *patch_list;
  }
  size_t pi = 0, si = 0;
  while (pi < non_delete.size() && si < set_order.size()) {
    if (has_directive(non_delete[pi])) {
      ++pi;
      continue;
    }
    bool equal;
    if (merge_key.empty()) {
      equal = go_equal(non_delete[pi], set_order[si]);
    } else {
      const json& l = non_delete[pi];
      const json& r = set_order[si];
      if (!l.is_object()) return err_bad_arg_type(kMapType, l);
      if (!r.is_object()) return err_bad_arg_type(kMapType, r);
      auto lk = l.find(merge_key);
      if (lk == l.end()) return err_no_merge_key(l, merge_key);
      auto rk = r.find(merge_key);
      if (rk == r.end()) return err_no_merge_key(r, merge_key);
      equal = go_equal(*lk, *rk);
    }
    if (equal) ++pi;
    ++si;
  }
  if (pi < non_delete.size() && si >= set_order.size()) {
    return smp_error("The order in patch list:\n" + go_v(*patch_list) +
                     "\n doesn't match $setElementOrder list:\n" + go_v(set_order) + "\n");
  }
  return Status::ok();
}

// Upstream orders the merged list against the live list *as its Go slice reads after the merge*:
// merging by key deletes ("$patch: delete") by shifting items left within the same array and
// appends new items into the freed slots, and the $setElementOrder pass then sees that array.
// Reproduce that view so the resulting order is upstream's.
json live_order_after_merge(const json& live, const json& patch, const std::string& merge_key) {
  json view = live;
  const size_t cap = view.size();
  size_t len = cap;
  auto find = [&](const json& key) -> size_t {
    for (size_t i = 0; i < len; ++i) {
      const json& v = view[i];
      if (!v.is_object()) continue;
      auto it = v.find(merge_key);
      if (it != v.end() && go_equal(*it, key)) return i;
    }
    return len;
  };
  bool replace = false;
  for (const json& item : patch) {
    if (!item.is_object()) return live;
    auto d = item.find(kDirective);
    if (d == item.end()) continue;
    if (d->is_string() && *d == kDelete) {
      auto key = item.find(merge_key);
      if (key == item.end()) return live;
      for (size_t k = find(*key); k < len; k = find(*key)) {
        for (size_t i = k; i + 1 < len; ++i) view[i] = view[i + 1];
        --len;
      }
    } else if (d->is_string() && *d == kReplace) {
      replace = true;
    } else {
      return live;
    }
  }
  if (replace) return view;
  for (const json& item : patch) {
    if (item.contains(kDirective)) continue;
    auto key = item.find(merge_key);
    if (key == item.end()) return view;
    if (find(*key) < len) continue;
    if (len == cap) break;  // Go's append moves to a new array from here on
    view[len++] = item;
  }
  return view;
}

// Upstream's mergePatchIntoOriginal: each "$setElementOrder/<list>" with its list.
Status merge_set_element_order(json& original, json& patch, const Meta& meta) {
  std::vector<std::string> keys;
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it.key().starts_with(kSetElementOrder)) keys.push_back(it.key());
  }
  for (const std::string& key : keys) {
    json set_order = std::move(patch[key]);
    patch.erase(key);
    if (!set_order.is_array()) return err_bad_arg_type(kSliceType, set_order);
    SKIFF_ASSIGN_OR_RETURN(std::string target, directive_target(key, kSetElementOrder));
    auto orig_it = original.find(target);
    auto patch_it = patch.find(target);
    bool found_original = orig_it != original.end();
    bool found_patch = patch_it != patch.end();
    json original_list, patch_list;
    if (found_original) {
      if (!orig_it->is_array()) return err_bad_arg_type(kSliceType, *orig_it);
      original_list = *orig_it;
    }
    if (found_patch) {
      if (!patch_it->is_array()) return err_bad_arg_type(kSliceType, *patch_it);
      patch_list = *patch_it;
    }
    SKIFF_ASSIGN_OR_RETURN(FieldMeta fm, lookup(meta, target, true));
    SKIFF_RETURN_IF_ERROR(
        validate_with_set_order(found_patch ? &patch_list : nullptr, set_order, fm.merge_key));
    json merged;
    if (found_original && !found_patch) {
      merged = original_list;
    } else if (!found_original && found_patch) {
      merged = patch_list;
      remove_directives(merged);
    } else if (found_original && found_patch) {
      SKIFF_ASSIGN_OR_RETURN(merged, merge_slice_handler(original_list, patch_list, fm, false));
      if (fm.strategy == kMerge && !fm.merge_key.empty() && !original_list.empty() &&
          original_list[0].is_object()) {
        original_list = live_order_after_merge(original_list, patch_list, fm.merge_key);
      }
    } else {
      continue;
    }
    json in_order, server_only;
    SKIFF_RETURN_IF_ERROR(partition(merged, &set_order, fm.merge_key, in_order, server_only));
    SKIFF_ASSIGN_OR_RETURN(Kind kind, slice_element_kind({found_original ? &original_list : nullptr,
                                                          found_patch ? &patch_list : nullptr}));
    SKIFF_ASSIGN_OR_RETURN(
        json both,
        normalize_element_order(std::move(in_order), std::move(server_only), &set_order,
                                found_original ? &original_list : nullptr, fm.merge_key, kind));
    original[target] = std::move(both);
    patch.erase(target);
  }
  return Status::ok();
}

Status merge_entry(json& original, std::string key, json patch_value, bool is_delete_list,
                   const Meta& meta) {
  if (patch_value.is_null()) {
    original.erase(key);
    return Status::ok();
  }
  auto it = original.find(key);
  if (it == original.end() || kind_of(*it) != kind_of(patch_value)) {
    if (!is_delete_list) {
      discard_nulls(patch_value);
      if (remove_directives(patch_value)) {
        original[key] = std::move(patch_value);
      } else {
        original.erase(key);
      }
    }
    return Status::ok();
  }
  if (it->is_object()) {
    SKIFF_ASSIGN_OR_RETURN(FieldMeta fm, lookup(meta, key, false));
    if (fm.strategy == kReplace) {
      *it = std::move(patch_value);
    } else {
      SKIFF_ASSIGN_OR_RETURN(json merged,
                             merge_map(std::move(*it), std::move(patch_value), fm.sub));
      original[key] = std::move(merged);
    }
    return Status::ok();
  }
  if (it->is_array()) {
    SKIFF_ASSIGN_OR_RETURN(FieldMeta fm, lookup(meta, key, true));
    SKIFF_ASSIGN_OR_RETURN(json merged, merge_slice_handler(std::move(*it), std::move(patch_value),
                                                            fm, is_delete_list));
    original[key] = std::move(merged);
    return Status::ok();
  }
  *it = std::move(patch_value);  // scalars: the patch wins
  return Status::ok();
}

Result<json> merge_map(json original, json patch, const Meta& meta) {
  if (!patch.is_object()) return err_bad_arg_type(kMapType, patch);
  if (auto d = patch.find(kDirective); d != patch.end()) {
    if (d->is_string() && *d == kReplace) {
      patch.erase(d);
      return patch;
    }
    if (d->is_string() && *d == kDelete) return json::object();
    return err_bad_patch_type(*d, patch);
  }
  if (original.is_null()) original = json::object();
  if (!original.is_object()) return err_bad_arg_type(kMapType, original);

  SKIFF_RETURN_IF_ERROR(apply_retain_keys(original, patch));
  SKIFF_RETURN_IF_ERROR(merge_set_element_order(original, patch, meta));

  // Plain fields first, then the parallel deletion lists (upstream's map order is random; the
  // two touch disjoint items, so this order gives its result).
  std::vector<std::string> deletions;
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it.key().starts_with(kDeleteFromPrimitiveList)) {
      deletions.push_back(it.key());
      continue;
    }
    SKIFF_RETURN_IF_ERROR(merge_entry(original, it.key(), std::move(*it), false, meta));
  }
  for (const std::string& key : deletions) {
    SKIFF_ASSIGN_OR_RETURN(std::string target, directive_target(key, kDeleteFromPrimitiveList));
    if (target.empty()) target = key;
    SKIFF_RETURN_IF_ERROR(merge_entry(original, target, std::move(patch[key]), true, meta));
  }
  return original;
}

}  // namespace

Result<nlohmann::json> apply_strategic_merge_patch(const nlohmann::json& doc,
                                                   const nlohmann::json& patch,
                                                   const TypeInfo& type, const Schema& schema) {
  if (!doc.is_object() || !patch.is_object()) return smp_error("invalid JSON document");
  Meta meta;
  meta.schema = &schema;
  meta.type = &type;
  return merge_map(doc, patch, meta);
}

}  // namespace skiff::api
