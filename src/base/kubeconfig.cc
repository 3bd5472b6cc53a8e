#include "base/kubeconfig.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <filesystem>

#include "base/pki.h"

namespace skiff {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string scalar(const YAML::Node& node, const char* key) {
  YAML::Node v = node[key];
  if (!v || !v.IsScalar()) return {};
  return v.as<std::string>();
}

// Finds the entry called `name` in a list of {name: ..., <field>: {...}} and returns its <field>.
Result<YAML::Node> find_named(const YAML::Node& root, const char* list, const char* field,
                              const std::string& name) {
  YAML::Node seq = root[list];
  if (seq && seq.IsSequence()) {
    for (const YAML::Node& entry : seq) {
      if (entry.IsMap() && scalar(entry, "name") == name) {
        YAML::Node body = entry[field];
        if (body && body.IsMap()) return body;
        if (!body || body.IsNull()) return YAML::Node(YAML::NodeType::Map);
        return error(
            StatusCode::kInvalidArgument,
            std::string("kubeconfig: ") + list + " entry \"" + name + "\" has no map " + field);
      }
    }
  }
  return error(StatusCode::kInvalidArgument,
               std::string("kubeconfig: no ") + field + " named \"" + name + "\"");
}

std::string resolve(const std::string& base_dir, const std::string& path) {
  if (path.empty() || path.front() == '/' || base_dir.empty()) return path;
  return (std::filesystem::path(base_dir) / path).string();
}

// Fills `out` from "<key>-data" (base64) or "<key>" (a file path); data wins, as in client-go.
Status data_or_file(const YAML::Node& node, const std::string& key, const std::string& base_dir,
                    std::string* out) {
  std::string data = scalar(node, (key + "-data").c_str());
  if (!data.empty()) {
    auto decoded = base64_decode(data);
    if (!decoded.is_ok()) {
      return error(StatusCode::kInvalidArgument,
                   "kubeconfig: " + key + "-data: " + decoded.status().message());
    }
    *out = std::move(decoded).value();
    return Status::ok();
  }
  std::string file = scalar(node, key.c_str());
  if (!file.empty()) {
    auto content = pki::read_file(resolve(base_dir, file));
    if (!content.is_ok()) {
      return error(content.status().code(),
                   "kubeconfig: " + key + ": " + content.status().message());
    }
    *out = std::move(content).value();
  }
  return Status::ok();
}

Result<Kubeconfig> parse_impl(const std::string& yaml, const std::string& base_dir,
                              const std::string& context_override) {
  YAML::Node root = YAML::Load(yaml);
  if (!root.IsMap()) return error(StatusCode::kInvalidArgument, "kubeconfig: not a YAML map");
  Kubeconfig config;
  config.context_name =
      context_override.empty() ? scalar(root, "current-context") : context_override;
  if (config.context_name.empty()) {
    return error(StatusCode::kInvalidArgument, "kubeconfig: no current-context");
  }
  SKIFF_ASSIGN_OR_RETURN(YAML::Node context,
                         find_named(root, "contexts", "context", config.context_name));
  config.cluster_name = scalar(context, "cluster");
  config.user_name = scalar(context, "user");
  config.namespace_ = scalar(context, "namespace");
  if (config.cluster_name.empty()) {
    return error(StatusCode::kInvalidArgument,
                 "kubeconfig: context \"" + config.context_name + "\" names no cluster");
  }
  SKIFF_ASSIGN_OR_RETURN(YAML::Node cluster,
                         find_named(root, "clusters", "cluster", config.cluster_name));
  config.server = scalar(cluster, "server");
  if (config.server.empty()) {
    return error(StatusCode::kInvalidArgument,
                 "kubeconfig: cluster \"" + config.cluster_name + "\" has no server");
  }
  config.tls_server_name = scalar(cluster, "tls-server-name");
  config.insecure_skip_tls_verify = scalar(cluster, "insecure-skip-tls-verify") == "true";
  SKIFF_RETURN_IF_ERROR(
      data_or_file(cluster, "certificate-authority", base_dir, &config.certificate_authority_data));
  if (!config.user_name.empty()) {
    SKIFF_ASSIGN_OR_RETURN(YAML::Node user, find_named(root, "users", "user", config.user_name));
    SKIFF_RETURN_IF_ERROR(
        data_or_file(user, "client-certificate", base_dir, &config.client_certificate_data));
    SKIFF_RETURN_IF_ERROR(data_or_file(user, "client-key", base_dir, &config.client_key_data));
    config.token = scalar(user, "token");
    std::string token_file = scalar(user, "tokenFile");
    if (config.token.empty() && !token_file.empty()) {
      auto content = pki::read_file(resolve(base_dir, token_file));
      if (!content.is_ok()) {
        return error(content.status().code(),
                     "kubeconfig: tokenFile: " + content.status().message());
      }
      std::string token = std::move(content).value();
      while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) {
        token.pop_back();
      }
      config.token = std::move(token);
    }
  }
  if (config.client_certificate_data.empty() != config.client_key_data.empty()) {
    return error(StatusCode::kInvalidArgument,
                 "kubeconfig: user \"" + config.user_name +
                     "\" has a client certificate without a key or a key without a certificate");
  }
  return config;
}

}  // namespace

