#include "client/fake_api_client.h"

#include <atomic>
#include <random>

#include "api/patch.h"
#include "api/selector.h"
#include "base/time.h"

namespace skiff::client {
namespace {

// Resources with no status subresource: a plain update may change everything.
bool has_status_subresource(const Resource& r) {
  static const std::set<std::string> kWithout = {
      "configmaps",      "secrets",         "endpoints",           "events",
      "leases",          "serviceaccounts", "endpointslices",      "controllerrevisions",
      "priorityclasses", "limitranges",     "events.events.k8s.io"};
  return !kWithout.count(r.resource);
}

std::string field_at(const Json& obj, std::string_view path) {
  const Json* cur = &obj;
  while (!path.empty()) {
    size_t dot = path.find('.');
    std::string part(path.substr(0, dot));
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
    if (!cur->is_object()) return "";
    auto it = cur->find(part);
    if (it == cur->end()) return "";
    cur = &*it;
  }
  if (cur->is_string()) return cur->get<std::string>();
  if (cur->is_boolean()) return cur->get<bool>() ? "true" : "false";
  if (cur->is_number()) return cur->dump();
  return "";
}

std::string random_suffix() {
  static const char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
  thread_local std::mt19937 rng(std::random_device{}());
  std::string s;
  for (int i = 0; i < 5; ++i) s += kAlphabet[rng() % (sizeof(kAlphabet) - 1)];
  return s;
}

std::string new_uid() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  char buf[40];
  uint64_t a = rng(), b = rng();
  std::snprintf(buf, sizeof(buf), "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xfff),
                static_cast<unsigned>(0x8000 | ((b >> 48) & 0x3fff)),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

Status not_found(const Resource& r, std::string_view name) {
  return error(StatusCode::kNotFound,
               r.display_name() + " \"" + std::string(name) + "\" not found");
}

}  // namespace

class FakeApiClient::FakeWatch : public WatchStream {
 public:
  FakeWatch(Resource r, std::string ns, api::LabelSelector labels, api::FieldSelector fields)
      : resource_(std::move(r)),
        ns_(std::move(ns)),
        labels_(std::move(labels)),
        fields_(std::move(fields)) {}

  bool wants(const Resource& r, const Json& obj) const {
    if (r.display_name() != resource_.display_name()) return false;
    if (!ns_.empty() && namespace_of(obj) != ns_) return false;
    const Json* labels = nullptr;
    if (auto m = obj.find("metadata"); m != obj.end()) {
      if (auto l = m->find("labels"); l != m->end()) labels = &*l;
    }
    static const Json kEmpty = Json::object();
    if (!labels_.matches(labels ? *labels : kEmpty)) return false;
    return fields_.matches([&](const std::string& path) { return field_at(obj, path); });
  }

  void push(WatchEvent ev) {
    std::lock_guard lock(mu_);
    if (closed_) return;
    events_.push_back(std::move(ev));
    cv_.notify_all();
  }

  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }

  Result<WatchEvent> next() override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !events_.empty() || closed_ || cancelled_; });
    if (cancelled_) return error(StatusCode::kCancelled, "watch cancelled");
    if (events_.empty()) return error(StatusCode::kUnavailable, "watch closed");
    WatchEvent ev = std::move(events_.front());
    events_.pop_front();
    return ev;
  }

  void cancel() override {
    std::lock_guard lock(mu_);
    cancelled_ = true;
    cv_.notify_all();
  }

 private:
  const Resource resource_;
  const std::string ns_;
  const api::LabelSelector labels_;
  const api::FieldSelector fields_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<WatchEvent> events_;  // guarded by mu_
  bool closed_ = false;            // guarded by mu_
  bool cancelled_ = false;         // guarded by mu_
};

FakeApiClient::FakeApiClient() = default;

FakeApiClient::~FakeApiClient() {
  std::lock_guard lock(mu_);
  for (const auto& w : watches_) w->close();
}

Status FakeApiClient::injected_failure(const std::string& verb, const Resource& r) {
  std::lock_guard lock(mu_);
  for (auto it = failures_.begin(); it != failures_.end(); ++it) {
    if ((it->verb == "*" || it->verb == verb) &&
        (it->resource == "*" || it->resource == r.display_name())) {
      Status s = it->status;
      if (--it->times <= 0) failures_.erase(it);
      return s;
    }
  }
  return Status::ok();
}

