#include "kubelet/images/builtin.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <set>

#include "base/process.h"

namespace skiff::kubelet::images {
namespace {

constexpr const char* kPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

}  // namespace

ImageSpec pause_image_spec(const std::string& pause_binary) {
  ImageSpec spec;
  spec.ref_name = kPauseImage;
  spec.config.entrypoint = {"/pause"};
  spec.config.env = {kPath};
  spec.config.working_dir = "/";
  spec.config.user = "65535:65535";
  spec.layer.push_back(LayerEntry::host_file("pause", pause_binary, 0755));
  return spec;
}

ImageSpec busybox_image_spec(const std::string& busybox_binary,
                             const std::vector<std::string>& applet_paths) {
  ImageSpec spec;
  spec.ref_name = kBusyboxImage;
  spec.config.cmd = {"sh"};
  spec.config.env = {kPath};
  spec.config.working_dir = "/";
  auto& layer = spec.layer;
  for (const char* dir : {"bin", "sbin", "usr/bin", "usr/sbin", "etc", "home", "var"}) {
    layer.push_back(LayerEntry::directory(dir, 0755));
  }
  layer.push_back(LayerEntry::directory("root", 0700));
  layer.push_back(LayerEntry::directory("tmp", 01777));
  layer.push_back(LayerEntry::host_file("bin/busybox", busybox_binary, 0755));
  std::set<std::string> linked = {"bin/busybox"};
  for (std::string path : applet_paths) {
    while (!path.empty() && path.front() == '/') path.erase(0, 1);
    if (path.empty() || !linked.insert(path).second) continue;
    layer.push_back(LayerEntry::symlink(path, "/bin/busybox"));
  }
  layer.push_back(LayerEntry::file("etc/passwd",
                                   "root:x:0:0:root:/root:/bin/sh\n"
                                   "nobody:x:65534:65534:nobody:/home:/bin/false\n",
                                   0644));
  layer.push_back(LayerEntry::file("etc/group",
                                   "root:x:0:\n"
                                   "nobody:x:65534:\n",
                                   0644));
  return spec;
}

Result<ImageSpec> busybox_image_spec(const std::string& busybox_binary) {
  Result<CommandOutput> out =
      run_command({busybox_binary, "--list-full"}, std::chrono::seconds(30));
  if (!out.is_ok()) return out.status();
  if (!out->status.success()) {
    return error(StatusCode::kInternal,
                 busybox_binary + " --list-full: " + out->status.to_string() + ": " + out->err);
  }
  std::vector<std::string> applets;
  size_t start = 0;
  while (start < out->out.size()) {
    size_t end = out->out.find('\n', start);
    if (end == std::string::npos) end = out->out.size();
    std::string line = out->out.substr(start, end - start);
    if (!line.empty()) applets.push_back(line);
    start = end + 1;
  }
  if (applets.empty()) {
    return error(StatusCode::kInternal, busybox_binary + " --list-full printed no applets");
  }
  return busybox_image_spec(busybox_binary, applets);
}

Status import_builtin_images(const std::string& containerd_address, const std::string& dir,
                             const ImportOptions& options) {
  // --base-name is the reference without its tag: only that image is taken from the archive.
  auto repository = [](const std::string& ref) { return ref.substr(0, ref.rfind(':')); };
  std::string pause = dir + "/" + kPauseArchive;
  if (access(pause.c_str(), R_OK) != 0) {
    return error(StatusCode::kNotFound, "the built-in pause image " + pause + " is missing");
  }
  SKIFF_RETURN_IF_ERROR(
      import_image_tar(containerd_address, pause, repository(kPauseImage), options));
  std::string busybox = dir + "/" + kBusyboxArchive;
  if (access(busybox.c_str(), R_OK) != 0) return Status::ok();
  return import_image_tar(containerd_address, busybox, repository(kBusyboxImage), options);
}

Result<std::string> builtin_images_dir() {
  SKIFF_ASSIGN_OR_RETURN(std::string dir, executable_dir());
  return dir + "/images";
}

}  // namespace skiff::kubelet::images
