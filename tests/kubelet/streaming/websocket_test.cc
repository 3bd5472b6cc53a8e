// The WebSocket codec: the handshake's accept key, frames a server sends, and the reader's view of
// a client's frames (unmasking, every length form, fragmented messages with control frames in
// between, and the frames a server must refuse).

#include "kubelet/streaming/websocket.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace skiff::kubelet::streaming::ws {
namespace {

constexpr std::array<uint8_t, 4> kMask = {0x37, 0xfa, 0x21, 0x3d};

std::string bytes(std::initializer_list<int> list) {
  std::string out;
  for (int b : list) out.push_back(static_cast<char>(b));
  return out;
}

// Everything the reader makes of `wire`, fed in pieces of `step` bytes.
std::vector<Message> read_all(MessageReader& reader, const std::string& wire, size_t step) {
  std::vector<Message> out;
  for (size_t at = 0; at < wire.size(); at += step) {
    reader.feed(std::string_view(wire).substr(at, step));
    while (std::optional<Message> m = reader.next()) out.push_back(std::move(*m));
  }
  return out;
}

TEST(WebSocketTest, AcceptKeyIsTheRfcExample) {
  // RFC 6455 §1.3.
  EXPECT_EQ(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(WebSocketTest, ServerFramesAreUnmaskedWithTheShortestLength) {
  EXPECT_EQ(encode_frame(Opcode::kBinary, "\x01hi"), bytes({0x82, 0x03, 0x01, 'h', 'i'}));
  EXPECT_EQ(encode_frame(Opcode::kText, "", false), bytes({0x01, 0x00}));
  std::string f125 = encode_frame(Opcode::kBinary, std::string(125, 'a'));
  EXPECT_EQ(f125.substr(0, 2), bytes({0x82, 125}));
  EXPECT_EQ(f125.size(), 127u);
  std::string f126 = encode_frame(Opcode::kBinary, std::string(126, 'a'));
  EXPECT_EQ(f126.substr(0, 4), bytes({0x82, 126, 0x00, 126}));
  EXPECT_EQ(f126.size(), 130u);
  std::string f65535 = encode_frame(Opcode::kBinary, std::string(65535, 'a'));
  EXPECT_EQ(f65535.substr(0, 4), bytes({0x82, 126, 0xff, 0xff}));
  std::string f65536 = encode_frame(Opcode::kBinary, std::string(65536, 'a'));
  EXPECT_EQ(f65536.substr(0, 10), bytes({0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}));
  EXPECT_EQ(f65536.size(), 65546u);
  EXPECT_EQ(encode_close(1000), bytes({0x88, 0x02, 0x03, 0xe8}));
}

TEST(WebSocketTest, MaskedFramesOfEveryLengthFormRoundTrip) {
  for (size_t size : {0, 1, 125, 126, 127, 65535, 65536, 200000}) {
    std::string payload(size, '\0');
    for (size_t i = 0; i < size; ++i) payload[i] = static_cast<char>(i * 7 + 3);
    std::string wire = encode_frame(Opcode::kBinary, payload, true, kMask);
    // Masking changed the bytes on the wire.
    if (size > 0) {
      EXPECT_EQ(wire.find(payload), std::string::npos) << size;
    }
    for (size_t step : {wire.size(), size_t{1}, size_t{1000}}) {
      if (size > 70000 && step == 1) continue;
      MessageReader reader;
      std::vector<Message> got = read_all(reader, wire, step);
      ASSERT_EQ(got.size(), 1u) << size << " in steps of " << step;
      EXPECT_EQ(got[0].opcode, Opcode::kBinary);
      EXPECT_TRUE(got[0].payload == payload) << size;
      EXPECT_TRUE(reader.error().is_ok());
      EXPECT_EQ(reader.buffered(), 0u);
    }
  }
}

TEST(WebSocketTest, FragmentsJoinWithControlFramesInBetween) {
  std::string wire = encode_frame(Opcode::kText, "he", false, kMask) +
                     encode_frame(Opcode::kContinuation, "ll", false, kMask) +
                     encode_frame(Opcode::kPing, "are you there", true, kMask) +
                     encode_frame(Opcode::kContinuation, "o", true, kMask) +
                     encode_frame(Opcode::kBinary, "\x02next", true, kMask) +
                     encode_frame(Opcode::kPong, "", true, kMask) +
                     encode_close(1000, "bye", kMask);
  for (size_t step : {wire.size(), size_t{1}, size_t{3}}) {
    MessageReader reader;
    std::vector<Message> got = read_all(reader, wire, step);
    ASSERT_EQ(got.size(), 5u);
    EXPECT_EQ(got[0].opcode, Opcode::kPing);
    EXPECT_EQ(got[0].payload, "are you there");
    EXPECT_EQ(got[1].opcode, Opcode::kText);
    EXPECT_EQ(got[1].payload, "hello");
    EXPECT_EQ(got[2].opcode, Opcode::kBinary);
    EXPECT_EQ(got[2].payload, "\x02next");
    EXPECT_EQ(got[3].opcode, Opcode::kPong);
    EXPECT_EQ(got[4].opcode, Opcode::kClose);
    std::optional<CloseInfo> close = parse_close(got[4].payload);
    ASSERT_TRUE(close);
    EXPECT_EQ(close->code, 1000);
    EXPECT_EQ(close->reason, "bye");
  }
}

TEST(WebSocketTest, ClosePayloads) {
  std::optional<CloseInfo> empty = parse_close("");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->code, kCloseNoStatus);
  EXPECT_FALSE(parse_close(bytes({0x03})));
  EXPECT_FALSE(parse_close(bytes({0x03, 0xe7})));  // 999
  EXPECT_FALSE(parse_close(bytes({0x03, 0xee})));  // 1006 is never sent
  ASSERT_TRUE(parse_close(bytes({0x0f, 0xa0})));   // 4000, an application's own
  // A reason longer than a control frame allows is cut.
  std::string wire = encode_close(1001, std::string(300, 'r'));
  EXPECT_EQ(wire.size(), 2u + 125u);
}

// The reader's verdict on a client's bytes: the close code it asks for (0: no error).
uint16_t verdict(const std::string& wire, size_t max_message = 1024) {
  MessageReader reader(max_message);
  read_all(reader, wire, wire.size());
  return reader.error().is_ok() ? 0 : reader.close_code();
}

TEST(WebSocketTest, BadFramesCloseWithProtocolError) {
  // Unmasked client frame.
  EXPECT_EQ(verdict(encode_frame(Opcode::kBinary, "x")), kCloseProtocolError);
  // Reserved bits (no extension agreed).
  std::string rsv = encode_frame(Opcode::kBinary, "x", true, kMask);
  rsv[0] = static_cast<char>(rsv[0] | 0x40);
  EXPECT_EQ(verdict(rsv), kCloseProtocolError);
  // Unknown opcodes, data and control.
  for (int op : {0x3, 0x7, 0xB, 0xF}) {
    std::string wire = encode_frame(Opcode::kBinary, "x", true, kMask);
    wire[0] = static_cast<char>(0x80 | op);
    EXPECT_EQ(verdict(wire), kCloseProtocolError) << op;
  }
  // A control frame longer than 125 bytes, or fragmented.
  EXPECT_EQ(verdict(encode_frame(Opcode::kPing, std::string(126, 'p'), true, kMask)),
            kCloseProtocolError);
  EXPECT_EQ(verdict(encode_frame(Opcode::kPing, "p", false, kMask)), kCloseProtocolError);
  // A continuation with nothing to continue; a new message inside a fragmented one.
  EXPECT_EQ(verdict(encode_frame(Opcode::kContinuation, "x", true, kMask)), kCloseProtocolError);
  EXPECT_EQ(verdict(encode_frame(Opcode::kBinary, "a", false, kMask) +
                    encode_frame(Opcode::kBinary, "b", true, kMask)),
            kCloseProtocolError);
  // A 64-bit length with its top bit set.
  EXPECT_EQ(verdict(bytes({0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4})),
            kCloseProtocolError);
  // A malformed close payload (one byte).
  EXPECT_EQ(verdict(encode_frame(Opcode::kClose, "\x03", true, kMask)), kCloseProtocolError);
  // A message larger than allowed, whole or in fragments.
  EXPECT_EQ(verdict(encode_frame(Opcode::kBinary, std::string(1025, 'b'), true, kMask)),
            kCloseMessageTooBig);
  EXPECT_EQ(verdict(encode_frame(Opcode::kBinary, std::string(600, 'b'), false, kMask) +
                    encode_frame(Opcode::kContinuation, std::string(600, 'b'), true, kMask)),
            kCloseMessageTooBig);
  EXPECT_EQ(verdict(encode_frame(Opcode::kBinary, std::string(1024, 'b'), true, kMask)), 0);
}

TEST(WebSocketTest, AnErrorIsFinal) {
  MessageReader reader;
  reader.feed(encode_frame(Opcode::kBinary, "unmasked"));
  EXPECT_FALSE(reader.next());
  EXPECT_FALSE(reader.error().is_ok());
  reader.feed(encode_frame(Opcode::kBinary, "fine", true, kMask));
  EXPECT_FALSE(reader.next());
  EXPECT_EQ(reader.close_code(), kCloseProtocolError);
}

TEST(WebSocketTest, AClientReaderTakesUnmaskedFrames) {
  MessageReader reader(1024, /*require_mask=*/false);
  reader.feed(encode_frame(Opcode::kBinary, "\x01out") + encode_close(1000));
  std::optional<Message> m = reader.next();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->payload, "\x01out");
  m = reader.next();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->opcode, Opcode::kClose);
}

}  // namespace
}  // namespace skiff::kubelet::streaming::ws
