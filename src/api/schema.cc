#include "api/schema.h"

#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "base/check.h"

// Defined in the generated schema_data.cc (see embed_schema.cmake).
extern const char kSchemaTypesJson[];
extern const size_t kSchemaTypesJsonSize;
extern const char kSchemaResourcesJson[];
extern const size_t kSchemaResourcesJsonSize;

namespace skiff::api {

using Json = nlohmann::json;

std::string_view field_kind_name(FieldKind kind) {
  switch (kind) {
    case FieldKind::kString:
      return "string";
    case FieldKind::kBytes:
      return "bytes";
    case FieldKind::kInt32:
      return "int32";
    case FieldKind::kInt64:
      return "int64";
    case FieldKind::kDouble:
      return "double";
    case FieldKind::kBool:
      return "bool";
    case FieldKind::kIntOrString:
      return "int-or-string";
    case FieldKind::kQuantity:
      return "quantity";
    case FieldKind::kTime:
      return "time";
    case FieldKind::kMicroTime:
      return "micro-time";
    case FieldKind::kDuration:
      return "duration";
    case FieldKind::kObject:
      return "object";
    case FieldKind::kRaw:
      return "raw";
  }
  return "unknown";
}

const FieldInfo* TypeInfo::field(std::string_view json_name) const {
  auto it = by_json_.find(json_name);
  return it == by_json_.end() ? nullptr : &fields[it->second];
}

const FieldInfo* TypeInfo::field_by_proto(int number) const {
  auto it = by_proto_.find(number);
  return it == by_proto_.end() ? nullptr : &fields[it->second];
}

const EmbeddedInfo* TypeInfo::embedded_by_proto(int number) const {
  for (const EmbeddedInfo& e : embedded) {
    if (e.proto_number == number) return &e;
  }
  return nullptr;
}

const SubresourceInfo* ResourceInfo::subresource(std::string_view name) const {
  for (const SubresourceInfo& s : subresources) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

namespace {

// Kinds named in the data: primitives in a field's type spec, scalars in a type's "scalar".
bool primitive_kind(std::string_view name, FieldKind* kind) {
  static constexpr std::pair<std::string_view, FieldKind> kPrimitives[] = {
      {"string", FieldKind::kString}, {"bytes", FieldKind::kBytes},   {"int32", FieldKind::kInt32},
      {"int64", FieldKind::kInt64},   {"double", FieldKind::kDouble}, {"bool", FieldKind::kBool},
      {"raw", FieldKind::kRaw},
  };
  for (const auto& [n, k] : kPrimitives) {
    if (n == name) {
      *kind = k;
      return true;
    }
  }
  return false;
}

bool scalar_kind(std::string_view name, FieldKind* kind) {
  static constexpr std::pair<std::string_view, FieldKind> kScalars[] = {
      {"time", FieldKind::kTime},         {"micro-time", FieldKind::kMicroTime},
      {"duration", FieldKind::kDuration}, {"int-or-string", FieldKind::kIntOrString},
      {"quantity", FieldKind::kQuantity}, {"raw", FieldKind::kRaw},
  };
  for (const auto& [n, k] : kScalars) {
    if (n == name) {
      *kind = k;
      return true;
    }
  }
  return false;
}

Status invalid(std::string message) {
  return error(StatusCode::kInvalidArgument, "schema: " + std::move(message));
}

// Typed reads of JSON members that fail with a message instead of throwing.
Status read_string(const Json& obj, const char* key, std::string* out, bool required,
                   std::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) return invalid(std::string(where) + ": missing \"" + key + "\"");
    return Status::ok();
  }
  if (!it->is_string()) return invalid(std::string(where) + ": \"" + key + "\" is not a string");
  *out = it->get_ref<const std::string&>();
  return Status::ok();
}

Status read_strings(const Json& obj, const char* key, std::vector<std::string>* out,
                    std::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end()) return Status::ok();
  if (!it->is_array()) return invalid(std::string(where) + ": \"" + key + "\" is not an array");
  out->reserve(it->size());
  for (const Json& v : *it) {
    if (!v.is_string()) {
      return invalid(std::string(where) + ": \"" + key + "\" has a non-string element");
    }
    out->push_back(v.get_ref<const std::string&>());
  }
  return Status::ok();
}

