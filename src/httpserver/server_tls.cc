#include "httpserver/server_tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstring>

#include "base/pki.h"

namespace skiff::http {
namespace {

Status tls_error(const std::string& what) {
  return error(StatusCode::kInvalidArgument, what + ": " + pki::openssl_errors());
}

int select_http11(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                  unsigned int inlen, void*) {
  static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof(kHttp11), in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;  // no common protocol: carry on without ALPN
}

}  // namespace

Status configure_server_tls(SSL_CTX* ctx, const ServerTlsFiles& files) {
  if (ctx == nullptr) return error(StatusCode::kInvalidArgument, "no SSL_CTX");
  ERR_clear_error();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
    return tls_error("setting the minimum TLS version");
  }
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate_chain_file(ctx, files.cert_file.c_str()) != 1) {
    return tls_error("loading serving certificate " + files.cert_file);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, files.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return tls_error("loading serving key " + files.key_file);
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return tls_error(files.key_file + " does not match " + files.cert_file);
  }
  SSL_CTX_set_alpn_select_cb(ctx, select_http11, nullptr);

  static constexpr unsigned char kSessionContext[] = "skiff";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof(kSessionContext) - 1);
  if (files.client_ca_file.empty()) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    return Status::ok();
  }
  if (SSL_CTX_load_verify_locations(ctx, files.client_ca_file.c_str(), nullptr) != 1) {
    return tls_error("loading client CA " + files.client_ca_file);
  }
  STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(files.client_ca_file.c_str());
  if (names == nullptr) return tls_error("reading CA names from " + files.client_ca_file);
  SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership
  // Clients' certificates are checked for the clientAuth purpose (OpenSSL's default on a server).
  // A certificate that fails verification still completes the handshake, as upstream's does:
  // the verification result stays on the connection and the request is answered 401 by the
  // authenticator, rather than a TLS alert the client reports as a transport error.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
  return Status::ok();
}

}  // namespace skiff::http
