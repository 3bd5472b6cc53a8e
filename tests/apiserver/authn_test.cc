#include "apiserver/authn.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <chrono>
#include <cstdio>

#include "base/pki.h"
#include "base/tls_test_util.h"
#include "httpserver/server_tls.h"

namespace skiff::apiserver {
namespace {

using tlstest::load_pem;
using tlstest::ScratchDir;
using tlstest::spit;
using tlstest::X509Ptr;
using Outcome = AuthnResult::Outcome;

std::vector<std::string> with_authenticated(std::vector<std::string> groups) {
  groups.push_back(kAuthenticatedGroup);
  return groups;
}

// ----------------------------------------------------------------------------------------------
// Token file

TEST(TokenFileTest, ParsesUpstreamFormat) {
  auto file = TokenFile::parse(
      "tok1,alice,uid1\n"
      "\n"
      "tok2,bob,uid2,\"system:masters,devs\"\r\n"
      " tok3 , carol ,uid3,\"a \"\"quoted\"\" group, spaced ,,\",extra,columns\n"
      "tok4,dave,uid4,\"line\none\"\n"
      "tok5,erin,,\n");
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  EXPECT_EQ(file->size(), 5u);
  const UserInfo* alice = file->lookup("tok1");
  ASSERT_NE(alice, nullptr);
  EXPECT_EQ(alice->name, "alice");
  EXPECT_EQ(alice->uid, "uid1");
  EXPECT_TRUE(alice->groups.empty());
  const UserInfo* bob = file->lookup("tok2");
  ASSERT_NE(bob, nullptr);
  EXPECT_EQ(bob->groups, (std::vector<std::string>{"system:masters", "devs"}));
  const UserInfo* carol = file->lookup("tok3");
  ASSERT_NE(carol, nullptr);
  EXPECT_EQ(carol->name, "carol");
  EXPECT_EQ(carol->groups, (std::vector<std::string>{"a \"quoted\" group", "spaced"}));
  const UserInfo* dave = file->lookup("tok4");
  ASSERT_NE(dave, nullptr);
  EXPECT_EQ(dave->groups, (std::vector<std::string>{"line\none"}));
  ASSERT_NE(file->lookup("tok5"), nullptr);
  EXPECT_EQ(file->lookup("tok5")->uid, "");

  EXPECT_EQ(file->lookup("tok"), nullptr);
  EXPECT_EQ(file->lookup("tok11"), nullptr);
  EXPECT_EQ(file->lookup(""), nullptr);
  EXPECT_EQ(file->lookup("TOK1"), nullptr);
}

TEST(TokenFileTest, RejectsMalformedLinesWithTheirLineNumber) {
  struct Case {
    const char* content;
    const char* expect;  // substring of the error
  };
  const Case cases[] = {
      {"tok1,alice,uid1\ntok2,bob\n", "tokens.csv:2: need at least 3 columns"},
      {"tok1\n", "tokens.csv:1: need at least 3 columns"},
      {"ok,a,1\n\n,user,uid\n", "tokens.csv:3: empty token"},
      {"  ,user,uid\n", "tokens.csv:1: empty token"},
      {"tok,,uid\n", "tokens.csv:1: empty user name"},
      {"tok,user,uid,\"unterminated\n", "tokens.csv:1: unterminated quoted field"},
      {"to\"k,user,uid\n", "tokens.csv:1: bare \""},
      {"\"tok\"x,user,uid\n", "tokens.csv:1: extraneous or missing \""},
      {"a,u1,1\nb,u2,2\na,u3,3\n", "tokens.csv:3: duplicate token"},
      {"a,u1,1,\"g1,\ng2\"\nb\n", "tokens.csv:3: need at least 3 columns"},
  };
  for (const Case& c : cases) {
    auto file = TokenFile::parse(c.content, "tokens.csv");
    ASSERT_FALSE(file.is_ok()) << c.content;
    EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(file.status().message().find(c.expect), std::string::npos)
        << "content: " << c.content << "\nerror: " << file.status().message();
  }
}

TEST(TokenFileTest, LoadsFromDisk) {
  ScratchDir tmp;
  spit(tmp.sub("tokens.csv"), "secret,admin,1,\"system:masters\"\n");
  auto file = TokenFile::load(tmp.sub("tokens.csv"));
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  ASSERT_NE(file->lookup("secret"), nullptr);
  auto missing = TokenFile::load(tmp.sub("nope.csv"));
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.csv"), std::string::npos);
  spit(tmp.sub("bad.csv"), "x\n");
  auto bad = TokenFile::load(tmp.sub("bad.csv"));
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("bad.csv:1:"), std::string::npos);
}

// ----------------------------------------------------------------------------------------------
// Authenticator

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = pki::CertificateAuthority::create("authn-test-ca");
    ASSERT_TRUE(ca.is_ok());
    ca_.emplace(std::move(ca).value());
    auto tokens = TokenFile::parse("good-token,tina,t-1,\"devs,ops\"\n");
    ASSERT_TRUE(tokens.is_ok());
    authn_.emplace(std::move(tokens).value());
  }
  X509Ptr client_cert(const std::string& cn, const std::vector<std::string>& groups,
                      pki::Days validity = pki::kLeafValidity) {
    auto pair = ca_->issue_client_cert(cn, groups, validity);
    EXPECT_TRUE(pair.is_ok()) << pair.status().to_string();
    return load_pem(pair->cert_pem);
  }

  std::optional<pki::CertificateAuthority> ca_;
  std::optional<Authenticator> authn_;
};

