// The nftnl runner: applies the scripts of the nftables backend's incremental syncs as one
// netlink batch built with libnftnl, without reading the ruleset first. libnftables (like the
// `nft` command) lists every chain and set of the table into its cache before a transaction
// that adds a rule or an element, which makes one changed endpoint cost time in proportion to
// the number of Services.
//
// Only the line shapes that diff_script() and render_port() write are understood, each encoded
// as nftables 1.0.6 encodes it (same expressions, registers, byte orders and key padding), so
// the kernel holds exactly what `nft -f` would have loaded. A script with any other line (the
// full sync's table and base chains, map and set declarations, anything new) goes unchanged to
// a libnftables runner.
//
// Element keys and data are concatenations told apart by their tokens: an IPv4 address, a
// protocol (tcp, udp, sctp), a port (0..65535) and, after a port, an endpoint index (a u32,
// the value `numgen random mod N` yields). Keys: ADDR . PROTO . PORT, PROTO . PORT, either
// followed by . INDEX, and ADDR . ADDR; data: a verdict, ADDR . PORT, or none (a plain set).
//
// Thread-safety: run() may be called from any thread; calls are serialized by a mutex.

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/backend.h"

namespace skiff::proxy {
namespace {

// nftables' registers as it allocates them for these shapes (the 16-byte NFT_REG_1 and
// NFT_REG_2; the verdict register for jumps). A concatenation starts in NFT_REG_1 and goes on
// in the 32-bit registers that overlap it, one per 4 bytes of the concatenation.
constexpr uint32_t kReg1 = NFT_REG_1;
constexpr uint32_t kReg2 = NFT_REG_2;
constexpr uint32_t kReg32After1 = NFT_REG32_01;  // the second 4 bytes of NFT_REG_1
// nftables' names for its typeof metadata and datatypes, as it stores them in set userdata
// and NFTA_SET_KEY_TYPE (datatype.h: TYPE_INTEGER 4, TYPE_IPADDR 7; byteorder.h: host 1,
// big endian 2).
constexpr uint32_t kTypeInteger = 4;
constexpr uint32_t kTypeIpAddr = 7;
constexpr uint32_t kByteorderHost = 1;
constexpr uint32_t kByteorderBig = 2;
constexpr uint32_t kExprVerdict = 1;  // the data expression of a verdict map, in its typeof

using Tokens = std::vector<std::string_view>;

Tokens split(std::string_view line) {
  Tokens out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

std::optional<uint32_t> parse_uint(std::string_view s, uint32_t max) {
  uint32_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v > max) return std::nullopt;
  return v;
}

// An IPv4 address in network byte order, as 4 bytes.
std::optional<std::array<uint8_t, 4>> parse_ip(std::string_view s) {
  std::string text(s);
  in_addr addr{};
  if (inet_pton(AF_INET, text.c_str(), &addr) != 1) return std::nullopt;
  std::array<uint8_t, 4> out;
  std::memcpy(out.data(), &addr, 4);
  return out;
}

std::optional<uint8_t> parse_proto(std::string_view s) {
  if (s == "tcp") return IPPROTO_TCP;
  if (s == "udp") return IPPROTO_UDP;
  if (s == "sctp") return IPPROTO_SCTP;
  return std::nullopt;
}

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() >= NFT_NAME_MAXLEN) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '/' || c == '.';
    if (!ok) return false;
  }
  // Names nftables would read as something else.
  return s[0] != '@' && s[0] != '$' && s != "{";
}

