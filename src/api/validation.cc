#include "api/validation.h"

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace skiff::api {
namespace {

// Hand-written equivalents of upstream's regular expressions (no std::regex on hot paths).

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// [a-z0-9]([-a-z0-9]*[a-z0-9])?
bool matches_dns1123_label(std::string_view s) {
  if (s.empty() || !is_lower_alnum(s.front()) || !is_lower_alnum(s.back())) return false;
  for (char c : s) {
    if (!is_lower_alnum(c) && c != '-') return false;
  }
  return true;
}

// label(\.label)*
bool matches_dns1123_subdomain(std::string_view s) {
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    std::string_view part =
        s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (!matches_dns1123_label(part)) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// [a-z]([-a-z0-9]*[a-z0-9])?
bool matches_dns1035_label(std::string_view s) {
  return matches_dns1123_label(s) && s.front() >= 'a' && s.front() <= 'z';
}

// ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]
bool matches_label_key_name(std::string_view s) {
  if (s.empty() || !is_alnum(s.front()) || !is_alnum(s.back())) return false;
  for (char c : s) {
    if (!is_alnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

// [A-Za-z_][A-Za-z0-9_]*
bool matches_c_identifier(std::string_view s) {
  if (s.empty()) return false;
  if (!(is_alnum(s.front()) || s.front() == '_') || (s.front() >= '0' && s.front() <= '9')) {
    return false;
  }
  for (char c : s) {
    if (!is_alnum(c) && c != '_') return false;
  }
  return true;
}

std::string regex_error(std::string msg, std::string_view fmt,
                        std::initializer_list<std::string_view> examples) {
  if (examples.size() == 0)
    return msg + " (regex used for validation is '" + std::string(fmt) + "')";
  msg += " (e.g. ";
  size_t i = 0;
  for (std::string_view ex : examples) {
    if (i++ > 0) msg += " or ";
    msg += "'" + std::string(ex) + "', ";
  }
  msg += "regex used for validation is '" + std::string(fmt) + "')";
  return msg;
}

// util/validation says "characters"; api/validate/content (label keys and values) says "bytes".
std::string max_len_chars(size_t n) {
  return "must be no more than " + std::to_string(n) + " characters";
}
std::string max_len_bytes(size_t n) {
  return "must be no more than " + std::to_string(n) + " bytes";
}

constexpr std::string_view kDns1123LabelFmt = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
constexpr std::string_view kDns1123LabelMsg =
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character";
constexpr std::string_view kDns1123SubdomainFmt =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
constexpr std::string_view kDns1123SubdomainMsg =
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character";
constexpr std::string_view kDns1035LabelFmt = "[a-z]([-a-z0-9]*[a-z0-9])?";
constexpr std::string_view kDns1035LabelMsg =
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character";
constexpr std::string_view kLabelKeyFmt = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
constexpr std::string_view kLabelKeyMsg =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character";
constexpr std::string_view kLabelValueFmt = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
constexpr std::string_view kLabelValueMsg =
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character";
constexpr std::string_view kCIdentifierFmt = "[A-Za-z_][A-Za-z0-9_]*";
constexpr std::string_view kCIdentifierMsg =
    "a valid C identifier must start with alphabetic character or '_', followed by a string of "
    "alphanumeric characters or '_'";
constexpr std::string_view kRelaxedEnvVarMsg =
    "a valid environment variable name must consist only of printable ASCII characters other "
    "than '='";

std::string join(const std::vector<std::string>& msgs, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (i > 0) out += sep;
    out += msgs[i];
  }
  return out;
}

std::vector<std::string> subdomain_errors(std::string_view v, bool bytes) {
  std::vector<std::string> errs;
  if (v.size() > 253) errs.push_back(bytes ? max_len_bytes(253) : max_len_chars(253));
  if (!matches_dns1123_subdomain(v)) {
    errs.push_back(
        regex_error(std::string(kDns1123SubdomainMsg), kDns1123SubdomainFmt, {"example.com"}));
  }
  return errs;
}

std::vector<std::string> label_errors(std::string_view v) {
  std::vector<std::string> errs;
  if (v.size() > 63) errs.push_back(max_len_chars(63));
  if (!matches_dns1123_label(v)) {
    if (matches_dns1123_subdomain(v)) {
      errs.push_back("must not contain dots");
    } else {
      errs.push_back(
          regex_error(std::string(kDns1123LabelMsg), kDns1123LabelFmt, {"my-name", "123-abc"}));
    }
  }
  return errs;
}

std::vector<std::string> dns1035_errors(std::string_view v) {
  std::vector<std::string> errs;
  if (v.size() > 63) errs.push_back(max_len_chars(63));
  if (!matches_dns1035_label(v)) {
    errs.push_back(
        regex_error(std::string(kDns1035LabelMsg), kDns1035LabelFmt, {"my-name", "abc-123"}));
  }
  return errs;
}

std::vector<std::string> path_segment_errors(std::string_view v, bool prefix) {
  std::vector<std::string> errs;
  if (!prefix) {
    if (v == ".") return {"may not be '.'"};
    if (v == "..") return {"may not be '..'"};
  }
  if (v.find('/') != std::string_view::npos) errs.push_back("may not contain '/'");
  if (v.find('%') != std::string_view::npos) errs.push_back("may not contain '%'");
  return errs;
}

std::vector<std::string> name_errors(std::string_view name, NameRule rule, bool prefix) {
  std::string masked;
  if (prefix && rule != NameRule::kPathSegment && name.size() > 1 && name.back() == '-') {
    // Upstream's maskTrailingDash: a generateName may end in '-'; it drops the last two
    // characters and appends "a" before checking.
    masked = std::string(name.substr(0, name.size() - 2)) + "a";
    name = masked;
  }
  switch (rule) {
    case NameRule::kDns1123Subdomain:
      return subdomain_errors(name, false);
    case NameRule::kDns1123Label:
      return label_errors(name);
    case NameRule::kDns1035Label:
      return dns1035_errors(name);
    case NameRule::kPathSegment:
      return path_segment_errors(name, prefix);
  }
  return {};
}

const std::string* string_field(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return nullptr;
  return &it->get_ref<const std::string&>();
}

}  // namespace

std::vector<std::string> qualified_name_errors(std::string_view value) {
  std::vector<std::string> errs;
  std::string_view name;
  size_t slash = value.find('/');
  if (slash == std::string_view::npos) {
    name = value;
  } else if (value.find('/', slash + 1) == std::string_view::npos) {
    std::string_view prefix = value.substr(0, slash);
    name = value.substr(slash + 1);
    if (prefix.empty()) {
      errs.push_back("prefix part must be non-empty");
    } else {
      for (std::string& m : subdomain_errors(prefix, true)) errs.push_back("prefix part " + m);
    }
  } else {
    errs.push_back(
        "a valid label key " +
        regex_error(std::string(kLabelKeyMsg), kLabelKeyFmt, {"MyName", "my.name", "123-abc"}) +
        " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')");
    return errs;
  }
  if (name.empty()) {
    errs.push_back("name part must be non-empty");
  } else if (name.size() > 63) {
    errs.push_back("name part " + max_len_bytes(63));
  }
  if (!matches_label_key_name(name)) {
    errs.push_back("name part " + regex_error(std::string(kLabelKeyMsg), kLabelKeyFmt,
                                              {"MyName", "my.name", "123-abc"}));
  }
  return errs;
}

std::vector<std::string> label_value_errors(std::string_view value) {
  std::vector<std::string> errs;
  if (value.size() > 63) errs.push_back(max_len_bytes(63));
  if (!value.empty() && !matches_label_key_name(value)) {
    errs.push_back(
        regex_error(std::string(kLabelValueMsg), kLabelValueFmt, {"MyValue", "my_value", "12345"}));
  }
  return errs;
}

std::string check_dns1123_subdomain(std::string_view value) {
  return join(subdomain_errors(value, false), "; ");
}
std::string check_dns1123_label(std::string_view value) {
  return join(label_errors(value), "; ");
}
std::string check_dns1035_label(std::string_view value) {
  return join(dns1035_errors(value), "; ");
}
std::string check_qualified_name(std::string_view value) {
  return join(qualified_name_errors(value), "; ");
}
std::string check_label_value(std::string_view value) {
  return join(label_value_errors(value), "; ");
}
std::string check_c_identifier(std::string_view value) {
  if (matches_c_identifier(value)) return "";
  return regex_error(std::string(kCIdentifierMsg), kCIdentifierFmt,
                     {"my_name", "MY_NAME", "MyName"});
}

std::string check_env_var_name(std::string_view value) {
  // RelaxedEnvironmentVariableValidation (on by default upstream): any printable ASCII but '='.
  std::vector<std::string> errs;
  if (value.empty()) errs.push_back("environment variable name must be non-empty");
  for (char ch : value) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c > 0x7e || c == '=') {
      errs.push_back(std::string(kRelaxedEnvVarMsg));
      break;
    }
  }
  return join(errs, "; ");
}

std::string check_object_name(std::string_view name, NameRule rule, bool prefix) {
  return join(name_errors(name, rule, prefix), "; ");
}

void validate_labels(const nlohmann::json& labels, const std::string& field, FieldErrors& errors) {
  if (labels.is_null()) return;
  if (!labels.is_object()) {
    errors.invalid_value(field, labels, "must be a map of string keys to string values");
    return;
  }
  for (auto it = labels.begin(); it != labels.end(); ++it) {
    for (std::string& m : qualified_name_errors(it.key())) errors.invalid(field, it.key(), m);
    if (!it->is_string()) {
      errors.invalid_value(field, *it, "label values must be strings");
      continue;
    }
    const std::string& v = it->get_ref<const std::string&>();
    for (std::string& m : label_value_errors(v)) errors.invalid(field, v, m);
  }
}

void validate_annotations(const nlohmann::json& annotations, const std::string& field,
                          FieldErrors& errors) {
  if (annotations.is_null()) return;
  if (!annotations.is_object()) {
    errors.invalid_value(field, annotations, "must be a map of string keys to string values");
    return;
  }
  constexpr size_t kTotalAnnotationSizeLimit = 256 * 1024;
  size_t total = 0;
  for (auto it = annotations.begin(); it != annotations.end(); ++it) {
    std::string lower = it.key();
    for (char& c : lower) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    for (std::string& m : qualified_name_errors(lower)) errors.invalid(field, it.key(), m);
    total += it.key().size();
    if (it->is_string()) {
      total += it->get_ref<const std::string&>().size();
    } else {
      errors.invalid_value(field, *it, "annotation values must be strings");
    }
  }
  if (total > kTotalAnnotationSizeLimit) errors.too_long(field, kTotalAnnotationSizeLimit);
}

namespace {

void validate_owner_references(const nlohmann::json& refs, FieldErrors& errors) {
  const std::string base = "metadata.ownerReferences";
  if (refs.is_null()) return;
  if (!refs.is_array()) {
    errors.invalid_value(base, refs, "must be a list of owner references");
    return;
  }
  std::string first_controller;
  for (size_t i = 0; i < refs.size(); ++i) {
    const nlohmann::json& ref = refs[i];
    std::string path = base + "[" + std::to_string(i) + "]";
    if (!ref.is_object()) {
      errors.invalid_value(path, ref, "must be an object");
      continue;
    }
    const std::string* api_version = string_field(ref, "apiVersion");
    const std::string* kind = string_field(ref, "kind");
    const std::string* name = string_field(ref, "name");
    const std::string* uid = string_field(ref, "uid");
    std::string group, version;
    if (api_version == nullptr || api_version->empty()) {
      errors.required(path + ".apiVersion", "must not be empty");
    } else {
      size_t slash = api_version->find('/');
      bool bad = false;
      if (slash == std::string::npos) {
        version = *api_version;
      } else if (api_version->find('/', slash + 1) != std::string::npos) {
        bad = true;
      } else {
        group = api_version->substr(0, slash);
        version = api_version->substr(slash + 1);
      }
      if (bad || version.empty()) {
        errors.invalid(path + ".apiVersion", *api_version,
                       "must be <group>/<version> or <version>");
      }
    }
    if (kind == nullptr || kind->empty()) errors.required(path + ".kind", "must not be empty");
    if (name == nullptr || name->empty()) errors.required(path + ".name", "must not be empty");
    if (uid == nullptr || uid->empty()) errors.required(path + ".uid", "must not be empty");
    if (group.empty() && version == "v1" && kind != nullptr && *kind == "Event") {
      errors.invalid_value(path, ref, "/v1, Kind=Event is disallowed from being an owner");
    }
    auto controller = ref.find("controller");
    if (controller != ref.end() && controller->is_boolean() && controller->get<bool>()) {
      std::string current = (kind ? *kind : "") + "/" + (name ? *name : "");
      if (!first_controller.empty()) {
        errors.invalid_value(base, refs,
                             "Only one reference can have Controller set to true. Found \"true\" "
                             "in references for " +
                                 first_controller + " and " + current);
      } else {
        first_controller = current;
      }
    }
  }
}

void validate_finalizers(const nlohmann::json& finalizers, FieldErrors& errors) {
  const std::string field = "metadata.finalizers";
  if (finalizers.is_null()) return;
  if (!finalizers.is_array()) {
    errors.invalid_value(field, finalizers, "must be a list of strings");
    return;
  }
  bool orphan = false, foreground = false;
  for (const nlohmann::json& f : finalizers) {
    if (!f.is_string()) {
      errors.invalid_value(field, f, "finalizers must be strings");
      continue;
    }
    const std::string& s = f.get_ref<const std::string&>();
    for (std::string& m : qualified_name_errors(s)) errors.invalid(field, s, m);
    if (s == "orphan") orphan = true;
    if (s == "foregroundDeletion") foreground = true;
  }
  if (orphan && foreground) {
    errors.invalid_value(field, finalizers,
                         "finalizer orphan and foregroundDeletion cannot be both set");
  }
}

}  // namespace

void validate_object_meta(const nlohmann::json& meta, bool namespaced, NameRule rule,
                          FieldErrors& errors) {
  static const nlohmann::json kNull;
  if (!meta.is_null() && !meta.is_object()) {
    errors.invalid_value("metadata", meta, "must be an object");
    return;
  }
  auto get = [&](const char* key) -> const nlohmann::json& {
    if (!meta.is_object()) return kNull;
    auto it = meta.find(key);
    return it == meta.end() ? kNull : *it;
  };
  auto get_string = [&](const char* key, const std::string& path) -> std::string {
    const nlohmann::json& v = get(key);
    if (v.is_null()) return "";
    if (!v.is_string()) {
      errors.invalid_value(path, v, "must be a string");
      return "";
    }
    return v.get<std::string>();
  };

  std::string generate_name = get_string("generateName", "metadata.generateName");
  std::string name = get_string("name", "metadata.name");
  if (!generate_name.empty()) {
    for (std::string& m : name_errors(generate_name, rule, true)) {
      errors.invalid("metadata.generateName", generate_name, m);
    }
  }
  if (name.empty()) {
    // The registry fills name from generateName before validating; both empty is an error.
    if (generate_name.empty()) {
      errors.required("metadata.name", "name or generateName is required");
    }
  } else {
    for (std::string& m : name_errors(name, rule, false)) errors.invalid("metadata.name", name, m);
  }

  std::string ns = get_string("namespace", "metadata.namespace");
  if (namespaced) {
    if (ns.empty()) {
      errors.required("metadata.namespace", "");
    } else {
      for (std::string& m : label_errors(ns)) errors.invalid("metadata.namespace", ns, m);
    }
  } else if (!ns.empty()) {
    errors.forbidden("metadata.namespace", "not allowed on this type");
  }

  const nlohmann::json& generation = get("generation");
  if (generation.is_number() && generation.get<double>() < 0) {
    errors.invalid_value("metadata.generation", generation, "must be greater than or equal to 0");
  }

  validate_labels(get("labels"), "metadata.labels", errors);
  validate_annotations(get("annotations"), "metadata.annotations", errors);
  validate_owner_references(get("ownerReferences"), errors);
  validate_finalizers(get("finalizers"), errors);
}

}  // namespace skiff::api
