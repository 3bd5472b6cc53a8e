#include "kubelet/streaming/spdy.h"

#include <zlib.h>

#include <algorithm>
#include <array>

namespace skiff::kubelet::streaming::spdy {
namespace {

// The SPDY/3 header dictionary (draft 3, §2.6.10.1) is a run of length-prefixed words (each a
// 32-bit big-endian length, then the word) followed by a run of plain text. It is built here from
// those two parts.
constexpr std::array<std::string_view, 65> kDictionaryWords = {
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
};

// The text after the words: status codes, reason phrases, date parts, common values.
constexpr std::string_view kDictionaryText =
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information"
    "204 No Content"
    "301 Moved Permanently"
    "400 Bad Request"
    "401 Unauthorized"
    "403 Forbidden"
    "404 Not Found"
    "500 Internal Server Error"
    "501 Not Implemented"
    "503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,"
    "text/plain,text/javascript,public"
    "private"
    "max-age="
    "gzip,deflate,sdch"
    "charset=utf-8"
    "charset=iso-8859-1,utf-,*,enq=0.";

void put_u32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>((v >> 24) & 0xFF));
  out.push_back(static_cast<char>((v >> 16) & 0xFF));
  out.push_back(static_cast<char>((v >> 8) & 0xFF));
  out.push_back(static_cast<char>(v & 0xFF));
}

void put_u24(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>((v >> 16) & 0xFF));
  out.push_back(static_cast<char>((v >> 8) & 0xFF));
  out.push_back(static_cast<char>(v & 0xFF));
}

uint32_t get_u32(std::string_view in, size_t at) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(in[at])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(in[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(in[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(in[at + 3]));
}

uint32_t get_u24(std::string_view in, size_t at) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(in[at])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(in[at + 1])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(in[at + 2]));
}

constexpr uint32_t kStreamIdMask = 0x7FFFFFFF;

// The 8-byte head of a control frame.
void put_control_head(std::string& out, ControlType type, uint8_t flags, size_t length) {
  out.push_back(static_cast<char>(0x80 | (kVersion >> 8)));
  out.push_back(static_cast<char>(kVersion & 0xFF));
  const auto t = static_cast<uint16_t>(type);
  out.push_back(static_cast<char>(t >> 8));
  out.push_back(static_cast<char>(t & 0xFF));
  out.push_back(static_cast<char>(flags));
  put_u24(out, static_cast<uint32_t>(length));
}

Status invalid(std::string message) {
  return Status(StatusCode::kInvalidArgument, "spdy: " + std::move(message));
}

Status check_stream_id(uint32_t id, bool zero_allowed) {
  if (id > kStreamIdMask || (!zero_allowed && id == 0)) {
    return invalid("stream id " + std::to_string(id) + " is out of range");
  }
  return Status::ok();
}

}  // namespace

std::optional<std::string> header_value(const HeaderBlock& headers, std::string_view name) {
  for (const auto& [n, v] : headers) {
    if (n == name) return v;
  }
  return std::nullopt;
}

const std::string& header_dictionary() {
  static const std::string dictionary = [] {
    std::string d;
    for (std::string_view word : kDictionaryWords) {
      put_u32(d, static_cast<uint32_t>(word.size()));
      d += word;
    }
    d += kDictionaryText;
    return d;
  }();
  return dictionary;
}

std::string encode_header_block(const HeaderBlock& headers) {
  std::string out;
  put_u32(out, static_cast<uint32_t>(headers.size()));
  for (const auto& [name, value] : headers) {
    put_u32(out, static_cast<uint32_t>(name.size()));
    out += name;
    put_u32(out, static_cast<uint32_t>(value.size()));
    out += value;
  }
  return out;
}

Result<HeaderBlock> decode_header_block(std::string_view block) {
  if (block.size() < 4) return invalid("a header block is cut short");
  const uint32_t count = get_u32(block, 0);
  size_t at = 4;
  HeaderBlock headers;
  auto read_string = [&](std::string* out) -> bool {
    if (block.size() - at < 4) return false;
    const uint32_t n = get_u32(block, at);
    at += 4;
    if (block.size() - at < n) return false;
    out->assign(block.substr(at, n));
    at += n;
    return true;
  };
  for (uint32_t i = 0; i < count; ++i) {
    std::string name, value;
    if (!read_string(&name) || !read_string(&value)) {
      return invalid("a header block is cut short");
    }
    if (name.empty()) return invalid("a header block has an empty name");
    headers.emplace_back(std::move(name), std::move(value));
  }
  if (at != block.size()) return invalid("a header block has bytes after its last header");
  return headers;
}