template <typename T, void (*Free)(const T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using RulePtr = std::unique_ptr<nftnl_rule, Deleter<nftnl_rule, nftnl_rule_free>>;
using ChainPtr = std::unique_ptr<nftnl_chain, Deleter<nftnl_chain, nftnl_chain_free>>;
using SetPtr = std::unique_ptr<nftnl_set, Deleter<nftnl_set, nftnl_set_free>>;
using UdataPtr = std::unique_ptr<nftnl_udata_buf, Deleter<nftnl_udata_buf, nftnl_udata_buf_free>>;

// One batch under construction: netlink messages appended to a byte buffer, each remembering
// the script line it came from.
class Batch {
 public:
  Batch() { grow(4096); }

  // Space for a message of at most `max_size` bytes; returns where to write it.
  char* reserve(size_t max_size) {
    grow(len_ + max_size);
    return buf_.data() + len_;
  }
  void commit(nlmsghdr* nlh, size_t line) {
    len_ += NLMSG_ALIGN(nlh->nlmsg_len);
    lines_[nlh->nlmsg_seq] = line;
  }
  uint32_t next_seq() { return seq_++; }
  uint32_t next_set_id() { return ++set_id_; }

  void begin() {
    nlmsghdr* nlh = nftnl_batch_begin(reserve(256), next_seq());
    len_ += NLMSG_ALIGN(nlh->nlmsg_len);
  }
  void end() {
    nlmsghdr* nlh = nftnl_batch_end(reserve(256), next_seq());
    len_ += NLMSG_ALIGN(nlh->nlmsg_len);
  }

  const char* data() const { return buf_.data(); }
  size_t size() const { return len_; }
  size_t messages() const { return lines_.size(); }
  // The script line of a message, if it is one of ours.
  std::optional<size_t> line_of(uint32_t seq) const {
    auto it = lines_.find(seq);
    if (it == lines_.end()) return std::nullopt;
    return it->second;
  }

  // Sets added by this batch: referring to them by name works, nftables adds their id too.
  std::map<std::string, uint32_t, std::less<>> new_sets;

 private:
  void grow(size_t n) {
    if (buf_.size() < n) buf_.resize(std::max(n, buf_.size() * 2));
  }
  std::vector<char> buf_;
  size_t len_ = 0;
  uint32_t seq_ = 1;
  uint32_t set_id_ = 0;
  std::map<uint32_t, size_t> lines_;
};

// Builds the expressions of one rule from the tokens after `add rule ip TABLE CHAIN`.
class RuleEncoder {
 public:
  RuleEncoder(nftnl_rule* rule, Batch& batch, const std::string& table, size_t line)
      : rule_(rule), batch_(batch), table_(table), line_(line) {}

  // False when the rule is not one of the known shapes; the caller falls back.
  bool encode(const Tokens& t) {
    size_t i = 0;
    while (i < t.size()) {
      if (done_) return false;  // a verdict or statement must come last
      std::string_view tok = t[i];
      size_t used = 0;
      if (tok == "ip") {
        used = ip_match(t, i);
      } else if (parse_proto(tok) && i + 2 < t.size() && t[i + 1] == "dport") {
        used = port_match(t, i);
      } else if (tok == "meta") {
        used = meta_match(t, i);
      } else if (tok == "numgen") {
        used = numgen(t, i);
      } else if (tok == "fib") {
        used = fib_match(t, i);
      } else if (tok == "jump" || tok == "goto") {
        used = verdict(t, i);
      } else if (tok == "dnat") {
        used = dnat(t, i);
      } else if (tok == "update") {
        used = update(t, i);
      }
      if (used == 0) return false;
      i += used;
    }
    return done_;
  }

 private:
  nftnl_expr* add(const char* name) {
    nftnl_expr* e = nftnl_expr_alloc(name);
    nftnl_rule_add_expr(rule_, e);
    return e;
  }
  void payload(uint32_t base, uint32_t offset, uint32_t len, uint32_t dreg = kReg1) {
    nftnl_expr* e = add("payload");
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  }
  void cmp(uint32_t op, const void* data, uint32_t len) {
    nftnl_expr* e = add("cmp");
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, kReg1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
    nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
  }
  void cmp_u32(uint32_t value) { cmp(NFT_CMP_EQ, &value, sizeof value); }
  void meta_load(uint32_t key, uint32_t dreg) {
    nftnl_expr* e = add("meta");
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, dreg);
  }
  void meta_l4proto(uint8_t proto) {
    meta_load(NFT_META_L4PROTO, kReg1);
    cmp(NFT_CMP_EQ, &proto, 1);
    l4proto_ = true;
  }
  // Refers to a set by name, and by id when this batch creates it.
  void set_ref(nftnl_expr* e, uint16_t name_attr, uint16_t id_attr, std::string_view set) {
    std::string name(set);
    nftnl_expr_set_str(e, name_attr, name.c_str());
    auto it = batch_.new_sets.find(set);
    if (it != batch_.new_sets.end()) nftnl_expr_set_u32(e, id_attr, it->second);
  }

  // ip saddr|daddr [!=] ADDR | CIDR | @SET
  size_t ip_match(const Tokens& t, size_t i) {
    if (i + 2 >= t.size()) return 0;
    uint32_t offset;
    if (t[i + 1] == "saddr") {
      offset = 12;
    } else if (t[i + 1] == "daddr") {
      offset = 16;
    } else {
      return 0;
    }
    size_t v = i + 2;
    uint32_t op = NFT_CMP_EQ;
    if (t[v] == "!=") {
      op = NFT_CMP_NEQ;
      if (++v >= t.size()) return 0;
    }
    std::string_view value = t[v];
    if (value[0] == '@') {
      std::string_view set = value.substr(1);
      if (op != NFT_CMP_EQ || !valid_name(set)) return 0;
      payload(NFT_PAYLOAD_NETWORK_HEADER, offset, 4);
      nftnl_expr* e = add("lookup");
      nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, kReg1);
      set_ref(e, NFTNL_EXPR_LOOKUP_SET, NFTNL_EXPR_LOOKUP_SET_ID, set);
      return v - i + 1;
    }
    size_t slash = value.find('/');
    auto addr = parse_ip(value.substr(0, slash));
    if (!addr) return 0;
    if (slash == std::string_view::npos) {
      payload(NFT_PAYLOAD_NETWORK_HEADER, offset, 4);
      cmp(op, addr->data(), 4);
      return v - i + 1;
    }
    auto prefix = parse_uint(value.substr(slash + 1), 32);
    // An address with host bits under its prefix is left to nftables (the fallback).
    if (!prefix || *prefix == 0) return 0;
    uint32_t mask = *prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> *prefix);
    uint32_t host;
    std::memcpy(&host, addr->data(), 4);
    if ((ntohl(host) & ~mask) != 0) return 0;
    if (*prefix % 8 == 0) {
      // A whole-byte prefix compares only its bytes.
      payload(NFT_PAYLOAD_NETWORK_HEADER, offset, *prefix / 8);
      cmp(op, addr->data(), *prefix / 8);
    } else {
      payload(NFT_PAYLOAD_NETWORK_HEADER, offset, 4);
      uint32_t mask_be = htonl(mask);
      uint32_t zero = 0;
      nftnl_expr* e = add("bitwise");
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, kReg1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, kReg1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, 4);
      nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, &mask_be, 4);
      nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, &zero, 4);
      cmp(op, addr->data(), 4);
    }
    return v - i + 1;
  }

  // tcp|udp|sctp dport PORT: the protocol as a dependency, then the port.
  size_t port_match(const Tokens& t, size_t i) {
    auto proto = parse_proto(t[i]);
    auto port = parse_uint(t[i + 2], 65535);
    if (!proto || !port) return 0;
    meta_l4proto(*proto);
    payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    uint16_t be = htons(static_cast<uint16_t>(*port));
    cmp(NFT_CMP_EQ, &be, 2);
    return 3;
  }

  // meta l4proto PROTO
  size_t meta_match(const Tokens& t, size_t i) {
    if (i + 2 >= t.size() || t[i + 1] != "l4proto") return 0;
    auto proto = parse_proto(t[i + 2]);
    if (!proto) return 0;
    meta_l4proto(*proto);
    l4proto_by_meta_ = true;
    return 3;
  }

  // fib saddr type local
  size_t fib_match(const Tokens& t, size_t i) {
    if (i + 3 >= t.size() || t[i + 1] != "saddr" || t[i + 2] != "type" || t[i + 3] != "local") {
      return 0;
    }
    nftnl_expr* e = add("fib");
    nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_DREG, kReg1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
    nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_SADDR);
    cmp_u32(RTN_LOCAL);
    return 4;
  }

  // numgen random mod N == K | numgen random mod N vmap { 0 : goto A, 1 : goto B, ... }
  size_t numgen(const Tokens& t, size_t i) {
    if (i + 4 >= t.size() || t[i + 1] != "random" || t[i + 2] != "mod") return 0;
    auto mod = parse_uint(t[i + 3], 0xffffffffu);
    if (!mod || *mod == 0) return 0;
    if (t[i + 4] == "==") {
      if (i + 5 >= t.size()) return 0;
      auto value = parse_uint(t[i + 5], *mod - 1);
      if (!value) return 0;
      numgen_expr(*mod);
      cmp_u32(*value);
      return 6;
    }
    if (t[i + 4] == "vmap") return numgen_vmap(t, i, *mod);
    return 0;
  }
  void numgen_expr(uint32_t mod, uint32_t dreg = kReg1) {
    nftnl_expr* e = add("numgen");
    nftnl_expr_set_u32(e, NFTNL_EXPR_NG_DREG, dreg);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NG_MODULUS, mod);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NG_TYPE, NFT_NG_RANDOM);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NG_OFFSET, 0);
  }

  // The anonymous verdict map goes into the batch before the rule that looks it up, as
  // nftables sends it: a constant map named by the kernel, then its elements.
  size_t numgen_vmap(const Tokens& t, size_t i, uint32_t mod) {
    size_t j = i + 5;
    if (j >= t.size() || t[j] != "{") return 0;
    ++j;
    std::vector<std::pair<uint32_t, std::string_view>> entries;
    for (;;) {
      if (j + 3 >= t.size()) return 0;
      auto key = parse_uint(t[j], 0xffffffffu);
      if (!key || t[j + 1] != ":" || t[j + 2] != "goto") return 0;
      std::string_view target = t[j + 3];
      bool last = false;
      if (target.ends_with(',')) {
        target.remove_suffix(1);
      } else {
        last = true;
      }
      if (!valid_name(target)) return 0;
      for (const auto& [k, unused] : entries) {
        if (k == *key) return 0;  // nftables refuses duplicate keys
      }
      entries.emplace_back(*key, target);
      j += 4;
      if (last) break;
    }
    if (j >= t.size() || t[j] != "}" || j + 1 != t.size()) return 0;

    const char* kAnon = "__map%d";
    uint32_t set_id = batch_.next_set_id();
    SetPtr set(nftnl_set_alloc());
    nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_IPV4);
    nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, table_.c_str());
    nftnl_set_set_str(set.get(), NFTNL_SET_NAME, kAnon);
    nftnl_set_set_u32(set.get(), NFTNL_SET_FLAGS,
                      NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP);
    nftnl_set_set_u32(set.get(), NFTNL_SET_KEY_TYPE, kTypeInteger);
    nftnl_set_set_u32(set.get(), NFTNL_SET_KEY_LEN, 4);
    nftnl_set_set_u32(set.get(), NFTNL_SET_DATA_TYPE, NFT_DATA_VERDICT);
    nftnl_set_set_u32(set.get(), NFTNL_SET_DATA_LEN, 0);
    nftnl_set_set_u32(set.get(), NFTNL_SET_ID, set_id);
    nftnl_set_set_u32(set.get(), NFTNL_SET_DESC_SIZE, static_cast<uint32_t>(entries.size()));
    UdataPtr ud(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
    nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_KEYBYTEORDER, kByteorderHost);
    nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_DATABYTEORDER, 0);
    nftnl_udata* typeof_data = nftnl_udata_nest_start(ud.get(), NFTNL_UDATA_SET_DATA_TYPEOF);
    nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_TYPEOF_EXPR, kExprVerdict);
    nftnl_udata* typeof_inner = nftnl_udata_nest_start(ud.get(), NFTNL_UDATA_SET_TYPEOF_DATA);
    nftnl_udata_nest_end(ud.get(), typeof_inner);
    nftnl_udata_nest_end(ud.get(), typeof_data);
    nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_DATA_INTERVAL, 0);
    nftnl_set_set_data(set.get(), NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud.get()),
                       nftnl_udata_buf_len(ud.get()));
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(batch_.reserve(4096), NFT_MSG_NEWSET, NFPROTO_IPV4,
                                          NLM_F_CREATE, batch_.next_seq());
    nftnl_set_nlmsg_build_payload(nlh, set.get());
    batch_.commit(nlh, line_);

    size_t names = 0;
    for (const auto& [key, target] : entries) {
      nftnl_set_elem* el = nftnl_set_elem_alloc();
      nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY, &key, sizeof key);
      nftnl_set_elem_set_u32(el, NFTNL_SET_ELEM_VERDICT, static_cast<uint32_t>(NFT_GOTO));
      std::string chain(target);
      nftnl_set_elem_set_str(el, NFTNL_SET_ELEM_CHAIN, chain.c_str());
      nftnl_set_elem_add(set.get(), el);
      names += target.size();
    }
    nlh = nftnl_nlmsg_build_hdr(batch_.reserve(4096 + entries.size() * 96 + names * 2),
                                NFT_MSG_NEWSETELEM, NFPROTO_IPV4, NLM_F_CREATE, batch_.next_seq());
    nftnl_set_elems_nlmsg_build_payload(nlh, set.get());
    batch_.commit(nlh, line_);

    numgen_expr(mod);
    nftnl_expr* e = add("lookup");
    nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, kReg1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_DREG, NFT_REG_VERDICT);
    nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, kAnon);
    nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, set_id);
    done_ = true;
    return j - i + 1;
  }

  // jump|goto CHAIN
  size_t verdict(const Tokens& t, size_t i) {
    if (i + 1 >= t.size() || !valid_name(t[i + 1])) return 0;
    nftnl_expr* e = add("immediate");
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT,
                       static_cast<uint32_t>(t[i] == "jump" ? NFT_JUMP : NFT_GOTO));
    std::string chain(t[i + 1]);
    nftnl_expr_set_str(e, NFTNL_EXPR_IMM_CHAIN, chain.c_str());
    done_ = true;
    return 2;
  }

  // dnat to IP:PORT, after a transport protocol match (nftables requires one for the port).
  size_t dnat(const Tokens& t, size_t i) {
    if (i + 2 < t.size() && t[i + 1] == "ip" && t[i + 2] == "to") return dnat_map(t, i);
    if (!l4proto_ || i + 2 >= t.size() || t[i + 1] != "to") return 0;
    std::string_view target = t[i + 2];
    size_t colon = target.find(':');
    if (colon == std::string_view::npos) return 0;
    auto addr = parse_ip(target.substr(0, colon));
    auto port = parse_uint(target.substr(colon + 1), 65535);
    if (!addr || !port) return 0;
    nftnl_expr* e = add("immediate");
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, kReg1);
    nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, addr->data(), 4);
    uint16_t be = htons(static_cast<uint16_t>(*port));
    e = add("immediate");
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, kReg2);
    nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, &be, 2);
    e = add("nat");
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_TYPE, NFT_NAT_DNAT);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FAMILY, NFPROTO_IPV4);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, kReg1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, kReg2);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
    done_ = true;
    return 3;
  }

  // dnat ip to [ip daddr .] meta l4proto . th dport . numgen random mod N map @MAP, after a
  // `meta l4proto PROTO` match: the address and port to translate to come from MAP. The key
  // is loaded field by field into consecutive registers; the lookup leaves the address in
  // NFT_REG_1's first 4 bytes and the port in the next 4.
  size_t dnat_map(const Tokens& t, size_t i) {
    if (!l4proto_by_meta_) return 0;
    size_t j = i + 3;
    auto take = [&](std::initializer_list<std::string_view> words) {
      if (j + words.size() > t.size()) return false;
      for (std::string_view w : words) {
        if (t[j++] != w) return false;
      }
      return true;
    };
    const bool daddr = j < t.size() && t[j] == "ip";
    if (daddr && !take({"ip", "daddr", "."})) return 0;
    if (!take({"meta", "l4proto", ".", "th", "dport", ".", "numgen", "random", "mod"})) return 0;
    if (j + 3 != t.size()) return 0;  // N map @MAP, and nothing after it
    auto mod = parse_uint(t[j], 0xffffffffu);
    if (!mod || *mod == 0 || t[j + 1] != "map" || t[j + 2].size() < 2 || t[j + 2][0] != '@') {
      return 0;
    }
    std::string_view map = t[j + 2].substr(1);
    if (!valid_name(map)) return 0;

    uint32_t reg = kReg1;
    auto next_reg = [&] {
      uint32_t r = reg;
      reg = reg == kReg1 ? kReg32After1 : reg + 1;
      return r;
    };
    if (daddr) payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4, next_reg());
    meta_load(NFT_META_L4PROTO, next_reg());
    payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, next_reg());
    numgen_expr(*mod, next_reg());
    nftnl_expr* e = add("lookup");
    nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, kReg1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_DREG, kReg1);
    set_ref(e, NFTNL_EXPR_LOOKUP_SET, NFTNL_EXPR_LOOKUP_SET_ID, map);
    // No flags: the kernel derives them from the registers given, as it does for nftables.
    e = add("nat");
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_TYPE, NFT_NAT_DNAT);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FAMILY, NFPROTO_IPV4);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, kReg1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, kReg32After1);
    done_ = true;
    return t.size() - i;
  }

  // update @SET { ip saddr }
  size_t update(const Tokens& t, size_t i) {
    if (i + 5 >= t.size() || t[i + 1].size() < 2 || t[i + 1][0] != '@' || t[i + 2] != "{" ||
        t[i + 3] != "ip" || t[i + 4] != "saddr" || t[i + 5] != "}") {
      return 0;
    }
    std::string_view set = t[i + 1].substr(1);
    if (!valid_name(set)) return 0;
    payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
    nftnl_expr* e = add("dynset");
    nftnl_expr_set_u32(e, NFTNL_EXPR_DYNSET_SREG_KEY, kReg1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_DYNSET_OP, NFT_DYNSET_OP_UPDATE);
    set_ref(e, NFTNL_EXPR_DYNSET_SET_NAME, NFTNL_EXPR_DYNSET_SET_ID, set);
    done_ = true;
    return 6;
  }

  nftnl_rule* rule_;
  Batch& batch_;
  const std::string& table_;
  size_t line_;
  bool l4proto_ = false;          // a transport protocol is matched
  bool l4proto_by_meta_ = false;  // ... by `meta l4proto PROTO`
  bool done_ = false;
};

