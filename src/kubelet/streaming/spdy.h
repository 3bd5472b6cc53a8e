#pragma once

// SPDY/3.1 framing, as Kubernetes' streaming protocols use it (remote command and port-forward
// streams over an upgraded HTTP connection): control frames (SYN_STREAM, SYN_REPLY, RST_STREAM,
// SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE), data frames, and the name/value header blocks
// of SYN_STREAM, SYN_REPLY and HEADERS, which are zlib-compressed with the SPDY/3 dictionary.
// Each direction of a connection has one compression context for its whole life: a FrameWriter
// owns the sending side's, a FrameReader the receiving side's, so every header block of a
// connection must pass through the same writer (or reader), in order.
//
// Header names are lower case on the wire (peers such as Go's spdystream reject others); a header
// with several values carries them NUL-separated in one value.
//
// Thread-safety: the free functions are pure; a FrameWriter, FrameReader, HeaderCompressor or
// HeaderDecompressor belongs to one thread at a time.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "base/status.h"

namespace skiff::kubelet::streaming::spdy {

constexpr uint16_t kVersion = 3;

enum class ControlType : uint16_t {
  kSynStream = 1,
  kSynReply = 2,
  kRstStream = 3,
  kSettings = 4,
  kPing = 6,
  kGoAway = 7,
  kHeaders = 8,
  kWindowUpdate = 9,
};

// Flags of SYN_STREAM, SYN_REPLY, HEADERS and data frames.
constexpr uint8_t kFlagFin = 0x01;
// SYN_STREAM only.
constexpr uint8_t kFlagUnidirectional = 0x02;

// RST_STREAM status codes.
constexpr uint32_t kRstProtocolError = 1;
constexpr uint32_t kRstInvalidStream = 2;
constexpr uint32_t kRstRefusedStream = 3;
constexpr uint32_t kRstCancel = 5;

// The largest payload of one frame (a 24-bit length).
constexpr size_t kMaxFrameLength = (1u << 24) - 1;

// A header block: (name, value) pairs in order.
using HeaderBlock = std::vector<std::pair<std::string, std::string>>;
// The value of the first header named `name` (names compared as they are: lower case); nullopt
// when absent.
std::optional<std::string> header_value(const HeaderBlock& headers, std::string_view name);

// The dictionary the zlib compression of every SPDY/3 header block starts from (1423 bytes).
const std::string& header_dictionary();

// The uncompressed name/value block: the number of pairs, then each name and value, all with
// 32-bit big-endian lengths.
std::string encode_header_block(const HeaderBlock& headers);
// kInvalidArgument for a block that is cut short, has bytes left over or an empty name.
Result<HeaderBlock> decode_header_block(std::string_view block);

// The compressing side of one direction of a connection.
class HeaderCompressor {
 public:
  HeaderCompressor();
  ~HeaderCompressor();
  HeaderCompressor(const HeaderCompressor&) = delete;
  HeaderCompressor& operator=(const HeaderCompressor&) = delete;
  // One block, flushed (Z_SYNC_FLUSH) so the peer can decode it on its own.
  Result<std::string> compress(std::string_view block);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The decompressing side of one direction of a connection.
class HeaderDecompressor {
 public:
  // A block that inflates to more than `max_block` bytes is an error.
  explicit HeaderDecompressor(size_t max_block = 1024 * 1024);
  ~HeaderDecompressor();
  HeaderDecompressor(const HeaderDecompressor&) = delete;
  HeaderDecompressor& operator=(const HeaderDecompressor&) = delete;
  // One compressed block. kInvalidArgument when the bytes are not the continuation of this
  // direction's zlib stream (or were compressed with another dictionary).
  Result<std::string> decompress(std::string_view compressed);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

struct DataFrame {
  uint32_t stream_id = 0;
  uint8_t flags = 0;
  std::string data;
};

struct SynStreamFrame {
  uint32_t stream_id = 0;
  uint32_t associated_stream_id = 0;
  uint8_t priority = 0;  // 0 (highest) to 7
  uint8_t slot = 0;
  uint8_t flags = 0;
  HeaderBlock headers;
};

struct SynReplyFrame {
  uint32_t stream_id = 0;
  uint8_t flags = 0;
  HeaderBlock headers;
};

struct RstStreamFrame {
  uint32_t stream_id = 0;
  uint32_t status = 0;
};

struct Setting {
  uint8_t flags = 0;
  uint32_t id = 0;  // 24 bits
  uint32_t value = 0;
};

struct SettingsFrame {
  uint8_t flags = 0;
  std::vector<Setting> settings;
};

struct PingFrame {
  uint32_t id = 0;
};

struct GoAwayFrame {
  uint32_t last_good_stream_id = 0;
  uint32_t status = 0;
};

struct HeadersFrame {
  uint32_t stream_id = 0;
  uint8_t flags = 0;
  HeaderBlock headers;
};

struct WindowUpdateFrame {
  uint32_t stream_id = 0;
  uint32_t delta = 0;
};

// A control frame of a type SPDY/3 does not define: a receiver ignores it.
struct UnknownControlFrame {
  uint16_t type = 0;
  uint8_t flags = 0;
  std::string payload;
};

using Frame =
    std::variant<DataFrame, SynStreamFrame, SynReplyFrame, RstStreamFrame, SettingsFrame, PingFrame,
                 GoAwayFrame, HeadersFrame, WindowUpdateFrame, UnknownControlFrame>;

// Encodes the frames one side of a connection sends.
class FrameWriter {
 public:
  // The frame's bytes. A data frame longer than kMaxFrameLength goes out as several frames, the
  // FIN flag on the last. kInvalidArgument for a frame that cannot be encoded (a stream id out
  // of range, an unknown control frame).
  Result<std::string> encode(const Frame& frame);

 private:
  Result<std::string> header_block(const HeaderBlock& headers);
  HeaderCompressor compressor_;
};

// Decodes the frames one side of a connection receives.
class FrameReader {
 public:
  explicit FrameReader(size_t max_frame = kMaxFrameLength);

  // Bytes as they came from the connection.
  void feed(std::string_view bytes);
  // The next frame once all of it has arrived; nullopt when more bytes are needed. An error
  // (kInvalidArgument: a malformed frame, a control frame of another SPDY version, a frame longer
  // than max_frame, an undecodable header block) is final: the connection is unusable.
  Result<std::optional<Frame>> next();
  size_t buffered() const { return buffer_.size() - consumed_; }

 private:
  Result<Frame> decode_control(uint16_t type, uint8_t flags, std::string_view payload);
  Result<HeaderBlock> header_block(std::string_view compressed);

  size_t max_frame_;
  std::string buffer_;
  size_t consumed_ = 0;
  Status error_;
  HeaderDecompressor decompressor_;
};

}  // namespace skiff::kubelet::streaming::spdy
