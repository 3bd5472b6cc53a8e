#include "api/selector.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <set>

#include "api/errors.h"
#include "api/validation.h"

namespace skiff::api {
namespace {

// ---- Field errors, formatted as upstream's field.Error / aggregate ----

std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += sep;
    out += v[i];
  }
  return out;
}

std::string aggregate(const std::vector<std::string>& errors) {
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (const std::string& e : errors) {
    if (seen.insert(e).second) unique.push_back(e);
  }
  if (unique.size() == 1) return unique.front();
  return "[" + join(unique, ", ") + "]";
}

std::string values_json(const std::vector<std::string>* values) {
  if (values == nullptr) return "null";
  return nlohmann::json(*values).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool parse_int64(std::string_view s, int64_t& out) {
  // Go's strconv.ParseInt(s, 10, 64): optional sign, digits, no spaces, in range.
  if (s.empty()) return false;
  size_t i = 0;
  bool neg = false;
  if (s[0] == '+' || s[0] == '-') {
    neg = s[0] == '-';
    i = 1;
  }
  if (i >= s.size()) return false;
  std::string digits = neg ? "-" : "";
  for (size_t k = i; k < s.size(); ++k) {
    if (s[k] < '0' || s[k] > '9') return false;
  }
  digits.append(s.substr(i));
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out);
  return ec == std::errc() && p == digits.data() + digits.size();
}

std::string key_error(const std::string& field, const std::string& key) {
  std::vector<std::string> errs = qualified_name_errors(key);
  if (errs.empty()) return "";
  return field + ": Invalid value: " + go_quote(key) + ": " + join(errs, "; ");
}

// Upstream's labels.NewRequirement: all problems, aggregated. `values` null means the JSON
// selector had no values at all. Returns "" when valid.
std::string check_requirement(const std::string& key, SelectorOp op,
                              const std::vector<std::string>* values) {
  std::vector<std::string> errs;
  if (std::string e = key_error("key", key); !e.empty()) errs.push_back(e);
  size_t n = values ? values->size() : 0;
  switch (op) {
    case SelectorOp::kIn:
    case SelectorOp::kNotIn:
      if (n == 0) {
        errs.push_back("values: Invalid value: " + values_json(values) +
                       ": for 'in', 'notin' operators, values set can't be empty");
      }
      break;
    case SelectorOp::kEquals:
    case SelectorOp::kNotEquals:
      if (n != 1) {
        errs.push_back("values: Invalid value: " + values_json(values) +
                       ": exact-match compatibility requires one single value");
      }
      break;
    case SelectorOp::kExists:
    case SelectorOp::kDoesNotExist:
      if (n != 0) {
        errs.push_back("values: Invalid value: " + values_json(values) +
                       ": values set must be empty for exists and does not exist");
      }
      break;
    case SelectorOp::kGreaterThan:
    case SelectorOp::kLessThan:
      if (n != 1) {
        errs.push_back("values: Invalid value: " + values_json(values) +
                       ": for 'Gt', 'Lt' operators, exactly one value is required");
      }
      for (size_t i = 0; i < n; ++i) {
        int64_t v;
        if (!parse_int64((*values)[i], v)) {
          errs.push_back("values[" + std::to_string(i) +
                         "]: Invalid value: " + go_quote((*values)[i]) +
                         ": for 'Gt', 'Lt' operators, the value must be an integer");
        }
      }
      break;
  }
  for (size_t i = 0; i < n; ++i) {
    std::vector<std::string> verrs = label_value_errors((*values)[i]);
    if (!verrs.empty()) {
      errs.push_back("values[" + std::to_string(i) + "][" + key +
                     "]: Invalid value: " + go_quote((*values)[i]) + ": " + join(verrs, "; "));
    }
  }
  if (errs.empty()) return "";
  return aggregate(errs);
}