void FakeApiClient::record(const std::string& verb, const Resource& r, std::string_view subresource,
                           std::string_view ns, std::string_view name, const Json& object) {
  actions_.push_back({verb, r.display_name(), std::string(subresource), std::string(ns),
                      std::string(name), object});
}

void FakeApiClient::notify_locked(const Resource& r, WatchEventType type, const Json& object) {
  history_.push_back({rv_, r.display_name(), type, object});
  for (const auto& w : watches_) {
    if (w->wants(r, object)) w->push({type, object});
  }
}

Json FakeApiClient::put_locked(const Resource& r, const std::string& key, Json object,
                               WatchEventType type) {
  object["metadata"]["resourceVersion"] = std::to_string(++rv_);
  if (!object.contains("kind")) object["kind"] = r.kind;
  if (!object.contains("apiVersion")) object["apiVersion"] = r.api_version();
  store_[r.display_name()][key] = object;
  notify_locked(r, type, object);
  return object;
}

void FakeApiClient::delete_locked(const Resource& r, const std::string& key) {
  auto& objects = store_[r.display_name()];
  auto it = objects.find(key);
  if (it == objects.end()) return;
  Json last = std::move(it->second);
  objects.erase(it);
  ++rv_;
  last["metadata"]["resourceVersion"] = std::to_string(rv_);
  notify_locked(r, WatchEventType::kDeleted, last);
}

Json FakeApiClient::seed(const Resource& r, Json object) {
  std::lock_guard lock(mu_);
  auto& meta = object["metadata"];
  if (!meta.contains("uid")) meta["uid"] = new_uid();
  if (!meta.contains("creationTimestamp")) meta["creationTimestamp"] = rfc3339_now();
  if (r.namespaced && !meta.contains("namespace")) meta["namespace"] = "default";
  std::string key = key_of(object);
  bool exists = store_[r.display_name()].count(key) > 0;
  return put_locked(r, key, std::move(object),
                    exists ? WatchEventType::kModified : WatchEventType::kAdded);
}

Result<Json> FakeApiClient::get(const Resource& r, std::string_view ns, std::string_view name,
                                std::string_view subresource) {
  SKIFF_RETURN_IF_ERROR(injected_failure("get", r));
  std::lock_guard lock(mu_);
  auto& objects = store_[r.display_name()];
  auto it = objects.find(key_of(r.namespaced ? ns : "", name));
  if (it == objects.end()) return not_found(r, name);
  return it->second;
}

Result<Json> FakeApiClient::list(const Resource& r, std::string_view ns,
                                 const ListOptions& options) {
  SKIFF_RETURN_IF_ERROR(injected_failure("list", r));
  SKIFF_ASSIGN_OR_RETURN(auto labels, api::LabelSelector::parse(options.label_selector));
  SKIFF_ASSIGN_OR_RETURN(auto fields, api::FieldSelector::parse(options.field_selector));
  std::lock_guard lock(mu_);
  Json items = Json::array();
  static const Json kEmpty = Json::object();
  for (const auto& [key, obj] : store_[r.display_name()]) {
    if (!ns.empty() && namespace_of(obj) != ns) continue;
    const Json& meta = obj["metadata"];
    if (!labels.matches(meta.contains("labels") ? meta["labels"] : kEmpty)) continue;
    if (!fields.matches([&](const std::string& path) { return field_at(obj, path); })) continue;
    items.push_back(obj);
  }
  return Json{{"kind", r.kind + "List"},
              {"apiVersion", r.api_version()},
              {"metadata", {{"resourceVersion", std::to_string(rv_)}}},
              {"items", std::move(items)}};
}

