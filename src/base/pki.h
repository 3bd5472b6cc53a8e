#pragma once

// Cluster PKI: a self-signed CA, the API server's serving certificate and client certificates,
// kept as PEM files in one directory (OpenSSL 3, EVP APIs).
//
// Thread-safety: every function here is safe to call from any thread; CertificateAuthority is
// immutable after construction, so one instance may issue certificates from several threads at
// once. ensure_pki() must not run concurrently against the same directory (it is meant for server
// start-up; files are replaced atomically by rename, so readers never see a half-written file).

#include <openssl/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace skiff::pki {

enum class KeyType : uint8_t {
  kEcdsaP256,  // default: fast to generate, accepted by Go (kubectl), Python and curl
  kRsa2048,
};

using Days = std::chrono::duration<int64_t, std::ratio<86400>>;

inline constexpr Days kCaValidity{3650};
inline constexpr Days kLeafValidity{365};
// A leaf certificate is re-issued at start-up when it expires within this window.
inline constexpr Days kRenewBefore{90};

// A PEM certificate and the PEM (PKCS#8, unencrypted) private key that belongs to it.
struct CertAndKey {
  std::string cert_pem;
  std::string key_pem;
};

// What a certificate says, for checks and for mapping client certificates to users.
struct CertInfo {
  std::string common_name;                 // first CN of the subject ("" when none)
  std::vector<std::string> organizations;  // every O of the subject, in order
  std::vector<std::string> dns_names;      // SAN DNS entries, as written
  std::vector<std::string> ip_addresses;   // SAN IP entries, canonical text (inet_ntop)
  std::chrono::system_clock::time_point not_before;
  std::chrono::system_clock::time_point not_after;
  bool is_ca = false;
  std::string sha256_fingerprint;  // lowercase hex of the DER's SHA-256, no separators
};

// Reads a certificate's fields. Does not verify anything.
Result<CertInfo> inspect_certificate(X509* cert);
Result<CertInfo> inspect_certificate_pem(const std::string& pem);

// A CA that can sign certificates. Copies share the (immutable) OpenSSL objects.
class CertificateAuthority {
 public:
  // Generates a new self-signed CA (CN = common_name, basicConstraints CA:TRUE, keyCertSign).
  static Result<CertificateAuthority> create(const std::string& common_name,
                                             KeyType key_type = KeyType::kEcdsaP256,
                                             Days validity = kCaValidity);
  // Parses an existing CA; fails (kDataLoss) when either PEM does not parse, (kInvalidArgument)
  // when the certificate is not a CA or the key does not belong to it.
  static Result<CertificateAuthority> from_pem(const std::string& cert_pem,
                                               const std::string& key_pem);

  // A client certificate (ExtKeyUsage clientAuth): CN = user name, one O per group.
  Result<CertAndKey> issue_client_cert(const std::string& common_name,
                                       const std::vector<std::string>& groups,
                                       Days validity = kLeafValidity,
                                       KeyType key_type = KeyType::kEcdsaP256) const;
  // A serving certificate (ExtKeyUsage serverAuth) for `sans`: each entry is an IP literal
  // (v4 or v6) or a DNS name (wildcards like "*.example.com" allowed). Invalid entries fail
  // with kInvalidArgument.
  Result<CertAndKey> issue_serving_cert(const std::string& common_name,
                                        const std::vector<std::string>& sans,
                                        Days validity = kLeafValidity,
                                        KeyType key_type = KeyType::kEcdsaP256) const;

  // True when `cert` carries a signature made by this CA's key and names this CA as issuer.
  bool signed_cert(X509* cert) const;
  bool signed_cert_pem(const std::string& cert_pem) const;

  std::string cert_pem() const;
  std::string key_pem() const;
  X509* cert() const { return cert_.get(); }

 private:
  CertificateAuthority(std::shared_ptr<X509> cert, std::shared_ptr<EVP_PKEY> key)
      : cert_(std::move(cert)), key_(std::move(key)) {}
  Result<CertAndKey> issue(const std::string& common_name, const std::vector<std::string>& orgs,
                           const std::vector<std::string>& sans, bool server, Days validity,
                           KeyType key_type) const;

  std::shared_ptr<X509> cert_;
  std::shared_ptr<EVP_PKEY> key_;
};

struct PkiOptions {
  // --tls-san: extra DNS names or IP addresses for the serving certificate.
  std::vector<std::string> extra_sans;
  // The first IP of the service CIDR (the "kubernetes" service's ClusterIP); "" leaves it out.
  std::string service_ip = "10.43.0.1";
  // Adds every address of the host's interfaces (getifaddrs).
  bool include_interface_addresses = true;
  // The machine's name as a DNS SAN; "" means gethostname().
  std::string hostname;
  std::string ca_common_name;  // "" means "skiff-ca@<unix seconds>"
  std::string admin_user = "system:admin";
  std::vector<std::string> admin_groups = {"system:masters"};
  KeyType key_type = KeyType::kEcdsaP256;
  Days leaf_validity = kLeafValidity;
  Days renew_before = kRenewBefore;
};

// File names inside the PKI directory.
struct PkiPaths {
  explicit PkiPaths(const std::string& dir);
  std::string dir;
  std::string ca_cert;      // ca.crt
  std::string ca_key;       // ca.key     (0600)
  std::string server_cert;  // server.crt
  std::string server_key;   // server.key (0600)
  std::string admin_cert;   // admin.crt
  std::string admin_key;    // admin.key  (0600)
};

struct PkiState {
  PkiPaths paths;
  CertificateAuthority ca;
  std::vector<std::string> server_sans;  // the SANs the serving certificate was asked to cover
  bool ca_created = false;
  bool server_cert_issued = false;
  bool admin_cert_issued = false;
};

// The SANs the serving certificate must cover for `options`: localhost, kubernetes,
// kubernetes.default, kubernetes.default.svc, kubernetes.default.svc.cluster.local, the hostname,
// 127.0.0.1, ::1, every interface address, the service IP and options.extra_sans, normalized (DNS
// lower-cased, IPs canonical) and de-duplicated. Fails on an invalid extra SAN.
Result<std::vector<std::string>> server_sans(const PkiOptions& options);

// Creates `dir` (0700) and the PKI in it on first start; on later starts reuses the CA and the
// admin certificate and re-issues the serving certificate when its SANs do not cover
// server_sans(options), it expires within options.renew_before, it was not signed by the CA, or
// its key does not match. The admin certificate is likewise re-issued only when near expiry or
// not signed by the CA. A CA whose files exist but do not parse, or only one of whose two files
// exists, is an error (never overwritten); unreadable files are errors; a corrupt leaf file is
// logged and re-issued (it is derived material).
Result<PkiState> ensure_pki(const std::string& dir, const PkiOptions& options);

// Writes `data` to `path` atomically (temp file created with open(O_CREAT|O_EXCL, mode), fsync,
// rename), so key files never exist with a wider mode.
Status write_file_atomic(const std::string& path, const std::string& data, unsigned mode);
// Drains OpenSSL's thread-local error queue into one line.
std::string openssl_errors();

// Reads a whole file; kNotFound when it does not exist.
Result<std::string> read_file(const std::string& path);

}  // namespace skiff::pki
