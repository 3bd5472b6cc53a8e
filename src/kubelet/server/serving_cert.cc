#include "kubelet/server/serving_cert.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <set>

#include "base/log.h"
#include "base/pki.h"

namespace skiff::kubelet::server {
namespace {

// An IP literal in canonical text, or a DNS name in lower case.
std::string normalize_san(const std::string& san) {
  unsigned char buf[16];
  char text[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET, san.c_str(), buf) == 1) {
    return inet_ntop(AF_INET, buf, text, sizeof(text));
  }
  if (inet_pton(AF_INET6, san.c_str(), buf) == 1) {
    return inet_ntop(AF_INET6, buf, text, sizeof(text));
  }
  std::string out = san;
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::vector<std::string> wanted_sans(const ServingCertOptions& o) {
  std::vector<std::string> raw = {o.node_name, "localhost", "127.0.0.1", "::1"};
  raw.insert(raw.end(), o.sans.begin(), o.sans.end());
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const std::string& s : raw) {
    if (s.empty()) continue;
    std::string n = normalize_san(s);
    if (seen.insert(n).second) out.push_back(n);
  }
  return out;
}

// Why the existing files cannot be reused, or "" when they can.
std::string reuse_problem(const std::string& cert_file, const std::string& key_file,
                          const std::vector<std::string>& sans,
                          const pki::CertificateAuthority* ca) {
  Result<std::string> cert = pki::read_file(cert_file);
  if (!cert.is_ok()) return cert.status().message();
  Result<std::string> key = pki::read_file(key_file);
  if (!key.is_ok()) return key.status().message();
  Result<pki::CertInfo> info = pki::inspect_certificate_pem(*cert);
  if (!info.is_ok()) return "unreadable certificate: " + info.status().message();
  std::set<std::string> have;
  for (const std::string& d : info->dns_names) have.insert(normalize_san(d));
  for (const std::string& ip : info->ip_addresses) have.insert(normalize_san(ip));
  for (const std::string& s : sans) {
    if (!have.count(s)) return "it does not cover " + s;
  }
  if (info->not_after - std::chrono::system_clock::now() < pki::kRenewBefore) {
    return "it expires soon";
  }
  if (ca && !ca->signed_cert_pem(*cert)) return "it was not issued by the cluster CA";
  return "";
}

}  // namespace

Result<ServingCert> ensure_serving_cert(const ServingCertOptions& options) {
  if (options.cert_dir.empty()) {
    return Status(StatusCode::kInvalidArgument, "no certificate directory for the kubelet");
  }
  if (options.node_name.empty()) {
    return Status(StatusCode::kInvalidArgument, "no node name for the kubelet's certificate");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.cert_dir, ec);
  if (ec) {
    return Status(StatusCode::kInternal,
                  "creating certificate directory " + options.cert_dir + ": " + ec.message());
  }
  ServingCert out;
  out.cert_file = options.cert_dir + "/kubelet.crt";
  out.key_file = options.cert_dir + "/kubelet.key";

  std::optional<pki::CertificateAuthority> ca;
  if (!options.ca_cert_file.empty() && !options.ca_key_file.empty()) {
    SKIFF_ASSIGN_OR_RETURN(std::string ca_cert, pki::read_file(options.ca_cert_file));
    SKIFF_ASSIGN_OR_RETURN(std::string ca_key, pki::read_file(options.ca_key_file));
    SKIFF_ASSIGN_OR_RETURN(ca, pki::CertificateAuthority::from_pem(ca_cert, ca_key));
  }
  std::vector<std::string> sans = wanted_sans(options);
  std::string problem = reuse_problem(out.cert_file, out.key_file, sans, ca ? &*ca : nullptr);
  if (problem.empty()) {
    out.ca_signed = ca.has_value();
    return out;
  }

  pki::CertAndKey issued;
  std::string chain;
  if (ca) {
    SKIFF_ASSIGN_OR_RETURN(issued, ca->issue_serving_cert(options.node_name, sans));
    chain = issued.cert_pem;
    out.ca_signed = true;
  } else {
    int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    SKIFF_ASSIGN_OR_RETURN(
        pki::CertificateAuthority own,
        pki::CertificateAuthority::create(options.node_name + "-ca@" + std::to_string(now)));
    SKIFF_ASSIGN_OR_RETURN(issued, own.issue_serving_cert(options.node_name, sans));
    chain = issued.cert_pem + own.cert_pem();
  }
  SKIFF_RETURN_IF_ERROR(pki::write_file_atomic(out.key_file, issued.key_pem, 0600));
  SKIFF_RETURN_IF_ERROR(pki::write_file_atomic(out.cert_file, chain, 0644));
  out.issued = true;
  SKIFF_LOG_INFO("kubelet: issued serving certificate {} ({}; previous: {})", out.cert_file,
                 ca ? "signed by the cluster CA" : "self-signed", problem);
  return out;
}

}  // namespace skiff::kubelet::server
