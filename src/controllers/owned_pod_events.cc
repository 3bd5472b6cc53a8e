#include "controllers/owned_pod_events.h"

#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {

int64_t spec_min_ready_seconds(const Json& owner) {
  return int_field(field(owner, "spec"), "minReadySeconds");
}

OwnedPodEvents::OwnedPodEvents(const client::Informer& owners, client::WorkQueue& queue,
                               Options options)
    : owners_(owners), queue_(queue), options_(std::move(options)) {}

client::EventHandlers OwnedPodEvents::owner_handlers() {
  client::EventHandlers h;
  h.on_add = [this](const ObjectPtr& owner) { enqueue(*owner); };
  h.on_update = [this](const ObjectPtr&, const ObjectPtr& cur) { enqueue(*cur); };
  h.on_delete = [this](const ObjectPtr& owner) {
    std::string key = client::key_of(*owner);
    options_.forget(key);
    queue_.add(key);
  };
  return h;
}

client::EventHandlers OwnedPodEvents::pod_handlers() {
  client::EventHandlers h;
  h.on_add = [this](const ObjectPtr& pod) { on_add(pod); };
  h.on_update = [this](const ObjectPtr& old_pod, const ObjectPtr& cur_pod) {
    on_update(old_pod, cur_pod);
  };
  h.on_delete = [this](const ObjectPtr& pod) { on_delete(pod); };
  return h;
}

client::EventHandlers OwnedPodEvents::revision_handlers() {
  client::EventHandlers h;
  h.on_add = [this](const ObjectPtr& rev) { enqueue_owners(*rev); };
  h.on_update = [this](const ObjectPtr& old_rev, const ObjectPtr& cur_rev) {
    if (client::resource_version_of(*old_rev) != client::resource_version_of(*cur_rev)) {
      enqueue_owners(*cur_rev);
    }
  };
  h.on_delete = [this](const ObjectPtr& rev) { enqueue_owners(*rev); };
  return h;
}

ObjectPtr OwnedPodEvents::resolve_owner(const Json& obj) const {
  return resolve_controller_ref(owners_, obj, options_.kind, options_.group);
}

std::vector<ObjectPtr> OwnedPodEvents::owners_selecting(const Json& obj) const {
  return controllers::owners_selecting(owners_, obj);
}

void OwnedPodEvents::enqueue(const Json& owner) {
  queue_.add(client::key_of(owner));
}

void OwnedPodEvents::enqueue_owners(const Json& obj) {
  if (client::controller_of(obj)) {
    if (ObjectPtr owner = resolve_owner(obj)) enqueue(*owner);
    return;
  }
  for (const auto& owner : owners_selecting(obj)) enqueue(*owner);
}

void OwnedPodEvents::on_add(const ObjectPtr& pod) {
  // A pod that shows up already being deleted (e.g. after a re-list) counts as a deletion.
  if (is_pod_terminating(*pod)) {
    on_delete(pod);
    return;
  }
  if (client::controller_of(*pod)) {
    ObjectPtr owner = resolve_owner(*pod);
    if (!owner) return;
    std::string key = client::key_of(*owner);
    options_.creation_observed(key);
    queue_.add(key);
    return;
  }
  // An orphan: wake every owner that could adopt it (no creation is observed for it).
  for (const auto& owner : owners_selecting(*pod)) enqueue(*owner);
}

void OwnedPodEvents::on_update(const ObjectPtr& old_pod, const ObjectPtr& cur_pod) {
  // Periodic resyncs deliver the same version: nothing changed.
  if (client::resource_version_of(*old_pod) == client::resource_version_of(*cur_pod)) return;
  const bool labels_changed = labels_of(*old_pod) != labels_of(*cur_pod);
  if (options_.terminating_update_is_delete && is_pod_terminating(*cur_pod)) {
    on_delete(cur_pod);
    if (labels_changed) on_delete(old_pod);
    return;
  }
  const bool ref_changed = controller_ref_changed(*old_pod, *cur_pod);
  if (ref_changed && client::controller_of(*old_pod)) {
    if (ObjectPtr old_owner = resolve_owner(*old_pod)) enqueue(*old_owner);
  }
  if (client::controller_of(*cur_pod)) {
    ObjectPtr owner = resolve_owner(*cur_pod);
    if (!owner) return;
    std::string key = client::key_of(*owner);
    // Graceful deletion shows first as a deletionTimestamp: that is the deletion asked for.
    if (is_pod_terminating(*cur_pod)) options_.deletion_observed(key, client::key_of(*cur_pod));
    queue_.add(key);
    // Availability comes minReadySeconds after readiness, with no event of its own: look again
    // then (one second later, against clock skew).
    int64_t min_ready = options_.min_ready_seconds(*owner);
    if (!is_pod_ready(*old_pod) && is_pod_ready(*cur_pod) && min_ready > 0) {
      queue_.add_after(key, std::chrono::seconds(min_ready) + std::chrono::seconds(1));
    }
    return;
  }
  if (labels_changed || ref_changed) {
    for (const auto& owner : owners_selecting(*cur_pod)) enqueue(*owner);
  }
}

void OwnedPodEvents::on_delete(const ObjectPtr& pod) {
  if (!client::controller_of(*pod)) return;
  ObjectPtr owner = resolve_owner(*pod);
  if (!owner) return;
  std::string key = client::key_of(*owner);
  options_.deletion_observed(key, client::key_of(*pod));
  queue_.add(key);
}

}  // namespace skiff::controllers
