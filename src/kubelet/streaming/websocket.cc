#include "kubelet/streaming/websocket.h"

#include <openssl/evp.h>

#include <cstring>

namespace skiff::kubelet::streaming::ws {
namespace {

// RFC 6455 §1.3: appended to the client's key before hashing.
constexpr std::string_view kHandshakeGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

constexpr uint8_t kFinBit = 0x80;
constexpr uint8_t kReservedBits = 0x70;
constexpr uint8_t kOpcodeBits = 0x0F;
constexpr uint8_t kMaskBit = 0x80;
constexpr uint8_t kLengthBits = 0x7F;
constexpr uint8_t kLength16 = 126;
constexpr uint8_t kLength64 = 127;

bool is_control(uint8_t opcode) {
  return (opcode & 0x8) != 0;
}

bool is_known(uint8_t opcode) {
  switch (static_cast<Opcode>(opcode)) {
    case Opcode::kContinuation:
    case Opcode::kText:
    case Opcode::kBinary:
    case Opcode::kClose:
    case Opcode::kPing:
    case Opcode::kPong:
      return true;
  }
  return false;
}

// Close codes a peer may put on the wire (RFC 6455 §7.4; 1012-1014 were registered later).
bool sendable_close_code(uint16_t code) {
  if (code >= 1000 && code <= 1003) return true;
  if (code >= 1007 && code <= 1014) return true;
  return code >= 3000 && code <= 4999;
}

}  // namespace

std::string accept_key(std::string_view client_key) {
  std::string input(client_key);
  input += kHandshakeGuid;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_size = 0;
  EVP_Digest(input.data(), input.size(), digest, &digest_size, EVP_sha1(), nullptr);
  // Base64 of 20 bytes: 28 characters and the terminating NUL EVP_EncodeBlock writes.
  unsigned char encoded[64];
  int n = EVP_EncodeBlock(encoded, digest, static_cast<int>(digest_size));
  return std::string(reinterpret_cast<const char*>(encoded), static_cast<size_t>(n));
}

std::string encode_frame(Opcode opcode, std::string_view payload, bool fin,
                         std::optional<std::array<uint8_t, 4>> mask) {
  std::string out;
  out.reserve(payload.size() + 14);
  out.push_back(static_cast<char>((fin ? kFinBit : 0) | static_cast<uint8_t>(opcode)));
  const uint8_t mask_bit = mask ? kMaskBit : 0;
  const uint64_t size = payload.size();
  if (size < kLength16) {
    out.push_back(static_cast<char>(mask_bit | size));
  } else if (size <= 0xFFFF) {
    out.push_back(static_cast<char>(mask_bit | kLength16));
    out.push_back(static_cast<char>(size >> 8));
    out.push_back(static_cast<char>(size & 0xFF));
  } else {
    out.push_back(static_cast<char>(mask_bit | kLength64));
    for (int shift = 56; shift >= 0; shift -= 8) {
      out.push_back(static_cast<char>((size >> shift) & 0xFF));
    }
  }
  if (!mask) {
    out.append(payload);
    return out;
  }
  out.append(reinterpret_cast<const char*>(mask->data()), mask->size());
  const size_t start = out.size();
  out.append(payload);
  for (size_t i = 0; i < payload.size(); ++i) out[start + i] ^= static_cast<char>((*mask)[i % 4]);
  return out;
}

std::string encode_close(uint16_t code, std::string_view reason,
                         std::optional<std::array<uint8_t, 4>> mask) {
  std::string payload;
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xFF));
  payload.append(reason.substr(0, kMaxControlPayload - 2));
  return encode_frame(Opcode::kClose, payload, true, mask);
}

std::optional<CloseInfo> parse_close(std::string_view payload) {
  CloseInfo info;
  if (payload.empty()) return info;
  if (payload.size() == 1) return std::nullopt;
  info.code = static_cast<uint16_t>((static_cast<uint8_t>(payload[0]) << 8) |
                                    static_cast<uint8_t>(payload[1]));
  if (!sendable_close_code(info.code)) return std::nullopt;
  info.reason = std::string(payload.substr(2));
  return info;
}

MessageReader::MessageReader(size_t max_message, bool require_mask)
    : max_message_(max_message), require_mask_(require_mask) {}