// The fields a concatenation of an element's key or data may hold.
enum class Field { kAddr, kProto, kPort, kIndex };

// Appends one field of a concatenation, in a multiple of 4 bytes zero-padded after its value:
// an address in network order, a protocol as one byte, a port big-endian in two, an index (a
// numgen value) as a u32 in host order. False if the token is not such a field.
bool append_field(Field field, std::string_view token, std::vector<uint8_t>& out) {
  switch (field) {
    case Field::kAddr: {
      auto addr = parse_ip(token);
      if (!addr) return false;
      out.insert(out.end(), addr->begin(), addr->end());
      return true;
    }
    case Field::kProto: {
      auto proto = parse_proto(token);
      if (!proto) return false;
      out.insert(out.end(), {*proto, 0, 0, 0});
      return true;
    }
    case Field::kPort: {
      auto port = parse_uint(token, 65535);
      if (!port) return false;
      out.insert(out.end(), {static_cast<uint8_t>(*port >> 8), static_cast<uint8_t>(*port), 0, 0});
      return true;
    }
    case Field::kIndex: {
      auto index = parse_uint(token, 0xffffffffu);
      if (!index) return false;
      uint8_t bytes[4];
      std::memcpy(bytes, &*index, 4);
      out.insert(out.end(), bytes, bytes + 4);
      return true;
    }
  }
  return false;
}

