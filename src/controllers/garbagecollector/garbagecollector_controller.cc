#include "controllers/garbagecollector/garbagecollector_controller.h"

#include <algorithm>
#include <list>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "api/schema.h"
#include "base/log.h"
#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {
namespace {

using namespace client::resources;

constexpr std::string_view kForegroundFinalizer = "foregroundDeletion";
constexpr std::string_view kOrphanFinalizer = "orphan";
constexpr int kConflictRetries = 5;

const Json& metadata(const Json& obj) {
  return member(obj, "metadata");
}

bool has_finalizer(const Json& obj, std::string_view finalizer) {
  const Json& list = member(metadata(obj), "finalizers");
  if (!list.is_array()) return false;
  return std::any_of(list.begin(), list.end(), [&](const Json& f) {
    return f.is_string() && f.get_ref<const std::string&>() == finalizer;
  });
}

bool being_deleted(const Json& obj) {
  return member(metadata(obj), "deletionTimestamp").is_string();
}

// An ownerReference as the graph keeps it.
struct OwnerRef {
  std::string uid, api_version, kind, name;
  bool block_owner_deletion = false;
};

std::vector<OwnerRef> owner_refs_of(const Json& obj) {
  std::vector<OwnerRef> out;
  const Json& refs = member(metadata(obj), "ownerReferences");
  if (!refs.is_array()) return out;
  for (const auto& ref : refs) {
    if (!ref.is_object()) continue;
    OwnerRef r{ref.value("uid", ""), ref.value("apiVersion", ""), ref.value("kind", ""),
               ref.value("name", "")};
    const Json& block = member(ref, "blockOwnerDeletion");
    r.block_owner_deletion = block.is_boolean() && block.get<bool>();
    if (!r.uid.empty()) out.push_back(std::move(r));
  }
  return out;
}

// Where a kind lives in the API, from the same schema the API server serves.
std::optional<client::Resource> resource_for(const std::string& api_version,
                                             const std::string& kind) {
  std::string group = api_group_of(api_version);
  size_t slash = api_version.find('/');
  std::string version = slash == std::string::npos ? api_version : api_version.substr(slash + 1);
  const api::ResourceInfo* info = api::Schema::builtin().resource_for_kind(group, version, kind);
  if (!info) return std::nullopt;
  return client::Resource{info->group, info->version, info->resource, info->kind, info->namespaced};
}

// Who an object is: enough to find it again through the API.
struct Identity {
  std::string api_version, kind, ns, name;
};

std::string describe(const Identity& id, const std::string& uid) {
  return "[" + id.api_version + "/" + id.kind + ", namespace: " + id.ns + ", name: " + id.name +
         ", uid: " + uid + "]";
}

struct Node {
  Identity identity;
  // The informer's resource for observed nodes; null for virtual ones.
  const client::Resource* resource = nullptr;
  std::vector<OwnerRef> owners;
  std::unordered_set<std::string> dependents;  // uids
  // False for a "virtual" node: an owner known only from its dependents' references.
  bool observed = false;
  bool being_deleted = false;
  // Being deleted with the foregroundDeletion finalizer.
  bool deleting_dependents = false;
  // For a virtual node: the coordinates under which it was verified absent.
  std::vector<Identity> absent_as;
};

// A dependent as seen by one of its owners.
struct DependentView {
  std::string uid;
  Identity identity;
  const client::Resource* resource = nullptr;
  bool blocks_owner = false;  // its reference to this owner has blockOwnerDeletion
  bool deleting_dependents = false;
};

// A copy of a node, taken under the graph's lock, for a worker to act on.
struct NodeView {
  std::string uid;
  Identity identity;
  const client::Resource* resource = nullptr;
  bool observed = false;
  bool being_deleted = false;
  bool deleting_dependents = false;
  std::vector<DependentView> dependents;
};

// What a graph change asks the workers to do; carried out after the graph's lock is released.
struct Effects {
  std::vector<std::string> attempt_delete;
  std::vector<std::string> attempt_orphan;
  struct InvalidRef {
    Json involved;
    std::string message;
  };
  std::vector<InvalidRef> invalid_refs;
};

bool same_coordinates(const OwnerRef& ref, const Identity& id) {
  return ref.name == id.name && ref.kind == id.kind &&
         api_group_of(ref.api_version) == api_group_of(id.api_version);
}

// Owners verified absent, keyed by uid and the namespace they were looked up in; bounded, the
// oldest forgotten first.
class AbsentOwnerCache {
 public:
  explicit AbsentOwnerCache(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

  void add(const std::string& key) {
    std::lock_guard lock(mu_);
    if (!keys_.insert(key).second) return;
    order_.push_back(key);
    if (order_.size() > capacity_) {
      keys_.erase(order_.front());
      order_.pop_front();
    }
  }

  bool has(const std::string& key) const {
    std::lock_guard lock(mu_);
    return keys_.count(key) > 0;
  }

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::unordered_set<std::string> keys_;  // guarded by mu_
  std::list<std::string> order_;          // guarded by mu_
};

// The ownership graph. Thread-safe: informer handlers (several threads) write it, workers read
// copies of nodes.
class Graph {
 public:
  // An informer saw `obj` (added, updated or resynced).
  void observe(const client::Resource* resource, const Json& obj, Effects& fx) {
    std::string uid = client::uid_of(obj);
    if (uid.empty()) return;
    Identity id{resource->api_version(), resource->kind, client::namespace_of(obj),
                client::name_of(obj)};
    std::vector<OwnerRef> owners = owner_refs_of(obj);
    owners.erase(std::remove_if(owners.begin(), owners.end(),
                                [&](const OwnerRef& r) { return r.uid == uid; }),
                 owners.end());
    bool deleting = being_deleted(obj);

    std::lock_guard lock(mu_);
    // References to nodes stay valid while the map grows (iterators do not).
    Node* node = nullptr;
    if (auto it = nodes_.find(uid); it == nodes_.end()) {
      node = &nodes_[uid];
      node->identity = std::move(id);
      node->resource = resource;
      node->observed = true;
      node->owners = owners;
      add_dependent_to_owners(uid, *node, owners, fx);
    } else {
      node = &it->second;
      if (!node->observed) {
        // A virtual node turns real. Dependents that named it by other coordinates point at
        // something that does not exist: have them checked.
        for (const auto& dep_uid : node->dependents) {
          auto dep = nodes_.find(dep_uid);
          if (dep == nodes_.end()) continue;
          for (const auto& ref : dep->second.owners) {
            if (ref.uid != uid) continue;
            bool ns_mismatch = resource->namespaced && dep->second.identity.ns != id.ns;
            if (!same_coordinates(ref, id) || ns_mismatch) {
              fx.attempt_delete.push_back(dep_uid);
              if (ns_mismatch) report_invalid_namespace(dep_uid, dep->second, ref, fx);
            }
          }
        }
        node->observed = true;
        node->absent_as.clear();
      }
      node->identity = std::move(id);
      node->resource = resource;
      update_owners(uid, *node, owners, fx);
    }

    node->being_deleted = deleting;
    if (deleting && has_finalizer(obj, kOrphanFinalizer)) fx.attempt_orphan.push_back(uid);
    node->deleting_dependents = deleting && has_finalizer(obj, kForegroundFinalizer);
    if (node->deleting_dependents) {
      for (const auto& dep : node->dependents) fx.attempt_delete.push_back(dep);
      fx.attempt_delete.push_back(uid);
    }
  }