Result<Json> FakeApiClient::write_locked(const Resource& r, std::string_view ns, Json object,
                                         std::string_view subresource, bool check_rv) {
  auto& meta = object["metadata"];
  if (r.namespaced) meta["namespace"] = std::string(ns.empty() ? namespace_of(object) : ns);
  std::string name = name_of(object);
  std::string key = key_of(object);
  auto& objects = store_[r.display_name()];
  auto it = objects.find(key);
  if (it == objects.end()) return not_found(r, name);
  const Json& old = it->second;
  std::string rv = resource_version_of(object);
  if (check_rv && !rv.empty() && rv != resource_version_of(old)) {
    return error(StatusCode::kAborted,
                 "Operation cannot be fulfilled on " + r.display_name() + " \"" + name +
                     "\": the object has been modified; please apply your changes to the latest "
                     "version and try again");
  }
  Json next;
  if (subresource == "status") {
    next = old;
    if (object.contains("status")) next["status"] = object["status"];
  } else {
    next = std::move(object);
    // Identity and server-set fields stay.
    for (const char* f : {"uid", "creationTimestamp", "deletionTimestamp", "generation"}) {
      if (old["metadata"].contains(f)) {
        next["metadata"][f] = old["metadata"][f];
      } else {
        next["metadata"].erase(f);
      }
    }
    if (has_status_subresource(r)) {
      if (old.contains("status")) {
        next["status"] = old["status"];
      } else {
        next.erase("status");
      }
    }
    if (subresource == "finalize") {
      Json spec_finalizers = next["spec"].value("finalizers", Json::array());
      next = old;
      next["spec"]["finalizers"] = spec_finalizers;
    }
    if (old.value("spec", Json()) != next.value("spec", Json())) {
      next["metadata"]["generation"] = old["metadata"].value("generation", 1) + 1;
    }
  }
  // An object being deleted goes once its last finalizer is removed.
  bool deleting = next["metadata"].contains("deletionTimestamp");
  bool no_finalizers =
      next["metadata"].value("finalizers", Json::array()).empty() &&
      (r.resource != "namespaces" ||
       next.value("spec", Json::object()).value("finalizers", Json::array()).empty());
  if (deleting && no_finalizers) {
    objects[key] = next;
    delete_locked(r, key);
    return next;
  }
  return put_locked(r, key, std::move(next), WatchEventType::kModified);
}

Result<Json> FakeApiClient::create(const Resource& r, std::string_view ns, const Json& object,
                                   const WriteOptions& options, std::string_view name,
                                   std::string_view subresource) {
  SKIFF_RETURN_IF_ERROR(injected_failure("create", r));
  std::lock_guard lock(mu_);
  if (!subresource.empty()) {
    auto& objects = store_[r.display_name()];
    std::string key = key_of(r.namespaced ? ns : "", name);
    auto it = objects.find(key);
    if (it == objects.end()) return not_found(r, name);
    record("create", r, subresource, ns, name, object);
    if (subresource == "binding") {
      Json pod = it->second;
      if (!pod["spec"].value("nodeName", "").empty()) {
        return error(StatusCode::kAborted, "pod " + std::string(name) +
                                               " is already assigned to node \"" +
                                               pod["spec"].value("nodeName", "") + "\"");
      }
      pod["spec"]["nodeName"] = object["target"].value("name", "");
      put_locked(r, key, std::move(pod), WatchEventType::kModified);
      return Json{{"kind", "Status"}, {"apiVersion", "v1"}, {"status", "Success"}, {"code", 201}};
    }
    if (subresource == "eviction") {
      delete_locked(r, key);
      return Json{{"kind", "Status"}, {"apiVersion", "v1"}, {"status", "Success"}, {"code", 201}};
    }
    return error(StatusCode::kNotFound, "the fake has no subresource " + std::string(subresource));
  }
  Json obj = object;
  auto& meta = obj["metadata"];
  if (r.namespaced) {
    std::string obj_ns = meta.value("namespace", "");
    meta["namespace"] = !ns.empty() ? std::string(ns) : obj_ns.empty() ? "default" : obj_ns;
  }
  if (meta.value("name", "").empty()) {
    std::string prefix = meta.value("generateName", "");
    if (prefix.empty())
      return error(StatusCode::kInvalidArgument, "name or generateName is required");
    meta["name"] = prefix + random_suffix();
  }
  std::string key = key_of(obj);
  auto& objects = store_[r.display_name()];
  if (objects.count(key)) {
    return error(StatusCode::kAlreadyExists,
                 r.display_name() + " \"" + meta.value("name", "") + "\" already exists");
  }
  if (r.namespaced && r.resource != "events" &&
      !store_["namespaces"].count(meta.value("namespace", "")) && !store_["namespaces"].empty()) {
    return error(StatusCode::kNotFound,
                 "namespaces \"" + meta.value("namespace", "") + "\" not found");
  }
  meta["uid"] = new_uid();
  meta["creationTimestamp"] = rfc3339_now();
  meta["generation"] = 1;
  meta.erase("resourceVersion");
  if (options.dry_run) return obj;
  record("create", r, "", meta.value("namespace", ""), meta.value("name", ""), obj);
  return put_locked(r, key, std::move(obj), WatchEventType::kAdded);
}