// ---- zlib --------------------------------------------------------------------------------------

struct HeaderCompressor::State {
  z_stream z{};
  bool ok = false;
};

HeaderCompressor::HeaderCompressor() : state_(std::make_unique<State>()) {
  z_stream& z = state_->z;
  if (deflateInit(&z, Z_DEFAULT_COMPRESSION) != Z_OK) return;
  const std::string& dict = header_dictionary();
  state_->ok = deflateSetDictionary(&z, reinterpret_cast<const Bytef*>(dict.data()),
                                    static_cast<uInt>(dict.size())) == Z_OK;
}

HeaderCompressor::~HeaderCompressor() {
  deflateEnd(&state_->z);
}

Result<std::string> HeaderCompressor::compress(std::string_view block) {
  if (!state_->ok) return Status(StatusCode::kInternal, "spdy: zlib compression is unavailable");
  z_stream& z = state_->z;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(block.data()));
  z.avail_in = static_cast<uInt>(block.size());
  std::string out;
  std::array<char, 4096> piece;
  do {
    z.next_out = reinterpret_cast<Bytef*>(piece.data());
    z.avail_out = static_cast<uInt>(piece.size());
    int rc = deflate(&z, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      state_->ok = false;
      return Status(StatusCode::kInternal,
                    "spdy: zlib deflate failed (" + std::to_string(rc) + ")");
    }
    out.append(piece.data(), piece.size() - z.avail_out);
  } while (z.avail_out == 0 || z.avail_in > 0);
  return out;
}

struct HeaderDecompressor::State {
  z_stream z{};
  bool ok = false;
  size_t max_block = 0;
};

HeaderDecompressor::HeaderDecompressor(size_t max_block) : state_(std::make_unique<State>()) {
  state_->max_block = max_block;
  state_->ok = inflateInit(&state_->z) == Z_OK;
}

HeaderDecompressor::~HeaderDecompressor() {
  inflateEnd(&state_->z);
}

Result<std::string> HeaderDecompressor::decompress(std::string_view compressed) {
  if (!state_->ok) return invalid("the header compression stream broke earlier");
  z_stream& z = state_->z;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  z.avail_in = static_cast<uInt>(compressed.size());
  std::string out;
  std::array<char, 4096> piece;
  while (true) {
    z.next_out = reinterpret_cast<Bytef*>(piece.data());
    z.avail_out = static_cast<uInt>(piece.size());
    int rc = inflate(&z, Z_SYNC_FLUSH);
    out.append(piece.data(), piece.size() - z.avail_out);
    if (rc == Z_NEED_DICT) {
      const std::string& dict = header_dictionary();
      if (inflateSetDictionary(&z, reinterpret_cast<const Bytef*>(dict.data()),
                               static_cast<uInt>(dict.size())) != Z_OK) {
        state_->ok = false;
        return invalid("a header block was compressed with another dictionary");
      }
      continue;
    }
    if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // all input used, nothing more to write
    if (rc != Z_OK) {
      state_->ok = false;
      return invalid(std::string("a header block does not inflate: ") +
                     (z.msg ? z.msg : std::to_string(rc)));
    }
    if (out.size() > state_->max_block) {
      state_->ok = false;
      return invalid("a header block inflates to more than " + std::to_string(state_->max_block) +
                     " bytes");
    }
    if (z.avail_in == 0 && z.avail_out != 0) break;
  }
  return out;
}

// ---- Frames ------------------------------------------------------------------------------------

Result<std::string> FrameWriter::header_block(const HeaderBlock& headers) {
  for (const auto& [name, value] : headers) {
    if (name.empty()) return invalid("a header has an empty name");
    for (char c : name) {
      if (c >= 'A' && c <= 'Z') return invalid("header name \"" + name + "\" is not lower case");
    }
  }
  return compressor_.compress(encode_header_block(headers));
}

