#pragma once

// Request authentication: who is calling, from the TLS client certificate (verified by the TLS
// layer) or a bearer token from a static token file (--token-auth-file).
//
// Thread-safety: TokenFile and Authenticator are immutable after construction; authenticate() is
// const and safe to call from any number of threads at once.

#include <openssl/types.h>

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "httpserver/http.h"

namespace skiff::apiserver {

inline constexpr char kAuthenticatedGroup[] = "system:authenticated";
inline constexpr char kUnauthenticatedGroup[] = "system:unauthenticated";
inline constexpr char kAnonymousUser[] = "system:anonymous";

using http::UserInfo;

// The user for requests that carry no credentials: system:anonymous in system:unauthenticated.
UserInfo anonymous_user();

// A static token file in upstream's CSV format, one record per line:
//   token,user,uid[,"group1,group2,..."]
// Fields follow RFC 4180 quoting ("" escapes a quote inside a quoted field, a quoted field may span
// lines); leading spaces of a field are ignored; blank lines are skipped; extra columns after the
// groups are ignored. Empty tokens or user names, fewer than three columns, bad quoting and
// duplicate tokens are errors naming the line.
class TokenFile {
 public:
  static Result<TokenFile> load(const std::string& path);
  // `source` names the content in error messages.
  static Result<TokenFile> parse(std::string_view content,
                                 const std::string& source = "token file");

  // The user for `token`, comparing in constant time against every entry (no early exit, no
  // length leak: SHA-256 digests are compared). Groups are as written (no system:authenticated).
  const UserInfo* lookup(std::string_view token) const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::array<unsigned char, 32> digest;
    UserInfo user;
  };
  std::vector<Entry> entries_;
};

struct AuthnResult {
  enum class Outcome {
    kAuthenticated,  // `user` is set (with system:authenticated in its groups)
    kNoCredentials,  // neither a client certificate nor a bearer token: anonymous
    kRejected,       // credentials were presented but are not valid: always 401
  };
  Outcome outcome = Outcome::kNoCredentials;
  UserInfo user;
  std::string reason;  // why kRejected, for the server's log (never sent to the client)

  bool authenticated() const { return outcome == Outcome::kAuthenticated; }
};

class Authenticator {
 public:
  // `tokens` may be empty (no --token-auth-file): bearer tokens are then rejected.
  explicit Authenticator(TokenFile tokens = TokenFile()) : tokens_(std::move(tokens)) {}

  // `peer_cert`: the client certificate the TLS layer verified against the client CA, or nullptr
  // (borrowed; not freed). `authorization`: the Authorization header value ("" when absent).
  // A certificate wins over a token (as upstream's union order: x509 before tokens); a valid
  // certificate maps CN -> user, each O -> a group. A certificate without a CN or past its
  // notAfter (the connection may outlive it) is rejected unless a valid token is also presented.
  // "Bearer <token>" (scheme case-insensitive) is looked up in the token file; other schemes
  // count as no credentials, like upstream.
  AuthnResult authenticate(X509* peer_cert, std::string_view authorization) const;

  // Convenience for a TLS connection: takes the peer certificate from `ssl` (the native handle of
  // the Beast/Asio stream) and rejects when the handshake's verification result is not OK.
  AuthnResult authenticate_connection(const SSL* ssl, std::string_view authorization) const;

 private:
  TokenFile tokens_;
};

// Maps a (verified) client certificate to a user: CN -> name, O -> groups. Does not add
// system:authenticated. kUnauthenticated when the CN is empty.
Result<UserInfo> user_from_certificate(X509* cert);

}  // namespace skiff::apiserver
