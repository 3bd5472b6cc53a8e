#pragma once

// What the service account and root CA controllers share: whether a namespace takes new
// content, and which create errors mean "nothing to retry".
//
// Thread-safety: pure functions.

#include "base/status.h"
#include "client/api_client.h"

namespace skiff::controllers {

// Not being deleted: no deletionTimestamp and phase Active (or not yet set).
inline bool namespace_is_active(const client::Json& ns) {
  auto meta = ns.find("metadata");
  if (meta != ns.end() && meta->is_object() && meta->contains("deletionTimestamp")) return false;
  auto status = ns.find("status");
  if (status == ns.end() || !status->is_object()) return true;
  std::string phase = status->value("phase", "");
  return phase.empty() || phase == "Active";
}

// A create that failed because the object is there already, the namespace is gone, or the
// namespace is being deleted: retrying would not help.
inline bool create_error_is_final(const Status& s) {
  switch (s.code()) {
    case StatusCode::kAlreadyExists:
    case StatusCode::kNotFound:
      return true;
    case StatusCode::kPermissionDenied:
      return s.message().find("because it is being terminated") != std::string::npos;
    default:
      return false;
  }
}

}  // namespace skiff::controllers
