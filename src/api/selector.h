#pragma once

// Label and field selectors with Kubernetes' syntax and semantics.
//
// Label selectors (string form): "a=b", "a==b", "a!=b", "a in (x,y)", "a notin (x)", "a", "!a",
// comma-separated and ANDed. From JSON: a metav1.LabelSelector (matchLabels, matchExpressions
// with In, NotIn, Exists, DoesNotExist). An empty selector matches everything.
// Field selectors: "f=v", "f==v", "f!=v", comma-separated and ANDed; values may escape "\," "\="
// "\\".
//
// Thread-safety: immutable after parsing.

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace skiff::api {

// kGreaterThan / kLessThan ("a>5", "a<5") exist only in the string form, as upstream.
enum class SelectorOp : uint8_t {
  kEquals,
  kNotEquals,
  kIn,
  kNotIn,
  kExists,
  kDoesNotExist,
  kGreaterThan,
  kLessThan,
};

struct Requirement {
  std::string key;
  SelectorOp op = SelectorOp::kEquals;
  std::vector<std::string> values;  // sorted; one value for kEquals/kNotEquals
};

class LabelSelector {
 public:
  LabelSelector() = default;  // matches everything
  // kInvalidArgument with a message naming the problem for malformed input or invalid keys /
  // values (label key and value syntax are checked as upstream).
  static Result<LabelSelector> parse(std::string_view text);
  static Result<LabelSelector> from_json(const nlohmann::json& label_selector);

  // A selector that matches no object: what a null metav1.LabelSelector means upstream.
  static LabelSelector nothing();

  // `labels` is a JSON object of string values (or null / missing: no labels).
  bool matches(const nlohmann::json& labels) const;
  bool empty() const { return requirements_.empty() && !nothing_; }
  bool matches_nothing() const { return nothing_; }
  const std::vector<Requirement>& requirements() const { return requirements_; }
  std::string to_string() const;

 private:
  std::vector<Requirement> requirements_;  // sorted by key
  bool nothing_ = false;
};

class FieldSelector {
 public:
  FieldSelector() = default;  // matches everything
  static Result<FieldSelector> parse(std::string_view text);

  // `get` returns the value of a field path ("metadata.name", "spec.nodeName"), or nullopt-like
  // empty string for absent fields.
  template <typename Getter>
  bool matches(Getter&& get) const {
    for (const Requirement& r : requirements_) {
      std::string v = get(r.key);
      bool eq = v == r.values.front();
      if ((r.op == SelectorOp::kEquals) != eq) return false;
    }
    return true;
  }
  bool empty() const { return requirements_.empty(); }
  const std::vector<Requirement>& requirements() const { return requirements_; }
  std::string to_string() const;

 private:
  std::vector<Requirement> requirements_;  // kEquals or kNotEquals only
};

}  // namespace skiff::api
