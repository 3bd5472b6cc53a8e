#include "base/pki.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <set>

#include "base/log.h"

namespace skiff::pki {
namespace {

struct BioFree {
  void operator()(BIO* p) const { BIO_free_all(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct GeneralNamesFree {
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

Status ssl_error(StatusCode code, const std::string& what) {
  return error(code, what + ": " + openssl_errors());
}

Result<PkeyPtr> generate_key(KeyType type) {
  EVP_PKEY* key = nullptr;
  if (type == KeyType::kRsa2048) {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
  } else {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  }
  if (key == nullptr) return ssl_error(StatusCode::kInternal, "generating a private key");
  return PkeyPtr(key);
}

Result<std::string> cert_to_pem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return ssl_error(StatusCode::kInternal, "encoding a certificate as PEM");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

Result<std::string> key_to_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return ssl_error(StatusCode::kInternal, "encoding a private key as PEM");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

Result<X509Ptr> parse_cert_pem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509* cert = bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  if (cert == nullptr) return ssl_error(StatusCode::kDataLoss, "not a PEM certificate");
  return X509Ptr(cert);
}

Result<PkeyPtr> parse_key_pem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  if (key == nullptr) return ssl_error(StatusCode::kDataLoss, "not a PEM private key");
  return PkeyPtr(key);
}

std::string asn1_to_utf8(const ASN1_STRING* s) {
  unsigned char* out = nullptr;
  int len = ASN1_STRING_to_UTF8(&out, s);
  if (len < 0) return {};
  std::string result(reinterpret_cast<char*>(out), static_cast<size_t>(len));
  OPENSSL_free(out);
  return result;
}

std::chrono::system_clock::time_point asn1_time_to_point(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return {};
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

bool is_valid_dns_name(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  size_t start = 0;
  bool first = true;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    std::string_view label(name.data() + start, dot - start);
    if (label.empty() || label.size() > 63) return false;
    if (label == "*") {
      if (!first) return false;  // a wildcard is only allowed as the leftmost label
    } else {
      for (char c : label) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (!ok) return false;
      }
      if (label.front() == '-' || label.back() == '-') return false;
    }
    first = false;
    start = dot + 1;
    if (dot == name.size()) break;
  }
  return true;
}

// Parses an IP literal (IPv6 may be bracketed) into its bytes; false when not an IP.
bool parse_ip(std::string text, std::string* bytes) {
  if (text.size() > 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  unsigned char buf[16];
  if (inet_pton(AF_INET, text.c_str(), buf) == 1) {
    bytes->assign(reinterpret_cast<char*>(buf), 4);
    return true;
  }
  if (inet_pton(AF_INET6, text.c_str(), buf) == 1) {
    bytes->assign(reinterpret_cast<char*>(buf), 16);
    return true;
  }
  return false;
}

std::string ip_bytes_to_string(const unsigned char* data, int len) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (len == 4) {
    inet_ntop(AF_INET, data, buf, sizeof(buf));
  } else if (len == 16) {
    inet_ntop(AF_INET6, data, buf, sizeof(buf));
  }
  return buf;
}

struct San {
  bool is_ip = false;
  std::string value;  // canonical text
  std::string bytes;  // IP bytes when is_ip
};

Result<San> parse_san(const std::string& raw) {
  std::string text = raw;
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  size_t lead = 0;
  while (lead < text.size() && std::isspace(static_cast<unsigned char>(text[lead]))) ++lead;
  text.erase(0, lead);
  San san;
  if (parse_ip(text, &san.bytes)) {
    san.is_ip = true;
    san.value = ip_bytes_to_string(reinterpret_cast<const unsigned char*>(san.bytes.data()),
                                   static_cast<int>(san.bytes.size()));
    return san;
  }
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!text.empty() && text.back() == '.') text.pop_back();
  if (!is_valid_dns_name(text)) {
    return error(StatusCode::kInvalidArgument,
                 "invalid subject alternative name \"" + raw + "\": not an IP or DNS name");
  }
  san.value = text;
  return san;
}

Status add_extension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
  if (ext == nullptr) {
    return ssl_error(StatusCode::kInternal, std::string("building extension ") + OBJ_nid2sn(nid));
  }
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return ssl_error(StatusCode::kInternal, "adding a certificate extension");
  return Status::ok();
}

Status add_sans(X509* cert, const std::vector<San>& sans) {
  std::unique_ptr<GENERAL_NAMES, GeneralNamesFree> names(sk_GENERAL_NAME_new_null());
  if (!names) return ssl_error(StatusCode::kInternal, "allocating SANs");
  for (const San& san : sans) {
    GENERAL_NAME* gen = GENERAL_NAME_new();
    if (gen == nullptr) return ssl_error(StatusCode::kInternal, "allocating a SAN");
    ASN1_STRING* str = san.is_ip ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
    const std::string& data = san.is_ip ? san.bytes : san.value;
    if (str == nullptr || ASN1_STRING_set(str, data.data(), static_cast<int>(data.size())) != 1) {
      ASN1_STRING_free(str);
      GENERAL_NAME_free(gen);
      return ssl_error(StatusCode::kInternal, "encoding a SAN");
    }
    GENERAL_NAME_set0_value(gen, san.is_ip ? GEN_IPADD : GEN_DNS, str);
    if (sk_GENERAL_NAME_push(names.get(), gen) == 0) {
      GENERAL_NAME_free(gen);
      return ssl_error(StatusCode::kInternal, "adding a SAN");
    }
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return ssl_error(StatusCode::kInternal, "adding subjectAltName");
  }
  return Status::ok();
}

Status set_random_serial(X509* cert) {
  std::unique_ptr<BIGNUM, BnFree> bn(BN_new());
  // 127 random bits with the top bit clear: positive and well under the 20-octet limit.
  if (!bn || BN_rand(bn.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr) {
    return ssl_error(StatusCode::kInternal, "generating a serial number");
  }
  return Status::ok();
}

Status set_name(X509_NAME* name, const std::vector<std::string>& orgs, const std::string& cn) {
  for (const std::string& o : orgs) {
    if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(o.c_str()), -1, -1,
                                   0) != 1) {
      return ssl_error(StatusCode::kInvalidArgument, "invalid organization \"" + o + "\"");
    }
  }
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1) {
    return ssl_error(StatusCode::kInvalidArgument, "invalid common name \"" + cn + "\"");
  }
  return Status::ok();
}

