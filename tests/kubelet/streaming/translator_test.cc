// The stream translator end to end on loopback sockets: the test plays kubectl (a raw WebSocket
// client speaking v5.channel.k8s.io or the port-forward tunnel) and the runtime's streaming
// server (a raw socket that answers the SPDY upgrade and plays the SPDY server side of a remote
// command), and checks the bytes each side gets.

#include "kubelet/streaming/translator.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kubelet/streaming/spdy.h"
#include "kubelet/streaming/websocket.h"
#include "support/ports.h"
#include "support/raw_http.h"

namespace skiff::kubelet::streaming {
namespace {

using namespace std::chrono_literals;
using skiff::testing::Answer;
using skiff::testing::contains;
using skiff::testing::header_of;
using skiff::testing::Listener;
using skiff::testing::PlainWire;
using skiff::testing::target_of;

constexpr std::array<uint8_t, 4> kMask = {0x12, 0x34, 0x56, 0x78};
constexpr char kSuccess[] = R"({"metadata":{},"status":"Success"})";

// ---- The runtime -------------------------------------------------------------------------------

// The SPDY server side of one runtime connection.
class SpdyPeer {
 public:
  explicit SpdyPeer(PlainWire& wire) : wire_(wire) {}

  // The next frame; nullopt when the connection ended (or timed out) first.
  std::optional<spdy::Frame> read() {
    while (true) {
      Result<std::optional<spdy::Frame>> f = reader_.next();
      EXPECT_TRUE(f.is_ok()) << f.status().to_string();
      if (!f.is_ok()) return std::nullopt;
      if (f->has_value()) return std::move(**f);
      std::string more = wire_.read_some();
      if (more.empty()) return std::nullopt;
      reader_.feed(more);
    }
  }
  bool send(const spdy::Frame& frame) {
    Result<std::string> bytes = writer_.encode(frame);
    EXPECT_TRUE(bytes.is_ok()) << bytes.status().to_string();
    return bytes.is_ok() && wire_.write(*bytes);
  }
  // True when the translator closed the connection (nothing more arrives).
  bool ended() {
    while (true) {
      Result<std::optional<spdy::Frame>> f = reader_.next();
      if (!f.is_ok()) return false;
      if (f->has_value()) continue;  // whatever was still on its way
      std::string more = wire_.read_some();
      if (more.empty()) return !wire_.timed_out();
      reader_.feed(more);
    }
  }

 private:
  PlainWire& wire_;
  spdy::FrameReader reader_;
  spdy::FrameWriter writer_;
};

// A runtime's streaming server on 127.0.0.1 serving one connection with `script` on a thread.
class FakeRuntime {
 public:
  using Script = std::function<void(PlainWire& wire, const std::string& head)>;
  // `receive_buffer`: the SO_RCVBUF of the runtime's connection (0: the system's, which grows
  // to megabytes on loopback).
  explicit FakeRuntime(Script script, int receive_buffer = 0) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(listen_fd_, 0);
    if (receive_buffer > 0) {
      ::setsockopt(listen_fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 4), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, script = std::move(script)] {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, skiff::testing::kRawIoTimeoutSeconds * 1000) != 1) return;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      PlainWire wire(fd);
      std::string head = wire.read_until("\r\n\r\n");
      {
        std::lock_guard lock(mu_);
        head_ = head;
      }
      script(wire, head);
    });
  }
  ~FakeRuntime() {
    join();
    ::close(listen_fd_);
  }
  // Waits for the script to end.
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port()) + path;
  }
  std::string head() {
    std::lock_guard lock(mu_);
    return head_;
  }

 private:
  int listen_fd_ = -1;
  int port_ = 0;
  std::mutex mu_;
  std::string head_;  // guarded by mu_
  std::thread thread_;
};

std::string switching(std::string_view protocol) {
  return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
         "X-Stream-Protocol-Version: " +
         std::string(protocol) + "\r\n\r\n";
}

// Reads the SYN_STREAMs of a remote command and replies to each: stream id → stream type.
std::map<uint32_t, std::string> accept_streams(SpdyPeer& peer, size_t count) {
  std::map<uint32_t, std::string> streams;
  for (size_t i = 0; i < count; ++i) {
    std::optional<spdy::Frame> f = peer.read();
    if (!f) break;
    auto* syn = std::get_if<spdy::SynStreamFrame>(&*f);
    EXPECT_TRUE(syn) << "frame " << i << " is not a SYN_STREAM";
    if (!syn) break;
    streams[syn->stream_id] = spdy::header_value(syn->headers, "streamtype").value_or("?");
    peer.send(spdy::SynReplyFrame{syn->stream_id, 0, {}});
  }
  return streams;
}

