#include "scheduler/labels.h"

#include <algorithm>
#include <charconv>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_set>

namespace skiff::scheduler {
namespace {

const LabelKey& metadata_name() {
  static const LabelKey key("metadata.name");
  return key;
}

bool parse_int64(std::string_view s, int64_t& out) {
  if (s.empty()) return false;
  const char* begin = s.data();
  const char* end = s.data() + s.size();
  if (*begin == '+') ++begin;
  auto [ptr, ec] = std::from_chars(begin, end, out);
  return ec == std::errc() && ptr == end;
}

bool has_value(const std::vector<HString>& values, const HString& v) {
  for (const HString& x : values) {
    if (x == v) return true;
  }
  return false;
}

std::string json_string(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

// One v1.NodeSelectorRequirement on labels, validated as upstream's labels.NewRequirement.
Result<LabelRequirement> label_requirement_from_json(const nlohmann::json& expr) {
  if (!expr.is_object())
    return Status(StatusCode::kInvalidArgument, "requirement is not an object");
  std::string op = json_string(expr, "operator");
  std::string key = json_string(expr, "key");
  std::vector<std::string> values;
  auto vit = expr.find("values");
  if (vit != expr.end() && vit->is_array()) {
    for (const nlohmann::json& v : *vit) {
      if (!v.is_string()) return Status(StatusCode::kInvalidArgument, "values must be strings");
      values.push_back(v.get<std::string>());
    }
  }
  if (op == "Gt" || op == "Lt") {
    // Key syntax is checked through the generic selector parser with an Exists probe.
    nlohmann::json probe = {{"matchExpressions", {{{"key", key}, {"operator", "Exists"}}}}};
    Result<api::LabelSelector> parsed = api::LabelSelector::from_json(probe);
    if (!parsed.is_ok()) return parsed.status();
    if (values.size() != 1) {
      return Status(StatusCode::kInvalidArgument,
                    "for 'Gt', 'Lt' operators, exactly one value is required");
    }
    LabelRequirement r;
    r.key = LabelKey(key);
    r.op = op == "Gt" ? MatchOp::kGreaterThan : MatchOp::kLessThan;
    if (!parse_int64(values.front(), r.number)) {
      return Status(StatusCode::kInvalidArgument,
                    "for 'Gt', 'Lt' operators, the value must be an integer");
    }
    return r;
  }
  if (op != "In" && op != "NotIn" && op != "Exists" && op != "DoesNotExist") {
    return Status(StatusCode::kInvalidArgument, "Unsupported value: \"" + op + "\"");
  }
  nlohmann::json probe = {{"matchExpressions", nlohmann::json::array({expr})}};
  Result<api::LabelSelector> parsed = api::LabelSelector::from_json(probe);
  if (!parsed.is_ok()) return parsed.status();
  Selector compiled = Selector::from_api(parsed.value());
  if (compiled.requirements().size() != 1) {
    return Status(StatusCode::kInternal, "unexpected requirement count");
  }
  return compiled.requirements().front();
}

}  // namespace

uint64_t hash_string(std::string_view s) {
  return std::hash<std::string_view>{}(s);
}

// ---- LabelKey ----

namespace {

const std::string* intern(std::string_view name) {
  static std::mutex mu;
  // Never destroyed: keys may be used during static destruction elsewhere.
  static auto* pool = new std::unordered_set<std::string>();
  std::lock_guard lock(mu);
  return &*pool->emplace(name).first;
}

}  // namespace

LabelKey::LabelKey() {
  static const LabelKey empty(std::string_view{});
  *this = empty;
}

LabelKey::LabelKey(std::string_view name) : name_(intern(name)), hash_(hash_string(name)) {}

// ---- Labels ----

Labels Labels::from_json(const nlohmann::json& labels) {
  Labels out;
  if (!labels.is_object()) return out;
  out.keys_.reserve(labels.size());
  out.values_.reserve(labels.size());
  // nlohmann's object keeps keys sorted.
  for (auto it = labels.begin(); it != labels.end(); ++it) {
    if (!it->is_string()) continue;
    out.keys_.emplace_back(it.key());
    out.values_.emplace_back(it->get_ref<const std::string&>());
  }
  return out;
}

const HString* Labels::find(std::string_view key) const {
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (keys_[i].str() == key) return &values_[i];
  }
  return nullptr;
}

void Labels::set(std::string_view key, std::string_view value) {
  size_t i = 0;
  while (i < keys_.size() && keys_[i].str() < key) ++i;
  if (i < keys_.size() && keys_[i].str() == key) {
    values_[i] = HString(value);
    return;
  }
  keys_.insert(keys_.begin() + static_cast<std::ptrdiff_t>(i), LabelKey(key));
  values_.insert(values_.begin() + static_cast<std::ptrdiff_t>(i), HString(value));
}

std::string Labels::fingerprint() const {
  std::string out;
  for (size_t i = 0; i < keys_.size(); ++i) {
    out += keys_[i].str();
    out += '=';
    out += values_[i].str();
    out += '\n';
  }
  return out;
}

// ---- LabelRequirement ----

bool LabelRequirement::matches_value(const HString* value) const {
  switch (op) {
    case MatchOp::kIn:
      return value != nullptr && has_value(values, *value);
    case MatchOp::kNotIn:
      return value == nullptr || !has_value(values, *value);
    case MatchOp::kExists:
      return value != nullptr;
    case MatchOp::kDoesNotExist:
      return value == nullptr;
    case MatchOp::kGreaterThan:
    case MatchOp::kLessThan: {
      int64_t have;
      if (value == nullptr || !parse_int64(value->str(), have)) return false;
      return op == MatchOp::kGreaterThan ? have > number : have < number;
    }
  }
  return false;
}

bool LabelRequirement::matches(const Labels& labels) const {
  return matches_value(labels.find(key));
}

// ---- Selector ----

Selector Selector::nothing() {
  Selector s;
  s.nothing_ = true;
  return s;
}

Selector Selector::from_api(const api::LabelSelector& selector) {
  if (selector.matches_nothing()) return nothing();
  Selector out;
  for (const api::Requirement& r : selector.requirements()) {
    LabelRequirement req;
    req.key = LabelKey(r.key);
    switch (r.op) {
      case api::SelectorOp::kEquals:
      case api::SelectorOp::kIn:
        req.op = MatchOp::kIn;
        break;
      case api::SelectorOp::kNotEquals:
      case api::SelectorOp::kNotIn:
        req.op = MatchOp::kNotIn;
        break;
      case api::SelectorOp::kExists:
        req.op = MatchOp::kExists;
        break;
      case api::SelectorOp::kDoesNotExist:
        req.op = MatchOp::kDoesNotExist;
        break;
      case api::SelectorOp::kGreaterThan:
      case api::SelectorOp::kLessThan:
        req.op = r.op == api::SelectorOp::kGreaterThan ? MatchOp::kGreaterThan : MatchOp::kLessThan;
        if (r.values.size() != 1 || !parse_int64(r.values.front(), req.number)) {
          return nothing();
        }
        break;
    }
    if (req.op == MatchOp::kIn || req.op == MatchOp::kNotIn) {
      for (const std::string& v : r.values) req.values.emplace_back(v);
    }
    out.requirements_.push_back(std::move(req));
  }
  return out;
}

Result<Selector> Selector::from_json(const nlohmann::json& label_selector) {
  if (label_selector.is_null()) return nothing();
  Result<api::LabelSelector> parsed = api::LabelSelector::from_json(label_selector);
  if (!parsed.is_ok()) return parsed.status();
  return from_api(parsed.value());
}

Selector Selector::from_labels(const Labels& set) {
  Selector out;
  for (size_t i = 0; i < set.size(); ++i) {
    LabelRequirement r;
    r.key = set.key(i);
    r.op = MatchOp::kIn;
    r.values.push_back(set.value(i));
    out.requirements_.push_back(std::move(r));
  }
  return out;
}

void Selector::add(LabelRequirement requirement) {
  requirements_.push_back(std::move(requirement));
}

bool Selector::matches(const Labels& labels) const {
  if (nothing_) return false;
  for (const LabelRequirement& r : requirements_) {
    if (!r.matches(labels)) return false;
  }
  return true;
}

std::string Selector::fingerprint() const {
  if (nothing_) return "<nothing>";
  std::string out;
  for (const LabelRequirement& r : requirements_) {
    out += r.key.str();
    out += ' ';
    out += static_cast<char>('0' + static_cast<int>(r.op));
    if (r.op == MatchOp::kGreaterThan || r.op == MatchOp::kLessThan) {
      out += std::to_string(r.number);
    }
    for (const HString& v : r.values) {
      out += ' ';
      out += v.str();
    }
    out += '\n';
  }
  return out;
}

// ---- NodeSelectorTerm ----

NodeSelectorTerm NodeSelectorTerm::from_json(const nlohmann::json& term) {
  NodeSelectorTerm out;
  if (!term.is_object()) {
    out.error_ = "node selector term is not an object";
    return out;
  }
  bool ok = true;
  auto exprs = term.find("matchExpressions");
  if (exprs != term.end() && exprs->is_array()) {
    for (const nlohmann::json& e : *exprs) {
      Result<LabelRequirement> r = label_requirement_from_json(e);
      if (!r.is_ok()) {
        ok = false;
        if (out.error_.empty()) out.error_ = r.status().message();
        continue;
      }
      out.label_requirements_.push_back(std::move(r).value());
    }
  }
  auto fields = term.find("matchFields");
  if (fields != term.end() && fields->is_array()) {
    for (const nlohmann::json& f : *fields) {
      std::string op = f.is_object() ? json_string(f, "operator") : "";
      LabelRequirement r;
      r.key = LabelKey(f.is_object() ? json_string(f, "key") : "");
      std::vector<std::string> values;
      if (f.is_object()) {
        auto vit = f.find("values");
        if (vit != f.end() && vit->is_array()) {
          for (const nlohmann::json& v : *vit) {
            if (v.is_string()) values.push_back(v.get<std::string>());
          }
        }
      }
      if ((op != "In" && op != "NotIn") || values.size() != 1) {
        ok = false;
        if (out.error_.empty()) {
          out.error_ = op != "In" && op != "NotIn"
                           ? "\"" + op + "\" is not a valid node field selector operator"
                           : "unexpected number of value (" + std::to_string(values.size()) +
                                 ") for node field selector operator \"" + op + "\"";
        }
        continue;
      }
      r.op = op == "In" ? MatchOp::kIn : MatchOp::kNotIn;
      r.values.emplace_back(values.front());
      out.field_requirements_.push_back(std::move(r));
    }
  }
  out.valid_ = ok;
  return out;
}

bool NodeSelectorTerm::matches(const Labels& node_labels, const HString& node_name) const {
  if (!valid_) return false;
  if (label_requirements_.empty() && field_requirements_.empty()) return false;
  for (const LabelRequirement& r : label_requirements_) {
    if (!r.matches(node_labels)) return false;
  }
  static const HString kEmpty;
  for (const LabelRequirement& r : field_requirements_) {
    const HString* value = r.key == metadata_name() ? &node_name : &kEmpty;
    if (!r.matches_value(value)) return false;
  }
  return true;
}

std::optional<std::vector<std::string>> NodeSelectorTerm::node_names() const {
  std::optional<std::vector<std::string>> names;
  for (const LabelRequirement& r : field_requirements_) {
    if (r.key != metadata_name() || r.op != MatchOp::kIn) continue;
    std::vector<std::string> these;
    for (const HString& v : r.values) these.push_back(v.str());
    std::sort(these.begin(), these.end());
    if (!names) {
      names = std::move(these);
    } else {
      std::vector<std::string> both;
      std::set_intersection(names->begin(), names->end(), these.begin(), these.end(),
                            std::back_inserter(both));
      names = std::move(both);
    }
  }
  return names;
}

// ---- NodeSelector ----

NodeSelector NodeSelector::from_json(const nlohmann::json& node_selector) {
  NodeSelector out;
  if (!node_selector.is_object()) return out;
  auto terms = node_selector.find("nodeSelectorTerms");
  if (terms == node_selector.end() || !terms->is_array()) return out;
  for (const nlohmann::json& t : *terms) out.terms_.push_back(NodeSelectorTerm::from_json(t));
  return out;
}

bool NodeSelector::matches(const Labels& node_labels, const HString& node_name) const {
  for (const NodeSelectorTerm& t : terms_) {
    if (t.matches(node_labels, node_name)) return true;
  }
  return false;
}

}  // namespace skiff::scheduler
