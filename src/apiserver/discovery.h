#pragma once

// Discovery documents derived from the schema: legacy (/api, /apis, /api/v1, /apis/{g},
// /apis/{g}/{v}) and aggregated (apidiscovery.k8s.io v2 and v2beta1, chosen by Accept).
//
// Thread-safety: immutable after construction.

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "api/schema.h"
#include "httpserver/http.h"

namespace skiff::apiserver {

using http::Response;

class Discovery {
 public:
  explicit Discovery(const api::Schema& schema);

  // Answers a discovery path, or nullopt when `path` is not one.
  std::optional<Response> serve(std::string_view path, std::string_view accept) const;

 private:
  std::string api_versions_;                           // /api
  std::string group_list_;                             // /apis
  std::map<std::string, std::string> groups_;          // /apis/{g}
  std::map<std::string, std::string> resource_lists_;  // "v1" or "{g}/{v}"
  std::string aggregated_core_[2];                     // [v2, v2beta1] for /api
  std::string aggregated_groups_[2];                   // for /apis
};

}  // namespace skiff::apiserver
