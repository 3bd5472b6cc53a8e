#include "api/validation.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace skiff::api {
namespace {

using nlohmann::json;

const std::string kSubdomainMsg =
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const std::string kLabelMsg =
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const std::string kDns1035Msg =
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const std::string kKeyNameMsg =
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const std::string kValueMsg =
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

TEST(ValidationTest, Dns1123Subdomain) {
  for (const char* ok :
       {"a", "ab", "a-b", "a.b", "example.com", "1.2.3.4", "0", "a--b", "a.b-c.d"}) {
    EXPECT_EQ(check_dns1123_subdomain(ok), "") << ok;
  }
  EXPECT_EQ(check_dns1123_subdomain(std::string(253, 'a')), "");
  for (const char* bad : {"", "-a", "a-", ".a", "a.", "a..b", "A", "a_b", "a b", "a.-b", "ä"}) {
    EXPECT_EQ(check_dns1123_subdomain(bad), kSubdomainMsg) << bad;
  }
  EXPECT_EQ(check_dns1123_subdomain(std::string(254, 'a')), "must be no more than 253 characters");
  EXPECT_EQ(check_dns1123_subdomain(std::string(254, 'A')),
            "must be no more than 253 characters; " + kSubdomainMsg);
}

TEST(ValidationTest, Dns1123Label) {
  for (const char* ok : {"a", "a-b", "0", "abc123", "1-a"}) EXPECT_EQ(check_dns1123_label(ok), "");
  EXPECT_EQ(check_dns1123_label(std::string(63, 'a')), "");
  EXPECT_EQ(check_dns1123_label(std::string(64, 'a')), "must be no more than 63 characters");
  EXPECT_EQ(check_dns1123_label("a.b"), "must not contain dots");
  for (const char* bad : {"", "-a", "a-", "A", "a_b", "a..b"}) {
    EXPECT_EQ(check_dns1123_label(bad), kLabelMsg) << bad;
  }
}

TEST(ValidationTest, Dns1035Label) {
  EXPECT_EQ(check_dns1035_label("my-svc"), "");
  EXPECT_EQ(check_dns1035_label("a1"), "");
  for (const char* bad : {"", "1a", "-a", "a-", "a.b", "A"}) {
    EXPECT_EQ(check_dns1035_label(bad), kDns1035Msg) << bad;
  }
  EXPECT_EQ(check_dns1035_label(std::string(64, 'a')), "must be no more than 63 characters");
}

TEST(ValidationTest, QualifiedNames) {
  for (const char* ok : {"a", "A", "a.b", "a_b", "a-b", "MyName", "example.com/MyName",
                         "app.kubernetes.io/name", "kubernetes.io/os", "1"}) {
    EXPECT_EQ(check_qualified_name(ok), "") << ok;
  }
  EXPECT_EQ(check_qualified_name(""), "name part must be non-empty; " + kKeyNameMsg);
  EXPECT_EQ(check_qualified_name("-a"), kKeyNameMsg);
  EXPECT_EQ(check_qualified_name("a b"), kKeyNameMsg);
  EXPECT_EQ(check_qualified_name(std::string(64, 'a')), "name part must be no more than 63 bytes");
  EXPECT_EQ(check_qualified_name("/a"), "prefix part must be non-empty");
  EXPECT_EQ(check_qualified_name("Example.com/a"), "prefix part " + kSubdomainMsg);
  EXPECT_EQ(check_qualified_name(std::string(254, 'a') + "/a"),
            "prefix part must be no more than 253 bytes");
  EXPECT_EQ(check_qualified_name("a/"), "name part must be non-empty; " + kKeyNameMsg);
  EXPECT_EQ(check_qualified_name("a/b/c"),
            "a valid label key must consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  "
            "or '123-abc', regex used for validation is "
            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix "
            "and '/' (e.g. 'example.com/MyName')");
}

TEST(ValidationTest, LabelValues) {
  for (const char* ok : {"", "a", "A_b.c-d", "12345", "my_value"}) {
    EXPECT_EQ(check_label_value(ok), "") << ok;
  }
  EXPECT_EQ(check_label_value(std::string(63, 'v')), "");
  for (const char* bad : {"-a", "a-", "_a", "a b", "a/b", "ä"}) {
    EXPECT_EQ(check_label_value(bad), kValueMsg) << bad;
  }
  EXPECT_EQ(check_label_value(std::string(64, 'v')), "must be no more than 63 bytes");
}

TEST(ValidationTest, CIdentifierAndEnvVarNames) {
  EXPECT_EQ(check_c_identifier("MY_VAR"), "");
  EXPECT_EQ(check_c_identifier("_x1"), "");
  EXPECT_EQ(check_c_identifier("1x"),
            "a valid C identifier must start with alphabetic character or '_', followed by a "
            "string of alphanumeric characters or '_' (e.g. 'my_name',  or 'MY_NAME',  or "
            "'MyName', regex used for validation is '[A-Za-z_][A-Za-z0-9_]*')");
  EXPECT_NE(check_c_identifier(""), "");
  EXPECT_NE(check_c_identifier("a-b"), "");
  EXPECT_EQ(check_env_var_name("my.env-name"), "");
  EXPECT_EQ(check_env_var_name("1ABC"), "");
  EXPECT_EQ(check_env_var_name("a b"), "");
  EXPECT_EQ(check_env_var_name(""), "environment variable name must be non-empty");
  EXPECT_EQ(check_env_var_name("A=B"),
            "a valid environment variable name must consist only of printable ASCII characters "
            "other than '='");
  EXPECT_NE(check_env_var_name("a\nb"), "");
}

TEST(ValidationTest, ObjectNames) {
  EXPECT_EQ(check_object_name("web-", NameRule::kDns1123Subdomain, true), "");
  EXPECT_EQ(check_object_name("web-", NameRule::kDns1123Subdomain, false), kSubdomainMsg);
  EXPECT_EQ(check_object_name("a", NameRule::kDns1123Label, false), "");
  EXPECT_EQ(check_object_name("..", NameRule::kPathSegment, false), "may not be '..'");
  EXPECT_EQ(check_object_name(".", NameRule::kPathSegment, false), "may not be '.'");
  EXPECT_EQ(check_object_name("a/b%", NameRule::kPathSegment, false),
            "may not contain '/'; may not contain '%'");
  EXPECT_EQ(check_object_name("system:node:x", NameRule::kPathSegment, false), "");
  EXPECT_EQ(check_object_name("1abc", NameRule::kDns1035Label, false), kDns1035Msg);
}

TEST(ValidationTest, Labels) {
  FieldErrors errors;
  validate_labels(json{{"app", "web"}, {"example.com/tier", ""}}, "metadata.labels", errors);
  EXPECT_TRUE(errors.empty());
  validate_labels(json(), "metadata.labels", errors);
  EXPECT_TRUE(errors.empty());

  validate_labels(json{{"-bad", "ok"}, {"good", "-bad"}}, "metadata.labels", errors);
  ASSERT_EQ(errors.causes().size(), 2u);
  EXPECT_EQ(errors.causes()[0].field, "metadata.labels");
  EXPECT_EQ(errors.causes()[0].reason, "FieldValueInvalid");
  EXPECT_EQ(errors.causes()[0].message, "Invalid value: \"-bad\": " + kKeyNameMsg);
  EXPECT_EQ(errors.causes()[1].message, "Invalid value: \"-bad\": " + kValueMsg);

  FieldErrors types;
  validate_labels(json{{"a", 1}}, "metadata.labels", types);
  EXPECT_EQ(types.causes().size(), 1u);
  FieldErrors list;
  validate_labels(json::array(), "metadata.labels", list);
  EXPECT_EQ(list.causes().size(), 1u);
}

TEST(ValidationTest, Annotations) {
  FieldErrors errors;
  // Keys are checked lower-cased, so upper-case prefixes pass.
  validate_annotations(json{{"Example.COM/Key", "v"}, {"kubectl.kubernetes.io/x", "{}"}},
                       "metadata.annotations", errors);
  EXPECT_TRUE(errors.empty());
  validate_annotations(json{{"a b", "v"}}, "metadata.annotations", errors);
  ASSERT_EQ(errors.causes().size(), 1u);
  EXPECT_EQ(errors.causes()[0].message, "Invalid value: \"a b\": " + kKeyNameMsg);

  FieldErrors size;
  json big = {{"a", std::string(256 * 1024 - 1, 'x')}};
  validate_annotations(big, "metadata.annotations", size);
  EXPECT_TRUE(size.empty());
  big["b"] = "";
  big["a"] = std::string(256 * 1024, 'x');  // 1 + 262144 + 1 bytes
  validate_annotations(big, "metadata.annotations", size);
  ASSERT_EQ(size.causes().size(), 1u);
  EXPECT_EQ(size.causes()[0].reason, "FieldValueTooLong");
  EXPECT_EQ(size.causes()[0].field, "metadata.annotations");
  EXPECT_EQ(size.causes()[0].message, "Too long: may not be more than 262144 bytes");
}

std::vector<std::string> meta_errors(const json& meta, bool namespaced,
                                     NameRule rule = NameRule::kDns1123Subdomain) {
  FieldErrors errors;
  validate_object_meta(meta, namespaced, rule, errors);
  std::vector<std::string> out;
  for (const StatusCause& c : errors.causes()) out.push_back(c.field + ": " + c.message);
  return out;
}

TEST(ValidationTest, ObjectMeta) {
  EXPECT_TRUE(meta_errors(json{{"name", "web"}, {"namespace", "default"}}, true).empty());
  EXPECT_TRUE(meta_errors(json{{"name", "node-1"}}, false).empty());
  EXPECT_TRUE(meta_errors(json{{"generateName", "web-"}, {"namespace", "ns"}}, true).empty());

  EXPECT_EQ(meta_errors(json::object(), false),
            (std::vector<std::string>{
                "metadata.name: Required value: name or generateName is required"}));
  EXPECT_EQ(meta_errors(json{{"name", "Web"}, {"namespace", "default"}}, true),
            (std::vector<std::string>{"metadata.name: Invalid value: \"Web\": " + kSubdomainMsg}));
  EXPECT_EQ(
      meta_errors(json{{"name", "a.b"}, {"namespace", "default"}}, true, NameRule::kDns1123Label),
      (std::vector<std::string>{"metadata.name: Invalid value: \"a.b\": must not contain dots"}));
  EXPECT_EQ(meta_errors(json{{"generateName", "Web-"}, {"namespace", "x"}}, true),
            (std::vector<std::string>{"metadata.generateName: Invalid value: \"Web-\": " +
                                      kSubdomainMsg}));
  EXPECT_EQ(meta_errors(json{{"name", "a"}}, true),
            (std::vector<std::string>{"metadata.namespace: Required value"}));
  EXPECT_EQ(meta_errors(json{{"name", "a"}, {"namespace", "Bad"}}, true),
            (std::vector<std::string>{"metadata.namespace: Invalid value: \"Bad\": " + kLabelMsg}));
  EXPECT_EQ(meta_errors(json{{"name", "a"}, {"namespace", "x"}}, false),
            (std::vector<std::string>{"metadata.namespace: Forbidden: not allowed on this type"}));
  EXPECT_EQ(meta_errors(json{{"name", "a"}, {"generation", -1}}, false),
            (std::vector<std::string>{
                "metadata.generation: Invalid value: -1: must be greater than or equal to 0"}));
  EXPECT_EQ(meta_errors(json{{"name", "a"}, {"labels", {{"k", "-v"}}}}, false),
            (std::vector<std::string>{"metadata.labels: Invalid value: \"-v\": " + kValueMsg}));
  EXPECT_EQ(meta_errors(json{{"name", "a"}, {"finalizers", {"ok/fin", "bad fin"}}}, false),
            (std::vector<std::string>{"metadata.finalizers: Invalid value: \"bad fin\": " +
                                      kKeyNameMsg}));
  EXPECT_EQ(
      meta_errors(json{{"name", "a"}, {"finalizers", {"orphan", "foregroundDeletion"}}}, false),
      (std::vector<std::string>{
          "metadata.finalizers: Invalid value: [\"orphan\",\"foregroundDeletion\"]: "
          "finalizer orphan and foregroundDeletion cannot be both set"}));
}

TEST(ValidationTest, OwnerReferences) {
  json good = {{"apiVersion", "apps/v1"},
               {"kind", "ReplicaSet"},
               {"name", "rs"},
               {"uid", "u1"},
               {"controller", true}};
  EXPECT_TRUE(meta_errors(json{{"name", "a"}, {"ownerReferences", {good}}}, false).empty());

  EXPECT_EQ(meta_errors(json{{"name", "a"}, {"ownerReferences", {json::object()}}}, false),
            (std::vector<std::string>{
                "metadata.ownerReferences[0].apiVersion: Required value: must not be empty",
                "metadata.ownerReferences[0].kind: Required value: must not be empty",
                "metadata.ownerReferences[0].name: Required value: must not be empty",
                "metadata.ownerReferences[0].uid: Required value: must not be empty"}));
  json bad_version = good;
  bad_version["apiVersion"] = "apps/";
  EXPECT_EQ(meta_errors(json{{"name", "a"}, {"ownerReferences", {bad_version}}}, false),
            (std::vector<std::string>{"metadata.ownerReferences[0].apiVersion: Invalid value: "
                                      "\"apps/\": must be <group>/<version> or <version>"}));
  json event = {{"apiVersion", "v1"}, {"kind", "Event"}, {"name", "e"}, {"uid", "u"}};
  std::vector<std::string> ev =
      meta_errors(json{{"name", "a"}, {"ownerReferences", {event}}}, false);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_NE(ev[0].find("/v1, Kind=Event is disallowed from being an owner"), std::string::npos);

  json second = good;
  second["name"] = "rs2";
  std::vector<std::string> two =
      meta_errors(json{{"name", "a"}, {"ownerReferences", {good, second}}}, false);
  ASSERT_EQ(two.size(), 1u);
  EXPECT_NE(two[0].find("Only one reference can have Controller set to true. Found \"true\" in "
                        "references for ReplicaSet/rs and ReplicaSet/rs2"),
            std::string::npos);
}

}  // namespace
}  // namespace skiff::api
