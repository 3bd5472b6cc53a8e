#include "dns/server.h"

// clang-format off
// ldns defines bool, true and false as macros unless stdbool.h came first.
#include <stdbool.h>  // NOLINT(modernize-deprecated-headers)
#include <ldns/ldns.h>
// clang-format on

#include <ifaddrs.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <thread>

#include "base/log.h"

namespace skiff::dns {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using asio::ip::udp;
using Bytes = std::vector<uint8_t>;
using ErrorCode = boost::system::error_code;
using ReusePort = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

constexpr size_t kHeaderSize = 12;
constexpr uint16_t kOurUdpSize = 1232;  // the EDNS payload size we advertise (DNS flag day 2020)
constexpr size_t kMaxUdpAnswer = 4096;
constexpr uint16_t kTypeOpt = 41, kTypeIxfr = 251, kTypeAxfr = 252;

uint16_t get16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}
void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

// Where the first question ends, 0 when the packet does not hold one.
size_t question_end(const uint8_t* d, size_t len) {
  if (len < kHeaderSize || get16(d + 4) == 0) return 0;
  size_t i = kHeaderSize;
  while (true) {
    if (i >= len) return 0;
    uint8_t l = d[i];
    if (l == 0) break;
    if ((l & 0xc0) != 0) return 0;  // a query's question is never compressed
    i += 1 + l;
  }
  i += 1 + 4;
  return i <= len ? i : 0;
}

// A reply carrying only the header (and the question, when it parses), made from a packet's
// bytes: errors for queries ldns cannot or need not parse, and truncated forwarded answers.
Bytes header_reply(const uint8_t* d, size_t len, uint8_t rcode, bool truncated) {
  size_t qend = question_end(d, len);
  Bytes out(d, d + (qend != 0 ? qend : kHeaderSize));
  out[2] = static_cast<uint8_t>((d[2] & 0x7d) | 0x80 | (truncated ? 0x02 : 0));  // QR, keep AA/RD
  out[3] = static_cast<uint8_t>(0x80 | (rcode & 0x0f));                          // RA
  if (!truncated) out[2] &= static_cast<uint8_t>(~0x04);
  put16(out.data() + 4, qend != 0 ? 1 : 0);
  put16(out.data() + 6, 0);
  put16(out.data() + 8, 0);
  put16(out.data() + 10, 0);
  return out;
}

// A forwarded answer as the client may receive it.
Bytes fit(Bytes reply, size_t limit) {
  if (reply.size() <= limit) return reply;
  return header_reply(reply.data(), reply.size(), reply[3] & 0x0f, true);
}

struct PktFree {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using PktPtr = std::unique_ptr<ldns_pkt, PktFree>;

ldns_rr* to_ldns(const Record& r) {
  ldns_rr* rr = ldns_rr_new();
  ldns_rdf* owner = ldns_dname_new_frm_str(r.name.c_str());
  if (owner == nullptr) {
    ldns_rr_free(rr);
    return nullptr;
  }
  ldns_rr_set_owner(rr, owner);
  ldns_rr_set_type(rr, static_cast<ldns_rr_type>(r.type));
  ldns_rr_set_class(rr, LDNS_RR_CLASS_IN);
  ldns_rr_set_ttl(rr, r.ttl);
  std::vector<ldns_rdf*> rdfs;
  switch (r.type) {
    case RrType::kA:
      rdfs.push_back(ldns_rdf_new_frm_str(LDNS_RDF_TYPE_A, r.data.c_str()));
      break;
    case RrType::kAaaa:
      rdfs.push_back(ldns_rdf_new_frm_str(LDNS_RDF_TYPE_AAAA, r.data.c_str()));
      break;
    case RrType::kCname:
    case RrType::kPtr:
    case RrType::kNs:
      rdfs.push_back(ldns_dname_new_frm_str(r.data.c_str()));
      break;
    case RrType::kTxt:
      rdfs.push_back(ldns_rdf_new_frm_str(LDNS_RDF_TYPE_STR, r.data.c_str()));
      break;
    case RrType::kSrv:
      rdfs.push_back(ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, r.priority));
      rdfs.push_back(ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, r.weight));
      rdfs.push_back(ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, r.port));
      rdfs.push_back(ldns_dname_new_frm_str(r.data.c_str()));
      break;
    case RrType::kSoa:
      rdfs.push_back(ldns_dname_new_frm_str(r.data.c_str()));
      rdfs.push_back(ldns_dname_new_frm_str(r.mailbox.c_str()));
      rdfs.push_back(ldns_native2rdf_int32(LDNS_RDF_TYPE_INT32, r.serial));
      rdfs.push_back(ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, r.refresh));
      rdfs.push_back(ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, r.retry));
      rdfs.push_back(ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, r.expire));
      rdfs.push_back(ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, r.minimum));
      break;
    case RrType::kAny:
      break;
  }
  bool ok = !rdfs.empty();
  for (ldns_rdf* f : rdfs) {
    if (f == nullptr) {
      ok = false;
    } else {
      ldns_rr_push_rdf(rr, f);
    }
  }
  if (!ok) {
    ldns_rr_free(rr);
    return nullptr;
  }
  return rr;
}

