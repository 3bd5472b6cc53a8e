#pragma once

// The images skiff builds itself so a node works offline: the pod sandbox ("pause") image and a
// busybox demo image. The build writes them as OCI archives into <build dir>/images/, next to the
// skiff binary; the kubelet imports them into its containerd on start.
//
// Thread-safety: free functions without shared state; safe from any thread.

#include <string>
#include <vector>

#include "base/status.h"
#include "kubelet/images/import.h"
#include "kubelet/images/oci_image.h"

namespace skiff::kubelet::images {

// The upstream kubelet's default sandbox image name, so pods and tooling that expect it find it.
inline constexpr const char* kPauseImage = "registry.k8s.io/pause:3.9";
// What `image: busybox` resolves to.
inline constexpr const char* kBusyboxImage = "docker.io/library/busybox:latest";
// File names of the archives in the built-in images directory.
inline constexpr const char* kPauseArchive = "pause.tar";
inline constexpr const char* kBusyboxArchive = "busybox.tar";

// The pause image: the static skiff-pause binary as /pause, run as 65535:65535.
ImageSpec pause_image_spec(const std::string& pause_binary);

// The busybox image: the static busybox binary as /bin/busybox, a symlink per applet (paths as
// `busybox --list-full` prints them, e.g. "usr/bin/wget"), /etc/passwd and /etc/group with root
// and nobody, /tmp (1777), /root, /home, /var; Cmd ["sh"].
ImageSpec busybox_image_spec(const std::string& busybox_binary,
                             const std::vector<std::string>& applet_paths);
// Asks the binary for its applets (`busybox --list-full`) and builds the spec.
Result<ImageSpec> busybox_image_spec(const std::string& busybox_binary);

// Imports the built-in archives from `dir` into containerd under their own names: pause.tar
// (kNotFound when it is missing: no pod can start without it) and busybox.tar when present. Both
// are labelled as imported (import.h) for the registry mirror, also when containerd had them
// already.
Status import_builtin_images(const std::string& containerd_address, const std::string& dir,
                             const ImportOptions& options = {});

// <directory of the running executable>/images: where the build puts the built-in archives
// relative to the skiff binary.
Result<std::string> builtin_images_dir();

}  // namespace skiff::kubelet::images
