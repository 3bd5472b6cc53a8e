#include "kubelet/images/oci_image.h"

#include <openssl/evp.h>

#include <nlohmann/json.hpp>
#include <set>

#include "base/pki.h"
#include "kubelet/images/tar.h"

namespace skiff::kubelet::images {
namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kCreated = "1970-01-01T00:00:00Z";
constexpr const char* kManifestType = "application/vnd.oci.image.manifest.v1+json";
constexpr const char* kConfigType = "application/vnd.oci.image.config.v1+json";
constexpr const char* kLayerType = "application/vnd.oci.image.layer.v1.tar";
constexpr const char* kIndexType = "application/vnd.oci.image.index.v1+json";

// "/bin//sh/" -> "bin/sh"; "" when a component is "." or ".." (or nothing is left).
std::string normalize(const std::string& path) {
  std::string out;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string_view component(path.data() + start, end - start);
    if (component == "." || component == "..") return "";
    if (!component.empty()) {
      if (!out.empty()) out += '/';
      out += component;
    }
    start = end + 1;
  }
  return out;
}

std::string hex_of(const std::string& digest) {
  return digest.substr(digest.find(':') + 1);
}

Json descriptor(const char* media_type, const std::string& digest, size_t size) {
  return Json{{"mediaType", media_type}, {"digest", digest}, {"size", size}};
}

Json string_array(const std::vector<std::string>& values) {
  Json array = Json::array();
  for (const std::string& v : values) array.push_back(v);
  return array;
}

}  // namespace

LayerEntry LayerEntry::file(std::string path, std::string content, uint32_t mode) {
  LayerEntry e;
  e.kind = Kind::kFile;
  e.path = std::move(path);
  e.content = std::move(content);
  e.mode = mode;
  return e;
}

LayerEntry LayerEntry::host_file(std::string path, std::string source_path, uint32_t mode) {
  LayerEntry e;
  e.kind = Kind::kFile;
  e.path = std::move(path);
  e.source_path = std::move(source_path);
  e.mode = mode;
  return e;
}

LayerEntry LayerEntry::directory(std::string path, uint32_t mode) {
  LayerEntry e;
  e.kind = Kind::kDirectory;
  e.path = std::move(path);
  e.mode = mode;
  return e;
}

LayerEntry LayerEntry::symlink(std::string path, std::string target) {
  LayerEntry e;
  e.kind = Kind::kSymlink;
  e.path = std::move(path);
  e.link_target = std::move(target);
  e.mode = 0777;
  return e;
}