// Certificates are back-dated an hour so a peer whose clock is slightly behind accepts them.
constexpr long kBackdateSeconds = 3600;

Status set_validity(X509* cert, Days validity) {
  if (X509_gmtime_adj(X509_getm_notBefore(cert), -kBackdateSeconds) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert), static_cast<int>(validity.count()), 0, nullptr) ==
          nullptr) {
    return ssl_error(StatusCode::kInternal, "setting the validity period");
  }
  return Status::ok();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Inspection

Result<CertInfo> inspect_certificate(X509* cert) {
  if (cert == nullptr) return error(StatusCode::kInvalidArgument, "no certificate");
  CertInfo info;
  const X509_NAME* subject = X509_get_subject_name(cert);
  for (int i = -1; (i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0;) {
    if (info.common_name.empty()) {
      info.common_name = asn1_to_utf8(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
    }
  }
  for (int i = -1; (i = X509_NAME_get_index_by_NID(subject, NID_organizationName, i)) >= 0;) {
    info.organizations.push_back(
        asn1_to_utf8(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i))));
  }
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* gen = sk_GENERAL_NAME_value(names, i);
      if (gen->type == GEN_DNS) {
        const ASN1_IA5STRING* s = gen->d.dNSName;
        info.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                    static_cast<size_t>(ASN1_STRING_length(s)));
      } else if (gen->type == GEN_IPADD) {
        const ASN1_OCTET_STRING* s = gen->d.iPAddress;
        std::string ip = ip_bytes_to_string(ASN1_STRING_get0_data(s), ASN1_STRING_length(s));
        if (!ip.empty()) info.ip_addresses.push_back(std::move(ip));
      }
    }
    GENERAL_NAMES_free(names);
  }
  info.not_before = asn1_time_to_point(X509_get0_notBefore(cert));
  info.not_after = asn1_time_to_point(X509_get0_notAfter(cert));
  info.is_ca = (X509_get_extension_flags(cert) & EXFLAG_CA) != 0;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &md_len) != 1) {
    return ssl_error(StatusCode::kInternal, "hashing a certificate");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned int i = 0; i < md_len; ++i) {
    info.sha256_fingerprint += kHex[md[i] >> 4];
    info.sha256_fingerprint += kHex[md[i] & 0xf];
  }
  return info;
}

