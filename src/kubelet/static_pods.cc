#include "kubelet/static_pods.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/time.h"
#include "httpserver/proxy_client.h"

namespace skiff::kubelet {
namespace {

namespace fs = std::filesystem;

Json scalar(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  if (node.Tag() == "!") return text;  // quoted: always a string
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
    return nullptr;
  }
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  char* end = nullptr;
  errno = 0;
  long long i = std::strtoll(text.c_str(), &end, 10);
  if (errno == 0 && end != nullptr && *end == '\0' && end != text.c_str()) return int64_t(i);
  if (text.find_first_of(".eE") != std::string::npos &&
      text.find_first_not_of("0123456789+-.eE") == std::string::npos) {
    double d = std::strtod(text.c_str(), &end);
    if (end != nullptr && *end == '\0') return d;
  }
  return text;
}

Json to_json(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      Json out = Json::object();
      for (const auto& kv : node) out[kv.first.as<std::string>()] = to_json(kv.second);
      return out;
    }
    case YAML::NodeType::Sequence: {
      Json out = Json::array();
      for (const auto& item : node) out.push_back(to_json(item));
      return out;
    }
    case YAML::NodeType::Scalar:
      return scalar(node);
    default:
      return nullptr;
  }
}

std::string hex_md5(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_md5(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

void set_default(Json& obj, const char* key, Json value) {
  if (!obj.contains(key) || obj[key].is_null()) obj[key] = std::move(value);
}

bool image_is_latest(const std::string& image) {
  if (image.find('@') != std::string::npos) return false;
  size_t slash = image.rfind('/');
  size_t colon = image.rfind(':');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) return true;
  return image.substr(colon + 1) == "latest";
}

// The defaults the API server gives a pod (the parts the kubelet relies on).
void apply_defaults(Json& pod) {
  Json& spec = pod["spec"];
  set_default(spec, "restartPolicy", "Always");
  set_default(spec, "terminationGracePeriodSeconds", 30);
  set_default(spec, "dnsPolicy", "ClusterFirst");
  set_default(spec, "schedulerName", "default-scheduler");
  set_default(spec, "enableServiceLinks", true);
  for (const char* list : {"initContainers", "containers"}) {
    if (!spec.contains(list) || !spec[list].is_array()) continue;
    for (Json& c : spec[list]) {
      set_default(c, "terminationMessagePath", "/dev/termination-log");
      set_default(c, "terminationMessagePolicy", "File");
      std::string image = c.value("image", "");
      set_default(c, "imagePullPolicy", image_is_latest(image) ? "Always" : "IfNotPresent");
      if (c.contains("ports") && c["ports"].is_array()) {
        for (Json& p : c["ports"]) set_default(p, "protocol", "TCP");
      }
    }
  }
}

}  // namespace

Result<std::vector<Json>> parse_manifests(const std::string& text) {
  std::vector<Json> out;
  try {
    for (const YAML::Node& doc : YAML::LoadAll(text)) {
      if (!doc.IsNull()) out.push_back(to_json(doc));
    }
  } catch (const YAML::Exception& e) {
    return error(StatusCode::kInvalidArgument, std::string("invalid YAML: ") + e.what());
  }
  return out;
}

Result<std::vector<Json>> static_pods_from(const std::string& text, const std::string& file,
                                           const std::string& node_name,
                                           const std::string& source) {
  SKIFF_ASSIGN_OR_RETURN(std::vector<Json> docs, parse_manifests(text));
  std::vector<Json> objects;
  for (Json& doc : docs) {
    if (doc.value("kind", "") == "List" || doc.value("kind", "") == "PodList") {
      for (Json& item : doc["items"]) objects.push_back(std::move(item));
    } else {
      objects.push_back(std::move(doc));
    }
  }
  std::vector<Json> pods;
  for (Json& obj : objects) {
    if (!obj.is_object() || obj.value("kind", "") != "Pod") {
      return error(StatusCode::kInvalidArgument, file + ": not a Pod");
    }
    Json& meta = obj["metadata"];
    if (!meta.is_object() || meta.value("name", "").empty()) {
      return error(StatusCode::kInvalidArgument, file + ": metadata.name is required");
    }
    if (!obj.contains("spec") || !obj["spec"].contains("containers") ||
        !obj["spec"]["containers"].is_array() || obj["spec"]["containers"].empty()) {
      return error(StatusCode::kInvalidArgument, file + ": spec.containers is required");
    }
    set_default(meta, "namespace", "default");
    // As upstream: the hash of the pod as read, the node and the source names the pod.
    std::string uid = hex_md5(obj.dump() + "\n" + node_name + "\n" + file);
    meta["name"] = meta["name"].get<std::string>() + "-" + node_name;
    meta["uid"] = uid;
    Json& annotations = meta["annotations"];
    if (!annotations.is_object()) annotations = Json::object();
    annotations[kConfigSourceAnnotation] = source;
    annotations[kConfigHashAnnotation] = uid;
    annotations[kConfigSeenAnnotation] = rfc3339_now();
    obj["spec"]["nodeName"] = node_name;
    apply_defaults(obj);
    obj["status"] = {{"phase", "Pending"}};
    pods.push_back(std::move(obj));
  }
  return pods;
}