  // The object is gone (an informer saw it deleted, or a live lookup found it absent).
  void remove(const std::string& uid, Effects& fx) {
    std::lock_guard lock(mu_);
    remove_locked(uid, fx);
  }

  // A live lookup found the virtual node `uid` absent under the coordinates it was checked with
  // (`namespaced`: whether its kind is namespaced). Its dependents are checked. If some name it
  // by coordinates not yet found absent, the node stays under those coordinates, to be checked
  // again (so a dependent that names an existing owner correctly keeps its place in the graph);
  // returns true then.
  bool virtual_absent(const std::string& uid, const Identity& checked, bool namespaced,
                      Effects& fx) {
    std::lock_guard lock(mu_);
    auto it = nodes_.find(uid);
    if (it == nodes_.end() || it->second.observed) return false;
    Node& n = it->second;
    n.absent_as.push_back(checked);
    auto known_absent = [&](const OwnerRef& ref, const std::string& dep_ns) {
      return std::any_of(n.absent_as.begin(), n.absent_as.end(), [&](const Identity& a) {
        return same_coordinates(ref, a) && (!namespaced || a.ns == dep_ns);
      });
    };
    std::optional<Identity> other;
    for (const auto& dep_uid : n.dependents) {
      auto dep = nodes_.find(dep_uid);
      if (dep == nodes_.end()) continue;
      for (const auto& ref : dep->second.owners) {
        if (ref.uid != uid || other) continue;
        if (!known_absent(ref, dep->second.identity.ns)) {
          other = Identity{ref.api_version, ref.kind, dep->second.identity.ns, ref.name};
        }
      }
    }
    if (!other) {
      remove_locked(uid, fx);
      return false;
    }
    for (const auto& dep : n.dependents) fx.attempt_delete.push_back(dep);
    n.identity = std::move(*other);
    return true;
  }