// ---- The client --------------------------------------------------------------------------------

// kubectl's side: a WebSocket client on a plain connection to the translator.
class WsClient {
 public:
  WsClient(int port, const std::string& target, const std::string& protocol,
           const std::string& extra_headers = "", const std::string& version = "13") {
    wire_ = skiff::testing::dial_plain(port);
    EXPECT_TRUE(wire_);
    if (!wire_) return;
    wire_->write("GET " + target +
                 " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 "Sec-WebSocket-Version: " +
                 version + "\r\nSec-WebSocket-Key: " + kKey +
                 "\r\nSec-WebSocket-Protocol: " + protocol + "\r\n" + extra_headers + "\r\n");
    answer_ = skiff::testing::read_answer(*wire_);
  }

  static constexpr const char* kKey = "dGhlIHNhbXBsZSBub25jZQ==";

  const Answer& answer() const { return answer_; }
  bool send(ws::Opcode opcode, std::string_view payload) {
    return wire_->write(ws::encode_frame(opcode, payload, true, kMask));
  }
  bool send_channel(uint8_t channel, std::string_view data) {
    std::string payload(1, static_cast<char>(channel));
    payload += data;
    return send(ws::Opcode::kBinary, payload);
  }
  bool send_raw(std::string_view bytes) { return wire_->write(bytes); }
  // The next message from the translator; nullopt when the connection ended (or timed out).
  std::optional<ws::Message> read() {
    while (true) {
      if (std::optional<ws::Message> m = reader_.next()) return m;
      EXPECT_TRUE(reader_.error().is_ok()) << reader_.error().to_string();
      if (!reader_.error().is_ok()) return std::nullopt;
      std::string more = wire_->read_some();
      if (more.empty()) return std::nullopt;
      reader_.feed(more);
    }
  }
  // Messages up to and including the close frame (or the end of the connection).
  std::vector<ws::Message> read_to_close() {
    std::vector<ws::Message> out;
    while (std::optional<ws::Message> m = read()) {
      out.push_back(*m);
      if (m->opcode == ws::Opcode::kClose) break;
    }
    return out;
  }
  bool ended() { return wire_->ended(); }
  void close() { wire_.reset(); }

 private:
  std::unique_ptr<PlainWire> wire_;
  Answer answer_;
  ws::MessageReader reader_{16 * 1024 * 1024, /*require_mask=*/false};
};

// The data of the binary messages on `channel`, joined.
std::string channel_data(const std::vector<ws::Message>& messages, uint8_t channel) {
  std::string out;
  for (const ws::Message& m : messages) {
    if (m.opcode == ws::Opcode::kBinary && !m.payload.empty() &&
        static_cast<uint8_t>(m.payload[0]) == channel) {
      out += m.payload.substr(1);
    }
  }
  return out;
}

uint16_t close_code(const std::vector<ws::Message>& messages) {
  if (messages.empty() || messages.back().opcode != ws::Opcode::kClose) return 0;
  std::optional<ws::CloseInfo> info = ws::parse_close(messages.back().payload);
  return info ? info->code : 0;
}

// ---- The fixture -------------------------------------------------------------------------------

class TranslatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TranslatorOptions options;
    options.runtime_timeout = 5s;
    options.request_timeout = 5s;
    auto t = Translator::start(options);
    ASSERT_TRUE(t.is_ok()) << t.status().to_string();
    translator_ = std::move(t).value();
  }

  std::string exec_target(const std::string& url, bool in, bool out, bool err, bool tty) {
    SessionRequest r;
    r.translation = Translation::kRemoteCommand;
    r.runtime_url = url;
    r.name = "exec default/pod/main";
    r.in = in;
    r.out = out;
    r.err = err;
    r.tty = tty;
    return translator_->session_target(r);
  }

  // Waits until no session is left.
  bool sessions_end() {
    for (int i = 0; i < 200; ++i) {
      if (translator_->active_sessions() == 0) return true;
      std::this_thread::sleep_for(25ms);
    }
    return false;
  }

  std::unique_ptr<Translator> translator_;
};

