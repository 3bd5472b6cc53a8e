#pragma once

// What the service account and root CA controllers share: whether a namespace takes new
// content, the namespace handlers that queue such namespaces, and which create errors mean
// "nothing to retry".
//
// Thread-safety: pure functions, but for the handlers, which add to the queue (thread-safe).

#include "base/status.h"
#include "client/api_client.h"
#include "client/informer.h"
#include "client/workqueue.h"

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

// Handlers for the namespaces informer: a namespace added or updated while active queues its
// name. `queue` must outlive the handlers.
inline client::EventHandlers active_namespace_handlers(client::WorkQueue& queue) {
  auto changed = [&queue](const client::ObjectPtr& ns) {
    if (namespace_is_active(*ns)) queue.add(client::name_of(*ns));
  };
  return {changed,
          [changed](const client::ObjectPtr&, const client::ObjectPtr& ns) { changed(ns); },
          nullptr};
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
