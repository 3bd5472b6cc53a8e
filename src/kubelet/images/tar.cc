#include "kubelet/images/tar.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <sstream>

namespace skiff::kubelet::images {
namespace {

constexpr size_t kBlock = 512;

// Field offsets and widths of the ustar header.
constexpr size_t kNameOff = 0, kNameLen = 100;
constexpr size_t kModeOff = 100, kModeLen = 8;
constexpr size_t kUidOff = 108, kUidLen = 8;
constexpr size_t kGidOff = 116, kGidLen = 8;
constexpr size_t kSizeOff = 124, kSizeLen = 12;
constexpr size_t kMtimeOff = 136, kMtimeLen = 12;
constexpr size_t kChksumOff = 148, kChksumLen = 8;
constexpr size_t kTypeOff = 156;
constexpr size_t kLinkOff = 157, kLinkLen = 100;
constexpr size_t kMagicOff = 257;
constexpr size_t kVersionOff = 263;
constexpr size_t kUnameOff = 265;
constexpr size_t kGnameOff = 297;
constexpr size_t kPrefixOff = 345, kPrefixLen = 155;

using Header = std::array<char, kBlock>;

// Writes `value` as zero-padded octal filling width-1 digits plus a NUL.
bool put_octal(Header& h, size_t off, size_t width, uint64_t value) {
  std::string digits(width - 1, '0');
  for (size_t i = width - 1; i-- > 0;) {
    digits[i] = static_cast<char>('0' + (value & 7));
    value >>= 3;
  }
  if (value != 0) return false;
  std::memcpy(h.data() + off, digits.data(), width - 1);
  h[off + width - 1] = '\0';
  return true;
}

void put_string(Header& h, size_t off, std::string_view s) {
  std::memcpy(h.data() + off, s.data(), s.size());
}

unsigned checksum(const Header& h) {
  unsigned sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    bool in_field = i >= kChksumOff && i < kChksumOff + kChksumLen;
    sum += in_field ? static_cast<unsigned>(' ') : static_cast<unsigned char>(h[i]);
  }
  return sum;
}

// Splits `name` into ustar's prefix and name fields; false if it cannot fit.
bool split_name(std::string_view name, std::string_view* prefix, std::string_view* rest) {
  if (name.size() <= kNameLen) {
    *prefix = {};
    *rest = name;
    return true;
  }
  // The split must be at a '/' with at most kPrefixLen bytes before it and kNameLen after.
  // (Never at a directory's trailing '/', which would leave the name field empty.)
  size_t limit = std::min(name.size() - 2, kPrefixLen);
  for (size_t i = limit + 1; i-- > 0;) {
    if (name[i] != '/') continue;
    if (name.size() - i - 1 > kNameLen) break;
    if (i == 0) break;
    *prefix = name.substr(0, i);
    *rest = name.substr(i + 1);
    return true;
  }
  return false;
}

std::string field_string(const Header& h, size_t off, size_t len) {
  const char* start = h.data() + off;
  size_t n = 0;
  while (n < len && start[n] != '\0') ++n;
  return std::string(start, n);
}

bool parse_octal(const Header& h, size_t off, size_t len, uint64_t* out) {
  // Base-256 (GNU) for values that overflow octal: high bit of the first byte set.
  const auto* p = reinterpret_cast<const unsigned char*>(h.data() + off);
  if (p[0] & 0x80) {
    uint64_t v = p[0] & 0x7f;
    for (size_t i = 1; i < len; ++i) v = (v << 8) | p[i];
    *out = v;
    return true;
  }
  uint64_t v = 0;
  size_t i = 0;
  while (i < len && (p[i] == ' ' || p[i] == '\0')) ++i;
  bool any = false;
  for (; i < len && p[i] >= '0' && p[i] <= '7'; ++i) {
    v = (v << 3) | static_cast<uint64_t>(p[i] - '0');
    any = true;
  }
  *out = any ? v : 0;
  return true;
}

bool all_zero(const Header& h) {
  return std::all_of(h.begin(), h.end(), [](char c) { return c == '\0'; });
}

uint64_t padded(uint64_t size) {
  return (size + kBlock - 1) / kBlock * kBlock;
}

// Parses pax extended header records ("<len> key=value\n").
void parse_pax(std::string_view data, std::string* path, std::string* linkpath) {
  while (!data.empty()) {
    size_t space = data.find(' ');
    if (space == std::string_view::npos) return;
    size_t len = 0;
    for (size_t i = 0; i < space; ++i) {
      if (data[i] < '0' || data[i] > '9') return;
      len = len * 10 + static_cast<size_t>(data[i] - '0');
    }
    if (len <= space + 1 || len > data.size()) return;
    std::string_view record = data.substr(space + 1, len - space - 2);  // drop the '\n'
    size_t eq = record.find('=');
    if (eq != std::string_view::npos) {
      std::string_view key = record.substr(0, eq);
      std::string_view value = record.substr(eq + 1);
      if (key == "path") *path = std::string(value);
      if (key == "linkpath") *linkpath = std::string(value);
    }
    data.remove_prefix(len);
  }
}

}  // namespace