void sort_unique(std::vector<std::string>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

Status invalid(std::string message) {
  return Status(StatusCode::kInvalidArgument, std::move(message));
}

// ---- The string syntax: upstream's lexer and recursive-descent parser ----

enum class Tok : uint8_t {
  kError,
  kEnd,
  kClosedPar,
  kComma,
  kDoesNotExist,
  kDoubleEquals,
  kEquals,
  kGreaterThan,
  kIdentifier,
  kIn,
  kLessThan,
  kNotEquals,
  kNotIn,
  kOpenPar,
};

struct Item {
  Tok tok;
  std::string lit;
};

bool is_whitespace(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}
bool is_special(char c) {
  switch (c) {
    case '=':
    case '!':
    case '(':
    case ')':
    case ',':
    case '>':
    case '<':
      return true;
    default:
      return false;
  }
}

bool symbol_token(std::string_view s, Tok& tok) {
  if (s == ")")
    tok = Tok::kClosedPar;
  else if (s == ",")
    tok = Tok::kComma;
  else if (s == "!")
    tok = Tok::kDoesNotExist;
  else if (s == "==")
    tok = Tok::kDoubleEquals;
  else if (s == "=")
    tok = Tok::kEquals;
  else if (s == ">")
    tok = Tok::kGreaterThan;
  else if (s == "<")
    tok = Tok::kLessThan;
  else if (s == "!=")
    tok = Tok::kNotEquals;
  else if (s == "(")
    tok = Tok::kOpenPar;
  else if (s == "in")
    tok = Tok::kIn;
  else if (s == "notin")
    tok = Tok::kNotIn;
  else
    return false;
  return true;
}

std::vector<Item> lex(std::string_view s) {
  std::vector<Item> items;
  size_t pos = 0;
  // A NUL byte ends the input, as upstream's lexer reads 0 as end of string.
  auto at = [&](size_t i) -> char { return i < s.size() ? s[i] : '\0'; };
  while (true) {
    while (at(pos) != '\0' && is_whitespace(at(pos))) ++pos;
    char c = at(pos);
    if (c == '\0') {
      items.push_back({Tok::kEnd, ""});
      return items;
    }
    if (is_special(c)) {
      std::string buffer;
      Tok last = Tok::kError;
      std::string last_lit;
      while (at(pos) != '\0' && is_special(at(pos))) {
        buffer.push_back(at(pos));
        Tok t;
        if (symbol_token(buffer, t)) {
          last = t;
          last_lit = buffer;
          ++pos;
        } else if (last != Tok::kError) {
          break;
        } else {
          ++pos;
        }
      }
      if (last == Tok::kError) {
        items.push_back({Tok::kError, "error expected: keyword found '" + buffer + "'"});
      } else {
        items.push_back({last, last_lit});
      }
      continue;
    }
    std::string buffer;
    while (at(pos) != '\0' && !is_special(at(pos)) && !is_whitespace(at(pos))) {
      buffer.push_back(at(pos++));
    }
    Tok t;
    if ((buffer == "in" || buffer == "notin") && symbol_token(buffer, t)) {
      items.push_back({t, buffer});
    } else {
      items.push_back({Tok::kIdentifier, buffer});
    }
  }
}

class Parser {
 public:
  explicit Parser(std::string_view text) : items_(lex(text)) {}

  Status parse(std::vector<Requirement>& out) {
    while (true) {
      auto [tok, lit] = lookahead(true);
      if (tok == Tok::kIdentifier || tok == Tok::kDoesNotExist) {
        Requirement r;
        if (Status s = parse_requirement(r); !s.is_ok()) {
          return invalid("unable to parse requirement: " + s.message());
        }
        out.push_back(std::move(r));
        auto [t, l] = consume(true);
        if (t == Tok::kEnd) return Status::ok();
        if (t == Tok::kComma) {
          auto [t2, l2] = lookahead(true);
          if (t2 != Tok::kIdentifier && t2 != Tok::kDoesNotExist) {
            return invalid("found '" + l2 + "', expected: identifier after ','");
          }
        } else {
          return invalid("found '" + l + "', expected: ',' or 'end of string'");
        }
      } else if (tok == Tok::kEnd) {
        return Status::ok();
      } else {
        return invalid("found '" + lit + "', expected: !, identifier, or 'end of string'");
      }
    }
  }

 private:
  std::pair<Tok, std::string> at(size_t i, bool values) const {
    const Item& item = i < items_.size() ? items_[i] : items_.back();
    Tok t = item.tok;
    if (values && (t == Tok::kIn || t == Tok::kNotIn)) t = Tok::kIdentifier;
    return {t, item.lit};
  }
  std::pair<Tok, std::string> lookahead(bool values) const { return at(pos_, values); }
  std::pair<Tok, std::string> consume(bool values) { return at(pos_++, values); }

  Status parse_requirement(Requirement& r) {
    // Key, and the operator when it is implied (exists / does not exist).
    bool not_exists = false;
    auto [tok, lit] = consume(true);
    if (tok == Tok::kDoesNotExist) {
      not_exists = true;
      std::tie(tok, lit) = consume(true);
    }
    if (tok != Tok::kIdentifier) return invalid("found '" + lit + "', expected: identifier");
    // Upstream validates the key here with a nil field path, which prints as "<nil>".
    if (std::string e = key_error("<nil>", lit); !e.empty()) return invalid(e);
    r.key = lit;
    auto [next, unused] = lookahead(true);
    if (not_exists || next == Tok::kEnd || next == Tok::kComma) {
      r.op = not_exists ? SelectorOp::kDoesNotExist : SelectorOp::kExists;
      r.values.clear();
      std::string e = check_requirement(r.key, r.op, &r.values);
      return e.empty() ? Status::ok() : invalid(e);
    }

    auto [op_tok, op_lit] = consume(false);
    switch (op_tok) {
      case Tok::kIn:
        r.op = SelectorOp::kIn;
        break;
      case Tok::kNotIn:
        r.op = SelectorOp::kNotIn;
        break;
      case Tok::kEquals:
      case Tok::kDoubleEquals:
        r.op = SelectorOp::kEquals;
        break;
      case Tok::kNotEquals:
        r.op = SelectorOp::kNotEquals;
        break;
      case Tok::kGreaterThan:
        r.op = SelectorOp::kGreaterThan;
        break;
      case Tok::kLessThan:
        r.op = SelectorOp::kLessThan;
        break;
      default:
        return invalid("found '" + op_lit + "', expected: in, notin, =, ==, !=, gt, lt");
    }
    std::set<std::string> values;
    Status s = (r.op == SelectorOp::kIn || r.op == SelectorOp::kNotIn) ? parse_values(values)
                                                                       : parse_exact_value(values);
    if (!s.is_ok()) return s;
    r.values.assign(values.begin(), values.end());
    std::string e = check_requirement(r.key, r.op, &r.values);
    return e.empty() ? Status::ok() : invalid(e);
  }

  Status parse_values(std::set<std::string>& out) {
    auto [tok, lit] = consume(true);
    if (tok != Tok::kOpenPar) return invalid("found '" + lit + "' expected: '('");
    std::tie(tok, lit) = lookahead(true);
    if (tok == Tok::kIdentifier || tok == Tok::kComma) {
      SKIFF_RETURN_IF_ERROR(parse_identifiers(out));
      if (consume(true).first != Tok::kClosedPar) {
        return invalid("found '" + lit + "', expected: ')'");
      }
      return Status::ok();
    }
    if (tok == Tok::kClosedPar) {
      consume(true);
      out.insert("");
      return Status::ok();
    }
    return invalid("found '" + lit + "', expected: ',', ')' or identifier");
  }

  Status parse_identifiers(std::set<std::string>& out) {
    while (true) {
      auto [tok, lit] = consume(true);
      if (tok == Tok::kIdentifier) {
        out.insert(lit);
        auto [t2, l2] = lookahead(true);
        if (t2 == Tok::kComma) continue;
        if (t2 == Tok::kClosedPar) return Status::ok();
        return invalid("found '" + l2 + "', expected: ',' or ')'");
      }
      if (tok == Tok::kComma) {
        if (out.empty()) out.insert("");
        auto [t2, unused] = lookahead(true);
        if (t2 == Tok::kClosedPar) {
          out.insert("");
          return Status::ok();
        }
        if (t2 == Tok::kComma) out.insert("");
        continue;
      }
      return invalid("found '" + lit + "', expected: ',', or identifier");
    }
  }

  Status parse_exact_value(std::set<std::string>& out) {
    auto [tok, unused] = lookahead(true);
    if (tok == Tok::kEnd || tok == Tok::kComma) {
      out.insert("");
      return Status::ok();
    }
    auto [t, lit] = consume(true);
    if (t == Tok::kIdentifier) {
      out.insert(lit);
      return Status::ok();
    }
    return invalid("found '" + lit + "', expected: identifier");
  }

  std::vector<Item> items_;
  size_t pos_ = 0;
};

bool has_value(const Requirement& r, const std::string& v) {
  return std::find(r.values.begin(), r.values.end(), v) != r.values.end();
}

bool requirement_matches(const Requirement& r, const nlohmann::json& labels) {
  const std::string* value = nullptr;
  if (labels.is_object()) {
    auto it = labels.find(r.key);
    if (it != labels.end() && it->is_string()) value = &it->get_ref<const std::string&>();
  }
  switch (r.op) {
    case SelectorOp::kIn:
    case SelectorOp::kEquals:
      return value != nullptr && has_value(r, *value);
    case SelectorOp::kNotIn:
    case SelectorOp::kNotEquals:
      return value == nullptr || !has_value(r, *value);
    case SelectorOp::kExists:
      return value != nullptr;
    case SelectorOp::kDoesNotExist:
      return value == nullptr;
    case SelectorOp::kGreaterThan:
    case SelectorOp::kLessThan: {
      if (value == nullptr || r.values.size() != 1) return false;
      int64_t have, want;
      if (!parse_int64(*value, have) || !parse_int64(r.values.front(), want)) return false;
      return r.op == SelectorOp::kGreaterThan ? have > want : have < want;
    }
  }
  return false;
}

std::string requirement_string(const Requirement& r) {
  std::string s;
  if (r.op == SelectorOp::kDoesNotExist) s += "!";
  s += r.key;
  switch (r.op) {
    case SelectorOp::kEquals:
      s += "=";
      break;
    case SelectorOp::kNotEquals:
      s += "!=";
      break;
    case SelectorOp::kIn:
      s += " in ";
      break;
    case SelectorOp::kNotIn:
      s += " notin ";
      break;
    case SelectorOp::kGreaterThan:
      s += ">";
      break;
    case SelectorOp::kLessThan:
      s += "<";
      break;
    case SelectorOp::kExists:
    case SelectorOp::kDoesNotExist:
      return s;
  }
  bool set = r.op == SelectorOp::kIn || r.op == SelectorOp::kNotIn;
  if (set) s += "(";
  s += join(r.values, ",");
  if (set) s += ")";
  return s;
}

void sort_by_key(std::vector<Requirement>& reqs) {
  std::stable_sort(reqs.begin(), reqs.end(),
                   [](const Requirement& a, const Requirement& b) { return a.key < b.key; });
}

}  // namespace