  std::optional<NodeView> view(const std::string& uid) const {
    std::lock_guard lock(mu_);
    auto it = nodes_.find(uid);
    if (it == nodes_.end()) return std::nullopt;
    const Node& n = it->second;
    NodeView v{uid, n.identity, n.resource, n.observed, n.being_deleted, n.deleting_dependents, {}};
    for (const auto& dep_uid : n.dependents) {
      auto dep = nodes_.find(dep_uid);
      if (dep == nodes_.end()) continue;
      DependentView d{dep_uid, dep->second.identity, dep->second.resource, false,
                      dep->second.deleting_dependents};
      for (const auto& ref : dep->second.owners) {
        if (ref.uid == uid && ref.block_owner_deletion) d.blocks_owner = true;
      }
      v.dependents.push_back(std::move(d));
    }
    return v;
  }

 private:
  void add_dependent_to_owners(const std::string& uid, const Node& n,
                               const std::vector<OwnerRef>& refs, Effects& fx) {
    for (const auto& ref : refs) {
      auto owner = nodes_.find(ref.uid);
      if (owner == nodes_.end()) {
        // Known only by reference: verify it exists.
        Node& v = nodes_[ref.uid];
        v.identity = Identity{ref.api_version, ref.kind, n.identity.ns, ref.name};
        v.dependents.insert(uid);
        fx.attempt_delete.push_back(ref.uid);
        continue;
      }
      Node& o = owner->second;
      o.dependents.insert(uid);
      if (o.deleting_dependents) fx.attempt_delete.push_back(ref.uid);
      bool owner_namespaced = o.observed ? o.resource->namespaced : !o.identity.ns.empty();
      if (owner_namespaced && o.identity.ns != n.identity.ns) {
        if (o.observed) report_invalid_namespace(uid, n, ref, fx);
        fx.attempt_delete.push_back(uid);
      } else if (!same_coordinates(ref, o.identity)) {
        fx.attempt_delete.push_back(uid);
      }
    }
  }

  void update_owners(const std::string& uid, Node& n, const std::vector<OwnerRef>& owners,
                     Effects& fx) {
    std::vector<OwnerRef> added;
    for (const auto& ref : owners) {
      auto old = std::find_if(n.owners.begin(), n.owners.end(),
                              [&](const OwnerRef& o) { return o.uid == ref.uid; });
      if (old == n.owners.end()) {
        added.push_back(ref);
      } else if (old->block_owner_deletion && !ref.block_owner_deletion) {
        // No longer blocks its owner: an owner waiting for it may finish.
        wake_if_deleting_dependents(ref.uid, fx);
      }
    }
    for (const auto& old : n.owners) {
      bool kept = std::any_of(owners.begin(), owners.end(),
                              [&](const OwnerRef& r) { return r.uid == old.uid; });
      if (kept) continue;
      auto owner = nodes_.find(old.uid);
      if (owner == nodes_.end()) continue;
      owner->second.dependents.erase(uid);
      if (owner->second.deleting_dependents) fx.attempt_delete.push_back(old.uid);
      if (!owner->second.observed && owner->second.dependents.empty()) nodes_.erase(owner);
    }
    n.owners = owners;
    add_dependent_to_owners(uid, n, added, fx);
  }

  void wake_if_deleting_dependents(const std::string& owner_uid, Effects& fx) {
    auto owner = nodes_.find(owner_uid);
    if (owner != nodes_.end() && owner->second.deleting_dependents) {
      fx.attempt_delete.push_back(owner_uid);
    }
  }

