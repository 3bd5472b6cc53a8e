#pragma once

// OpenAPI documents derived from the schema, in the shape kubectl consumes them:
//  - v3: a root document listing every group-version ("api/v1", "apis/apps/v1", ...) with a
//    content-hash URL, and one document per group-version holding its paths (operations with
//    x-kubernetes-group-version-kind / x-kubernetes-action and query parameters such as
//    fieldValidation) and components.schemas for every type they reach (with the strategic merge
//    patch and server-side apply extensions). kubectl uses these for apply/create/replace/edit
//    validation, strategic merge patch metadata, and explain.
//  - v2: one Swagger 2.0 document for all group-versions (kubectl 1.28 and earlier).
//
// Documents are built on first use and cached as serialized JSON.
//
// Thread-safety: all methods may be called concurrently; building happens once (std::call_once)
// and the returned references stay valid and unchanged for the lifetime of the OpenApi.

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/schema.h"

namespace skiff::api {

// An HTTP answer for an OpenAPI path, free of the HTTP layer's types.
struct OpenApiReply {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

class OpenApi {
 public:
  explicit OpenApi(const Schema& schema);
  ~OpenApi();
  OpenApi(const OpenApi&) = delete;
  OpenApi& operator=(const OpenApi&) = delete;

  // The /openapi/v3 document: {"paths":{"apis/apps/v1":{"serverRelativeURL":
  // "<server_prefix>/openapi/v3/apis/apps/v1?hash=<HASH>"}, ...}}.
  std::string root_v3(std::string_view server_prefix = "") const;

  // The document of one group-version, by its path ("api/v1", "apis/apps/v1"); nullptr when
  // the schema serves no such group-version.
  const std::string* group_version_v3(std::string_view path) const;
  // The document's content hash (upper-case hex SHA-512), as used in root_v3's URLs; nullptr
  // for an unknown group-version.
  const std::string* group_version_v3_hash(std::string_view path) const;

  // The Swagger 2.0 document (JSON) for every served group-version, and its hash.
  const std::string& v2() const;
  const std::string& v2_hash() const;
  // The same document in gnostic's protobuf encoding (openapi.v2.Document), which kubectl 1.28
  // and earlier ask for exclusively, and its hash.
  const std::string& v2_protobuf() const;
  const std::string& v2_protobuf_hash() const;

  // Answers a request for /openapi/v2, /openapi/v3 or /openapi/v3/<group-version path>, or
  // nullopt when `path` is none of these. `hash` is the "hash" query parameter; a matching hash
  // makes the answer immutable (Cache-Control), and a matching If-None-Match gives 304.
  // Unknown group-versions are a 404 Status; an Accept without JSON is a 406.
  std::optional<OpenApiReply> serve(std::string_view method, std::string_view path,
                                    std::string_view hash, std::string_view accept,
                                    std::string_view if_none_match) const;

  // The group-version paths served, in the schema's order ("api/v1", "apis/apps/v1", ...).
  const std::vector<std::string>& group_version_paths() const { return gv_paths_; }

 private:
  struct Doc {
    std::string body;
    std::string hash;
  };
  void build_v3() const;
  void build_v2() const;

  const Schema& schema_;
  std::vector<std::string> gv_paths_;
  mutable std::once_flag v3_once_;
  mutable std::map<std::string, Doc, std::less<>> v3_;  // written once, under v3_once_
  mutable std::once_flag v2_once_;
  mutable Doc v2_;        // written once, under v2_once_
  mutable Doc v2_proto_;  // written once, under v2_once_
};

}  // namespace skiff::api