Result<std::string> FrameWriter::encode(const Frame& frame) {
  std::string out;
  if (const auto* f = std::get_if<DataFrame>(&frame)) {
    SKIFF_RETURN_IF_ERROR(check_stream_id(f->stream_id, false));
    std::string_view data = f->data;
    do {
      const size_t n = std::min(data.size(), kMaxFrameLength);
      const bool last = n == data.size();
      put_u32(out, f->stream_id);
      out.push_back(static_cast<char>(last ? f->flags : f->flags & ~kFlagFin));
      put_u24(out, static_cast<uint32_t>(n));
      out.append(data.substr(0, n));
      data.remove_prefix(n);
    } while (!data.empty());
    return out;
  }
  if (const auto* f = std::get_if<SynStreamFrame>(&frame)) {
    SKIFF_RETURN_IF_ERROR(check_stream_id(f->stream_id, false));
    SKIFF_RETURN_IF_ERROR(check_stream_id(f->associated_stream_id, true));
    SKIFF_ASSIGN_OR_RETURN(std::string block, header_block(f->headers));
    put_control_head(out, ControlType::kSynStream, f->flags, 10 + block.size());
    put_u32(out, f->stream_id);
    put_u32(out, f->associated_stream_id);
    out.push_back(static_cast<char>((f->priority & 0x7) << 5));
    out.push_back(static_cast<char>(f->slot));
    return out + block;
  }
  if (const auto* f = std::get_if<SynReplyFrame>(&frame)) {
    SKIFF_RETURN_IF_ERROR(check_stream_id(f->stream_id, false));
    SKIFF_ASSIGN_OR_RETURN(std::string block, header_block(f->headers));
    put_control_head(out, ControlType::kSynReply, f->flags, 4 + block.size());
    put_u32(out, f->stream_id);
    return out + block;
  }
  if (const auto* f = std::get_if<HeadersFrame>(&frame)) {
    SKIFF_RETURN_IF_ERROR(check_stream_id(f->stream_id, false));
    SKIFF_ASSIGN_OR_RETURN(std::string block, header_block(f->headers));
    put_control_head(out, ControlType::kHeaders, f->flags, 4 + block.size());
    put_u32(out, f->stream_id);
    return out + block;
  }
  if (const auto* f = std::get_if<RstStreamFrame>(&frame)) {
    SKIFF_RETURN_IF_ERROR(check_stream_id(f->stream_id, false));
    put_control_head(out, ControlType::kRstStream, 0, 8);
    put_u32(out, f->stream_id);
    put_u32(out, f->status);
    return out;
  }
  if (const auto* f = std::get_if<SettingsFrame>(&frame)) {
    put_control_head(out, ControlType::kSettings, f->flags, 4 + 8 * f->settings.size());
    put_u32(out, static_cast<uint32_t>(f->settings.size()));
    for (const Setting& s : f->settings) {
      out.push_back(static_cast<char>(s.flags));
      put_u24(out, s.id);
      put_u32(out, s.value);
    }
    return out;
  }
  if (const auto* f = std::get_if<PingFrame>(&frame)) {
    put_control_head(out, ControlType::kPing, 0, 4);
    put_u32(out, f->id);
    return out;
  }
  if (const auto* f = std::get_if<GoAwayFrame>(&frame)) {
    SKIFF_RETURN_IF_ERROR(check_stream_id(f->last_good_stream_id, true));
    put_control_head(out, ControlType::kGoAway, 0, 8);
    put_u32(out, f->last_good_stream_id);
    put_u32(out, f->status);
    return out;
  }
  if (const auto* f = std::get_if<WindowUpdateFrame>(&frame)) {
    SKIFF_RETURN_IF_ERROR(check_stream_id(f->stream_id, true));
    put_control_head(out, ControlType::kWindowUpdate, 0, 8);
    put_u32(out, f->stream_id);
    put_u32(out, f->delta & kStreamIdMask);
    return out;
  }
  return invalid("an unknown control frame cannot be encoded");
}

FrameReader::FrameReader(size_t max_frame) : max_frame_(max_frame) {}

void FrameReader::feed(std::string_view bytes) {
  if (!error_.is_ok()) return;
  if (consumed_ > 0) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  buffer_.append(bytes);
}

Result<HeaderBlock> FrameReader::header_block(std::string_view compressed) {
  SKIFF_ASSIGN_OR_RETURN(std::string block, decompressor_.decompress(compressed));
  return decode_header_block(block);
}