  void remove_locked(const std::string& uid, Effects& fx) {
    auto it = nodes_.find(uid);
    if (it == nodes_.end()) return;
    Node n = std::move(it->second);
    nodes_.erase(it);
    for (const auto& ref : n.owners) {
      auto owner = nodes_.find(ref.uid);
      if (owner == nodes_.end()) continue;
      owner->second.dependents.erase(uid);
      // An owner waiting for its dependents to go may be done now.
      if (owner->second.deleting_dependents) fx.attempt_delete.push_back(ref.uid);
      if (!owner->second.observed && owner->second.dependents.empty()) nodes_.erase(owner);
    }
    for (const auto& dep : n.dependents) fx.attempt_delete.push_back(dep);
  }

  void report_invalid_namespace(const std::string& uid, const Node& dependent, const OwnerRef& ref,
                                Effects& fx) const {
    Identity invalid{ref.api_version, ref.kind, dependent.identity.ns, ref.name};
    Json involved = {
        {"apiVersion", dependent.identity.api_version},
        {"kind", dependent.identity.kind},
        {"metadata",
         {{"namespace", dependent.identity.ns}, {"name", dependent.identity.name}, {"uid", uid}}}};
    fx.invalid_refs.push_back({std::move(involved), "ownerRef " + describe(invalid, ref.uid) +
                                                        " does not exist in namespace \"" +
                                                        dependent.identity.ns + "\""});
  }

  mutable std::mutex mu_;
  std::unordered_map<std::string, Node> nodes_;  // guarded by mu_: uid → node
};

// How one ownerReference of a dependent stands.
enum class RefState : uint8_t { kSolid, kDangling, kWaitingForDependentsDeletion };

class GarbageCollector : public Controller {
 public:
  GarbageCollector(ControllerContext& ctx, GarbageCollectorOptions options)
      : ctx_(ctx),
        resources_(std::move(options.resources)),
        absent_(options.absent_owner_cache_size),
        recorder_(ctx.recorder("garbage-collector-controller")),
        delete_workers_(
            "garbagecollector", delete_queue_,
            [this](const std::string& uid) { return attempt_to_delete(uid); },
            [this] { return synced(); }),
        orphan_workers_(
            "garbagecollector-orphan", orphan_queue_,
            [this](const std::string& uid) { return attempt_to_orphan(uid); },
            [this] { return synced(); }) {
    for (const auto& r : resources_) {
      client::Informer& informer = ctx.informers.informer(r);
      informers_.push_back(&informer);
      const client::Resource* resource = &r;
      informer.add_handlers(
          {[this, resource](const ObjectPtr& obj) { observe(resource, *obj); },
           [this, resource](const ObjectPtr&, const ObjectPtr& obj) { observe(resource, *obj); },
           [this](const ObjectPtr& obj) { forget(*obj); }});
    }
  }

  ~GarbageCollector() override { stop(); }

  std::string_view name() const override { return "garbage-collector"; }

  void start() override {
    delete_workers_.start(std::max(1, ctx_.options.workers));
    orphan_workers_.start(1);
  }

  void stop() override {
    delete_workers_.stop();
    orphan_workers_.stop();
  }

 private:
  bool synced() const {
    return std::all_of(informers_.begin(), informers_.end(),
                       [](const client::Informer* i) { return i->has_synced(); });
  }

  void observe(const client::Resource* resource, const Json& obj) {
    Effects fx;
    graph_.observe(resource, obj, fx);
    apply(fx);
  }

  void forget(const Json& obj) {
    std::string uid = client::uid_of(obj);
    if (uid.empty()) return;
    Effects fx;
    graph_.remove(uid, fx);
    apply(fx);
  }

  void apply(Effects& fx) {
    for (const auto& uid : fx.attempt_delete) delete_queue_.add(uid);
    for (const auto& uid : fx.attempt_orphan) orphan_queue_.add(uid);
    for (auto& invalid : fx.invalid_refs) {
      recorder_->event(invalid.involved, "Warning", "OwnerRefInvalidNamespace",
                       std::move(invalid.message));
    }
  }

  // The API resource of a node: its informer's, or the schema's for a kind known only from a
  // reference.
  std::optional<client::Resource> resource_of(const NodeView& v) const {
    if (v.resource) return *v.resource;
    return resource_for(v.identity.api_version, v.identity.kind);
  }

  static Status no_mapping(const Identity& id) {
    return error(StatusCode::kNotFound,
                 "unable to get REST mapping for " + id.api_version + "/" + id.kind);
  }