Result<LabelSelector> LabelSelector::parse(std::string_view text) {
  LabelSelector sel;
  Parser parser(text);
  SKIFF_RETURN_IF_ERROR(parser.parse(sel.requirements_));
  sort_by_key(sel.requirements_);
  return sel;
}

LabelSelector LabelSelector::nothing() {
  LabelSelector sel;
  sel.nothing_ = true;
  return sel;
}

Result<LabelSelector> LabelSelector::from_json(const nlohmann::json& j) {
  if (j.is_null()) return nothing();
  if (!j.is_object()) return invalid("a label selector must be a JSON object");
  LabelSelector sel;
  auto labels = j.find("matchLabels");
  if (labels != j.end() && !labels->is_null()) {
    if (!labels->is_object()) return invalid("matchLabels must be a map of strings");
    for (auto it = labels->begin(); it != labels->end(); ++it) {
      if (!it->is_string()) return invalid("matchLabels must be a map of strings");
      Requirement r{it.key(), SelectorOp::kEquals, {it->get<std::string>()}};
      if (std::string e = check_requirement(r.key, r.op, &r.values); !e.empty()) {
        return invalid(e);
      }
      sel.requirements_.push_back(std::move(r));
    }
  }
  auto exprs = j.find("matchExpressions");
  if (exprs != j.end() && !exprs->is_null()) {
    if (!exprs->is_array()) return invalid("matchExpressions must be a list");
    for (const nlohmann::json& e : *exprs) {
      if (!e.is_object()) return invalid("matchExpressions items must be objects");
      Requirement r;
      auto key = e.find("key");
      if (key != e.end() && key->is_string()) r.key = key->get<std::string>();
      std::string op;
      auto opj = e.find("operator");
      if (opj != e.end() && opj->is_string()) op = opj->get<std::string>();
      if (op == "In")
        r.op = SelectorOp::kIn;
      else if (op == "NotIn")
        r.op = SelectorOp::kNotIn;
      else if (op == "Exists")
        r.op = SelectorOp::kExists;
      else if (op == "DoesNotExist")
        r.op = SelectorOp::kDoesNotExist;
      else
        return invalid(go_quote(op) + " is not a valid label selector operator");
      bool have_values = false;
      auto values = e.find("values");
      if (values != e.end() && !values->is_null()) {
        if (!values->is_array()) return invalid("matchExpressions values must be a list");
        have_values = true;
        for (const nlohmann::json& v : *values) {
          if (!v.is_string()) return invalid("matchExpressions values must be strings");
          r.values.push_back(v.get<std::string>());
        }
      }
      if (std::string err = check_requirement(r.key, r.op, have_values ? &r.values : nullptr);
          !err.empty()) {
        return invalid(err);
      }
      sort_unique(r.values);
      sel.requirements_.push_back(std::move(r));
    }
  }
  sort_by_key(sel.requirements_);
  return sel;
}