std::string sha256_digest(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

std::string native_architecture() {
#if defined(__x86_64__)
  return "amd64";
#elif defined(__aarch64__)
  return "arm64";
#elif defined(__arm__)
  return "arm";
#elif defined(__i386__)
  return "386";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return "ppc64le";
#elif defined(__s390x__)
  return "s390x";
#elif defined(__riscv) && __riscv_xlen == 64
  return "riscv64";
#else
  return "unknown";
#endif
}

Result<std::string> build_layer(const std::vector<LayerEntry>& entries) {
  TarWriter tar;
  std::set<std::string> seen;
  // Parent directories first, so extractors never have to invent them.
  auto ensure_parents = [&](const std::string& path) -> Status {
    for (size_t slash = path.find('/'); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      std::string parent = path.substr(0, slash);
      if (seen.insert(parent).second) SKIFF_RETURN_IF_ERROR(tar.add_directory(parent, 0755));
    }
    return Status::ok();
  };
  for (const LayerEntry& entry : entries) {
    std::string path = normalize(entry.path);
    if (path.empty()) {
      return error(StatusCode::kInvalidArgument, "bad layer path: '" + entry.path + "'");
    }
    SKIFF_RETURN_IF_ERROR(ensure_parents(path));
    if (!seen.insert(path).second) {
      return error(StatusCode::kInvalidArgument, "layer path given twice: " + path);
    }
    switch (entry.kind) {
      case LayerEntry::Kind::kDirectory:
        SKIFF_RETURN_IF_ERROR(tar.add_directory(path, entry.mode));
        break;
      case LayerEntry::Kind::kSymlink:
        SKIFF_RETURN_IF_ERROR(tar.add_symlink(path, entry.link_target));
        break;
      case LayerEntry::Kind::kFile:
        if (entry.source_path.empty()) {
          SKIFF_RETURN_IF_ERROR(tar.add_file(path, entry.content, entry.mode));
        } else {
          Result<std::string> bytes = pki::read_file(entry.source_path);
          if (!bytes.is_ok()) {
            return error(bytes.status().code(), "reading " + entry.source_path + " for " + path +
                                                    ": " + bytes.status().message());
          }
          SKIFF_RETURN_IF_ERROR(tar.add_file(path, *bytes, entry.mode));
        }
        break;
    }
  }
  return tar.finish();
}

Result<BuiltImage> build_oci_image(const ImageSpec& spec) {
  if (spec.ref_name.empty()) return error(StatusCode::kInvalidArgument, "image needs a ref name");
  BuiltImage built;
  SKIFF_ASSIGN_OR_RETURN(std::string layer, build_layer(spec.layer));
  built.layer_digest = sha256_digest(layer);

  Json container_config = Json::object();
  if (!spec.config.user.empty()) container_config["User"] = spec.config.user;
  if (!spec.config.env.empty()) container_config["Env"] = string_array(spec.config.env);
  if (!spec.config.entrypoint.empty()) {
    container_config["Entrypoint"] = string_array(spec.config.entrypoint);
  }
  if (!spec.config.cmd.empty()) container_config["Cmd"] = string_array(spec.config.cmd);
  if (!spec.config.working_dir.empty()) container_config["WorkingDir"] = spec.config.working_dir;
  std::string architecture = spec.architecture.empty() ? native_architecture() : spec.architecture;
  Json config = {
      {"created", kCreated},
      {"architecture", architecture},
      {"os", spec.os},
      {"config", container_config},
      {"rootfs", {{"type", "layers"}, {"diff_ids", Json::array({built.layer_digest})}}},
      {"history", Json::array({{{"created", kCreated}, {"created_by", "skiff image builder"}}})},
  };
  std::string config_bytes = config.dump();
  built.config_digest = sha256_digest(config_bytes);

  Json manifest = {
      {"schemaVersion", 2},
      {"mediaType", kManifestType},
      {"config", descriptor(kConfigType, built.config_digest, config_bytes.size())},
      {"layers", Json::array({descriptor(kLayerType, built.layer_digest, layer.size())})},
  };
  std::string manifest_bytes = manifest.dump();
  built.manifest_digest = sha256_digest(manifest_bytes);

  Json manifest_desc = descriptor(kManifestType, built.manifest_digest, manifest_bytes.size());
  manifest_desc["platform"] = {{"architecture", architecture}, {"os", spec.os}};
  manifest_desc["annotations"] = {{"org.opencontainers.image.ref.name", spec.ref_name}};
  Json index = {
      {"schemaVersion", 2},
      {"mediaType", kIndexType},
      {"manifests", Json::array({manifest_desc})},
  };

  TarWriter tar;
  SKIFF_RETURN_IF_ERROR(tar.add_file("oci-layout", R"({"imageLayoutVersion":"1.0.0"})", 0644));
  SKIFF_RETURN_IF_ERROR(tar.add_file("index.json", index.dump(), 0644));
  SKIFF_RETURN_IF_ERROR(tar.add_directory("blobs", 0755));
  SKIFF_RETURN_IF_ERROR(tar.add_directory("blobs/sha256", 0755));
  SKIFF_RETURN_IF_ERROR(tar.add_file("blobs/sha256/" + hex_of(built.layer_digest), layer, 0644));
  SKIFF_RETURN_IF_ERROR(
      tar.add_file("blobs/sha256/" + hex_of(built.config_digest), config_bytes, 0644));
  SKIFF_RETURN_IF_ERROR(
      tar.add_file("blobs/sha256/" + hex_of(built.manifest_digest), manifest_bytes, 0644));
  built.archive = tar.finish();
  return built;
}

Result<std::string> write_oci_image(const ImageSpec& spec, const std::string& path) {
  SKIFF_ASSIGN_OR_RETURN(BuiltImage built, build_oci_image(spec));
  SKIFF_RETURN_IF_ERROR(pki::write_file_atomic(path, built.archive, 0644));
  return built.manifest_digest;
}

}  // namespace skiff::kubelet::images