Bytes to_wire(const ldns_pkt* p) {
  uint8_t* wire = nullptr;
  size_t size = 0;
  if (ldns_pkt2wire(&wire, p, &size) != LDNS_STATUS_OK) {
    free(wire);
    return {};
  }
  Bytes out(wire, wire + size);
  free(wire);
  return out;
}

// A response to `query` holding `answer` (plus `extra` answers from upstream). Above `limit`
// bytes it is truncated as CoreDNS does: TC set, authority and additional sections dropped, and
// as many answer records kept as fit (found by bisection), so a client that does not retry over
// TCP still gets some addresses.
Bytes build_response(const ldns_pkt* query, const Answer& answer, size_t limit,
                     const ldns_rr_list* extra) {
  const size_t extra_count = extra != nullptr ? ldns_rr_list_rr_count(extra) : 0;
  const size_t total = answer.answer.size() + extra_count;
  // `keep` answer records (own first, then upstream's); everything when not truncated.
  auto make = [&](bool truncated, size_t keep) {
    PktPtr r(ldns_pkt_new());
    ldns_pkt_set_id(r.get(), ldns_pkt_id(query));
    ldns_pkt_set_qr(r.get(), true);
    ldns_pkt_set_opcode(r.get(), LDNS_PACKET_QUERY);
    ldns_pkt_set_aa(r.get(), answer.authoritative);
    ldns_pkt_set_rd(r.get(), ldns_pkt_rd(query));
    ldns_pkt_set_cd(r.get(), ldns_pkt_cd(query));
    ldns_pkt_set_ra(r.get(), true);
    ldns_pkt_set_tc(r.get(), truncated);
    ldns_pkt_set_rcode(r.get(), static_cast<uint8_t>(answer.rcode));
    const ldns_rr_list* q = ldns_pkt_question(query);
    for (size_t i = 0; i < ldns_rr_list_rr_count(q); ++i) {
      ldns_pkt_push_rr(r.get(), LDNS_SECTION_QUESTION, ldns_rr_clone(ldns_rr_list_rr(q, i)));
    }
    size_t pushed = 0;
    for (const auto& rec : answer.answer) {
      if (pushed == keep) break;
      if (ldns_rr* rr = to_ldns(rec)) ldns_pkt_push_rr(r.get(), LDNS_SECTION_ANSWER, rr);
      ++pushed;
    }
    for (size_t i = 0; i < extra_count && pushed < keep; ++i, ++pushed) {
      ldns_pkt_push_rr(r.get(), LDNS_SECTION_ANSWER, ldns_rr_clone(ldns_rr_list_rr(extra, i)));
    }
    if (!truncated) {
      auto push = [&](ldns_pkt_section section, const std::vector<Record>& records) {
        for (const auto& rec : records) {
          if (ldns_rr* rr = to_ldns(rec)) ldns_pkt_push_rr(r.get(), section, rr);
        }
      };
      push(LDNS_SECTION_AUTHORITY, answer.authority);
      push(LDNS_SECTION_ADDITIONAL, answer.additional);
    }
    if (ldns_pkt_edns(query)) ldns_pkt_set_edns_udp_size(r.get(), kOurUdpSize);
    return to_wire(r.get());
  };
  Bytes wire = make(false, total);
  if (wire.size() <= limit) return wire;
  // The most answer records that fit: `lo` always fits (zero does: the question alone).
  size_t lo = 0;
  size_t hi = total;
  Bytes best = make(true, 0);
  while (lo < hi) {
    size_t mid = (lo + hi + 1) / 2;
    Bytes candidate = make(true, mid);
    if (candidate.size() <= limit) {
      lo = mid;
      best = std::move(candidate);
    } else {
      hi = mid - 1;
    }
  }
  return best;
}

