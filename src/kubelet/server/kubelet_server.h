#pragma once

// The kubelet's HTTP endpoints, as upstream's kubelet serves them:
// - the HTTPS port (--port, 10250): client certificates verified against the cluster CA (or
//   bearer tokens, when a token authenticator is given) are required; serves /healthz, /pods,
//   /stats/summary, /metrics/resource, /containerLogs/{namespace}/{pod}/{container} (what
//   `kubectl logs` reaches through the API server's pods/log), /exec, /attach and
//   /portforward (`kubectl exec`, `attach` and `port-forward`, see below), and POST /run (a
//   command run to its end, its output as the answer).
// - the read-only port (--read-only-port, plain HTTP, off unless set): /healthz, /pods,
//   /stats/summary and /metrics/resource, without authentication.
// - the healthz port (--healthz-port, 10248 on 127.0.0.1, plain HTTP): /healthz. When it
//   cannot be bound the kubelet carries on without it (logged), as upstream's does.
//
// /containerLogs takes PodLogOptions as query parameters: follow, previous, timestamps,
// tailLines (and the older "tail", where "all" means every line), sinceSeconds, sinceTime
// (RFC 3339), limitBytes and stream (All, Stdout, Stderr). Bad values are 400 (undecodable) or
// 422 (invalid, e.g. tailLines < 0); an unknown pod or container is 404 with a plain message as
// upstream's ("pod \"x\" does not exist", "container \"c\" not found in pod \"x\""); a missing
// previous instance is 400. The body is text/plain and chunked; with follow it grows while the
// container runs and ends when it exits, the log file goes away, or the client disconnects.
// Each log stream is read on a thread of its own, so long follows never hold the server's
// worker threads.
//
// POST /pods (HTTPS port only; body: one Pod manifest, JSON or YAML) runs the pod as a static
// pod (config.source=api) and answers 201 with the pod as the kubelet will run it (named
// <name>-<node>); 400 for a bad manifest, 409 when a static pod of that name exists, 415 for a
// body that is neither JSON nor YAML. DELETE /pods/{name} (the final name) stops such a pod
// (200; 404 when unknown). Errors are v1 Status objects. These pods live in the kubelet's memory
// only: a restarted kubelet no longer runs them. Both are 405 when their callbacks are not set.
//
// /exec, /attach and /portforward are upgrade requests, relayed (bytes both ways) to the
// runtime's streaming server at the URL PodLookup::stream_url names. containerd's speaks SPDY/3.1
// and WebSocket up to v4.channel.k8s.io; what it lacks is relayed instead to the server's stream
// translator (kubelet/streaming/translator.h, on a loopback port of its own, started with the
// server unless translate_streams is off), which speaks the client's protocol and SPDY/3.1 to the
// runtime: a WebSocket upgrade offering v5.channel.k8s.io to /exec or /attach (kubectl 1.30+), and
// one offering SPDY/3.1+portforward.k8s.io to /portforward (kubectl 1.31+). Every other upgrade
// (kubectl's SPDY, the Python client's WebSocket v4) reaches the runtime as it came.
//
// /stats/summary (GET or POST) answers the node's stats Summary as JSON (stats/v1alpha1);
// only_cpu_and_memory=true asks for CPU and memory only. /metrics/resource (GET) answers the
// resource metrics in the Prometheus text format. A provider error is 500 ("Internal Error: ...").
// Both are 404 when their PodLookup callback is not set.
//
// Thread-safety: create() and stop() from one thread; the lookup callbacks are called from the
// server's threads, concurrently.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "httpserver/http.h"
#include "kubelet/logs/cri_log.h"