// Encodes the concatenation in tokens [begin, end) ("F . F . F") if its fields are, in order,
// one of `shapes`.
std::optional<std::vector<uint8_t>> parse_concat(
    const Tokens& t, size_t begin, size_t end,
    std::initializer_list<std::initializer_list<Field>> shapes) {
  if (begin >= end || (end - begin) % 2 == 0) return std::nullopt;
  const size_t fields = (end - begin + 1) / 2;
  for (size_t i = begin + 1; i < end; i += 2) {
    if (t[i] != ".") return std::nullopt;
  }
  for (const auto& shape : shapes) {
    if (shape.size() != fields) continue;
    std::vector<uint8_t> out;
    size_t i = begin;
    bool ok = true;
    for (Field field : shape) {
      if (!append_field(field, t[i], out)) {
        ok = false;
        break;
      }
      i += 2;
    }
    if (ok) return out;
  }
  return std::nullopt;
}

// Element keys: ADDR . PROTO . PORT, PROTO . PORT (service and node port maps, the cluster IP
// set), either with the endpoint index after it (endpoint maps), and ADDR . ADDR (pairs).
std::optional<std::vector<uint8_t>> parse_key(const Tokens& t, size_t begin, size_t end) {
  using enum Field;
  return parse_concat(t, begin, end,
                      {{kAddr, kProto, kPort},
                       {kProto, kPort},
                       {kAddr, kProto, kPort, kIndex},
                       {kProto, kPort, kIndex},
                       {kAddr, kAddr}});
}

