#include "client/informer.h"

#include <random>

#include "base/check.h"
#include "base/log.h"

namespace skiff::client {

void strip_managed_fields(Json& obj) {
  auto m = obj.find("metadata");
  if (m != obj.end() && m->is_object()) m->erase("managedFields");
}

Informer::Informer(ApiClient& client, Resource resource, InformerOptions options)
    : client_(client), resource_(std::move(resource)), options_(std::move(options)) {}

Informer::~Informer() {
  stop();
}

void Informer::add_handlers(EventHandlers handlers) {
  SKIFF_CHECK(!thread_.joinable(), "Informer::add_handlers after start()");
  handlers_.push_back(std::move(handlers));
}

void Informer::add_index(const std::string& name, IndexFunc func) {
  SKIFF_CHECK(!thread_.joinable(), "Informer::add_index after start()");
  index_funcs_.emplace_back(name, std::move(func));
  indexes_[name];
}

void Informer::set_transform(std::function<void(Json& obj)> transform) {
  SKIFF_CHECK(!thread_.joinable(), "Informer::set_transform after start()");
  transform_ = std::move(transform);
}

void Informer::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
  if (options_.resync_period.count() > 0) {
    resync_thread_ = std::thread([this] { resync_loop(); });
  }
}

void Informer::stop() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
    if (watch_) watch_->cancel();
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (resync_thread_.joinable()) resync_thread_.join();
}

bool Informer::has_synced() const {
  std::lock_guard lock(mu_);
  return synced_;
}

bool Informer::wait_for_sync(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return synced_cv_.wait_for(lock, timeout, [&] { return synced_; });
}

ObjectPtr Informer::get(const std::string& key) const {
  std::lock_guard lock(mu_);
  auto it = items_.find(key);
  return it == items_.end() ? nullptr : it->second;
}

ObjectPtr Informer::get(std::string_view ns, std::string_view name) const {
  return get(key_of(resource_.namespaced ? ns : std::string_view(), name));
}

std::vector<ObjectPtr> Informer::list() const {
  std::lock_guard lock(mu_);
  std::vector<ObjectPtr> out;
  out.reserve(items_.size());
  for (const auto& [key, obj] : items_) out.push_back(obj);
  return out;
}

std::vector<ObjectPtr> Informer::list(std::string_view ns) const {
  if (ns.empty()) return list();
  std::lock_guard lock(mu_);
  std::vector<ObjectPtr> out;
  auto it = by_namespace_.find(std::string(ns));
  if (it == by_namespace_.end()) return out;
  out.reserve(it->second.size());
  for (const auto& key : it->second) {
    auto obj = items_.find(key);
    if (obj != items_.end()) out.push_back(obj->second);
  }
  return out;
}

std::vector<ObjectPtr> Informer::by_index(const std::string& index,
                                          const std::string& value) const {
  std::lock_guard lock(mu_);
  std::vector<ObjectPtr> out;
  auto idx = indexes_.find(index);
  SKIFF_CHECK(idx != indexes_.end(), "Informer::by_index: no index named " + index);
  auto keys = idx->second.find(value);
  if (keys == idx->second.end()) return out;
  out.reserve(keys->second.size());
  for (const auto& key : keys->second) {
    auto obj = items_.find(key);
    if (obj != items_.end()) out.push_back(obj->second);
  }
  return out;
}

size_t Informer::size() const {
  std::lock_guard lock(mu_);
  return items_.size();
}

std::string Informer::resource_version() const {
  std::lock_guard lock(mu_);
  return resource_version_;
}

bool Informer::sleep_for(std::chrono::milliseconds d) {
  std::unique_lock lock(stop_mu_);
  return !stop_cv_.wait_for(lock, d, [&] { return stopping_.load(); });
}

void Informer::index_insert(const std::string& key, const Json& obj) {
  if (resource_.namespaced) by_namespace_[namespace_of(obj)].insert(key);
  for (const auto& [name, func] : index_funcs_) {
    auto& index = indexes_[name];
    for (auto& value : func(obj)) index[value].insert(key);
  }
}

