#include "controllers/json_fields.h"

#include <gtest/gtest.h>

namespace skiff::controllers {
namespace {

const Json kObj = Json::parse(R"({
  "spec": {"replicas": 3, "paused": false, "template": {"metadata": {}}},
  "gone": null,
  "name": "web",
  "count": 7,
  "ratio": 2.9,
  "whole": 3.0,
  "text": "12",
  "list": []
})");

TEST(JsonFields, FieldReadsAbsentNullAndNonObjectsAsTheEmptyObject) {
  EXPECT_EQ(field(kObj, "spec")["replicas"], 3);
  EXPECT_EQ(&field(kObj, "spec"), &kObj["spec"]);  // a reference into the object, not a copy
  EXPECT_EQ(field(kObj, "missing"), Json::object());
  EXPECT_EQ(field(kObj, "gone"), Json::object());
  EXPECT_EQ(field(kObj, "list"), Json::array());  // present values are returned as they are
  EXPECT_EQ(field(Json("text"), "spec"), Json::object());
  EXPECT_EQ(field(Json(), "spec"), Json::object());
  EXPECT_EQ(field(field(field(kObj, "missing"), "deeper"), "deepest"), Json::object());
  EXPECT_EQ(&field(kObj, "missing"), &empty_object());
}

TEST(JsonFields, MemberTellsAbsentFromEmpty) {
  EXPECT_EQ(&member(kObj, "spec"), &kObj["spec"]);
  EXPECT_TRUE(member(kObj, "missing").is_null());
  EXPECT_TRUE(member(kObj, "gone").is_null());
  EXPECT_EQ(member(kObj, "list"), Json::array());
  EXPECT_TRUE(member(Json::array({1, 2}), "spec").is_null());
  EXPECT_TRUE(member(member(kObj, "missing"), "deeper").is_null());
  EXPECT_EQ(member(member(kObj, "spec"), "paused"), Json(false));
  EXPECT_EQ(&member(kObj, "missing"), &null_json());
}

TEST(JsonFields, StringFieldIsEmptyUnlessAString) {
  EXPECT_EQ(string_field(kObj, "name"), "web");
  EXPECT_EQ(string_field(kObj, "text"), "12");
  EXPECT_EQ(string_field(kObj, "count"), "");
  EXPECT_EQ(string_field(kObj, "gone"), "");
  EXPECT_EQ(string_field(kObj, "missing"), "");
  EXPECT_EQ(string_field(Json("web"), "name"), "");
}

TEST(JsonFields, IntFieldTakesOnlyIntegers) {
  EXPECT_EQ(int_field(kObj, "count"), 7);
  EXPECT_EQ(int_field(field(kObj, "spec"), "replicas", 1), 3);
  EXPECT_EQ(int_field(kObj, "missing"), 0);
  EXPECT_EQ(int_field(kObj, "missing", 5), 5);
  EXPECT_EQ(int_field(kObj, "gone", 5), 5);
  EXPECT_EQ(int_field(kObj, "whole", 5), 5);
  EXPECT_EQ(int_field(kObj, "ratio", 5), 5);
  EXPECT_EQ(int_field(kObj, "text", 5), 5);
  EXPECT_EQ(int_field(Json(), "count", 5), 5);
}

TEST(JsonFields, NumericIntFieldTruncatesFloats) {
  EXPECT_EQ(numeric_int_field(kObj, "count"), 7);
  EXPECT_EQ(numeric_int_field(kObj, "whole", 5), 3);
  EXPECT_EQ(numeric_int_field(kObj, "ratio", 5), 2);
  EXPECT_EQ(numeric_int_field(kObj, "text", 5), 5);
  EXPECT_EQ(numeric_int_field(kObj, "gone", 5), 5);
  EXPECT_EQ(numeric_int_field(kObj, "missing"), 0);
  EXPECT_EQ(numeric_int_field(Json(), "count", 5), 5);
}

TEST(JsonFields, SetDefaultFillsOnlyAbsentOrNull) {
  Json obj = {{"kept", 1}, {"nulled", nullptr}, {"empty", ""}};
  set_default(obj, "kept", 2);
  set_default(obj, "nulled", 3);
  set_default(obj, "absent", 4);
  set_default(obj, "empty", "x");
  EXPECT_EQ(obj, Json({{"kept", 1}, {"nulled", 3}, {"absent", 4}, {"empty", ""}}));
  Json null_obj;
  set_default(null_obj, "a", true);
  EXPECT_EQ(null_obj, Json({{"a", true}}));
}

TEST(JsonFields, WithoutEmptyValuesDropsNullsAndEmptiesRecursively) {
  Json in = Json::parse(R"({
    "a": null, "b": {}, "c": [], "d": {"e": {"f": null}}, "g": 0, "h": "", "i": false,
    "j": [null, {}, {"k": []}, 1], "l": {"m": 2, "n": {}}
  })");
  EXPECT_EQ(without_empty_values(in), Json::parse(R"({
    "g": 0, "h": "", "i": false, "j": [null, {}, {}, 1], "l": {"m": 2}
  })"));
  EXPECT_EQ(without_empty_values(Json(3)), Json(3));
}

}  // namespace
}  // namespace skiff::controllers