// What to do with a packet that arrived.
struct Decision {
  enum class Kind : uint8_t { kDrop, kReply, kForward, kChase } kind = Kind::kDrop;
  Bytes reply;       // kReply
  size_t limit = 0;  // the largest answer the client takes over this transport
  // kChase: the answer so far (ending in a CNAME out of the zone), and the question for upstream.
  std::shared_ptr<PktPtr> query;
  Answer answer;
  Bytes chase_query;
};

Decision decide(const ClusterRecords& records, const uint8_t* d, size_t len, bool tcp) {
  Decision out;
  if (len < kHeaderSize || (d[2] & 0x80) != 0) return out;  // no header, or a response
  out.kind = Decision::Kind::kReply;
  uint8_t opcode = (d[2] >> 3) & 0x0f;
  if (opcode != LDNS_PACKET_QUERY) {
    out.reply = header_reply(d, len, LDNS_RCODE_NOTIMPL, false);
    return out;
  }
  ldns_pkt* raw = nullptr;
  if (ldns_wire2pkt(&raw, d, len) != LDNS_STATUS_OK || raw == nullptr) {
    ldns_pkt_free(raw);
    out.reply = header_reply(d, len, LDNS_RCODE_FORMERR, false);
    return out;
  }
  auto query = std::make_shared<PktPtr>(raw);
  const ldns_pkt* q = raw;
  if (ldns_pkt_qdcount(q) != 1 || ldns_rr_list_rr_count(ldns_pkt_question(q)) != 1) {
    out.reply = header_reply(d, len, LDNS_RCODE_FORMERR, false);
    return out;
  }
  size_t client_size = ldns_pkt_edns(q) ? std::max<size_t>(512, ldns_pkt_edns_udp_size(q)) : 512;
  out.limit = tcp ? 65535 : std::min(client_size, kMaxUdpAnswer);
  Answer answer;
  if (ldns_pkt_edns(q) && ldns_pkt_edns_version(q) > 0) {
    // BADVERS: extended rcode 16 is 1 in the OPT's upper bits, 0 in the header.
    PktPtr r(ldns_pkt_new());
    ldns_pkt_set_id(r.get(), ldns_pkt_id(q));
    ldns_pkt_set_qr(r.get(), true);
    ldns_pkt_set_rd(r.get(), ldns_pkt_rd(q));
    ldns_pkt_set_ra(r.get(), true);
    ldns_pkt_push_rr(r.get(), LDNS_SECTION_QUESTION,
                     ldns_rr_clone(ldns_rr_list_rr(ldns_pkt_question(q), 0)));
    ldns_pkt_set_edns_udp_size(r.get(), kOurUdpSize);
    ldns_pkt_set_edns_extended_rcode(r.get(), 1);
    out.reply = to_wire(r.get());
    return out;
  }
  const ldns_rr* question = ldns_rr_list_rr(ldns_pkt_question(q), 0);
  auto qtype = static_cast<uint16_t>(ldns_rr_get_type(question));
  if (qtype == kTypeOpt) {
    answer.rcode = Rcode::kFormErr;
    out.reply = build_response(q, answer, out.limit, nullptr);
    return out;
  }
  if (ldns_rr_get_class(question) != LDNS_RR_CLASS_IN || qtype == kTypeAxfr || qtype == kTypeIxfr) {
    answer.rcode = Rcode::kRefused;
    out.reply = build_response(q, answer, out.limit, nullptr);
    return out;
  }
  char* name = ldns_rdf2str(ldns_rr_owner(question));
  if (name == nullptr) {
    out.reply = header_reply(d, len, LDNS_RCODE_SERVFAIL, false);
    return out;
  }
  answer = records.answer(name, qtype);
  free(name);
  if (answer.forward) {
    out.kind = Decision::Kind::kForward;
    return out;
  }
  // An ExternalName's target outside the cluster: resolve it upstream for address questions.
  if ((qtype == LDNS_RR_TYPE_A || qtype == LDNS_RR_TYPE_AAAA) && !answer.answer.empty() &&
      answer.answer.back().type == RrType::kCname &&
      records.answer(answer.answer.back().data, qtype).forward) {
    ldns_rdf* target = ldns_dname_new_frm_str(answer.answer.back().data.c_str());
    if (target != nullptr) {
      PktPtr chase(
          ldns_pkt_query_new(target, static_cast<ldns_rr_type>(qtype), LDNS_RR_CLASS_IN, LDNS_RD));
      ldns_pkt_set_random_id(chase.get());
      ldns_pkt_set_edns_udp_size(chase.get(), kOurUdpSize);
      out.kind = Decision::Kind::kChase;
      out.chase_query = to_wire(chase.get());
      out.query = std::move(query);
      out.answer = std::move(answer);
      return out;
    }
  }
  out.reply = build_response(q, answer, out.limit, nullptr);
  return out;
}