// Element data other than a verdict: ADDR . PORT (an endpoint).
std::optional<std::vector<uint8_t>> parse_data(const Tokens& t, size_t begin, size_t end) {
  using enum Field;
  return parse_concat(t, begin, end, {{kAddr, kPort}});
}

class NftnlRunner : public NftRunner {
 public:
  explicit NftnlRunner(std::unique_ptr<NftRunner> fallback) : fallback_(std::move(fallback)) {}
  ~NftnlRunner() override {
    if (nl_) mnl_socket_close(nl_);
  }

  Status run(const std::string& script) override {
    std::lock_guard lock(mu_);
    std::vector<std::string_view> lines;
    Batch batch;
    batch.begin();
    if (!encode(script, batch, lines)) return fallback_->run(script);
    if (batch.messages() == 0) return Status::ok();
    batch.end();
    return send(batch, lines);
  }

 private:
  // Appends one message per line (more for an anonymous map); false on any line of another
  // shape.
  bool encode(const std::string& script, Batch& batch, std::vector<std::string_view>& lines) {
    std::string_view rest = script;
    while (!rest.empty()) {
      size_t nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
      Tokens t = split(line);
      if (t.empty()) continue;
      lines.push_back(line);
      if (!encode_line(t, batch, lines.size() - 1, line.size())) return false;
    }
    return true;
  }

