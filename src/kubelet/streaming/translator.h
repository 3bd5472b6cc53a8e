#pragma once

// Translates the streaming protocols kubectl speaks into the ones the container runtime's
// streaming server speaks, inside the kubelet. containerd's CRI streaming server speaks SPDY/3.1
// and WebSocket channel.k8s.io up to v4; kubectl 1.30+ opens exec and attach with WebSocket
// v5.channel.k8s.io and kubectl 1.31+ port-forward with SPDY tunnelled through WebSocket. Without
// translation, the runtime refuses those and kubectl falls back to plain SPDY; upstream's API
// server translates instead, and skiff's kubelet does:
//
// - remote command (exec, attach): WebSocket v5.channel.k8s.io with the client; SPDY/3.1 with
//   v4.channel.k8s.io to the runtime, as a client opening the streams upstream's remote command
//   client opens (error, then stdin, stdout, stderr as asked, and resize with a tty). Binary
//   messages on channel 0 become stdin data and on 4 resize data; the v5 close of channel 0
//   (`ff 00`) ends stdin (FIN); stdout, stderr and error-stream data go to the client on channels
//   1, 2 and 3 (v4's error stream carries the final v1 Status, Success included, which is what v5
//   wants on channel 3). When the runtime ends the session the client gets what is left, then a
//   close frame 1000.
// - port-forward: WebSocket with the subprotocol SPDY/3.1+portforward.k8s.io with the client;
//   SPDY/3.1 portforward.k8s.io to the runtime. kubectl speaks SPDY inside the tunnel itself, so
//   the bytes are only unwrapped from and wrapped into binary messages.
//
// The translator is a plain HTTP server on a loopback port. The kubelet's server relays an
// upgrade request that asks for one of these protocols to session_target() on that port instead
// of to the runtime; the translator validates the WebSocket handshake, dials the runtime, and
// answers the client 101 only once the runtime has switched protocols: a runtime's refusal (or
// a runtime that cannot be reached, 502) reaches the client as an ordinary answer, so kubectl can
// still fall back to SPDY. A random secret in every session path keeps other local users off the
// runtime. Sessions are few and long: one thread each, with poll(). Once both sides have
// switched, each direction's bytes are queued and written as its socket takes them, so a side
// that stops reading (a runtime holding back stdin while its command writes) never stalls the
// other direction; a side is read only while the queue towards the other is short.
//
// Thread-safety: start() and stop() (and the destructor) from one thread; port(),
// session_target() and active_sessions() from any thread.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace skiff::kubelet::streaming {

// The protocols a client asks for (Sec-WebSocket-Protocol), and what the runtime is asked for
// (X-Stream-Protocol-Version).
inline constexpr std::string_view kRemoteCommandV5 = "v5.channel.k8s.io";
inline constexpr std::string_view kRemoteCommandV4 = "v4.channel.k8s.io";
inline constexpr std::string_view kPortForwardTunnel = "SPDY/3.1+portforward.k8s.io";
inline constexpr std::string_view kPortForward = "portforward.k8s.io";

enum class Translation : uint8_t {
  kNone,
  kRemoteCommand,      // exec, attach: WebSocket v5 → SPDY v4
  kPortForwardTunnel,  // portforward: SPDY in WebSocket → SPDY
};

// The translation an upgrade request to the kubelet asks for: `kind` is "exec", "attach" or
// "portforward"; `upgrade` its Upgrade header; `websocket_protocols` its Sec-WebSocket-Protocol
// values (comma-separated; several header lines joined with commas). kNone when the request is
// not a WebSocket upgrade offering v5.channel.k8s.io (exec, attach) or
// SPDY/3.1+portforward.k8s.io (portforward): the runtime serves those itself.
Translation choose_translation(std::string_view kind, std::string_view upgrade,
                               std::string_view websocket_protocols);

// One session to translate.
struct SessionRequest {
  Translation translation = Translation::kNone;
  // The runtime's streaming URL for the request: http://HOST:PORT/PATH.
  std::string runtime_url;
  // For logs, e.g. "exec default/web/main".
  std::string name;
  // Remote command only: which streams are attached, and whether the container has a tty.
  bool in = false;
  bool out = false;
  bool err = false;
  bool tty = false;
};

struct TranslatorOptions {
  // Loopback only: sessions carry no credentials but the secret.
  std::string bind_address = "127.0.0.1";
  // Dialing the runtime and waiting for its answer, each.
  std::chrono::milliseconds runtime_timeout{30'000};
  // Waiting for a relayed request's head.
  std::chrono::milliseconds request_timeout{30'000};
  // Sessions at once; more are answered 429.
  int max_sessions = 256;
};

class Translator {
 public:
  // Binds 127.0.0.1:<ephemeral> and starts accepting sessions.
  static Result<std::unique_ptr<Translator>> start(TranslatorOptions options = {});
  ~Translator();
  Translator(const Translator&) = delete;
  Translator& operator=(const Translator&) = delete;

  int port() const;
  // The path and query to relay the client's upgrade request to, on 127.0.0.1:port(). The
  // request's own headers (Upgrade, Sec-WebSocket-*) must come with it.
  std::string session_target(const SessionRequest& request) const;
  // Sessions being served right now.
  int active_sessions() const;

  // Stops accepting, ends every session (both of its connections are shut down) and joins the
  // threads. Idempotent.
  void stop();

  struct Impl;

 private:
  explicit Translator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace skiff::kubelet::streaming
