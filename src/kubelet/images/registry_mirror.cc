#include "kubelet/images/registry_mirror.h"

#include <fcntl.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "base/log.h"
#include "base/pki.h"
#include "kubelet/images/import.h"

namespace skiff::kubelet::images {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace fs = std::filesystem;
using tcp = net::ip::tcp;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// containerd refuses manifests larger than this (remotes/docker MaxManifestSize); a bigger blob is
// never served as a manifest.
constexpr uint64_t kMaxManifestBytes = 4 * 1024 * 1024;
// Blobs are streamed in pieces of this size.
constexpr size_t kChunkBytes = 256 * 1024;
constexpr size_t kMaxHeaderBytes = 16 * 1024;
constexpr size_t kMaxNameLength = 255;
// Indexes nested deeper than this below a served image's target are not searched.
constexpr int kMaxIndexDepth = 3;

constexpr const char* kApiVersionHeader = "Docker-Distribution-API-Version";
constexpr const char* kApiVersion = "registry/2.0";
constexpr const char* kOciManifest = "application/vnd.oci.image.manifest.v1+json";
constexpr const char* kOciIndex = "application/vnd.oci.image.index.v1+json";
constexpr const char* kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
constexpr const char* kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// What one request is answered with: a small body in memory, or a range of an open blob file.
struct Reply {
  unsigned status = 200;
  std::string content_type;
  std::string digest;  // Docker-Content-Digest
  std::string body;
  UniqueFd file;
  uint64_t offset = 0;
  uint64_t length = 0;
  std::string content_range;
  bool accept_ranges = false;
  bool allow_header = false;  // 405: Allow: GET, HEAD

  uint64_t content_length() const { return file ? length : body.size(); }
};

Reply error_reply(unsigned status, const std::string& code, const std::string& message,
                  Json detail = nullptr) {
  Json item = {{"code", code}, {"message", message}};
  if (!detail.is_null()) item["detail"] = std::move(detail);
  Reply r;
  r.status = status;
  r.content_type = "application/json";
  r.body = Json{{"errors", Json::array({std::move(item)})}}.dump();
  return r;
}

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool is_word(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

// One path component of a repository name: lowercase alphanumeric runs joined by ".", "_", "__"
// or any number of "-" (the distribution reference grammar).
bool valid_name_component(std::string_view c) {
  if (c.empty() || !is_lower_alnum(c.front()) || !is_lower_alnum(c.back())) return false;
  for (size_t i = 0; i < c.size();) {
    if (is_lower_alnum(c[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < c.size() && !is_lower_alnum(c[j])) ++j;
    std::string_view sep = c.substr(i, j - i);
    bool dashes = sep.find_first_not_of('-') == std::string_view::npos;
    if (sep != "." && sep != "_" && sep != "__" && !dashes) return false;
    i = j;
  }
  return true;
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  size_t start = 0;
  while (true) {
    size_t slash = name.find('/', start);
    std::string_view component = name.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (!valid_name_component(component)) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool valid_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128 || !is_word(tag.front())) return false;
  for (char c : tag) {
    if (!is_word(c) && c != '.' && c != '-') return false;
  }
  return true;
}

bool valid_digest(std::string_view digest) {
  constexpr std::string_view kPrefix = "sha256:";
  if (digest.size() != kPrefix.size() + 64 || digest.substr(0, kPrefix.size()) != kPrefix) {
    return false;
  }
  for (char c : digest.substr(kPrefix.size())) {
    if (!is_hex(c)) return false;
  }
  return true;
}

// A registry host as containerd puts it in ?ns=: a DNS name or IPv4 address, or a bracketed IPv6
// address, with an optional port.
bool valid_host(std::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  size_t i = 0;
  if (host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (char c : host.substr(1, close - 1)) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':') return false;
    }
    i = close + 1;
  } else {
    while (i < host.size() && host[i] != ':') {
      char c = host[i];
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') return false;
      ++i;
    }
    if (i == 0) return false;
  }
  if (i == host.size()) return true;
  if (host[i] != ':' || i + 1 == host.size() || host.size() - i - 1 > 5) return false;
  for (char c : host.substr(i + 1)) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// Decodes %XX escapes; nullopt for a malformed escape.
std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      return std::nullopt;
    }
    out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  return out;
}

// The value of `key` in a query string ("" when absent); nullopt for a malformed escape.
std::optional<std::string> query_param(std::string_view query, std::string_view key) {
  size_t start = 0;
  while (start <= query.size()) {
    size_t amp = query.find('&', start);
    std::string_view pair =
        query.substr(start, amp == std::string_view::npos ? std::string_view::npos : amp - start);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) == key) {
      if (eq == std::string_view::npos) return std::string();
      std::string value(pair.substr(eq + 1));
      for (char& c : value) {
        if (c == '+') c = ' ';
      }
      return percent_decode(value);
    }
    if (amp == std::string_view::npos) break;
    start = amp + 1;
  }
  return std::string();
}

