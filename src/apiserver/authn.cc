#include "apiserver/authn.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <unordered_set>

#include "base/pki.h"

namespace skiff::apiserver {
namespace {

std::array<unsigned char, 32> sha256(std::string_view data) {
  std::array<unsigned char, 32> out{};
  unsigned int len = 0;
  SKIFF_CHECK(EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) == 1 &&
                  len == out.size(),
              "SHA-256 failed");
  return out;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r' || s[b] == '\n')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r' || s[e - 1] == '\n')) {
    --e;
  }
  return std::string(s.substr(b, e - b));
}

// One CSV record (Go encoding/csv semantics with TrimLeadingSpace, no comments, no lazy quotes).
struct Record {
  int line = 0;  // line the record starts on (1-based)
  std::vector<std::string> fields;
};

Result<std::vector<Record>> parse_csv(std::string_view in, const std::string& source) {
  std::vector<Record> records;
  size_t pos = 0;
  int line = 1;
  auto fail = [&](int at, const std::string& what) {
    return error(StatusCode::kInvalidArgument, source + ":" + std::to_string(at) + ": " + what);
  };
  while (pos < in.size()) {
    // Blank lines (only whitespace-free "\n" or "\r\n") are skipped, as in encoding/csv.
    if (in[pos] == '\n') {
      ++pos;
      ++line;
      continue;
    }
    if (in[pos] == '\r' && pos + 1 < in.size() && in[pos + 1] == '\n') {
      pos += 2;
      ++line;
      continue;
    }
    Record rec;
    rec.line = line;
    bool end_of_record = false;
    while (!end_of_record) {
      while (pos < in.size() && (in[pos] == ' ' || in[pos] == '\t')) ++pos;
      std::string field;
      if (pos < in.size() && in[pos] == '"') {
        ++pos;
        int quote_line = line;
        bool closed = false;
        while (pos < in.size()) {
          char c = in[pos];
          if (c == '"') {
            if (pos + 1 < in.size() && in[pos + 1] == '"') {
              field += '"';
              pos += 2;
              continue;
            }
            ++pos;
            closed = true;
            break;
          }
          if (c == '\n') ++line;
          if (c == '\r' && pos + 1 < in.size() && in[pos + 1] == '\n') {
            ++pos;  // "\r\n" inside a quoted field becomes "\n"
            continue;
          }
          field += c;
          ++pos;
        }
        if (!closed) return fail(quote_line, "unterminated quoted field");
        if (pos < in.size() && in[pos] != ',' && in[pos] != '\n' &&
            !(in[pos] == '\r' && pos + 1 < in.size() && in[pos + 1] == '\n') &&
            !(in[pos] == '\r' && pos + 1 == in.size())) {
          return fail(line, "extraneous or missing \" in quoted field");
        }
      } else {
        while (pos < in.size() && in[pos] != ',' && in[pos] != '\n') {
          if (in[pos] == '"') return fail(line, "bare \" in unquoted field (quote the field)");
          if (in[pos] == '\r' && (pos + 1 == in.size() || in[pos + 1] == '\n')) {
            ++pos;
            continue;
          }
          field += in[pos++];
        }
      }
      rec.fields.push_back(std::move(field));
      if (pos < in.size() && in[pos] == '\r') ++pos;
      if (pos >= in.size()) {
        end_of_record = true;
      } else if (in[pos] == ',') {
        ++pos;
      } else {  // '\n'
        ++pos;
        ++line;
        end_of_record = true;
      }
    }
    records.push_back(std::move(rec));
  }
  return records;
}

}  // namespace

UserInfo anonymous_user() {
  return UserInfo{kAnonymousUser, "", {kUnauthenticatedGroup}};
}

Result<TokenFile> TokenFile::load(const std::string& path) {
  auto content = pki::read_file(path);
  if (!content.is_ok()) {
    return error(content.status().code(), "token auth file: " + content.status().message());
  }
  return parse(*content, path);
}

