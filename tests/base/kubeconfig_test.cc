#include "base/kubeconfig.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "base/pki.h"
#include "base/tls_test_util.h"

namespace skiff {
namespace {

using tlstest::ScratchDir;
using tlstest::slurp;
using tlstest::spit;

TEST(Base64Test, Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded);
    auto decoded = base64_decode(encoded);
    ASSERT_TRUE(decoded.is_ok()) << encoded;
    EXPECT_EQ(*decoded, plain);
  }
  std::string binary;
  for (int i = 0; i < 256; ++i) binary += static_cast<char>(i);
  EXPECT_EQ(*base64_decode(base64_encode(binary)), binary);
  EXPECT_EQ(*base64_decode("Zm9v\nYmFy\n"), "foobar");
  EXPECT_FALSE(base64_decode("Zm9").is_ok());
  EXPECT_FALSE(base64_decode("Zm9v!").is_ok());
  EXPECT_FALSE(base64_decode("Zg==Zg==").is_ok());
}

Kubeconfig sample() {
  Kubeconfig c;
  c.server = "https://127.0.0.1:6443";
  c.certificate_authority_data = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
  c.client_certificate_data = "-----BEGIN CERTIFICATE-----\nME\n-----END CERTIFICATE-----\n";
  c.client_key_data = "-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n";
  return c;
}

TEST(KubeconfigTest, WriteIsPrivateAndRoundTrips) {
  ScratchDir tmp;
  std::string path = tmp.sub("kubeconfig.yaml");
  ASSERT_TRUE(write_kubeconfig(path, sample()).is_ok());
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string text = slurp(path);
  EXPECT_NE(text.find("certificate-authority-data: " +
                      base64_encode(sample().certificate_authority_data)),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("current-context: default"), std::string::npos) << text;
  std::printf("%s", text.c_str());

  auto parsed = load_kubeconfig(path);
  ASSERT_TRUE(parsed.is_ok()) << parsed.status().to_string();
  EXPECT_EQ(parsed->server, "https://127.0.0.1:6443");
  EXPECT_EQ(parsed->certificate_authority_data, sample().certificate_authority_data);
  EXPECT_EQ(parsed->client_certificate_data, sample().client_certificate_data);
  EXPECT_EQ(parsed->client_key_data, sample().client_key_data);
  EXPECT_EQ(parsed->cluster_name, "default");
  EXPECT_EQ(parsed->user_name, "default");
  EXPECT_EQ(parsed->context_name, "default");
  EXPECT_TRUE(parsed->token.empty());

  Kubeconfig with_token;
  with_token.server = "https://10.0.0.1:6443";
  with_token.token = "abc.def";
  with_token.insecure_skip_tls_verify = true;
  with_token.namespace_ = "kube-system";
  auto again = parse_kubeconfig(render_kubeconfig(with_token), "");
  ASSERT_TRUE(again.is_ok()) << again.status().to_string();
  EXPECT_EQ(again->token, "abc.def");
  EXPECT_TRUE(again->insecure_skip_tls_verify);
  EXPECT_EQ(again->namespace_, "kube-system");
}