namespace skiff::kubelet::server {

// Where a container's logs are and what state it is in.
struct ContainerLogTarget {
  // <log_root>/<namespace>_<pod>_<uid>/<container>: the logs are <restartCount>.log inside.
  std::string container_log_dir;
  // The restart count of the container's current instance (its log is <restart_count>.log;
  // `previous` reads <restart_count - 1>.log).
  int restart_count = 0;
  // Optional: false once the current instance no longer runs (a follow then reads the rest of
  // the file and ends). Without it, a follow ends only with the client or the file.
  std::function<bool()> running;
};

// An exec, attach or port-forward request, as the API server relays it:
// /exec/{ns}/{pod}/{container}?command=...&input=1&output=1&error=1&tty=1 (stdin, stdout,
// stderr are read too), /attach/{ns}/{pod}/{container}?..., /portforward/{ns}/{pod}.
struct StreamRequest {
  std::string kind;  // "exec", "attach" or "portforward"
  std::string ns;
  std::string pod;
  std::string container;  // "" for portforward
  std::vector<std::string> command;
  // portforward: the port=N parameters (SPDY clients name their ports per stream instead).
  std::vector<int32_t> ports;
  // Which of the container's stdin, stdout and stderr are attached, and whether it is a tty.
  bool in = false;
  bool out = false;
  bool err = false;
  bool tty = false;
};

// A /run request: POST /run/{ns}/{pod}/{container}?cmd=... or /run/{ns}/{pod}/{uid}/{container}
// (uid empty in the first form). The command is the cmd parameter split at every space, as
// upstream's kubelet splits it.
struct RunRequest {
  std::string ns;
  std::string pod;
  std::string uid;
  std::string container;
  std::vector<std::string> command;
};

// How the server learns about the kubelet's pods. pod_list and container_log must be set.
struct PodLookup {
  // /pods: the pods this kubelet runs, as a v1 PodList (JSON text).
  std::function<std::string()> pod_list;
  // /containerLogs: the container's logs. Errors become the answer: kNotFound → 404, any other
  // code → 400 (e.g. "container \"c\" in pod \"p\" is waiting to start: ContainerCreating"),
  // with the Status' message as the body.
  std::function<Result<ContainerLogTarget>(const std::string& ns, const std::string& pod,
                                           const std::string& container)>
      container_log;
  // Optional. /stats/summary: the Summary as JSON text; the argument is only_cpu_and_memory.
  std::function<Result<std::string>(bool only_cpu_and_memory)> stats_summary;
  // Optional. /metrics/resource: the metrics as Prometheus text (scrape errors are in the text).
  std::function<std::string()> resource_metrics;
  // Optional. /exec, /attach, /portforward: the runtime's streaming URL for the request (CRI
  // Exec, Attach, PortForward; http://127.0.0.1:PORT/...), to which the connection is then
  // relayed, directly or through the stream translator (see above). Errors as container_log's.
  std::function<Result<std::string>(const StreamRequest&)> stream_url;
  // Optional. /run: runs the command in the container to its end and returns its stdout then
  // its stderr. kNotFound → 404; a command that exits non-zero, or any other error → 500 with
  // the Status' message as the body.
  std::function<Result<std::string>(const RunRequest&)> run;
  // Optional. POST /pods: runs the manifest as a static pod and returns that pod (JSON text).
  // kInvalidArgument → 400, kAlreadyExists → 409, other errors → 500.
  std::function<Result<std::string>(const std::string& manifest)> create_pod;
  // Optional. DELETE /pods/{name}: stops the pod create_pod started. kNotFound → 404.
  std::function<Status(const std::string& name)> delete_pod;
};

// Message texts for PodLookup::container_log errors, as upstream's kubelet words them.
std::string pod_not_found_message(const std::string& pod);
std::string container_not_found_message(const std::string& container, const std::string& pod);

struct KubeletServerOptions {
  std::string node_name;
  std::string address = "0.0.0.0";
  int port = 10250;  // 0 picks a free port
  // Plain HTTP without authentication; nullopt: off (upstream's --read-only-port=0).
  std::optional<int> read_only_port;
  std::string healthz_bind_address = "127.0.0.1";
  std::optional<int> healthz_port = 10248;  // nullopt: off

  // TLS. With tls_cert_file/tls_key_file, those are served; otherwise a certificate is kept in
  // cert_dir (see serving_cert.h): issued by the cluster CA when ca_key_file is set, else
  // self-signed. serving_sans adds names and addresses (the node's IPs) to it.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string cert_dir;
  std::vector<std::string> serving_sans;
  std::string client_ca_file;  // the cluster CA: client certificates must chain to it
  std::string ca_key_file;

  // Bearer tokens (optional): the user for a token, or nullopt when the token is not valid.
  std::function<std::optional<http::UserInfo>(std::string_view token)> token_authenticator;
  // Lets requests without credentials in (as system:anonymous); off by default.
  bool anonymous_auth = false;
  // /healthz: ok unless this returns an error (optional).
  std::function<Status()> health_check;

  // Starts the stream translator (see above) when PodLookup::stream_url is set; off: every
  // upgrade reaches the runtime as it came (and kubectl falls back to SPDY where it must).
  bool translate_streams = true;

  int worker_threads = 8;
  // Log streams open at once; more are answered 429.
  int max_log_streams = 256;
  std::chrono::milliseconds follow_poll_interval{250};
};

// The query of a /containerLogs request, decoded.
struct ContainerLogQuery {
  logs::LogOptions options;
  bool previous = false;
};

// Decodes and validates PodLogOptions from the query; `now_ns` resolves sinceSeconds.
// kInvalidArgument: a value does not decode (400); kOutOfRange: a value is not allowed (422).
Result<ContainerLogQuery> parse_container_log_query(const http::Request& request, int64_t now_ns);

class KubeletServer {
 public:
  // Prepares the serving certificate, binds every enabled port and starts serving.
  static Result<std::unique_ptr<KubeletServer>> create(KubeletServerOptions options,
                                                       PodLookup lookup);
  ~KubeletServer();
  KubeletServer(const KubeletServer&) = delete;
  KubeletServer& operator=(const KubeletServer&) = delete;

  // Bound ports (useful with port 0); 0 for a port that is off.
  int port() const;
  int read_only_port() const;
  int healthz_port() const;
  // The serving certificate in use (PEM file).
  const std::string& cert_file() const;
  // Log streams being served right now.
  int active_log_streams() const;

  // Ends log streams, stops serving and joins every thread. Idempotent.
  void stop();

  struct Impl;

 private:
  explicit KubeletServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace skiff::kubelet::server
