// The SPDY/3.1 codec: the header dictionary, name/value blocks, the per-direction zlib contexts,
// every frame type through a writer and a reader, header blocks kubectl itself sent (recorded from
// kubectl 1.32: the error stream of a remote command, and of a port-forward through the WebSocket
// tunnel), and the input a reader refuses.

#include "kubelet/streaming/spdy.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <string>
#include <vector>

namespace skiff::kubelet::streaming::spdy {
namespace {

std::string unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

// kubectl 1.32's first frame of `kubectl exec` over SPDY: SYN_STREAM 1, `streamtype: error`.
constexpr std::string_view kKubectlExecSynStream =
    "800300010000002900000001000000000000"
    "78f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff";
// kubectl 1.32's first frame inside the port-forward tunnel, for a connection to port 8080:
// SYN_STREAM 1, `streamtype: error`, `port: 8080`, `requestid: 0`.
constexpr std::string_view kKubectlPortForwardSynStream =
    "800300010000003e00000001000000000000"
    "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c60616061c0c0c0c0590489c64c50f2"
    "663400000000ffff";

// Everything a reader makes of `wire`, fed in pieces of `step` bytes.
std::vector<Frame> read_all(FrameReader& reader, const std::string& wire, size_t step) {
  std::vector<Frame> out;
  for (size_t at = 0; at < wire.size(); at += step) {
    reader.feed(std::string_view(wire).substr(at, step));
    while (true) {
      Result<std::optional<Frame>> f = reader.next();
      EXPECT_TRUE(f.is_ok()) << f.status().to_string();
      if (!f.is_ok() || !f->has_value()) break;
      out.push_back(std::move(**f));
    }
  }
  return out;
}

TEST(SpdyTest, TheDictionaryIsSpdy3s) {
  const std::string& d = header_dictionary();
  EXPECT_EQ(d.size(), 1423u);
  // The dictionary id zlib puts in every stream's header (kubectl's frames carry e3c6a7c2).
  uLong adler = adler32(0L, Z_NULL, 0);
  adler = adler32(adler, reinterpret_cast<const Bytef*>(d.data()), static_cast<uInt>(d.size()));
  EXPECT_EQ(adler, 0xe3c6a7c2u);
  EXPECT_EQ(d.substr(0, 11), std::string("\0\0\0\x07options", 11));
  EXPECT_TRUE(d.ends_with("charset=iso-8859-1,utf-,*,enq=0."));
}

TEST(SpdyTest, HeaderBlocksRoundTrip) {
  HeaderBlock headers = {
      {"streamtype", "error"}, {"port", "8080"}, {"multi", std::string("a\0b", 3)}};
  std::string block = encode_header_block(headers);
  EXPECT_EQ(block.substr(0, 4), std::string("\0\0\0\x03", 4));
  Result<HeaderBlock> back = decode_header_block(block);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(*back, headers);
  EXPECT_EQ(header_value(*back, "port"), "8080");
  EXPECT_FALSE(header_value(*back, "Port"));

  EXPECT_FALSE(decode_header_block("").is_ok());
  EXPECT_FALSE(decode_header_block(block.substr(0, block.size() - 1)).is_ok());
  EXPECT_FALSE(decode_header_block(block + "x").is_ok());
  EXPECT_FALSE(decode_header_block(encode_header_block({{"", "v"}})).is_ok());
  Result<HeaderBlock> none = decode_header_block(encode_header_block({}));
  ASSERT_TRUE(none.is_ok());
  EXPECT_TRUE(none->empty());
}

TEST(SpdyTest, OneCompressionContextPerDirection) {
  HeaderCompressor compressor;
  HeaderDecompressor decompressor;
  std::string block = encode_header_block({{"streamtype", "stdout"}, {"requestid", "7"}});
  Result<std::string> first = compressor.compress(block);
  Result<std::string> second = compressor.compress(block);
  ASSERT_TRUE(first.is_ok() && second.is_ok());
  // The second block refers back to the first: a shared context, not a fresh one per block.
  EXPECT_LT(second->size(), first->size());
  // The zlib header names the dictionary (FDICT with its id).
  EXPECT_EQ(first->substr(2, 4), unhex("e3c6a7c2"));
  Result<std::string> a = decompressor.decompress(*first);
  Result<std::string> b = decompressor.decompress(*second);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(*a, block);
  EXPECT_EQ(*b, block);
  // A fresh context cannot read the second block alone.
  HeaderDecompressor fresh;
  EXPECT_FALSE(fresh.decompress(*second).is_ok());
  // Large blocks too.
  std::string big = encode_header_block({{"big", std::string(100000, 'x')}});
  Result<std::string> c = compressor.compress(big);
  ASSERT_TRUE(c.is_ok());
  Result<std::string> d = decompressor.decompress(*c);
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_TRUE(*d == big);
}

TEST(SpdyTest, ABlockCompressedWithAnotherDictionaryIsRefused) {
  z_stream z{};
  ASSERT_EQ(deflateInit(&z, Z_DEFAULT_COMPRESSION), Z_OK);
  const std::string other = "some other dictionary";
  deflateSetDictionary(&z, reinterpret_cast<const Bytef*>(other.data()),
                       static_cast<uInt>(other.size()));
  std::string block = encode_header_block({{"streamtype", "error"}});
  std::string out(1024, '\0');
  z.next_in = reinterpret_cast<Bytef*>(block.data());
  z.avail_in = static_cast<uInt>(block.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  ASSERT_EQ(deflate(&z, Z_SYNC_FLUSH), Z_OK);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  HeaderDecompressor decompressor;
  Result<std::string> got = decompressor.decompress(out);
  ASSERT_FALSE(got.is_ok());
  EXPECT_NE(got.status().message().find("dictionary"), std::string::npos);
}

TEST(SpdyTest, KubectlsSynStreamsDecode) {
  {
    FrameReader reader;
    std::string wire = unhex(kKubectlExecSynStream);
    EXPECT_EQ(wire.substr(0, 4), unhex("80030001"));
    std::vector<Frame> frames = read_all(reader, wire, 1);
    ASSERT_EQ(frames.size(), 1u);
    const auto* syn = std::get_if<SynStreamFrame>(&frames[0]);
    ASSERT_TRUE(syn);
    EXPECT_EQ(syn->stream_id, 1u);
    EXPECT_EQ(syn->associated_stream_id, 0u);
    EXPECT_EQ(syn->flags, 0);
    EXPECT_EQ(syn->headers, (HeaderBlock{{"streamtype", "error"}}));
  }
  {
    FrameReader reader;
    std::vector<Frame> frames = read_all(reader, unhex(kKubectlPortForwardSynStream), 5);
    ASSERT_EQ(frames.size(), 1u);
    const auto* syn = std::get_if<SynStreamFrame>(&frames[0]);
    ASSERT_TRUE(syn);
    EXPECT_EQ(syn->stream_id, 1u);
    EXPECT_EQ(syn->headers,
              (HeaderBlock{{"streamtype", "error"}, {"port", "8080"}, {"requestid", "0"}}));
  }
}

TEST(SpdyTest, OurSynStreamIsKubectls) {
  // The frame kubectl writes for its first stream: the same control head and stream ids (the
  // compressed block may differ with the compression level).
  FrameWriter writer;
  SynStreamFrame syn;
  syn.stream_id = 1;
  syn.headers = {{"streamtype", "error"}};
  Result<std::string> wire = writer.encode(syn);
  ASSERT_TRUE(wire.is_ok()) << wire.status().to_string();
  const std::string kubectl = unhex(kKubectlExecSynStream);
  EXPECT_EQ(wire->substr(0, 5), kubectl.substr(0, 5));
  EXPECT_EQ(wire->substr(8, 10), kubectl.substr(8, 10));
  // The zlib stream's header (with the dictionary's id) too.
  EXPECT_EQ(wire->substr(20, 4), kubectl.substr(20, 4));
  // What matters is that a reader (any SPDY peer) decodes it.
  FrameReader reader;
  std::vector<Frame> frames = read_all(reader, *wire, wire->size());
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(std::get<SynStreamFrame>(frames[0]).headers, syn.headers);
}

TEST(SpdyTest, EveryFrameTypeRoundTrips) {
  FrameWriter writer;
  std::vector<Frame> sent;
  SynStreamFrame syn;
  syn.stream_id = 3;
  syn.associated_stream_id = 1;
  syn.priority = 5;
  syn.slot = 2;
  syn.flags = kFlagUnidirectional;
  syn.headers = {{"streamtype", "stdin"}};
  sent.push_back(syn);
  sent.push_back(SynReplyFrame{3, kFlagFin, {{"status", "ok"}}});
  sent.push_back(HeadersFrame{3, 0, {{"extra", "1"}}});
  sent.push_back(DataFrame{3, 0, "hello"});
  sent.push_back(DataFrame{3, kFlagFin, ""});
  sent.push_back(RstStreamFrame{5, kRstCancel});
  sent.push_back(SettingsFrame{1, {{0, 7, 65536}, {1, 4, 100}}});
  sent.push_back(PingFrame{0xfffffffe});
  sent.push_back(GoAwayFrame{7, 0});
  sent.push_back(WindowUpdateFrame{3, 4096});
  std::string wire;
  for (const Frame& f : sent) {
    Result<std::string> bytes = writer.encode(f);
    ASSERT_TRUE(bytes.is_ok()) << bytes.status().to_string();
    wire += *bytes;
  }
  for (size_t step : {wire.size(), size_t{1}, size_t{7}}) {
    FrameReader reader;
    std::vector<Frame> got = read_all(reader, wire, step);
    ASSERT_EQ(got.size(), sent.size());
    const auto& s = std::get<SynStreamFrame>(got[0]);
    EXPECT_EQ(s.stream_id, 3u);
    EXPECT_EQ(s.associated_stream_id, 1u);
    EXPECT_EQ(s.priority, 5);
    EXPECT_EQ(s.slot, 2);
    EXPECT_EQ(s.flags, kFlagUnidirectional);
    EXPECT_EQ(s.headers, syn.headers);
    const auto& r = std::get<SynReplyFrame>(got[1]);
    EXPECT_EQ(r.stream_id, 3u);
    EXPECT_EQ(r.flags, kFlagFin);
    EXPECT_EQ(r.headers, (HeaderBlock{{"status", "ok"}}));
    EXPECT_EQ(std::get<HeadersFrame>(got[2]).headers, (HeaderBlock{{"extra", "1"}}));
    const auto& d = std::get<DataFrame>(got[3]);
    EXPECT_EQ(d.stream_id, 3u);
    EXPECT_EQ(d.data, "hello");
    EXPECT_EQ(d.flags, 0);
    EXPECT_EQ(std::get<DataFrame>(got[4]).flags, kFlagFin);
    EXPECT_TRUE(std::get<DataFrame>(got[4]).data.empty());
    EXPECT_EQ(std::get<RstStreamFrame>(got[5]).status, kRstCancel);
    const auto& st = std::get<SettingsFrame>(got[6]);
    EXPECT_EQ(st.flags, 1);
    ASSERT_EQ(st.settings.size(), 2u);
    EXPECT_EQ(st.settings[0].id, 7u);
    EXPECT_EQ(st.settings[0].value, 65536u);
    EXPECT_EQ(st.settings[1].flags, 1);
    EXPECT_EQ(std::get<PingFrame>(got[7]).id, 0xfffffffeu);
    EXPECT_EQ(std::get<GoAwayFrame>(got[8]).last_good_stream_id, 7u);
    EXPECT_EQ(std::get<WindowUpdateFrame>(got[9]).delta, 4096u);
    EXPECT_EQ(reader.buffered(), 0u);
  }
}

TEST(SpdyTest, LongDataIsSplitWithFinOnTheLastFrame) {
  FrameWriter writer;
  std::string data(kMaxFrameLength + 10, 'd');
  Result<std::string> wire = writer.encode(DataFrame{1, kFlagFin, data});
  ASSERT_TRUE(wire.is_ok());
  FrameReader reader;
  std::vector<Frame> got = read_all(reader, *wire, wire->size());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(std::get<DataFrame>(got[0]).data.size(), kMaxFrameLength);
  EXPECT_EQ(std::get<DataFrame>(got[0]).flags, 0);
  EXPECT_EQ(std::get<DataFrame>(got[1]).data.size(), 10u);
  EXPECT_EQ(std::get<DataFrame>(got[1]).flags, kFlagFin);
}

TEST(SpdyTest, UnknownControlFramesAreHandedOut) {
  FrameReader reader;
  reader.feed(unhex("8003000a00000003616263"));  // type 10, "abc"
  Result<std::optional<Frame>> f = reader.next();
  ASSERT_TRUE(f.is_ok());
  ASSERT_TRUE(f->has_value());
  const auto& u = std::get<UnknownControlFrame>(**f);
  EXPECT_EQ(u.type, 10);
  EXPECT_EQ(u.payload, "abc");
}

TEST(SpdyTest, TheWriterRefusesWhatPeersWouldReject) {
  FrameWriter writer;
  EXPECT_FALSE(writer.encode(SynStreamFrame{1, 0, 0, 0, 0, {{"StreamType", "error"}}}).is_ok());
  EXPECT_FALSE(writer.encode(DataFrame{0, 0, "x"}).is_ok());
  EXPECT_FALSE(writer.encode(DataFrame{0x80000000u, 0, "x"}).is_ok());
  EXPECT_FALSE(writer.encode(UnknownControlFrame{10, 0, ""}).is_ok());
}

Status read_error(const std::string& wire, size_t max_frame = kMaxFrameLength) {
  FrameReader reader(max_frame);
  reader.feed(wire);
  while (true) {
    Result<std::optional<Frame>> f = reader.next();
    if (!f.is_ok()) {
      // Errors are final.
      reader.feed(unhex("800300060000000400000001"));
      EXPECT_FALSE(reader.next().is_ok());
      return f.status();
    }
    if (!f->has_value()) return Status::ok();
  }
}

TEST(SpdyTest, TheReaderRefusesBrokenFrames) {
  // SPDY/2 control frame.
  EXPECT_FALSE(read_error(unhex("800200060000000400000001")).is_ok());
  // A data frame on stream 0.
  EXPECT_FALSE(read_error(unhex("000000000000000161")).is_ok());
  // A frame longer than allowed.
  EXPECT_FALSE(read_error(unhex("0000000100001000"), 1024).is_ok());
  // Too short for its type.
  EXPECT_FALSE(read_error(unhex("80030006000000020000")).is_ok());
  EXPECT_FALSE(read_error(unhex("800300030000000400000001")).is_ok());
  // A SYN_STREAM whose header block is not zlib.
  EXPECT_FALSE(read_error(unhex("80030001000000100000000100000000000000112233445566")).is_ok());
  // A SETTINGS frame that claims more entries than it has.
  EXPECT_FALSE(read_error(unhex("800300040000000c00000002000000070000ffff")).is_ok());
  // Incomplete frames are not errors: more bytes may come.
  EXPECT_TRUE(read_error(unhex("80030006000000")).is_ok());
}

}  // namespace
}  // namespace skiff::kubelet::streaming::spdy