TEST(KubeconfigTest, FileVariantsAreResolvedRelativeToTheKubeconfig) {
  ScratchDir tmp;
  spit(tmp.sub("ca.crt"), "CA-PEM");
  spit(tmp.sub("client.crt"), "CERT-PEM");
  spit(tmp.sub("client.key"), "KEY-PEM");
  spit(tmp.sub("token"), "file-token\n");
  spit(tmp.sub("kc"), R"(apiVersion: v1
kind: Config
current-context: ctx-b
clusters:
- name: a
  cluster:
    server: https://a:6443
- name: b
  cluster:
    server: https://b:6443
    certificate-authority: ca.crt
    tls-server-name: kubernetes
contexts:
- name: ctx-a
  context: {cluster: a, user: ua}
- name: ctx-b
  context: {cluster: b, user: ub, namespace: team}
users:
- name: ua
  user:
    tokenFile: token
- name: ub
  user:
    client-certificate: )" +
                          tmp.sub("client.crt") + R"(
    client-key: client.key
)");
  auto b = load_kubeconfig(tmp.sub("kc"));
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(b->server, "https://b:6443");
  EXPECT_EQ(b->certificate_authority_data, "CA-PEM");
  EXPECT_EQ(b->client_certificate_data, "CERT-PEM");
  EXPECT_EQ(b->client_key_data, "KEY-PEM");
  EXPECT_EQ(b->tls_server_name, "kubernetes");
  EXPECT_EQ(b->namespace_, "team");

  auto a = load_kubeconfig(tmp.sub("kc"), "ctx-a");
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  EXPECT_EQ(a->server, "https://a:6443");
  EXPECT_EQ(a->token, "file-token");
  EXPECT_TRUE(a->certificate_authority_data.empty());

  auto missing_ctx = load_kubeconfig(tmp.sub("kc"), "nope");
  ASSERT_FALSE(missing_ctx.is_ok());
  EXPECT_NE(missing_ctx.status().message().find("no context named \"nope\""), std::string::npos)
      << missing_ctx.status().message();

  std::filesystem::remove(tmp.sub("client.key"));
  auto missing_file = load_kubeconfig(tmp.sub("kc"));
  ASSERT_FALSE(missing_file.is_ok());
  EXPECT_EQ(missing_file.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing_file.status().message().find("client.key"), std::string::npos);
}

TEST(KubeconfigTest, MalformedInputsGiveClearErrors) {
  EXPECT_EQ(parse_kubeconfig("{{{", "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(parse_kubeconfig("- a\n- b\n", "").status().code(), StatusCode::kInvalidArgument);
  auto no_ctx = parse_kubeconfig("apiVersion: v1\nkind: Config\n", "");
  ASSERT_FALSE(no_ctx.is_ok());
  EXPECT_NE(no_ctx.status().message().find("current-context"), std::string::npos);
  std::string bad_b64 = render_kubeconfig(sample());
  size_t at = bad_b64.find("certificate-authority-data: ") + 28;
  bad_b64.insert(at + 4, "%%");
  auto bad = parse_kubeconfig(bad_b64, "");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("certificate-authority-data"), std::string::npos)
      << bad.status().message();
  Kubeconfig half = sample();
  half.client_key_data.clear();
  EXPECT_FALSE(parse_kubeconfig(render_kubeconfig(half), "").is_ok());
}

// kubectl (Go's crypto/tls and x509, stricter than OpenSSL) accepts the written kubeconfig and
// the PKI from ensure_pki: `kubectl get --raw /` against openssl s_server -www, which demands the
// client certificate, returns s_server's page.
TEST(KubeconfigTest, KubectlAcceptsKubeconfigAndPki) {
  if (!tlstest::have_program("kubectl") || !tlstest::have_program("openssl")) {
    GTEST_SKIP() << "kubectl or openssl not installed";
  }
  ScratchDir tmp;
  pki::PkiOptions options;
  options.hostname = "test-host";
  auto state = pki::ensure_pki(tmp.sub("tls"), options);
  ASSERT_TRUE(state.is_ok()) << state.status().to_string();
  const pki::PkiPaths& p = state->paths;
  tlstest::OpensslServer server(p.server_cert, p.server_key, p.ca_cert, tmp.sub("s_server.log"));
  ASSERT_TRUE(server.ok()) << slurp(tmp.sub("s_server.log"));

  for (const std::string& host : {std::string("127.0.0.1"), std::string("localhost")}) {
    Kubeconfig config;
    config.server = "https://" + host + ":" + std::to_string(server.port());
    config.certificate_authority_data = slurp(p.ca_cert);
    config.client_certificate_data = slurp(p.admin_cert);
    config.client_key_data = slurp(p.admin_key);
    ASSERT_TRUE(write_kubeconfig(tmp.sub("kubeconfig"), config).is_ok());
    std::string out;
    int rc = tlstest::run({"kubectl", "--kubeconfig", tmp.sub("kubeconfig"),
                           "--request-timeout=10s", "get", "--raw", "/"},
                          tmp.sub("kubectl.log"), &out);
    EXPECT_EQ(rc, 0) << host << ": " << out;
    EXPECT_NE(out.find("s_server"), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace skiff
