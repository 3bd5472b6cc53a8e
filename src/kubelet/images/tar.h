#pragma once

// POSIX ustar archives: TarWriter builds one in memory (regular files, directories, symlinks;
// fixed owner and mtime so the same input always gives the same bytes), and read_tar() walks one
// from a stream (ustar, with pax `path`/`linkpath` records and GNU long names, enough for the
// archives `docker save`, skopeo and containerd write).
//
// Thread-safety: a TarWriter is not synchronized (one thread at a time); read_tar() is
// reentrant.

#include <cstdint>
#include <functional>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace skiff::kubelet::images {

enum class TarEntryType : uint8_t { kFile, kDirectory, kSymlink, kHardLink, kOther };

struct TarEntry {
  std::string name;  // as stored: no leading "./" stripping, directories keep a trailing '/'
  TarEntryType type = TarEntryType::kFile;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 0;
  uint64_t size = 0;
  std::string link_target;  // symlinks and hard links
  std::string content;      // regular files whose content was asked for
};

class TarWriter {
 public:
  // Every entry gets this mtime (seconds since the epoch), uid 0 and gid 0.
  explicit TarWriter(int64_t mtime = 0) : mtime_(mtime) {}

  // Names are relative ("bin/sh"); a leading '/' is an error, as is a name that does not fit
  // ustar's 155-byte prefix plus 100-byte name split, or a link target over 100 bytes.
  Status add_file(std::string_view name, std::string_view content, uint32_t mode);
  Status add_directory(std::string_view name, uint32_t mode);
  Status add_symlink(std::string_view name, std::string_view target);

  // Appends the end-of-archive marker and hands over the archive; the writer is empty after.
  std::string finish();

 private:
  Status add_header(std::string_view name, char type, uint32_t mode, uint64_t size,
                    std::string_view link_target);

  int64_t mtime_;
  std::string out_;
};

// Reads entries from `in` until the end-of-archive marker. For each regular file whose name
// `want_content` accepts, the entry's content is filled in; other contents are skipped. Stops
// early, without error, when `on_entry` returns false. kDataLoss for a truncated or corrupt
// archive (bad header checksum, short read).
Status read_tar(std::istream& in, const std::function<bool(const std::string& name)>& want_content,
                const std::function<bool(TarEntry&& entry)>& on_entry);

// Convenience for tests and small archives: every entry with every content.
Result<std::vector<TarEntry>> read_tar_bytes(std::string_view archive);

}  // namespace skiff::kubelet::images
