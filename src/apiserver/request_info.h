#pragma once

// What a request addresses, parsed from its path and method as upstream's RequestInfoFactory
// does: /api/v1/namespaces/{ns}/{resource}/{name}/{subresource}, /apis/{group}/{version}/...

#include <string>
#include <vector>

#include "httpserver/http.h"

namespace skiff::apiserver {

// The HTTP layer's types (httpserver/http.h, shared with the kubelet) under their unqualified
// names.
using http::HttpHandler;
using http::HttpHeader;
using http::parse_query;
using http::percent_decode;
using http::Request;
using http::Responder;
using http::Response;
using http::ResponseStream;

struct RequestInfo {
  bool is_resource_request = false;
  // get, list, watch, create, update, patch, delete, deletecollection (resource requests), or
  // the lower-case HTTP method otherwise.
  std::string verb;
  std::string api_prefix;  // "api" or "apis"
  std::string group;
  std::string version;
  std::string ns;
  std::string resource;
  std::string subresource;
  std::string name;
  std::vector<std::string> parts;
};

RequestInfo parse_request_info(const Request& request);

}  // namespace skiff::apiserver