TEST_F(AuthenticatorTest, ClientCertificateMapsCnAndOrganizations) {
  X509Ptr admin = client_cert("system:admin", {"system:masters"});
  AuthnResult r = authn_->authenticate(admin.get(), "");
  ASSERT_EQ(r.outcome, Outcome::kAuthenticated) << r.reason;
  EXPECT_EQ(r.user.name, "system:admin");
  EXPECT_EQ(r.user.uid, "");
  EXPECT_EQ(r.user.groups, with_authenticated({"system:masters"}));

  X509Ptr node = client_cert("system:node:n1", {"system:nodes", "extra"});
  r = authn_->authenticate(node.get(), "");
  ASSERT_TRUE(r.authenticated());
  EXPECT_EQ(r.user.name, "system:node:n1");
  EXPECT_EQ(r.user.groups, with_authenticated({"system:nodes", "extra"}));

  // system:authenticated is not duplicated when the certificate already names it.
  X509Ptr dup = client_cert("u", {"system:authenticated"});
  r = authn_->authenticate(dup.get(), "");
  EXPECT_EQ(r.user.groups, std::vector<std::string>{"system:authenticated"});

  // The certificate wins over a token (valid or not), as in upstream's union order.
  r = authn_->authenticate(admin.get(), "Bearer good-token");
  EXPECT_EQ(r.user.name, "system:admin");
  r = authn_->authenticate(admin.get(), "Bearer wrong");
  EXPECT_EQ(r.user.name, "system:admin");

  auto direct = user_from_certificate(admin.get());
  ASSERT_TRUE(direct.is_ok());
  EXPECT_EQ(direct->groups, std::vector<std::string>{"system:masters"});
}