// The answer to a chase: the CNAME plus whatever the upstream answered for its target.
Bytes finish_chase(const Decision& d, const std::optional<Bytes>& upstream) {
  ldns_pkt* reply = nullptr;
  if (upstream && ldns_wire2pkt(&reply, upstream->data(), upstream->size()) == LDNS_STATUS_OK &&
      reply != nullptr) {
    PktPtr owned(reply);
    return build_response(d.query->get(), d.answer, d.limit, ldns_pkt_answer(reply));
  }
  ldns_pkt_free(reply);
  return build_response(d.query->get(), d.answer, d.limit, nullptr);
}

// One question forwarded to the upstreams in turn; `done` gets the first response, or nullopt
// when every upstream failed or timed out. Runs on one io_context's thread.
class Forward : public std::enable_shared_from_this<Forward> {
 public:
  using Done = std::function<void(std::optional<Bytes>)>;

  Forward(asio::io_context& io, Bytes query, bool tcp,
          const std::vector<std::pair<asio::ip::address, uint16_t>>& upstreams, size_t first,
          std::chrono::milliseconds timeout, Done done)
      : udp_(io),
        tcp_(io),
        timer_(io),
        query_(std::move(query)),
        tcp_mode_(tcp),
        upstreams_(upstreams),
        first_(first),
        timeout_(timeout),
        done_(std::move(done)) {}

  void start() { next(); }

 private:
  void next() {
    ErrorCode ec;
    udp_.close(ec);
    tcp_.close(ec);
    if (attempt_ >= upstreams_.size()) return finish(std::nullopt);
    auto [addr, port] = upstreams_[(first_ + attempt_) % upstreams_.size()];
    ++attempt_;
    uint64_t gen = ++generation_;
    auto self = shared_from_this();
    timer_.expires_after(timeout_);
    timer_.async_wait([self, gen](const ErrorCode& ec) {
      if (ec || gen != self->generation_ || self->finished_) return;
      ErrorCode ignored;
      self->udp_.cancel(ignored);
      self->tcp_.close(ignored);
    });
    if (tcp_mode_) {
      tcp_.async_connect(tcp::endpoint(addr, port), [self, gen](const ErrorCode& ec) {
        if (gen != self->generation_ || self->finished_) return;
        if (ec) return self->next();
        self->tcp_send(gen);
      });
      return;
    }
    udp_.open(addr.is_v6() ? udp::v6() : udp::v4(), ec);
    if (!ec) udp_.connect(udp::endpoint(addr, port), ec);
    if (!ec) udp_.send(asio::buffer(query_), 0, ec);
    if (ec) return next();
    udp_receive(gen);
  }

