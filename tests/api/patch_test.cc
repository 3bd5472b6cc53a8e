#include "api/patch.h"

#include <gtest/gtest.h>

namespace skiff::api {
namespace {

using nlohmann::json;

json apply(const char* doc, const char* patch) {
  Result<json> r = apply_json_patch(json::parse(doc), json::parse(patch));
  EXPECT_TRUE(r.is_ok()) << patch << ": " << r.status().to_string();
  return r.is_ok() ? r.value() : json();
}

std::string apply_error(const char* doc, const char* patch) {
  Result<json> r = apply_json_patch(json::parse(doc), json::parse(patch));
  EXPECT_FALSE(r.is_ok()) << patch << " gave " << (r.is_ok() ? r->dump() : "");
  if (r.is_ok()) return "";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  return r.status().message();
}

TEST(JsonPatchTest, Add) {
  EXPECT_EQ(apply(R"({"a":1})", R"([{"op":"add","path":"/b","value":2}])"),
            json::parse(R"({"a":1,"b":2})"));
  EXPECT_EQ(apply(R"({"a":1})", R"([{"op":"add","path":"/a","value":2}])"),
            json::parse(R"({"a":2})"));
  EXPECT_EQ(apply(R"({"l":[1,2]})", R"([{"op":"add","path":"/l/0","value":0}])"),
            json::parse(R"({"l":[0,1,2]})"));
  EXPECT_EQ(apply(R"({"l":[1,2]})", R"([{"op":"add","path":"/l/2","value":3}])"),
            json::parse(R"({"l":[1,2,3]})"));
  EXPECT_EQ(apply(R"({"l":[1,2]})", R"([{"op":"add","path":"/l/-","value":3}])"),
            json::parse(R"({"l":[1,2,3]})"));
  // Negative indices count from the end (the library's extension).
  EXPECT_EQ(apply(R"({"l":[1,2]})", R"([{"op":"add","path":"/l/-1","value":3}])"),
            json::parse(R"({"l":[1,2,3]})"));
  EXPECT_EQ(apply(R"({"l":[1,2]})", R"([{"op":"add","path":"/l/-3","value":0}])"),
            json::parse(R"({"l":[0,1,2]})"));
  // Pointer escaping.
  EXPECT_EQ(apply(R"({"metadata":{"labels":{}}})",
                  R"([{"op":"add","path":"/metadata/labels/app.kubernetes.io~1name","value":"x"},
                      {"op":"add","path":"/metadata/labels/a~0b","value":"y"},
                      {"op":"add","path":"/metadata/labels/c~01","value":"z"}])"),
            json::parse(R"({"metadata":{"labels":{"app.kubernetes.io/name":"x","a~b":"y",
                           "c~1":"z"}}})"));
  // No value: null.
  EXPECT_EQ(apply(R"({})", R"([{"op":"add","path":"/a"}])"), json::parse(R"({"a":null})"));
  // Nested objects and arrays of objects.
  EXPECT_EQ(apply(R"({"spec":{"containers":[{"name":"a"}]}})",
                  R"([{"op":"add","path":"/spec/containers/0/image","value":"nginx"}])"),
            json::parse(R"({"spec":{"containers":[{"name":"a","image":"nginx"}]}})"));
}

