#include "apiserver/request_info.h"

#include <cctype>
#include <string_view>

namespace skiff::apiserver {
namespace {

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) parts.emplace_back(path.substr(i, j - i));
    i = j;
  }
  return parts;
}

}  // namespace

RequestInfo parse_request_info(const Request& request) {
  RequestInfo info;
  info.verb = request.method;
  for (char& c : info.verb) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::vector<std::string> parts = split_path(request.path);
  info.parts = parts;
  if (parts.empty() || (parts[0] != "api" && parts[0] != "apis")) return info;
  info.api_prefix = parts[0];
  size_t at = 1;
  if (info.api_prefix == "apis") {
    if (parts.size() < 3) return info;  // /apis, /apis/{group}
    info.group = parts[1];
    at = 2;
  } else if (parts.size() < 2) {
    return info;  // /api
  }
  info.version = parts[at++];
  if (at >= parts.size()) return info;  // /api/v1, /apis/{group}/{version}
  info.is_resource_request = true;

  std::vector<std::string> rest(parts.begin() + static_cast<long>(at), parts.end());
  const std::string& method = request.method;
  if (method == "POST") {
    info.verb = "create";
  } else if (method == "GET" || method == "HEAD") {
    info.verb = "get";
  } else if (method == "PUT") {
    info.verb = "update";
  } else if (method == "PATCH") {
    info.verb = "patch";
  } else if (method == "DELETE") {
    info.verb = "delete";
  }
  // The legacy /watch/ prefix.
  if (rest[0] == "watch") {
    info.verb = "watch";
    rest.erase(rest.begin());
    if (rest.empty()) {
      info.is_resource_request = false;
      return info;
    }
  }
  if (rest[0] == "namespaces") {
    if (rest.size() > 1) {
      info.ns = rest[1];
      if (rest.size() > 2 && rest[2] != "status" && rest[2] != "finalize") {
        rest.erase(rest.begin(), rest.begin() + 2);
      }
    }
  }
  info.parts = rest;
  if (rest.size() >= 3) info.subresource = rest[2];
  if (rest.size() >= 2) info.name = rest[1];
  info.resource = rest[0];

  if (info.name.empty() && info.verb == "get") {
    info.verb = request.flag("watch") ? "watch" : "list";
  } else if (info.verb == "get" && request.flag("watch")) {
    info.verb = "watch";
  }
  if (info.name.empty() && info.verb == "delete") info.verb = "deletecollection";
  return info;
}

}  // namespace skiff::apiserver