Result<TokenFile> TokenFile::parse(std::string_view content, const std::string& source) {
  SKIFF_ASSIGN_OR_RETURN(std::vector<Record> records, parse_csv(content, source));
  TokenFile file;
  std::unordered_set<std::string> seen;
  for (Record& rec : records) {
    auto fail = [&](const std::string& what) {
      return error(StatusCode::kInvalidArgument,
                   source + ":" + std::to_string(rec.line) + ": " + what);
    };
    if (rec.fields.size() < 3) {
      return fail("need at least 3 columns (token,user,uid[,\"groups\"]), found " +
                  std::to_string(rec.fields.size()));
    }
    std::string token = trim(rec.fields[0]);
    if (token.empty()) return fail("empty token");
    std::string user = trim(rec.fields[1]);
    if (user.empty()) return fail("empty user name");
    Entry entry{sha256(token), UserInfo{std::move(user), trim(rec.fields[2]), {}}};
    if (!seen.insert(std::string(entry.digest.begin(), entry.digest.end())).second) {
      return fail("duplicate token (already used by an earlier line)");
    }
    if (rec.fields.size() >= 4) {
      std::string_view groups = rec.fields[3];
      size_t start = 0;
      while (start <= groups.size()) {
        size_t comma = groups.find(',', start);
        if (comma == std::string_view::npos) comma = groups.size();
        std::string group = trim(groups.substr(start, comma - start));
        if (!group.empty()) entry.user.groups.push_back(std::move(group));
        start = comma + 1;
      }
    }
    file.entries_.push_back(std::move(entry));
  }
  return file;
}

const UserInfo* TokenFile::lookup(std::string_view token) const {
  const std::array<unsigned char, 32> digest = sha256(token);
  const UserInfo* found = nullptr;
  for (const Entry& e : entries_) {
    // Every entry is compared; the branch only picks which pointer to keep.
    bool match = CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0;
    found = match ? &e.user : found;
  }
  return found;
}

Result<UserInfo> user_from_certificate(X509* cert) {
  SKIFF_ASSIGN_OR_RETURN(pki::CertInfo info, pki::inspect_certificate(cert));
  if (info.common_name.empty()) {
    return error(StatusCode::kUnauthenticated, "client certificate has no common name");
  }
  return UserInfo{std::move(info.common_name), "", std::move(info.organizations)};
}

namespace {

void add_authenticated_group(UserInfo* user) {
  if (std::find(user->groups.begin(), user->groups.end(), kAuthenticatedGroup) ==
      user->groups.end()) {
    user->groups.emplace_back(kAuthenticatedGroup);
  }
}

AuthnResult rejected(std::string reason) {
  AuthnResult r;
  r.outcome = AuthnResult::Outcome::kRejected;
  r.reason = std::move(reason);
  return r;
}

AuthnResult authenticated(UserInfo user) {
  AuthnResult r;
  r.outcome = AuthnResult::Outcome::kAuthenticated;
  add_authenticated_group(&user);
  r.user = std::move(user);
  return r;
}

}  // namespace

AuthnResult Authenticator::authenticate(X509* peer_cert, std::string_view authorization) const {
  std::string cert_error;
  if (peer_cert != nullptr) {
    // The chain was verified at the handshake; the connection may have outlived the certificate.
    if (X509_cmp_current_time(X509_get0_notAfter(peer_cert)) < 0) {
      cert_error = "client certificate has expired";
    } else {
      auto user = user_from_certificate(peer_cert);
      if (user.is_ok()) return authenticated(std::move(user).value());
      cert_error = user.status().message();
    }
  }

  // Upstream's bearer parsing: trim, split on single spaces, scheme compared case-insensitively;
  // anything that is not "Bearer <token>" is no token at all.
  std::string header = trim(authorization);
  std::string token;
  if (!header.empty()) {
    size_t space = header.find(' ');
    if (space != std::string::npos) {
      std::string scheme = header.substr(0, space);
      std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (scheme == "bearer") {
        size_t end = header.find(' ', space + 1);
        token = header.substr(space + 1,
                              end == std::string::npos ? std::string::npos : end - space - 1);
      }
    }
  }
  if (!token.empty()) {
    if (const UserInfo* user = tokens_.lookup(token)) return authenticated(*user);
    if (!cert_error.empty()) return rejected(cert_error + "; invalid bearer token");
    return rejected("invalid bearer token");
  }
  if (!cert_error.empty()) return rejected(cert_error);
  return AuthnResult{};
}

AuthnResult Authenticator::authenticate_connection(const SSL* ssl,
                                                   std::string_view authorization) const {
  X509* cert = ssl != nullptr ? SSL_get0_peer_certificate(ssl) : nullptr;
  if (cert != nullptr && SSL_get_verify_result(ssl) != X509_V_OK) {
    return rejected(std::string("client certificate failed verification: ") +
                    X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
  }
  return authenticate(cert, authorization);
}

}  // namespace skiff::apiserver