  Status attempt_to_delete(const std::string& uid) {
    std::optional<NodeView> view = graph_.view(uid);
    if (!view) return Status::ok();
    if (!view->observed) return verify_virtual(*view);
    // Being deleted without waiting for dependents: its deletion event will come.
    if (view->being_deleted && !view->deleting_dependents) return Status::ok();

    std::optional<client::Resource> resource = resource_of(*view);
    if (!resource) return no_mapping(view->identity);
    auto latest = ctx_.api.get(*resource, view->identity.ns, view->identity.name);
    if (!latest.is_ok()) {
      if (latest.status().code() != StatusCode::kNotFound) return latest.status();
      gone(uid);
      return Status::ok();
    }
    if (client::uid_of(latest.value()) != uid) {
      gone(uid);
      return Status::ok();
    }
    if (view->deleting_dependents) return process_deleting_dependents(*view, *resource);

    std::vector<OwnerRef> refs = owner_refs_of(latest.value());
    if (refs.empty()) return Status::ok();

    std::vector<std::string> solid, dangling, waiting;
    for (const auto& ref : refs) {
      std::optional<client::Resource> owner_resource = resource_for(ref.api_version, ref.kind);
      if (!owner_resource) {
        return error(StatusCode::kNotFound,
                     "unable to get REST mapping for " + ref.api_version + "/" + ref.kind);
      }
      if (view->identity.ns.empty() && owner_resource->namespaced) {
        // A cluster-scoped object cannot be owned by a namespaced one. Retrying cannot fix it.
        Identity invalid{ref.api_version, ref.kind, "", ref.name};
        recorder_->event(
            involved(*view), "Warning", "OwnerRefInvalidNamespace",
            "ownerRef " + describe(invalid, ref.uid) + " does not exist in namespace \"\"");
        return Status::ok();
      }
      std::string lookup_ns = owner_resource->namespaced ? view->identity.ns : "";
      std::string absent_key = ref.uid + "|" + lookup_ns;
      if (absent_.has(absent_key)) {
        dangling.push_back(ref.uid);
        continue;
      }
      auto owner = ctx_.api.get(*owner_resource, lookup_ns, ref.name);
      if (!owner.is_ok() && owner.status().code() != StatusCode::kNotFound) {
        return owner.status();
      }
      if (!owner.is_ok() || client::uid_of(owner.value()) != ref.uid) {
        absent_.add(absent_key);
        dangling.push_back(ref.uid);
        continue;
      }
      if (being_deleted(owner.value()) && has_finalizer(owner.value(), kForegroundFinalizer)) {
        waiting.push_back(ref.uid);
      } else {
        solid.push_back(ref.uid);
      }
    }

    if (!solid.empty()) {
      if (dangling.empty() && waiting.empty()) return Status::ok();
      // Keep the object for its live owners; forget the others (an owner waiting for its
      // dependents would otherwise wait for this one forever).
      std::vector<std::string> drop = dangling;
      drop.insert(drop.end(), waiting.begin(), waiting.end());
      SKIFF_LOG_DEBUG("garbagecollector: removing references to {} owners from {}", drop.size(),
                      describe(view->identity, uid));
      return remove_owner_refs(*resource, view->identity, uid, drop);
    }
    if (!waiting.empty() && !view->dependents.empty()) {
      // An owner waits for this object, which has dependents of its own: delete it in the
      // foreground too. If one of its dependents is itself waiting for its dependents, the
      // references may form a cycle; stop blocking so the owners can finish.
      bool cycle = std::any_of(view->dependents.begin(), view->dependents.end(),
                               [](const DependentView& d) { return d.deleting_dependents; });
      if (cycle) SKIFF_RETURN_IF_ERROR(unblock_owner_refs(*resource, view->identity, uid));
      return delete_object(*resource, view->identity, uid, "Foreground");
    }
    // No live owner: collect it, honouring a propagation its own finalizers ask for.
    std::string policy = "Background";
    if (has_finalizer(latest.value(), kOrphanFinalizer)) {
      policy = "Orphan";
    } else if (has_finalizer(latest.value(), kForegroundFinalizer)) {
      policy = "Foreground";
    }
    return delete_object(*resource, view->identity, uid, policy);
  }