TEST(JsonPatchTest, RemoveReplaceMoveCopyTest) {
  EXPECT_EQ(apply(R"({"a":1,"b":2})", R"([{"op":"remove","path":"/a"}])"),
            json::parse(R"({"b":2})"));
  EXPECT_EQ(apply(R"({"l":[1,2,3]})", R"([{"op":"remove","path":"/l/1"}])"),
            json::parse(R"({"l":[1,3]})"));
  EXPECT_EQ(apply(R"({"l":[1,2,3]})", R"([{"op":"remove","path":"/l/-1"}])"),
            json::parse(R"({"l":[1,2]})"));
  EXPECT_EQ(apply(R"({"a":1})", R"([{"op":"replace","path":"/a","value":{"x":1}}])"),
            json::parse(R"({"a":{"x":1}})"));
  EXPECT_EQ(apply(R"({"l":[1,2]})", R"([{"op":"replace","path":"/l/0","value":9}])"),
            json::parse(R"({"l":[9,2]})"));
  // The library lets "replace" create an absent object member.
  EXPECT_EQ(apply(R"({"a":1})", R"([{"op":"replace","path":"/b","value":2}])"),
            json::parse(R"({"a":1,"b":2})"));
  EXPECT_EQ(apply(R"({"a":1})", R"([{"op":"replace","path":"","value":{"b":2}}])"),
            json::parse(R"({"b":2})"));
  EXPECT_EQ(apply(R"({"a":{"b":1},"c":{}})", R"([{"op":"move","from":"/a/b","path":"/c/d"}])"),
            json::parse(R"({"a":{},"c":{"d":1}})"));
  EXPECT_EQ(apply(R"({"l":[1,2,3]})", R"([{"op":"move","from":"/l/0","path":"/l/-"}])"),
            json::parse(R"({"l":[2,3,1]})"));
  EXPECT_EQ(apply(R"({"a":{"b":[1]}})", R"([{"op":"copy","from":"/a","path":"/c"}])"),
            json::parse(R"({"a":{"b":[1]},"c":{"b":[1]}})"));
  EXPECT_EQ(apply(R"({"a":{"b":"x"},"l":[1,2.5,"s",true,null]})",
                  R"([{"op":"test","path":"/a","value":{"b":"x"}},
                      {"op":"test","path":"/l","value":[1,2.5,"s",true,null]},
                      {"op":"test","path":"/l/0","value":1},
                      {"op":"test","path":"/missing","value":null},
                      {"op":"test","path":"/missing"},
                      {"op":"test","path":"","value":{"a":{"b":"x"},"l":[1,2.5,"s",true,null]}}])"),
            json::parse(R"({"a":{"b":"x"},"l":[1,2.5,"s",true,null]})"));
  // Operations apply in order, each on the result of the previous one.
  EXPECT_EQ(apply(R"({"metadata":{"resourceVersion":"5"},"spec":{"replicas":1}})",
                  R"([{"op":"test","path":"/metadata/resourceVersion","value":"5"},
                      {"op":"replace","path":"/spec/replicas","value":3},
                      {"op":"test","path":"/spec/replicas","value":3}])"),
            json::parse(R"({"metadata":{"resourceVersion":"5"},"spec":{"replicas":3}})"));
  EXPECT_EQ(apply(R"({"a":1})", "[]"), json::parse(R"({"a":1})"));
}

TEST(JsonPatchTest, FailedTests) {
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"test","path":"/a","value":2}])"),
            "testing value /a failed: test failed");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"test","path":"/a","value":1.0}])"),
            "testing value /a failed: test failed");
  EXPECT_EQ(apply_error(R"({"a":"1"})", R"([{"op":"test","path":"/a","value":1}])"),
            "testing value /a failed: test failed");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"test","path":"/b","value":1}])"),
            "testing value /b failed: test failed");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"test","path":"/a"}])"),
            "testing value /a failed: test failed");
  EXPECT_EQ(apply_error(R"({"a":{"b":1}})", R"([{"op":"test","path":"/a","value":{"b":1,"c":2}}])"),
            "testing value /a failed: test failed");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"test","path":"","value":{"a":2}}])"),
            "testing value  failed: test failed");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"test","path":"/x/y","value":1}])"),
            "test operation does not apply: is missing path: /x/y: missing value");
  EXPECT_EQ(apply_error(R"({"l":[]})", R"([{"op":"test","path":"/l/3","value":1}])"),
            "error in test for path: '/l/3': Unable to access invalid index: 3: invalid index "
            "referenced");
  // A failed test leaves nothing applied: the input is untouched and no result is returned.
  json doc = json::parse(R"({"a":1})");
  Result<json> r = apply_json_patch(
      doc,
      json::parse(R"([{"op":"add","path":"/b","value":2},{"op":"test","path":"/a","value":0}])"));
  EXPECT_FALSE(r.is_ok());
  EXPECT_EQ(doc, json::parse(R"({"a":1})"));
}

