#include "kubelet/cni/cni_config.h"

#include <arpa/inet.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/pki.h"

namespace skiff::kubelet::cni {
namespace {

using Json = nlohmann::ordered_json;

}  // namespace

Result<int> cidr_family(const std::string& cidr) {
  size_t slash = cidr.find('/');
  if (slash == std::string::npos || slash + 1 >= cidr.size()) {
    return error(StatusCode::kInvalidArgument, "CIDR '" + cidr + "' has no prefix length");
  }
  std::string address = cidr.substr(0, slash);
  std::string prefix_text = cidr.substr(slash + 1);
  if (prefix_text.size() > 3 || prefix_text.find_first_not_of("0123456789") != std::string::npos) {
    return error(StatusCode::kInvalidArgument, "CIDR '" + cidr + "' has a bad prefix length");
  }
  int prefix = std::stoi(prefix_text);
  unsigned char bytes[16];
  int family = 0;
  size_t len = 0;
  if (inet_pton(AF_INET, address.c_str(), bytes) == 1) {
    family = 4;
    len = 4;
  } else if (inet_pton(AF_INET6, address.c_str(), bytes) == 1) {
    family = 6;
    len = 16;
  } else {
    return error(StatusCode::kInvalidArgument, "CIDR '" + cidr + "' has a bad address");
  }
  if (prefix < 0 || prefix > static_cast<int>(len * 8)) {
    return error(StatusCode::kInvalidArgument, "CIDR '" + cidr + "' has a bad prefix length");
  }
  // host-local refuses a subnet with host bits set; say so here, where the cause is clear.
  for (size_t bit = static_cast<size_t>(prefix); bit < len * 8; ++bit) {
    if (bytes[bit / 8] & (0x80 >> (bit % 8))) {
      return error(StatusCode::kInvalidArgument,
                   "CIDR '" + cidr + "' has host bits set beyond /" + prefix_text);
    }
  }
  return family;
}

Result<std::string> render_cni_conflist(const CniConfigOptions& options) {
  if (options.pod_cidrs.empty()) {
    return error(StatusCode::kInvalidArgument, "no pod CIDR for the CNI configuration");
  }
  if (options.bridge_name.empty() || options.bridge_name.size() > 15) {
    return error(StatusCode::kInvalidArgument,
                 "bridge name must be 1 to 15 characters: '" + options.bridge_name + "'");
  }
  if (options.network_name.empty()) {
    return error(StatusCode::kInvalidArgument, "empty CNI network name");
  }
  Json ranges = Json::array();
  Json routes = Json::array();
  bool have[7] = {};
  for (const std::string& cidr : options.pod_cidrs) {
    SKIFF_ASSIGN_OR_RETURN(int family, cidr_family(cidr));
    if (have[family]) {
      return error(StatusCode::kInvalidArgument,
                   "more than one IPv" + std::to_string(family) + " pod CIDR");
    }
    have[family] = true;
    ranges.push_back(Json::array({{{"subnet", cidr}}}));
    routes.push_back({{"dst", family == 4 ? "0.0.0.0/0" : "::/0"}});
  }
  Json ipam = {{"type", "host-local"}, {"ranges", ranges}, {"routes", routes}};
  if (!options.ipam_data_dir.empty()) ipam["dataDir"] = options.ipam_data_dir;
  Json bridge = {
      {"type", "bridge"}, {"bridge", options.bridge_name}, {"isGateway", true},
      {"ipMasq", false},  {"hairpinMode", true},
  };
  if (options.mtu > 0) bridge["mtu"] = options.mtu;
  bridge["ipam"] = ipam;
  Json portmap = {
      {"type", "portmap"},
      {"capabilities", {{"portMappings", true}}},
      {"snat", true},
  };
  Json conflist = {
      {"cniVersion", options.cni_version},
      {"name", options.network_name},
      {"plugins", Json::array({bridge, portmap})},
  };
  return conflist.dump(2) + "\n";
}

Result<bool> write_cni_conflist(const std::string& conf_dir, const CniConfigOptions& options) {
  SKIFF_ASSIGN_OR_RETURN(std::string content, render_cni_conflist(options));
  std::error_code ec;
  std::filesystem::create_directories(conf_dir, ec);
  if (ec) return error(StatusCode::kInternal, "creating " + conf_dir + ": " + ec.message());
  std::string path = conf_dir + "/" + kConflistFileName;
  Result<std::string> existing = pki::read_file(path);
  if (existing.is_ok() && *existing == content) return false;
  if (!existing.is_ok() && existing.status().code() != StatusCode::kNotFound) {
    return existing.status();
  }
  SKIFF_RETURN_IF_ERROR(pki::write_file_atomic(path, content, 0644));
  return true;
}

}  // namespace skiff::kubelet::cni