  void udp_receive(uint64_t gen) {
    auto self = shared_from_this();
    udp_.async_receive(asio::buffer(buf_), [self, gen](const ErrorCode& ec, size_t n) {
      if (gen != self->generation_ || self->finished_) return;
      if (ec) return self->next();  // timed out, or refused (ICMP)
      if (!self->matches(self->buf_.data(), n)) return self->udp_receive(gen);
      self->finish(Bytes(self->buf_.begin(), self->buf_.begin() + n));
    });
  }

  void tcp_send(uint64_t gen) {
    framed_.resize(2 + query_.size());
    put16(framed_.data(), static_cast<uint16_t>(query_.size()));
    std::copy(query_.begin(), query_.end(), framed_.begin() + 2);
    auto self = shared_from_this();
    asio::async_write(tcp_, asio::buffer(framed_), [self, gen](const ErrorCode& ec, size_t) {
      if (gen != self->generation_ || self->finished_) return;
      if (ec) return self->next();
      asio::async_read(
          self->tcp_, asio::buffer(self->buf_.data(), 2), [self, gen](const ErrorCode& ec, size_t) {
            if (gen != self->generation_ || self->finished_) return;
            if (ec) return self->next();
            size_t n = get16(self->buf_.data());
            asio::async_read(self->tcp_, asio::buffer(self->buf_.data(), n),
                             [self, gen](const ErrorCode& ec, size_t n) {
                               if (gen != self->generation_ || self->finished_) return;
                               if (ec || !self->matches(self->buf_.data(), n)) return self->next();
                               self->finish(Bytes(self->buf_.begin(), self->buf_.begin() + n));
                             });
          });
    });
  }

  bool matches(const uint8_t* d, size_t n) const {
    return n >= kHeaderSize && (d[2] & 0x80) != 0 && get16(d) == get16(query_.data());
  }

  void finish(std::optional<Bytes> reply) {
    if (finished_) return;
    finished_ = true;
    ErrorCode ec;
    timer_.cancel(ec);
    udp_.close(ec);
    tcp_.close(ec);
    done_(std::move(reply));
  }

  udp::socket udp_;
  tcp::socket tcp_;
  asio::steady_timer timer_;
  const Bytes query_;
  const bool tcp_mode_;
  const std::vector<std::pair<asio::ip::address, uint16_t>>& upstreams_;
  const size_t first_;
  const std::chrono::milliseconds timeout_;
  Done done_;
  size_t attempt_ = 0;
  uint64_t generation_ = 0;
  bool finished_ = false;
  Bytes framed_;
  std::array<uint8_t, 65536> buf_;
};

Result<std::pair<asio::ip::address, uint16_t>> parse_upstream(const std::string& s) {
  std::string host = s;
  uint16_t port = 53;
  std::string port_text;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos) {
      return error(StatusCode::kInvalidArgument, "malformed upstream: " + s);
    }
    host = s.substr(1, close - 1);
    if (close + 1 < s.size()) {
      if (s[close + 1] != ':')
        return error(StatusCode::kInvalidArgument, "malformed upstream: " + s);
      port_text = s.substr(close + 2);
    }
  } else if (std::count(s.begin(), s.end(), ':') == 1) {
    host = s.substr(0, s.find(':'));
    port_text = s.substr(s.find(':') + 1);
  }
  if (!port_text.empty()) {
    if (port_text.size() > 5 || !std::all_of(port_text.begin(), port_text.end(),
                                             [](char c) { return c >= '0' && c <= '9'; })) {
      return error(StatusCode::kInvalidArgument, "malformed upstream port: " + s);
    }
    int p = std::stoi(port_text);
    if (p <= 0 || p > 65535) return error(StatusCode::kInvalidArgument, "bad upstream port: " + s);
    port = static_cast<uint16_t>(p);
  }
  ErrorCode ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return error(StatusCode::kInvalidArgument, "malformed upstream address: " + s);
  return std::make_pair(addr, port);
}

