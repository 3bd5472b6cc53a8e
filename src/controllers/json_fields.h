#pragma once

// Tolerant reads of JSON object fields, as the controllers make them on cached API objects (an
// absent, null or mistyped value never throws; it reads as a documented fallback), and the
// defaulting write they share.
//
// Two ways to reach a member, because callers rely on both:
// - field(obj, name) reads an absent or null member (or any member of a non-object) as an empty
//   object, so chains such as field(field(obj, "spec"), "template") and .value()/.contains() on
//   the result are always safe;
// - member(obj, name) returns the member exactly as stored, or null when it is absent (or obj is
//   not an object), so a caller can tell "absent" from "empty" and compare members directly.
//
// Thread-safety: pure functions; the shared empty object and null they may return are immutable
// statics, safe to read from any thread.

#include <cstdint>
#include <string>
#include <string_view>

#include "client/api_client.h"

namespace skiff::controllers {

using client::Json;

// A shared, immutable empty JSON object and JSON null.
const Json& empty_object();
const Json& null_json();

// obj[name] when obj is an object holding a non-null value there, else empty_object().
const Json& field(const Json& obj, std::string_view name);

// obj[name] when obj is an object holding it (null included), else null_json().
const Json& member(const Json& obj, std::string_view name);

// obj[name] as a string; "" when absent or not a string.
std::string string_field(const Json& obj, std::string_view name);

// obj[name] when it is a JSON integer; `fallback` otherwise (absent, null, a float, a string).
int64_t int_field(const Json& obj, std::string_view name, int64_t fallback = 0);

// obj[name] when it is any JSON number, a float truncated toward zero (the API server accepts
// integral floats such as 3.0 for integer fields); `fallback` otherwise.
int64_t numeric_int_field(const Json& obj, std::string_view name, int64_t fallback = 0);

// `value` without nulls, empty objects and empty arrays, recursively: an absent list and an
// empty one mean the same to the API, and the server may write either.
Json without_empty_values(const Json& value);

// Sets obj[name] to `value` when it is absent or null (an API default); obj becomes an object
// if it was null.
void set_default(Json& obj, std::string_view name, Json value);

}  // namespace skiff::controllers