Status read_bool(const Json& obj, const char* key, bool* out, std::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end()) return Status::ok();
  if (!it->is_boolean()) return invalid(std::string(where) + ": \"" + key + "\" is not a bool");
  *out = it->get<bool>();
  return Status::ok();
}

Result<Json> parse_document(std::string_view text, std::string_view what) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return invalid(std::string(what) + " is not valid JSON: " + e.what());
  }
}

// A field as read, before its type is resolved and inline structs are flattened.
struct RawField {
  FieldInfo info;
  std::string type_spec;    // "t"
  std::string inline_type;  // set for {"inline": ...} entries
};

struct RawType {
  TypeInfo type;
  std::vector<RawField> fields;
};

// Reads the types document with nlohmann's SAX interface: it runs on every process start, and
// building a DOM first would double the cost. The document's shape is fixed (see
// scripts/gen_schema.py): {"source": any, "types": {NAME: {"fields": [FIELD...], "scalar": s,
// "structType": s}}}; anything else is an error naming where it occurred.
class TypesReader {
 public:
  using string_t = Json::string_t;
  using number_integer_t = Json::number_integer_t;
  using number_unsigned_t = Json::number_unsigned_t;
  using number_float_t = Json::number_float_t;
  using binary_t = Json::binary_t;

  explicit TypesReader(std::vector<RawType>* out) : out_(*out) {}

  const Status& status() const { return status_; }
  bool saw_types() const { return saw_types_; }

  bool null() { return skipped_scalar() || fail("unexpected null"); }
  bool boolean(bool value) {
    if (skipped_scalar()) return true;
    if (depth_ != kInField) return fail("unexpected bool");
    switch (field_key_) {
      case FieldKey::kOmitEmpty:
        field_.info.omit_empty = value;
        return true;
      case FieldKey::kRequired:
        field_.info.required = value;
        return true;
      default:
        return fail("unexpected bool");
    }
  }
  bool number_integer(number_integer_t value) {
    if (skipped_scalar()) return true;
    if (depth_ != kInField || field_key_ != FieldKey::kProto || value < 0 || value > (1 << 29)) {
      return fail("unexpected number");
    }
    field_.info.proto_number = static_cast<int>(value);
    return true;
  }
  bool number_unsigned(number_unsigned_t value) {
    if (skipped_scalar()) return true;
    if (value > (1u << 29)) return fail("unexpected number");
    return number_integer(static_cast<number_integer_t>(value));
  }
  bool number_float(number_float_t, const string_t&) {
    return skipped_scalar() || fail("unexpected number");
  }
  bool binary(binary_t&) { return fail("unexpected binary value"); }

  bool string(string_t& value) {
    if (skipped_scalar()) return true;
    if (depth_ == kInType) {
      if (type_key_ == "scalar") {
        if (!scalar_kind(value, &type_.type.scalar)) {
          return fail("unknown scalar kind \"" + value + "\"");
        }
        return true;
      }
      if (type_key_ == "structType") {
        type_.type.struct_type = std::move(value);
        return true;
      }
      return fail("unexpected string");
    }
    if (depth_ == kInFieldArray) {
      if (field_key_ == FieldKey::kListMapKeys) {
        field_.info.list_map_keys.push_back(std::move(value));
      } else {
        field_.info.enum_values.push_back(std::move(value));
      }
      return true;
    }
    if (depth_ != kInField) return fail("unexpected string");
    FieldInfo& info = field_.info;
    switch (field_key_) {
      case FieldKey::kName:
        info.json_name = std::move(value);
        return true;
      case FieldKey::kType:
        field_.type_spec = std::move(value);
        return true;
      case FieldKey::kInline:
        field_.inline_type = std::move(value);
        return true;
      case FieldKey::kPatchStrategy:
        info.patch_strategy = std::move(value);
        return true;
      case FieldKey::kPatchMergeKey:
        info.patch_merge_key = std::move(value);
        return true;
      case FieldKey::kListType:
        info.list_type = std::move(value);
        return true;
      // A field-level +structType is the same server-side-apply knob as +mapType.
      case FieldKey::kMapType:
        info.map_type = std::move(value);
        return true;
      default:
        return fail("unexpected string");
    }
  }