TEST_F(AuthenticatorTest, BadCertificatesAreRejected) {
  // A CA-signed certificate without a CN: rejected, unless a valid token is presented too.
  // (Signature and usage are the TLS layer's job; this only exercises the subject mapping.)
  X509Ptr no_cn(X509_new());
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  X509_NAME_add_entry_by_txt(X509_get_subject_name(no_cn.get()), "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("devs"), -1, -1, 0);
  X509_gmtime_adj(X509_getm_notBefore(no_cn.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(no_cn.get()), 3600);
  X509_set_pubkey(no_cn.get(), key);
  X509_sign(no_cn.get(), key, EVP_sha256());
  EVP_PKEY_free(key);
  AuthnResult r = authn_->authenticate(no_cn.get(), "");
  EXPECT_EQ(r.outcome, Outcome::kRejected);
  EXPECT_NE(r.reason.find("no common name"), std::string::npos) << r.reason;
  r = authn_->authenticate(no_cn.get(), "Bearer good-token");
  EXPECT_EQ(r.user.name, "tina");

  // A certificate past notAfter (a long-lived connection can outlive it).
  X509Ptr expired = client_cert("old", {}, pki::Days(-1));
  r = authn_->authenticate(expired.get(), "");
  EXPECT_EQ(r.outcome, Outcome::kRejected);
  EXPECT_NE(r.reason.find("expired"), std::string::npos) << r.reason;
  r = authn_->authenticate(expired.get(), "Bearer good-token");
  EXPECT_EQ(r.outcome, Outcome::kAuthenticated);
  EXPECT_EQ(r.user.name, "tina");
  r = authn_->authenticate(expired.get(), "Bearer bad-token");
  EXPECT_EQ(r.outcome, Outcome::kRejected);
}

TEST_F(AuthenticatorTest, BearerTokens) {
  AuthnResult r = authn_->authenticate(nullptr, "Bearer good-token");
  ASSERT_EQ(r.outcome, Outcome::kAuthenticated) << r.reason;
  EXPECT_EQ(r.user.name, "tina");
  EXPECT_EQ(r.user.uid, "t-1");
  EXPECT_EQ(r.user.groups, with_authenticated({"devs", "ops"}));
  EXPECT_TRUE(authn_->authenticate(nullptr, "bearer good-token").authenticated());
  EXPECT_TRUE(authn_->authenticate(nullptr, "  BEARER good-token  ").authenticated());

  EXPECT_EQ(authn_->authenticate(nullptr, "Bearer bad-token").outcome, Outcome::kRejected);
  EXPECT_EQ(authn_->authenticate(nullptr, "Bearer good-token-x").outcome, Outcome::kRejected);
  // Not a bearer credential at all: treated as no credentials, like upstream.
  EXPECT_EQ(authn_->authenticate(nullptr, "").outcome, Outcome::kNoCredentials);
  EXPECT_EQ(authn_->authenticate(nullptr, "Bearer").outcome, Outcome::kNoCredentials);
  EXPECT_EQ(authn_->authenticate(nullptr, "Bearer  good-token").outcome, Outcome::kNoCredentials);
  EXPECT_EQ(authn_->authenticate(nullptr, "Basic Zm9vOmJhcg==").outcome, Outcome::kNoCredentials);

  // Without a token file every bearer token is rejected.
  Authenticator no_tokens;
  EXPECT_EQ(no_tokens.authenticate(nullptr, "Bearer good-token").outcome, Outcome::kRejected);

  UserInfo anon = anonymous_user();
  EXPECT_EQ(anon.name, "system:anonymous");
  EXPECT_EQ(anon.groups, std::vector<std::string>{"system:unauthenticated"});
}

TEST_F(AuthenticatorTest, MeasureAuthenticate) {
  std::string content;
  for (int i = 0; i < 1000; ++i) {
    content += "token-" + std::to_string(i) + ",user" + std::to_string(i) + ",uid,\"g\"\n";
  }
  Authenticator big(std::move(TokenFile::parse(content)).value());
  X509Ptr admin = client_cert("system:admin", {"system:masters"});
  constexpr int kIterations = 20000;
  auto time_it = [&](auto fn) {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kIterations; ++i) fn();
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
               .count() /
           kIterations;
  };
  double cert_us = time_it([&] { (void)big.authenticate(admin.get(), ""); });
  double token_us = time_it([&] { (void)big.authenticate(nullptr, "Bearer token-999"); });
  double one_us = time_it([&] { (void)authn_->authenticate(nullptr, "Bearer good-token"); });
  std::printf(
      "[ measure ] authenticate: client cert %.2f us, token (1000-entry file) %.2f us, "
      "token (1-entry file) %.2f us\n",
      cert_us, token_us, one_us);
}

// ----------------------------------------------------------------------------------------------
// configure_server_tls: real handshakes over an in-memory BIO pair.

struct SslCtxFree {
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
};
struct SslFree {
  void operator()(SSL* p) const { SSL_free(p); }
};

struct Handshake {
  bool ok = false;
  std::unique_ptr<SSL, SslFree> server;
  std::unique_ptr<SSL, SslFree> client;
};

Handshake handshake(SSL_CTX* server_ctx, SSL_CTX* client_ctx, const char* sni) {
  Handshake h;
  h.server.reset(SSL_new(server_ctx));
  h.client.reset(SSL_new(client_ctx));
  BIO* server_bio = nullptr;
  BIO* client_bio = nullptr;
  BIO_new_bio_pair(&server_bio, 0, &client_bio, 0);
  SSL_set_bio(h.server.get(), server_bio, server_bio);
  SSL_set_bio(h.client.get(), client_bio, client_bio);
  SSL_set_accept_state(h.server.get());
  SSL_set_connect_state(h.client.get());
  SSL_set_tlsext_host_name(h.client.get(), sni);
  SSL_set1_host(h.client.get(), sni);
  bool server_done = false, client_done = false;
  for (int i = 0; i < 100 && !(server_done && client_done); ++i) {
    if (!client_done) {
      int rc = SSL_do_handshake(h.client.get());
      if (rc == 1) {
        client_done = true;
      } else if (int e = SSL_get_error(h.client.get(), rc);
                 e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        break;
      }
    }
    if (!server_done) {
      int rc = SSL_do_handshake(h.server.get());
      if (rc == 1) {
        server_done = true;
      } else if (int e = SSL_get_error(h.server.get(), rc);
                 e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        break;
      }
    }
  }
  // TLS 1.3: the server verifies the client's certificate after the client considers the
  // handshake done; exchange a byte so a rejected certificate surfaces on both sides.
  if (server_done && client_done) {
    char byte = 'x';
    char got = 0;
    bool sent = SSL_write(h.client.get(), &byte, 1) == 1;
    bool read = sent && SSL_read(h.server.get(), &got, 1) == 1;
    h.ok = read && got == 'x';
  }
  ERR_clear_error();
  return h;
}

std::unique_ptr<SSL_CTX, SslCtxFree> client_ctx(const pki::PkiPaths& p, const std::string& cert,
                                                const std::string& key) {
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_load_verify_locations(ctx.get(), p.ca_cert.c_str(), nullptr);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (!cert.empty()) {
    EXPECT_EQ(SSL_CTX_use_certificate_file(ctx.get(), cert.c_str(), SSL_FILETYPE_PEM), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM), 1);
  }
  return ctx;
}

