#pragma once

// The kubelet's serving certificate for its HTTPS port (10250), kept in its certificate
// directory as kubelet.crt / kubelet.key like upstream's --cert-dir. With the cluster CA's key
// at hand (the `skiff server` case) the certificate is issued by the cluster CA, so the API
// server can verify it; otherwise the kubelet makes its own CA ("<node>-ca@<unix time>") and a
// certificate signed by it, and writes both into kubelet.crt (leaf first), as upstream's
// self-signed kubelet certificate does.
//
// Thread-safety: ensure_serving_cert() must not run concurrently for the same directory (it is
// meant for start-up); files are replaced atomically.

#include <string>
#include <vector>

#include "base/status.h"

namespace skiff::kubelet::server {

struct ServingCertOptions {
  std::string cert_dir;
  std::string node_name;
  // IP literals and DNS names the certificate must cover, besides node_name, "localhost",
  // 127.0.0.1 and ::1.
  std::vector<std::string> sans;
  // Both set: the certificate is issued by this CA (PEM files).
  std::string ca_cert_file;
  std::string ca_key_file;
};

struct ServingCert {
  std::string cert_file;
  std::string key_file;
  bool issued = false;     // written now (false: the existing files were reused)
  bool ca_signed = false;  // issued by the cluster CA
};

// Reuses the files in cert_dir when they parse, cover every SAN, are not within
// pki::kRenewBefore of expiry and (with a CA) were issued by the CA; otherwise issues new ones.
Result<ServingCert> ensure_serving_cert(const ServingCertOptions& options);

}  // namespace skiff::kubelet::server
