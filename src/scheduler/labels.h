#pragma once

// Label sets and selectors in the form the scheduler evaluates them on its hot paths: every key
// and value carries its hash, computed once when an object is parsed, so matching a selector
// against a pod or node mostly compares integers. Also node selector terms (In, NotIn, Exists,
// DoesNotExist, Gt, Lt on labels; In/NotIn on the metadata.name field) with upstream's rule that
// an invalid or empty term matches no node.
//
// Thread-safety: immutable after construction; safe to share between threads.

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/selector.h"
#include "base/status.h"

namespace skiff::scheduler {

uint64_t hash_string(std::string_view s);

// A string with its hash. Equality compares the hashes first.
class HString {
 public:
  HString() : hash_(hash_string({})) {}
  explicit HString(std::string s) : str_(std::move(s)), hash_(hash_string(str_)) {}
  explicit HString(std::string_view s) : HString(std::string(s)) {}
  explicit HString(const char* s) : HString(std::string(s)) {}

  const std::string& str() const { return str_; }
  uint64_t hash() const { return hash_; }
  bool empty() const { return str_.empty(); }
  bool operator==(const HString& o) const { return hash_ == o.hash_ && str_ == o.str_; }
  bool operator!=(const HString& o) const { return !(*this == o); }
  bool operator<(const HString& o) const { return str_ < o.str_; }

 private:
  std::string str_;
  uint64_t hash_;
};

struct HStringHash {
  size_t operator()(const HString& s) const { return static_cast<size_t>(s.hash()); }
};

// A label key, interned: every distinct key string is stored once for the life of the process,
// so keys compare by pointer. (Label keys are few — hostname, zone, app, ...; values, which are
// unbounded, are not interned.)
class LabelKey {
 public:
  LabelKey();  // the empty key
  explicit LabelKey(std::string_view name);

  const std::string& str() const { return *name_; }
  uint64_t hash() const { return hash_; }
  bool operator==(const LabelKey& o) const { return name_ == o.name_; }
  bool operator!=(const LabelKey& o) const { return name_ != o.name_; }
  bool operator<(const LabelKey& o) const { return *name_ < *o.name_; }

 private:
  const std::string* name_;
  uint64_t hash_;
};

// A label set (metadata.labels), sorted by key. Keys and values are kept in separate arrays so a
// lookup scans a few pointers.
class Labels {
 public:
  Labels() = default;
  // `labels` is a JSON object of strings; anything else yields an empty set (non-string values
  // are skipped).
  static Labels from_json(const nlohmann::json& labels);

  const HString* find(const LabelKey& key) const {
    for (size_t i = 0; i < keys_.size(); ++i) {
      if (keys_[i] == key) return &values_[i];
    }
    return nullptr;
  }
  const HString* find(std::string_view key) const;
  bool contains(const LabelKey& key) const { return find(key) != nullptr; }
  void set(std::string_view key, std::string_view value);

  size_t size() const { return keys_.size(); }
  bool empty() const { return keys_.empty(); }
  const LabelKey& key(size_t i) const { return keys_[i]; }
  const HString& value(size_t i) const { return values_[i]; }
  bool operator==(const Labels& o) const { return keys_ == o.keys_ && values_ == o.values_; }
  // "k=v\n..." (for cache keys).
  std::string fingerprint() const;

 private:
  std::vector<LabelKey> keys_;
  std::vector<HString> values_;
};

enum class MatchOp : uint8_t { kIn, kNotIn, kExists, kDoesNotExist, kGreaterThan, kLessThan };

struct LabelRequirement {
  LabelKey key;
  MatchOp op = MatchOp::kIn;
  std::vector<HString> values;  // kIn / kNotIn
  int64_t number = 0;           // kGreaterThan / kLessThan

  bool matches(const Labels& labels) const;
  // Matches against one optional value (what a field selector on metadata.name sees).
  bool matches_value(const HString* value) const;
};

// A compiled label selector. The default selector matches everything.
class Selector {
 public:
  Selector() = default;
  static Selector everything() { return Selector(); }
  static Selector nothing();
  // A metav1.LabelSelector; JSON null means "nothing" (upstream's LabelSelectorAsSelector),
  // {} means "everything". kInvalidArgument for malformed selectors.
  static Result<Selector> from_json(const nlohmann::json& label_selector);
  static Selector from_api(const api::LabelSelector& selector);
  // matchLabels-style: every label of `set` must be present with that value.
  static Selector from_labels(const Labels& set);

  void add(LabelRequirement requirement);
  bool matches(const Labels& labels) const;
  bool matches_nothing() const { return nothing_; }
  // True when it matches every label set.
  bool empty() const { return requirements_.empty() && !nothing_; }
  const std::vector<LabelRequirement>& requirements() const { return requirements_; }
  // A string equal for selectors that match the same way (for cache keys).
  std::string fingerprint() const;

 private:
  std::vector<LabelRequirement> requirements_;
  bool nothing_ = false;
};

// One v1.NodeSelectorTerm. Requirements are ANDed; a term with no requirements, or with an
// invalid one, matches no node.
class NodeSelectorTerm {
 public:
  NodeSelectorTerm() = default;
  static NodeSelectorTerm from_json(const nlohmann::json& term);

  bool matches(const Labels& node_labels, const HString& node_name) const;
  bool valid() const { return valid_; }
  // The node names a "metadata.name In (...)" field requirement restricts this term to (the
  // intersection when there are several); nullopt when the term does not restrict names.
  std::optional<std::vector<std::string>> node_names() const;
  const std::string& error() const { return error_; }

 private:
  std::vector<LabelRequirement> label_requirements_;
  std::vector<LabelRequirement> field_requirements_;  // key is always "metadata.name"
  bool valid_ = false;
  std::string error_;
};

// v1.NodeSelector: terms are ORed.
class NodeSelector {
 public:
  NodeSelector() = default;
  static NodeSelector from_json(const nlohmann::json& node_selector);

  bool matches(const Labels& node_labels, const HString& node_name) const;
  const std::vector<NodeSelectorTerm>& terms() const { return terms_; }

 private:
  std::vector<NodeSelectorTerm> terms_;
};

}  // namespace skiff::scheduler
