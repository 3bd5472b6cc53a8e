#pragma once

// Importing image archives into containerd, for nodes without a registry: the built-in images and
// whatever the administrator drops into the agent's images directory. Runs containerd's own
// client, `ctr -n k8s.io --address SOCK images import [--base-name NAME] FILE`, which reads OCI
// layout archives and `docker save` archives and unpacks them into the default snapshotter, where
// the CRI plugin finds them.
//
// Naming, as ctr 1.6 does it: a full reference in an OCI archive's
// org.opencontainers.image.ref.name (or io.containerd.image.name) annotation, or in a docker
// archive's RepoTags, is kept as it is. With --base-name only references under that name are
// imported; without it, an OCI ref name that is only a tag ("latest") becomes
// "import-<yyyy-mm-dd>:latest". So archives dropped into the images directory should carry full
// references (what `ctr images export`, `docker save` and skopeo's oci-archive:FILE:NAME write).
// Only the host's platform is imported (no --all-platforms), which is what the node can run.
//
// Every image an import brings in (or finds already there under the same name) is marked as
// imported: its target, the manifest or index the name points at, is labelled kImportedLabel=true
// in containerd's content store (`ctr content label`). The node's registry mirror
// (registry_mirror.h) serves only images whose target carries the mark, never ones pulled from a
// registry. The mark is on the content rather than on the image record because the CRI plugin
// replaces an image record's labels with its own on every pull, while content labels are only
// ever added to. The names and targets come from ctr's "unpacking <name> (<digest>)...done"
// lines. An image imported before the mark existed gets it when its archive is imported again
// (the kubelet imports the built-in images and the images directory on every start).
//
// Thread-safety: free functions without shared state; safe from any thread (concurrent imports
// into one containerd are containerd's business and are safe).

#include <chrono>
#include <string>
#include <vector>

#include "base/status.h"

namespace skiff::kubelet::images {

// The containerd content label that marks the target of an image skiff imported itself (value
// "true").
inline constexpr const char* kImportedLabel = "skiff.dev/imported";

struct ImportOptions {
  std::string ctr = "ctr";                      // path or name in PATH
  std::string containerd_namespace = "k8s.io";  // the CRI plugin's namespace
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  // Mark what was imported (kImportedLabel=true on each image's target).
  bool mark_imported = true;
};

// Imports one archive. `base_name` may be empty (see the naming rules above). A failure to mark
// what was imported is an error too (kInternal), as the mirror would not serve it.
Status import_image_tar(const std::string& containerd_address, const std::string& tar_path,
                        const std::string& base_name, const ImportOptions& options = {});

// One image ctr images import brought in: its name and the digest of its target.
struct ImportedImage {
  std::string name;
  std::string target;  // "sha256:<hex>"
  bool operator==(const ImportedImage&) const = default;
};
// The images in ctr images import's output ("unpacking <name> (<digest>)...done" per image), in
// order.
std::vector<ImportedImage> imported_images(const std::string& ctr_output);

// Imports every regular file named *.tar in `dir` (sorted by name), each without --base-name.
// A missing directory imports nothing. Keeps going after a failed archive; returns the paths
// imported, or an error naming every archive that failed.
Result<std::vector<std::string>> import_images_dir(const std::string& containerd_address,
                                                   const std::string& dir,
                                                   const ImportOptions& options = {});

// The image references an archive declares: for an OCI layout, each index.json manifest's
// io.containerd.image.name or org.opencontainers.image.ref.name annotation; for a docker archive,
// manifest.json's RepoTags. kInvalidArgument when it is neither.
Result<std::vector<std::string>> image_refs_in_tar(const std::string& tar_path);

}  // namespace skiff::kubelet::images