// "library/busybox" with ns "docker.io" gives "docker.io/library/busybox". Without ns the name is
// read as docker reads a reference: a first component with a dot is a registry host, anything
// else lives on docker.io, and a single component is an official image under library/.
std::string full_repository(const std::string& ns, const std::string& name) {
  if (!ns.empty()) return ns + "/" + name;
  size_t slash = name.find('/');
  if (slash == std::string::npos) return "docker.io/library/" + name;
  std::string_view first(name.data(), slash);
  if (first.find('.') != std::string_view::npos || first == "localhost") return name;
  return "docker.io/" + name;
}

bool known_manifest_type(const std::string& t) {
  return t == kOciManifest || t == kOciIndex || t == kDockerManifest || t == kDockerManifestList;
}

// The media type of a manifest or index document: its mediaType field, or for OCI documents that
// leave it out, what its shape says; "" when it is neither.
std::string manifest_media_type(const std::string& bytes) {
  Json doc = Json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return "";
  if (auto it = doc.find("mediaType"); it != doc.end()) {
    if (!it->is_string()) return "";
    std::string t = it->get<std::string>();
    return known_manifest_type(t) ? t : "";
  }
  auto schema = doc.find("schemaVersion");
  if (schema == doc.end() || !schema->is_number_integer() || schema->get<int>() != 2) return "";
  if (auto m = doc.find("manifests"); m != doc.end() && m->is_array()) return kOciIndex;
  auto config = doc.find("config");
  auto layers = doc.find("layers");
  if (config != doc.end() && config->is_object() && layers != doc.end() && layers->is_array()) {
    return kOciManifest;
  }
  return "";
}

struct ByteRange {
  uint64_t first = 0;
  uint64_t last = 0;  // inclusive
  bool satisfiable = true;
};

// One "bytes=" range of a `size`-byte blob. nullopt means "ignore the header and send it all",
// which RFC 9110 allows for anything this server does not handle (several ranges, other units,
// syntax errors).
std::optional<ByteRange> parse_range(std::string_view header, uint64_t size) {
  constexpr std::string_view kUnit = "bytes=";
  if (header.substr(0, kUnit.size()) != kUnit) return std::nullopt;
  std::string_view spec = header.substr(kUnit.size());
  if (spec.find(',') != std::string_view::npos) return std::nullopt;
  size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  auto number = [](std::string_view s) -> std::optional<uint64_t> {
    if (s.empty() || s.size() > 19) return std::nullopt;
    uint64_t v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    return v;
  };
  std::string_view a = spec.substr(0, dash), b = spec.substr(dash + 1);
  ByteRange r;
  if (a.empty()) {  // the last N bytes
    auto n = number(b);
    if (!n) return std::nullopt;
    if (*n == 0 || size == 0) return ByteRange{0, 0, false};
    r.first = size - std::min(*n, size);
    r.last = size - 1;
    return r;
  }
  auto first = number(a);
  if (!first) return std::nullopt;
  std::optional<uint64_t> last;
  if (!b.empty()) {
    last = number(b);
    if (!last || *last < *first) return std::nullopt;
  }
  if (*first >= size) return ByteRange{0, 0, false};
  r.first = *first;
  r.last = last ? std::min(*last, size - 1) : size - 1;
  return r;
}

std::string blob_path(const std::string& content_dir, const std::string& digest) {
  return content_dir + "/blobs/sha256/" + digest.substr(7);
}

// Opens a content store blob (never following a symlink); the fd and its size, or errno.
std::pair<UniqueFd, int> open_blob(const std::string& path, uint64_t* size) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return {UniqueFd(), errno};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return {UniqueFd(), errno};
  if (!S_ISREG(st.st_mode)) return {UniqueFd(), ENOENT};
  *size = static_cast<uint64_t>(st.st_size);
  return {std::move(fd), 0};
}

bool read_fully(int fd, std::string* out, uint64_t size) {
  out->resize(size);
  uint64_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out->data() + done, size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<uint64_t>(n);
  }
  return true;
}

// Creates the listening socket, in the calling thread's network namespace.
Result<int> listen_socket(const net::ip::address& address, int port) {
  int family = address.is_v6() ? AF_INET6 : AF_INET;
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return error(StatusCode::kInternal, std::string("socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  if (::bind(fd.get(), endpoint.data(), static_cast<socklen_t>(endpoint.size())) != 0 ||
      ::listen(fd.get(), SOMAXCONN) != 0) {
    return error(StatusCode::kUnavailable, "listening on " + address.to_string() + ":" +
                                               std::to_string(port) + ": " + std::strerror(errno));
  }
  return fd.release();
}

}  // namespace

struct RegistryMirror::Impl {
  explicit Impl(RegistryMirrorOptions o) : options(std::move(o)) {}

  const RegistryMirrorOptions options;
  std::string hosts_file;  // written by start(), removed by stop()
  std::atomic<int> port{0};
  std::string url;
  std::atomic<int> active_connections{0};