Result<CertInfo> inspect_certificate_pem(const std::string& pem) {
  SKIFF_ASSIGN_OR_RETURN(X509Ptr cert, parse_cert_pem(pem));
  return inspect_certificate(cert.get());
}

// ---------------------------------------------------------------------------------------------
// CertificateAuthority

Result<CertificateAuthority> CertificateAuthority::create(const std::string& common_name,
                                                          KeyType key_type, Days validity) {
  SKIFF_ASSIGN_OR_RETURN(PkeyPtr key, generate_key(key_type));
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return ssl_error(StatusCode::kInternal, "allocating a certificate");
  }
  SKIFF_RETURN_IF_ERROR(set_random_serial(cert.get()));
  SKIFF_RETURN_IF_ERROR(set_validity(cert.get(), validity));
  SKIFF_RETURN_IF_ERROR(set_name(X509_get_subject_name(cert.get()), {}, common_name));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())) != 1 ||
      X509_set_pubkey(cert.get(), key.get()) != 1) {
    return ssl_error(StatusCode::kInternal, "filling in the CA certificate");
  }
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  SKIFF_RETURN_IF_ERROR(add_extension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE"));
  SKIFF_RETURN_IF_ERROR(add_extension(cert.get(), &ctx, NID_key_usage,
                                      "critical,digitalSignature,keyCertSign,cRLSign"));
  SKIFF_RETURN_IF_ERROR(add_extension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) {
    return ssl_error(StatusCode::kInternal, "self-signing the CA certificate");
  }
  return CertificateAuthority(std::shared_ptr<X509>(cert.release(), X509Free()),
                              std::shared_ptr<EVP_PKEY>(key.release(), PkeyFree()));
}

Result<CertificateAuthority> CertificateAuthority::from_pem(const std::string& cert_pem,
                                                            const std::string& key_pem) {
  auto cert = parse_cert_pem(cert_pem);
  if (!cert.is_ok()) {
    return error(StatusCode::kDataLoss, "CA certificate: " + cert.status().message());
  }
  auto key = parse_key_pem(key_pem);
  if (!key.is_ok()) return error(StatusCode::kDataLoss, "CA key: " + key.status().message());
  if ((X509_get_extension_flags(cert->get()) & EXFLAG_CA) == 0) {
    return error(StatusCode::kInvalidArgument, "CA certificate is not a CA (no CA:TRUE)");
  }
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return error(StatusCode::kInvalidArgument, "CA key does not belong to the CA certificate");
  }
  return CertificateAuthority(std::shared_ptr<X509>(cert->release(), X509Free()),
                              std::shared_ptr<EVP_PKEY>(key->release(), PkeyFree()));
}