void Informer::index_remove(const std::string& key, const Json& obj) {
  if (resource_.namespaced) {
    auto ns = by_namespace_.find(namespace_of(obj));
    if (ns != by_namespace_.end()) {
      ns->second.erase(key);
      if (ns->second.empty()) by_namespace_.erase(ns);
    }
  }
  for (const auto& [name, func] : index_funcs_) {
    auto& index = indexes_[name];
    for (auto& value : func(obj)) {
      auto it = index.find(value);
      if (it == index.end()) continue;
      it->second.erase(key);
      if (it->second.empty()) index.erase(it);
    }
  }
}

ObjectPtr Informer::make_object(Json&& obj) const {
  if (transform_) transform_(obj);
  return std::make_shared<const Json>(std::move(obj));
}

void Informer::apply_upsert(ObjectPtr obj) {
  std::string key = key_of(*obj);
  ObjectPtr old;
  {
    std::lock_guard lock(mu_);
    auto& slot = items_[key];
    old = std::move(slot);
    if (old) index_remove(key, *old);
    slot = obj;
    index_insert(key, *obj);
    std::string rv = resource_version_of(*obj);
    if (!rv.empty()) resource_version_ = std::move(rv);
  }
  std::lock_guard handlers(handler_mu_);
  for (const auto& h : handlers_) {
    if (old) {
      if (h.on_update) h.on_update(old, obj);
    } else if (h.on_add) {
      h.on_add(obj);
    }
  }
}

void Informer::apply_delete(const ObjectPtr& obj) {
  std::string key = key_of(*obj);
  ObjectPtr last;
  {
    std::lock_guard lock(mu_);
    auto it = items_.find(key);
    if (it != items_.end()) {
      last = std::move(it->second);
      index_remove(key, *last);
      items_.erase(it);
    }
    std::string rv = resource_version_of(*obj);
    if (!rv.empty()) resource_version_ = std::move(rv);
  }
  if (!last) last = obj;
  std::lock_guard handlers(handler_mu_);
  for (const auto& h : handlers_) {
    if (h.on_delete) h.on_delete(last);
  }
}

bool Informer::list_and_replace() {
  ListOptions opts;
  opts.label_selector = options_.label_selector;
  opts.field_selector = options_.field_selector;
  auto listed = client_.list(resource_, options_.ns, opts);
  if (!listed.is_ok()) {
    SKIFF_LOG_WARN("informer {}: list failed: {}", resource_.display_name(),
                   listed.status().to_string());
    return false;
  }
  Json& body = listed.value();
  std::unordered_map<std::string, ObjectPtr> fresh;
  if (auto items = body.find("items"); items != body.end() && items->is_array()) {
    fresh.reserve(items->size());
    for (auto& item : *items) {
      // List items carry no kind/apiVersion; set them so handlers see whole objects.
      item["kind"] = resource_.kind;
      item["apiVersion"] = resource_.api_version();
      auto obj = make_object(std::move(item));
      std::string key = key_of(*obj);
      fresh.emplace(std::move(key), std::move(obj));
    }
  }
  std::string list_rv;
  if (auto m = body.find("metadata"); m != body.end() && m->is_object()) {
    list_rv = m->value("resourceVersion", "");
  }

  struct Change {
    ObjectPtr old;
    ObjectPtr obj;
  };
  std::vector<Change> changes;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, old] : items_) {
      if (!fresh.count(key)) changes.push_back({old, nullptr});
    }
    for (const auto& [key, obj] : fresh) {
      auto it = items_.find(key);
      if (it == items_.end()) {
        changes.push_back({nullptr, obj});
      } else if (resource_version_of(*it->second) != resource_version_of(*obj) || !synced_) {
        changes.push_back({it->second, obj});
      }
    }
    items_ = std::move(fresh);
    by_namespace_.clear();
    for (auto& [name, index] : indexes_) index.clear();
    for (const auto& [key, obj] : items_) index_insert(key, *obj);
    resource_version_ = list_rv;
  }
  {
    std::lock_guard handlers(handler_mu_);
    for (const auto& c : changes) {
      for (const auto& h : handlers_) {
        if (!c.obj) {
          if (h.on_delete) h.on_delete(c.old);
        } else if (!c.old) {
          if (h.on_add) h.on_add(c.obj);
        } else if (h.on_update) {
          h.on_update(c.old, c.obj);
        }
      }
    }
  }
  {
    std::lock_guard lock(mu_);
    synced_ = true;
  }
  synced_cv_.notify_all();
  return true;
}