  bool started = false;
  // Declared before the io_context: coroutine frames destroyed with it still count connections.
  std::unique_ptr<net::thread_pool> workers;  // resolver calls and file reads for the answers
  std::unique_ptr<net::io_context> ioc;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::vector<std::thread> io_threads;

  Status start();
  void stop();

  Reply handle(bhttp::verb method, const std::string& target, const std::string& range);
  Reply serve_manifest(const std::string& digest, const std::string& media_type);
  // A manifest asked for by digest: served only when it belongs to a served image.
  Reply serve_manifest_by_digest(const std::string& digest);
  // The media type to serve `digest` with ("" means: detect it) when it is the target of a served
  // image or listed in a served index; nullopt when it is not.
  Result<std::optional<std::string>> served_by_digest(const std::string& digest);
  // Whether the index in the content store under `index_digest` lists `digest`, directly or
  // through nested indexes (at most `depth` levels); the listed media type when it does.
  std::optional<std::string> index_lists(const std::string& index_digest, const std::string& digest,
                                         int depth);
  Reply serve_blob(const std::string& digest, const std::string& range);

  // Runs handle() on the worker pool and completes with its Reply on the caller's executor.
  // (Plain function objects rather than a coroutine lambda given to co_spawn: with GCC 12 and
  // Boost 1.74 that lambda's captures were freed twice.)
  template <typename Token>
  auto async_handle(bhttp::verb method, std::string target, std::string range, Token&& token) {
    return net::async_initiate<Token, void(Reply)>(
        [this](auto handler, bhttp::verb m, std::string t, std::string r) {
          net::post(*workers, [this, handler = std::move(handler), m, t = std::move(t),
                               r = std::move(r)]() mutable {
            Reply reply = handle(m, t, r);
            auto executor = net::get_associated_executor(handler);
            net::dispatch(executor,
                          [handler = std::move(handler), reply = std::move(reply)]() mutable {
                            std::move(handler)(std::move(reply));
                          });
          });
        },
        token, method, std::move(target), std::move(range));
  }
  net::awaitable<Reply> async_handle(bhttp::verb method, std::string target, std::string range) {
    return async_handle(method, std::move(target), std::move(range), net::use_awaitable);
  }

  net::awaitable<void> accept_loop();
  net::awaitable<void> serve(tcp::socket socket);
  // Writes the answer; false when the connection broke.
  net::awaitable<bool> write_reply(beast::tcp_stream& stream, Reply& reply, unsigned version,
                                   bool keep_alive, bool head, uint64_t* body_bytes);
  void reject(tcp::socket& socket);
};

Reply RegistryMirror::Impl::handle(bhttp::verb method, const std::string& target,
                                   const std::string& range) {
  if (method != bhttp::verb::get && method != bhttp::verb::head) {
    Reply r = error_reply(405, "UNSUPPORTED", "the mirror is read-only: GET and HEAD only");
    r.allow_header = true;
    return r;
  }
  size_t question = target.find('?');
  std::string_view raw_path(target.data(),
                            question == std::string::npos ? target.size() : question);
  std::string_view query = question == std::string::npos
                               ? std::string_view()
                               : std::string_view(target).substr(question + 1);
  auto decoded = percent_decode(raw_path);
  if (!decoded) return error_reply(400, "NAME_INVALID", "malformed escape in the path");
  const std::string& path = *decoded;
  if (path == "/v2" || path == "/v2/") {
    Reply r;
    r.content_type = "application/json";
    r.body = "{}";
    return r;
  }
  constexpr std::string_view kPrefix = "/v2/";
  if (path.compare(0, kPrefix.size(), kPrefix) != 0) {
    return error_reply(404, "UNSUPPORTED", "not a registry API path");
  }
  std::string_view rest = std::string_view(path).substr(kPrefix.size());
  size_t last = rest.rfind('/');
  size_t kind_start = last == std::string_view::npos ? std::string_view::npos
                                                     : rest.rfind('/', last == 0 ? 0 : last - 1);
  if (last == std::string_view::npos || kind_start == std::string_view::npos || last == 0) {
    return error_reply(404, "UNSUPPORTED", "not a registry API path");
  }
  std::string name(rest.substr(0, kind_start));
  std::string kind(rest.substr(kind_start + 1, last - kind_start - 1));
  std::string reference(rest.substr(last + 1));
  if (kind != "manifests" && kind != "blobs") {
    return error_reply(404, "UNSUPPORTED", "the mirror serves only manifests and blobs");
  }
  if (!valid_name(name)) {
    return error_reply(400, "NAME_INVALID", "invalid repository name", Json{{"name", name}});
  }
  auto ns = query_param(query, "ns");
  if (!ns || (!ns->empty() && !valid_host(*ns))) {
    return error_reply(400, "NAME_INVALID", "invalid registry host in ns");
  }

  if (kind == "blobs") {
    if (!valid_digest(reference)) {
      return error_reply(400, "DIGEST_INVALID", "only sha256:<64 lowercase hex> digests are served",
                         Json{{"digest", reference}});
    }
    return serve_blob(reference, range);
  }
  if (reference.find(':') != std::string::npos) {
    if (!valid_digest(reference)) {
      return error_reply(400, "DIGEST_INVALID", "only sha256:<64 lowercase hex> digests are served",
                         Json{{"digest", reference}});
    }
    return serve_manifest_by_digest(reference);
  }
  if (!valid_tag(reference)) {
    return error_reply(400, "TAG_INVALID", "invalid tag", Json{{"tag", reference}});
  }
  std::string image = full_repository(*ns, name) + ":" + reference;
  if (!options.resolve_tag) {
    return error_reply(404, "MANIFEST_UNKNOWN", "manifest unknown", Json{{"tag", reference}});
  }
  auto resolved = options.resolve_tag.resolve(image);
  if (!resolved.is_ok()) {
    SKIFF_LOG_WARN("registry mirror: resolving {}: {}", image, resolved.status().to_string());
    return error_reply(503, "UNAVAILABLE",
                       "resolving " + image + ": " + resolved.status().message());
  }
  if (!resolved->has_value()) {
    return error_reply(404, "MANIFEST_UNKNOWN", "manifest unknown", Json{{"tag", reference}});
  }
  const ManifestDescriptor& desc = **resolved;
  if (!valid_digest(desc.digest)) {
    SKIFF_LOG_WARN("registry mirror: {} resolves to {}, which is not a sha256 digest", image,
                   desc.digest);
    return error_reply(404, "MANIFEST_UNKNOWN", "manifest unknown", Json{{"tag", reference}});
  }
  return serve_manifest(desc.digest, desc.media_type);
}

