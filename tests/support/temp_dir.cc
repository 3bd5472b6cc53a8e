#include "support/temp_dir.h"

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "base/check.h"

namespace skiff::testing {

TempDir::TempDir(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  SKIFF_CHECK(mkdtemp(buf.data()) != nullptr, "mkdtemp failed for " + tmpl);
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace skiff::testing