bool LabelSelector::matches(const nlohmann::json& labels) const {
  if (nothing_) return false;
  for (const Requirement& r : requirements_) {
    if (!requirement_matches(r, labels)) return false;
  }
  return true;
}

std::string LabelSelector::to_string() const {
  std::string out;
  for (size_t i = 0; i < requirements_.size(); ++i) {
    if (i > 0) out += ",";
    out += requirement_string(requirements_[i]);
  }
  return out;
}

namespace {

std::string escape_field_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == ',' || c == '=') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

Result<std::string> unescape_field_value(std::string_view s) {
  std::string out;
  bool in_slash = false;
  for (char c : s) {
    if (in_slash) {
      if (c == '\\' || c == ',' || c == '=') {
        out.push_back(c);
      } else {
        return invalid(std::string("invalid field selector: invalid escape sequence: \\") + c);
      }
      in_slash = false;
      continue;
    }
    if (c == '\\') {
      in_slash = true;
    } else if (c == ',' || c == '=') {
      // Upstream prints the rune with %v: its code point.
      return invalid("invalid field selector: unescaped character in value: " +
                     std::to_string(static_cast<int>(c)));
    } else {
      out.push_back(c);
    }
  }
  if (in_slash) return invalid("invalid field selector: invalid escape sequence: \\");
  return out;
}

}  // namespace