TEST(JsonPatchTest, BadPathsAndOperations) {
  EXPECT_EQ(apply_error(R"({})", R"([{"op":"add","path":"/a/b","value":1}])"),
            "add operation does not apply: doc is missing path: \"/a/b\": missing value");
  EXPECT_EQ(apply_error(R"({"a":"s"})", R"([{"op":"add","path":"/a/b","value":1}])"),
            "add operation does not apply: doc is missing path: \"/a/b\": missing value");
  EXPECT_EQ(apply_error(R"({"a":null})", R"([{"op":"add","path":"/a/b","value":1}])"),
            "add operation does not apply: doc is missing path: \"/a/b\": missing value");
  EXPECT_EQ(apply_error(R"({})", R"([{"op":"add","path":"","value":1}])"),
            "add operation does not apply: doc is missing path: \"\": missing value");
  EXPECT_EQ(apply_error(R"({"l":[1]})", R"([{"op":"add","path":"/l/5","value":1}])"),
            "error in add for path: '/l/5': Unable to access invalid index: 5: invalid index "
            "referenced");
  EXPECT_EQ(apply_error(R"({"l":[1]})", R"([{"op":"add","path":"/l/-3","value":1}])"),
            "error in add for path: '/l/-3': Unable to access invalid index: -3: invalid index "
            "referenced");
  EXPECT_EQ(apply_error(R"({"l":[1]})", R"([{"op":"add","path":"/l/x","value":1}])"),
            "error in add for path: '/l/x': value was not a proper array index: 'x': "
            "strconv.Atoi: parsing \"x\": invalid syntax");
  EXPECT_EQ(apply_error(R"({"l":[1]})", R"([{"op":"add","path":"/l/x/y","value":1}])"),
            "add operation does not apply: doc is missing path: \"/l/x/y\": missing value");
  EXPECT_EQ(apply_error(R"({})", R"([{"op":"add","value":1}])"),
            "add operation failed to decode path: missing value");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"remove","path":"/b"}])"),
            "error in remove for path: '/b': Unable to remove nonexistent key: b: missing value");
  EXPECT_EQ(apply_error(R"({"l":[1]})", R"([{"op":"remove","path":"/l/1"}])"),
            "error in remove for path: '/l/1': Unable to access invalid index: 1: invalid index "
            "referenced");
  EXPECT_EQ(apply_error(R"({"l":[1]})", R"([{"op":"remove","path":"/l/-"}])"),
            "error in remove for path: '/l/-': strconv.Atoi: parsing \"-\": invalid syntax");
  EXPECT_EQ(apply_error(R"({})", R"([{"op":"remove","path":"/a/b"}])"),
            "remove operation does not apply: doc is missing path: \"/a/b\": missing value");
  EXPECT_EQ(apply_error(R"({"l":[1]})", R"([{"op":"replace","path":"/l/1","value":2}])"),
            "replace operation does not apply: doc is missing key: /l/1: missing value");
  EXPECT_EQ(apply_error(R"({})", R"([{"op":"replace","path":"/a/b","value":2}])"),
            "replace operation does not apply: doc is missing path: /a/b: missing value");
  EXPECT_EQ(apply_error(R"({})", R"([{"op":"replace","value":2}])"),
            "replace operation failed to decode path: operation missing path field: missing "
            "value");
  EXPECT_EQ(apply_error(R"({})", R"([{"op":"replace","path":5,"value":2}])"),
            "replace operation failed to decode path: json: cannot unmarshal number into Go "
            "value of type string");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"move","from":"/b","path":"/c"}])"),
            "error in move for path: 'b': Unable to remove nonexistent key: b: missing value");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"move","path":"/c"}])"),
            "move operation failed to decode from: operation, missing from field: missing value");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"move","from":"/a","path":"/x/y"}])"),
            "move operation does not apply: doc is missing destination path: /x/y: missing value");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"copy","from":"/x/y","path":"/b"}])"),
            "copy operation does not apply: doc is missing from path: /x/y: missing value");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"copy","from":"/a","path":"/x/y"}])"),
            "copy operation does not apply: doc is missing destination path: /x/y: missing value");
  EXPECT_EQ(apply_error(R"({})", R"([{"op":"frobnicate","path":"/a"}])"),
            "Unexpected kind: frobnicate");
  EXPECT_EQ(apply_error(R"({})", R"([{"path":"/a"}])"), "Unexpected kind: unknown");
  EXPECT_EQ(apply_error(R"({})", R"({"op":"add"})"),
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch");
  EXPECT_EQ(apply_error(R"({})", R"([1])"),
            "json: cannot unmarshal number into Go value of type jsonpatch.Operation");
  EXPECT_EQ(apply_error(R"({"a":1})", R"([{"op":"replace","path":"","value":3}])"),
            "replace operation value must be object or array: %!w(<nil>)");
}

TEST(MergePatchTest, Rfc7386Examples) {
  struct Case {
    const char* doc;
    const char* patch;
    const char* want;
  } cases[] = {
      {R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})"},
      {R"({"a":"b"})", R"({"a":null})", R"({})"},
      {R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})"},
      {R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})"},
      {R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})"},
      {R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})"},
      {R"(["a","b"])", R"(["c","d"])", R"(["c","d"])"},
      {R"({"a":"b"})", R"(["c"])", R"(["c"])"},
      {R"({"a":"foo"})", R"(null)", R"(null)"},
      {R"({"a":"foo"})", R"("bar")", R"("bar")"},
      {R"({"e":null})", R"({"a":1})", R"({"e":null,"a":1})"},
      {R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})"},
      {R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})"},
      // Kubernetes-style: labels merge, a null deletes one.
      {R"({"metadata":{"labels":{"a":"1","b":"2"}},"spec":{"replicas":1}})",
       R"({"metadata":{"labels":{"b":null,"c":"3"}},"spec":{"replicas":3}})",
       R"({"metadata":{"labels":{"a":"1","c":"3"}},"spec":{"replicas":3}})"},
      // Lists are replaced whole.
      {R"({"spec":{"containers":[{"name":"a","image":"x"},{"name":"b"}]}})",
       R"({"spec":{"containers":[{"name":"a","image":"y"}]}})",
       R"({"spec":{"containers":[{"name":"a","image":"y"}]}})"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(apply_merge_patch(json::parse(c.doc), json::parse(c.patch)), json::parse(c.want))
        << c.doc << " + " << c.patch;
  }
}

}  // namespace
}  // namespace skiff::api