TEST(ChooseTranslationTest, OnlyTheProtocolsTheRuntimeLacks) {
  EXPECT_EQ(choose_translation("exec", "websocket", "v5.channel.k8s.io"),
            Translation::kRemoteCommand);
  EXPECT_EQ(choose_translation("attach", "WebSocket", "v4.channel.k8s.io, v5.channel.k8s.io"),
            Translation::kRemoteCommand);
  EXPECT_EQ(choose_translation("portforward", "websocket", "SPDY/3.1+portforward.k8s.io"),
            Translation::kPortForwardTunnel);
  // The runtime speaks these itself.
  EXPECT_EQ(choose_translation("exec", "websocket", "v4.channel.k8s.io"), Translation::kNone);
  EXPECT_EQ(choose_translation("exec", "SPDY/3.1", ""), Translation::kNone);
  EXPECT_EQ(choose_translation("portforward", "websocket", "v4.channel.k8s.io"),
            Translation::kNone);
  EXPECT_EQ(choose_translation("portforward", "SPDY/3.1", ""), Translation::kNone);
  // Protocol names are exact; kinds must match.
  EXPECT_EQ(choose_translation("exec", "websocket", "V5.channel.k8s.io"), Translation::kNone);
  EXPECT_EQ(choose_translation("portforward", "websocket", "v5.channel.k8s.io"),
            Translation::kNone);
  EXPECT_EQ(choose_translation("exec", "websocket", "SPDY/3.1+portforward.k8s.io"),
            Translation::kNone);
  EXPECT_EQ(choose_translation("exec", "", "v5.channel.k8s.io"), Translation::kNone);
}