Result<CertAndKey> CertificateAuthority::issue(const std::string& common_name,
                                               const std::vector<std::string>& orgs,
                                               const std::vector<std::string>& sans, bool server,
                                               Days validity, KeyType key_type) const {
  std::vector<San> parsed;
  for (const std::string& s : sans) {
    SKIFF_ASSIGN_OR_RETURN(San san, parse_san(s));
    parsed.push_back(std::move(san));
  }
  if (server && parsed.empty()) {
    return error(StatusCode::kInvalidArgument, "a serving certificate needs at least one SAN");
  }
  SKIFF_ASSIGN_OR_RETURN(PkeyPtr key, generate_key(key_type));
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return ssl_error(StatusCode::kInternal, "allocating a certificate");
  }
  SKIFF_RETURN_IF_ERROR(set_random_serial(cert.get()));
  SKIFF_RETURN_IF_ERROR(set_validity(cert.get(), validity));
  // Never outlive the CA: a chain with an expired issuer fails anyway, and clients report it
  // less clearly.
  if (X509_cmp_time(X509_get0_notAfter(cert_.get()), nullptr) > 0 &&
      ASN1_TIME_compare(X509_get0_notAfter(cert.get()), X509_get0_notAfter(cert_.get())) > 0) {
    X509_set1_notAfter(cert.get(), X509_get0_notAfter(cert_.get()));
  }
  SKIFF_RETURN_IF_ERROR(set_name(X509_get_subject_name(cert.get()), orgs, common_name));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(cert_.get())) != 1 ||
      X509_set_pubkey(cert.get(), key.get()) != 1) {
    return ssl_error(StatusCode::kInternal, "filling in the certificate");
  }
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert_.get(), cert.get(), nullptr, nullptr, 0);
  SKIFF_RETURN_IF_ERROR(
      add_extension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
  // keyEncipherment only matters for RSA key transport (TLS 1.2 RSA kx); harmless otherwise.
  SKIFF_RETURN_IF_ERROR(add_extension(cert.get(), &ctx, NID_key_usage,
                                      key_type == KeyType::kRsa2048
                                          ? "critical,digitalSignature,keyEncipherment"
                                          : "critical,digitalSignature"));
  SKIFF_RETURN_IF_ERROR(
      add_extension(cert.get(), &ctx, NID_ext_key_usage, server ? "serverAuth" : "clientAuth"));
  SKIFF_RETURN_IF_ERROR(add_extension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  SKIFF_RETURN_IF_ERROR(
      add_extension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
  if (!parsed.empty()) SKIFF_RETURN_IF_ERROR(add_sans(cert.get(), parsed));
  if (X509_sign(cert.get(), key_.get(), EVP_sha256()) == 0) {
    return ssl_error(StatusCode::kInternal, "signing the certificate");
  }
  CertAndKey out;
  SKIFF_ASSIGN_OR_RETURN(out.cert_pem, cert_to_pem(cert.get()));
  SKIFF_ASSIGN_OR_RETURN(out.key_pem, key_to_pem(key.get()));
  return out;
}

Result<CertAndKey> CertificateAuthority::issue_client_cert(const std::string& common_name,
                                                           const std::vector<std::string>& groups,
                                                           Days validity, KeyType key_type) const {
  if (common_name.empty()) {
    return error(StatusCode::kInvalidArgument, "a client certificate needs a common name");
  }
  return issue(common_name, groups, {}, /*server=*/false, validity, key_type);
}

Result<CertAndKey> CertificateAuthority::issue_serving_cert(const std::string& common_name,
                                                            const std::vector<std::string>& sans,
                                                            Days validity, KeyType key_type) const {
  return issue(common_name, {}, sans, /*server=*/true, validity, key_type);
}

bool CertificateAuthority::signed_cert(X509* cert) const {
  if (cert == nullptr) return false;
  bool ok = X509_check_issued(cert_.get(), cert) == X509_V_OK &&
            X509_verify(cert, X509_get0_pubkey(cert_.get())) == 1;
  ERR_clear_error();
  return ok;
}

bool CertificateAuthority::signed_cert_pem(const std::string& cert_pem) const {
  auto cert = parse_cert_pem(cert_pem);
  if (!cert.is_ok()) return false;
  return signed_cert(cert->get());
}

std::string CertificateAuthority::cert_pem() const {
  auto pem = cert_to_pem(cert_.get());
  SKIFF_CHECK(pem.is_ok(), pem.status().to_string());
  return std::move(pem).value();
}

std::string CertificateAuthority::key_pem() const {
  auto pem = key_to_pem(key_.get());
  SKIFF_CHECK(pem.is_ok(), pem.status().to_string());
  return std::move(pem).value();
}

// ---------------------------------------------------------------------------------------------
// Files

Status write_file_atomic(const std::string& path, const std::string& data, unsigned mode) {
  unsigned char rnd[6];
  RAND_bytes(rnd, sizeof(rnd));
  std::string tmp = path + ".tmp-" + std::to_string(getpid()) + "-";
  for (unsigned char c : rnd) tmp += "0123456789abcdef"[c & 0xf];
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, static_cast<mode_t>(mode));
  if (fd < 0) {
    return error(StatusCode::kInternal, "creating " + tmp + ": " + std::strerror(errno));
  }
  auto fail = [&](const char* what) {
    int err = errno;
    close(fd);
    unlink(tmp.c_str());
    return error(StatusCode::kInternal, std::string(what) + " " + tmp + ": " + std::strerror(err));
  };
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("writing");
    }
    off += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) return fail("syncing");
  if (close(fd) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return error(StatusCode::kInternal, "closing " + tmp + ": " + std::strerror(err));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return error(StatusCode::kInternal, "renaming to " + path + ": " + std::strerror(err));
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return Status::ok();
}

