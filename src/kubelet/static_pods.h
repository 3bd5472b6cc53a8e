#pragma once

// Static pods: pods that run on this node without the API server deciding. They come from three
// sources: manifests (YAML or JSON, one pod per file; also a v1 List or several YAML documents)
// in the kubelet's manifest directory (config.source "file"), the body of a URL the kubelet
// fetches periodically (--manifest-url; "http"), and POST /pods on the kubelet's own HTTPS port
// ("kubelet-api"; those live in the kubelet's memory only). As upstream's sources do, each pod is
// named <name>-<node>, bound to the node, gets a UID derived from its content, the node and its
// origin (so an edit replaces the pod), the annotations kubernetes.io/config.source=<source>,
// kubernetes.io/config.hash=<uid> and kubernetes.io/config.seen, and the defaults the API server
// would have given it. The kubelet shows each one in the API as a mirror pod (annotation
// kubernetes.io/config.mirror).
//
// Thread-safety: pure functions, except fetch_manifest_url, which blocks on the network (and
// is safe to call from any thread).

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"

namespace skiff::kubelet {

using Json = nlohmann::json;

inline constexpr char kConfigSourceAnnotation[] = "kubernetes.io/config.source";
inline constexpr char kConfigHashAnnotation[] = "kubernetes.io/config.hash";
inline constexpr char kConfigMirrorAnnotation[] = "kubernetes.io/config.mirror";
inline constexpr char kConfigSeenAnnotation[] = "kubernetes.io/config.seen";

// The values of kubernetes.io/config.source.
inline constexpr char kFileSource[] = "file";
inline constexpr char kHttpSource[] = "http";
// Not upstream's "api", which marks the API server's own pods and so no static pod.
inline constexpr char kApiSource[] = "kubelet-api";

// YAML (one or more documents) or JSON text as JSON values, one per document.
Result<std::vector<Json>> parse_manifests(const std::string& text);

// The static pods of one manifest's text; `origin` (the file's path, the URL) takes part in the
// UID and prefixes error messages, `source` is the config.source annotation. kInvalidArgument
// names what is wrong (not a Pod, no name, no containers).
Result<std::vector<Json>> static_pods_from(const std::string& text, const std::string& origin,
                                           const std::string& node_name,
                                           const std::string& source = kFileSource);

// A --manifest-url-header value, "Name:Value".
struct UrlHeader {
  std::string name;
  std::string value;
};
// Parses "Name:Value" (the name must not be empty). kInvalidArgument otherwise.
Result<UrlHeader> parse_url_header(const std::string& flag);

// GETs an http:// or https:// URL (https verified against the system's CA store) with the
// given headers and returns the body. kUnavailable when it cannot be fetched or the answer is
// not 200 (the message says which), kInvalidArgument for a URL that cannot be used.
Result<std::string> fetch_manifest_url(const std::string& url,
                                       const std::vector<UrlHeader>& headers);

struct ManifestFile {
  std::string path;
  Status error;  // why the file was skipped, if it was
};

// Every static pod in `dir` (files starting with "." are ignored). Files that cannot be read
// or parsed are reported in `skipped` and otherwise ignored, as upstream does.
std::vector<Json> read_manifest_dir(const std::string& dir, const std::string& node_name,
                                    std::vector<ManifestFile>* skipped = nullptr);

// The mirror pod the API shows for a static pod (its UID and status come from the API server).
Json mirror_pod_for(const Json& static_pod);
bool is_mirror_pod(const Json& pod);

}  // namespace skiff::kubelet