void MessageReader::feed(std::string_view bytes) {
  if (!error_.is_ok()) return;
  // Drop what was consumed before growing the buffer, so it holds at most one frame's worth.
  if (consumed_ > 0) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  buffer_.append(bytes);
}

std::optional<Message> MessageReader::fail(uint16_t code, std::string message) {
  error_ =
      Status(code == kCloseMessageTooBig ? StatusCode::kTooLarge : StatusCode::kInvalidArgument,
             std::move(message));
  close_code_ = code;
  buffer_.clear();
  consumed_ = 0;
  fragments_.clear();
  return std::nullopt;
}

std::optional<Message> MessageReader::next() {
  while (error_.is_ok()) {
    const std::string_view data = std::string_view(buffer_).substr(consumed_);
    if (data.size() < 2) return std::nullopt;
    const uint8_t b0 = static_cast<uint8_t>(data[0]);
    const uint8_t b1 = static_cast<uint8_t>(data[1]);
    const bool fin = (b0 & kFinBit) != 0;
    const uint8_t opcode = b0 & kOpcodeBits;
    const bool masked = (b1 & kMaskBit) != 0;
    if ((b0 & kReservedBits) != 0) {
      return fail(kCloseProtocolError, "a frame has reserved bits set (no extension was agreed)");
    }
    if (!is_known(opcode)) {
      return fail(kCloseProtocolError, "a frame has the unknown opcode " + std::to_string(opcode));
    }
    if (require_mask_ && !masked) {
      return fail(kCloseProtocolError, "a client frame is not masked");
    }
    size_t header = 2;
    uint64_t size = b1 & kLengthBits;
    if (size == kLength16) {
      if (data.size() < 4) return std::nullopt;
      size = (static_cast<uint64_t>(static_cast<uint8_t>(data[2])) << 8) |
             static_cast<uint8_t>(data[3]);
      header = 4;
    } else if (size == kLength64) {
      if (data.size() < 10) return std::nullopt;
      size = 0;
      for (int i = 0; i < 8; ++i) size = (size << 8) | static_cast<uint8_t>(data[2 + i]);
      if (size >> 63) return fail(kCloseProtocolError, "a frame length has its top bit set");
      header = 10;
    }
    if (is_control(opcode)) {
      if (!fin) return fail(kCloseProtocolError, "a control frame is fragmented");
      if (size > kMaxControlPayload) {
        return fail(kCloseProtocolError, "a control frame is longer than 125 bytes");
      }
    } else {
      if (opcode == static_cast<uint8_t>(Opcode::kContinuation) && !fragmented_) {
        return fail(kCloseProtocolError, "a continuation frame came outside a fragmented message");
      }
      if (opcode != static_cast<uint8_t>(Opcode::kContinuation) && fragmented_) {
        return fail(kCloseProtocolError, "a new message began inside a fragmented message");
      }
      if (size > max_message_ || fragments_.size() + size > max_message_) {
        return fail(kCloseMessageTooBig,
                    "a message is larger than " + std::to_string(max_message_) + " bytes");
      }
    }
    if (masked) header += 4;
    if (data.size() < header || data.size() - header < size) return std::nullopt;

    std::string payload(data.substr(header, static_cast<size_t>(size)));
    if (masked) {
      const char* key = data.data() + header - 4;
      for (size_t i = 0; i < payload.size(); ++i) payload[i] ^= key[i % 4];
    }
    consumed_ += header + static_cast<size_t>(size);

    if (is_control(opcode)) {
      Message m;
      m.opcode = static_cast<Opcode>(opcode);
      m.payload = std::move(payload);
      if (m.opcode == Opcode::kClose && !parse_close(m.payload)) {
        return fail(kCloseProtocolError, "a close frame carries a malformed payload");
      }
      return m;
    }
    if (!fragmented_) {
      if (fin) {
        Message m;
        m.opcode = static_cast<Opcode>(opcode);
        m.payload = std::move(payload);
        return m;
      }
      fragmented_ = static_cast<Opcode>(opcode);
      fragments_ = std::move(payload);
      continue;
    }
    fragments_ += payload;
    if (!fin) continue;
    Message m;
    m.opcode = *fragmented_;
    m.payload = std::move(fragments_);
    fragments_.clear();
    fragmented_.reset();
    return m;
  }
  return std::nullopt;
}

}  // namespace skiff::kubelet::streaming::ws