  bool encode_line(const Tokens& t, Batch& batch, size_t line, size_t text_size) {
    if (t.size() < 5 || t[2] != "ip" || !valid_name(t[3]) || !valid_name(t[4])) return false;
    const std::string table(t[3]);
    const std::string name(t[4]);
    const std::string_view verb = t[0];
    const std::string_view object = t[1];
    // Generous room for the message: the encoding is a few times the text at most.
    char* buf = batch.reserve(4096 + text_size * 8);
    auto hdr = [&](uint16_t type, uint16_t flags) {
      return nftnl_nlmsg_build_hdr(buf, type, NFPROTO_IPV4, flags, batch.next_seq());
    };

    if (object == "chain") {
      if (t.size() != 5) return false;
      uint16_t type;
      uint16_t flags = 0;
      if (verb == "add") {
        type = NFT_MSG_NEWCHAIN;
        flags = NLM_F_CREATE;
      } else if (verb == "delete") {
        type = NFT_MSG_DELCHAIN;
      } else if (verb == "flush") {
        type = NFT_MSG_DELRULE;
      } else {
        return false;
      }
      nlmsghdr* nlh = hdr(type, flags);
      if (type == NFT_MSG_DELRULE) {
        RulePtr r(nftnl_rule_alloc());
        nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_IPV4);
        nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table.c_str());
        nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, name.c_str());
        nftnl_rule_nlmsg_build_payload(nlh, r.get());
      } else {
        ChainPtr c(nftnl_chain_alloc());
        nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_IPV4);
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table.c_str());
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, name.c_str());
        nftnl_chain_nlmsg_build_payload(nlh, c.get());
      }
      batch.commit(nlh, line);
      return true;
    }

    if (object == "set") {
      SetPtr s(nftnl_set_alloc());
      nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_IPV4);
      nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, table.c_str());
      nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name.c_str());
      if (verb == "delete" && t.size() == 5) {
        nlmsghdr* nlh = hdr(NFT_MSG_DELSET, 0);
        nftnl_set_nlmsg_build_payload(nlh, s.get());
        batch.commit(nlh, line);
        return true;
      }
      // add set ... { type ipv4_addr ; flags dynamic,timeout ; timeout Ns ; }
      static const char* kShape[] = {"{", "type",    "ipv4_addr", ";", "flags", "dynamic,timeout",
                                     ";", "timeout", nullptr,     ";", "}"};
      if (verb != "add" || t.size() != 5 + std::size(kShape)) return false;
      for (size_t i = 0; i < std::size(kShape); ++i) {
        if (kShape[i] && t[5 + i] != kShape[i]) return false;
      }
      std::string_view timeout = t[5 + 8];
      if (!timeout.ends_with('s')) return false;
      auto seconds = parse_uint(timeout.substr(0, timeout.size() - 1), 0x7fffffff);
      if (!seconds || *seconds == 0) return false;
      uint32_t id = batch.next_set_id();
      nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, NFT_SET_TIMEOUT | NFT_SET_EVAL);
      nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, kTypeIpAddr);
      nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, 4);
      nftnl_set_set_u32(s.get(), NFTNL_SET_ID, id);
      nftnl_set_set_u64(s.get(), NFTNL_SET_TIMEOUT, uint64_t{*seconds} * 1000);
      UdataPtr ud(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
      nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_KEYBYTEORDER, kByteorderBig);
      nftnl_set_set_data(s.get(), NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud.get()),
                         nftnl_udata_buf_len(ud.get()));
      nlmsghdr* nlh = hdr(NFT_MSG_NEWSET, NLM_F_CREATE);
      nftnl_set_nlmsg_build_payload(nlh, s.get());
      batch.commit(nlh, line);
      batch.new_sets[name] = id;
      return true;
    }

    if (object == "element") {
      // add element ip T MAP { KEY [: goto|jump CHAIN | : drop | : DATA] } /
      // delete element ip T MAP { KEY }
      if (t.size() < 7 || t[5] != "{" || t.back() != "}") return false;
      size_t end = t.size() - 1;
      size_t colon = std::find(t.begin() + 6, t.begin() + end, ":") - t.begin();
      auto key = parse_key(t, 6, colon);
      if (!key) return false;
      SetPtr s(nftnl_set_alloc());
      nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_IPV4);
      nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, table.c_str());
      nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name.c_str());
      nftnl_set_elem* el = nftnl_set_elem_alloc();
      nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY, key->data(), key->size());
      nftnl_set_elem_add(s.get(), el);
      uint16_t type;
      uint16_t flags = 0;
      if (verb == "delete") {
        if (colon != end) return false;
        type = NFT_MSG_DELSETELEM;
      } else if (verb == "add") {
        type = NFT_MSG_NEWSETELEM;
        flags = NLM_F_CREATE;
        size_t v = colon + 1;
        if (colon == end) {
          // A plain set's element: the key alone.
        } else if (v + 1 == end && t[v] == "drop") {
          nftnl_set_elem_set_u32(el, NFTNL_SET_ELEM_VERDICT, static_cast<uint32_t>(NF_DROP));
        } else if (v + 2 == end && (t[v] == "goto" || t[v] == "jump") && valid_name(t[v + 1])) {
          nftnl_set_elem_set_u32(el, NFTNL_SET_ELEM_VERDICT,
                                 static_cast<uint32_t>(t[v] == "goto" ? NFT_GOTO : NFT_JUMP));
          std::string chain(t[v + 1]);
          nftnl_set_elem_set_str(el, NFTNL_SET_ELEM_CHAIN, chain.c_str());
        } else if (auto data = parse_data(t, v, end)) {
          nftnl_set_elem_set(el, NFTNL_SET_ELEM_DATA, data->data(), data->size());
        } else {
          return false;
        }
      } else {
        return false;
      }
      nlmsghdr* nlh = hdr(type, flags);
      nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
      batch.commit(nlh, line);
      return true;
    }

    if (object == "rule" && verb == "add") {
      RulePtr r(nftnl_rule_alloc());
      nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_IPV4);
      nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table.c_str());
      nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, name.c_str());
      RuleEncoder encoder(r.get(), batch, table, line);
      if (!encoder.encode(Tokens(t.begin() + 5, t.end()))) return false;
      // The encoder may have added messages (an anonymous map) before the rule.
      buf = batch.reserve(4096 + text_size * 8);
      nlmsghdr* nlh = hdr(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
      nftnl_rule_nlmsg_build_payload(nlh, r.get());
      batch.commit(nlh, line);
      return true;
    }
    return false;
  }

  Status open_socket() {
    if (nl_) return Status::ok();
    nl_ = mnl_socket_open(NETLINK_NETFILTER);
    if (!nl_)
      return error(StatusCode::kInternal,
                   std::string("nftables: netlink socket: ") + std::strerror(errno));
    if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
      int err = errno;
      mnl_socket_close(nl_);
      nl_ = nullptr;
      return error(StatusCode::kInternal,
                   std::string("nftables: netlink bind: ") + std::strerror(err));
    }
    int on = 1;
    // Acknowledgements without a copy of the request; error messages from the kernel.
    mnl_socket_setsockopt(nl_, NETLINK_CAP_ACK, &on, sizeof on);
    mnl_socket_setsockopt(nl_, NETLINK_EXT_ACK, &on, sizeof on);
    return Status::ok();
  }

  Status send(const Batch& batch, const std::vector<std::string_view>& lines) {
    SKIFF_RETURN_IF_ERROR(open_socket());
    char reply[MNL_SOCKET_BUFFER_SIZE * 4];
    // Nothing stale from an earlier batch may be read as this one's answer.
    while (recv(mnl_socket_get_fd(nl_), reply, sizeof reply, MSG_DONTWAIT) > 0) {
    }
    int fd = mnl_socket_get_fd(nl_);
    int size = static_cast<int>(batch.size()) * 2;
    if (batch.size() > 200 * 1024) {
      if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
      }
    }
    if (mnl_socket_sendto(nl_, batch.data(), batch.size()) < 0) {
      int err = errno;
      mnl_socket_close(nl_);
      nl_ = nullptr;
      return error(StatusCode::kInternal,
                   std::string("nftables: netlink send: ") + std::strerror(err));
    }
    // The kernel handles the batch within the send, as nftables relies on too: whatever it has
    // to say is queued by now. Messages carry no acknowledgement request, so a successful batch
    // leaves nothing; a failed one an error per failing message (and the batch aborted).
    std::optional<std::pair<uint32_t, int>> first_error;
    std::string kernel_message;
    bool lost = false;
    for (;;) {
      ssize_t n = recv(fd, reply, sizeof reply, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == ENOBUFS) {  // errors overflowed the socket: the batch failed
          lost = true;
          continue;
        }
        return error(StatusCode::kInternal,
                     std::string("nftables: netlink receive: ") + std::strerror(errno));
      }
      if (n == 0) break;
      auto* nlh = reinterpret_cast<nlmsghdr*>(reply);
      int len = static_cast<int>(n);
      for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
        if (nlh->nlmsg_type != NLMSG_ERROR) continue;
        auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
        if (e->error == 0) continue;
        if (!first_error || e->msg.nlmsg_seq < first_error->first) {
          first_error = {e->msg.nlmsg_seq, -e->error};
          kernel_message = ext_ack_message(nlh);
        }
      }
    }
    if (first_error) {
      auto [seq, err] = *first_error;
      std::string where = "commit";
      if (auto line = batch.line_of(seq)) {
        where = "line " + std::to_string(*line + 1) + " (" + std::string(lines[*line]) + ")";
      }
      std::string message = "nftables: " + where + ": " + std::strerror(err);
      if (!kernel_message.empty()) message += " (" + kernel_message + ")";
      return error(StatusCode::kInternal, message);
    }
    if (lost) {
      return error(StatusCode::kInternal, "nftables: the batch failed; its errors were lost");
    }
    return Status::ok();
  }

  // The kernel's explanation attached to an error (NLMSGERR_ATTR_MSG), if any.
  static std::string ext_ack_message(const nlmsghdr* nlh) {
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return "";
    auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    size_t offset = sizeof(nlmsghdr) + sizeof(nlmsgerr);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) offset += e->msg.nlmsg_len - sizeof(nlmsghdr);
    std::string out;
    const auto* base = reinterpret_cast<const char*>(nlh);
    while (offset + sizeof(nlattr) <= nlh->nlmsg_len) {
      auto* attr = reinterpret_cast<const nlattr*>(base + offset);
      if (attr->nla_len < sizeof(nlattr) || offset + attr->nla_len > nlh->nlmsg_len) break;
      if ((attr->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
        out.assign(reinterpret_cast<const char*>(attr) + sizeof(nlattr),
                   attr->nla_len - sizeof(nlattr));
        while (!out.empty() && out.back() == '\0') out.pop_back();
        break;
      }
      offset += NLA_ALIGN(attr->nla_len);
    }
    return out;
  }

  std::mutex mu_;
  std::unique_ptr<NftRunner> fallback_;
  mnl_socket* nl_ = nullptr;
};

}  // namespace

std::unique_ptr<NftRunner> make_nftnl_runner(std::unique_ptr<NftRunner> fallback) {
  if (!fallback) fallback = make_libnftables_runner();
  return std::make_unique<NftnlRunner>(std::move(fallback));
}

}  // namespace skiff::proxy