  bool start_object(std::size_t) {
    if (skip_depth_ > 0 || skip_next_) return skip_open();
    switch (depth_) {
      case kNone:
        depth_ = kInDocument;
        return true;
      case kInDocument:
        depth_ = kInTypes;
        return true;  // key() vetted "types"
      case kInTypes:
        depth_ = kInType;
        return true;
      case kInFields:
        depth_ = kInField;
        field_ = RawField();
        return true;
      default:
        return fail("unexpected object");
    }
  }
  bool end_object() {
    if (skip_depth_ > 0) return skip_close();
    switch (depth_) {
      case kInField:
        if (field_.inline_type.empty() &&
            (field_.info.json_name.empty() || field_.type_spec.empty())) {
          return fail("a field needs \"n\" and \"t\", or \"inline\"");
        }
        type_.fields.push_back(std::move(field_));
        depth_ = kInFields;
        return true;
      case kInType:
        out_.push_back(std::move(type_));
        type_ = RawType();
        depth_ = kInTypes;
        return true;
      case kInTypes:
        depth_ = kInDocument;
        return true;
      case kInDocument:
        depth_ = kNone;
        return true;
      default:
        return fail("unexpected end of object");
    }
  }
  bool start_array(std::size_t) {
    if (skip_depth_ > 0 || skip_next_) return skip_open();
    if (depth_ == kInType && type_key_ == "fields") {
      depth_ = kInFields;
      return true;
    }
    if (depth_ == kInField &&
        (field_key_ == FieldKey::kListMapKeys || field_key_ == FieldKey::kEnum)) {
      depth_ = kInFieldArray;
      return true;
    }
    return fail("unexpected array");
  }
  bool end_array() {
    if (skip_depth_ > 0) return skip_close();
    if (depth_ == kInFields) {
      depth_ = kInType;
      return true;
    }
    if (depth_ == kInFieldArray) {
      depth_ = kInField;
      return true;
    }
    return fail("unexpected end of array");
  }

  bool key(string_t& key) {
    if (skip_depth_ > 0) return true;
    switch (depth_) {
      case kInDocument:
        if (key == "source") {
          skip_next_ = true;
          return true;
        }
        if (key == "types") {
          saw_types_ = true;
          return true;
        }
        return fail("unknown key \"" + key + "\"");
      case kInTypes:
        type_.type.name = std::move(key);
        return true;
      case kInType:
        if (key != "fields" && key != "scalar" && key != "structType") {
          return fail("unknown key \"" + key + "\"");
        }
        type_key_ = std::move(key);
        return true;
      case kInField:
        field_key_ = field_key(key);
        if (field_key_ == FieldKey::kUnknown) return fail("unknown key \"" + key + "\"");
        return true;
      default:
        return fail("unexpected key \"" + key + "\"");
    }
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) {
    status_ = invalid("types document is not valid JSON at byte " + std::to_string(position) +
                      ": " + e.what());
    return false;
  }

 private:
  enum Depth : uint8_t {
    kNone,
    kInDocument,
    kInTypes,
    kInType,
    kInFields,
    kInField,
    kInFieldArray
  };
  enum class FieldKey : uint8_t {
    kUnknown,
    kName,
    kType,
    kProto,
    kInline,
    kOmitEmpty,
    kRequired,
    kPatchStrategy,
    kPatchMergeKey,
    kListType,
    kListMapKeys,
    kMapType,
    kEnum,
  };

  static FieldKey field_key(std::string_view key) {
    static constexpr std::pair<std::string_view, FieldKey> kKeys[] = {
        {"n", FieldKey::kName},
        {"t", FieldKey::kType},
        {"p", FieldKey::kProto},
        {"inline", FieldKey::kInline},
        {"omitempty", FieldKey::kOmitEmpty},
        {"required", FieldKey::kRequired},
        {"patchStrategy", FieldKey::kPatchStrategy},
        {"patchMergeKey", FieldKey::kPatchMergeKey},
        {"listType", FieldKey::kListType},
        {"listMapKeys", FieldKey::kListMapKeys},
        {"mapType", FieldKey::kMapType},
        {"structType", FieldKey::kMapType},
        {"enum", FieldKey::kEnum},
    };
    for (const auto& [name, k] : kKeys) {
      if (name == key) return k;
    }
    return FieldKey::kUnknown;
  }