Result<Frame> FrameReader::decode_control(uint16_t type, uint8_t flags, std::string_view payload) {
  auto need = [&](size_t n, const char* what) -> Status {
    if (payload.size() < n) return invalid(std::string("a ") + what + " frame is too short");
    return Status::ok();
  };
  switch (static_cast<ControlType>(type)) {
    case ControlType::kSynStream: {
      SKIFF_RETURN_IF_ERROR(need(10, "SYN_STREAM"));
      SynStreamFrame f;
      f.flags = flags;
      f.stream_id = get_u32(payload, 0) & kStreamIdMask;
      f.associated_stream_id = get_u32(payload, 4) & kStreamIdMask;
      f.priority = static_cast<uint8_t>(static_cast<uint8_t>(payload[8]) >> 5);
      f.slot = static_cast<uint8_t>(payload[9]);
      SKIFF_ASSIGN_OR_RETURN(f.headers, header_block(payload.substr(10)));
      if (f.stream_id == 0) return invalid("a SYN_STREAM frame has stream id 0");
      return Frame(std::move(f));
    }
    case ControlType::kSynReply: {
      SKIFF_RETURN_IF_ERROR(need(4, "SYN_REPLY"));
      SynReplyFrame f;
      f.flags = flags;
      f.stream_id = get_u32(payload, 0) & kStreamIdMask;
      SKIFF_ASSIGN_OR_RETURN(f.headers, header_block(payload.substr(4)));
      return Frame(std::move(f));
    }
    case ControlType::kHeaders: {
      SKIFF_RETURN_IF_ERROR(need(4, "HEADERS"));
      HeadersFrame f;
      f.flags = flags;
      f.stream_id = get_u32(payload, 0) & kStreamIdMask;
      SKIFF_ASSIGN_OR_RETURN(f.headers, header_block(payload.substr(4)));
      return Frame(std::move(f));
    }
    case ControlType::kRstStream: {
      SKIFF_RETURN_IF_ERROR(need(8, "RST_STREAM"));
      RstStreamFrame f;
      f.stream_id = get_u32(payload, 0) & kStreamIdMask;
      f.status = get_u32(payload, 4);
      return Frame(f);
    }
    case ControlType::kSettings: {
      SKIFF_RETURN_IF_ERROR(need(4, "SETTINGS"));
      SettingsFrame f;
      f.flags = flags;
      const uint32_t count = get_u32(payload, 0);
      if ((payload.size() - 4) / 8 < count) return invalid("a SETTINGS frame is too short");
      for (uint32_t i = 0; i < count; ++i) {
        const size_t at = 4 + 8 * static_cast<size_t>(i);
        Setting s;
        s.flags = static_cast<uint8_t>(payload[at]);
        s.id = get_u24(payload, at + 1);
        s.value = get_u32(payload, at + 4);
        f.settings.push_back(s);
      }
      return Frame(std::move(f));
    }
    case ControlType::kPing: {
      SKIFF_RETURN_IF_ERROR(need(4, "PING"));
      return Frame(PingFrame{get_u32(payload, 0)});
    }
    case ControlType::kGoAway: {
      // SPDY/2 had no status; accept a frame without one.
      SKIFF_RETURN_IF_ERROR(need(4, "GOAWAY"));
      GoAwayFrame f;
      f.last_good_stream_id = get_u32(payload, 0) & kStreamIdMask;
      if (payload.size() >= 8) f.status = get_u32(payload, 4);
      return Frame(f);
    }
    case ControlType::kWindowUpdate: {
      SKIFF_RETURN_IF_ERROR(need(8, "WINDOW_UPDATE"));
      WindowUpdateFrame f;
      f.stream_id = get_u32(payload, 0) & kStreamIdMask;
      f.delta = get_u32(payload, 4) & kStreamIdMask;
      return Frame(f);
    }
  }
  UnknownControlFrame f;
  f.type = type;
  f.flags = flags;
  f.payload = std::string(payload);
  return Frame(std::move(f));
}

Result<std::optional<Frame>> FrameReader::next() {
  if (!error_.is_ok()) return error_;
  const std::string_view data = std::string_view(buffer_).substr(consumed_);
  if (data.size() < 8) return std::optional<Frame>();
  const uint32_t word = get_u32(data, 0);
  const uint8_t flags = static_cast<uint8_t>(data[4]);
  const uint32_t length = get_u24(data, 5);
  if (length > max_frame_) {
    error_ = invalid("a frame of " + std::to_string(length) + " bytes is larger than allowed");
    return error_;
  }
  if (data.size() - 8 < length) return std::optional<Frame>();
  const std::string_view payload = data.substr(8, length);
  consumed_ += 8 + length;

  if ((word & 0x80000000u) == 0) {
    DataFrame f;
    f.stream_id = word;
    f.flags = flags;
    f.data = std::string(payload);
    if (f.stream_id == 0) {
      error_ = invalid("a data frame has stream id 0");
      return error_;
    }
    return std::optional<Frame>(std::move(f));
  }
  const uint16_t version = static_cast<uint16_t>((word >> 16) & 0x7FFF);
  const uint16_t type = static_cast<uint16_t>(word & 0xFFFF);
  if (version != kVersion) {
    error_ = invalid("a control frame of SPDY version " + std::to_string(version));
    return error_;
  }
  Result<Frame> frame = decode_control(type, flags, payload);
  if (!frame.is_ok()) {
    error_ = frame.status();
    return error_;
  }
  return std::optional<Frame>(std::move(frame).value());
}

}  // namespace skiff::kubelet::streaming::spdy
