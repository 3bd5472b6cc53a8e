#pragma once

// The client side of the gRPC health checking protocol (grpc.health.v1.Health/Check), which
// the kubelet's gRPC probes call: plaintext HTTP/2, no TLS, one Check per attempt, healthy only
// when the server answers SERVING. The two messages are tiny, so they are encoded and decoded by
// hand and the call goes through grpc::GenericStub with raw bytes: no generated code needed.
// Failure messages follow upstream kubelet's gRPC prober word for word where it can.
//
// Thread-safety: every function is free of shared state and safe from any thread; each check
// builds its own channel (connections are never shared between checks).

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace skiff::kubelet {

// HealthCheckResponse.ServingStatus values.
inline constexpr int32_t kServingStatusUnknown = 0;
inline constexpr int32_t kServingStatusServing = 1;
inline constexpr int32_t kServingStatusNotServing = 2;
inline constexpr int32_t kServingStatusServiceUnknown = 3;

// "SERVING", "NOT_SERVING", ...; a value outside the enum prints as its number.
std::string serving_status_name(int32_t status);

// HealthCheckRequest{service} in protobuf wire format (field 1, string).
std::string encode_health_check_request(std::string_view service);
// HealthCheckResponse's status (field 1, enum) from wire bytes; UNKNOWN when absent, unknown
// fields skipped; InvalidArgument for bytes that are not a protobuf message.
Result<int32_t> decode_health_check_response(std::string_view bytes);

// "1s", "1m30s": a whole number of seconds as Go prints a time.Duration.
std::string go_duration_seconds(int64_t seconds);

struct HealthCheckOutcome {
  bool serving = false;
  std::string message;  // why not, for probe events; "" when serving
};

// Calls Check{service} on host:port within `timeout` (connection and call together). host is a
// numeric IPv4 or IPv6 address. A refused or reset connection fails at once; a peer that does
// not answer fails when the timeout runs out.
HealthCheckOutcome check_grpc_health(const std::string& host, int port, const std::string& service,
                                     std::chrono::seconds timeout);

}  // namespace skiff::kubelet