  // Skipping the value of "source": a scalar, or an object/array counted by depth.
  bool skipped_scalar() {
    if (skip_depth_ > 0) return true;
    if (skip_next_) {
      skip_next_ = false;
      return true;
    }
    return false;
  }
  bool skip_open() {
    skip_next_ = false;
    ++skip_depth_;
    return true;
  }
  bool skip_close() {
    --skip_depth_;
    return true;
  }

  bool fail(std::string message) {
    std::string where = type_.type.name.empty() ? "types document" : type_.type.name;
    if (depth_ >= kInField && !field_.info.json_name.empty()) {
      where += "." + field_.info.json_name;
    }
    status_ = invalid(where + ": " + message);
    return false;
  }

  std::vector<RawType>& out_;
  Status status_;
  Depth depth_ = kNone;
  bool saw_types_ = false;
  bool skip_next_ = false;
  int skip_depth_ = 0;
  std::string type_key_;
  FieldKey field_key_ = FieldKey::kUnknown;
  RawType type_;
  RawField field_;
};

}  // namespace

// Builds a Schema in phases: read every type, resolve type references, flatten inline structs,
// then index; resources last, since they point at types.
class SchemaLoader {
 public:
  explicit SchemaLoader(Schema* schema) : schema_(*schema) {}

  Status load_types(std::string_view text) {
    std::vector<RawType> types;
    types.reserve(512);
    TypesReader reader(&types);
    bool ok = false;
    try {
      ok = Json::sax_parse(text.begin(), text.end(), &reader);
    } catch (const Json::exception& e) {
      return invalid(std::string("types document: ") + e.what());
    }
    if (!ok) {
      if (!reader.status().is_ok()) return reader.status();
      return invalid("types document could not be read");
    }
    if (!reader.saw_types()) return invalid("types document has no \"types\" object");
    schema_.types_.reserve(types.size());
    raw_.reserve(types.size());
    for (RawType& t : types) {
      std::string name = t.type.name;
      if (!schema_.types_.emplace(name, std::move(t.type)).second) {
        return invalid(name + ": defined twice");
      }
      raw_.emplace(std::move(name), std::move(t.fields));
    }
    for (auto& [name, type] : schema_.types_) {
      schema_.type_index_.emplace(name, &type);
    }
    for (auto& [name, fields] : raw_) {
      for (RawField& f : fields) {
        if (f.inline_type.empty()) SKIFF_RETURN_IF_ERROR(resolve_field(name, &f));
      }
    }
    for (auto& [name, type] : schema_.types_) {
      SKIFF_RETURN_IF_ERROR(flatten(&type));
    }
    for (auto& [name, type] : schema_.types_) {
      SKIFF_RETURN_IF_ERROR(index(&type));
    }
    return Status::ok();
  }

