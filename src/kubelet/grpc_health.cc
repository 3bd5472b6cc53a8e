#include "kubelet/grpc_health.h"

#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

namespace skiff::kubelet {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kCheckMethod[] = "/grpc.health.v1.Health/Check";
// The probe identifies itself as upstream's does.
constexpr char kUserAgent[] = "kube-probe/1.32";

bool read_varint(std::string_view bytes, size_t& pos, uint64_t& out) {
  out = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos >= bytes.size()) return false;
    auto b = static_cast<uint8_t>(bytes[pos++]);
    out |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

void append_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// grpc-go's names for status codes, which upstream's messages carry.
std::string go_code_name(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
      "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
      "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
      "DataLoss", "Unauthenticated"};
  auto i = static_cast<size_t>(code);
  if (i < sizeof(kNames) / sizeof(kNames[0])) return kNames[i];
  return "Code(" + std::to_string(static_cast<int>(code)) + ")";
}

std::string errno_text(int err) {
  std::string text = strerror(err);
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

// Why a plain TCP connection to the address fails ("" when it does not). gRPC's channel only
// reports that it failed, so this asks the kernel for the reason Go's dialer would print.
std::string dial_error(const std::string& host, int port, const std::string& addr,
                       Clock::time_point deadline) {
  sockaddr_storage storage{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(*v4);
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof(*v6);
  } else {
    return "dial tcp " + addr + ": invalid IP address";
  }
  int fd = ::socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return std::string("socket: ") + errno_text(errno);
  std::string result;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&storage), len) != 0) {
    if (errno != EINPROGRESS) {
      result = "dial tcp " + addr + ": connect: " + errno_text(errno);
    } else {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      pollfd p{fd, POLLOUT, 0};
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) != 1) {
        result = "dial tcp " + addr + ": i/o timeout";
      } else {
        int err = 0;
        socklen_t err_len = sizeof(err);
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
        if (err != 0) result = "dial tcp " + addr + ": connect: " + errno_text(err);
      }
    }
  }
  ::close(fd);
  return result;
}

std::chrono::system_clock::time_point to_system(Clock::time_point deadline) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(deadline - Clock::now());
}

}  // namespace

std::string serving_status_name(int32_t status) {
  switch (status) {
    case kServingStatusUnknown:
      return "UNKNOWN";
    case kServingStatusServing:
      return "SERVING";
    case kServingStatusNotServing:
      return "NOT_SERVING";
    case kServingStatusServiceUnknown:
      return "SERVICE_UNKNOWN";
    default:
      return std::to_string(status);
  }
}

std::string encode_health_check_request(std::string_view service) {
  std::string out;
  if (service.empty()) return out;  // proto3 omits default values
  out.push_back(static_cast<char>((1 << 3) | 2));
  append_varint(out, service.size());
  out.append(service);
  return out;
}

Result<int32_t> decode_health_check_response(std::string_view bytes) {
  int32_t status = kServingStatusUnknown;
  size_t pos = 0;
  while (pos < bytes.size()) {
    uint64_t key = 0;
    if (!read_varint(bytes, pos, key) || (key >> 3) == 0) {
      return error(StatusCode::kInvalidArgument, "malformed HealthCheckResponse: bad field key");
    }
    uint64_t value = 0;
    switch (key & 7) {
      case 0:
        if (!read_varint(bytes, pos, value)) {
          return error(StatusCode::kInvalidArgument, "malformed HealthCheckResponse: bad varint");
        }
        if ((key >> 3) == 1) status = static_cast<int32_t>(value);
        break;
      case 1:
        if (bytes.size() - pos < 8) {
          return error(StatusCode::kInvalidArgument, "malformed HealthCheckResponse: truncated");
        }
        pos += 8;
        break;
      case 2:
        if (!read_varint(bytes, pos, value) || value > bytes.size() - pos) {
          return error(StatusCode::kInvalidArgument, "malformed HealthCheckResponse: truncated");
        }
        pos += value;
        break;
      case 5:
        if (bytes.size() - pos < 4) {
          return error(StatusCode::kInvalidArgument, "malformed HealthCheckResponse: truncated");
        }
        pos += 4;
        break;
      default:
        return error(StatusCode::kInvalidArgument,
                     "malformed HealthCheckResponse: wire type " + std::to_string(key & 7));
    }
  }
  return status;
}