Reply RegistryMirror::Impl::serve_manifest(const std::string& digest,
                                           const std::string& media_type) {
  uint64_t size = 0;
  auto [fd, err] = open_blob(blob_path(options.content_dir, digest), &size);
  auto unknown = [&] {
    return error_reply(404, "MANIFEST_UNKNOWN", "manifest unknown", Json{{"digest", digest}});
  };
  if (!fd) {
    if (err != ENOENT) {
      SKIFF_LOG_WARN("registry mirror: opening {}: {}", digest, std::strerror(err));
    }
    return unknown();
  }
  if (size > kMaxManifestBytes) return unknown();
  Reply r;
  if (!read_fully(fd.get(), &r.body, size)) {
    SKIFF_LOG_WARN("registry mirror: reading {}: short read", digest);
    return unknown();
  }
  std::string detected = manifest_media_type(r.body);
  if (detected.empty()) return unknown();  // some other blob: a config, a layer
  r.content_type = media_type.empty() ? detected : media_type;
  r.digest = digest;
  return r;
}

Result<std::optional<std::string>> RegistryMirror::Impl::served_by_digest(
    const std::string& digest) {
  if (!options.resolve_tag.targets) return std::optional<std::string>();
  SKIFF_ASSIGN_OR_RETURN(std::vector<ManifestDescriptor> targets, options.resolve_tag.targets());
  for (const ManifestDescriptor& target : targets) {
    if (target.digest == digest) return std::optional<std::string>(target.media_type);
  }
  for (const ManifestDescriptor& target : targets) {
    if (!valid_digest(target.digest)) continue;
    if (auto listed = index_lists(target.digest, digest, kMaxIndexDepth)) {
      return std::optional<std::string>(std::move(listed));
    }
  }
  return std::optional<std::string>();
}

std::optional<std::string> RegistryMirror::Impl::index_lists(const std::string& index_digest,
                                                             const std::string& digest, int depth) {
  uint64_t size = 0;
  auto [fd, err] = open_blob(blob_path(options.content_dir, index_digest), &size);
  std::string bytes;
  if (!fd || size > kMaxManifestBytes || !read_fully(fd.get(), &bytes, size)) return std::nullopt;
  std::string type = manifest_media_type(bytes);
  if (type != kOciIndex && type != kDockerManifestList) return std::nullopt;  // a plain manifest
  Json index = Json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  const Json& manifests = index["manifests"];
  if (!manifests.is_array()) return std::nullopt;
  for (const Json& m : manifests) {
    if (!m.is_object() || !m.contains("digest") || !m["digest"].is_string()) continue;
    if (m["digest"].get<std::string>() == digest) {
      std::string media_type;
      if (auto t = m.find("mediaType"); t != m.end() && t->is_string()) media_type = *t;
      return known_manifest_type(media_type) ? media_type : std::string();
    }
  }
  if (depth <= 1) return std::nullopt;
  for (const Json& m : manifests) {
    if (!m.is_object() || !m.contains("digest") || !m["digest"].is_string()) continue;
    std::string child = m["digest"].get<std::string>();
    if (!valid_digest(child)) continue;
    if (auto listed = index_lists(child, digest, depth - 1)) return listed;
  }
  return std::nullopt;
}

