#pragma once

// WebSocket (RFC 6455) as the server end of a connection speaks it: the handshake's accept key,
// frames to send (never masked, as a server's must be), and a reader that turns the client's
// bytes into whole messages. The reader unmasks, joins fragmented messages (continuation frames,
// with control frames allowed in between), and enforces what a server must: every client frame
// masked, no reserved bits (no extension is ever negotiated), known opcodes only, control frames
// of at most 125 bytes and never fragmented, continuations only inside a fragmented message, a
// 64-bit length with its top bit clear, and a message size limit. A broken rule stops the reader
// for good and names the close code to answer with (1002, or 1009 for a message too big).
//
// Thread-safety: the free functions are pure; a MessageReader belongs to one thread at a time.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace skiff::kubelet::streaming::ws {

enum class Opcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

// Close codes (RFC 6455 §7.4.1).
constexpr uint16_t kCloseNormal = 1000;
constexpr uint16_t kCloseGoingAway = 1001;
constexpr uint16_t kCloseProtocolError = 1002;
constexpr uint16_t kCloseNoStatus = 1005;  // never sent; what an empty close payload means
constexpr uint16_t kCloseMessageTooBig = 1009;
constexpr uint16_t kCloseInternalError = 1011;

// The largest control frame payload.
constexpr size_t kMaxControlPayload = 125;

// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64(SHA-1(key + the RFC's GUID)).
std::string accept_key(std::string_view client_key);

// One frame. A server sends frames unmasked (mask == nullopt); a client's frames carry a mask,
// which tests use to play the client.
std::string encode_frame(Opcode opcode, std::string_view payload, bool fin = true,
                         std::optional<std::array<uint8_t, 4>> mask = std::nullopt);
// A close frame: the code (big-endian) then the reason (cut to fit a control frame).
std::string encode_close(uint16_t code, std::string_view reason = "",
                         std::optional<std::array<uint8_t, 4>> mask = std::nullopt);

// A whole message (text or binary, its fragments joined) or a control frame.
struct Message {
  Opcode opcode = Opcode::kBinary;  // kText, kBinary, kClose, kPing or kPong
  std::string payload;
};

// A close frame's payload: kCloseNoStatus when it is empty; nullopt when it is malformed (one
// byte, or a code a peer may not send).
struct CloseInfo {
  uint16_t code = kCloseNoStatus;
  std::string reason;
};
std::optional<CloseInfo> parse_close(std::string_view payload);

class MessageReader {
 public:
  // `max_message`: the largest message (all its fragments) accepted; a bigger one is an error
  // with close code 1009. `require_mask`: a server's reader insists on masked frames.
  explicit MessageReader(size_t max_message = 16 * 1024 * 1024, bool require_mask = true);

  // Bytes as they came from the connection.
  void feed(std::string_view bytes);
  // The next message, once all of it has arrived; nullopt when more bytes are needed or after an
  // error (see error()).
  std::optional<Message> next();
  // OK until the peer broke the protocol; then the reason, and close_code() says what to answer.
  const Status& error() const { return error_; }
  uint16_t close_code() const { return close_code_; }
  // Bytes fed and not yet consumed (the start of a frame that has not fully arrived).
  size_t buffered() const { return buffer_.size() - consumed_; }

 private:
  std::optional<Message> fail(uint16_t code, std::string message);

  size_t max_message_;
  bool require_mask_;
  std::string buffer_;
  size_t consumed_ = 0;
  // A fragmented message under way: its opcode and the payload so far.
  std::optional<Opcode> fragmented_;
  std::string fragments_;
  Status error_;
  uint16_t close_code_ = 0;
};

}  // namespace skiff::kubelet::streaming::ws
