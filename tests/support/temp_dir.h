#pragma once

// A directory under $TMPDIR (or /tmp) removed with everything in it when the object goes away.

#include <string>

namespace skiff::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "skiff-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace skiff::testing
