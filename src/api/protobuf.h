#pragma once

// Kubernetes protobuf encoding (application/vnd.kubernetes.protobuf), derived from the schema.
//
// A body is the magic "k8s\0" followed by a runtime.Unknown message {1: TypeMeta{1: apiVersion,
// 2: kind}, 2: raw (the object's own message), 3: contentEncoding, 4: contentType}. Object
// messages follow k8s.io/api's generated.proto as gogo protobuf writes them: every field number
// comes from the schema's FieldInfo::proto_number, inline structs with a number are nested
// messages (TypeInfo::embedded), maps are repeated {1: key, 2: value} entries, and the named
// scalar types have their own small messages (IntOrString, Quantity, Time, MicroTime, Duration,
// RawExtension/FieldsV1).
//
// Decoding produces the JSON a Go client would have sent for the same object: gogo writes every
// non-pointer field even when it is zero, so zero values of `omitempty` scalars are dropped unless
// the Go field is a pointer (replicas: 0 survives; imagePullPolicy: "" does not).
//
// Thread-safety: stateless functions; safe to call concurrently.

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "api/schema.h"
#include "base/status.h"

namespace skiff::api {

// The content type of Kubernetes protobuf bodies.
inline constexpr std::string_view kProtobufContentType = "application/vnd.kubernetes.protobuf";

struct ProtobufDecodeOptions {
  // Field numbers the schema does not know are skipped (as upstream's decoder does); when set,
  // each is reported here as a path, e.g. "spec.template.spec.containers[0].#99".
  std::vector<std::string>* unknown_fields = nullptr;
};

// Decodes a whole body (magic + runtime.Unknown) into the object as JSON, with apiVersion and
// kind set from the TypeMeta. The type is resolved through the schema: the resource serving the
// kind, else a type named "<...>.<version>.<kind>" (DeleteOptions, Scale, ...).
// kInvalidArgument for a bad magic, malformed protobuf (truncated varints or lengths, wrong wire
// types), invalid UTF-8 in strings, an unsupported contentEncoding, or an unknown kind.
Result<nlohmann::json> decode_k8s_protobuf(std::string_view body, const Schema& schema,
                                           const ProtobufDecodeOptions& options = {});

// Decodes one object message (no magic, no runtime.Unknown) of `type`. No apiVersion/kind.
Result<nlohmann::json> decode_message(std::string_view bytes, const TypeInfo& type,
                                      const Schema& schema,
                                      const ProtobufDecodeOptions& options = {});

// Encodes `obj` (JSON of `type`) as a whole body: magic + runtime.Unknown, with TypeMeta taken
// from obj's apiVersion and kind. Fields are written in field-number order, lists unpacked, maps
// sorted by key, as gogo does. JSON keys the schema does not know, and fields without a protobuf
// number, are left out. kInvalidArgument when a value has the wrong JSON type for its field.
Result<std::string> encode_k8s_protobuf(const nlohmann::json& obj, const TypeInfo& type,
                                        const Schema& schema);

// Encodes one object message (no magic, no runtime.Unknown).
Result<std::string> encode_message(const nlohmann::json& obj, const TypeInfo& type,
                                   const Schema& schema);

// Go's time.Duration formatting and parsing ("1h2m3.5s", "1.5µs", "0s"), as metav1.Duration
// uses them in JSON.
std::string format_go_duration(int64_t nanoseconds);
Result<int64_t> parse_go_duration(std::string_view text);

}  // namespace skiff::api