Status TarWriter::add_header(std::string_view name, char type, uint32_t mode, uint64_t size,
                             std::string_view link_target) {
  if (name.empty() || name.front() == '/') {
    return error(StatusCode::kInvalidArgument,
                 "tar entry name must be relative: '" + std::string(name) + "'");
  }
  std::string_view prefix, rest;
  if (!split_name(name, &prefix, &rest)) {
    return error(StatusCode::kInvalidArgument, "tar entry name too long: " + std::string(name));
  }
  if (link_target.size() > kLinkLen) {
    return error(StatusCode::kInvalidArgument,
                 "symlink target too long: " + std::string(link_target));
  }
  Header h{};
  put_string(h, kNameOff, rest);
  bool ok = put_octal(h, kModeOff, kModeLen, mode & 07777) && put_octal(h, kUidOff, kUidLen, 0) &&
            put_octal(h, kGidOff, kGidLen, 0) && put_octal(h, kSizeOff, kSizeLen, size) &&
            put_octal(h, kMtimeOff, kMtimeLen, static_cast<uint64_t>(mtime_));
  if (!ok) return error(StatusCode::kInvalidArgument, "tar entry too large: " + std::string(name));
  h[kTypeOff] = type;
  put_string(h, kLinkOff, link_target);
  put_string(h, kMagicOff, std::string_view("ustar\0", 6));
  put_string(h, kVersionOff, "00");
  put_string(h, kUnameOff, "root");
  put_string(h, kGnameOff, "root");
  put_string(h, kPrefixOff, prefix);
  // Checksum: six octal digits, NUL, space.
  unsigned sum = checksum(h);
  put_octal(h, kChksumOff, 7, sum);
  h[kChksumOff + 7] = ' ';
  out_.append(h.data(), kBlock);
  return Status::ok();
}

Status TarWriter::add_file(std::string_view name, std::string_view content, uint32_t mode) {
  SKIFF_RETURN_IF_ERROR(add_header(name, '0', mode, content.size(), {}));
  out_.append(content);
  out_.append(padded(content.size()) - content.size(), '\0');
  return Status::ok();
}

Status TarWriter::add_directory(std::string_view name, uint32_t mode) {
  std::string dir(name);
  if (dir.empty() || dir.back() != '/') dir += '/';
  return add_header(dir, '5', mode, 0, {});
}

Status TarWriter::add_symlink(std::string_view name, std::string_view target) {
  if (target.empty()) return error(StatusCode::kInvalidArgument, "empty symlink target");
  return add_header(name, '2', 0777, 0, target);
}

std::string TarWriter::finish() {
  out_.append(2 * kBlock, '\0');
  return std::exchange(out_, std::string());
}

