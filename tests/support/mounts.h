#pragma once

// Mount clean-up for tests that run containerd (it mounts overlays and shm under its root and
// state directories).
//
// Thread-safety: free functions; safe from any thread.

#include <string>

namespace skiff::testing {

// Unmounts (lazily) everything mounted below `dir`, deepest first.
void unmount_under(const std::string& dir);

}  // namespace skiff::testing
