#include "base/pki.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "base/tls_test_util.h"

namespace skiff::pki {
namespace {

using tlstest::load_pem;
using tlstest::ScratchDir;
using tlstest::slurp;
using tlstest::spit;
using tlstest::X509Ptr;

// Verifies `leaf_pem` against `ca_pem` with OpenSSL's own chain builder for `purpose`
// (X509_PURPOSE_SSL_SERVER / X509_PURPOSE_SSL_CLIENT). Returns the X509_V_* result.
int verify_chain(const std::string& ca_pem, const std::string& leaf_pem, int purpose) {
  X509Ptr ca = load_pem(ca_pem);
  X509Ptr leaf = load_pem(leaf_pem);
  if (!ca || !leaf) return -1;
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca.get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf.get(), nullptr);
  X509_STORE_CTX_set_purpose(ctx, purpose);
  X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx), X509_V_FLAG_X509_STRICT);
  int ok = X509_verify_cert(ctx);
  int err = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return err;
}

unsigned file_mode(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return 0xffff;
  return st.st_mode & 0777;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

PkiOptions test_options() {
  PkiOptions o;
  o.hostname = "node-a.example";
  o.extra_sans = {"api.example.com", "192.0.2.10"};
  return o;
}

TEST(PkiTest, FirstStartCreatesCaServerAndAdminCertificates) {
  ScratchDir tmp;
  std::string dir = tmp.sub("data/tls");
  auto start = std::chrono::steady_clock::now();
  auto state = ensure_pki(dir, test_options());
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(state.is_ok()) << state.status().to_string();
  std::printf("[ measure ] ensure_pki first start (ECDSA P-256, CA+server+admin): %.2f ms\n",
              std::chrono::duration<double, std::milli>(elapsed).count());
  EXPECT_TRUE(state->ca_created);
  EXPECT_TRUE(state->server_cert_issued);
  EXPECT_TRUE(state->admin_cert_issued);

  const PkiPaths& p = state->paths;
  EXPECT_EQ(file_mode(dir), 0700u);
  EXPECT_EQ(file_mode(p.ca_key), 0600u);
  EXPECT_EQ(file_mode(p.server_key), 0600u);
  EXPECT_EQ(file_mode(p.admin_key), 0600u);
  EXPECT_EQ(file_mode(p.ca_cert), 0644u);
  // No temp files left behind.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 6);

  std::string ca_pem = slurp(p.ca_cert);
  std::string server_pem = slurp(p.server_cert);
  std::string admin_pem = slurp(p.admin_cert);
  EXPECT_EQ(verify_chain(ca_pem, server_pem, X509_PURPOSE_SSL_SERVER), X509_V_OK);
  EXPECT_EQ(verify_chain(ca_pem, admin_pem, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  // Usages are separated: the admin certificate cannot serve, the serving one cannot log in.
  EXPECT_NE(verify_chain(ca_pem, admin_pem, X509_PURPOSE_SSL_SERVER), X509_V_OK);
  EXPECT_NE(verify_chain(ca_pem, server_pem, X509_PURPOSE_SSL_CLIENT), X509_V_OK);

  auto ca = inspect_certificate_pem(ca_pem);
  ASSERT_TRUE(ca.is_ok());
  EXPECT_TRUE(ca->is_ca);
  EXPECT_EQ(ca->common_name.rfind("skiff-ca@", 0), 0u) << ca->common_name;
  auto ca_days = std::chrono::duration_cast<Days>(ca->not_after - ca->not_before).count();
  EXPECT_GE(ca_days, 3649);
  EXPECT_LE(ca_days, 3651);

  auto server = inspect_certificate_pem(server_pem);
  ASSERT_TRUE(server.is_ok());
  EXPECT_FALSE(server->is_ca);
  for (const char* dns :
       {"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local", "node-a.example", "api.example.com"}) {
    EXPECT_TRUE(contains(server->dns_names, dns)) << dns;
  }
  for (const char* ip : {"127.0.0.1", "::1", "10.43.0.1", "192.0.2.10"}) {
    EXPECT_TRUE(contains(server->ip_addresses, ip)) << ip;
  }
  auto leaf_days = std::chrono::duration_cast<Days>(server->not_after - server->not_before).count();
  EXPECT_GE(leaf_days, 364);
  EXPECT_LE(leaf_days, 366);
  // OpenSSL's own host matching agrees.
  X509Ptr server_cert = load_pem(server_pem);
  EXPECT_EQ(X509_check_host(server_cert.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(server_cert.get(), "kubernetes.default.svc", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(server_cert.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(server_cert.get(), "::1", 0), 1);
  EXPECT_NE(X509_check_host(server_cert.get(), "evil.example", 0, 0, nullptr), 1);

  auto admin = inspect_certificate_pem(admin_pem);
  ASSERT_TRUE(admin.is_ok());
  EXPECT_EQ(admin->common_name, "system:admin");
  EXPECT_EQ(admin->organizations, std::vector<std::string>{"system:masters"});
  X509Ptr admin_cert = load_pem(admin_pem);
  EXPECT_TRUE(X509_get_extended_key_usage(admin_cert.get()) & XKU_SSL_CLIENT);
  EXPECT_FALSE(X509_get_extended_key_usage(admin_cert.get()) & XKU_SSL_SERVER);
}

TEST(PkiTest, ServerSansIncludeInterfaceAddresses) {
  auto sans = server_sans(PkiOptions{});
  ASSERT_TRUE(sans.is_ok()) << sans.status().to_string();
  EXPECT_TRUE(contains(*sans, "127.0.0.1"));
  EXPECT_TRUE(contains(*sans, "::1"));
  EXPECT_TRUE(contains(*sans, "10.43.0.1"));
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::string h = host;
  std::transform(h.begin(), h.end(), h.begin(), ::tolower);
  EXPECT_TRUE(contains(*sans, h)) << h;
  std::string joined;
  for (const auto& s : *sans) joined += s + " ";
  std::printf("[ info    ] default SANs: %s\n", joined.c_str());
  // De-duplicated and normalized.
  PkiOptions o;
  o.extra_sans = {"LOCALHOST", "0:0:0:0:0:0:0:1", " [::1] ", "Example.COM."};
  auto more = server_sans(o);
  ASSERT_TRUE(more.is_ok());
  EXPECT_EQ(std::count(more->begin(), more->end(), "localhost"), 1);
  EXPECT_EQ(std::count(more->begin(), more->end(), "::1"), 1);
  EXPECT_TRUE(contains(*more, "example.com"));
}

TEST(PkiTest, InvalidExtraSanIsRejected) {
  ScratchDir tmp;
  PkiOptions o = test_options();
  o.extra_sans = {"bad name with spaces"};
  auto state = ensure_pki(tmp.sub("tls"), o);
  ASSERT_FALSE(state.is_ok());
  EXPECT_EQ(state.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(state.status().message().find("bad name with spaces"), std::string::npos);
  // Nothing was created for an invalid request.
  EXPECT_FALSE(std::filesystem::exists(tmp.sub("tls/ca.crt")));
}

TEST(PkiTest, SecondStartReusesEverything) {
  ScratchDir tmp;
  std::string dir = tmp.sub("tls");
  auto first = ensure_pki(dir, test_options());
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  std::string ca_fp = inspect_certificate_pem(slurp(first->paths.ca_cert))->sha256_fingerprint;
  std::string server_pem = slurp(first->paths.server_cert);
  std::string admin_pem = slurp(first->paths.admin_cert);

  auto second = ensure_pki(dir, test_options());
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_FALSE(second->ca_created);
  EXPECT_FALSE(second->server_cert_issued);
  EXPECT_FALSE(second->admin_cert_issued);
  EXPECT_EQ(inspect_certificate_pem(slurp(second->paths.ca_cert))->sha256_fingerprint, ca_fp);
  EXPECT_EQ(inspect_certificate_pem(second->ca.cert_pem())->sha256_fingerprint, ca_fp);
  EXPECT_EQ(slurp(second->paths.server_cert), server_pem);
  EXPECT_EQ(slurp(second->paths.admin_cert), admin_pem);
}

TEST(PkiTest, NewSanReissuesServingCertWithSameCa) {
  ScratchDir tmp;
  std::string dir = tmp.sub("tls");
  auto first = ensure_pki(dir, test_options());
  ASSERT_TRUE(first.is_ok());
  std::string ca_pem = slurp(first->paths.ca_cert);
  std::string admin_pem = slurp(first->paths.admin_cert);

  PkiOptions o = test_options();
  o.extra_sans.push_back("new.example.org");
  o.extra_sans.push_back("2001:db8::5");
  auto second = ensure_pki(dir, o);
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_FALSE(second->ca_created);
  EXPECT_TRUE(second->server_cert_issued);
  EXPECT_FALSE(second->admin_cert_issued);
  EXPECT_EQ(slurp(second->paths.ca_cert), ca_pem);
  EXPECT_EQ(slurp(second->paths.admin_cert), admin_pem);
  std::string server_pem = slurp(second->paths.server_cert);
  auto info = inspect_certificate_pem(server_pem);
  EXPECT_TRUE(contains(info->dns_names, "new.example.org"));
  EXPECT_TRUE(contains(info->ip_addresses, "2001:db8::5"));
  EXPECT_EQ(verify_chain(ca_pem, server_pem, X509_PURPOSE_SSL_SERVER), X509_V_OK);

  // Dropping a SAN again does not re-issue: the certificate still covers the smaller set.
  auto third = ensure_pki(dir, test_options());
  ASSERT_TRUE(third.is_ok());
  EXPECT_FALSE(third->server_cert_issued);
}

TEST(PkiTest, NearExpiryLeafCertificatesAreReissued) {
  ScratchDir tmp;
  std::string dir = tmp.sub("tls");
  PkiOptions short_lived = test_options();
  short_lived.leaf_validity = Days(10);
  auto first = ensure_pki(dir, short_lived);
  ASSERT_TRUE(first.is_ok());
  std::string ca_pem = slurp(first->paths.ca_cert);
  auto second = ensure_pki(dir, test_options());  // renew_before = 90 days
  ASSERT_TRUE(second.is_ok());
  EXPECT_FALSE(second->ca_created);
  EXPECT_TRUE(second->server_cert_issued);
  EXPECT_TRUE(second->admin_cert_issued);
  EXPECT_EQ(slurp(second->paths.ca_cert), ca_pem);
  EXPECT_EQ(verify_chain(ca_pem, slurp(second->paths.admin_cert), X509_PURPOSE_SSL_CLIENT),
            X509_V_OK);
}

TEST(PkiTest, CorruptCaIsAnErrorAndIsNotOverwritten) {
  ScratchDir tmp;
  std::string dir = tmp.sub("tls");
  ASSERT_TRUE(ensure_pki(dir, test_options()).is_ok());
  PkiPaths p(dir);
  spit(p.ca_cert, "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n");
  auto state = ensure_pki(dir, test_options());
  ASSERT_FALSE(state.is_ok());
  EXPECT_EQ(state.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(state.status().message().find("refusing to replace"), std::string::npos)
      << state.status().message();
  EXPECT_NE(state.status().message().find("CA certificate"), std::string::npos);
  std::printf("[ info    ] corrupt CA error: %s\n", state.status().to_string().c_str());
  EXPECT_EQ(slurp(p.ca_cert), "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n");

  // A key that does not belong to the certificate is refused too.
  ScratchDir other;
  ASSERT_TRUE(ensure_pki(other.sub("tls"), test_options()).is_ok());
  ScratchDir mixed;
  ASSERT_TRUE(ensure_pki(mixed.sub("tls"), test_options()).is_ok());
  std::filesystem::copy_file(other.sub("tls/ca.key"), mixed.sub("tls/ca.key"),
                             std::filesystem::copy_options::overwrite_existing);
  auto mismatch = ensure_pki(mixed.sub("tls"), test_options());
  ASSERT_FALSE(mismatch.is_ok());
  EXPECT_NE(mismatch.status().message().find("does not belong"), std::string::npos)
      << mismatch.status().message();
}

TEST(PkiTest, HalfPresentCaIsAnError) {
  ScratchDir tmp;
  std::string dir = tmp.sub("tls");
  ASSERT_TRUE(ensure_pki(dir, test_options()).is_ok());
  PkiPaths p(dir);
  std::string ca_pem = slurp(p.ca_cert);
  std::filesystem::remove(p.ca_key);
  auto state = ensure_pki(dir, test_options());
  ASSERT_FALSE(state.is_ok());
  EXPECT_EQ(state.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(state.status().message().find("ca.key is missing"), std::string::npos);
  EXPECT_EQ(slurp(p.ca_cert), ca_pem);
  EXPECT_FALSE(std::filesystem::exists(p.ca_key));
}

TEST(PkiTest, UnreadableFileIsAnError) {
  ScratchDir tmp;
  std::string dir = tmp.sub("tls");
  ASSERT_TRUE(ensure_pki(dir, test_options()).is_ok());
  PkiPaths p(dir);
  // A directory in place of the file fails to read even as root (EISDIR).
  std::filesystem::remove(p.server_cert);
  std::filesystem::create_directory(p.server_cert);
  auto state = ensure_pki(dir, test_options());
  ASSERT_FALSE(state.is_ok());
  EXPECT_NE(state.status().message().find("server.crt"), std::string::npos)
      << state.status().message();
}

TEST(PkiTest, CorruptLeafIsReissued) {
  ScratchDir tmp;
  std::string dir = tmp.sub("tls");
  auto first = ensure_pki(dir, test_options());
  ASSERT_TRUE(first.is_ok());
  spit(first->paths.server_key, "not a key");
  auto second = ensure_pki(dir, test_options());
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_TRUE(second->server_cert_issued);
  EXPECT_FALSE(second->admin_cert_issued);
  EXPECT_EQ(file_mode(second->paths.server_key), 0600u);
  EXPECT_EQ(verify_chain(slurp(second->paths.ca_cert), slurp(second->paths.server_cert),
                         X509_PURPOSE_SSL_SERVER),
            X509_V_OK);
}

TEST(PkiTest, IssuesKubeletClientAndArbitraryServingCertificates) {
  auto ca = CertificateAuthority::create("test-ca");
  ASSERT_TRUE(ca.is_ok()) << ca.status().to_string();
  auto kubelet = ca->issue_client_cert("system:node:node-a", {"system:nodes"});
  ASSERT_TRUE(kubelet.is_ok()) << kubelet.status().to_string();
  EXPECT_EQ(verify_chain(ca->cert_pem(), kubelet->cert_pem, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  auto info = inspect_certificate_pem(kubelet->cert_pem);
  EXPECT_EQ(info->common_name, "system:node:node-a");
  EXPECT_EQ(info->organizations, std::vector<std::string>{"system:nodes"});
  EXPECT_TRUE(ca->signed_cert_pem(kubelet->cert_pem));

  auto multi = ca->issue_client_cert("alice", {"devs", "ops"});
  ASSERT_TRUE(multi.is_ok());
  EXPECT_EQ(inspect_certificate_pem(multi->cert_pem)->organizations,
            (std::vector<std::string>{"devs", "ops"}));

  auto serving = ca->issue_serving_cert("node-a", {"node-a", "*.apps.example", "10.0.0.7"});
  ASSERT_TRUE(serving.is_ok()) << serving.status().to_string();
  EXPECT_EQ(verify_chain(ca->cert_pem(), serving->cert_pem, X509_PURPOSE_SSL_SERVER), X509_V_OK);
  X509Ptr cert = load_pem(serving->cert_pem);
  EXPECT_EQ(X509_check_host(cert.get(), "x.apps.example", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "10.0.0.7", 0), 1);

  EXPECT_FALSE(ca->issue_serving_cert("x", {}).is_ok());
  EXPECT_FALSE(ca->issue_serving_cert("x", {"a..b"}).is_ok());
  EXPECT_FALSE(ca->issue_serving_cert("x", {"a.*.b"}).is_ok());
  EXPECT_FALSE(ca->issue_client_cert("", {}).is_ok());

  // A different CA's certificate is not recognized as ours.
  auto other = CertificateAuthority::create("other-ca");
  ASSERT_TRUE(other.is_ok());
  EXPECT_FALSE(other->signed_cert_pem(kubelet->cert_pem));
  // Round trip through PEM.
  auto reloaded = CertificateAuthority::from_pem(ca->cert_pem(), ca->key_pem());
  ASSERT_TRUE(reloaded.is_ok());
  EXPECT_TRUE(reloaded->signed_cert_pem(kubelet->cert_pem));
  // A leaf is not accepted as a CA.
  EXPECT_EQ(CertificateAuthority::from_pem(kubelet->cert_pem, kubelet->key_pem).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(PkiTest, MeasureGeneration) {
  for (KeyType type : {KeyType::kEcdsaP256, KeyType::kRsa2048}) {
    ScratchDir tmp;
    PkiOptions o = test_options();
    o.key_type = type;
    auto start = std::chrono::steady_clock::now();
    auto state = ensure_pki(tmp.sub("tls"), o);
    double first_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(state.is_ok()) << state.status().to_string();
    start = std::chrono::steady_clock::now();
    auto again = ensure_pki(tmp.sub("tls"), o);
    double reuse_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(again.is_ok());
    // The crypto alone (no files, no fsync): CA + serving + client certificate.
    start = std::chrono::steady_clock::now();
    auto ca = CertificateAuthority::create("m", type);
    ASSERT_TRUE(ca.is_ok());
    ASSERT_TRUE(
        ca->issue_serving_cert("s", {"localhost", "127.0.0.1"}, kLeafValidity, type).is_ok());
    ASSERT_TRUE(ca->issue_client_cert("c", {"g"}, kLeafValidity, type).is_ok());
    double crypto_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("[ measure ] %s: first start %.2f ms (crypto alone %.2f ms), reuse %.2f ms\n",
                type == KeyType::kEcdsaP256 ? "ECDSA P-256" : "RSA 2048", first_ms, crypto_ms,
                reuse_ms);
  }
}

// Real clients accept the material: openssl s_server serves server.crt and demands a client
// certificate from the CA; curl and Python's ssl module connect by 127.0.0.1 and localhost.
TEST(PkiTest, RealClientsAcceptTheChain) {
  if (!tlstest::have_program("openssl") || !tlstest::have_program("curl")) {
    GTEST_SKIP() << "openssl or curl not installed";
  }
  ScratchDir tmp;
  auto state = ensure_pki(tmp.sub("tls"), test_options());
  ASSERT_TRUE(state.is_ok()) << state.status().to_string();
  const PkiPaths& p = state->paths;
  tlstest::OpensslServer server(p.server_cert, p.server_key, p.ca_cert, tmp.sub("s_server.log"));
  ASSERT_TRUE(server.ok()) << slurp(tmp.sub("s_server.log"));
  std::string port = std::to_string(server.port());

  std::string out;
  for (const std::string& host : {std::string("127.0.0.1"), std::string("localhost")}) {
    int rc =
        tlstest::run({"curl", "-sS", "--max-time", "10", "--cacert", p.ca_cert, "--cert",
                      p.admin_cert, "--key", p.admin_key, "https://" + host + ":" + port + "/"},
                     tmp.sub("curl.log"), &out);
    EXPECT_EQ(rc, 0) << host << ": " << out;
    EXPECT_NE(out.find("s_server"), std::string::npos) << out;
  }
  // A name that is not in the SANs fails hostname verification (the check is real).
  int rc = tlstest::run(
      {"curl", "-sS", "--max-time", "10", "--cacert", p.ca_cert, "--cert", p.admin_cert, "--key",
       p.admin_key, "--resolve", "not-in-sans.example:" + port + ":127.0.0.1",
       "https://not-in-sans.example:" + port + "/"},
      tmp.sub("curl.log"), &out);
  EXPECT_NE(rc, 0) << out;
  // SAN DNS names other than localhost, via --resolve.
  rc = tlstest::run(
      {"curl", "-sS", "--max-time", "10", "--cacert", p.ca_cert, "--cert", p.admin_cert, "--key",
       p.admin_key, "--resolve", "kubernetes.default.svc:" + port + ":127.0.0.1",
       "https://kubernetes.default.svc:" + port + "/"},
      tmp.sub("curl.log"), &out);
  EXPECT_EQ(rc, 0) << out;
  // Without a client certificate the server (which demands one) refuses.
  rc = tlstest::run(
      {"curl", "-sS", "--max-time", "10", "--cacert", p.ca_cert, "https://127.0.0.1:" + port + "/"},
      tmp.sub("curl.log"), &out);
  EXPECT_NE(rc, 0) << out;

  if (tlstest::have_program("python3")) {
    std::string script =
        "import socket, ssl, sys\n"
        "host, port, ca, cert, key = sys.argv[1:6]\n"
        "ctx = ssl.create_default_context(cafile=ca)\n"
        "ctx.load_cert_chain(cert, key)\n"
        "if hasattr(ssl, 'VERIFY_X509_STRICT'): ctx.verify_flags |= ssl.VERIFY_X509_STRICT\n"
        "with socket.create_connection(('127.0.0.1', int(port)), timeout=10) as s:\n"
        "    with ctx.wrap_socket(s, server_hostname=host) as t:\n"
        "        t.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
        "        data = b''\n"
        "        while True:\n"
        "            chunk = t.recv(65536)\n"
        "            if not chunk: break\n"
        "            data += chunk\n"
        "        print(t.version(), data[:40])\n";
    tlstest::spit(tmp.sub("client.py"), script);
    for (const std::string& host : {std::string("127.0.0.1"), std::string("localhost")}) {
      rc = tlstest::run(
          {"python3", tmp.sub("client.py"), host, port, p.ca_cert, p.admin_cert, p.admin_key},
          tmp.sub("py.log"), &out);
      EXPECT_EQ(rc, 0) << host << ": " << out;
      EXPECT_NE(out.find("200 ok"), std::string::npos) << out;
    }
  }
}

}  // namespace
}  // namespace skiff::pki