Result<Json> FakeApiClient::update(const Resource& r, std::string_view ns, const Json& object,
                                   const WriteOptions& options, std::string_view subresource) {
  SKIFF_RETURN_IF_ERROR(injected_failure("update", r));
  std::lock_guard lock(mu_);
  auto result = write_locked(r, ns, object, subresource, true);
  if (result.is_ok()) {
    record("update", r, subresource, namespace_of(result.value()), name_of(result.value()),
           result.value());
  }
  return result;
}

Result<Json> FakeApiClient::patch(const Resource& r, std::string_view ns, std::string_view name,
                                  PatchType type, std::string_view body,
                                  const WriteOptions& options, std::string_view subresource) {
  SKIFF_RETURN_IF_ERROR(injected_failure("patch", r));
  Json patch = Json::parse(body, nullptr, false);
  if (patch.is_discarded()) return error(StatusCode::kInvalidArgument, "malformed patch body");
  std::lock_guard lock(mu_);
  auto& objects = store_[r.display_name()];
  auto it = objects.find(key_of(r.namespaced ? ns : "", name));
  if (it == objects.end()) return not_found(r, name);
  Json patched;
  switch (type) {
    case PatchType::kJson: {
      SKIFF_ASSIGN_OR_RETURN(patched, api::apply_json_patch(it->second, patch));
      break;
    }
    case PatchType::kMerge:
    case PatchType::kStrategicMerge:
      patched = api::apply_merge_patch(it->second, patch);
      break;
    case PatchType::kApply:
      return error(StatusCode::kUnimplemented, "the fake API client does not do server-side apply");
  }
  // A patch may carry a resourceVersion precondition; otherwise it applies to the latest.
  bool check_rv = patch.is_object() && patch.contains("metadata") &&
                  patch["metadata"].contains("resourceVersion");
  if (!check_rv) patched["metadata"]["resourceVersion"] = it->second["metadata"]["resourceVersion"];
  auto result = write_locked(r, ns, std::move(patched), subresource, check_rv);
  if (result.is_ok()) record("patch", r, subresource, ns, name, result.value());
  return result;
}

Result<Json> FakeApiClient::remove(const Resource& r, std::string_view ns, std::string_view name,
                                   const DeleteOptions& options) {
  SKIFF_RETURN_IF_ERROR(injected_failure("delete", r));
  std::lock_guard lock(mu_);
  auto& objects = store_[r.display_name()];
  std::string key = key_of(r.namespaced ? ns : "", name);
  auto it = objects.find(key);
  if (it == objects.end()) return not_found(r, name);
  Json obj = it->second;
  if (!options.precondition_uid.empty() && options.precondition_uid != uid_of(obj)) {
    return error(StatusCode::kAborted,
                 "Precondition failed: UID in precondition: " + options.precondition_uid +
                     ", UID in object meta: " + uid_of(obj));
  }
  if (!options.precondition_resource_version.empty() &&
      options.precondition_resource_version != resource_version_of(obj)) {
    return error(StatusCode::kAborted, "Precondition failed: resourceVersion mismatch");
  }
  record("delete", r, "", ns, name, Json());
  auto& meta = obj["metadata"];
  if (graceful_pod_deletion_ && r.resource == "pods" &&
      !obj.value("spec", Json::object()).value("nodeName", "").empty()) {
    int64_t grace = options.grace_period_seconds.value_or(
        obj["spec"].value("terminationGracePeriodSeconds", int64_t{30}));
    if (grace > 0) {
      if (!meta.contains("deletionTimestamp")) {
        meta["deletionTimestamp"] = rfc3339_now();
        meta["deletionGracePeriodSeconds"] = grace;
        return put_locked(r, key, std::move(obj), WatchEventType::kModified);
      }
      return obj;
    }
  }
  Json finalizers = meta.value("finalizers", Json::array());
  auto add_finalizer = [&](const char* f) {
    if (std::find(finalizers.begin(), finalizers.end(), f) == finalizers.end()) {
      finalizers.push_back(f);
    }
  };
  if (options.propagation_policy == "Foreground") add_finalizer("foregroundDeletion");
  if (options.propagation_policy == "Orphan") add_finalizer("orphan");
  bool namespace_finalizers =
      r.resource == "namespaces" &&
      !obj.value("spec", Json::object()).value("finalizers", Json::array()).empty();
  if (finalizers.empty() && !namespace_finalizers) {
    delete_locked(r, key);
    return obj;
  }
  if (!meta.contains("deletionTimestamp")) {
    meta["deletionTimestamp"] = rfc3339_now();
    meta["deletionGracePeriodSeconds"] = 0;
  }
  meta["finalizers"] = finalizers;
  if (r.resource == "namespaces") obj["status"]["phase"] = "Terminating";
  return put_locked(r, key, std::move(obj), WatchEventType::kModified);
}

