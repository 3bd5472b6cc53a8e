#pragma once

// RegistryMirror: a read-only OCI distribution API (registry v2) server on the node's loopback
// that serves the images skiff itself imported into containerd (the built-in images, archives in
// the agent's images directory), straight from containerd's content store. With it an offline
// node honours imagePullPolicy Always (and `image: busybox`, whose policy defaults to Always) for
// those images: containerd really pulls, and the pull is answered by the node itself.
//
// containerd finds it through its registry config_path: start() writes
// <hosts_dir>/_default/hosts.toml naming http://127.0.0.1:PORT as a pull + resolve host. The
// `_default` directory applies to every registry that has no directory of its own under
// hosts_dir; containerd asks the mirror first and goes on to the registry itself when the mirror
// answers 404, so an image the mirror does not serve is pulled from where it lives. containerd
// adds ?ns=<registry host> (e.g. ns=docker.io, name library/busybox) to every request it sends to
// a mirror. stop() removes the file again, so containerd never consults a port that may have been
// reused by someone else.
//
// Only imported images, never what containerd pulled from a registry: the mirror is asked before
// every registry, so an image pulled earlier (perhaps with another pod's imagePullSecrets) would
// otherwise be handed to any later Always pull without the registry seeing it: a re-pushed tag
// would never be noticed and a pod without credentials would get a private image. The
// TagResolver decides what is served (containerd_tag_resolver: images whose target carries the
// content label kImportedLabel, which import.h puts on everything it imports).
//
// Served (GET and HEAD; HEAD answers the same headers without the body):
//   /v2/                           200 {} (the API version check)
//   /v2/<name>/manifests/<tag>     the manifest or index that TagResolver::resolve says
//                                  "<ns>/<name>:<tag>" names (without ns, <name> is normalized as
//                                  docker does: library/busybox means docker.io/library/busybox);
//                                  404 when it names nothing the mirror serves
//   /v2/<name>/manifests/<digest>  that blob, when it is the target of a served image
//                                  (TagResolver::targets) or a manifest or index listed in such a
//                                  target index (nested indexes too); 404 otherwise, so a pull by
//                                  digest of anything else goes to its registry as well
//   /v2/<name>/blobs/<digest>      that blob, streamed from the file (one byte range: 206)
// Blobs (configs, layers) are served by digest whatever image they belong to: containerd asks
// for a blob only after it got the manifest that names it, and for an image the mirror does not
// serve that manifest came from the registry, which checked the pull's credentials. A blob digest
// is known only to whoever has that manifest, so serving it gives away nothing new; checking it
// would mean walking every served manifest on each of the many blob requests of a pull.
// Manifests carry their media type as Content-Type; both carry Docker-Content-Digest and
// Content-Length; every answer Docker-Distribution-API-Version: registry/2.0. Errors are JSON
// ({"errors":[{"code":...,"message":...}]}): 404 MANIFEST_UNKNOWN / BLOB_UNKNOWN, 400
// DIGEST_INVALID (only sha256:<64 lowercase hex> is accepted, so no request names a file outside
// the content store) / NAME_INVALID / TAG_INVALID, 405 UNSUPPORTED for other methods, 404
// UNSUPPORTED for paths outside the API, 503 UNAVAILABLE when the resolver fails, 503
// TOOMANYREQUESTS past max_connections. Path escapes are decoded before the path is split, so
// an encoded slash is a slash.
//
// Content is addressed by digest whatever <name> a request uses: a digest names exactly one
// content, and the rules above depend on the digest alone.
//
// Thread-safety: start() and stop() from one thread (stop() also from the destructor); port(),
// url() and hosts_dir() from any thread after start(). The resolver and on_request are called on
// the mirror's I/O threads, possibly concurrently.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