std::vector<asio::ip::address> local_addresses() {
  std::vector<asio::ip::address> out;
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return out;
  for (ifaddrs* i = ifs; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      auto* sin = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
      asio::ip::address_v4::bytes_type b;
      std::memcpy(b.data(), &sin->sin_addr, 4);
      out.push_back(asio::ip::address_v4(b));
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
      asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), &sin6->sin6_addr, 16);
      out.push_back(asio::ip::address_v6(b));
    }
  }
  freeifaddrs(ifs);
  return out;
}

}  // namespace

class DnsServer::Impl {
 public:
  Impl(const ClusterRecords& records, DnsServerOptions options)
      : records_(records), options_(std::move(options)) {}
  ~Impl() { stop(); }

  Status start();
  void stop();
  int port() const { return port_.load(); }
  std::vector<std::string> upstreams() const {
    std::vector<std::string> out;
    for (const auto& [a, p] : upstreams_) {
      out.push_back(a.is_v6() ? "[" + a.to_string() + "]:" + std::to_string(p)
                              : a.to_string() + ":" + std::to_string(p));
    }
    return out;
  }

 private:
  struct Worker {
    asio::io_context io{1};
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
    std::optional<udp::socket> socket;
    udp::endpoint sender;
    std::array<uint8_t, 65536> buf;
    std::thread thread;
  };
  class TcpConnection;

  void udp_receive(Worker& w);
  void on_udp(Worker& w, size_t n);
  void accept();
  void forward(asio::io_context& io, Bytes query, bool tcp, Forward::Done done);

  const ClusterRecords& records_;
  const DnsServerOptions options_;
  std::vector<std::pair<asio::ip::address, uint16_t>> upstreams_;  // fixed after start()
  std::vector<std::unique_ptr<Worker>> workers_;
  std::optional<tcp::acceptor> acceptor_;  // on workers_[0]
  std::atomic<size_t> next_upstream_{0};
  std::atomic<size_t> next_worker_{0};
  std::atomic<int> port_{0};
  bool started_ = false;
};

class DnsServer::Impl::TcpConnection : public std::enable_shared_from_this<TcpConnection> {
 public:
  TcpConnection(Impl& server, asio::io_context& io, tcp::socket socket)
      : server_(server), io_(io), socket_(std::move(socket)), timer_(io) {}

  void start() { read_length(); }

 private:
  void arm_idle_timer() {
    auto self = shared_from_this();
    timer_.expires_after(server_.options_.tcp_idle_timeout);
    timer_.async_wait([self](const ErrorCode& ec) {
      if (ec) return;
      ErrorCode ignored;
      self->socket_.close(ignored);
    });
  }

  void read_length() {
    arm_idle_timer();
    auto self = shared_from_this();
    asio::async_read(socket_, asio::buffer(len_), [self](const ErrorCode& ec, size_t) {
      if (ec) return self->close();
      size_t n = get16(self->len_.data());
      if (n == 0) return self->close();
      self->msg_.resize(n);
      asio::async_read(self->socket_, asio::buffer(self->msg_),
                       [self](const ErrorCode& ec, size_t) {
                         if (ec) return self->close();
                         self->handle();
                       });
    });
  }

  void handle() {
    ErrorCode ignored;
    timer_.cancel(ignored);
    Decision d = decide(server_.records_, msg_.data(), msg_.size(), true);
    auto self = shared_from_this();
    switch (d.kind) {
      case Decision::Kind::kDrop:
        return close();
      case Decision::Kind::kReply:
        return write(std::move(d.reply));
      case Decision::Kind::kForward:
        server_.forward(io_, msg_, true, [self, query = msg_](std::optional<Bytes> reply) {
          self->write(reply ? std::move(*reply)
                            : header_reply(query.data(), query.size(), LDNS_RCODE_SERVFAIL, false));
        });
        return;
      case Decision::Kind::kChase: {
        auto decision = std::make_shared<Decision>(std::move(d));
        server_.forward(io_, decision->chase_query, false,
                        [self, decision](std::optional<Bytes> reply) {
                          self->write(finish_chase(*decision, reply));
                        });
        return;
      }
    }
  }

