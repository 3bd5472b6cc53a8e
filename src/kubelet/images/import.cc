#include "kubelet/images/import.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string_view>

#include "base/log.h"
#include "base/process.h"
#include "kubelet/images/tar.h"

namespace skiff::kubelet::images {
namespace {

std::string strip_dot_slash(std::string name) {
  while (name.rfind("./", 0) == 0) name.erase(0, 2);
  return name;
}

}  // namespace

Status import_image_tar(const std::string& containerd_address, const std::string& tar_path,
                        const std::string& base_name, const ImportOptions& options) {
  std::vector<std::string> argv = {
      options.ctr, "-n",    options.containerd_namespace, "--address", containerd_address,
      "images",    "import"};
  if (!base_name.empty()) {
    argv.push_back("--base-name");
    argv.push_back(base_name);
  }
  argv.push_back(tar_path);
  auto start = std::chrono::steady_clock::now();
  Result<CommandOutput> out = run_command(argv, options.timeout);
  if (!out.is_ok()) {
    return error(out.status().code(), "importing " + tar_path + ": " + out.status().message());
  }
  if (!out->status.success()) {
    std::string detail = out->err.empty() ? out->out : out->err;
    while (!detail.empty() && detail.back() == '\n') detail.pop_back();
    return error(StatusCode::kInternal,
                 "importing " + tar_path + ": ctr " + out->status.to_string() + ": " + detail);
  }
  std::vector<ImportedImage> images = imported_images(out->out);
  if (options.mark_imported) {
    if (images.empty()) {
      SKIFF_LOG_WARN("importing {}: ctr named no image it imported; nothing marked {}", tar_path,
                     kImportedLabel);
    }
    for (const ImportedImage& image : images) {
      Result<CommandOutput> labelled = run_command(
          {options.ctr, "-n", options.containerd_namespace, "--address", containerd_address,
           "content", "label", image.target, std::string(kImportedLabel) + "=true"},
          options.timeout);
      std::string what = "marking " + image.name + " (" + image.target + ") from " + tar_path;
      if (!labelled.is_ok()) {
        return error(labelled.status().code(), what + ": " + labelled.status().message());
      }
      if (!labelled->status.success()) {
        std::string detail = labelled->err.empty() ? labelled->out : labelled->err;
        while (!detail.empty() && detail.back() == '\n') detail.pop_back();
        return error(StatusCode::kInternal,
                     what + ": ctr " + labelled->status.to_string() + ": " + detail);
      }
    }
  }
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  std::string names;
  for (const ImportedImage& image : images) names += (names.empty() ? "" : ", ") + image.name;
  SKIFF_LOG_INFO("imported image archive {} ({}) in {} ms", tar_path, names, took.count());
  return Status::ok();
}

std::vector<ImportedImage> imported_images(const std::string& ctr_output) {
  constexpr std::string_view kPrefix = "unpacking ";
  std::vector<ImportedImage> images;
  size_t start = 0;
  while (start < ctr_output.size()) {
    size_t end = ctr_output.find('\n', start);
    if (end == std::string::npos) end = ctr_output.size();
    std::string_view line(ctr_output.data() + start, end - start);
    start = end + 1;
    if (line.substr(0, kPrefix.size()) != kPrefix) continue;
    line.remove_prefix(kPrefix.size());
    size_t open = line.find(" (");
    if (open == std::string_view::npos || open == 0) continue;
    size_t close = line.find(")...", open);
    if (close == std::string_view::npos) continue;
    std::string_view name = line.substr(0, open);
    std::string_view digest = line.substr(open + 2, close - open - 2);
    if (name.find_first_of(" \t") != std::string_view::npos) continue;
    if (digest.substr(0, 7) != "sha256:" || digest.size() != 7 + 64 ||
        digest.find_first_not_of("0123456789abcdef", 7) != std::string_view::npos) {
      continue;
    }
    images.push_back({std::string(name), std::string(digest)});
  }
  return images;
}

Result<std::vector<std::string>> import_images_dir(const std::string& containerd_address,
                                                   const std::string& dir,
                                                   const ImportOptions& options) {
  namespace fs = std::filesystem;
  std::vector<std::string> archives;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return archives;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& path = it->path();
    if (path.extension() == ".tar" && it->is_regular_file(ec)) archives.push_back(path.string());
  }
  if (ec) return error(StatusCode::kInternal, "listing " + dir + ": " + ec.message());
  std::sort(archives.begin(), archives.end());
  std::vector<std::string> imported;
  std::string failures;
  for (const std::string& archive : archives) {
    Result<std::vector<std::string>> refs = image_refs_in_tar(archive);
    if (refs.is_ok()) {
      for (const std::string& ref : *refs) {
        if (ref.find_first_of("/:@") == std::string::npos) {
          SKIFF_LOG_WARN(
              "{}: image ref '{}' is only a tag; containerd will name it "
              "import-<date>:{}",
              archive, ref, ref);
        }
      }
    }
    Status s = import_image_tar(containerd_address, archive, "", options);
    if (s.is_ok()) {
      imported.push_back(archive);
    } else {
      SKIFF_LOG_WARN("{}", s.message());
      failures += (failures.empty() ? "" : "; ") + s.message();
    }
  }
  if (!failures.empty()) return error(StatusCode::kInternal, failures);
  return imported;
}

Result<std::vector<std::string>> image_refs_in_tar(const std::string& tar_path) {
  std::ifstream in(tar_path, std::ios::binary);
  if (!in) return error(StatusCode::kNotFound, "cannot open " + tar_path);
  std::string index_json, manifest_json;
  SKIFF_RETURN_IF_ERROR(read_tar(
      in,
      [](const std::string& name) {
        std::string n = strip_dot_slash(name);
        return n == "index.json" || n == "manifest.json";
      },
      [&](TarEntry&& entry) {
        std::string n = strip_dot_slash(entry.name);
        if (n == "index.json") index_json = std::move(entry.content);
        if (n == "manifest.json") manifest_json = std::move(entry.content);
        return true;
      }));
  std::vector<std::string> refs;
  try {
    if (!manifest_json.empty()) {
      for (const auto& image : nlohmann::json::parse(manifest_json)) {
        if (!image.contains("RepoTags") || !image["RepoTags"].is_array()) continue;
        for (const auto& tag : image["RepoTags"]) refs.push_back(tag.get<std::string>());
      }
      return refs;
    }
    if (!index_json.empty()) {
      nlohmann::json index = nlohmann::json::parse(index_json);
      for (const auto& m : index.value("manifests", nlohmann::json::array())) {
        nlohmann::json annotations = m.value("annotations", nlohmann::json::object());
        if (annotations.contains("io.containerd.image.name")) {
          refs.push_back(annotations["io.containerd.image.name"].get<std::string>());
        } else if (annotations.contains("org.opencontainers.image.ref.name")) {
          refs.push_back(annotations["org.opencontainers.image.ref.name"].get<std::string>());
        }
      }
      return refs;
    }
  } catch (const nlohmann::json::exception& e) {
    return error(StatusCode::kInvalidArgument, tar_path + ": bad image metadata: " + e.what());
  }
  return error(StatusCode::kInvalidArgument,
               tar_path + " is neither an OCI layout nor a docker archive");
}

}  // namespace skiff::kubelet::images