Reply RegistryMirror::Impl::serve_manifest_by_digest(const std::string& digest) {
  auto served = served_by_digest(digest);
  if (!served.is_ok()) {
    SKIFF_LOG_WARN("registry mirror: listing the served images for {}: {}", digest,
                   served.status().to_string());
    return error_reply(503, "UNAVAILABLE",
                       "listing the served images: " + served.status().message());
  }
  if (!served->has_value()) {
    return error_reply(404, "MANIFEST_UNKNOWN", "manifest unknown", Json{{"digest", digest}});
  }
  return serve_manifest(digest, **served);
}

Reply RegistryMirror::Impl::serve_blob(const std::string& digest, const std::string& range) {
  uint64_t size = 0;
  auto [fd, err] = open_blob(blob_path(options.content_dir, digest), &size);
  if (!fd) {
    if (err != ENOENT) {
      SKIFF_LOG_WARN("registry mirror: opening {}: {}", digest, std::strerror(err));
    }
    return error_reply(404, "BLOB_UNKNOWN", "blob unknown to registry", Json{{"digest", digest}});
  }
  Reply r;
  r.content_type = "application/octet-stream";
  r.digest = digest;
  r.accept_ranges = true;
  r.length = size;
  if (!range.empty()) {
    if (auto br = parse_range(range, size)) {
      if (!br->satisfiable) {
        Reply bad = error_reply(416, "UNSUPPORTED", "range not satisfiable");
        bad.content_range = "bytes */" + std::to_string(size);
        return bad;
      }
      r.status = 206;
      r.offset = br->first;
      r.length = br->last - br->first + 1;
      r.content_range = "bytes " + std::to_string(br->first) + "-" + std::to_string(br->last) +
                        "/" + std::to_string(size);
    }
  }
  r.file = std::move(fd);
  return r;
}

net::awaitable<bool> RegistryMirror::Impl::write_reply(beast::tcp_stream& stream, Reply& reply,
                                                       unsigned version, bool keep_alive, bool head,
                                                       uint64_t* body_bytes) {
  bhttp::response<bhttp::empty_body> res{static_cast<bhttp::status>(reply.status), version};
  res.set(kApiVersionHeader, kApiVersion);
  if (!reply.content_type.empty()) res.set(bhttp::field::content_type, reply.content_type);
  if (!reply.digest.empty()) res.set("Docker-Content-Digest", reply.digest);
  if (!reply.content_range.empty()) res.set(bhttp::field::content_range, reply.content_range);
  if (reply.accept_ranges) res.set(bhttp::field::accept_ranges, "bytes");
  if (reply.allow_header) res.set(bhttp::field::allow, "GET, HEAD");
  res.content_length(reply.content_length());
  res.keep_alive(keep_alive);

  beast::error_code ec;
  bhttp::response_serializer<bhttp::empty_body> sr{res};
  stream.expires_after(options.io_timeout);
  co_await bhttp::async_write_header(stream, sr, net::redirect_error(net::use_awaitable, ec));
  if (ec) co_return false;
  if (head) co_return true;

  if (!reply.file) {
    stream.expires_after(options.io_timeout);
    *body_bytes += co_await net::async_write(stream, net::buffer(reply.body),
                                             net::redirect_error(net::use_awaitable, ec));
    co_return !ec;
  }
  std::vector<char> chunk(static_cast<size_t>(std::min<uint64_t>(kChunkBytes, reply.length)));
  uint64_t position = reply.offset;
  uint64_t remaining = reply.length;
  while (remaining > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(chunk.size(), remaining));
    ssize_t n = ::pread(reply.file.get(), chunk.data(), want, static_cast<off_t>(position));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // The blob shrank or vanished under us: the length promised cannot be kept, so the
      // connection must end for the client to notice.
      SKIFF_LOG_WARN("registry mirror: reading {} at {}: {}", reply.digest, position,
                     n < 0 ? std::strerror(errno) : "unexpected end of file");
      co_return false;
    }
    stream.expires_after(options.io_timeout);
    size_t written =
        co_await net::async_write(stream, net::buffer(chunk.data(), static_cast<size_t>(n)),
                                  net::redirect_error(net::use_awaitable, ec));
    *body_bytes += written;
    if (ec) co_return false;
    position += static_cast<uint64_t>(n);
    remaining -= static_cast<uint64_t>(n);
  }
  co_return true;
}

