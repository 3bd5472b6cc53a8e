#pragma once

// pods/log: GET /api/v1/namespaces/{ns}/pods/{name}/log, answered by the kubelet of the pod's
// node, as upstream's LogREST does:
// - the query is PodLogOptions (container, follow, previous, timestamps, tailLines,
//   sinceSeconds, sinceTime, limitBytes, stream): undecodable values are 400, invalid ones
//   422 (PodLogOptions "x" is invalid: ...);
// - the pod must exist (404); without `container` a pod with one container means that one,
//   with several it is 400 "a container name must be specified for pod x, choose one of:
//   [a b]" (init and ephemeral containers listed too); an unknown container is 400
//   "container c is not valid for pod x";
// - a pod not bound to a node has no logs yet: 204 No Content (upstream's empty location);
// - the node's address is its InternalIP (then ExternalIP, InternalDNS, ExternalDNS,
//   Hostname), its port status.daemonEndpoints.kubeletEndpoint.Port (10250 when unset); a node
//   without an address is 500 "no preferred addresses found; known addresses: [...]";
// - the API server calls https://IP:PORT/containerLogs/{ns}/{pod}/{container}?... with its
//   kubelet client certificate and relays the kubelet's body as text/plain, chunked, as it
//   arrives (a follow lasts until the kubelet ends it or the client goes away); a kubelet's
//   error answer becomes a Status (400 keeps the kubelet's text as the message; 404 "the server
//   could not find the requested resource ( pods/log x)"; 500 "Internal error occurred: ...");
//   a kubelet that cannot be reached is 500 with Go's "Get \"https://...\": ..." message.
//
// Relays run on threads of their own, so long follows never hold the server's worker threads.
//
// Thread-safety: handle() may be called concurrently; stop() once, from the thread that stops
// the server, before the HTTP server stops.

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "apiserver/registry.h"
#include "apiserver/request_info.h"
#include "base/pki.h"
#include "httpserver/proxy_client.h"

namespace skiff::apiserver {

// The API server's client certificate for kubelets: <dir>/kubelet-client.crt and .key, CN
// kube-apiserver-kubelet-client in O system:masters, issued by `ca`; reused while it was
// issued by `ca`, has that subject and is not within pki::kRenewBefore of expiry.
struct KubeletClientCert {
  std::string cert_file;
  std::string key_file;
  bool issued = false;
};
Result<KubeletClientCert> ensure_kubelet_client_cert(const std::string& dir,
                                                     const pki::CertificateAuthority& ca);

class PodLogs {
 public:
  // `kubelets` carries the client certificate (and, optionally, the CA kubelets' serving
  // certificates are verified against).
  PodLogs(Registry& registry, std::unique_ptr<http::ProxyClient> kubelets);
  ~PodLogs();
  PodLogs(const PodLogs&) = delete;
  PodLogs& operator=(const PodLogs&) = delete;

  // Serves a pods/log request (info.resource "pods", info.subresource "log").
  void handle(const RequestInfo& info, Request& request, Responder& responder);

  // Ends open relays and joins their threads; later log requests are answered 503.
  void stop();

 private:
  struct Relay;

  Registry& registry_;
  const std::unique_ptr<http::ProxyClient> kubelets_;
  std::mutex mu_;
  std::list<Relay> relays_;  // guarded by mu_
  bool stopped_ = false;     // guarded by mu_
};

// pods/exec, pods/attach and pods/portforward (GET or POST, as kubectl sends them with an
// upgrade to WebSocket or SPDY/3.1): relayed to the kubelet of the pod's node, as upstream's
// UpgradeAwareHandler does, which relays them on to the runtime's streaming server. The bytes
// are not interpreted on the way: the client and the runtime speak the streaming protocol.
// kubectl 1.30+ first asks for WebSocket v5.channel.k8s.io; a runtime without it answers with
// an error and kubectl retries with SPDY/3.1, which every runtime speaks.
// - the pod must exist (404), be bound to a node (400 "pod x does not have a host assigned")
//   and not be finished (400 "cannot exec into a container in a completed pod; current phase
//   is Succeeded"); the container is chosen as for pods/log;
// - exec needs a command and at least one of stdin, stdout, stderr (400); attach the latter;
// - the kubelet gets /exec/{ns}/{pod}/{container}?command=...&error=1&input=1&output=1&tty=1
//   (upstream's parameter names), /attach/... or /portforward/{ns}/{pod}?port=N (the
//   PodPortForwardOptions ports; 400 for one not in 1-65535), over TLS with the API
//   server's kubelet client certificate; an unreachable kubelet is 502.
class PodStreams {
 public:
  // `kubelet_tls`: the TLS settings (ca_file, cert_file, key_file) of every relay.
  PodStreams(Registry& registry, http::UpgradeTarget kubelet_tls);

  // Serves info.subresource "exec", "attach" or "portforward" of a pod.
  void handle(const RequestInfo& info, Request& request, Responder& responder);

 private:
  Registry& registry_;
  const http::UpgradeTarget kubelet_tls_;
};

}  // namespace skiff::apiserver
