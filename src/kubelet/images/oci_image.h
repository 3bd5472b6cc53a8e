#pragma once

// OCI image layout archives built from a description: one uncompressed layer made of in-memory
// files, host files, directories and symlinks, plus an image config (entrypoint, cmd, env,
// working dir, user). The result is a tar holding oci-layout, index.json (the manifest is
// annotated with org.opencontainers.image.ref.name = the full reference) and blobs/sha256/ with
// the layer, config and manifest. Every timestamp is fixed, so the same description always gives
// the same bytes and the same digests; containerd imports it with `ctr images import`.
//
// Thread-safety: free functions without shared state; safe from any thread.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace skiff::kubelet::images {

struct LayerEntry {
  enum class Kind : uint8_t { kFile, kDirectory, kSymlink };
  Kind kind = Kind::kFile;
  std::string path;         // inside the image, relative or absolute ("bin/sh" or "/bin/sh")
  std::string content;      // kFile, when source_path is empty
  std::string source_path;  // kFile: copy this host file's bytes
  std::string link_target;  // kSymlink
  uint32_t mode = 0644;     // permission bits (and sticky/setuid bits)

  static LayerEntry file(std::string path, std::string content, uint32_t mode = 0644);
  static LayerEntry host_file(std::string path, std::string source_path, uint32_t mode = 0755);
  static LayerEntry directory(std::string path, uint32_t mode = 0755);
  static LayerEntry symlink(std::string path, std::string target);
};

struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // NAME=value
  std::string working_dir;
  std::string user;
};

struct ImageSpec {
  // Full reference, e.g. "docker.io/library/busybox:latest".
  std::string ref_name;
  ImageConfig config;
  std::vector<LayerEntry> layer;
  // Defaults to the platform skiff was built for.
  std::string architecture;
  std::string os = "linux";
};

struct BuiltImage {
  std::string archive;          // the OCI layout tar
  std::string manifest_digest;  // "sha256:<hex>"
  std::string config_digest;
  std::string layer_digest;  // also the layer's diff_id (uncompressed)
};

// "sha256:" + lowercase hex of SHA-256(data).
std::string sha256_digest(std::string_view data);
// The GOARCH-style name of the architecture skiff was compiled for ("amd64", "arm64", ...).
std::string native_architecture();

// Builds the layer tar alone. Parent directories missing from `entries` are added (0755) before
// their first child; a path given twice is an error.
Result<std::string> build_layer(const std::vector<LayerEntry>& entries);
Result<BuiltImage> build_oci_image(const ImageSpec& spec);
// Builds and writes the archive to `path` atomically; returns the manifest digest.
Result<std::string> write_oci_image(const ImageSpec& spec, const std::string& path);

}  // namespace skiff::kubelet::images
