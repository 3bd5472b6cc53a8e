#include "apiserver/registry.h"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_set>

#include "api/managed_fields.h"
#include "api/patch.h"
#include "api/protobuf.h"
#include "api/selector.h"
#include "api/validation.h"
#include "apiserver/object.h"
#include "apiserver/wire.h"
#include "base/kubeconfig.h"
#include "base/log.h"

namespace skiff::apiserver {
namespace {

using nlohmann::json;
using storage::KeyRange;

constexpr int kMaxConflictRetries = 8;
constexpr auto kBookmarkInterval = std::chrono::seconds(30);

std::string object_prefix(const api::ResourceInfo& r, const std::string& ns) {
  std::string p = "/registry/" + r.resource + "/";
  if (r.namespaced && !ns.empty()) p += ns + "/";
  return p;
}

std::string object_key(const api::ResourceInfo& r, const std::string& ns, const std::string& name) {
  return object_prefix(r, r.namespaced ? ns : std::string()) + name;
}

Response error_response(const api::ApiError& e) {
  Response r;
  r.status = e.code;
  r.body = e.to_json();
  if (e.retry_after_seconds > 0) {
    r.headers.push_back({"Retry-After", std::to_string(e.retry_after_seconds)});
  }
  return r;
}

Response json_response(int status, std::string body) {
  Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

// The request's options that shape a read: selectors, table output.
struct ReadOptions {
  api::LabelSelector labels;
  api::FieldSelector fields;
  bool table = false;
  std::string table_content_type;
  std::string include_object = "Metadata";
};

json partial_metadata(const json& obj) {
  json meta = obj.contains("metadata") ? obj["metadata"] : json::object();
  return json{{"kind", "PartialObjectMetadata"},
              {"apiVersion", "meta.k8s.io/v1"},
              {"metadata", std::move(meta)}};
}

api::ApiError invalid_patch(std::string message) {
  api::ApiError e;
  e.code = 422;
  e.reason = "Invalid";
  e.message = std::move(message);
  return e;
}

int64_t to_int(std::string_view s, bool* ok) {
  int64_t v = 0;
  *ok = !s.empty();
  for (char c : s) {
    if (c < '0' || c > '9' || v > (INT64_MAX - 9) / 10) {
      *ok = false;
      return 0;
    }
    v = v * 10 + (c - '0');
  }
  return v;
}

// The writer of the request being served, for metadata.managedFields. Requests are served
// synchronously on the calling thread, so handle() sets it for its duration; internal writes
// (ensure()) have none and record no ownership.
struct WriteContext {
  std::string manager;
  std::string subresource;
  bool apply = false;  // server-side apply computes managedFields itself
};
thread_local WriteContext* tl_writer = nullptr;

class WriteContextScope {
 public:
  explicit WriteContextScope(WriteContext* w) : prev_(tl_writer) { tl_writer = w; }
  ~WriteContextScope() { tl_writer = prev_; }
  WriteContextScope(const WriteContextScope&) = delete;
  WriteContextScope& operator=(const WriteContextScope&) = delete;

 private:
  WriteContext* prev_;
};

api::WriterInfo writer_info(const api::ResourceInfo& res, const WriteContext& w) {
  return api::WriterInfo{w.manager, w.subresource, res.group_version(), rfc3339_now(),
                         res.subresource("status") != nullptr};
}

// Records the current writer's Update in obj.metadata.managedFields (old is null on create).
void record_update(const api::ResourceInfo& res, const api::Schema& schema, const json* old,
                   json& obj) {
  if (!tl_writer || tl_writer->apply || tl_writer->manager.empty() || !res.type) return;
  json updated = api::update_managed_fields(old ? *old : json(), obj, writer_info(res, *tl_writer),
                                            *res.type, schema);
  json& meta = obj["metadata"];
  if (updated["metadata"].contains("managedFields")) {
    meta["managedFields"] = std::move(updated["metadata"]["managedFields"]);
  } else {
    meta.erase("managedFields");
  }
}

}  // namespace

struct Registry::Ctx {
  const RequestInfo& info;
  Request& req;
  const api::ResourceInfo& res;
  const Strategy& strategy;
  ReadOptions read;
};

// ---------------------------------------------------------------------------------------------
// Construction and dispatch

Registry::Registry(storage::Store& store, const api::Schema& schema)
    : store_(store), schema_(schema), line_cache_(std::make_unique<EventLineCache>()) {
  default_table_.push_back({"Name", "string", "name", 0,
                            [](const json& o) -> json { return field_value(o, "metadata.name"); }});
  default_table_.push_back({"Created At", "date", "", 0, [](const json& o) -> json {
                              return field_value(o, "metadata.creationTimestamp");
                            }});
  ticker_ = std::thread([this] { ticker_loop(); });
}

// As upstream's lease manager: writes share a lease granted for the TTL plus a reuse window
// (5 % of the TTL, at most 60 s) as long as it still outlasts the TTL from now, so an object
// lives between its TTL and the TTL plus that window.
Result<int64_t> Registry::lease_for(int64_t ttl_seconds) {
  const auto ttl = std::chrono::seconds(ttl_seconds);
  const auto reuse = std::chrono::seconds(std::min<int64_t>(60, ttl_seconds * 5 / 100));
  std::lock_guard lock(lease_mu_);
  auto now = std::chrono::steady_clock::now();
  if (lease_id_ != 0 && now + ttl < lease_expiry_ && now + ttl + reuse >= lease_expiry_) {
    return lease_id_;
  }
  auto granted = store_.lease_grant((ttl + reuse).count());
  if (!granted.is_ok()) return granted.status();
  lease_id_ = *granted;
  lease_expiry_ = now + ttl + reuse;
  return lease_id_;
}

void Registry::set_strategy(const std::string& group, const std::string& resource,
                            Strategy strategy) {
  strategies_[group + "/" + resource] = std::move(strategy);
}

void Registry::set_table(const std::string& group, const std::string& resource,
                         std::vector<TableColumn> columns) {
  tables_[group + "/" + resource] = std::move(columns);
}

const Strategy& Registry::strategy(const api::ResourceInfo& r) const {
  auto it = strategies_.find(r.group + "/" + r.resource);
  return it == strategies_.end() ? default_strategy_ : it->second;
}

const std::vector<TableColumn>& Registry::table(const api::ResourceInfo& r) const {
  auto it = tables_.find(r.group + "/" + r.resource);
  return it == tables_.end() ? default_table_ : it->second;
}

void Registry::handle(const RequestInfo& info, Request& request, Responder& responder) {
  const api::ResourceInfo* res = schema_.resource(info.group, info.version, info.resource);
  if (!res) {
    responder.respond(error_response(api::ApiError::not_found_path()));
    return;
  }
  if (!res->namespaced && !info.ns.empty() && info.resource != "namespaces") {
    responder.respond(error_response(api::ApiError::not_found_path()));
    return;
  }
  const api::SubresourceInfo* sub = nullptr;
  if (!info.subresource.empty()) {
    sub = res->subresource(info.subresource);
    // The subresources served here; log, exec, attach and portforward are proxied to the
    // kubelet before this, the proxy and ephemeralcontainers subresources are not served.
    static const std::unordered_set<std::string_view> kServed = {"status", "scale", "binding",
                                                                 "eviction", "finalize"};
    if (!sub || !kServed.count(info.subresource)) {
      responder.respond(error_response(api::ApiError::not_found_path()));
      return;
    }
  }
  // As upstream, a verb the resource (or subresource) does not have is 405: namespaces have no
  // deletecollection, a status has no create, a binding no get.
  const std::vector<std::string>& verbs = sub ? sub->verbs : res->verbs;
  if (std::find(verbs.begin(), verbs.end(), info.verb) == verbs.end()) {
    responder.respond(error_response(api::ApiError::method_not_allowed(
        "the server does not allow this method on the requested resource")));
    return;
  }
  Ctx c{info, request, *res, strategy(*res), {}};
  WriteContext writer{std::string(request.param("fieldManager")), info.subresource};
  if (writer.manager.empty()) {
    writer.manager = api::manager_from_user_agent(request.header("User-Agent"));
  }
  WriteContextScope writer_scope(&writer);
  // Read options shared by get, list and watch.
  if (info.verb == "get" || info.verb == "list" || info.verb == "watch" ||
      info.verb == "deletecollection") {
    if (auto s = request.param("labelSelector"); !s.empty()) {
      auto parsed = api::LabelSelector::parse(s);
      if (!parsed.is_ok()) {
        responder.respond(error_response(api::ApiError::bad_request(
            "unable to parse requirement: " + parsed.status().message())));
        return;
      }
      c.read.labels = std::move(parsed).value();
    }
    if (auto s = request.param("fieldSelector"); !s.empty()) {
      auto parsed = api::FieldSelector::parse(s);
      if (!parsed.is_ok()) {
        responder.respond(error_response(api::ApiError::bad_request(parsed.status().message())));
        return;
      }
      for (const api::Requirement& r : parsed->requirements()) {
        const auto& allowed = c.strategy.selectable_fields;
        if (r.key != "metadata.name" && r.key != "metadata.namespace" &&
            std::find(allowed.begin(), allowed.end(), r.key) == allowed.end()) {
          responder.respond(
              error_response(api::ApiError::bad_request("field label not supported: " + r.key)));
          return;
        }
      }
      c.read.fields = std::move(parsed).value();
    }
    c.read.table_content_type = table_content_type(request.header("Accept"));
    c.read.table = !c.read.table_content_type.empty() && info.subresource.empty();
    if (auto inc = request.param("includeObject"); !inc.empty()) {
      c.read.include_object = std::string(inc);
    }
  }
  const std::string& verb = info.verb;
  Response response;
  if (verb == "get") {
    response = get(c);
  } else if (verb == "list") {
    response = list(c);
  } else if (verb == "watch") {
    watch(c, responder);
    return;
  } else if (verb == "create") {
    response = create(c);
  } else if (verb == "update") {
    response = update(c);
  } else if (verb == "patch") {
    response = patch(c);
  } else if (verb == "delete") {
    response = remove(c);
  } else if (verb == "deletecollection") {
    response = remove_collection(c);
  } else {
    response = error_response(api::ApiError::method_not_allowed(
        "the server does not allow this method on the requested resource"));
  }
  responder.respond(std::move(response));
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

namespace {

json parse_stored(const storage::KeyValue& kv, const Strategy* st = nullptr) {
  json obj = json::parse(kv.value, nullptr, /*allow_exceptions=*/false);
  if (!obj.is_object()) return obj;
  if (st && st->from_storage) st->from_storage(obj);
  obj["metadata"]["resourceVersion"] = std::to_string(kv.mod_revision);
  return obj;
}

// The bytes a reader gets for a stored value: the stored bytes themselves unless they need
// conversion.
std::string read_bytes(const storage::KeyValue& kv, int64_t rv, const Strategy& st) {
  if (!st.from_storage) return with_resource_version(kv.value, rv);
  json obj = parse_stored(kv, &st);
  obj["metadata"]["resourceVersion"] = std::to_string(rv);
  return obj.dump();
}

bool matches(const ReadOptions& read, const json& obj) {
  if (!read.labels.empty()) {
    const json* labels = nullptr;
    if (auto m = obj.find("metadata"); m != obj.end()) {
      if (auto l = m->find("labels"); l != m->end()) labels = &*l;
    }
    if (!read.labels.matches(labels ? *labels : json())) return false;
  }
  if (!read.fields.empty()) {
    return read.fields.matches([&](const std::string& f) { return field_value(obj, f); });
  }
  return true;
}

bool has_filters(const ReadOptions& read) {
  return !read.labels.empty() || !read.fields.empty();
}

json table_columns(const std::vector<TableColumn>& columns) {
  json defs = json::array();
  for (const TableColumn& c : columns) {
    defs.push_back({{"name", c.name},
                    {"type", c.type},
                    {"format", c.format},
                    {"description", ""},
                    {"priority", c.priority}});
  }
  return defs;
}

json table_row(const std::vector<TableColumn>& columns, const json& obj,
               const std::string& include) {
  json cells = json::array();
  for (const TableColumn& c : columns) cells.push_back(c.cell(obj));
  json row{{"cells", std::move(cells)}};
  if (include == "Object") {
    row["object"] = obj;
  } else if (include != "None") {
    row["object"] = partial_metadata(obj);
  }
  return row;
}

std::string list_kind(const api::ResourceInfo& r) {
  return r.list_kind.empty() ? r.kind + "List" : r.list_kind;
}

// continue tokens: base64 of {"rv":N,"start":"<key>"} relative to the list prefix.
std::string encode_continue(int64_t rv, const std::string& start) {
  return skiff::base64_encode(json{{"v", "meta.k8s.io/v1"}, {"rv", rv}, {"start", start}}.dump());
}

bool decode_continue(std::string_view token, int64_t* rv, std::string* start) {
  auto raw = skiff::base64_decode(token);
  if (!raw.is_ok()) return false;
  json j = json::parse(*raw, nullptr, false);
  if (!j.is_object() || !j.contains("rv") || !j.contains("start") || !j["rv"].is_number_integer() ||
      !j["start"].is_string()) {
    return false;
  }
  *rv = j["rv"].get<int64_t>();
  *start = j["start"].get<std::string>();
  return *rv > 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// get / list

Response Registry::get(Ctx& c) {
  auto kv = store_.get(object_key(c.res, c.info.ns, c.info.name));
  if (!kv.is_ok()) return error_response(api::ApiError::from_storage(kv.status()));
  if (!*kv)
    return error_response(api::ApiError::not_found(c.res.qualified_resource(), c.info.name));
  const storage::KeyValue& stored = **kv;
  if (c.info.subresource == "scale") {
    return json_response(200, to_scale(c.res, parse_stored(stored, &c.strategy)).dump());
  }
  if (c.read.table) {
    json obj = parse_stored(stored, &c.strategy);
    const auto& columns = table(c.res);
    json t{{"kind", "Table"},
           {"apiVersion", "meta.k8s.io/v1"},
           {"metadata", {{"resourceVersion", std::to_string(stored.mod_revision)}}},
           {"columnDefinitions", table_columns(columns)},
           {"rows", json::array({table_row(columns, obj, c.read.include_object)})}};
    Response r = json_response(200, t.dump());
    r.content_type = c.read.table_content_type;
    return r;
  }
  return json_response(200, read_bytes(stored, stored.mod_revision, c.strategy));
}

namespace {

bool matches_attrs(const ReadOptions& read, const ObjectAttrs& attrs, const storage::KeyValue& kv) {
  if (!read.labels.empty() && !read.labels.matches(attrs.labels)) return false;
  if (read.fields.empty()) return true;
  std::optional<json> parsed;  // only for a path the cache did not precompute
  return read.fields.matches([&](const std::string& f) {
    if (const std::string* v = attrs.field(f)) return *v;
    if (!parsed) parsed = parse_stored(kv);
    return field_value(*parsed, f);
  });
}

// Whether a cached object passes the request's selectors: from its cached attributes unless the
// resource converts its stored form (the selectors then apply to the converted object).
bool matches_cached(const ReadOptions& read, const Strategy& st, const WatchCache& cache,
                    const CachedObject& obj) {
  if (!has_filters(read)) return true;
  if (st.from_storage) return matches(read, parse_stored(obj.kv(), &st));
  return matches_attrs(read, obj.attrs(cache.field_paths()), obj.kv());
}

// A list response built from stored values one at a time, in one buffer: items first, then the
// list metadata (known only at the end; JSON member order does not matter to clients), so no
// item is copied twice.
class ListBuilder {
 public:
  ListBuilder(const api::ResourceInfo& res, const Strategy& st, const ReadOptions& read,
              const std::vector<TableColumn>& columns)
      : st_(st),
        read_(read),
        columns_(columns),
        filtered_(has_filters(read)),
        parse_all_(filtered_ || read.table || st.from_storage) {
    body_ = "{\"kind\":\"" + list_kind(res) + "\",\"apiVersion\":\"" + res.group_version() +
            "\",\"items\":[";
    items_start_ = body_.size();
  }

  bool filtered() const { return filtered_; }

  void reserve(const std::vector<storage::KeyValuePtr>& kvs) {
    if (parse_all_) return;
    size_t bytes = 0;
    for (const storage::KeyValuePtr& kv : kvs) bytes += kv->value.size() + 48;
    body_.reserve(body_.size() + bytes + 256);
  }
  void reserve(const std::vector<CachedObjectPtr>& objects) {
    if (parse_all_ && !(filtered_ && !read_.table && !st_.from_storage)) return;
    size_t bytes = 0;
    for (const CachedObjectPtr& o : objects) bytes += o->kv().value.size() + 48;
    body_.reserve(body_.size() + bytes + 256);
  }

  // Adds a stored value unless the selectors drop it; returns whether it was added.
  bool add(const storage::KeyValue& kv) {
    if (!parse_all_) {
      append(kv);
      return true;
    }
    json obj = parse_stored(kv, &st_);
    if (filtered_ && !matches(read_, obj)) return false;
    add_parsed(obj);
    return true;
  }

  // The same for a cached object, whose selector attributes are parsed once for all readers.
  bool add(const CachedObject& cached, const WatchCache& cache) {
    if (!filtered_ || st_.from_storage) return add(cached.kv());
    if (!matches_attrs(read_, cached.attrs(cache.field_paths()), cached.kv())) return false;
    if (read_.table) {
      add_parsed(parse_stored(cached.kv(), &st_));
    } else {
      append(cached.kv());
    }
    return true;
  }

  Response finish(json meta) {
    if (read_.table) {
      json t{{"kind", "Table"},
             {"apiVersion", "meta.k8s.io/v1"},
             {"metadata", std::move(meta)},
             {"columnDefinitions", table_columns(columns_)},
             {"rows", std::move(rows_)}};
      Response r = json_response(200, t.dump());
      r.content_type = read_.table_content_type;
      return r;
    }
    body_ += "],\"metadata\":";
    body_ += meta.dump();
    body_ += "}";
    return json_response(200, std::move(body_));
  }

 private:
  void append(const storage::KeyValue& kv) {
    if (body_.size() > items_start_) body_.push_back(',');
    append_with_resource_version(body_, kv.value, kv.mod_revision);
  }

  void add_parsed(const json& obj) {
    if (read_.table) {
      rows_.push_back(table_row(columns_, obj, read_.include_object));
      return;
    }
    if (body_.size() > items_start_) body_.push_back(',');
    body_ += obj.dump();
  }

  const Strategy& st_;
  const ReadOptions& read_;
  const std::vector<TableColumn>& columns_;
  const bool filtered_;
  const bool parse_all_;
  std::string body_;
  size_t items_start_ = 0;
  json rows_ = json::array();
};

}  // namespace

Response Registry::list(Ctx& c) {
  const Request& req = c.req;
  std::string prefix = object_prefix(c.res, c.info.ns);
  KeyRange range = KeyRange::prefix(prefix);
  storage::RangeOptions opts;
  bool ok = true;
  int64_t limit = 0;
  if (auto l = req.param("limit"); !l.empty()) {
    limit = to_int(l, &ok);
    if (!ok) return error_response(api::ApiError::bad_request("invalid limit: " + std::string(l)));
  }
  std::string_view rv_param = req.param("resourceVersion");
  std::string_view rv_match = req.param("resourceVersionMatch");
  if (!rv_match.empty()) {
    // Upstream's ValidateListOptions.
    api::FieldErrors errors;
    if (rv_param.empty()) {
      errors.forbidden("resourceVersionMatch",
                       "resourceVersionMatch is forbidden unless resourceVersion is provided");
    }
    if (!req.param("continue").empty()) {
      errors.forbidden("resourceVersionMatch",
                       "resourceVersionMatch is forbidden when continue is provided");
    }
    if (rv_match != "Exact" && rv_match != "NotOlderThan") {
      errors.not_supported("resourceVersionMatch", std::string(rv_match),
                           {"Exact", "NotOlderThan", ""});
    }
    if (rv_match == "Exact" && rv_param == "0") {
      errors.forbidden("resourceVersionMatch",
                       "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"");
    }
    if (!errors.empty()) {
      return error_response(
          api::ApiError::invalid("ListOptions", "meta.k8s.io", "", errors.take()));
    }
  }
  bool has_continue = false;
  std::string continue_start;
  int64_t not_older_than = 0;
  if (auto cont = req.param("continue"); !cont.empty()) {
    int64_t rv;
    if (!rv_param.empty() && rv_param != "0") {
      return error_response(api::ApiError::bad_request(
          "specifying resource version is not allowed when using continue"));
    }
    if (!decode_continue(cont, &rv, &continue_start)) {
      return error_response(api::ApiError::bad_request("continue key is not valid"));
    }
    has_continue = true;
    range.key = prefix + continue_start;
    opts.revision = rv;
  } else if (!rv_param.empty() && rv_param != "0") {
    int64_t rv = to_int(rv_param, &ok);
    if (!ok) {
      return error_response(
          api::ApiError::bad_request("invalid resource version \"" + std::string(rv_param) + "\""));
    }
    if (rv_match == "Exact") {
      opts.revision = rv;
    } else {
      not_older_than = rv;
    }
  }

  // Upstream's rule for what the watch cache serves (see registry.h).
  std::optional<WatchCache::Snapshot> snapshot;
  WatchCache* cache = cache_for(c.res);
  if (cache) {
    Result<WatchCache::Snapshot> cached = Status(StatusCode::kUnavailable, "not from the cache");
    if (has_continue) {
      cached = cache->list(prefix, range.key, 0, /*exact_revision=*/opts.revision);
    } else if (opts.revision > 0) {
      // resourceVersionMatch=Exact: the store.
    } else if (rv_param == "0") {
      cached = cache->list(prefix);
    } else if (limit > 0) {
      // Pages at a given or the current revision: the store.
    } else if (not_older_than > 0) {
      // A revision the store has not reached fails at once (below) rather than after a wait.
      bool future = false;
      if (cache->revision() < not_older_than) {
        auto current = store_.current_revision();
        future = current.is_ok() && not_older_than > *current;
      }
      if (!future) cached = cache->list(prefix, {}, not_older_than);
    } else {
      auto current = store_.current_revision();
      if (current.is_ok()) cached = cache->list(prefix, {}, *current);
    }
    if (cached.is_ok()) snapshot = std::move(cached).value();
  }
  if (!snapshot && not_older_than > 0) {
    auto current = store_.current_revision();
    if (current.is_ok() && not_older_than > *current) {
      return error_response(api::ApiError::from_storage(
          Status(StatusCode::kFutureRevision,
                 "Too large resource version: " + std::to_string(not_older_than) +
                     ", current: " + std::to_string(*current))));
    }
  }

  ListBuilder out(c.res, c.strategy, c.read, table(c.res));
  const bool filtered = out.filtered();
  int64_t collected = 0;
  int64_t list_rv = 0;
  std::string next_start;
  bool more = false;
  int64_t remaining = -1;
  if (snapshot) {
    const std::vector<CachedObjectPtr>& objects = snapshot->objects;
    list_rv = snapshot->revision;
    out.reserve(objects);
    for (size_t i = 0; i < objects.size(); ++i) {
      if (!out.add(*objects[i], *cache)) continue;
      ++collected;
      if (limit > 0 && collected >= limit) {
        if (i + 1 < objects.size()) {
          more = true;
          next_start = objects[i]->kv().key.substr(prefix.size()) + std::string(1, '\0');
          if (!filtered) remaining = static_cast<int64_t>(objects.size() - i - 1);
        }
        break;
      }
    }
  }
  while (!snapshot) {
    storage::RangeOptions page = opts;
    if (limit > 0)
      page.limit = filtered ? std::max<int64_t>(limit - collected, 100) : limit - collected;
    auto result = store_.range(range, page);
    if (!result.is_ok()) {
      if (result.status().code() == StatusCode::kCompacted && has_continue) {
        return error_response(api::ApiError::gone(
            "The provided continue parameter is too old to display a consistent list result. "
            "You can start a new list without the continue parameter, or use the continue token "
            "in this response to retrieve the remainder of the results. Continuing with the "
            "provided token results in an inconsistent list - objects that were created, "
            "modified, or deleted between the time the first chunk was returned and now may "
            "show up in the list."));
      }
      return error_response(api::ApiError::from_storage(result.status()));
    }
    if (opts.revision == 0) opts.revision = result->revision;
    list_rv = opts.revision;
    out.reserve(result->kvs);
    size_t used = 0;
    for (const storage::KeyValuePtr& kv : result->kvs) {
      ++used;
      if (!out.add(*kv)) continue;
      ++collected;
      if (limit > 0 && collected >= limit) {
        bool rest = used < result->kvs.size() || result->more;
        if (rest) {
          more = true;
          next_start = kv->key.substr(prefix.size()) + std::string(1, '\0');
          // Known exactly only when nothing was filtered out, as upstream.
          if (!filtered) remaining = result->count - static_cast<int64_t>(used);
        }
        break;
      }
    }
    if (more || !result->more || (limit > 0 && collected >= limit)) break;
    range.key = result->kvs.back()->key + std::string(1, '\0');
  }

  json meta{{"resourceVersion", std::to_string(list_rv)}};
  if (more) meta["continue"] = encode_continue(list_rv, next_start);
  if (remaining > 0) meta["remainingItemCount"] = remaining;
  return out.finish(std::move(meta));
}

// ---------------------------------------------------------------------------------------------
// watch

// Watch event lines encoded once and shared by every watcher that sends the same bytes. The
// stores hand one KeyValue to all watchers of an event, so (value, type, revision) names a line;
// holding the KeyValue in the slot keeps its address from being reused while cached.
class Registry::EventLineCache {
 public:
  template <class Build>
  std::shared_ptr<const std::string> get(const storage::KeyValuePtr& kv, char type, int64_t rv,
                                         Build&& build) {
    size_t h = std::hash<const void*>()(kv.get()) ^ static_cast<size_t>(rv * 31 + type);
    Slot& slot = slots_[h % kSlots];
    std::lock_guard lock(slot.mu);
    if (slot.kv == kv && slot.type == type && slot.rv == rv) return slot.line;
    slot.line = std::make_shared<const std::string>(build());
    slot.kv = kv;
    slot.type = type;
    slot.rv = rv;
    return slot.line;
  }

 private:
  static constexpr size_t kSlots = 4096;
  struct Slot {
    std::mutex mu;
    storage::KeyValuePtr kv;                  // guarded by mu
    char type = 0;                            // guarded by mu
    int64_t rv = 0;                           // guarded by mu
    std::shared_ptr<const std::string> line;  // guarded by mu
  };
  std::array<Slot, kSlots> slots_;
};

class Registry::WatchSession : public std::enable_shared_from_this<WatchSession> {
 public:
  WatchSession(EventLineCache& cache, const api::ResourceInfo& res, const Strategy& st,
               ReadOptions read, const std::vector<TableColumn>& columns,
               std::shared_ptr<ResponseStream> stream, bool bookmarks,
               std::chrono::steady_clock::time_point deadline)
      : cache_(cache),
        res_(res),
        st_(st),
        read_(std::move(read)),
        columns_(columns),
        stream_(std::move(stream)),
        bookmarks_(bookmarks),
        deadline_(deadline) {}

  // The session's source: a store watch, or a watcher of a watch cache (which outlives it).
  void attach(std::unique_ptr<storage::Watch> watch) {
    std::lock_guard lock(mu_);
    watch_ = std::move(watch);
  }
  void attach(std::unique_ptr<CacheWatcher> watcher, const WatchCache& source) {
    std::lock_guard lock(mu_);
    cache_watch_ = std::move(watcher);
    source_ = &source;
  }

  // Runs on the stream's executor.
  void pump() {
    std::vector<storage::Event> events;
    std::vector<CacheEventPtr> cached;
    Status status;
    {
      std::lock_guard lock(mu_);
      if (done_) return;
      if (watch_) {
        status = watch_->poll(&events);
      } else if (cache_watch_) {
        status = cache_watch_->poll(&cached);
      } else {
        return;
      }
    }
    for (const storage::Event& e : events) emit(e);
    for (const CacheEventPtr& e : cached) emit(*e);
    if (!status.is_ok()) {
      if (status.code() == StatusCode::kCompacted ||
          status.code() == StatusCode::kResourceExhausted) {
        const std::string& msg = status.message();
        write_error(api::ApiError::gone(msg.starts_with("too old resource version")
                                            ? msg
                                            : "too old resource version: " + msg));
      }
      stop();
    }
  }

  void send_initial(const storage::KeyValuePtr& kv) {
    json obj = parse_stored(*kv, &st_);
    if (!matches(read_, obj)) return;
    write_event("ADDED", obj, kv->value, kv->mod_revision);
  }

  void send_initial(const CachedObject& obj, const WatchCache& source) {
    if (!matches_cached(read_, st_, source, obj)) return;
    const storage::KeyValue& kv = obj.kv();
    write_event("ADDED", parsed_if_needed(kv), kv.value, kv.mod_revision, &obj.kv_ptr());
  }

  void send_initial_events_end(int64_t rv) {
    json b{{"kind", res_.kind},
           {"apiVersion", res_.group_version()},
           {"metadata",
            {{"resourceVersion", std::to_string(rv)},
             {"annotations", {{"k8s.io/initial-events-end", "true"}}}}}};
    stream_->write(json{{"type", "BOOKMARK"}, {"object", b}}.dump() + "\n");
  }

  void tick(std::chrono::steady_clock::time_point now) {
    if (now >= deadline_) {
      stream_->post([self = shared_from_this()] { self->stop(); });
      return;
    }
    if (bookmarks_ && now - last_bookmark_ >= kBookmarkInterval) {
      last_bookmark_ = now;
      std::lock_guard lock(mu_);
      if (watch_) watch_->request_progress();
      if (cache_watch_) cache_watch_->request_bookmark();
    }
  }

  void stop() {
    std::unique_ptr<storage::Watch> w;
    std::unique_ptr<CacheWatcher> cw;
    {
      std::lock_guard lock(mu_);
      if (done_) return;
      done_ = true;
      w = std::move(watch_);
      cw = std::move(cache_watch_);
    }
    w.reset();
    cw.reset();
    stream_->finish();
  }

  bool closed() const { return stream_->closed(); }
  ResponseStream& stream() { return *stream_; }

 private:
  void emit(const storage::Event& e) {
    if (e.type == storage::EventType::kProgress) {
      write_bookmark(e.revision);
      return;
    }
    bool filtered = has_filters(read_);
    if (e.type == storage::EventType::kDelete) {
      if (!e.prev_kv) return;
      json prev;
      if (filtered || read_.table || st_.from_storage) {
        prev = parse_stored(*e.prev_kv, &st_);
        if (filtered && !matches(read_, prev)) return;
        prev["metadata"]["resourceVersion"] = std::to_string(e.revision);
      }
      write_event("DELETED", prev, e.prev_kv->value, e.revision, &e.prev_kv);
      return;
    }
    if (!filtered) {
      json obj;
      if (read_.table || st_.from_storage) obj = parse_stored(*e.kv, &st_);
      write_event(e.kv->version == 1 ? "ADDED" : "MODIFIED", obj, e.kv->value, e.kv->mod_revision,
                  &e.kv);
      return;
    }
    json obj = parse_stored(*e.kv, &st_);
    bool now_matches = matches(read_, obj);
    bool was_matching =
        e.prev_kv && e.kv->version > 1 && matches(read_, parse_stored(*e.prev_kv, &st_));
    if (now_matches) {
      write_event(was_matching ? "MODIFIED" : "ADDED", obj, e.kv->value, e.kv->mod_revision);
    } else if (was_matching) {
      write_event("DELETED", obj, e.kv->value, e.kv->mod_revision);
    }
  }

  // The same for an event of a watch cache: selectors read the objects' cached attributes, and
  // lines without conversion are shared between watchers.
  void emit(const CacheEvent& e) {
    if (e.type == storage::EventType::kProgress) {
      write_bookmark(e.revision);
      return;
    }
    if (e.type == storage::EventType::kDelete) {
      const CachedObject& prev = *e.prev;
      if (!matches_cached(read_, st_, *source_, prev)) return;
      json obj = parsed_if_needed(prev.kv());
      if (!obj.is_null()) obj["metadata"]["resourceVersion"] = std::to_string(e.revision);
      write_event("DELETED", obj, prev.kv().value, e.revision, &prev.kv_ptr());
      return;
    }
    const CachedObject& now = *e.object;
    const storage::KeyValue& kv = now.kv();
    const char* type;
    if (!has_filters(read_)) {
      type = kv.version == 1 ? "ADDED" : "MODIFIED";
    } else {
      bool now_matches = matches_cached(read_, st_, *source_, now);
      bool was_matching = e.prev && matches_cached(read_, st_, *source_, *e.prev);
      if (now_matches) {
        type = was_matching ? "MODIFIED" : "ADDED";
      } else if (was_matching) {
        type = "DELETED";
      } else {
        return;
      }
    }
    write_event(type, parsed_if_needed(kv), kv.value, kv.mod_revision, &now.kv_ptr());
  }

  // The parsed object when tables or conversion need it; null when the stored bytes will do.
  json parsed_if_needed(const storage::KeyValue& kv) const {
    if (!read_.table && !st_.from_storage) return json();
    return parse_stored(kv, &st_);
  }

  void write_bookmark(int64_t rv) {
    if (!bookmarks_) return;
    json b{{"kind", res_.kind},
           {"apiVersion", res_.group_version()},
           {"metadata", {{"resourceVersion", std::to_string(rv)}}}};
    stream_->write(json{{"type", "BOOKMARK"}, {"object", b}}.dump() + "\n");
  }

  // `obj` is the parsed object when filters or tables needed it; else the stored bytes are used.
  // `source`, when given, is the stored value the line is made from; unconverted lines made
  // from it are the same for every watcher and are shared through the cache.
  void write_event(const char* type, const json& obj, const std::string& stored, int64_t rv,
                   const storage::KeyValuePtr* source = nullptr) {
    if (source && !read_.table && obj.is_null()) {
      stream_->write_shared(cache_.get(*source, type[0], rv, [&] {
        return std::string("{\"type\":\"") + type +
               "\",\"object\":" + with_resource_version(stored, rv) + "}\n";
      }));
      return;
    }
    std::string line = "{\"type\":\"";
    line += type;
    line += "\",\"object\":";
    if (read_.table) {
      json t{{"kind", "Table"},
             {"apiVersion", "meta.k8s.io/v1"},
             {"metadata", {{"resourceVersion", std::to_string(rv)}}},
             {"columnDefinitions", first_ ? table_columns(columns_) : json::array()},
             {"rows", json::array({table_row(columns_, obj, read_.include_object)})}};
      first_ = false;
      line += t.dump();
    } else if (!obj.is_null()) {
      line += obj.dump();
    } else {
      line += with_resource_version(stored, rv);
    }
    line += "}\n";
    stream_->write(std::move(line));
  }

  void write_error(const api::ApiError& e) {
    stream_->write("{\"type\":\"ERROR\",\"object\":" + e.to_json() + "}\n");
  }

  EventLineCache& cache_;
  const WatchCache* source_ = nullptr;  // with cache_watch_
  const api::ResourceInfo& res_;
  const Strategy& st_;
  const ReadOptions read_;
  const std::vector<TableColumn>& columns_;
  const std::shared_ptr<ResponseStream> stream_;
  const bool bookmarks_;
  const std::chrono::steady_clock::time_point deadline_;
  std::chrono::steady_clock::time_point last_bookmark_ = std::chrono::steady_clock::now();
  bool first_ = true;  // stream executor only
  std::mutex mu_;
  std::unique_ptr<storage::Watch> watch_;      // guarded by mu_
  std::unique_ptr<CacheWatcher> cache_watch_;  // guarded by mu_
  bool done_ = false;                          // guarded by mu_
};

void Registry::watch(Ctx& c, Responder& responder) {
  const Request& req = c.req;
  bool ok = true;
  std::string_view rv_param = req.param("resourceVersion");
  bool initial = rv_param.empty() || rv_param == "0";
  if (req.has_param("sendInitialEvents")) initial = req.flag("sendInitialEvents");
  const bool has_rv = !rv_param.empty() && rv_param != "0";
  int64_t rv = 0;
  if (has_rv) {
    rv = to_int(rv_param, &ok);
    if (!ok) {
      responder.respond(error_response(api::ApiError::bad_request("invalid resource version \"" +
                                                                  std::string(rv_param) + "\"")));
      return;
    }
  }
  int64_t timeout_s = 1800;
  if (auto t = req.param("timeoutSeconds"); !t.empty()) {
    timeout_s = to_int(t, &ok);
    if (!ok) {
      responder.respond(error_response(api::ApiError::bad_request("invalid timeoutSeconds")));
      return;
    }
  }
  if (c.info.name.size()) {
    // /namespaces/ns/pods/name?watch=true: a watch of one object.
    std::string sel = "metadata.name=" + c.info.name;
    auto parsed = api::FieldSelector::parse(sel);
    if (parsed.is_ok()) c.read.fields = std::move(parsed).value();
  }
  std::string prefix = object_prefix(c.res, c.info.ns);
  std::string content_type =
      c.read.table ? c.read.table_content_type : std::string("application/json");

  // From the watch cache when it can serve the watch (see registry.h), else from the store.
  std::optional<WatchCache::WatchStart> cached;
  WatchCache* cache = cache_for(c.res);
  if (cache) {
    WatchCache::WatchRequest wr;
    wr.key_prefix = prefix;
    wr.initial = initial;
    bool usable = true;
    if (!initial) {
      wr.after_revision = has_rv ? rv : -1;
    } else if (has_rv) {
      wr.min_revision = rv;
    } else if (rv_param.empty()) {
      // Initial events of a consistent read: at least the store's current revision.
      auto current = store_.current_revision();
      usable = current.is_ok();
      if (usable) wr.min_revision = *current;
    }
    if (usable) {
      auto started = cache->watch(wr);
      if (started.is_ok()) {
        cached = std::move(started).value();
      } else if (started.status().code() == StatusCode::kCompacted) {
        auto stream = responder.stream(200, content_type);
        stream->write("{\"type\":\"ERROR\",\"object\":" +
                      api::ApiError::gone(started.status().message()).to_json() + "}\n");
        stream->finish();
        return;
      }
    }
  }

  int64_t start = 0;  // store revision to watch from
  std::vector<storage::KeyValuePtr> initial_items;
  if (!cached) {
    if (has_rv && !initial) start = rv + 1;
    if (initial) {
      auto listed = store_.range(KeyRange::prefix(prefix));
      if (!listed.is_ok()) {
        responder.respond(error_response(api::ApiError::from_storage(listed.status())));
        return;
      }
      start = listed->revision + 1;
      initial_items = std::move(listed->kvs);
    }
  }
  auto stream = responder.stream(200, content_type);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  auto session =
      std::make_shared<WatchSession>(*line_cache_, c.res, c.strategy, c.read, table(c.res), stream,
                                     req.flag("allowWatchBookmarks"), deadline);
  std::weak_ptr<WatchSession> weak = session;
  auto notify = [weak, stream] {
    stream->post([weak] {
      if (auto s = weak.lock()) s->pump();
    });
  };
  if (cached) {
    for (const CachedObjectPtr& obj : cached->initial) session->send_initial(*obj, *cache);
    if (req.flag("sendInitialEvents")) session->send_initial_events_end(cached->revision);
    cached->watcher->set_notify(notify);
    session->attach(std::move(cached->watcher), *cache);
  } else {
    for (const auto& kv : initial_items) session->send_initial(kv);
    if (req.flag("sendInitialEvents")) session->send_initial_events_end(start - 1);
    storage::WatchOptions wo;
    wo.range = KeyRange::prefix(prefix);
    wo.start_revision = start;
    wo.prev_kv = true;
    wo.notify = notify;
    auto w = store_.watch(std::move(wo));
    if (!w.is_ok()) {
      stream->write("{\"type\":\"ERROR\",\"object\":" +
                    api::ApiError::from_storage(w.status()).to_json() + "}\n");
      stream->finish();
      return;
    }
    session->attach(std::move(w).value());
  }
  {
    std::lock_guard lock(sessions_mu_);
    if (stopping_) {
      session->stop();
      return;
    }
    sessions_.insert(session);
  }
  stream->on_close([this, weak] {
    auto s = weak.lock();
    if (!s) return;
    s->stop();
    std::lock_guard lock(sessions_mu_);
    sessions_.erase(s);
  });
  // Events may have arrived before attach(); drain them.
  stream->post([weak] {
    if (auto s = weak.lock()) s->pump();
  });
}

void Registry::ticker_loop() {
  std::unique_lock lock(sessions_mu_);
  while (!stopping_) {
    ticker_cv_.wait_for(lock, std::chrono::seconds(1));
    if (stopping_) break;
    auto now = std::chrono::steady_clock::now();
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if ((*it)->closed()) {
        it = sessions_.erase(it);
        continue;
      }
      (*it)->tick(now);
      ++it;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// writes

namespace {

// fieldValidation (default Warn) applied to the duplicate and unknown fields found in a body:
// Strict fails the request with all of them, Warn turns each into a warning header, Ignore drops
// them. An unsupported mode is a 400 whether or not anything was found.
std::optional<api::ApiError> check_fields(const Request& req,
                                          const std::vector<std::string>& duplicates,
                                          const std::vector<std::string>& unknown,
                                          std::vector<std::string>* warnings) {
  std::string_view mode = req.param("fieldValidation");
  if (mode.empty()) mode = "Warn";
  if (mode != "Strict" && mode != "Warn" && mode != "Ignore") {
    return api::ApiError::bad_request("fieldValidation parameter unsupported: " +
                                      std::string(mode));
  }
  std::vector<std::string> problems;
  for (const auto& d : duplicates) problems.push_back("duplicate field \"" + d + "\"");
  for (const auto& u : unknown) problems.push_back("unknown field \"" + u + "\"");
  if (problems.empty() || mode == "Ignore") return std::nullopt;
  if (mode == "Strict") {
    std::string msg = "strict decoding error: ";
    for (size_t i = 0; i < problems.size(); ++i) msg += (i ? ", " : "") + problems[i];
    return api::ApiError::bad_request(msg);
  }
  warnings->insert(warnings->end(), problems.begin(), problems.end());
  return std::nullopt;
}

// Decodes a request body into an object of `res`'s kind, with strict-decoding checks according
// to fieldValidation (Strict: error, Warn: warning headers, Ignore: silent). Unknown fields are
// always dropped.
std::optional<api::ApiError> decode_body(const Request& req, const api::ResourceInfo& res,
                                         const api::Schema& schema, json* out,
                                         std::vector<std::string>* warnings) {
  std::string_view ct = req.header("Content-Type");
  std::vector<std::string> duplicates;
  std::string error;
  std::optional<json> parsed;
  if (ct.starts_with(api::kProtobufContentType)) {
    // kubectl 1.32 `create <kind>`. Unknown field numbers are dropped, as upstream does: gogo
    // writes every non-pointer field, so a newer client's new fields must not fail a create.
    auto decoded = api::decode_k8s_protobuf(req.body, schema);
    if (decoded.is_ok()) {
      parsed = std::move(decoded).value();
    } else {
      error = decoded.status().message();
    }
  } else if (!ct.empty() && ct.find("json") == std::string_view::npos) {
    return api::ApiError::unsupported_media_type(std::string(ct));
  } else {
    parsed = parse_json(req.body, &duplicates, &error);
  }
  if (!parsed) return api::ApiError::bad_request("error decoding request body: " + error);
  if (!parsed->is_object()) {
    return api::ApiError::bad_request("the body of the request is not a JSON object");
  }
  json& obj = *parsed;
  std::string api_version = obj.value("apiVersion", "");
  std::string kind = obj.value("kind", "");
  if (!api_version.empty() && api_version != res.group_version()) {
    return api::ApiError::bad_request("the API version in the data (" + api_version +
                                      ") does not match the expected API version (" +
                                      res.group_version() + ")");
  }
  if (!kind.empty() && kind != res.kind) {
    return api::ApiError::bad_request("the kind in the data (" + kind +
                                      ") does not match the expected kind (" + res.kind + ")");
  }
  std::vector<std::string> unknown, mistyped;
  if (res.type) prune_unknown_fields(obj, *res.type, schema, "", &unknown, &mistyped);
  if (!mistyped.empty()) {
    return api::ApiError::bad_request("error decoding request body: wrong type for field \"" +
                                      mistyped.front() + "\"");
  }
  if (auto e = check_fields(req, duplicates, unknown, warnings)) return e;
  obj["apiVersion"] = res.group_version();
  obj["kind"] = res.kind;
  if (!obj.contains("metadata") || !obj["metadata"].is_object()) obj["metadata"] = json::object();
  *out = std::move(obj);
  return std::nullopt;
}

// How a body's metadata.name relates to the URL.
enum class UrlName { kNone, kMustMatch, kFillOrMatch };

// The body's name and namespace must agree with the URL's (upstream's messages).
std::optional<api::ApiError> match_url(json& meta, const RequestInfo& info,
                                       const api::ResourceInfo& res, UrlName name_rule) {
  if (name_rule != UrlName::kNone) {
    std::string name = meta.value("name", "");
    if (name.empty() && name_rule == UrlName::kFillOrMatch) {
      meta["name"] = info.name;
    } else if (name != info.name) {
      return api::ApiError::bad_request("the name of the object (" + name +
                                        ") does not match the name on the URL (" + info.name + ")");
    }
  }
  if (res.namespaced) {
    std::string ns = meta.value("namespace", "");
    if (!ns.empty() && ns != info.ns) {
      return api::ApiError::bad_request(
          "the namespace of the provided object does not match the namespace sent on the "
          "request");
    }
  }
  return std::nullopt;
}

// Prunes fields the schema does not know from a patched or applied object (stored objects hold
// none, so what is pruned came with the patch). A value of the wrong type is a 400; unknown
// fields and the patch's `duplicates` go through fieldValidation (check_fields).
std::optional<api::ApiError> prune_patched(json& obj, const api::TypeInfo* type,
                                           const api::Schema& schema, const Request& req,
                                           const char* what,
                                           const std::vector<std::string>& duplicates,
                                           std::vector<std::string>* warnings) {
  std::vector<std::string> unknown, mistyped;
  if (type) prune_unknown_fields(obj, *type, schema, "", &unknown, &mistyped);
  if (!mistyped.empty()) {
    return api::ApiError::bad_request(std::string("error decoding ") + what +
                                      ": wrong type for field \"" + mistyped.front() + "\"");
  }
  return check_fields(req, duplicates, unknown, warnings);
}

void add_warnings(Response& r, const std::vector<std::string>& warnings) {
  for (const std::string& w : warnings) {
    std::string escaped;
    for (char ch : w) {
      if (ch == '"' || ch == '\\') escaped.push_back('\\');
      escaped.push_back(ch);
    }
    r.headers.push_back({"Warning", "299 - \"" + escaped + "\""});
  }
}

bool is_dry_run(const Request& req) {
  for (const std::string& v : req.params("dryRun")) {
    if (v == "All") return true;
  }
  return false;
}

// Everything but metadata and status: what bumps metadata.generation when it changes.
bool spec_changed(const json& a, const json& b) {
  for (auto it = a.begin(); it != a.end(); ++it) {
    if (it.key() == "metadata" || it.key() == "status" || it.key() == "apiVersion" ||
        it.key() == "kind") {
      continue;
    }
    auto o = b.find(it.key());
    if (o == b.end() || *o != it.value()) return true;
  }
  for (auto it = b.begin(); it != b.end(); ++it) {
    if (it.key() == "metadata" || it.key() == "status" || it.key() == "apiVersion" ||
        it.key() == "kind") {
      continue;
    }
    if (!a.contains(it.key())) return true;
  }
  return false;
}

api::NameRule name_rule(const Strategy& s) {
  return static_cast<api::NameRule>(s.name_rule);
}

std::string stored_bytes(json obj, const Strategy* st = nullptr) {
  obj["metadata"].erase("resourceVersion");
  if (st && st->to_storage) st->to_storage(obj);
  return obj.dump();
}

bool has_status(const api::ResourceInfo& r) {
  return r.subresource("status") != nullptr;
}

api::ApiError name_exhausted(const api::ResourceInfo& res, const std::string& name) {
  api::ApiError e = api::ApiError::already_exists(res.qualified_resource(), name);
  e.message += ", the server was not able to generate a unique name for the object";
  return e;
}

}  // namespace

json Registry::to_scale(const api::ResourceInfo& res, const json& obj) {
  const json& meta = obj["metadata"];
  json scale_meta = json::object();
  for (const char* f : {"name", "namespace", "uid", "resourceVersion", "creationTimestamp"}) {
    if (meta.contains(f)) scale_meta[f] = meta[f];
  }
  json spec = obj.value("spec", json::object());
  json status = obj.value("status", json::object());
  std::string selector;
  if (spec.contains("selector")) {
    const json& sel = spec["selector"];
    if (res.resource == "replicationcontrollers") {
      for (auto it = sel.begin(); it != sel.end(); ++it) {
        if (!selector.empty()) selector += ",";
        selector += it.key() + "=" + it.value().get<std::string>();
      }
    } else if (auto parsed = api::LabelSelector::from_json(sel); parsed.is_ok()) {
      selector = parsed->to_string();
    }
  }
  return json{{"kind", "Scale"},
              {"apiVersion", "autoscaling/v1"},
              {"metadata", std::move(scale_meta)},
              {"spec", {{"replicas", spec.value("replicas", 0)}}},
              {"status", {{"replicas", status.value("replicas", 0)}, {"selector", selector}}}};
}

std::optional<api::ApiError> Registry::admit_namespace(const api::ResourceInfo& res,
                                                       const std::string& ns) {
  if (!res.namespaced) return std::nullopt;
  // As upstream's NamespaceLifecycle: the cached namespace, and a live lookup when the cache
  // does not have it (yet).
  const std::string key = "/registry/namespaces/" + ns;
  storage::KeyValuePtr found;
  if (auto cached = cached_list(key); cached.is_ok()) {
    for (const storage::KeyValuePtr& kv : *cached) {
      if (kv->key == key) found = kv;
    }
  }
  if (!found) {
    auto kv = store_.get(key);
    if (!kv.is_ok()) return api::ApiError::from_storage(kv.status());
    if (!*kv) return api::ApiError::not_found("namespaces", ns);
    found = *kv;
  }
  json obj = json::parse(found->value, nullptr, false);
  if (obj.is_object() && (obj["metadata"].contains("deletionTimestamp") ||
                          field_value(obj, "status.phase") == "Terminating")) {
    api::ApiError e = api::ApiError::forbidden("unable to create new content in namespace " + ns +
                                               " because it is being terminated");
    e.reason = "Forbidden";
    return e;
  }
  return std::nullopt;
}

Response Registry::create(Ctx& c) {
  if (c.res.resource == "pods" && c.info.subresource == "binding") return bind_pod(c);
  if (c.res.resource == "pods" && c.info.subresource == "eviction") return evict_pod(c);
  if (!c.info.name.empty()) {
    return error_response(api::ApiError::method_not_allowed(
        "the server does not allow this method on the requested resource"));
  }
  json obj;
  std::vector<std::string> warnings;
  if (auto e = decode_body(c.req, c.res, schema_, &obj, &warnings)) return error_response(*e);
  json& meta = obj["metadata"];
  std::string ns = c.res.namespaced ? c.info.ns : "";
  if (auto e = match_url(meta, c.info, c.res, UrlName::kNone)) return error_response(*e);
  if (c.res.namespaced) {
    meta["namespace"] = ns;
  } else {
    meta.erase("namespace");
  }
  if (auto e = admit_namespace(c.res, ns)) return error_response(*e);
  if (auto e = create_object(c.res, c.strategy, obj, is_dry_run(c.req))) {
    return error_response(*e);
  }
  Response r = json_response(201, obj.dump());
  add_warnings(r, warnings);
  return r;
}

void Registry::add_admission(std::unique_ptr<AdmissionPlugin> plugin) {
  admission_.push_back(std::move(plugin));
}

std::optional<api::ApiError> Registry::admit(const AdmissionRequest& request, json& obj) {
  for (const auto& plugin : admission_) {
    if (auto e = plugin->admit(request, obj)) return e;
  }
  return std::nullopt;
}

std::optional<api::ApiError> Registry::validate_admission(const AdmissionRequest& request,
                                                          const json& obj,
                                                          AdmissionWrites& writes) {
  for (const auto& plugin : admission_) {
    if (auto e = plugin->validate(request, obj, writes)) return e;
  }
  return std::nullopt;
}

std::optional<api::ApiError> Registry::create_object(const api::ResourceInfo& res,
                                                     const Strategy& st, json& obj, bool dry_run) {
  json& meta = obj["metadata"];
  std::string generate = meta.value("generateName", "");
  bool generated = meta.value("name", "").empty() && !generate.empty();
  for (const char* f :
       {"resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"}) {
    meta.erase(f);
  }
  meta["uid"] = new_uid();
  meta["creationTimestamp"] = rfc3339_now();
  if (st.tracks_generation) {
    meta["generation"] = 1;
  } else {
    meta.erase("generation");
  }
  if (has_status(res) && !st.status_on_create) obj.erase("status");
  AdmissionRequest admission;
  admission.operation = AdmissionOperation::kCreate;
  admission.resource = &res;
  admission.ns = meta.value("namespace", "");
  admission.dry_run = dry_run;
  if (auto e = admit(admission, obj)) return e;
  if (st.prepare_for_create) st.prepare_for_create(obj);
  record_update(res, schema_, nullptr, obj);
  bool reserved = false;
  auto unreserve = [&] {
    if (reserved && st.settle) st.settle(&obj, nullptr, false);
    reserved = false;
  };
  // What admission writes along with the object; admitted again when its compares fail.
  AdmissionWrites writes;
  bool admitted = false;
  int name_attempts = 0;
  int admission_attempts = 0;
  while (true) {
    if (generated) meta["name"] = generate + random_name_suffix();
    api::FieldErrors errors;
    api::validate_object_meta(meta, res.namespaced, name_rule(st), errors);
    if (st.validate) st.validate(obj, errors);
    if (st.validate_create) st.validate_create(obj, errors);
    if (!errors.empty()) {
      unreserve();
      return api::ApiError::invalid(res.kind, res.group, meta.value("name", ""), errors.take());
    }
    std::string name = meta["name"].get<std::string>();
    std::string key = object_key(res, meta.value("namespace", ""), name);
    if (!admitted) {
      writes = AdmissionWrites();  // releases what an earlier attempt held
      admission.key = key;
      if (auto e = validate_admission(admission, obj, writes)) {
        unreserve();
        return e;
      }
      admitted = true;
    }
    if (!reserved && !dry_run && st.reserve) {
      if (auto e = st.reserve(obj, nullptr)) return e;
      reserved = true;
    }
    std::string bytes = stored_bytes(obj, &st);
    if (dry_run) {
      auto existing = store_.get(key);
      if (existing.is_ok() && *existing) {
        if (generated && ++name_attempts < 5) continue;
        return generated ? name_exhausted(res, name)
                         : api::ApiError::already_exists(res.qualified_resource(), name);
      }
      return std::nullopt;
    }
    int64_t lease = 0;
    if (st.ttl_seconds > 0) {
      auto l = lease_for(st.ttl_seconds);
      if (!l.is_ok()) {
        unreserve();
        return api::ApiError::from_storage(l.status());
      }
      lease = *l;
    }
    storage::Txn txn;
    txn.compare.push_back(storage::Compare::absent(key));
    txn.success.push_back(storage::Op::put(key, bytes, lease));
    bool with_admission = !writes.compares.empty() || !writes.ops.empty();
    if (with_admission) {
      txn.compare.insert(txn.compare.end(), writes.compares.begin(), writes.compares.end());
      txn.success.insert(txn.success.end(), writes.ops.begin(), writes.ops.end());
      // Which compare failed: the object's (it exists) or admission's.
      txn.failure.push_back(storage::Op::get(KeyRange::single(key)));
    }
    auto result = store_.txn(txn);
    if (!result.is_ok()) {
      unreserve();
      return api::ApiError::from_storage(result.status());
    }
    if (!result->succeeded) {
      bool exists =
          !with_admission || (!result->results.empty() && !result->results[0].kvs.empty());
      if (exists) {
        if (generated && ++name_attempts < 5) continue;
        unreserve();
        return generated ? name_exhausted(res, name)
                         : api::ApiError::already_exists(res.qualified_resource(), name);
      }
      if (++admission_attempts >= kMaxConflictRetries) {
        unreserve();
        return writes.contention_error
                   ? *writes.contention_error
                   : api::ApiError::conflict(res.qualified_resource(), name,
                                             "the object has been modified; please apply your "
                                             "changes to the latest version and try again");
      }
      admitted = false;
      continue;
    }
    meta["resourceVersion"] = std::to_string(result->revision);
    return std::nullopt;
  }
}

std::optional<api::ApiError> Registry::write_update(const api::ResourceInfo& res,
                                                    const Strategy& st, const std::string& sub,
                                                    const storage::KeyValue& old_kv, json next,
                                                    bool dry_run, json* out, bool* conflict) {
  *conflict = false;
  json old = parse_stored(old_kv, &st);
  if (sub == "status") {
    json merged = old;
    if (next.contains("status")) {
      merged["status"] = next["status"];
    } else {
      merged.erase("status");
    }
    next = std::move(merged);
  } else if (sub == "scale") {
    json merged = old;
    merged["spec"]["replicas"] = next["spec"].value("replicas", 0);
    next = std::move(merged);
  } else if (sub == "finalize") {
    // Namespaces: only spec.finalizers changes (what the namespace controller removes).
    json merged = old;
    json finalizers = json::array();
    if (next.contains("spec") && next["spec"].is_object()) {
      finalizers = next["spec"].value("finalizers", json::array());
    }
    merged["spec"]["finalizers"] = std::move(finalizers);
    next = std::move(merged);
  } else if (has_status(res)) {
    if (old.contains("status")) {
      next["status"] = old["status"];
    } else {
      next.erase("status");
    }
  }
  json& meta = next["metadata"];
  const json& old_meta = old["metadata"];
  for (const char* f : {"name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation"}) {
    if (old_meta.contains(f)) {
      meta[f] = old_meta[f];
    } else {
      meta.erase(f);
    }
  }
  meta.erase("selfLink");
  if (sub.empty() || sub == "scale") {
    if (st.tracks_generation && spec_changed(next, old)) {
      meta["generation"] = old_meta.value("generation", 0) + 1;
    }
  }
  AdmissionRequest admission;
  admission.operation = AdmissionOperation::kUpdate;
  admission.resource = &res;
  admission.subresource = sub;
  admission.ns = old_meta.value("namespace", "");
  admission.key = old_kv.key;
  admission.old = &old;
  admission.dry_run = dry_run;
  if (auto e = admit(admission, next)) return e;
  if (st.prepare_for_update && sub != "finalize") st.prepare_for_update(next, old);
  record_update(res, schema_, &old, next);
  api::FieldErrors errors;
  api::validate_object_meta(meta, res.namespaced, name_rule(st), errors);
  if (st.validate) st.validate(next, errors);
  if (st.validate_update) st.validate_update(next, old, errors);
  if (!errors.empty()) {
    return api::ApiError::invalid(res.kind, res.group, meta.value("name", ""), errors.take());
  }
  const std::string& key = old_kv.key;
  bool finalized = meta.contains("deletionTimestamp") &&
                   (!meta.contains("finalizers") || meta["finalizers"].empty()) &&
                   !(st.pending_finalizers && st.pending_finalizers(next));
  if (finalized && !st.graceful_delete) {
    // The last finalizer is gone from an object being deleted: it goes now.
    if (!dry_run) {
      storage::Txn txn;
      txn.compare.push_back(
          storage::Compare::mod_revision(key, storage::CompareOp::kEqual, old_kv.mod_revision));
      txn.success.push_back(storage::Op::del(KeyRange::single(key)));
      auto result = store_.txn(txn);
      if (!result.is_ok()) return api::ApiError::from_storage(result.status());
      if (!result->succeeded) {
        *conflict = true;
        return std::nullopt;
      }
      meta["resourceVersion"] = std::to_string(result->revision);
      if (st.settle) st.settle(nullptr, &old, true);
    }
    *out = std::move(next);
    return std::nullopt;
  }
  AdmissionWrites writes;
  if (auto e = validate_admission(admission, next, writes)) return e;
  bool reserved = false;
  if (!dry_run && st.reserve) {
    if (auto e = st.reserve(next, &old)) return e;
    reserved = true;
  }
  auto settle = [&](bool committed) {
    if (reserved && st.settle) st.settle(&next, &old, committed);
  };
  std::string bytes = stored_bytes(next, &st);
  if (bytes == old_kv.value) {
    settle(false);
    *out = std::move(old);  // nothing changed: no write, same resourceVersion
    return std::nullopt;
  }
  if (!dry_run) {
    int64_t lease = 0;
    if (st.ttl_seconds > 0) {
      auto l = lease_for(st.ttl_seconds);
      if (!l.is_ok()) {
        settle(false);
        return api::ApiError::from_storage(l.status());
      }
      lease = *l;
    }
    int64_t revision = 0;
    for (int attempt = 1;; ++attempt) {
      storage::Txn txn;
      txn.compare.push_back(
          storage::Compare::mod_revision(key, storage::CompareOp::kEqual, old_kv.mod_revision));
      txn.success.push_back(storage::Op::put(key, bytes, lease));
      bool with_admission = !writes.compares.empty() || !writes.ops.empty();
      if (with_admission) {
        txn.compare.insert(txn.compare.end(), writes.compares.begin(), writes.compares.end());
        txn.success.insert(txn.success.end(), writes.ops.begin(), writes.ops.end());
        // Which compare failed: the object's (it changed) or admission's.
        txn.failure.push_back(storage::Op::get(KeyRange::single(key)));
      }
      auto result = store_.txn(txn);
      if (!result.is_ok()) {
        settle(false);
        return api::ApiError::from_storage(result.status());
      }
      if (result->succeeded) {
        revision = result->revision;
        break;
      }
      bool object_changed = !with_admission || result->results.empty() ||
                            result->results[0].kvs.empty() ||
                            result->results[0].kvs[0]->mod_revision != old_kv.mod_revision;
      if (object_changed) {
        settle(false);
        *conflict = true;
        return std::nullopt;
      }
      if (attempt >= kMaxConflictRetries) {
        settle(false);
        return writes.contention_error
                   ? *writes.contention_error
                   : api::ApiError::conflict(res.qualified_resource(), meta.value("name", ""),
                                             "the object has been modified; please apply your "
                                             "changes to the latest version and try again");
      }
      writes = AdmissionWrites();  // releases what the last attempt held
      if (auto e = validate_admission(admission, next, writes)) {
        settle(false);
        return e;
      }
    }
    settle(true);
    meta["resourceVersion"] = std::to_string(revision);
  }
  *out = std::move(next);
  return std::nullopt;
}

Response Registry::update(Ctx& c) {
  if (c.info.name.empty()) {
    return error_response(api::ApiError::method_not_allowed(
        "the server does not allow this method on the requested resource"));
  }
  json body;
  std::vector<std::string> warnings;
  const api::ResourceInfo* body_res = &c.res;
  api::ResourceInfo scale_res;
  if (c.info.subresource == "scale") {
    scale_res.group = "autoscaling";
    scale_res.version = "v1";
    scale_res.kind = "Scale";
    scale_res.type = schema_.type("io.k8s.api.autoscaling.v1.Scale");
    body_res = &scale_res;
  }
  if (auto e = decode_body(c.req, *body_res, schema_, &body, &warnings)) return error_response(*e);
  json& meta = body["metadata"];
  if (auto e = match_url(meta, c.info, c.res, UrlName::kMustMatch)) return error_response(*e);
  if (c.res.namespaced) meta["namespace"] = c.info.ns;
  std::string precondition = meta.value("resourceVersion", "");
  std::string key = object_key(c.res, c.info.ns, c.info.name);
  bool dry_run = is_dry_run(c.req);
  for (int attempt = 0; attempt < kMaxConflictRetries; ++attempt) {
    auto kv = store_.get(key);
    if (!kv.is_ok()) return error_response(api::ApiError::from_storage(kv.status()));
    if (!*kv) {
      if (!c.strategy.allow_create_on_update || !c.info.subresource.empty()) {
        return error_response(api::ApiError::not_found(c.res.qualified_resource(), c.info.name));
      }
      if (auto e = admit_namespace(c.res, c.info.ns)) return error_response(*e);
      if (auto e = create_object(c.res, c.strategy, body, dry_run)) return error_response(*e);
      Response r = json_response(201, body.dump());
      add_warnings(r, warnings);
      return r;
    }
    if (!precondition.empty() && precondition != std::to_string((*kv)->mod_revision)) {
      return error_response(api::ApiError::conflict(
          c.res.qualified_resource(), c.info.name,
          "the object has been modified; please apply your changes to the latest version and "
          "try again"));
    }
    json out;
    bool conflict = false;
    if (auto e = write_update(c.res, c.strategy, c.info.subresource, **kv, body, dry_run, &out,
                              &conflict)) {
      return error_response(*e);
    }
    if (conflict) {
      if (!precondition.empty()) break;
      continue;
    }
    Response r = json_response(
        200, c.info.subresource == "scale" ? to_scale(c.res, out).dump() : out.dump());
    add_warnings(r, warnings);
    return r;
  }
  return error_response(api::ApiError::conflict(
      c.res.qualified_resource(), c.info.name,
      "the object has been modified; please apply your changes to the latest version and try "
      "again"));
}

Response Registry::patch(Ctx& c) {
  if (c.info.name.empty()) {
    return error_response(api::ApiError::method_not_allowed(
        "the server does not allow this method on the requested resource"));
  }
  std::string ct(c.req.header("Content-Type"));
  if (auto semi = ct.find(';'); semi != std::string::npos) ct.resize(semi);
  if (ct == "application/apply-patch+yaml") {
    // Server-side apply: the merge and field ownership live in api/managed_fields.
    if (c.req.param("fieldManager").empty()) {
      return error_response(api::ApiError::invalid(
          "PatchOptions", "meta.k8s.io", "",
          {{"FieldValueRequired", "Required value: is required for apply patch", "fieldManager"}}));
    }
    if (!c.res.type || !tl_writer ||
        (!c.info.subresource.empty() && c.info.subresource != "status")) {
      return error_response(api::ApiError::unsupported_media_type(ct));
    }
    auto decoded = api::decode_apply_body(c.req.body, *c.res.type, schema_);
    if (!decoded.is_ok()) {
      return error_response(
          api::ApiError::bad_request("error decoding patch: " + decoded.status().message()));
    }
    json applied = std::move(decoded).value();
    std::string applied_version = applied.value("apiVersion", "");
    std::string applied_kind = applied.value("kind", "");
    if (applied_version.empty() || applied_kind.empty()) {
      return error_response(
          api::ApiError::bad_request(std::string("error decoding patch: Object '") +
                                     (applied_kind.empty() ? "Kind" : "apiVersion") +
                                     "' is missing in '" + applied.dump() + "'"));
    }
    if (applied_version != c.res.group_version() || applied_kind != c.res.kind) {
      return error_response(api::ApiError::bad_request(
          "the API version and kind in the data (" + applied_version + ", " + applied_kind +
          ") do not match the expected (" + c.res.group_version() + ", " + c.res.kind + ")"));
    }
    if (!applied["metadata"].is_object()) applied["metadata"] = json::object();
    json& applied_meta = applied["metadata"];
    if (auto e = match_url(applied_meta, c.info, c.res, UrlName::kFillOrMatch)) {
      return error_response(*e);
    }
    std::string precondition = applied_meta.value("resourceVersion", "");
    applied_meta.erase("resourceVersion");
    std::vector<std::string> warnings;
    if (auto e = prune_patched(applied, c.res.type, schema_, c.req, "patch", {}, &warnings)) {
      return error_response(*e);
    }
    std::string_view force_param = c.req.param("force");
    bool force = force_param == "true" || force_param == "True" || force_param == "1";
    tl_writer->apply = true;
    api::WriterInfo writer = writer_info(c.res, *tl_writer);
    std::string key = object_key(c.res, c.info.ns, c.info.name);
    bool dry_run = is_dry_run(c.req);
    for (int attempt = 0; attempt < kMaxConflictRetries; ++attempt) {
      auto kv = store_.get(key);
      if (!kv.is_ok()) return error_response(api::ApiError::from_storage(kv.status()));
      if (!*kv) {
        if (!c.info.subresource.empty()) {
          return error_response(api::ApiError::not_found(c.res.qualified_resource(), c.info.name));
        }
        auto r = api::server_side_apply(json(), applied, writer, force, *c.res.type, schema_);
        if (!r.is_ok()) return error_response(api::ApiError::bad_request(r.status().message()));
        json obj = std::move(r->object);
        if (c.res.namespaced) {
          obj["metadata"]["namespace"] = c.info.ns;
        } else {
          obj["metadata"].erase("namespace");
        }
        if (auto e = admit_namespace(c.res, c.info.ns)) return error_response(*e);
        if (auto e = create_object(c.res, c.strategy, obj, dry_run)) {
          if (e->code == 409 && e->reason == "AlreadyExists") continue;  // raced with a create
          return error_response(*e);
        }
        Response created = json_response(201, obj.dump());
        add_warnings(created, warnings);
        return created;
      }
      if (!precondition.empty() && precondition != std::to_string((*kv)->mod_revision)) {
        return error_response(api::ApiError::conflict(
            c.res.qualified_resource(), c.info.name,
            "the object has been modified; please apply your changes to the latest version and "
            "try again"));
      }
      auto r =
          api::server_side_apply(parse_stored(**kv), applied, writer, force, *c.res.type, schema_);
      if (!r.is_ok()) return error_response(api::ApiError::bad_request(r.status().message()));
      if (!r->conflicts.empty()) return error_response(api::apply_conflict_error(r->conflicts));
      json out;
      bool conflict = false;
      if (auto e = write_update(c.res, c.strategy, c.info.subresource, **kv, std::move(r->object),
                                dry_run, &out, &conflict)) {
        return error_response(*e);
      }
      if (conflict) continue;
      Response updated = json_response(200, out.dump());
      add_warnings(updated, warnings);
      return updated;
    }
    return error_response(api::ApiError::conflict(
        c.res.qualified_resource(), c.info.name,
        "the object has been modified; please apply your changes to the latest version and try "
        "again"));
  }
  enum class Kind { kJson, kMerge, kStrategic } kind;
  if (ct == "application/json-patch+json") {
    kind = Kind::kJson;
  } else if (ct == "application/merge-patch+json") {
    kind = Kind::kMerge;
  } else if (ct == "application/strategic-merge-patch+json") {
    kind = Kind::kStrategic;
  } else {
    return error_response(api::ApiError::unsupported_media_type(ct));
  }
  std::vector<std::string> duplicates;
  std::string error;
  auto patch_doc = parse_json(c.req.body, &duplicates, &error);
  if (!patch_doc)
    return error_response(api::ApiError::bad_request("error decoding patch: " + error));
  if (kind == Kind::kJson ? !patch_doc->is_array() : !patch_doc->is_object()) {
    return error_response(
        api::ApiError::bad_request(kind == Kind::kJson ? "json patch must be an array of operations"
                                                       : "patch must be a JSON object"));
  }
  std::string key = object_key(c.res, c.info.ns, c.info.name);
  bool dry_run = is_dry_run(c.req);
  bool scale = c.info.subresource == "scale";
  const api::TypeInfo* type = scale ? schema_.type("io.k8s.api.autoscaling.v1.Scale") : c.res.type;
  for (int attempt = 0; attempt < kMaxConflictRetries; ++attempt) {
    auto kv = store_.get(key);
    if (!kv.is_ok()) return error_response(api::ApiError::from_storage(kv.status()));
    if (!*kv)
      return error_response(api::ApiError::not_found(c.res.qualified_resource(), c.info.name));
    json current =
        scale ? to_scale(c.res, parse_stored(**kv, &c.strategy)) : parse_stored(**kv, &c.strategy);
    std::string current_rv = std::to_string((*kv)->mod_revision);
    json patched;
    if (kind == Kind::kJson) {
      auto r = api::apply_json_patch(current, *patch_doc);
      if (!r.is_ok()) {
        return error_response(invalid_patch(r.status().message()));
      }
      patched = std::move(r).value();
    } else if (kind == Kind::kMerge) {
      patched = api::apply_merge_patch(current, *patch_doc);
    } else {
      if (!type) {
        return error_response(api::ApiError::unsupported_media_type(ct));
      }
      auto r = api::apply_strategic_merge_patch(current, *patch_doc, *type, schema_);
      if (!r.is_ok()) return error_response(invalid_patch(r.status().message()));
      patched = std::move(r).value();
    }
    if (!patched.is_object()) {
      return error_response(api::ApiError::bad_request("the patched object is not an object"));
    }
    std::vector<std::string> warnings;
    if (auto e = prune_patched(patched, type, schema_, c.req, "patched object",
                               kind == Kind::kJson ? std::vector<std::string>{} : duplicates,
                               &warnings)) {
      return error_response(*e);
    }
    if (!patched["metadata"].is_object()) patched["metadata"] = json::object();
    std::string precondition = patched["metadata"].value("resourceVersion", "");
    if (!precondition.empty() && precondition != current_rv) {
      return error_response(api::ApiError::conflict(
          c.res.qualified_resource(), c.info.name,
          "the object has been modified; please apply your changes to the latest version and "
          "try again"));
    }
    if (patched["metadata"].value("name", c.info.name) != c.info.name) {
      return error_response(api::ApiError::bad_request("the name of the object does not match"));
    }
    json out;
    bool conflict = false;
    if (auto e = write_update(c.res, c.strategy, c.info.subresource, **kv, std::move(patched),
                              dry_run, &out, &conflict)) {
      return error_response(*e);
    }
    if (conflict) continue;
    Response r = json_response(200, scale ? to_scale(c.res, out).dump() : out.dump());
    add_warnings(r, warnings);
    return r;
  }
  return error_response(api::ApiError::conflict(
      c.res.qualified_resource(), c.info.name,
      "the object has been modified; please apply your changes to the latest version and try "
      "again"));
}

// ---------------------------------------------------------------------------------------------
// delete

namespace {

struct DeleteOptions {
  std::optional<int64_t> grace_period;
  std::string propagation;
  std::string precondition_uid;
  std::string precondition_rv;
  bool dry_run = false;
};

std::optional<api::ApiError> parse_delete_options(const Request& req, DeleteOptions* o) {
  o->dry_run = is_dry_run(req);
  bool ok = true;
  if (auto g = req.param("gracePeriodSeconds"); !g.empty()) {
    bool neg = g[0] == '-';
    int64_t v = to_int(neg ? g.substr(1) : g, &ok);
    if (!ok) return api::ApiError::bad_request("invalid gracePeriodSeconds");
    o->grace_period = neg ? -v : v;
  }
  if (auto p = req.param("propagationPolicy"); !p.empty()) o->propagation = std::string(p);
  if (!req.body.empty()) {
    std::string error;
    auto body = parse_json(req.body, nullptr, &error);
    if (!body || !body->is_object()) {
      return api::ApiError::bad_request("error decoding DeleteOptions: " + error);
    }
    if (body->contains("gracePeriodSeconds") && (*body)["gracePeriodSeconds"].is_number_integer()) {
      o->grace_period = (*body)["gracePeriodSeconds"].get<int64_t>();
    }
    if (body->contains("propagationPolicy") && (*body)["propagationPolicy"].is_string()) {
      o->propagation = (*body)["propagationPolicy"].get<std::string>();
    }
    if (body->contains("orphanDependents") && (*body)["orphanDependents"].is_boolean() &&
        o->propagation.empty()) {
      o->propagation = (*body)["orphanDependents"].get<bool>() ? "Orphan" : "Background";
    }
    if (auto pre = body->find("preconditions"); pre != body->end() && pre->is_object()) {
      o->precondition_uid = pre->value("uid", "");
      o->precondition_rv = pre->value("resourceVersion", "");
    }
    if (auto d = body->find("dryRun"); d != body->end() && d->is_array()) {
      for (const auto& v : *d) {
        if (v == "All") o->dry_run = true;
      }
    }
  }
  if (!o->propagation.empty() && o->propagation != "Orphan" && o->propagation != "Background" &&
      o->propagation != "Foreground") {
    return api::ApiError::bad_request("propagationPolicy: Unsupported value: \"" + o->propagation +
                                      "\": supported values: \"Foreground\", \"Background\", "
                                      "\"Orphan\"");
  }
  if (o->grace_period && *o->grace_period < 0) o->grace_period = 0;
  return std::nullopt;
}

}  // namespace

std::optional<api::ApiError> Registry::delete_object(const api::ResourceInfo& res,
                                                     const Strategy& st, const std::string& key,
                                                     const DeleteOptionsRef& opts_ref, json* out) {
  const DeleteOptions& opts = *static_cast<const DeleteOptions*>(opts_ref.options);
  std::string name = key.substr(key.rfind('/') + 1);
  for (int attempt = 0; attempt < kMaxConflictRetries; ++attempt) {
    auto kv = store_.get(key);
    if (!kv.is_ok()) return api::ApiError::from_storage(kv.status());
    if (!*kv) return api::ApiError::not_found(res.qualified_resource(), name);
    json obj = parse_stored(**kv, &st);
    json& meta = obj["metadata"];
    if (!opts.precondition_uid.empty() && opts.precondition_uid != meta.value("uid", "")) {
      return api::ApiError::conflict(
          res.qualified_resource(), name,
          "Precondition failed: UID in precondition: " + opts.precondition_uid +
              ", UID in object meta: " + meta.value("uid", ""));
    }
    if (!opts.precondition_rv.empty() &&
        opts.precondition_rv != std::to_string((*kv)->mod_revision)) {
      return api::ApiError::conflict(
          res.qualified_resource(), name,
          "Precondition failed: ResourceVersion in precondition: " + opts.precondition_rv +
              ", ResourceVersion in object meta: " + std::to_string((*kv)->mod_revision));
    }
    json finalizers = meta.value("finalizers", json::array());
    auto add_finalizer = [&](const char* f) {
      if (std::find(finalizers.begin(), finalizers.end(), f) == finalizers.end()) {
        finalizers.push_back(f);
      }
    };
    if (opts.propagation == "Orphan") add_finalizer("orphan");
    if (opts.propagation == "Foreground") add_finalizer("foregroundDeletion");
    int64_t grace = 0;
    if (st.graceful_delete) {
      grace =
          opts.grace_period.value_or(field_value(obj, "spec.terminationGracePeriodSeconds").empty()
                                         ? 30
                                         : obj["spec"].value("terminationGracePeriodSeconds", 30));
      std::string phase = field_value(obj, "status.phase");
      // A pod no kubelet runs, or that has finished, goes at once.
      if (field_value(obj, "spec.nodeName").empty() || phase == "Succeeded" || phase == "Failed") {
        grace = 0;
      }
      if (meta.contains("deletionGracePeriodSeconds")) {
        grace = std::min(grace, meta["deletionGracePeriodSeconds"].get<int64_t>());
      }
    }
    if (st.before_delete) {
      if (auto e = st.before_delete(obj)) return e;
    }
    bool pending = st.pending_finalizers && st.pending_finalizers(obj);
    storage::Txn txn;
    txn.compare.push_back(
        storage::Compare::mod_revision(key, storage::CompareOp::kEqual, (*kv)->mod_revision));
    bool mark_only = !finalizers.empty() || grace > 0 || pending;
    if (mark_only) {
      bool changed = false;
      if (!meta.contains("deletionTimestamp")) {
        meta["deletionTimestamp"] = rfc3339(std::chrono::duration_cast<std::chrono::seconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count() +
                                            grace);
        changed = true;
      }
      if (!meta.contains("deletionGracePeriodSeconds") ||
          meta["deletionGracePeriodSeconds"].get<int64_t>() != grace) {
        meta["deletionGracePeriodSeconds"] = grace;
        changed = true;
      }
      if (meta.value("finalizers", json::array()) != finalizers) {
        meta["finalizers"] = finalizers;
        changed = true;
      }
      if (!changed) {
        *out = std::move(obj);
        return std::nullopt;
      }
      txn.success.push_back(storage::Op::put(key, stored_bytes(obj, &st)));
    } else {
      txn.success.push_back(storage::Op::del(KeyRange::single(key)));
    }
    if (opts.dry_run) {
      *out = std::move(obj);
      return std::nullopt;
    }
    auto result = store_.txn(txn);
    if (!result.is_ok()) return api::ApiError::from_storage(result.status());
    if (!result->succeeded) continue;
    meta["resourceVersion"] = std::to_string(result->revision);
    if (!mark_only && st.settle) st.settle(nullptr, &obj, true);
    *out = std::move(obj);
    return std::nullopt;
  }
  return api::ApiError::conflict(res.qualified_resource(), name,
                                 "the object has been modified; please apply your changes to the "
                                 "latest version and try again");
}

Response Registry::remove(Ctx& c) {
  if (!c.info.subresource.empty()) {
    return error_response(api::ApiError::method_not_allowed(
        "the server does not allow this method on the requested resource"));
  }
  DeleteOptions opts;
  if (auto e = parse_delete_options(c.req, &opts)) return error_response(*e);
  json out;
  if (auto e = delete_object(c.res, c.strategy, object_key(c.res, c.info.ns, c.info.name),
                             DeleteOptionsRef{&opts}, &out)) {
    return error_response(*e);
  }
  return json_response(200, out.dump());
}

Response Registry::remove_collection(Ctx& c) {
  DeleteOptions opts;
  if (auto e = parse_delete_options(c.req, &opts)) return error_response(*e);
  auto listed = store_.range(KeyRange::prefix(object_prefix(c.res, c.info.ns)));
  if (!listed.is_ok()) return error_response(api::ApiError::from_storage(listed.status()));
  json items = json::array();
  for (const storage::KeyValuePtr& kv : listed->kvs) {
    json obj = parse_stored(*kv, &c.strategy);
    if (!matches(c.read, obj)) continue;
    json out;
    auto e = delete_object(c.res, c.strategy, kv->key, DeleteOptionsRef{&opts}, &out);
    if (e && e->code == 404) continue;  // deleted meanwhile
    if (e) return error_response(*e);
    items.push_back(std::move(out));
  }
  json list{{"kind", list_kind(c.res)},
            {"apiVersion", c.res.group_version()},
            {"metadata", {{"resourceVersion", std::to_string(listed->revision)}}},
            {"items", std::move(items)}};
  return json_response(200, list.dump());
}

Result<std::optional<json>> Registry::read(const api::ResourceInfo& res, const std::string& ns,
                                           const std::string& name) {
  auto kv = store_.get(object_key(res, ns, name));
  if (!kv.is_ok()) return kv.status();
  if (!*kv) return std::optional<json>();
  return std::optional<json>(parse_stored(**kv, &strategy(res)));
}

Status Registry::ensure(const api::ResourceInfo& res, json object) {
  object["apiVersion"] = res.group_version();
  object["kind"] = res.kind;
  const json& meta = object["metadata"];
  std::string key = object_key(res, meta.value("namespace", ""), meta.value("name", ""));
  auto existing = store_.get(key);
  if (!existing.is_ok()) return existing.status();
  if (*existing) return Status::ok();
  auto e = create_object(res, strategy(res), object, false);
  if (e && e->code != 409) return Status(StatusCode::kInternal, e->message);
  return Status::ok();
}

void Registry::shutdown() {
  std::unordered_set<std::shared_ptr<WatchSession>> sessions;
  {
    std::lock_guard lock(sessions_mu_);
    if (stopping_) return;
    stopping_ = true;
    sessions.swap(sessions_);
  }
  ticker_cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
  for (const auto& s : sessions) s->stop();
  for (auto& [prefix, cache] : caches_) cache->stop();
}

void Registry::start_watch_caches(WatchCacheOptions options, std::chrono::milliseconds wait) {
  // The field paths selectors read, per prefix. Resources that convert their stored form match
  // selectors on the converted object instead, so theirs are not precomputed.
  std::map<std::string, std::vector<std::string>> prefixes;
  for (const api::ResourceInfo& r : schema_.resources()) {
    std::vector<std::string>& paths = prefixes["/registry/" + r.resource + "/"];
    if (paths.empty()) paths = {"metadata.name", "metadata.namespace"};
    const Strategy& st = strategy(r);
    if (st.from_storage) continue;
    for (const std::string& f : st.selectable_fields) {
      if (std::find(paths.begin(), paths.end(), f) == paths.end()) paths.push_back(f);
    }
  }
  for (auto& [prefix, paths] : prefixes) {
    if (caches_.count(prefix)) continue;
    caches_.emplace(prefix,
                    std::make_unique<WatchCache>(store_, prefix, std::move(paths), options));
  }
  // Every cache lists its prefix on its own thread; wait for them together.
  for (auto& [prefix, cache] : caches_) cache->start();
  auto deadline = std::chrono::steady_clock::now() + wait;
  for (auto& [prefix, cache] : caches_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!cache->wait_ready(std::max(left, std::chrono::milliseconds(0)))) {
      SKIFF_LOG_WARN("watch cache {} is not ready yet; its requests go to the store meanwhile",
                     prefix);
    }
  }
}

WatchCache* Registry::watch_cache(const std::string& resource) const {
  auto it = caches_.find("/registry/" + resource + "/");
  return it == caches_.end() ? nullptr : it->second.get();
}

Result<std::vector<storage::KeyValuePtr>> Registry::cached_list(
    const std::string& key_prefix) const {
  // "/registry/<resource>/..." → that resource's cache.
  size_t resource_end = key_prefix.find('/', std::string_view("/registry/").size());
  if (resource_end != std::string::npos && key_prefix.starts_with("/registry/")) {
    auto it = caches_.find(key_prefix.substr(0, resource_end + 1));
    if (it != caches_.end() && it->second->ready()) {
      auto snapshot = it->second->list(key_prefix);
      if (snapshot.is_ok()) {
        std::vector<storage::KeyValuePtr> out;
        out.reserve(snapshot->objects.size());
        for (const CachedObjectPtr& o : snapshot->objects) out.push_back(o->kv_ptr());
        return out;
      }
    }
  }
  SKIFF_ASSIGN_OR_RETURN(storage::RangeResult listed,
                         store_.range(storage::KeyRange::prefix(key_prefix)));
  return std::move(listed.kvs);
}

WatchCache* Registry::cache_for(const api::ResourceInfo& r) const {
  if (caches_.empty()) return nullptr;
  return watch_cache(r.resource);
}

// ---------------------------------------------------------------------------------------------
// pods/binding and pods/eviction

namespace {

Response success_status(int code) {
  return json_response(code, json{{"kind", "Status"},
                                  {"apiVersion", "v1"},
                                  {"metadata", json::object()},
                                  {"status", "Success"},
                                  {"code", code}}
                                 .dump());
}

// Parses a subresource body of the given kind (Binding, Eviction) from JSON.
std::optional<api::ApiError> decode_subresource(const Request& req, const std::string& kind,
                                                json* out) {
  std::string_view ct = req.header("Content-Type");
  if (!ct.empty() && ct.find("json") == std::string_view::npos) {
    return api::ApiError::unsupported_media_type(std::string(ct));
  }
  std::string error;
  auto parsed = parse_json(req.body, nullptr, &error);
  if (!parsed || !parsed->is_object()) {
    return api::ApiError::bad_request("error decoding " + kind + ": " +
                                      (error.empty() ? "not a JSON object" : error));
  }
  std::string body_kind = parsed->value("kind", kind);
  if (body_kind != kind) {
    return api::ApiError::bad_request("the kind in the data (" + body_kind +
                                      ") does not match the expected kind (" + kind + ")");
  }
  *out = std::move(*parsed);
  return std::nullopt;
}

}  // namespace

Response Registry::bind_pod(Ctx& c) {
  json binding;
  if (auto e = decode_subresource(c.req, "Binding", &binding)) return error_response(*e);
  std::string name = binding.contains("metadata") ? binding["metadata"].value("name", "") : "";
  if (!name.empty() && name != c.info.name) {
    return error_response(api::ApiError::bad_request(
        "the name of the binding (" + name + ") does not match the pod (" + c.info.name + ")"));
  }
  std::string node = binding.contains("target") ? binding["target"].value("name", "") : "";
  if (node.empty()) {
    api::FieldErrors errors;
    errors.required("target.name");
    return error_response(api::ApiError::invalid("Binding", "", c.info.name, errors.take()));
  }
  std::string key = object_key(c.res, c.info.ns, c.info.name);
  for (int attempt = 0; attempt < kMaxConflictRetries; ++attempt) {
    auto kv = store_.get(key);
    if (!kv.is_ok()) return error_response(api::ApiError::from_storage(kv.status()));
    if (!*kv)
      return error_response(api::ApiError::not_found(c.res.qualified_resource(), c.info.name));
    json pod = parse_stored(**kv, &c.strategy);
    if (pod["metadata"].contains("deletionTimestamp")) {
      return error_response(api::ApiError::conflict(
          c.res.qualified_resource(), c.info.name,
          "pod " + c.info.name + " is being deleted, cannot be assigned to a host"));
    }
    std::string current = field_value(pod, "spec.nodeName");
    if (!current.empty()) {
      return error_response(api::ApiError::conflict(
          c.res.qualified_resource(), c.info.name,
          "pod " + c.info.name + " is already assigned to node \"" + current + "\""));
    }
    // Upstream's setPodNodeAndMetadata.
    if (const json& gates = pod["spec"].value("schedulingGates", json::array());
        gates.is_array() && !gates.empty()) {
      return error_response(
          api::ApiError::internal("pod " + c.info.name + " has non-empty .spec.schedulingGates"));
    }
    pod["spec"]["nodeName"] = node;
    if (binding.contains("metadata") && binding["metadata"].contains("annotations") &&
        binding["metadata"]["annotations"].is_object()) {
      for (auto it = binding["metadata"]["annotations"].begin();
           it != binding["metadata"]["annotations"].end(); ++it) {
        pod["metadata"]["annotations"][it.key()] = it.value();
      }
    }
    json& conditions = pod["status"]["conditions"];
    if (!conditions.is_array()) conditions = json::array();
    json scheduled{{"type", "PodScheduled"},
                   {"status", "True"},
                   {"lastProbeTime", nullptr},
                   {"lastTransitionTime", rfc3339_now()}};
    bool replaced = false;
    for (json& cond : conditions) {
      if (cond.value("type", "") == "PodScheduled") {
        cond = scheduled;
        replaced = true;
      }
    }
    if (!replaced) conditions.push_back(scheduled);
    storage::Txn txn;
    txn.compare.push_back(
        storage::Compare::mod_revision(key, storage::CompareOp::kEqual, (*kv)->mod_revision));
    txn.success.push_back(storage::Op::put(key, stored_bytes(pod, &c.strategy)));
    if (is_dry_run(c.req)) return success_status(201);
    auto result = store_.txn(txn);
    if (!result.is_ok()) return error_response(api::ApiError::from_storage(result.status()));
    if (result->succeeded) return success_status(201);
  }
  return error_response(api::ApiError::conflict(c.res.qualified_resource(), c.info.name,
                                                "the object has been modified; please apply your "
                                                "changes to the latest version and try again"));
}

Response Registry::evict_pod(Ctx& c) {
  json eviction;
  if (auto e = decode_subresource(c.req, "Eviction", &eviction)) return error_response(*e);
  // No PodDisruptionBudgets are served, so an eviction is a deletion with its options.
  DeleteOptions opts;
  if (auto e = parse_delete_options(c.req, &opts)) return error_response(*e);
  opts.dry_run = opts.dry_run || is_dry_run(c.req);
  if (eviction.contains("deleteOptions") && eviction["deleteOptions"].is_object()) {
    const json& d = eviction["deleteOptions"];
    if (d.contains("gracePeriodSeconds") && d["gracePeriodSeconds"].is_number_integer()) {
      opts.grace_period = std::max<int64_t>(0, d["gracePeriodSeconds"].get<int64_t>());
    }
    if (auto pre = d.find("preconditions"); pre != d.end() && pre->is_object()) {
      opts.precondition_uid = pre->value("uid", "");
      opts.precondition_rv = pre->value("resourceVersion", "");
    }
  }
  json out;
  if (auto e = delete_object(c.res, c.strategy, object_key(c.res, c.info.ns, c.info.name),
                             DeleteOptionsRef{&opts}, &out)) {
    return error_response(*e);
  }
  return success_status(201);
}

Registry::~Registry() {
  shutdown();
}

}  // namespace skiff::apiserver