TEST(ServerTlsTest, ClientCertificatesAreOptionalButVerified) {
  ScratchDir tmp;
  pki::PkiOptions options;
  options.hostname = "test-host";
  auto state = pki::ensure_pki(tmp.sub("tls"), options);
  ASSERT_TRUE(state.is_ok()) << state.status().to_string();
  const pki::PkiPaths& p = state->paths;
  std::unique_ptr<SSL_CTX, SslCtxFree> server_ctx(SSL_CTX_new(TLS_server_method()));
  Status st =
      http::configure_server_tls(server_ctx.get(), {p.server_cert, p.server_key, p.ca_cert});
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  Authenticator authn(std::move(TokenFile::parse("tok,tina,1\n")).value());

  {  // Admin certificate: authenticated from the verified peer certificate.
    auto ctx = client_ctx(p, p.admin_cert, p.admin_key);
    const unsigned char alpn[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ctx.get(), alpn, sizeof(alpn));
    Handshake h = handshake(server_ctx.get(), ctx.get(), "localhost");
    ASSERT_TRUE(h.ok);
    AuthnResult r = authn.authenticate_connection(h.server.get(), "");
    ASSERT_TRUE(r.authenticated()) << r.reason;
    EXPECT_EQ(r.user.name, "system:admin");
    EXPECT_EQ(r.user.groups, with_authenticated({"system:masters"}));
    const unsigned char* proto = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(h.server.get(), &proto, &len);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(proto), len), "http/1.1");
    EXPECT_GE(SSL_version(h.server.get()), TLS1_2_VERSION);
  }
  {  // No client certificate: the handshake succeeds; tokens and anonymous reach HTTP.
    auto ctx = client_ctx(p, "", "");
    Handshake h = handshake(server_ctx.get(), ctx.get(), "kubernetes.default.svc");
    ASSERT_TRUE(h.ok);
    EXPECT_EQ(authn.authenticate_connection(h.server.get(), "").outcome, Outcome::kNoCredentials);
    AuthnResult r = authn.authenticate_connection(h.server.get(), "Bearer tok");
    ASSERT_TRUE(r.authenticated());
    EXPECT_EQ(r.user.name, "tina");
  }
  {  // A client certificate from another CA completes the handshake (as upstream's server does)
     // but is rejected by authentication, so the request gets 401 rather than a TLS alert.
    ScratchDir other;
    auto other_state = pki::ensure_pki(other.sub("tls"), options);
    ASSERT_TRUE(other_state.is_ok());
    auto ctx = client_ctx(p, other_state->paths.admin_cert, other_state->paths.admin_key);
    auto h = handshake(server_ctx.get(), ctx.get(), "localhost");
    ASSERT_TRUE(h.ok);
    EXPECT_EQ(authn.authenticate_connection(h.server.get(), "").outcome, Outcome::kRejected);
    // Not even a valid token makes an untrusted certificate count.
    EXPECT_EQ(authn.authenticate_connection(h.server.get(), "Bearer not-a-token").outcome,
              Outcome::kRejected);
  }
  {  // A certificate without clientAuth (the serving one) is not accepted as a client cert.
    auto ctx = client_ctx(p, p.server_cert, p.server_key);
    auto h = handshake(server_ctx.get(), ctx.get(), "localhost");
    ASSERT_TRUE(h.ok);
    EXPECT_EQ(authn.authenticate_connection(h.server.get(), "").outcome, Outcome::kRejected);
  }
  {  // TLS 1.1 is refused.
    auto ctx = client_ctx(p, "", "");
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx.get(), TLS1_1_VERSION);
    SSL_CTX_set_security_level(ctx.get(), 0);
    EXPECT_FALSE(handshake(server_ctx.get(), ctx.get(), "localhost").ok);
  }
  {  // The client checks the server name against the SANs.
    auto ctx = client_ctx(p, "", "");
    EXPECT_FALSE(handshake(server_ctx.get(), ctx.get(), "not-in-sans.example").ok);
  }
}