Status read_tar(std::istream& in, const std::function<bool(const std::string& name)>& want_content,
                const std::function<bool(TarEntry&& entry)>& on_entry) {
  std::string pending_path, pending_link;
  Header h;
  auto read_exact = [&](char* dst, size_t n) {
    in.read(dst, static_cast<std::streamsize>(n));
    return static_cast<size_t>(in.gcount()) == n;
  };
  auto read_body = [&](uint64_t size, std::string* into) -> bool {
    uint64_t total = padded(size);
    if (into != nullptr) {
      into->resize(size);
      if (size > 0 && !read_exact(into->data(), size)) return false;
      total -= size;
    }
    if (into == nullptr && total > 0) {
      // Seek past bodies nobody asked for (a layer can be large); streams that cannot seek
      // are read through instead.
      std::streampos here = in.tellg();
      if (here != std::streampos(-1) &&
          in.seekg(static_cast<std::streamoff>(total), std::ios::cur)) {
        return true;
      }
      in.clear();
      if (here != std::streampos(-1)) in.seekg(here);
    }
    char skip[8192];
    while (total > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(total, sizeof(skip)));
      if (!read_exact(skip, n)) return false;
      total -= n;
    }
    return true;
  };
  while (true) {
    if (!read_exact(h.data(), kBlock)) {
      return error(StatusCode::kDataLoss, "tar archive truncated (no end-of-archive marker)");
    }
    if (all_zero(h)) return Status::ok();
    uint64_t stored_sum = 0;
    parse_octal(h, kChksumOff, kChksumLen, &stored_sum);
    if (stored_sum != checksum(h)) {
      return error(StatusCode::kDataLoss, "tar header checksum mismatch");
    }
    TarEntry entry;
    uint64_t value = 0;
    parse_octal(h, kModeOff, kModeLen, &value);
    entry.mode = static_cast<uint32_t>(value);
    parse_octal(h, kUidOff, kUidLen, &value);
    entry.uid = static_cast<uint32_t>(value);
    parse_octal(h, kGidOff, kGidLen, &value);
    entry.gid = static_cast<uint32_t>(value);
    parse_octal(h, kMtimeOff, kMtimeLen, &value);
    entry.mtime = static_cast<int64_t>(value);
    parse_octal(h, kSizeOff, kSizeLen, &entry.size);
    char type = h[kTypeOff];
    if (type == 'x' || type == 'L' || type == 'K') {
      std::string data;
      if (!read_body(entry.size, &data)) return error(StatusCode::kDataLoss, "tar truncated");
      if (type == 'x') parse_pax(data, &pending_path, &pending_link);
      if (type == 'L') pending_path = std::string(data.c_str());
      if (type == 'K') pending_link = std::string(data.c_str());
      continue;
    }
    if (type == 'g') {
      if (!read_body(entry.size, nullptr)) return error(StatusCode::kDataLoss, "tar truncated");
      continue;
    }
    std::string name = field_string(h, kNameOff, kNameLen);
    bool ustar = std::memcmp(h.data() + kMagicOff, "ustar", 5) == 0;
    std::string prefix = ustar ? field_string(h, kPrefixOff, kPrefixLen) : std::string();
    entry.name = !pending_path.empty() ? pending_path : prefix.empty() ? name : prefix + "/" + name;
    entry.link_target = !pending_link.empty() ? pending_link : field_string(h, kLinkOff, kLinkLen);
    pending_path.clear();
    pending_link.clear();
    switch (type) {
      case '0':
      case '\0':
      case '7':
        entry.type = TarEntryType::kFile;
        break;
      case '5':
        entry.type = TarEntryType::kDirectory;
        break;
      case '2':
        entry.type = TarEntryType::kSymlink;
        break;
      case '1':
        entry.type = TarEntryType::kHardLink;
        break;
      default:
        entry.type = TarEntryType::kOther;
    }
    // Only regular files (and unknown kinds) carry data blocks.
    uint64_t body =
        (entry.type == TarEntryType::kFile || entry.type == TarEntryType::kOther) ? entry.size : 0;
    bool keep = entry.type == TarEntryType::kFile && want_content && want_content(entry.name);
    if (!read_body(body, keep ? &entry.content : nullptr)) {
      return error(StatusCode::kDataLoss, "tar truncated in " + entry.name);
    }
    if (!on_entry(std::move(entry))) return Status::ok();
  }
}

Result<std::vector<TarEntry>> read_tar_bytes(std::string_view archive) {
  std::istringstream in{std::string(archive)};
  std::vector<TarEntry> entries;
  SKIFF_RETURN_IF_ERROR(read_tar(
      in, [](const std::string&) { return true; },
      [&](TarEntry&& e) {
        entries.push_back(std::move(e));
        return true;
      }));
  return entries;
}

}  // namespace skiff::kubelet::images