std::string base64_encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    uint32_t v = (static_cast<unsigned char>(data[i]) << 16) |
                 (static_cast<unsigned char>(data[i + 1]) << 8) |
                 static_cast<unsigned char>(data[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < data.size()) {
    uint32_t v = static_cast<unsigned char>(data[i]) << 16;
    if (i + 1 < data.size()) v |= static_cast<unsigned char>(data[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < data.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  int padding = 0;
  size_t symbols = 0;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      ++symbols;
      continue;
    }
    if (padding > 0) return error(StatusCode::kInvalidArgument, "invalid base64: data after '='");
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+') {
      v = 62;
    } else if (c == '/') {
      v = 63;
    } else {
      return error(StatusCode::kInvalidArgument, "invalid base64 character");
    }
    ++symbols;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (padding > 2 || symbols % 4 != 0) {
    return error(StatusCode::kInvalidArgument, "invalid base64: bad length or padding");
  }
  return out;
}

std::string render_kubeconfig(const Kubeconfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "apiVersion" << YAML::Value << "v1";
  out << YAML::Key << "kind" << YAML::Value << "Config";

  out << YAML::Key << "clusters" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  out << YAML::Key << "cluster" << YAML::Value << YAML::BeginMap;
  if (!c.certificate_authority_data.empty()) {
    out << YAML::Key << "certificate-authority-data" << YAML::Value
        << base64_encode(c.certificate_authority_data);
  }
  if (c.insecure_skip_tls_verify) {
    out << YAML::Key << "insecure-skip-tls-verify" << YAML::Value << true;
  }
  out << YAML::Key << "server" << YAML::Value << c.server;
  if (!c.tls_server_name.empty()) {
    out << YAML::Key << "tls-server-name" << YAML::Value << c.tls_server_name;
  }
  out << YAML::EndMap;
  out << YAML::Key << "name" << YAML::Value << c.cluster_name;
  out << YAML::EndMap << YAML::EndSeq;

  out << YAML::Key << "contexts" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  out << YAML::Key << "context" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "cluster" << YAML::Value << c.cluster_name;
  if (!c.namespace_.empty()) out << YAML::Key << "namespace" << YAML::Value << c.namespace_;
  out << YAML::Key << "user" << YAML::Value << c.user_name;
  out << YAML::EndMap;
  out << YAML::Key << "name" << YAML::Value << c.context_name;
  out << YAML::EndMap << YAML::EndSeq;

  out << YAML::Key << "current-context" << YAML::Value << c.context_name;
  out << YAML::Key << "preferences" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::EndMap;

  out << YAML::Key << "users" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << c.user_name;
  out << YAML::Key << "user" << YAML::Value << YAML::BeginMap;
  if (!c.client_certificate_data.empty()) {
    out << YAML::Key << "client-certificate-data" << YAML::Value
        << base64_encode(c.client_certificate_data);
  }
  if (!c.client_key_data.empty()) {
    out << YAML::Key << "client-key-data" << YAML::Value << base64_encode(c.client_key_data);
  }
  if (!c.token.empty()) out << YAML::Key << "token" << YAML::Value << c.token;
  out << YAML::EndMap;
  out << YAML::EndMap << YAML::EndSeq;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

Status write_kubeconfig(const std::string& path, const Kubeconfig& config) {
  return pki::write_file_atomic(path, render_kubeconfig(config), 0600);
}

Result<Kubeconfig> parse_kubeconfig(const std::string& yaml, const std::string& base_dir,
                                    const std::string& context) {
  try {
    return parse_impl(yaml, base_dir, context);
  } catch (const std::exception& e) {
    return error(StatusCode::kInvalidArgument, std::string("kubeconfig: ") + e.what());
  }
}

Result<Kubeconfig> load_kubeconfig(const std::string& path, const std::string& context) {
  SKIFF_ASSIGN_OR_RETURN(std::string yaml, pki::read_file(path));
  auto config = parse_kubeconfig(yaml, std::filesystem::path(path).parent_path().string(), context);
  if (!config.is_ok()) {
    return error(config.status().code(), path + ": " + config.status().message());
  }
  return config;
}

}  // namespace skiff