Result<std::string> read_file(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    StatusCode code = err == ENOENT   ? StatusCode::kNotFound
                      : err == EACCES ? StatusCode::kPermissionDenied
                                      : StatusCode::kInternal;
    return error(code, "reading " + path + ": " + std::strerror(err));
  }
  std::string out;
  char buf[8192];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return error(StatusCode::kInternal, "reading " + path + ": " + std::strerror(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// ---------------------------------------------------------------------------------------------
// ensure_pki

PkiPaths::PkiPaths(const std::string& d)
    : dir(d),
      ca_cert(d + "/ca.crt"),
      ca_key(d + "/ca.key"),
      server_cert(d + "/server.crt"),
      server_key(d + "/server.key"),
      admin_cert(d + "/admin.crt"),
      admin_key(d + "/admin.key") {}

Result<std::vector<std::string>> server_sans(const PkiOptions& options) {
  std::vector<std::string> raw = {"localhost",
                                  "kubernetes",
                                  "kubernetes.default",
                                  "kubernetes.default.svc",
                                  "kubernetes.default.svc.cluster.local",
                                  "127.0.0.1",
                                  "::1"};
  std::string host = options.hostname;
  if (host.empty()) {
    char buf[256] = {};
    if (gethostname(buf, sizeof(buf) - 1) == 0) host = buf;
  }
  if (!host.empty()) {
    if (parse_san(host).is_ok()) {
      raw.push_back(host);
    } else {
      SKIFF_LOG_WARN("pki: hostname \"{}\" is not a valid DNS name; left out of the SANs", host);
    }
  }
  if (options.include_interface_addresses) {
    struct ifaddrs* addrs = nullptr;
    if (getifaddrs(&addrs) == 0) {
      for (struct ifaddrs* a = addrs; a != nullptr; a = a->ifa_next) {
        if (a->ifa_addr == nullptr) continue;
        if (a->ifa_addr->sa_family == AF_INET) {
          auto* sin = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
          raw.push_back(
              ip_bytes_to_string(reinterpret_cast<const unsigned char*>(&sin->sin_addr), 4));
        } else if (a->ifa_addr->sa_family == AF_INET6) {
          auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a->ifa_addr);
          // Link-local addresses need a zone to be dialled and every veth has one; including
          // them would re-issue the certificate whenever pods come and go.
          if (IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr)) continue;
          raw.push_back(
              ip_bytes_to_string(reinterpret_cast<const unsigned char*>(&sin6->sin6_addr), 16));
        }
      }
      freeifaddrs(addrs);
    } else {
      SKIFF_LOG_WARN("pki: getifaddrs failed: {}", std::strerror(errno));
    }
  }
  if (!options.service_ip.empty()) raw.push_back(options.service_ip);
  for (const std::string& s : options.extra_sans) raw.push_back(s);

  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const std::string& s : raw) {
    if (s.empty()) continue;
    SKIFF_ASSIGN_OR_RETURN(San san, parse_san(s));
    if (seen.insert(san.value).second) out.push_back(san.value);
  }
  return out;
}