  // A node known only from references: does the owner exist under the coordinates given?
  Status verify_virtual(const NodeView& view) {
    std::optional<client::Resource> resource = resource_of(view);
    if (!resource) return no_mapping(view.identity);
    std::string lookup_ns = resource->namespaced ? view.identity.ns : "";
    bool absent = resource->namespaced && lookup_ns.empty();  // no namespace to look in
    if (!absent) {
      auto live = ctx_.api.get(*resource, lookup_ns, view.identity.name);
      if (!live.is_ok() && live.status().code() != StatusCode::kNotFound) return live.status();
      absent = !live.is_ok() || client::uid_of(live.value()) != view.uid;
    }
    if (!absent) {
      // It exists but no informer has shown it yet (or its kind is not watched): look again
      // later, so its deletion is noticed even without an informer.
      return error(StatusCode::kAborted, "owner " + describe(view.identity, view.uid) +
                                             " exists but has not been observed yet");
    }
    absent_.add(view.uid + "|" + lookup_ns);
    Effects fx;
    bool again = graph_.virtual_absent(view.uid, view.identity, resource->namespaced, fx);
    apply(fx);
    if (again) delete_queue_.add_rate_limited(view.uid);
    return Status::ok();
  }

  // The object is gone though the graph still has it (the informer lags): drop it now so its
  // dependents are looked at.
  void gone(const std::string& uid) {
    Effects fx;
    graph_.remove(uid, fx);
    apply(fx);
  }

  Status process_deleting_dependents(const NodeView& view, const client::Resource& resource) {
    std::vector<const DependentView*> blocking;
    for (const auto& d : view.dependents) {
      if (d.blocks_owner) blocking.push_back(&d);
    }
    if (blocking.empty()) {
      return remove_finalizer(resource, view.identity, view.uid, kForegroundFinalizer);
    }
    for (const auto* d : blocking) {
      if (!d->deleting_dependents) delete_queue_.add(d->uid);
    }
    return Status::ok();
  }

  Status attempt_to_orphan(const std::string& uid) {
    std::optional<NodeView> view = graph_.view(uid);
    if (!view || !view->observed) return Status::ok();
    std::vector<std::string> errors;
    for (const auto& d : view->dependents) {
      if (!d.resource) continue;
      Status s = remove_owner_refs(*d.resource, d.identity, d.uid, {uid});
      if (!s.is_ok()) errors.push_back(describe(d.identity, d.uid) + ": " + s.message());
    }
    if (!errors.empty()) {
      std::string msg = "failed to orphan dependents of " + describe(view->identity, uid) + ":";
      for (const auto& e : errors) msg += " " + e + ";";
      return error(StatusCode::kUnavailable, msg);
    }
    std::optional<client::Resource> resource = resource_of(*view);
    if (!resource) return no_mapping(view->identity);
    return remove_finalizer(*resource, view->identity, uid, kOrphanFinalizer);
  }

  // Removes the references to `owner_uids` from the object (a JSON merge patch conditioned on
  // the resourceVersion it was computed from).
  Status remove_owner_refs(const client::Resource& resource, const Identity& id,
                           const std::string& uid, const std::vector<std::string>& owner_uids) {
    return patch_latest(resource, id, uid, [&](const Json& latest) -> std::optional<Json> {
      const Json& refs = member(metadata(latest), "ownerReferences");
      if (!refs.is_array()) return std::nullopt;
      Json kept = Json::array();
      for (const auto& ref : refs) {
        std::string ref_uid = ref.value("uid", "");
        if (std::find(owner_uids.begin(), owner_uids.end(), ref_uid) == owner_uids.end()) {
          kept.push_back(ref);
        }
      }
      if (kept.size() == refs.size()) return std::nullopt;
      return Json{{"ownerReferences", kept.empty() ? Json() : kept}};
    });
  }

  // Sets blockOwnerDeletion false on every reference of the object that has it true.
  Status unblock_owner_refs(const client::Resource& resource, const Identity& id,
                            const std::string& uid) {
    return patch_latest(resource, id, uid, [&](const Json& latest) -> std::optional<Json> {
      const Json& refs = member(metadata(latest), "ownerReferences");
      if (!refs.is_array()) return std::nullopt;
      Json updated = refs;
      bool changed = false;
      for (auto& ref : updated) {
        if (ref.is_object() && ref.value("blockOwnerDeletion", false)) {
          ref["blockOwnerDeletion"] = false;
          changed = true;
        }
      }
      if (!changed) return std::nullopt;
      return Json{{"ownerReferences", std::move(updated)}};
    });
  }