net::awaitable<void> RegistryMirror::Impl::serve(tcp::socket socket) {
  struct Slot {
    std::atomic<int>& count;
    ~Slot() { count.fetch_sub(1); }
  } slot{active_connections};
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  beast::error_code ec;
  while (true) {
    bhttp::request_parser<bhttp::empty_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    stream.expires_after(options.io_timeout);
    co_await bhttp::async_read(stream, buffer, parser, net::redirect_error(net::use_awaitable, ec));
    if (ec) break;  // closed, idle too long, or not a request we take (a body, huge headers)
    const auto& req = parser.get();
    auto begin = Clock::now();
    MirrorRequest record;
    record.method = std::string(req.method_string());
    record.target = std::string(req.target());
    record.user_agent = std::string(req[bhttp::field::user_agent]);
    record.accept = std::string(req[bhttp::field::accept]);
    record.range = std::string(req[bhttp::field::range]);
    bool head = req.method() == bhttp::verb::head;
    bool keep_alive = req.keep_alive();
    unsigned version = req.version();

    // The answer is worked out on the worker pool: the resolver may wait on containerd.
    Reply reply = co_await async_handle(req.method(), record.target, record.range);

    bool ok = co_await write_reply(stream, reply, version, keep_alive, head, &record.body_bytes);
    record.status = static_cast<int>(reply.status);
    record.duration = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - begin);
    SKIFF_LOG_DEBUG("registry mirror: {} {} -> {} ({} bytes, {} us)", record.method, record.target,
                    record.status, record.body_bytes, record.duration.count());
    if (options.on_request) options.on_request(record);
    if (!ok || !keep_alive) break;
  }
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

void RegistryMirror::Impl::reject(tcp::socket& socket) {
  static const std::string kBody =
      R"({"errors":[{"code":"TOOMANYREQUESTS","message":"too many connections to the mirror"}]})";
  static const std::string kResponse =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n" +
      std::string(kApiVersionHeader) + ": " + kApiVersion +
      "\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " + std::to_string(kBody.size()) +
      "\r\n\r\n" + kBody;
  // Best effort and never blocking: a fresh socket's send buffer takes this whole.
  (void)::send(socket.native_handle(), kResponse.data(), kResponse.size(),
               MSG_DONTWAIT | MSG_NOSIGNAL);
  beast::error_code ec;
  socket.shutdown(tcp::socket::shutdown_send, ec);
  socket.close(ec);
}

net::awaitable<void> RegistryMirror::Impl::accept_loop() {
  while (true) {
    beast::error_code ec;
    auto socket = co_await acceptor->async_accept(net::make_strand(*ioc),
                                                  net::redirect_error(net::use_awaitable, ec));
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor->is_open()) co_return;
      // Out of descriptors or the like: back off instead of spinning.
      SKIFF_LOG_WARN("registry mirror: accept: {}", ec.message());
      net::steady_timer timer(co_await net::this_coro::executor, std::chrono::milliseconds(100));
      co_await timer.async_wait(net::redirect_error(net::use_awaitable, ec));
      continue;
    }
    tcp::socket connection(std::move(socket));
    if (active_connections.fetch_add(1) >= options.max_connections) {
      active_connections.fetch_sub(1);
      reject(connection);
      continue;
    }
    auto executor = connection.get_executor();
    net::co_spawn(executor, serve(std::move(connection)), net::detached);
  }
}

Status RegistryMirror::Impl::start() {
  if (started) return error(StatusCode::kFailedPrecondition, "the registry mirror is running");
  if (options.content_dir.empty() || options.hosts_dir.empty()) {
    return error(StatusCode::kInvalidArgument,
                 "the registry mirror needs a content directory and a hosts directory");
  }
  if (options.io_threads < 1 || options.max_connections < 1 || options.port < 0 ||
      options.port > 65535) {
    return error(StatusCode::kInvalidArgument,
                 "the registry mirror needs io_threads and max_connections >= 1 and a port "
                 "in 0..65535");
  }
  beast::error_code ec;
  auto address = net::ip::make_address(options.bind_address, ec);
  if (ec) return error(StatusCode::kInvalidArgument, "bad bind address " + options.bind_address);

  Result<int> fd = error(StatusCode::kInternal, "not bound");
  if (options.network_namespace.empty()) {
    fd = listen_socket(address, options.port);
  } else {
    // A socket belongs to the network namespace of the thread that creates it: make it on a
    // thread of its own that enters the namespace and then ends.
    std::thread in_namespace([&] {
      UniqueFd ns(::open(options.network_namespace.c_str(), O_RDONLY | O_CLOEXEC));
      if (!ns || ::setns(ns.get(), CLONE_NEWNET) != 0) {
        fd =
            error(StatusCode::kInternal, "entering network namespace " + options.network_namespace +
                                             ": " + std::strerror(errno));
        return;
      }
      fd = listen_socket(address, options.port);
    });
    in_namespace.join();
  }
  if (!fd.is_ok()) return fd.status();

  auto context = std::make_unique<net::io_context>(options.io_threads);
  auto listener = std::make_unique<tcp::acceptor>(*context);
  listener->assign(address.is_v6() ? tcp::v6() : tcp::v4(), *fd, ec);
  if (ec) {
    ::close(*fd);
    return error(StatusCode::kInternal, "taking the listening socket: " + ec.message());
  }
  int bound = listener->local_endpoint(ec).port();
  if (ec) return error(StatusCode::kInternal, "reading the bound port: " + ec.message());
  std::string host =
      address.is_unspecified() ? (address.is_v6() ? "::1" : "127.0.0.1") : address.to_string();
  if (address.is_v6()) host = "[" + host + "]";
  std::string mirror_url = "http://" + host + ":" + std::to_string(bound);

  std::string file = options.hosts_dir + "/_default/hosts.toml";
  std::error_code fs_ec;
  fs::create_directories(options.hosts_dir + "/_default", fs_ec);
  if (fs_ec) {
    return error(StatusCode::kInternal,
                 "creating " + options.hosts_dir + "/_default: " + fs_ec.message());
  }
  SKIFF_RETURN_IF_ERROR(pki::write_file_atomic(file, render_mirror_hosts_toml(mirror_url), 0644));

  hosts_file = file;
  url = mirror_url;
  port = bound;
  ioc = std::move(context);
  acceptor = std::move(listener);
  workers = std::make_unique<net::thread_pool>(static_cast<size_t>(options.io_threads));
  net::co_spawn(*ioc, accept_loop(), net::detached);
  for (int i = 0; i < options.io_threads; ++i) io_threads.emplace_back([this] { ioc->run(); });
  started = true;
  SKIFF_LOG_INFO("registry mirror: serving {} at {} (hosts {})", options.content_dir, url, file);
  return Status::ok();
}