namespace {

Status ensure_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::path p(dir);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return error(StatusCode::kInternal, "creating " + dir + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return error(StatusCode::kFailedPrecondition, dir + " is not a directory");
  }
  return Status::ok();
}

// Reads a file that may be missing: nullopt when missing, error when unreadable.
Result<std::optional<std::string>> read_optional(const std::string& path) {
  auto data = read_file(path);
  if (data.is_ok()) return std::optional<std::string>(std::move(data).value());
  if (data.status().code() == StatusCode::kNotFound) return std::optional<std::string>();
  return data.status();
}

void warn_if_key_mode_wide(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    SKIFF_LOG_WARN("pki: {} is readable by group or others (mode {:o}); it should be 0600", path,
                   st.st_mode & 0777);
  }
}

Status write_pair(const std::string& cert_path, const std::string& key_path,
                  const CertAndKey& pair) {
  // Key first: if we stop in between, the old certificate no longer matches the key and the next
  // start re-issues instead of serving a mismatched pair.
  SKIFF_RETURN_IF_ERROR(write_file_atomic(key_path, pair.key_pem, 0600));
  return write_file_atomic(cert_path, pair.cert_pem, 0644);
}

// Why an existing leaf pair must be re-issued; "" when it can be kept. Errors only for unreadable
// files.
Result<std::string> leaf_problem(const CertificateAuthority& ca, const std::string& cert_path,
                                 const std::string& key_path, Days renew_before,
                                 const std::vector<std::string>* required_sans) {
  SKIFF_ASSIGN_OR_RETURN(std::optional<std::string> cert_pem, read_optional(cert_path));
  SKIFF_ASSIGN_OR_RETURN(std::optional<std::string> key_pem, read_optional(key_path));
  if (!cert_pem && !key_pem) return std::string("missing");
  if (!cert_pem) return std::string(cert_path + " is missing");
  if (!key_pem) return std::string(key_path + " is missing");
  auto cert = parse_cert_pem(*cert_pem);
  if (!cert.is_ok()) {
    SKIFF_LOG_WARN("pki: {} is corrupt ({}); re-issuing it", cert_path, cert.status().message());
    return std::string("corrupt certificate");
  }
  auto key = parse_key_pem(*key_pem);
  if (!key.is_ok()) {
    SKIFF_LOG_WARN("pki: {} is corrupt ({}); re-issuing it", key_path, key.status().message());
    return std::string("corrupt key");
  }
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return std::string("key does not match certificate");
  }
  if (!ca.signed_cert(cert->get())) return std::string("not signed by the current CA");
  SKIFF_ASSIGN_OR_RETURN(CertInfo info, inspect_certificate(cert->get()));
  if (info.not_after - std::chrono::system_clock::now() < renew_before) {
    return std::string("expires within the renewal window");
  }
  if (required_sans != nullptr) {
    std::set<std::string> have;
    for (const std::string& d : info.dns_names) {
      auto san = parse_san(d);
      if (san.is_ok()) have.insert(san->value);
    }
    for (const std::string& ip : info.ip_addresses) have.insert(ip);
    for (const std::string& want : *required_sans) {
      if (!have.contains(want)) return "SANs do not cover " + want;
    }
  }
  warn_if_key_mode_wide(key_path);
  return std::string();
}

}  // namespace