// Watches from the last resourceVersion until the watch cannot be resumed (returns, and run()
// lists again) or the informer stops.
void Informer::watch_loop() {
  std::mt19937 rng(std::random_device{}());
  while (!stopping_) {
    ListOptions opts;
    opts.label_selector = options_.label_selector;
    opts.field_selector = options_.field_selector;
    opts.resource_version = resource_version();
    opts.allow_watch_bookmarks = true;
    // Like client-go, spread re-watches: 5 to 10 minutes.
    opts.timeout_seconds = 300 + static_cast<int64_t>(rng() % 300);
    auto opened = client_.watch(resource_, options_.ns, opts);
    if (!opened.is_ok()) {
      if (opened.status().code() != StatusCode::kCompacted) {
        SKIFF_LOG_WARN("informer {}: watch failed: {}", resource_.display_name(),
                       opened.status().to_string());
      }
      return;
    }
    {
      std::lock_guard lock(stop_mu_);
      if (stopping_) return;
      watch_ = std::move(opened.value());
    }
    bool resume = false;
    while (true) {
      auto ev = watch_->next();
      if (!ev.is_ok()) {
        // The server ended the stream (timeout): resume from where we are.
        resume = ev.status().code() == StatusCode::kUnavailable;
        break;
      }
      WatchEvent& e = ev.value();
      if (e.type == WatchEventType::kError) {
        int code = e.object.value("code", 0);
        if (code != 410) {
          SKIFF_LOG_WARN("informer {}: watch error: {}", resource_.display_name(),
                         e.object.value("message", ""));
        }
        break;
      }
      if (e.type == WatchEventType::kBookmark) {
        std::string rv = resource_version_of(e.object);
        if (!rv.empty()) {
          std::lock_guard lock(mu_);
          resource_version_ = std::move(rv);
        }
        continue;
      }
      auto obj = make_object(std::move(e.object));
      if (e.type == WatchEventType::kDeleted) {
        apply_delete(obj);
      } else {
        apply_upsert(std::move(obj));
      }
    }
    {
      std::lock_guard lock(stop_mu_);
      watch_.reset();
    }
    if (!resume) return;
  }
}

void Informer::run() {
  auto delay = options_.retry_initial;
  while (!stopping_) {
    if (!list_and_replace()) {
      if (!sleep_for(delay)) return;
      delay = std::min(delay * 2, options_.retry_max);
      continue;
    }
    delay = options_.retry_initial;
    watch_loop();
    // A watch that cannot resume: list again, after a short pause so a failing server is not
    // hammered.
    if (!stopping_ && !sleep_for(options_.retry_initial)) return;
  }
}

void Informer::resync_loop() {
  while (sleep_for(options_.resync_period)) {
    if (!has_synced()) continue;
    auto objects = list();
    std::lock_guard handlers(handler_mu_);
    for (const auto& obj : objects) {
      for (const auto& h : handlers_) {
        if (h.on_update) h.on_update(obj, obj);
      }
    }
  }
}

InformerFactory::InformerFactory(ApiClient& client, std::chrono::milliseconds resync_period)
    : client_(client), resync_period_(resync_period) {}

InformerFactory::~InformerFactory() {
  stop();
}

Informer& InformerFactory::informer(const Resource& r) {
  std::lock_guard lock(mu_);
  auto& slot = informers_[r.display_name()];
  if (!slot) {
    InformerOptions options;
    options.resync_period = resync_period_;
    slot = std::make_unique<Informer>(client_, r, options);
    slot->set_transform(strip_managed_fields);
    if (started_) slot->start();
  }
  return *slot;
}

void InformerFactory::start() {
  std::lock_guard lock(mu_);
  started_ = true;
  for (auto& [name, informer] : informers_) informer->start();
}

bool InformerFactory::wait_for_sync(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<Informer*> all;
  {
    std::lock_guard lock(mu_);
    for (auto& [name, informer] : informers_) all.push_back(informer.get());
  }
  for (auto* informer : all) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!informer->wait_for_sync(std::max(left, std::chrono::milliseconds(0)))) return false;
  }
  return true;
}

void InformerFactory::stop() {
  std::lock_guard lock(mu_);
  for (auto& [name, informer] : informers_) informer->stop();
}

}  // namespace skiff::client