TEST_F(TranslatorTest, ExecStreamsAreTranslated) {
  std::map<uint32_t, std::string> streams;
  std::string stdin_data;
  bool stdin_fin = false;
  bool ping_answered = false;
  bool translator_closed = false;
  FakeRuntime runtime([&](PlainWire& wire, const std::string& head) {
    wire.write(switching("v4.channel.k8s.io"));
    SpdyPeer peer(wire);
    streams = accept_streams(peer, 4);
    // A PING is echoed.
    peer.send(spdy::PingFrame{2});
    // stdin until its FIN, and the ping's answer (in any order).
    while (!stdin_fin || !ping_answered) {
      std::optional<spdy::Frame> f = peer.read();
      if (!f) return;
      if (auto* ping = std::get_if<spdy::PingFrame>(&*f)) ping_answered = ping->id == 2;
      if (auto* data = std::get_if<spdy::DataFrame>(&*f)) {
        EXPECT_EQ(data->stream_id, 3u);
        stdin_data += data->data;
        stdin_fin = (data->flags & spdy::kFlagFin) != 0;
      }
    }
    peer.send(spdy::DataFrame{5, 0, "HELLO WORLD\n"});
    peer.send(spdy::DataFrame{7, 0, "done\n"});
    peer.send(spdy::DataFrame{1, spdy::kFlagFin, kSuccess});
    peer.send(spdy::DataFrame{5, spdy::kFlagFin, ""});
    peer.send(spdy::DataFrame{7, spdy::kFlagFin, ""});
    // Everything owed has arrived: the translator ends the connection.
    translator_closed = peer.ended();
  });

  WsClient client(translator_->port(),
                  exec_target(runtime.url("/exec/tok?x=1"), true, true, true, false),
                  "v5.channel.k8s.io");
  ASSERT_EQ(client.answer().status, 101) << client.answer().head << client.answer().body;
  EXPECT_EQ(header_of(client.answer().head, "Sec-WebSocket-Accept"),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  EXPECT_EQ(header_of(client.answer().head, "Sec-WebSocket-Protocol"), "v5.channel.k8s.io");
  EXPECT_EQ(header_of(client.answer().head, "Upgrade"), "websocket");
  ASSERT_TRUE(client.send_channel(0, "hello "));
  ASSERT_TRUE(client.send(ws::Opcode::kPing, "p1"));
  ASSERT_TRUE(client.send_channel(0, "world\n"));
  ASSERT_TRUE(client.send_channel(255, std::string(1, '\0')));  // stdin EOF
  std::vector<ws::Message> got = client.read_to_close();
  runtime.join();

  // The runtime was asked for SPDY with v4, at the runtime's own path.
  const std::string head = runtime.head();
  EXPECT_TRUE(head.starts_with("POST /exec/tok?x=1 HTTP/1.1\r\n")) << head;
  EXPECT_EQ(header_of(head, "Upgrade"), "SPDY/3.1");
  EXPECT_EQ(header_of(head, "Connection"), "Upgrade");
  EXPECT_EQ(header_of(head, "X-Stream-Protocol-Version"), "v4.channel.k8s.io");
  EXPECT_EQ(streams, (std::map<uint32_t, std::string>{
                         {1, "error"}, {3, "stdin"}, {5, "stdout"}, {7, "stderr"}}));
  EXPECT_EQ(stdin_data, "hello world\n");
  EXPECT_TRUE(stdin_fin);
  EXPECT_TRUE(ping_answered);
  EXPECT_TRUE(translator_closed);

  EXPECT_EQ(channel_data(got, 1), "HELLO WORLD\n");
  EXPECT_EQ(channel_data(got, 2), "done\n");
  EXPECT_EQ(channel_data(got, 3), kSuccess);
  EXPECT_EQ(close_code(got), ws::kCloseNormal);
  bool pong = false;
  for (const ws::Message& m : got) pong |= m.opcode == ws::Opcode::kPong && m.payload == "p1";
  EXPECT_TRUE(pong);
  // The status comes after the output, as the runtime sent it.
  ASSERT_GE(got.size(), 2u);
  EXPECT_EQ(got[got.size() - 2].payload, std::string("\x03") + kSuccess);
  client.close();
  EXPECT_TRUE(sessions_end());
}

TEST_F(TranslatorTest, ATtyHasAResizeStreamAndNoStderr) {
  std::map<uint32_t, std::string> streams;
  std::string resize;
  FakeRuntime runtime([&](PlainWire& wire, const std::string&) {
    wire.write(switching("v4.channel.k8s.io"));
    SpdyPeer peer(wire);
    streams = accept_streams(peer, 3);
    while (resize.find('}') == std::string::npos) {
      std::optional<spdy::Frame> f = peer.read();
      if (!f) return;
      if (auto* data = std::get_if<spdy::DataFrame>(&*f)) {
        EXPECT_EQ(data->stream_id, 5u);
        resize += data->data;
      }
    }
    peer.send(spdy::DataFrame{3, 0, "$ "});
    peer.send(spdy::DataFrame{1, spdy::kFlagFin, kSuccess});
    peer.send(spdy::DataFrame{3, spdy::kFlagFin, ""});
    peer.ended();
  });
  // stderr is asked for, but a tty has none (as upstream's client, which opens no stderr stream
  // with a tty).
  WsClient client(translator_->port(),
                  exec_target(runtime.url("/attach/tok"), false, true, true, true),
                  "v5.channel.k8s.io");
  ASSERT_EQ(client.answer().status, 101) << client.answer().body;
  ASSERT_TRUE(client.send_channel(4, R"({"Width":80,"Height":24})"));
  // stdin data without a stdin stream goes nowhere.
  ASSERT_TRUE(client.send_channel(0, "ignored"));
  std::vector<ws::Message> got = client.read_to_close();
  runtime.join();
  EXPECT_EQ(streams, (std::map<uint32_t, std::string>{{1, "error"}, {3, "stdout"}, {5, "resize"}}));
  EXPECT_EQ(resize, R"({"Width":80,"Height":24})");
  EXPECT_EQ(channel_data(got, 1), "$ ");
  EXPECT_EQ(channel_data(got, 3), kSuccess);
  EXPECT_EQ(close_code(got), ws::kCloseNormal);
}

TEST_F(TranslatorTest, ANonZeroExitStatusPassesAsIs) {
  const std::string failure =
      R"({"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}})";
  FakeRuntime runtime([&](PlainWire& wire, const std::string&) {
    wire.write(switching("v4.channel.k8s.io"));
    SpdyPeer peer(wire);
    accept_streams(peer, 2);
    // As upstream's kubelet closes: the status, then resets and GOAWAY, then the connection.
    peer.send(spdy::DataFrame{1, 0, failure});
    peer.send(spdy::RstStreamFrame{1, spdy::kRstCancel});
    peer.send(spdy::RstStreamFrame{3, spdy::kRstCancel});
    peer.send(spdy::GoAwayFrame{0, 0});
  });
  WsClient client(translator_->port(),
                  exec_target(runtime.url("/exec/tok"), false, true, false, false),
                  "v5.channel.k8s.io");
  ASSERT_EQ(client.answer().status, 101);
  std::vector<ws::Message> got = client.read_to_close();
  runtime.join();
  EXPECT_EQ(channel_data(got, 3), failure);
  EXPECT_EQ(close_code(got), ws::kCloseNormal);
}

