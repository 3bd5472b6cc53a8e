#include "hollow/ipv4.h"

#include <algorithm>
#include <charconv>

namespace skiff::hollow {
namespace {

// Pod CIDRs larger than this are served from their first addresses only: a node never runs more
// pods than that, and the bitmap stays small.
constexpr uint64_t kMaxPoolAddresses = 65536;

}  // namespace

std::optional<uint32_t> parse_ipv4(std::string_view text) {
  uint32_t addr = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (text.empty() || text.front() != '.') return std::nullopt;
      text.remove_prefix(1);
    }
    size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    // No leading zeros (Go rejects them too: they read as octal elsewhere).
    if (digits == 0 || digits > 3 || (digits > 1 && text[0] == '0')) return std::nullopt;
    unsigned value = 0;
    std::from_chars(text.data(), text.data() + digits, value);
    if (value > 255) return std::nullopt;
    addr = (addr << 8) | value;
    text.remove_prefix(digits);
  }
  if (!text.empty()) return std::nullopt;
  return addr;
}

std::string format_ipv4(uint32_t addr) {
  return std::to_string(addr >> 24) + "." + std::to_string((addr >> 16) & 0xff) + "." +
         std::to_string((addr >> 8) & 0xff) + "." + std::to_string(addr & 0xff);
}

Result<Ipv4Cidr> Ipv4Cidr::parse(std::string_view text) {
  auto bad = [&] {
    return error(StatusCode::kInvalidArgument,
                 "invalid IPv4 CIDR \"" + std::string(text) + "\" (want e.g. 10.128.0.0/9)");
  };
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) return bad();
  auto addr = parse_ipv4(text.substr(0, slash));
  std::string_view bits = text.substr(slash + 1);
  int prefix = -1;
  auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), prefix);
  if (!addr || ec != std::errc() || end != bits.data() + bits.size() || bits.empty() ||
      (bits.size() > 1 && bits[0] == '0') || prefix < 0 || prefix > 32) {
    return bad();
  }
  Ipv4Cidr cidr;
  cidr.prefix = prefix;
  cidr.base = prefix == 0 ? 0 : *addr & (~uint32_t{0} << (32 - prefix));
  return cidr;
}

std::string Ipv4Cidr::to_string() const {
  return format_ipv4(base) + "/" + std::to_string(prefix);
}

Result<Ipv4Cidr> Ipv4Cidr::block(int sub_prefix, uint64_t index) const {
  if (sub_prefix < prefix || sub_prefix > 32) {
    return error(StatusCode::kInvalidArgument,
                 "a /" + std::to_string(sub_prefix) + " block does not fit in " + to_string());
  }
  uint64_t blocks = uint64_t{1} << (sub_prefix - prefix);
  if (index >= blocks) {
    return error(StatusCode::kOutOfRange, to_string() + " has only " + std::to_string(blocks) +
                                              " blocks of /" + std::to_string(sub_prefix));
  }
  Ipv4Cidr out;
  out.prefix = sub_prefix;
  out.base = base + static_cast<uint32_t>(index << (32 - sub_prefix));
  return out;
}

PodAddressPool::PodAddressPool(Ipv4Cidr cidr) : cidr_(cidr) {
  uint64_t n = std::min(cidr_.size(), kMaxPoolAddresses);
  used_.assign((n + 63) / 64, 0);
}

bool PodAddressPool::assignable(uint32_t offset) const {
  uint64_t size = cidr_.size();
  if (offset >= std::min(size, kMaxPoolAddresses)) return false;
  // A /31 or /32 has no network, gateway or broadcast address to set aside.
  if (size <= 2) return true;
  return offset >= 2 && offset != size - 1;
}

size_t PodAddressPool::capacity() const {
  size_t n = 0;
  uint64_t limit = std::min(cidr_.size(), kMaxPoolAddresses);
  for (uint64_t off = 0; off < limit; ++off) n += assignable(static_cast<uint32_t>(off));
  return n;
}

std::optional<uint32_t> PodAddressPool::allocate() {
  for (size_t w = 0; w < used_.size(); ++w) {
    if (used_[w] == ~uint64_t{0}) continue;
    for (uint32_t bit = 0; bit < 64; ++bit) {
      uint32_t off = static_cast<uint32_t>(w * 64 + bit);
      if ((used_[w] >> bit) & 1) continue;
      if (!assignable(off)) continue;
      used_[w] |= uint64_t{1} << bit;
      ++used_count_;
      return cidr_.base + off;
    }
  }
  return std::nullopt;
}

bool PodAddressPool::reserve(uint32_t addr) {
  if (!cidr_.contains(addr)) return false;
  uint32_t off = addr - cidr_.base;
  if (!assignable(off)) return false;
  uint64_t& word = used_[off / 64];
  uint64_t mask = uint64_t{1} << (off % 64);
  if (word & mask) return false;
  word |= mask;
  ++used_count_;
  return true;
}

void PodAddressPool::release(uint32_t addr) {
  if (!in_use(addr)) return;
  uint32_t off = addr - cidr_.base;
  used_[off / 64] &= ~(uint64_t{1} << (off % 64));
  --used_count_;
}

bool PodAddressPool::in_use(uint32_t addr) const {
  if (!cidr_.contains(addr)) return false;
  uint32_t off = addr - cidr_.base;
  if (off / 64 >= used_.size()) return false;
  return (used_[off / 64] >> (off % 64)) & 1;
}

}  // namespace skiff::hollow
