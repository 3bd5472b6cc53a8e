#pragma once

// Static pods: pod manifests (YAML or JSON, one pod per file; also a v1 List or several YAML
// documents) in the kubelet's manifest directory run on this node without the API server
// deciding. As upstream's file source does, each pod is named <name>-<node>, bound to the node,
// gets a UID derived from its content, the node and the file (so an edit replaces the pod), the
// annotations kubernetes.io/config.source=file, kubernetes.io/config.hash=<uid> and
// kubernetes.io/config.seen, and the defaults the API server would have given it. The kubelet
// shows each one in the API as a mirror pod (annotation kubernetes.io/config.mirror).
//
// Thread-safety: pure functions.

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

// YAML (one or more documents) or JSON text as JSON values, one per document.
Result<std::vector<Json>> parse_manifests(const std::string& text);

// The static pods of one manifest file's text. kInvalidArgument names what is wrong (not a Pod,
// no name, no containers).
Result<std::vector<Json>> static_pods_from(const std::string& text, const std::string& file,
                                           const std::string& node_name);

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
