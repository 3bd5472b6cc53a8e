// skiff-image-builder: writes skiff's built-in images as OCI archives at build time.
//
//   skiff-image-builder pause --binary PATH --out FILE
//   skiff-image-builder busybox --binary PATH --out FILE
//
// Prints the image's reference and manifest digest. Exits non-zero with a message on failure.

#include <elf.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "kubelet/images/builtin.h"
#include "kubelet/images/oci_image.h"

namespace {

using skiff::Result;
using skiff::Status;
using skiff::StatusCode;

// True when `path` is an ELF executable without a program interpreter (statically linked), so it
// runs in an image that has no libc.
Result<bool> is_static_elf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return skiff::error(StatusCode::kNotFound, "cannot open " + path);
  Elf64_Ehdr eh;
  if (!in.read(reinterpret_cast<char*>(&eh), sizeof(eh)) ||
      std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
    return skiff::error(StatusCode::kInvalidArgument, path + " is not an ELF file");
  }
  if (eh.e_ident[EI_CLASS] != ELFCLASS64) {
    return skiff::error(StatusCode::kInvalidArgument, path + " is not a 64-bit ELF file");
  }
  for (int i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    in.seekg(static_cast<std::streamoff>(eh.e_phoff + static_cast<uint64_t>(i) * eh.e_phentsize));
    if (!in.read(reinterpret_cast<char*>(&ph), sizeof(ph))) {
      return skiff::error(StatusCode::kInvalidArgument, path + ": truncated program headers");
    }
    if (ph.p_type == PT_INTERP) return false;
  }
  return true;
}

int fail(const std::string& message) {
  std::fprintf(stderr, "skiff-image-builder: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return fail("usage: skiff-image-builder pause|busybox --binary P --out F");
  std::string kind = args[0];
  std::string binary, out;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--binary" && i + 1 < args.size()) {
      binary = args[++i];
    } else if (args[i] == "--out" && i + 1 < args.size()) {
      out = args[++i];
    } else {
      return fail("unknown argument " + args[i]);
    }
  }
  if (binary.empty() || out.empty()) return fail("--binary and --out are required");
  Result<bool> is_static = is_static_elf(binary);
  if (!is_static.is_ok()) return fail(is_static.status().message());
  if (!*is_static) {
    return fail(binary + " is dynamically linked; the image has no libc" +
                (kind == "busybox" ? " (install busybox-static)" : ""));
  }
  skiff::kubelet::images::ImageSpec spec;
  if (kind == "pause") {
    spec = skiff::kubelet::images::pause_image_spec(binary);
  } else if (kind == "busybox") {
    auto busybox = skiff::kubelet::images::busybox_image_spec(binary);
    if (!busybox.is_ok()) return fail(busybox.status().message());
    spec = std::move(busybox).value();
  } else {
    return fail("unknown image " + kind);
  }
  Result<std::string> digest = skiff::kubelet::images::write_oci_image(spec, out);
  if (!digest.is_ok()) return fail(digest.status().message());
  std::printf("%s %s -> %s\n", spec.ref_name.c_str(), digest->c_str(), out.c_str());
  return 0;
}