void RegistryMirror::Impl::stop() {
  if (!started) return;
  started = false;
  std::error_code ec;
  fs::remove(hosts_file, ec);
  // The acceptor and every connection go with the io_context; stopping it first means no handler
  // runs while they are torn down.
  ioc->stop();
  for (auto& t : io_threads) t.join();
  io_threads.clear();
  workers->stop();
  workers->join();
  // Worker jobs that never ran hold suspended connections: destroy them while the io_context
  // their sockets belong to still exists, then the io_context with everything else it holds.
  workers.reset();
  acceptor.reset();
  ioc.reset();
}

RegistryMirror::RegistryMirror(RegistryMirrorOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

RegistryMirror::~RegistryMirror() {
  stop();
}

Status RegistryMirror::start() {
  return impl_->start();
}
void RegistryMirror::stop() {
  impl_->stop();
}
int RegistryMirror::port() const {
  return impl_->port.load();
}
std::string RegistryMirror::url() const {
  return impl_->url;
}
const std::string& RegistryMirror::hosts_dir() const {
  return impl_->options.hosts_dir;
}

std::string containerd_content_dir(const std::string& containerd_root) {
  return containerd_root + "/io.containerd.content.v1.content";
}

std::string render_mirror_hosts_toml(const std::string& mirror_url) {
  // No `server`: after the mirror, containerd goes to each registry's own default endpoint
  // (registry-1.docker.io for docker.io, https://<host> otherwise).
  return "# skiff: the node's registry mirror serves the images the node already has.\n"
         "[host.\"" +
         mirror_url +
         "\"]\n"
         "  capabilities = [\"pull\", \"resolve\"]\n";
}

namespace {

void append_varint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// Every length-delimited field `number` of the serialized message `message` (strings, embedded
// messages, map entries), in order; nullopt when the message does not parse.
std::optional<std::vector<std::string>> bytes_fields(const std::string& message, int number) {
  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromString(message)) return std::nullopt;
  std::vector<std::string> found;
  for (int i = 0; i < fields.field_count(); ++i) {
    const auto& f = fields.field(i);
    if (f.number() == number && f.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      found.push_back(f.length_delimited());
    }
  }
  return found;
}

// The last length-delimited field `number` (for a singular field the last occurrence wins);
// nullopt when the message does not parse or lacks it.
std::optional<std::string> bytes_field(const std::string& message, int number) {
  auto all = bytes_fields(message, number);
  if (!all || all->empty()) return std::nullopt;
  return std::move(all->back());
}

StatusCode code_for_grpc(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
      return StatusCode::kUnavailable;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return StatusCode::kDeadlineExceeded;
    case grpc::StatusCode::CANCELLED:
      return StatusCode::kCancelled;
    default:
      return StatusCode::kInternal;
  }
}

// One unary call to a containerd service, `method` as "images.v1.Images/Get"; the response
// bytes. kNotFound when containerd says so.
Result<std::string> containerd_call(grpc::GenericStub& stub, const std::string& ns,
                                    std::chrono::milliseconds timeout, const std::string& method,
                                    const std::string& request_bytes) {
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  context.AddMetadata("containerd-namespace", ns);
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/containerd.services." + method, grpc::StubOptions(), &request,
                 &response, [&done](grpc::Status s) { done.set_value(std::move(s)); });
  grpc::Status status = done.get_future().get();
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
    return error(StatusCode::kNotFound, "containerd " + method + ": " + status.error_message());
  }
  if (!status.ok()) {
    return error(code_for_grpc(status.error_code()),
                 "containerd " + method + ": " + status.error_message());
  }
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) {
    return error(StatusCode::kInternal, "containerd " + method + ": unreadable response");
  }
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