TEST_F(TranslatorTest, ARuntimeGoneWithoutAStatusIsAnError) {
  FakeRuntime runtime([&](PlainWire& wire, const std::string&) {
    wire.write(switching("v4.channel.k8s.io"));
    SpdyPeer peer(wire);
    accept_streams(peer, 2);
    peer.send(spdy::DataFrame{3, 0, "partial"});
    // The connection just ends.
  });
  WsClient client(translator_->port(),
                  exec_target(runtime.url("/exec/tok"), false, true, false, false),
                  "v5.channel.k8s.io");
  ASSERT_EQ(client.answer().status, 101);
  std::vector<ws::Message> got = client.read_to_close();
  runtime.join();
  EXPECT_EQ(channel_data(got, 1), "partial");
  std::string status = channel_data(got, 3);
  EXPECT_TRUE(contains(status, R"("status":"Failure")")) << status;
  EXPECT_TRUE(contains(status, R"("reason":"InternalError")")) << status;
  EXPECT_EQ(close_code(got), ws::kCloseNormal);
}

TEST_F(TranslatorTest, ARuntimeRefusalReachesTheClient) {
  FakeRuntime runtime([&](PlainWire& wire, const std::string&) {
    const std::string body = "unable to upgrade: unable to negotiate protocol";
    wire.write(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "X-Content-Type-Options: nosniff\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body);
  });
  WsClient client(translator_->port(),
                  exec_target(runtime.url("/exec/tok"), false, true, false, false),
                  "v5.channel.k8s.io");
  runtime.join();
  EXPECT_EQ(client.answer().status, 403) << client.answer().head;
  EXPECT_EQ(client.answer().body, "unable to upgrade: unable to negotiate protocol");
  EXPECT_EQ(header_of(client.answer().head, "Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(header_of(client.answer().head, "X-Content-Type-Options"), "nosniff");
  EXPECT_TRUE(client.ended());
}

TEST_F(TranslatorTest, AChunkedRefusalIsPassedOnWhole) {
  FakeRuntime runtime([&](PlainWire& wire, const std::string&) {
    wire.write(
        "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
        "6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n");
  });
  WsClient client(translator_->port(),
                  exec_target(runtime.url("/exec/tok"), false, true, false, false),
                  "v5.channel.k8s.io");
  runtime.join();
  EXPECT_EQ(client.answer().status, 400) << client.answer().head;
  EXPECT_EQ(client.answer().body, "hello world");
}

TEST_F(TranslatorTest, AnUnreachableRuntimeIs502) {
  const std::string url =
      "http://127.0.0.1:" + std::to_string(skiff::testing::free_tcp_port()) + "/exec/tok";
  WsClient client(translator_->port(), exec_target(url, false, true, false, false),
                  "v5.channel.k8s.io");
  EXPECT_EQ(client.answer().status, 502);
  EXPECT_TRUE(contains(client.answer().body, "error dialing backend")) << client.answer().body;
}

TEST_F(TranslatorTest, ARuntimeSwitchingToAnotherProtocolIs502) {
  FakeRuntime runtime([&](PlainWire& wire, const std::string&) {
    wire.write(switching("v2.channel.k8s.io"));
    wire.read_some();
  });
  WsClient client(translator_->port(),
                  exec_target(runtime.url("/exec/tok"), false, true, false, false),
                  "v5.channel.k8s.io");
  EXPECT_EQ(client.answer().status, 502) << client.answer().head;
  EXPECT_TRUE(contains(client.answer().body, "v2.channel.k8s.io")) << client.answer().body;
  client.close();
  runtime.join();
}

TEST_F(TranslatorTest, HandshakesThatDoNotQualifyNeverReachTheRuntime) {
  Listener runtime;
  const std::string url = "http://127.0.0.1:" + std::to_string(runtime.port()) + "/exec/tok";
  const std::string target = exec_target(url, false, true, false, false);
  {
    // Another secret.
    std::string other = target;
    other[1] = other[1] == 'a' ? 'b' : 'a';
    WsClient client(translator_->port(), other, "v5.channel.k8s.io");
    EXPECT_EQ(client.answer().status, 404);
  }
  {
    WsClient client(translator_->port(), "/session?translation=remotecommand&to=" + url,
                    "v5.channel.k8s.io");
    EXPECT_EQ(client.answer().status, 404);
  }
  {
    WsClient client(translator_->port(), target, "v4.channel.k8s.io");
    EXPECT_EQ(client.answer().status, 400);
    EXPECT_TRUE(contains(client.answer().body, "v5.channel.k8s.io")) << client.answer().body;
  }
  {
    WsClient client(translator_->port(), target, "v5.channel.k8s.io", "", "8");
    EXPECT_EQ(client.answer().status, 426);
    EXPECT_EQ(header_of(client.answer().head, "Sec-WebSocket-Version"), "13");
  }
  {
    auto wire = skiff::testing::dial_plain(translator_->port());
    ASSERT_TRUE(wire);
    wire->write("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(skiff::testing::read_answer(*wire).status, 400);
  }
  {
    std::string bad_url = target;
    size_t to = bad_url.find("to=");
    bad_url.insert(to + 3, "x");
    WsClient client(translator_->port(), bad_url, "v5.channel.k8s.io");
    EXPECT_EQ(client.answer().status, 400);
  }
  EXPECT_EQ(runtime.accept_fd(200), -1);
  EXPECT_TRUE(sessions_end());
}

TEST_F(TranslatorTest, TargetsCarryTheirTranslatorsSecret) {
  auto other = Translator::start();
  ASSERT_TRUE(other.is_ok());
  SessionRequest r;
  r.translation = Translation::kRemoteCommand;
  r.runtime_url = "http://127.0.0.1:1/exec/a b";
  std::string mine = translator_->session_target(r);
  std::string theirs = (*other)->session_target(r);
  EXPECT_NE(mine, theirs);
  EXPECT_TRUE(contains(mine, "to=http%3A%2F%2F127.0.0.1%3A1%2Fexec%2Fa%20b")) << mine;
  WsClient client(translator_->port(), theirs, "v5.channel.k8s.io");
  EXPECT_EQ(client.answer().status, 404);
}

TEST_F(TranslatorTest, AClientGoingAwayEndsTheRuntimeConnection) {
  bool runtime_saw_end = false;
  FakeRuntime runtime([&](PlainWire& wire, const std::string&) {
    wire.write(switching("v4.channel.k8s.io"));
    SpdyPeer peer(wire);
    accept_streams(peer, 2);
    runtime_saw_end = peer.ended();
  });
  {
    WsClient client(translator_->port(),
                    exec_target(runtime.url("/attach/tok"), false, true, false, false),
                    "v5.channel.k8s.io");
    ASSERT_EQ(client.answer().status, 101);
  }
  runtime.join();
  EXPECT_TRUE(runtime_saw_end);
  EXPECT_TRUE(sessions_end());
}

TEST_F(TranslatorTest, AClientCloseIsAnsweredAndEndsTheSession) {
  bool runtime_saw_end = false;
  FakeRuntime runtime([&](PlainWire& wire, const std::string&) {
    wire.write(switching("v4.channel.k8s.io"));
    SpdyPeer peer(wire);
    accept_streams(peer, 2);
    runtime_saw_end = peer.ended();
  });
  WsClient client(translator_->port(),
                  exec_target(runtime.url("/attach/tok"), false, true, false, false),
                  "v5.channel.k8s.io");
  ASSERT_EQ(client.answer().status, 101);
  ASSERT_TRUE(client.send_raw(ws::encode_close(ws::kCloseGoingAway, "bye", kMask)));
  std::vector<ws::Message> got = client.read_to_close();
  EXPECT_EQ(close_code(got), ws::kCloseGoingAway);
  runtime.join();
  EXPECT_TRUE(runtime_saw_end);
}

TEST_F(TranslatorTest, ABrokenClientFrameClosesWith1002) {
  bool runtime_saw_end = false;
  FakeRuntime runtime([&](PlainWire& wire, const std::string&) {
    wire.write(switching("v4.channel.k8s.io"));
    SpdyPeer peer(wire);
    accept_streams(peer, 2);
    runtime_saw_end = peer.ended();
  });
  WsClient client(translator_->port(),
                  exec_target(runtime.url("/exec/tok"), true, false, false, false),
                  "v5.channel.k8s.io");
  ASSERT_EQ(client.answer().status, 101);
  // Unmasked.
  ASSERT_TRUE(client.send_raw(ws::encode_frame(ws::Opcode::kBinary, std::string("\x00hi", 3))));
  std::vector<ws::Message> got = client.read_to_close();
  EXPECT_EQ(close_code(got), ws::kCloseProtocolError);
  runtime.join();
  EXPECT_TRUE(runtime_saw_end);
}

TEST_F(TranslatorTest, ADirectionThatWaitsNeverStallsTheOther) {
  // A command that writes all its output before it reads its input (as a filter with a large
  // input does, once its pipes are full): the runtime reads no stdin until the client has read
  // the output, while the client keeps sending stdin. The translator must carry the output
  // while the stdin waits. (The output is larger than what loopback sockets buffer.)
  constexpr size_t kOutput = 96 * 1024 * 1024;
  constexpr size_t kInput = 16 * 1024 * 1024;
  size_t stdin_bytes = 0;
  FakeRuntime runtime(
      [&](PlainWire& wire, const std::string&) {
        wire.write(switching("v4.channel.k8s.io"));
        SpdyPeer peer(wire);
        accept_streams(peer, 3);
        // The client's stdin fills the connection meanwhile.
        std::this_thread::sleep_for(500ms);
        const std::string piece(64 * 1024, 'o');
        for (size_t sent = 0; sent < kOutput; sent += piece.size()) {
          if (!peer.send(spdy::DataFrame{5, 0, piece})) return;
        }
        while (true) {
          std::optional<spdy::Frame> f = peer.read();
          if (!f) return;
          if (auto* data = std::get_if<spdy::DataFrame>(&*f)) {
            stdin_bytes += data->data.size();
            if (data->flags & spdy::kFlagFin) break;
          }
        }
        peer.send(spdy::DataFrame{1, spdy::kFlagFin, kSuccess});
        peer.send(spdy::DataFrame{5, spdy::kFlagFin, ""});
        peer.ended();
      },
      /*receive_buffer=*/16 * 1024);

  // The client reads and writes at once, as kubectl does, on a socket of its own.
  int fd = skiff::testing::dial_loopback(translator_->port());
  ASSERT_GE(fd, 0);
  const std::string target = exec_target(runtime.url("/exec/tok"), true, true, false, false);
  const std::string request =
      "GET " + target +
      " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
      WsClient::kKey + "\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n";
  ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::thread writer([fd] {
    const std::string chunk(32 * 1024, 'i');
    std::string frames;
    for (size_t sent = 0; sent < kInput; sent += chunk.size()) {
      frames += ws::encode_frame(ws::Opcode::kBinary, std::string(1, '\0') + chunk.substr(1), true,
                                 kMask);
    }
    frames += ws::encode_frame(ws::Opcode::kBinary, std::string("\xff\x00", 2), true, kMask);
    std::string_view left = frames;
    while (!left.empty()) {
      ssize_t n = ::send(fd, left.data(), left.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      left.remove_prefix(static_cast<size_t>(n));
    }
  });
  std::string head;
  ws::MessageReader reader(16 * 1024 * 1024, /*require_mask=*/false);
  size_t stdout_bytes = 0;
  std::string status;
  bool closed = false;
  char buf[64 * 1024];
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  while (!closed) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    std::string_view got(buf, static_cast<size_t>(n));
    if (head.find("\r\n\r\n") == std::string::npos) {
      head.append(got);
      size_t end = head.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      got = std::string_view();
      reader.feed(std::string_view(head).substr(end + 4));
      head.resize(end + 4);
    }
    reader.feed(got);
    while (std::optional<ws::Message> m = reader.next()) {
      if (m->opcode == ws::Opcode::kClose) closed = true;
      if (m->opcode != ws::Opcode::kBinary || m->payload.empty()) continue;
      if (m->payload[0] == 1) stdout_bytes += m->payload.size() - 1;
      if (m->payload[0] == 3) status += m->payload.substr(1);
    }
  }
  writer.join();
  ::close(fd);
  runtime.join();
  EXPECT_TRUE(head.starts_with("HTTP/1.1 101 ")) << head;
  EXPECT_EQ(stdout_bytes, kOutput);
  EXPECT_EQ(stdin_bytes, kInput / (32 * 1024) * (32 * 1024 - 1));
  EXPECT_EQ(status, kSuccess);
  EXPECT_TRUE(closed);
}

TEST_F(TranslatorTest, PortForwardTunnelsBytes) {
  std::string received;
  FakeRuntime runtime([&](PlainWire& wire, const std::string&) {
    wire.write(switching("portforward.k8s.io") + "early");
    // Bytes as they come, upper-cased back, until "!".
    while (received.find('!') == std::string::npos) {
      std::string got = wire.read_some();
      if (got.empty()) return;
      received += got;
      wire.write(skiff::testing::upper(got));
    }
  });
  SessionRequest r;
  r.translation = Translation::kPortForwardTunnel;
  r.runtime_url = runtime.url("/portforward/tok");
  r.name = "portforward default/pod";
  WsClient client(translator_->port(), translator_->session_target(r),
                  "SPDY/3.1+portforward.k8s.io");
  ASSERT_EQ(client.answer().status, 101) << client.answer().body;
  EXPECT_EQ(header_of(client.answer().head, "Sec-WebSocket-Protocol"),
            "SPDY/3.1+portforward.k8s.io");
  std::string from_runtime;
  auto read_until = [&](std::string_view want) {
    while (from_runtime.find(want) == std::string::npos) {
      std::optional<ws::Message> m = client.read();
      if (!m) return false;
      if (m->opcode == ws::Opcode::kBinary) from_runtime += m->payload;
      if (m->opcode == ws::Opcode::kClose) return false;
    }
    return true;
  };
  EXPECT_TRUE(read_until("early"));
  // Small messages, as kubectl writes each SPDY field on its own, and a large one.
  ASSERT_TRUE(client.send(ws::Opcode::kBinary, "\x80\x03"));
  ASSERT_TRUE(client.send(ws::Opcode::kBinary, "abc"));
  EXPECT_TRUE(read_until("ABC"));
  std::string big(100000, 'z');
  ASSERT_TRUE(client.send(ws::Opcode::kBinary, big));
  EXPECT_TRUE(read_until(skiff::testing::upper(big)));
  ASSERT_TRUE(client.send(ws::Opcode::kPing, "ka"));
  ASSERT_TRUE(client.send(ws::Opcode::kBinary, "bye!"));
  std::vector<ws::Message> rest = client.read_to_close();
  for (const ws::Message& m : rest) {
    if (m.opcode == ws::Opcode::kBinary) from_runtime += m.payload;
  }
  runtime.join();
  EXPECT_TRUE(from_runtime.ends_with("BYE!")) << from_runtime.substr(from_runtime.size() - 20);
  EXPECT_EQ(received, std::string("\x80\x03") + "abc" + big + "bye!");
  bool pong = false;
  for (const ws::Message& m : rest) pong |= m.opcode == ws::Opcode::kPong && m.payload == "ka";
  EXPECT_TRUE(pong);
  // The runtime closed: a normal close.
  EXPECT_EQ(close_code(rest), ws::kCloseNormal);
  const std::string head = runtime.head();
  EXPECT_EQ(target_of(head), "/portforward/tok");
  EXPECT_EQ(header_of(head, "X-Stream-Protocol-Version"), "portforward.k8s.io");
  EXPECT_EQ(header_of(head, "Upgrade"), "SPDY/3.1");
}

TEST_F(TranslatorTest, StopEndsSessions) {
  FakeRuntime runtime([&](PlainWire& wire, const std::string&) {
    wire.write(switching("v4.channel.k8s.io"));
    SpdyPeer peer(wire);
    accept_streams(peer, 2);
    peer.ended();
  });
  WsClient client(translator_->port(),
                  exec_target(runtime.url("/attach/tok"), false, true, false, false),
                  "v5.channel.k8s.io");
  ASSERT_EQ(client.answer().status, 101);
  ASSERT_EQ(translator_->active_sessions(), 1);
  translator_->stop();
  EXPECT_EQ(translator_->active_sessions(), 0);
  // The client's connection ended.
  client.read_to_close();
  EXPECT_TRUE(client.ended());
  runtime.join();
}

}  // namespace
}  // namespace skiff::kubelet::streaming