Result<std::unique_ptr<WatchStream>> FakeApiClient::watch(const Resource& r, std::string_view ns,
                                                          const ListOptions& options) {
  SKIFF_RETURN_IF_ERROR(injected_failure("watch", r));
  SKIFF_ASSIGN_OR_RETURN(auto labels, api::LabelSelector::parse(options.label_selector));
  SKIFF_ASSIGN_OR_RETURN(auto fields, api::FieldSelector::parse(options.field_selector));
  auto w = std::make_shared<FakeWatch>(r, std::string(ns), std::move(labels), std::move(fields));
  std::lock_guard lock(mu_);
  int64_t from = 0;
  if (!options.resource_version.empty() && options.resource_version != "0") {
    from = std::stoll(options.resource_version);
  }
  if (from > 0 && from < compacted_rv_) {
    return error(StatusCode::kCompacted, "too old resource version: " + std::to_string(from) +
                                             " (" + std::to_string(compacted_rv_) + ")");
  }
  if (from > 0) {
    for (const auto& h : history_) {
      if (h.rv > from && h.resource == r.display_name() && w->wants(r, h.object)) {
        w->push({h.type, h.object});
      }
    }
  } else {
    for (const auto& [key, obj] : store_[r.display_name()]) {
      if (w->wants(r, obj)) w->push({WatchEventType::kAdded, obj});
    }
  }
  watches_.insert(w);
  // The stream handed out shares the watch; a cancelled stream is dropped at the next notify.
  struct Handle : WatchStream {
    std::shared_ptr<FakeWatch> w;
    FakeApiClient* owner;
    ~Handle() override {
      w->cancel();
      std::lock_guard lock(owner->mu_);
      owner->watches_.erase(w);
    }
    Result<WatchEvent> next() override { return w->next(); }
    void cancel() override { w->cancel(); }
  };
  auto handle = std::make_unique<Handle>();
  handle->w = w;
  handle->owner = this;
  return std::unique_ptr<WatchStream>(std::move(handle));
}

std::vector<FakeApiClient::Action> FakeApiClient::actions() const {
  std::lock_guard lock(mu_);
  return actions_;
}

std::vector<FakeApiClient::Action> FakeApiClient::actions(const std::string& verb,
                                                          const std::string& resource) const {
  std::lock_guard lock(mu_);
  std::vector<Action> out;
  for (const auto& a : actions_) {
    if (a.verb == verb && a.resource == resource) out.push_back(a);
  }
  return out;
}

void FakeApiClient::clear_actions() {
  std::lock_guard lock(mu_);
  actions_.clear();
}

void FakeApiClient::fail(const std::string& verb, const std::string& resource, Status status,
                         int times) {
  std::lock_guard lock(mu_);
  failures_.push_back({verb, resource, std::move(status), times});
}

void FakeApiClient::set_graceful_pod_deletion(bool enabled) {
  std::lock_guard lock(mu_);
  graceful_pod_deletion_ = enabled;
}

void FakeApiClient::expire_watches() {
  std::lock_guard lock(mu_);
  Json gone = {{"kind", "Status"},    {"apiVersion", "v1"},
               {"status", "Failure"}, {"reason", "Expired"},
               {"code", 410},         {"message", "too old resource version"}};
  for (const auto& w : watches_) {
    w->push({WatchEventType::kError, gone});
    w->close();
  }
  watches_.clear();
  history_.clear();
  compacted_rv_ = rv_ + 1;
}

int64_t FakeApiClient::resource_version() const {
  std::lock_guard lock(mu_);
  return rv_;
}

size_t FakeApiClient::count(const Resource& r) const {
  std::lock_guard lock(mu_);
  auto it = store_.find(r.display_name());
  return it == store_.end() ? 0 : it->second.size();
}

}  // namespace skiff::client