  Status load_resources(const Json& doc) {
    auto list = doc.find("resources");
    if (!doc.is_object() || list == doc.end() || !list->is_array()) {
      return invalid("resources document has no \"resources\" array");
    }
    schema_.resources_.reserve(list->size());
    for (const Json& r : *list) {
      if (!r.is_object()) return invalid("a resource is not an object");
      ResourceInfo info;
      std::string where = "resource";
      SKIFF_RETURN_IF_ERROR(read_string(r, "resource", &info.resource, true, where));
      SKIFF_RETURN_IF_ERROR(read_string(r, "group", &info.group, true, info.resource));
      where = info.qualified_resource();
      SKIFF_RETURN_IF_ERROR(read_string(r, "version", &info.version, true, where));
      SKIFF_RETURN_IF_ERROR(read_string(r, "singular", &info.singular, true, where));
      SKIFF_RETURN_IF_ERROR(read_string(r, "kind", &info.kind, true, where));
      SKIFF_RETURN_IF_ERROR(read_string(r, "listKind", &info.list_kind, true, where));
      SKIFF_RETURN_IF_ERROR(read_bool(r, "namespaced", &info.namespaced, where));
      SKIFF_RETURN_IF_ERROR(read_strings(r, "verbs", &info.verbs, where));
      SKIFF_RETURN_IF_ERROR(read_strings(r, "shortNames", &info.short_names, where));
      SKIFF_RETURN_IF_ERROR(read_strings(r, "categories", &info.categories, where));
      SKIFF_RETURN_IF_ERROR(read_string(r, "type", &info.type_name, true, where));
      SKIFF_RETURN_IF_ERROR(read_string(r, "listType", &info.list_type_name, true, where));
      SKIFF_RETURN_IF_ERROR(lookup(info.type_name, where, &info.type));
      SKIFF_RETURN_IF_ERROR(lookup(info.list_type_name, where, &info.list_type));
      if (auto subs = r.find("subresources"); subs != r.end()) {
        if (!subs->is_array()) return invalid(where + ": \"subresources\" is not an array");
        for (const Json& s : *subs) {
          if (!s.is_object()) return invalid(where + ": a subresource is not an object");
          SubresourceInfo sub;
          SKIFF_RETURN_IF_ERROR(read_string(s, "name", &sub.name, true, where));
          std::string sub_where = where + "/" + sub.name;
          SKIFF_RETURN_IF_ERROR(read_string(s, "group", &sub.response.group, true, sub_where));
          SKIFF_RETURN_IF_ERROR(read_string(s, "version", &sub.response.version, true, sub_where));
          SKIFF_RETURN_IF_ERROR(read_string(s, "kind", &sub.response.kind, true, sub_where));
          SKIFF_RETURN_IF_ERROR(read_strings(s, "verbs", &sub.verbs, sub_where));
          SKIFF_RETURN_IF_ERROR(read_string(s, "type", &sub.type_name, true, sub_where));
          SKIFF_RETURN_IF_ERROR(lookup(sub.type_name, sub_where, &sub.type));
          info.subresources.push_back(std::move(sub));
        }
      }
      size_t i = schema_.resources_.size();
      std::string gv = info.group + "/" + info.version + "/";
      if (!schema_.by_resource_.emplace(gv + info.resource, i).second) {
        return invalid(where + ": served twice in " + info.group_version());
      }
      // Several resources may share a kind in principle; the first one listed wins.
      schema_.by_kind_.emplace(gv + info.kind, i);
      schema_.resources_.push_back(std::move(info));
    }
    return Status::ok();
  }

 private:
  enum class State : uint8_t { kPending, kFlattening, kDone };

  Status lookup(const std::string& name, std::string_view where, const TypeInfo** out) const {
    auto it = schema_.type_index_.find(name);
    if (it == schema_.type_index_.end()) {
      return invalid(std::string(where) + " refers to unknown type \"" + name + "\"");
    }
    *out = it->second;
    return Status::ok();
  }

  // Parses "[]T", "map[string]T" or "T" into the field's shape and kind.
  Status resolve_field(const std::string& owner, RawField* f) {
    FieldInfo& info = f->info;
    std::string_view spec = f->type_spec;
    if (spec.starts_with("[]")) {
      info.is_list = true;
      spec.remove_prefix(2);
    } else if (spec.starts_with("map[string]")) {
      info.is_map = true;
      spec.remove_prefix(11);
    }
    if (primitive_kind(spec, &info.kind)) return Status::ok();
    const TypeInfo* type = nullptr;
    SKIFF_RETURN_IF_ERROR(lookup(std::string(spec), owner + "." + info.json_name, &type));
    info.kind = type->scalar;
    info.type_name = type->name;
    return Status::ok();
  }