TEST(ServerTlsTest, BadFilesGiveClearErrors) {
  ScratchDir tmp;
  auto state = pki::ensure_pki(tmp.sub("tls"), pki::PkiOptions{});
  ASSERT_TRUE(state.is_ok());
  const pki::PkiPaths& p = state->paths;
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_server_method()));
  Status missing = http::configure_server_tls(ctx.get(), {tmp.sub("nope.crt"), p.server_key, ""});
  EXPECT_FALSE(missing.is_ok());
  EXPECT_NE(missing.message().find("nope.crt"), std::string::npos) << missing.message();
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx2(SSL_CTX_new(TLS_server_method()));
  Status mismatch = http::configure_server_tls(ctx2.get(), {p.server_cert, p.admin_key, ""});
  EXPECT_FALSE(mismatch.is_ok());
  std::printf("[ info    ] mismatched key error: %s\n", mismatch.to_string().c_str());
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx3(SSL_CTX_new(TLS_server_method()));
  Status no_ca =
      http::configure_server_tls(ctx3.get(), {p.server_cert, p.server_key, tmp.sub("none.crt")});
  EXPECT_FALSE(no_ca.is_ok());
  EXPECT_NE(no_ca.message().find("none.crt"), std::string::npos);
}

}  // namespace
}  // namespace skiff::apiserver