  void write(Bytes reply) {
    out_.resize(2 + reply.size());
    put16(out_.data(), static_cast<uint16_t>(reply.size()));
    std::copy(reply.begin(), reply.end(), out_.begin() + 2);
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(out_), [self](const ErrorCode& ec, size_t) {
      if (ec) return self->close();
      self->read_length();
    });
  }

  void close() {
    ErrorCode ignored;
    timer_.cancel(ignored);
    socket_.close(ignored);
  }

  Impl& server_;
  asio::io_context& io_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  std::array<uint8_t, 2> len_{};
  Bytes msg_;
  Bytes out_;
};

Status DnsServer::Impl::start() {
  if (started_) return error(StatusCode::kFailedPrecondition, "DNS server already started");
  ErrorCode ec;
  auto address = asio::ip::make_address(options_.address, ec);
  if (ec)
    return error(StatusCode::kInvalidArgument, "malformed listen address: " + options_.address);
  if (options_.port < 0 || options_.port > 65535) {
    return error(StatusCode::kInvalidArgument, "listen port out of range");
  }
  std::vector<std::pair<asio::ip::address, uint16_t>> upstreams;
  for (const auto& u : options_.upstreams) {
    SKIFF_ASSIGN_OR_RETURN(auto parsed, parse_upstream(u));
    upstreams.push_back(parsed);
  }
  int threads = options_.threads > 0
                    ? options_.threads
                    : std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  for (int i = 0; i < threads; ++i) workers_.push_back(std::make_unique<Worker>());

  // UDP on every worker with SO_REUSEPORT, and TCP, on one port (with port 0: the first UDP
  // socket picks it, and TCP must get the same one; a few tries when TCP finds it taken).
  uint16_t port = 0;
  std::string last_error;
  for (int attempt = 0; attempt < 20 && port == 0; ++attempt) {
    for (auto& w : workers_) w->socket.reset();
    acceptor_.reset();
    uint16_t want = static_cast<uint16_t>(options_.port);
    bool ok = true;
    for (auto& w : workers_) {
      w->socket.emplace(w->io);
      w->socket->open(address.is_v6() ? udp::v6() : udp::v4(), ec);
      if (!ec) w->socket->set_option(ReusePort(true), ec);
      if (!ec) w->socket->bind(udp::endpoint(address, want), ec);
      if (ec) {
        last_error = "UDP " + options_.address + ":" + std::to_string(want) + ": " + ec.message();
        ok = false;
        break;
      }
      want = w->socket->local_endpoint().port();
      ErrorCode ignored;
      w->socket->set_option(asio::socket_base::receive_buffer_size(4 << 20), ignored);
    }
    if (ok) {
      acceptor_.emplace(workers_[0]->io);
      acceptor_->open(address.is_v6() ? tcp::v6() : tcp::v4(), ec);
      if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec) acceptor_->bind(tcp::endpoint(address, want), ec);
      if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) {
        last_error = "TCP " + options_.address + ":" + std::to_string(want) + ": " + ec.message();
        ok = false;
      }
    }
    if (ok) port = want;
    if (!ok && options_.port != 0) break;
  }
  if (port == 0) {
    for (auto& w : workers_) w->socket.reset();
    acceptor_.reset();
    workers_.clear();
    return error(StatusCode::kUnavailable, "cannot listen: " + last_error);
  }
  port_ = port;

  // Never forward to ourselves: that would loop until the timeout.
  auto locals = local_addresses();
  for (const auto& [addr, p] : upstreams) {
    bool self = false;
    if (p == port) {
      if (addr == address || addr.is_loopback()) self = true;
      if (address.is_unspecified() &&
          std::find(locals.begin(), locals.end(), addr) != locals.end()) {
        self = true;
      }
    }
    if (self) {
      SKIFF_LOG_WARN("dns: not forwarding to {} (this server)", addr.to_string());
      continue;
    }
    upstreams_.emplace_back(addr, p);
  }

  for (auto& w : workers_) {
    w->guard.emplace(w->io.get_executor());
    udp_receive(*w);
  }
  accept();
  for (auto& w : workers_) {
    Worker* raw = w.get();
    w->thread = std::thread([raw] { raw->io.run(); });
  }
  started_ = true;
  return Status::ok();
}