  Status remove_finalizer(const client::Resource& resource, const Identity& id,
                          const std::string& uid, std::string_view finalizer) {
    return patch_latest(resource, id, uid, [&](const Json& latest) -> std::optional<Json> {
      if (!has_finalizer(latest, finalizer)) return std::nullopt;
      Json kept = Json::array();
      for (const auto& f : member(metadata(latest), "finalizers")) {
        if (!(f.is_string() && f.get_ref<const std::string&>() == finalizer)) kept.push_back(f);
      }
      return Json{{"finalizers", kept.empty() ? Json() : kept}};
    });
  }

  // Reads the object live, lets `change` compute new metadata fields from it (nullopt: nothing
  // to do) and writes them with a merge patch conditioned on the resourceVersion read; retries
  // on conflict. An object that is gone, or replaced by another with the same name, needs
  // nothing.
  template <typename Change>
  Status patch_latest(const client::Resource& resource, const Identity& id, const std::string& uid,
                      Change change) {
    for (int attempt = 0;; ++attempt) {
      auto latest = ctx_.api.get(resource, id.ns, id.name);
      if (!latest.is_ok()) {
        return latest.status().code() == StatusCode::kNotFound ? Status::ok() : latest.status();
      }
      if (client::uid_of(latest.value()) != uid) return Status::ok();
      std::optional<Json> meta = change(latest.value());
      if (!meta) return Status::ok();
      (*meta)["resourceVersion"] = client::resource_version_of(latest.value());
      Json body = {{"metadata", std::move(*meta)}};
      auto patched =
          ctx_.api.patch(resource, id.ns, id.name, client::PatchType::kMerge, body.dump());
      if (patched.is_ok() || patched.status().code() == StatusCode::kNotFound) {
        return Status::ok();
      }
      if (patched.status().code() != StatusCode::kAborted || attempt + 1 >= kConflictRetries) {
        return patched.status();
      }
    }
  }

  Status delete_object(const client::Resource& resource, const Identity& id, const std::string& uid,
                       const std::string& policy) {
    client::DeleteOptions options;
    options.propagation_policy = policy;
    options.precondition_uid = uid;
    SKIFF_LOG_DEBUG("garbagecollector: deleting {} with propagation {}", describe(id, uid), policy);
    auto removed = ctx_.api.remove(resource, id.ns, id.name, options);
    if (!removed.is_ok() && removed.status().code() != StatusCode::kNotFound) {
      return removed.status();
    }
    return Status::ok();
  }

  static Json involved(const NodeView& v) {
    Json meta = {{"name", v.identity.name}, {"uid", v.uid}};
    if (!v.identity.ns.empty()) meta["namespace"] = v.identity.ns;
    return {{"apiVersion", v.identity.api_version},
            {"kind", v.identity.kind},
            {"metadata", std::move(meta)}};
  }

  ControllerContext& ctx_;
  // Stable after construction: nodes point at their resource here.
  const std::vector<client::Resource> resources_;
  std::vector<client::Informer*> informers_;
  Graph graph_;
  AbsentOwnerCache absent_;
  std::unique_ptr<client::EventRecorder> recorder_;
  client::WorkQueue delete_queue_;
  client::WorkQueue orphan_queue_;
  QueueWorkers delete_workers_;
  QueueWorkers orphan_workers_;
};

}  // namespace

std::vector<client::Resource> default_garbage_collected_resources() {
  return {kPods,
          kReplicaSets,
          kDeployments,
          kReplicationControllers,
          kJobs,
          kCronJobs,
          kDaemonSets,
          kStatefulSets,
          kControllerRevisions,
          kEndpoints,
          kEndpointSlices,
          kConfigMaps,
          kSecrets,
          kServices,
          kServiceAccounts,
          kLeases,
          kPersistentVolumeClaims,
          kNodes};
}

std::unique_ptr<Controller> new_garbagecollector_controller(ControllerContext& ctx) {
  return new_garbagecollector_controller(ctx, GarbageCollectorOptions{});
}

std::unique_ptr<Controller> new_garbagecollector_controller(ControllerContext& ctx,
                                                            GarbageCollectorOptions options) {
  return std::make_unique<GarbageCollector>(ctx, std::move(options));
}

}  // namespace skiff::controllers