std::string go_duration_seconds(int64_t seconds) {
  if (seconds == 0) return "0s";
  std::string sign = seconds < 0 ? "-" : "";
  uint64_t s = seconds < 0 ? -static_cast<uint64_t>(seconds) : static_cast<uint64_t>(seconds);
  std::string out = sign;
  if (s >= 3600) out += std::to_string(s / 3600) + "h";
  if (s >= 60) out += std::to_string(s / 60 % 60) + "m";
  out += std::to_string(s % 60) + "s";
  return out;
}

HealthCheckOutcome check_grpc_health(const std::string& host, int port, const std::string& service,
                                     std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const bool v6 = host.find(':') != std::string::npos;
  const std::string addr = (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  const std::string connect_timeout = "timeout: failed to connect service \"" + addr +
                                      "\" within " + go_duration_seconds(timeout.count()) +
                                      ": context deadline exceeded";
  auto connect_failed = [&](const std::string& why) {
    return HealthCheckOutcome{false,
                              "error: failed to connect service at \"" + addr + "\": " + why};
  };
  if (host.empty()) return connect_failed("the pod has no IP address");
  if (port <= 0 || port > 65535) return connect_failed("invalid port " + std::to_string(port));

  grpc::ChannelArguments args;
  args.SetUserAgentPrefix(kUserAgent);
  // Each check stands alone: no connection (or its failure) is shared with other channels.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  auto channel = grpc::CreateCustomChannel((v6 ? "ipv6:" : "ipv4:") + addr,
                                           grpc::InsecureChannelCredentials(), args);

  // Connect first (upstream dials with WithBlock), failing fast when the connection fails.
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) {
      std::string why = dial_error(host, port, addr, deadline);
      if (why.empty()) why = "connection closed before server preface received";
      return connect_failed(why);
    }
    if (!channel->WaitForStateChange(state, to_system(deadline))) return {false, connect_timeout};
    state = channel->GetState(/*try_to_connect=*/true);
  }

  grpc::ClientContext context;
  context.set_deadline(to_system(deadline));
  std::string request_bytes = encode_health_check_request(service);
  grpc::Slice request_slice(request_bytes);
  grpc::ByteBuffer request(&request_slice, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&context, kCheckMethod, request, &cq);
  call->StartCall();
  int tag = 0;
  call->Finish(&response, &status, &tag);
  void* got = nullptr;
  bool ok = false;
  // The context's deadline bounds the call, so this returns once it has ended either way.
  bool next = cq.Next(&got, &ok);
  cq.Shutdown();
  while (cq.Next(&got, &ok)) {
  }
  if (!next) return {false, "error: health rpc probe failed: completion queue shut down"};

  if (!status.ok()) {
    switch (status.error_code()) {
      case grpc::StatusCode::UNIMPLEMENTED:
        return {false,
                "error: this server does not implement the grpc health protocol "
                "(grpc.health.v1.Health): " +
                    status.error_message()};
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        return {false, "timeout: health rpc did not complete within " +
                           go_duration_seconds(timeout.count())};
      default:
        return {false, "error: health rpc probe failed: rpc error: code = " +
                           go_code_name(status.error_code()) + " desc = " + status.error_message()};
    }
  }
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  Result<int32_t> serving = decode_health_check_response(bytes);
  if (!serving.is_ok()) {
    return {false, "error: health rpc probe failed: rpc error: code = Internal desc = " +
                       serving.status().message()};
  }
  if (*serving != kServingStatusServing) {
    return {false, "service unhealthy (responded with \"" + serving_status_name(*serving) + "\")"};
  }
  return {true, ""};
}

}  // namespace skiff::kubelet
