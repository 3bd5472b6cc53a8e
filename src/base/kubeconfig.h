#pragma once

// Kubeconfig files: write the one skiff hands to kubectl (credentials embedded, mode 0600) and read
// one back for components started with --kubeconfig.
//
// Thread-safety: free functions without shared state; safe from any thread.

#include <string>

#include "base/status.h"

namespace skiff {

// One cluster + user + context, with the credential material decoded (PEM text, not base64).
struct Kubeconfig {
  std::string server;                      // e.g. https://127.0.0.1:6443
  std::string certificate_authority_data;  // PEM; empty = system roots
  std::string client_certificate_data;     // PEM
  std::string client_key_data;             // PEM
  std::string token;                       // bearer token
  std::string tls_server_name;             // overrides the name checked against the SANs
  bool insecure_skip_tls_verify = false;
  std::string cluster_name = "default";
  std::string user_name = "default";
  std::string context_name = "default";
  std::string namespace_;  // the context's namespace; empty = "default"
};

// Renders `config` as YAML with the PEM material embedded as base64 *-data fields.
std::string render_kubeconfig(const Kubeconfig& config);
// Writes render_kubeconfig(config) to `path` atomically, created with mode 0600.
Status write_kubeconfig(const std::string& path, const Kubeconfig& config);

// Parses kubeconfig YAML and resolves its current context (or `context` when not empty). The
// *-file variants (certificate-authority, client-certificate, client-key, tokenFile) are read from
// disk, relative paths resolved against `base_dir` (the kubeconfig's directory). Errors:
// kInvalidArgument for malformed YAML, a missing context/cluster/user or bad base64; the read
// error for a referenced file that cannot be read.
Result<Kubeconfig> parse_kubeconfig(const std::string& yaml, const std::string& base_dir,
                                    const std::string& context = "");
// Reads and parses the file at `path`.
Result<Kubeconfig> load_kubeconfig(const std::string& path, const std::string& context = "");

// RFC 4648 base64 with padding (the encoding kubeconfig *-data fields use).
std::string base64_encode(std::string_view data);
// Decodes standard base64; whitespace is ignored. kInvalidArgument on anything else.
Result<std::string> base64_decode(std::string_view text);

}  // namespace skiff
