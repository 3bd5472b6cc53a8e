#include "controllers/statefulset/controller_history.h"

#include <algorithm>

#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"

namespace skiff::controllers::history {
namespace {

using client::resources::kControllerRevisions;

// Longest prefix of a revision name: 253 (a DNS subdomain) minus the hash and the dash.
constexpr size_t kMaxPrefixLength = 223;
// Attempts at a revision write that keeps meeting conflicts.
constexpr int kUpdateRetries = 5;

}  // namespace

Json template_patch(const Json& owner) {
  Json tmpl = field(field(owner, "spec"), "template");
  if (!tmpl.is_object()) tmpl = Json::object();
  tmpl["$patch"] = "replace";
  return {{"spec", {{"template", std::move(tmpl)}}}};
}

Json template_of(const Json& revision) {
  Json tmpl = field(field(field(revision, "data"), "spec"), "template");
  if (!tmpl.is_object()) return Json::object();
  tmpl.erase("$patch");
  return tmpl;
}

bool equal_data(const Json& a, const Json& b) {
  return without_empty_values(a) == without_empty_values(b);
}

bool equal_revision(const Json& a, const Json& b) {
  return equal_data(field(a, "data"), field(b, "data"));
}

std::string hash_data(const Json& data, std::optional<int64_t> collision_count) {
  // nlohmann's default object keeps keys sorted, so dump() is canonical.
  std::string text = without_empty_values(data).dump();
  if (collision_count) text += std::to_string(*collision_count);
  uint32_t h = 2166136261u;
  for (unsigned char c : text) {
    h ^= c;
    h *= 16777619u;
  }
  static const char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
  std::string out;
  for (unsigned char c : std::to_string(h)) out += kAlphabet[c % (sizeof(kAlphabet) - 1)];
  return out;
}

std::string revision_name(std::string_view prefix, std::string_view hash) {
  std::string name(prefix.substr(0, std::min(prefix.size(), kMaxPrefixLength)));
  name += "-";
  name += hash;
  return name;
}

int64_t revision_number(const Json& revision) {
  auto it = revision.find("revision");
  return it != revision.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

std::string revision_hash_label(const Json& revision) {
  const Json& labels = field(field(revision, "metadata"), "labels");
  auto it = labels.find(kControllerRevisionHashLabel);
  return it != labels.end() && it->is_string() ? it->get<std::string>() : "";
}

void sort_revisions(std::vector<ObjectPtr>& revisions) {
  std::stable_sort(revisions.begin(), revisions.end(), [](const ObjectPtr& a, const ObjectPtr& b) {
    int64_t ra = revision_number(*a), rb = revision_number(*b);
    if (ra != rb) return ra < rb;
    int64_t ca = created_at(*a), cb = created_at(*b);
    if (ca != cb) return ca < cb;
    return client::name_of(*a) < client::name_of(*b);
  });
}

int64_t max_revision(const std::vector<ObjectPtr>& revisions) {
  int64_t max = 0;
  for (const auto& r : revisions) max = std::max(max, revision_number(*r));
  return max;
}

Json new_revision(const Json& owner, std::string_view kind, std::string_view api_version,
                  const Json& template_labels, const Json& data, int64_t number,
                  std::optional<int64_t> collision_count) {
  std::string hash = hash_data(data, collision_count);
  Json labels = template_labels.is_object() ? template_labels : Json::object();
  labels[kControllerRevisionHashLabel] = hash;
  Json meta = {{"name", revision_name(client::name_of(owner), hash)},
               {"namespace", client::namespace_of(owner)},
               {"labels", std::move(labels)},
               {"ownerReferences", Json::array({controller_ref(owner, kind, api_version)})}};
  const Json& annotations = field(field(owner, "metadata"), "annotations");
  if (annotations.is_object() && !annotations.empty()) meta["annotations"] = annotations;
  return {{"apiVersion", "apps/v1"},
          {"kind", "ControllerRevision"},
          {"metadata", std::move(meta)},
          {"data", data},
          {"revision", number}};
}

Result<Json> create_revision(client::ApiClient& api, const Json& owner, Json revision,
                             int64_t& collision_count) {
  const std::string ns = client::namespace_of(owner);
  // Every name taken by other data moves to the next collision count; the bound only guards
  // against a server that answers AlreadyExists for everything.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    std::string hash = hash_data(revision["data"], collision_count);
    revision["metadata"]["name"] = revision_name(client::name_of(owner), hash);
    revision["metadata"]["labels"][kControllerRevisionHashLabel] = hash;
    auto created = api.create(kControllerRevisions, ns, revision);
    if (created.is_ok() || created.status().code() != StatusCode::kAlreadyExists) return created;
    auto existing =
        api.get(kControllerRevisions, ns, revision["metadata"]["name"].get<std::string>());
    if (!existing.is_ok()) return existing.status();
    if (equal_revision(existing.value(), revision)) return existing;
    ++collision_count;
  }
  return error(StatusCode::kInternal,
               "no free ControllerRevision name for " + client::key_of(owner));
}

Result<Json> update_revision_number(client::ApiClient& api, const Json& revision, int64_t number) {
  Json obj = revision;
  for (int attempt = 0;; ++attempt) {
    if (revision_number(obj) == number) return obj;
    obj["revision"] = number;
    auto updated = api.update(kControllerRevisions, client::namespace_of(obj), obj);
    if (updated.is_ok() || updated.status().code() != StatusCode::kAborted ||
        attempt + 1 >= kUpdateRetries) {
      return updated;
    }
    auto fresh = api.get(kControllerRevisions, client::namespace_of(obj), client::name_of(obj));
    if (!fresh.is_ok()) return fresh.status();
    obj = std::move(fresh.value());
  }
}

Result<std::vector<ObjectPtr>> list_owned(client::ApiClient& api, const Json& owner,
                                          const api::LabelSelector& selector) {
  client::ListOptions options;
  options.label_selector = selector.to_string();
  SKIFF_ASSIGN_OR_RETURN(Json listed,
                         api.list(kControllerRevisions, client::namespace_of(owner), options));
  std::vector<ObjectPtr> out;
  const std::string uid = client::uid_of(owner);
  for (auto& rev : listed["items"]) {
    if (!is_controlled_by(rev, uid)) continue;
    out.push_back(std::make_shared<const Json>(std::move(rev)));
  }
  sort_revisions(out);
  return out;
}

}  // namespace skiff::controllers::history
