#include "kubelet/static_pods.h"

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/time.h"

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
                                           const std::string& node_name) {
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
    annotations[kConfigSourceAnnotation] = "file";
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