Result<FieldSelector> FieldSelector::parse(std::string_view text) {
  FieldSelector sel;
  if (text.empty()) return sel;
  std::vector<std::string> terms;
  size_t start = 0;
  bool in_slash = false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (in_slash) {
      in_slash = false;
    } else if (text[i] == '\\') {
      in_slash = true;
    } else if (text[i] == ',') {
      terms.emplace_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  terms.emplace_back(text.substr(start));
  std::sort(terms.begin(), terms.end());
  for (const std::string& term : terms) {
    if (term.empty()) continue;
    size_t at = std::string::npos;
    std::string_view op;
    for (size_t i = 0; i < term.size() && at == std::string::npos; ++i) {
      for (std::string_view candidate : {"!=", "==", "="}) {
        if (term.compare(i, candidate.size(), candidate) == 0) {
          at = i;
          op = candidate;
          break;
        }
      }
    }
    if (at == std::string::npos) {
      return invalid("invalid selector: '" + std::string(text) + "'; can't understand '" + term +
                     "'");
    }
    SKIFF_ASSIGN_OR_RETURN(std::string value,
                           unescape_field_value(std::string_view(term).substr(at + op.size())));
    Requirement r;
    r.key = term.substr(0, at);
    r.op = op == "!=" ? SelectorOp::kNotEquals : SelectorOp::kEquals;
    r.values.push_back(std::move(value));
    sel.requirements_.push_back(std::move(r));
  }
  return sel;
}

std::string FieldSelector::to_string() const {
  std::string out;
  for (size_t i = 0; i < requirements_.size(); ++i) {
    if (i > 0) out += ",";
    const Requirement& r = requirements_[i];
    out += r.key + (r.op == SelectorOp::kNotEquals ? "!=" : "=") +
           escape_field_value(r.values.front());
  }
  return out;
}

}  // namespace skiff::api
