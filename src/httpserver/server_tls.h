#pragma once

// TLS settings for an HTTPS listener (the API server's, the kubelet's), applied to an OpenSSL
// SSL_CTX so that callers using boost::asio::ssl::context pass ctx.native_handle() and this header
// stays free of Boost.
//
// Thread-safety: configure the context once, before any connection uses it.

#include <openssl/types.h>

#include <string>

#include "base/status.h"

namespace skiff::http {

struct ServerTlsFiles {
  std::string cert_file;       // serving certificate (PEM; may hold the chain after the leaf)
  std::string key_file;        // its private key (PEM)
  std::string client_ca_file;  // CA for client certificates; "" disables client certificates
};

// TLS 1.2 minimum; no renegotiation or compression; server cipher preference; ALPN picks
// "http/1.1" when offered (so HTTP/2-capable clients such as kubectl settle on HTTP/1.1). With a
// client CA: SSL_VERIFY_PEER without FAIL_IF_NO_PEER_CERT, so a client certificate is verified
// (chain to the CA, clientAuth usage, validity) when sent and the handshake fails on a bad one,
// while clients without one (tokens, anonymous health checks) still reach the HTTP layer; the CA's
// name is advertised in the CertificateRequest; a session id context is set so resumed sessions
// keep working with client verification.
Status configure_server_tls(SSL_CTX* ctx, const ServerTlsFiles& files);

}  // namespace skiff::http