namespace skiff::kubelet::images {

// What a tag names: a manifest or an index in the content store.
struct ManifestDescriptor {
  std::string media_type;  // "" means: read it from the blob's JSON
  std::string digest;      // "sha256:<64 hex>"
};

// What the mirror serves. Both functions may be called concurrently; an error makes the mirror
// answer 503.
struct TagResolver {
  // A full tagged reference, "docker.io/library/busybox:latest", to the descriptor of the manifest
  // or index it names; nullopt when the mirror does not serve that image.
  std::function<Result<std::optional<ManifestDescriptor>>(const std::string& reference)> resolve;
  // The targets of every image the mirror serves (what resolve can answer), for manifests
  // requested by digest. Unset: no manifest is served by digest.
  std::function<Result<std::vector<ManifestDescriptor>>()> targets;

  explicit operator bool() const { return static_cast<bool>(resolve); }
};

// One request the mirror answered, for an access log or a test.
struct MirrorRequest {
  std::string method;
  std::string target;  // path and query as sent
  std::string user_agent;
  std::string accept;
  std::string range;
  int status = 0;
  uint64_t body_bytes = 0;  // body bytes written (0 for HEAD)
  std::chrono::microseconds duration{0};
};

struct RegistryMirrorOptions {
  // containerd's content store, <containerd root>/io.containerd.content.v1.content (see
  // containerd_content_dir()); blobs are read from <content_dir>/blobs/sha256/<hex>.
  std::string content_dir;
  // The registry config_path to give containerd; start() writes _default/hosts.toml in it.
  std::string hosts_dir;
  TagResolver resolve_tag;

  std::string bind_address = "127.0.0.1";
  int port = 0;  // 0 picks a free port
  // A network namespace file (/var/run/netns/NAME) to listen in, for a containerd that runs
  // inside that namespace; "" listens in the caller's.
  std::string network_namespace;
  int io_threads = 2;
  // Connections served at once; further ones get 503 and are closed.
  int max_connections = 64;
  // A read or a write that makes no progress for this long ends its connection.
  std::chrono::milliseconds io_timeout = std::chrono::seconds(60);
  // Called after each answered request (on an I/O thread).
  std::function<void(const MirrorRequest&)> on_request;
};

class RegistryMirror {
 public:
  explicit RegistryMirror(RegistryMirrorOptions options);
  ~RegistryMirror();  // stop()
  RegistryMirror(const RegistryMirror&) = delete;
  RegistryMirror& operator=(const RegistryMirror&) = delete;

  // Binds and listens, writes <hosts_dir>/_default/hosts.toml and starts serving. Errors:
  // kInvalidArgument for missing options, kFailedPrecondition when already started, kUnavailable
  // when the address cannot be bound, kInternal when the namespace cannot be entered or the
  // hosts file written; nothing is left running or written on error.
  Status start();
  // Removes the hosts file, closes every connection and joins the I/O threads. Idempotent.
  void stop();

  int port() const;         // the bound port, after start()
  std::string url() const;  // "http://127.0.0.1:PORT"
  const std::string& hosts_dir() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// <containerd_root>/io.containerd.content.v1.content.
std::string containerd_content_dir(const std::string& containerd_root);

// The hosts.toml that sends every pull and resolve to `mirror_url` first.
std::string render_mirror_hosts_toml(const std::string& mirror_url);

// A TagResolver backed by containerd's own records, in containerd namespace `ns`, over the
// containerd socket at `containerd_address` (a path, or unix://path): resolve gets the image
// record by name (Images service), targets lists the records, and both consider only images whose
// target is labelled kImportedLabel=true in the content store (Content service Info), the images
// skiff imported. A record's target is exactly what the tag names, manifest or index. (The CRI
// ImageStatus cannot answer this for imported images: containerd 1.6 fills repo_digests only from
// digest references, which only a CRI pull creates, and the image id is the config's digest, not
// the manifest's.) Connects lazily, so it may be made before containerd runs; each call has
// `timeout`.
TagResolver containerd_tag_resolver(const std::string& containerd_address,
                                    const std::string& ns = "k8s.io",
                                    std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace skiff::kubelet::images
