#include "api/selector.h"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

namespace skiff::api {
namespace {

using nlohmann::json;

LabelSelector parse(std::string_view s) {
  Result<LabelSelector> r = LabelSelector::parse(s);
  EXPECT_TRUE(r.is_ok()) << s << ": " << r.status().to_string();
  return r.is_ok() ? r.value() : LabelSelector();
}

std::string parse_error(std::string_view s) {
  Result<LabelSelector> r = LabelSelector::parse(s);
  EXPECT_FALSE(r.is_ok()) << s << " parsed as " << (r.is_ok() ? r->to_string() : "");
  if (r.is_ok()) return "";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  return r.status().message();
}

TEST(LabelSelectorTest, ParsesAndPrintsCanonically) {
  struct Case {
    const char* in;
    const char* out;
  } cases[] = {
      {"", ""},
      {"x=a", "x=a"},
      {"x==a", "x=a"},
      {"x!=a", "x!=a"},
      {"x", "x"},
      {"!x", "!x"},
      {" x ", "x"},
      {"x=a,y!=b", "x=a,y!=b"},
      {"y!=b,x=a", "x=a,y!=b"},  // sorted by key
      {"x in (b,a)", "x in (a,b)"},
      {"x notin (a)", "x notin (a)"},
      {"x in (a,a)", "x in (a)"},
      {"x in ()", "x in ()"},
      {"x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"},
      {"x in (,a)", "x in (,a)"},
      {"x=", "x="},
      {"x=,y=a", "x=,y=a"},
      {"x>1", "x>1"},
      {"x<5", "x<5"},
      {"example.com/app=web", "example.com/app=web"},
      {"in in (in)", "in in (in)"},  // keywords are identifiers where a key or value is due
      {"x=in", "x=in"},
      {"x\tin\t(a)", "x in (a)"},
      {"app.kubernetes.io/name in (a,b), tier!=db", "app.kubernetes.io/name in (a,b),tier!=db"},
  };
  for (const Case& c : cases) EXPECT_EQ(parse(c.in).to_string(), c.out) << c.in;
}

TEST(LabelSelectorTest, Requirements) {
  LabelSelector s = parse("b in (z,y), a, !c, d=v");
  ASSERT_EQ(s.requirements().size(), 4u);
  EXPECT_EQ(s.requirements()[0].key, "a");
  EXPECT_EQ(s.requirements()[0].op, SelectorOp::kExists);
  EXPECT_EQ(s.requirements()[1].op, SelectorOp::kIn);
  EXPECT_EQ(s.requirements()[1].values, (std::vector<std::string>{"y", "z"}));
  EXPECT_EQ(s.requirements()[2].op, SelectorOp::kDoesNotExist);
  EXPECT_EQ(s.requirements()[3].op, SelectorOp::kEquals);
  EXPECT_EQ(s.requirements()[3].values, (std::vector<std::string>{"v"}));
  EXPECT_FALSE(s.empty());
  EXPECT_TRUE(parse("").empty());
}

TEST(LabelSelectorTest, Matches) {
  json labels = {{"app", "web"}, {"tier", "frontend"}, {"n", "10"}};
  struct Case {
    const char* sel;
    bool want;
  } cases[] = {
      {"", true},
      {"app=web", true},
      {"app==web", true},
      {"app=db", false},
      {"app!=db", true},
      {"app!=web", false},
      {"missing!=x", true},
      {"app in (db,web)", true},
      {"app in (db)", false},
      {"missing in (x)", false},
      {"app notin (db)", true},
      {"app notin (web)", false},
      {"missing notin (x)", true},
      {"app", true},
      {"missing", false},
      {"!missing", true},
      {"!app", false},
      {"app=web,tier=frontend", true},
      {"app=web,tier=backend", false},
      {"n>9", true},
      {"n>10", false},
      {"n<11", true},
      {"app>1", false},  // not an integer
      {"missing>1", false},
      {"app=", false},
      {"missing=", false},
  };
  for (const Case& c : cases) EXPECT_EQ(parse(c.sel).matches(labels), c.want) << c.sel;
  EXPECT_TRUE(parse("!a").matches(json()));
  EXPECT_FALSE(parse("a").matches(json()));
  EXPECT_TRUE(LabelSelector().matches(json::object()));
}

TEST(LabelSelectorTest, SyntaxErrors) {
  EXPECT_EQ(parse_error("x=a,"), "found '', expected: identifier after ','");
  EXPECT_EQ(parse_error("x=a,,y"), "found ',', expected: identifier after ','");
  EXPECT_EQ(parse_error("x y"),
            "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt");
  EXPECT_EQ(parse_error(",x"), "found ',', expected: !, identifier, or 'end of string'");
  EXPECT_EQ(parse_error("=a"), "found '=', expected: !, identifier, or 'end of string'");
  EXPECT_EQ(parse_error("x in a"), "unable to parse requirement: found 'a' expected: '('");
  EXPECT_EQ(parse_error("x in (a"), "unable to parse requirement: found '', expected: ',' or ')'");
  EXPECT_EQ(parse_error("x in (a b)"),
            "unable to parse requirement: found 'b', expected: ',' or ')'");
  EXPECT_EQ(parse_error("x in (=)"),
            "unable to parse requirement: found '=', expected: ',', ')' or identifier");
  EXPECT_EQ(parse_error("x in (a,=)"),
            "unable to parse requirement: found '=', expected: ',', or identifier");
  EXPECT_EQ(parse_error("x=(a)"), "unable to parse requirement: found '(', expected: identifier");
  EXPECT_EQ(parse_error("x (a)"),
            "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt");
  EXPECT_EQ(parse_error("!"), "unable to parse requirement: found '', expected: identifier");
  EXPECT_EQ(parse_error("!x=a"), "found '=', expected: ',' or 'end of string'");
  EXPECT_EQ(parse_error("x=a=b"), "found '=', expected: ',' or 'end of string'");
}

TEST(LabelSelectorTest, InvalidKeysAndValues) {
  std::string key_msg = parse_error("a@b=c");
  EXPECT_EQ(key_msg,
            "unable to parse requirement: <nil>: Invalid value: \"a@b\": name part must consist "
            "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')");
  std::string long_key(64, 'a');
  EXPECT_NE(parse_error(long_key).find("name part must be no more than 63 bytes"),
            std::string::npos);
  EXPECT_NE(parse_error("a/b/c").find("a valid label key must consist of"), std::string::npos);
  EXPECT_NE(parse_error("/b").find("prefix part must be non-empty"), std::string::npos);
  EXPECT_NE(parse_error("Example.com/b").find("prefix part a lowercase RFC 1123 subdomain"),
            std::string::npos);

  EXPECT_EQ(parse_error("x=a b"), "found 'b', expected: ',' or 'end of string'");
  std::string value_msg = parse_error("x=-a");
  EXPECT_EQ(value_msg,
            "unable to parse requirement: values[0][x]: Invalid value: \"-a\": a valid label "
            "must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  "
            "or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')");
  std::string long_value(64, 'v');
  EXPECT_EQ(parse_error("x=" + long_value),
            "unable to parse requirement: values[0][x]: Invalid value: \"" + long_value +
                "\": must be no more than 63 bytes");
  // Two bad values: aggregated in brackets.
  std::string two = parse_error("x in (-a,-b)");
  EXPECT_EQ(two.rfind("unable to parse requirement: [values[0][x]: Invalid value: \"-a\"", 0), 0u)
      << two;
  EXPECT_NE(two.find(", values[1][x]: Invalid value: \"-b\""), std::string::npos) << two;
  EXPECT_EQ(two.back(), ']');

  // Gt/Lt values are label values too: "-5" is rejected as upstream does.
  EXPECT_EQ(parse_error("x<-5").rfind(
                "unable to parse requirement: values[0][x]: Invalid value: \"-5\"", 0),
            0u);
  EXPECT_EQ(parse_error("x>a"),
            "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' "
            "operators, the value must be an integer");
}

TEST(LabelSelectorTest, FromJson) {
  Result<LabelSelector> r = LabelSelector::from_json(json::parse(R"({
    "matchLabels": {"app": "web"},
    "matchExpressions": [
      {"key": "tier", "operator": "In", "values": ["b", "a"]},
      {"key": "env", "operator": "NotIn", "values": ["prod"]},
      {"key": "canary", "operator": "DoesNotExist"},
      {"key": "app", "operator": "Exists"}
    ]})"));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->to_string(), "app=web,app,!canary,env notin (prod),tier in (a,b)");
  EXPECT_TRUE(r->matches(json{{"app", "web"}, {"tier", "a"}}));
  EXPECT_FALSE(r->matches(json{{"app", "web"}, {"tier", "c"}}));
  EXPECT_FALSE(r->matches(json{{"app", "web"}, {"tier", "a"}, {"canary", "1"}}));
  EXPECT_FALSE(r->matches(json{{"app", "web"}, {"tier", "a"}, {"env", "prod"}}));

  // Empty selector: everything. Null: nothing.
  Result<LabelSelector> empty = LabelSelector::from_json(json::object());
  ASSERT_TRUE(empty.is_ok());
  EXPECT_TRUE(empty->empty());
  EXPECT_TRUE(empty->matches(json{{"a", "b"}}));
  Result<LabelSelector> none = LabelSelector::from_json(json());
  ASSERT_TRUE(none.is_ok());
  EXPECT_TRUE(none->matches_nothing());
  EXPECT_FALSE(none->empty());
  EXPECT_FALSE(none->matches(json{{"a", "b"}}));
  EXPECT_FALSE(none->matches(json()));
  EXPECT_TRUE(LabelSelector::nothing().matches_nothing());
}

TEST(LabelSelectorTest, FromJsonErrors) {
  auto err = [](const char* text) {
    Result<LabelSelector> r = LabelSelector::from_json(json::parse(text));
    EXPECT_FALSE(r.is_ok()) << text;
    return r.is_ok() ? std::string() : r.status().message();
  };
  EXPECT_EQ(err(R"({"matchExpressions":[{"key":"a","operator":"Gt","values":["1"]}]})"),
            "\"Gt\" is not a valid label selector operator");
  EXPECT_EQ(err(R"({"matchExpressions":[{"key":"a","operator":"In"}]})"),
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty");
  EXPECT_EQ(err(R"({"matchExpressions":[{"key":"a","operator":"In","values":[]}]})"),
            "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty");
  EXPECT_EQ(err(R"({"matchExpressions":[{"key":"a","operator":"Exists","values":["x"]}]})"),
            "values: Invalid value: [\"x\"]: values set must be empty for exists and does not "
            "exist");
  EXPECT_EQ(err(R"({"matchLabels":{"a":"-x"}})").rfind("values[0][a]: Invalid value: \"-x\": ", 0),
            0u);
  std::string key = err(R"({"matchLabels":{"a b":"x"}})");
  EXPECT_EQ(key.rfind("key: Invalid value: \"a b\": name part must consist of", 0), 0u) << key;
  // Key and value both bad: aggregated.
  std::string both = err(R"({"matchExpressions":[{"key":"-k","operator":"In","values":["-v"]}]})");
  EXPECT_EQ(both.front(), '[') << both;
  EXPECT_NE(both.find("key: Invalid value: \"-k\""), std::string::npos);
  EXPECT_NE(both.find("values[0][-k]: Invalid value: \"-v\""), std::string::npos);
  EXPECT_FALSE(LabelSelector::from_json(json::parse("[]")).is_ok());
  EXPECT_FALSE(LabelSelector::from_json(json::parse(R"({"matchLabels":{"a":1}})")).is_ok());
  EXPECT_FALSE(LabelSelector::from_json(json::parse(R"({"matchExpressions":{}})")).is_ok());
}

std::map<std::string, std::string> pod_fields() {
  return {{"metadata.name", "web-1"},
          {"metadata.namespace", "default"},
          {"spec.nodeName", "node-a"},
          {"status.phase", "Running"}};
}

bool field_matches(std::string_view sel) {
  Result<FieldSelector> r = FieldSelector::parse(sel);
  EXPECT_TRUE(r.is_ok()) << sel << ": " << r.status().to_string();
  auto fields = pod_fields();
  return r->matches([&](const std::string& k) {
    auto it = fields.find(k);
    return it == fields.end() ? std::string() : it->second;
  });
}

TEST(FieldSelectorTest, ParseAndMatch) {
  EXPECT_TRUE(field_matches(""));
  EXPECT_TRUE(field_matches("metadata.name=web-1"));
  EXPECT_TRUE(field_matches("metadata.name==web-1"));
  EXPECT_FALSE(field_matches("metadata.name=web-2"));
  EXPECT_TRUE(field_matches("metadata.name!=web-2"));
  EXPECT_TRUE(field_matches("spec.nodeName=node-a,status.phase!=Failed"));
  EXPECT_FALSE(field_matches("spec.nodeName=node-a,status.phase=Failed"));
  EXPECT_TRUE(field_matches("spec.unknown="));          // absent fields read as ""
  EXPECT_TRUE(field_matches("spec.nodeName=node-a,"));  // empty terms are skipped

  Result<FieldSelector> s =
      FieldSelector::parse("status.phase!=Failed,metadata.name=a\\,b\\=c\\\\");
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  ASSERT_EQ(s->requirements().size(), 2u);
  EXPECT_EQ(s->requirements()[0].key, "metadata.name");  // terms sorted
  EXPECT_EQ(s->requirements()[0].values.front(), "a,b=c\\");
  EXPECT_EQ(s->requirements()[1].op, SelectorOp::kNotEquals);
  EXPECT_EQ(s->to_string(), "metadata.name=a\\,b\\=c\\\\,status.phase!=Failed");
  EXPECT_TRUE(FieldSelector().empty());
}

TEST(FieldSelectorTest, Errors) {
  auto err = [](std::string_view text) {
    Result<FieldSelector> r = FieldSelector::parse(text);
    EXPECT_FALSE(r.is_ok()) << text;
    return r.is_ok() ? std::string() : r.status().message();
  };
  EXPECT_EQ(err("metadata.name"),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'");
  EXPECT_EQ(err("a=b,c"), "invalid selector: 'a=b,c'; can't understand 'c'");
  EXPECT_EQ(err("a=b\\x"), "invalid field selector: invalid escape sequence: \\x");
  EXPECT_EQ(err("a=b\\"), "invalid field selector: invalid escape sequence: \\");
  EXPECT_EQ(err("a=b=c"), "invalid field selector: unescaped character in value: 61");
}

}  // namespace
}  // namespace skiff::api