// A message with one string field 1 (GetImageRequest { name }, InfoRequest { digest }).
std::string string_field_1(const std::string& value) {
  std::string bytes = "\x0a";
  append_varint(&bytes, value.size());
  return bytes + value;
}

// Image { string name = 1; map<string, string> labels = 2; Descriptor target = 3; }
// Descriptor { string media_type = 1; string digest = 2; }
Result<ManifestDescriptor> image_target(const std::string& image) {
  auto target = bytes_field(image, 3);
  if (!target) return error(StatusCode::kInternal, "containerd images: image has no target");
  ManifestDescriptor desc;
  desc.media_type = bytes_field(*target, 1).value_or("");
  desc.digest = bytes_field(*target, 2).value_or("");
  if (desc.digest.empty()) {
    return error(StatusCode::kInternal, "containerd images: target without digest");
  }
  return desc;
}

// Whether content `digest` carries kImportedLabel=true (false when containerd lacks it).
// InfoRequest { string digest = 1; }  InfoResponse { Info info = 1; }
// Info { ...; map<string, string> labels = 5; } (a map entry: key = 1, value = 2)
Result<bool> marked_imported(grpc::GenericStub& stub, const std::string& ns,
                             std::chrono::milliseconds timeout, const std::string& digest) {
  Result<std::string> response =
      containerd_call(stub, ns, timeout, "content.v1.Content/Info", string_field_1(digest));
  if (!response.is_ok() && response.status().code() == StatusCode::kNotFound) return false;
  SKIFF_RETURN_IF_ERROR(response.status());
  auto info = bytes_field(*response, 1);
  if (!info) return error(StatusCode::kInternal, "containerd content/Info: no info in response");
  for (const std::string& entry : bytes_fields(*info, 5).value_or(std::vector<std::string>())) {
    if (bytes_field(entry, 1).value_or("") == kImportedLabel &&
        bytes_field(entry, 2).value_or("") == "true") {
      return true;
    }
  }
  return false;
}

}  // namespace

TagResolver containerd_tag_resolver(const std::string& containerd_address, const std::string& ns,
                                    std::chrono::milliseconds timeout) {
  std::string path = containerd_address;
  if (path.rfind("unix://", 0) == 0) path = path.substr(7);
  auto stub = std::make_shared<grpc::GenericStub>(
      grpc::CreateChannel("unix:" + path, grpc::InsecureChannelCredentials()));
  TagResolver resolver;
  resolver.resolve =
      [stub, ns,
       timeout](const std::string& reference) -> Result<std::optional<ManifestDescriptor>> {
    // GetImageRequest { string name = 1; }  GetImageResponse { Image image = 1; }
    Result<std::string> response =
        containerd_call(*stub, ns, timeout, "images.v1.Images/Get", string_field_1(reference));
    if (!response.is_ok() && response.status().code() == StatusCode::kNotFound) {
      return std::optional<ManifestDescriptor>();
    }
    SKIFF_RETURN_IF_ERROR(response.status());
    auto image = bytes_field(*response, 1);
    if (!image) return error(StatusCode::kInternal, "containerd images/Get: no image in response");
    SKIFF_ASSIGN_OR_RETURN(ManifestDescriptor desc, image_target(*image));
    // Pulled from a registry: the registry answers for it.
    SKIFF_ASSIGN_OR_RETURN(bool imported, marked_imported(*stub, ns, timeout, desc.digest));
    if (!imported) return std::optional<ManifestDescriptor>();
    return std::optional<ManifestDescriptor>(std::move(desc));
  };
  resolver.targets = [stub, ns, timeout]() -> Result<std::vector<ManifestDescriptor>> {
    // ListImagesRequest { repeated string filters = 1; } (none: every image; a node has few)
    // ListImagesResponse { repeated Image images = 1; }
    SKIFF_ASSIGN_OR_RETURN(std::string response,
                           containerd_call(*stub, ns, timeout, "images.v1.Images/List", ""));
    auto images = bytes_fields(response, 1);
    if (!images) return error(StatusCode::kInternal, "containerd images/List: unreadable response");
    std::vector<ManifestDescriptor> targets;
    std::set<std::string> seen;
    for (const std::string& image : *images) {
      SKIFF_ASSIGN_OR_RETURN(ManifestDescriptor desc, image_target(image));
      if (!seen.insert(desc.digest).second) continue;  // several names, one target
      SKIFF_ASSIGN_OR_RETURN(bool imported, marked_imported(*stub, ns, timeout, desc.digest));
      if (imported) targets.push_back(std::move(desc));
    }
    return targets;
  };
  return resolver;
}

}  // namespace skiff::kubelet::images