Result<PkiState> ensure_pki(const std::string& dir, const PkiOptions& options) {
  SKIFF_RETURN_IF_ERROR(ensure_dir(dir));
  PkiPaths paths(dir);
  SKIFF_ASSIGN_OR_RETURN(std::vector<std::string> sans, server_sans(options));

  // The CA: created only when neither file exists; anything else that fails to load is an error,
  // since replacing it would invalidate every credential issued so far.
  SKIFF_ASSIGN_OR_RETURN(std::optional<std::string> ca_cert_pem, read_optional(paths.ca_cert));
  SKIFF_ASSIGN_OR_RETURN(std::optional<std::string> ca_key_pem, read_optional(paths.ca_key));
  bool ca_created = false;
  std::optional<CertificateAuthority> ca;
  if (ca_cert_pem && ca_key_pem) {
    auto loaded = CertificateAuthority::from_pem(*ca_cert_pem, *ca_key_pem);
    if (!loaded.is_ok()) {
      return error(loaded.status().code(),
                   "existing CA in " + dir + " cannot be used (" + loaded.status().message() +
                       "); refusing to replace it. Restore ca.crt/ca.key or remove both to "
                       "create a new CA (this invalidates every issued credential)");
    }
    ca.emplace(std::move(loaded).value());
    SKIFF_ASSIGN_OR_RETURN(CertInfo ca_info, inspect_certificate(ca->cert()));
    if (ca_info.not_after - std::chrono::system_clock::now() < options.renew_before) {
      SKIFF_LOG_WARN("pki: the cluster CA in {} expires soon; it is not rotated automatically",
                     dir);
    }
    warn_if_key_mode_wide(paths.ca_key);
  } else if (ca_cert_pem || ca_key_pem) {
    return error(StatusCode::kFailedPrecondition,
                 "incomplete CA in " + dir + ": " + (ca_cert_pem ? paths.ca_key : paths.ca_cert) +
                     " is missing; refusing to create a new CA over the remaining file");
  } else {
    std::string cn = options.ca_common_name;
    if (cn.empty()) cn = "skiff-ca@" + std::to_string(std::time(nullptr));
    SKIFF_ASSIGN_OR_RETURN(CertificateAuthority created,
                           CertificateAuthority::create(cn, options.key_type));
    SKIFF_RETURN_IF_ERROR(write_file_atomic(paths.ca_key, created.key_pem(), 0600));
    SKIFF_RETURN_IF_ERROR(write_file_atomic(paths.ca_cert, created.cert_pem(), 0644));
    ca.emplace(std::move(created));
    ca_created = true;
    SKIFF_LOG_INFO("pki: created cluster CA in {}", dir);
  }

  SKIFF_ASSIGN_OR_RETURN(
      std::string server_problem,
      leaf_problem(*ca, paths.server_cert, paths.server_key, options.renew_before, &sans));
  bool server_issued = false;
  if (!server_problem.empty()) {
    SKIFF_ASSIGN_OR_RETURN(
        CertAndKey pair,
        ca->issue_serving_cert("kube-apiserver", sans, options.leaf_validity, options.key_type));
    SKIFF_RETURN_IF_ERROR(write_pair(paths.server_cert, paths.server_key, pair));
    server_issued = true;
    SKIFF_LOG_INFO("pki: issued API server certificate ({}) with {} SANs", server_problem,
                   sans.size());
  }

  SKIFF_ASSIGN_OR_RETURN(
      std::string admin_problem,
      leaf_problem(*ca, paths.admin_cert, paths.admin_key, options.renew_before, nullptr));
  bool admin_issued = false;
  if (!admin_problem.empty()) {
    SKIFF_ASSIGN_OR_RETURN(CertAndKey pair,
                           ca->issue_client_cert(options.admin_user, options.admin_groups,
                                                 options.leaf_validity, options.key_type));
    SKIFF_RETURN_IF_ERROR(write_pair(paths.admin_cert, paths.admin_key, pair));
    admin_issued = true;
    SKIFF_LOG_INFO("pki: issued admin client certificate for {} ({})", options.admin_user,
                   admin_problem);
  }

  return PkiState{std::move(paths), std::move(*ca), std::move(sans),
                  ca_created,       server_issued,  admin_issued};
}

// Drains OpenSSL's thread-local error queue into one line.
std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error detail" : out;
}

}  // namespace skiff::pki