void DnsServer::Impl::stop() {
  if (!started_) return;
  started_ = false;
  for (auto& w : workers_) w->io.stop();
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
  acceptor_.reset();
  for (auto& w : workers_) w->socket.reset();
  workers_.clear();  // pending operations are destroyed with their io_context
}

void DnsServer::Impl::udp_receive(Worker& w) {
  w.socket->async_receive_from(asio::buffer(w.buf), w.sender,
                               [this, &w](const ErrorCode& ec, size_t n) {
                                 if (ec == asio::error::operation_aborted || !w.socket->is_open()) {
                                   return;
                                 }
                                 if (!ec) on_udp(w, n);
                                 udp_receive(w);
                               });
}

void DnsServer::Impl::on_udp(Worker& w, size_t n) {
  Decision d = decide(records_, w.buf.data(), n, false);
  udp::endpoint client = w.sender;
  ErrorCode ec;
  switch (d.kind) {
    case Decision::Kind::kDrop:
      return;
    case Decision::Kind::kReply:
      w.socket->send_to(asio::buffer(d.reply), client, 0, ec);
      return;
    case Decision::Kind::kForward: {
      Bytes query(w.buf.begin(), w.buf.begin() + n);
      size_t limit = d.limit;
      forward(w.io, query, false, [&w, client, query, limit](std::optional<Bytes> reply) {
        Bytes out = reply ? fit(std::move(*reply), limit)
                          : header_reply(query.data(), query.size(), LDNS_RCODE_SERVFAIL, false);
        ErrorCode ignored;
        if (w.socket) w.socket->send_to(asio::buffer(out), client, 0, ignored);
      });
      return;
    }
    case Decision::Kind::kChase: {
      auto decision = std::make_shared<Decision>(std::move(d));
      forward(w.io, decision->chase_query, false,
              [&w, client, decision](std::optional<Bytes> reply) {
                Bytes out = finish_chase(*decision, reply);
                ErrorCode ignored;
                if (w.socket) w.socket->send_to(asio::buffer(out), client, 0, ignored);
              });
      return;
    }
  }
}

void DnsServer::Impl::accept() {
  Worker& target = *workers_[next_worker_++ % workers_.size()];
  acceptor_->async_accept(target.io, [this, &target](const ErrorCode& ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_ || !acceptor_->is_open()) return;
    if (!ec) {
      auto conn = std::make_shared<TcpConnection>(*this, target.io, std::move(socket));
      asio::post(target.io, [conn] { conn->start(); });
    }
    accept();
  });
}

void DnsServer::Impl::forward(asio::io_context& io, Bytes query, bool tcp, Forward::Done done) {
  if (upstreams_.empty()) {
    done(std::nullopt);
    return;
  }
  auto op = std::make_shared<Forward>(io, std::move(query), tcp, upstreams_,
                                      next_upstream_++ % upstreams_.size(),
                                      options_.upstream_timeout, std::move(done));
  op->start();
}

DnsServer::DnsServer(const ClusterRecords& records, DnsServerOptions options)
    : impl_(std::make_unique<Impl>(records, std::move(options))) {}
DnsServer::~DnsServer() = default;
Status DnsServer::start() {
  return impl_->start();
}
void DnsServer::stop() {
  impl_->stop();
}
int DnsServer::port() const {
  return impl_->port();
}
std::vector<std::string> DnsServer::upstreams() const {
  return impl_->upstreams();
}

Result<std::vector<std::string>> read_resolv_conf(const std::string& path) {
  std::ifstream in(path);
  if (!in) return error(StatusCode::kNotFound, "cannot read " + path);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key, value;
    if (!(words >> key) || key != "nameserver" || !(words >> value)) continue;
    out.push_back(value);
  }
  return out;
}

}  // namespace skiff::dns