  // Moves a type's fields into place, expanding inline structs (recursively, once each).
  Status flatten(TypeInfo* type) {
    State& state = state_[type->name];
    if (state == State::kDone) return Status::ok();
    if (state == State::kFlattening) return invalid(type->name + ": inlines itself");
    state = State::kFlattening;
    std::vector<RawField>& raw = raw_.at(type->name);
    type->fields.reserve(raw.size());
    for (RawField& f : raw) {
      if (f.inline_type.empty()) {
        type->fields.push_back(std::move(f.info));
        continue;
      }
      auto it = schema_.types_.find(f.inline_type);
      if (it == schema_.types_.end()) {
        return invalid(type->name + " inlines unknown type \"" + f.inline_type + "\"");
      }
      TypeInfo& inner = it->second;
      if (inner.scalar != FieldKind::kObject) {
        return invalid(type->name + " inlines scalar type " + inner.name);
      }
      SKIFF_RETURN_IF_ERROR(flatten(&inner));
      int embedded_in = f.info.proto_number;
      if (embedded_in != 0) type->embedded.push_back({embedded_in, inner.name, &inner});
      for (const FieldInfo& field : inner.fields) {
        FieldInfo copy = field;
        if (embedded_in == 0) {
          // Not part of this type's protobuf message at all (TypeMeta's kind and apiVersion).
          copy.proto_number = 0;
          copy.embedded_in = 0;
        } else if (copy.embedded_in != 0) {
          return invalid(type->name + ": nested embedded messages are not supported");
        } else {
          copy.embedded_in = embedded_in;
        }
        type->fields.push_back(std::move(copy));
      }
    }
    raw.clear();
    state = State::kDone;
    return Status::ok();
  }

  Status index(TypeInfo* type) {
    type->by_json_.reserve(type->fields.size());
    for (size_t i = 0; i < type->fields.size(); ++i) {
      const FieldInfo& f = type->fields[i];
      if (!type->by_json_.emplace(f.json_name, i).second) {
        return invalid(type->name + ": field \"" + f.json_name + "\" appears twice");
      }
      if (f.proto_number != 0 && f.embedded_in == 0 &&
          !type->by_proto_.emplace(f.proto_number, i).second) {
        return invalid(type->name + ": protobuf number " + std::to_string(f.proto_number) +
                       " used twice");
      }
    }
    for (const EmbeddedInfo& e : type->embedded) {
      if (type->by_proto_.contains(e.proto_number)) {
        return invalid(type->name + ": protobuf number " + std::to_string(e.proto_number) +
                       " used twice");
      }
    }
    return Status::ok();
  }

  Schema& schema_;
  std::unordered_map<std::string, std::vector<RawField>> raw_;
  std::unordered_map<std::string, State> state_;
};

Result<std::unique_ptr<Schema>> Schema::load(std::string_view types_json,
                                             std::string_view resources_json) {
  SKIFF_ASSIGN_OR_RETURN(Json resources, parse_document(resources_json, "resources document"));
  auto schema = std::make_unique<Schema>();
  SchemaLoader loader(schema.get());
  SKIFF_RETURN_IF_ERROR(loader.load_types(types_json));
  SKIFF_RETURN_IF_ERROR(loader.load_resources(resources));
  return schema;
}

const Schema& Schema::builtin() {
  static const Schema* const schema = [] {
    auto loaded = load(std::string_view(kSchemaTypesJson, kSchemaTypesJsonSize),
                       std::string_view(kSchemaResourcesJson, kSchemaResourcesJsonSize));
    SKIFF_CHECK(loaded.is_ok(),
                "the built-in API schema is broken: " + loaded.status().to_string());
    return std::move(loaded).value().release();
  }();
  return *schema;
}

const TypeInfo* Schema::type(std::string_view name) const {
  auto it = type_index_.find(name);
  return it == type_index_.end() ? nullptr : it->second;
}

const ResourceInfo* Schema::resource(std::string_view group, std::string_view version,
                                     std::string_view resource) const {
  std::string key;
  key.reserve(group.size() + version.size() + resource.size() + 2);
  key.append(group).append("/").append(version).append("/").append(resource);
  auto it = by_resource_.find(key);
  return it == by_resource_.end() ? nullptr : &resources_[it->second];
}

const ResourceInfo* Schema::resource_for_kind(std::string_view group, std::string_view version,
                                              std::string_view kind) const {
  std::string key;
  key.reserve(group.size() + version.size() + kind.size() + 2);
  key.append(group).append("/").append(version).append("/").append(kind);
  auto it = by_kind_.find(key);
  return it == by_kind_.end() ? nullptr : &resources_[it->second];
}

}  // namespace skiff::api