std::vector<Json> read_manifest_dir(const std::string& dir, const std::string& node_name,
                                    std::vector<ManifestFile>* skipped) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.empty() || name.front() == '.' || !entry.is_regular_file(ec)) continue;
    files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  std::vector<Json> pods;
  for (const std::string& path : files) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    auto parsed = static_pods_from(ss.str(), path, node_name);
    if (!parsed.is_ok()) {
      if (skipped) skipped->push_back({path, parsed.status()});
      continue;
    }
    for (Json& p : *parsed) pods.push_back(std::move(p));
  }
  return pods;
}

Result<UrlHeader> parse_url_header(const std::string& flag) {
  size_t colon = flag.find(':');
  if (colon == std::string::npos || colon == 0) {
    return error(StatusCode::kInvalidArgument,
                 "invalid --manifest-url-header \"" + flag + "\": want Name:Value");
  }
  UrlHeader h;
  h.name = flag.substr(0, colon);
  h.value = flag.substr(colon + 1);
  if (h.name.find_first_of(" \t\r\n") != std::string::npos ||
      h.value.find_first_of("\r\n") != std::string::npos) {
    return error(StatusCode::kInvalidArgument,
                 "invalid --manifest-url-header \"" + flag + "\": bad characters");
  }
  return h;
}

Result<std::string> fetch_manifest_url(const std::string& url,
                                       const std::vector<UrlHeader>& headers) {
  // The manifest body is small; anything far bigger is not a set of pods.
  constexpr size_t kMaxBody = 10 * 1024 * 1024;
  bool tls = false;
  std::string rest;
  if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else if (url.starts_with("https://")) {
    rest = url.substr(8);
    tls = true;
  } else {
    return error(StatusCode::kInvalidArgument,
                 "manifest URL " + url + ": only http:// and https:// are supported");
  }
  size_t slash = rest.find_first_of("/?");
  std::string authority = rest.substr(0, slash);
  std::string target = slash == std::string::npos ? "/" : rest.substr(slash);
  if (target.front() == '?') target = "/" + target;
  if (size_t at = authority.rfind('@'); at != std::string::npos) authority.erase(0, at + 1);
  std::string host = authority;
  int port = tls ? 443 : 80;
  size_t colon = authority.rfind(':');
  size_t bracket = authority.rfind(']');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    host = authority.substr(0, colon);
    std::string digits = authority.substr(colon + 1);
    char* end = nullptr;
    long p = std::strtol(digits.c_str(), &end, 10);
    if (digits.empty() || *end != '\0' || p <= 0 || p > 65535) {
      return error(StatusCode::kInvalidArgument, "manifest URL " + url + ": bad port");
    }
    port = static_cast<int>(p);
  }
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) return error(StatusCode::kInvalidArgument, "manifest URL " + url + ": no host");

  http::ProxyClientOptions options;
  options.use_tls = tls;
  if (tls) {
    // The system's CA store, as Go's default client verifies.
    const char* env = std::getenv(X509_get_default_cert_file_env());
    options.ca_file = env != nullptr && *env != '\0' ? env : X509_get_default_cert_file();
  }
  options.connect_timeout = std::chrono::seconds(10);
  options.response_timeout = std::chrono::seconds(15);
  SKIFF_ASSIGN_OR_RETURN(auto client, http::ProxyClient::create(options));
  std::vector<http::HttpHeader> request_headers;
  for (const UrlHeader& h : headers) request_headers.push_back({h.name, h.value});
  auto response = client->get(host, port, target, request_headers);
  if (!response.is_ok()) {
    return error(StatusCode::kUnavailable, url + ": " + response.status().message());
  }
  int status = (*response)->head().status;
  Result<std::string> body = (*response)->read_all(kMaxBody + 1);
  if (!body.is_ok()) return error(StatusCode::kUnavailable, url + ": " + body.status().message());
  if (status != 200) {
    return error(StatusCode::kUnavailable, url + ": HTTP " + std::to_string(status));
  }
  if (body->size() > kMaxBody) {
    return error(StatusCode::kUnavailable, url + ": the body is larger than 10 MiB");
  }
  return std::move(body).value();
}

Json mirror_pod_for(const Json& static_pod) {
  Json mirror = static_pod;
  mirror.erase("status");
  Json& meta = mirror["metadata"];
  meta.erase("uid");
  meta.erase("resourceVersion");
  std::string hash = static_pod["metadata"].value("uid", "");
  meta["annotations"][kConfigMirrorAnnotation] = hash;
  mirror["apiVersion"] = "v1";
  mirror["kind"] = "Pod";
  return mirror;
}

bool is_mirror_pod(const Json& pod) {
  auto meta = pod.find("metadata");
  if (meta == pod.end() || !meta->is_object()) return false;
  auto annotations = meta->find("annotations");
  return annotations != meta->end() && annotations->is_object() &&
         annotations->contains(kConfigMirrorAnnotation);
}

}  // namespace skiff::kubelet
