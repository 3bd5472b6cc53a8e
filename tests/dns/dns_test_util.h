// Test helpers for the DNS server: queries built with ldns sent over UDP or TCP to loopback,
// and a fake upstream resolver on a loopback port. Header-only.
//
// Thread-safety: FakeUpstream answers on its own thread; its counters are atomic.
#pragma once

// clang-format off
#include <stdbool.h>  // NOLINT: before ldns, which otherwise defines bool as a macro
#include <ldns/ldns.h>
// clang-format on
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace skiff::dns::testing {

using Bytes = std::vector<uint8_t>;

struct PktFree {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using Pkt = std::unique_ptr<ldns_pkt, PktFree>;

inline Bytes wire_of(const ldns_pkt* p) {
  uint8_t* wire = nullptr;
  size_t size = 0;
  if (ldns_pkt2wire(&wire, p, &size) != LDNS_STATUS_OK) return {};
  Bytes out(wire, wire + size);
  free(wire);
  return out;
}

// A recursive query; `edns_size` > 0 adds an OPT record.
inline Bytes make_query(const std::string& name, ldns_rr_type type, uint16_t edns_size = 0,
                        uint16_t id = 4242) {
  Pkt p(ldns_pkt_query_new(ldns_dname_new_frm_str(name.c_str()), type, LDNS_RR_CLASS_IN, LDNS_RD));
  ldns_pkt_set_id(p.get(), id);
  if (edns_size > 0) ldns_pkt_set_edns_udp_size(p.get(), edns_size);
  return wire_of(p.get());
}

inline Pkt parse(const Bytes& b) {
  ldns_pkt* p = nullptr;
  if (b.empty() || ldns_wire2pkt(&p, b.data(), b.size()) != LDNS_STATUS_OK) return Pkt();
  return Pkt(p);
}

inline sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// Sends `query` over UDP and returns the answer's bytes (empty on timeout).
inline Bytes udp_exchange(int port, const Bytes& query, int timeout_ms = 3000) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a = loopback(port);
  sendto(fd, query.data(), query.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  pollfd pfd{fd, POLLIN, 0};
  Bytes out;
  if (poll(&pfd, 1, timeout_ms) == 1) {
    out.resize(65536);
    ssize_t n = recv(fd, out.data(), out.size(), 0);
    out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  close(fd);
  return out;
}

inline bool read_full(int fd, uint8_t* p, size_t n, int timeout_ms) {
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) != 1) return false;
    ssize_t r = recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Sends each query over one TCP connection, in turn, and returns the answers.
inline std::vector<Bytes> tcp_exchange(int port, const std::vector<Bytes>& queries,
                                       int timeout_ms = 3000) {
  std::vector<Bytes> out;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = loopback(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return out;
  }
  for (const auto& q : queries) {
    Bytes framed(2 + q.size());
    framed[0] = static_cast<uint8_t>(q.size() >> 8);
    framed[1] = static_cast<uint8_t>(q.size());
    if (!q.empty()) std::memcpy(framed.data() + 2, q.data(), q.size());
    if (send(fd, framed.data(), framed.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(framed.size())) {
      break;
    }
    uint8_t len[2];
    if (!read_full(fd, len, 2, timeout_ms)) break;
    Bytes msg(static_cast<size_t>(len[0] << 8 | len[1]));
    if (!read_full(fd, msg.data(), msg.size(), timeout_ms)) break;
    out.push_back(std::move(msg));
  }
  close(fd);
  return out;
}

inline Bytes tcp_exchange(int port, const Bytes& query) {
  auto r = tcp_exchange(port, std::vector<Bytes>{query});
  return r.empty() ? Bytes() : r[0];
}

// The rdata of the answer records of `type`, as text.
inline std::vector<std::string> answers(const ldns_pkt* p, ldns_rr_type type) {
  std::vector<std::string> out;
  const ldns_rr_list* list = ldns_pkt_answer(p);
  for (size_t i = 0; i < ldns_rr_list_rr_count(list); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(list, i);
    if (ldns_rr_get_type(rr) != type) continue;
    std::string text;
    for (size_t j = 0; j < ldns_rr_rd_count(rr); ++j) {
      char* s = ldns_rdf2str(ldns_rr_rdf(rr, j));
      if (!text.empty()) text += " ";
      text += s;
      free(s);
    }
    out.push_back(text);
  }
  return out;
}

// A resolver on 127.0.0.1 (UDP and TCP, one port) that answers every A question with
// `address`, or stays silent when `silent`.
class FakeUpstream {
 public:
  explicit FakeUpstream(std::string address = "192.0.2.1", bool silent = false)
      : address_(std::move(address)), silent_(silent) {
    for (int tries = 0; tries < 20; ++tries) {
      udp_ = socket(AF_INET, SOCK_DGRAM, 0);
      sockaddr_in a = loopback(0);
      bind(udp_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
      socklen_t len = sizeof(a);
      getsockname(udp_, reinterpret_cast<sockaddr*>(&a), &len);
      port_ = ntohs(a.sin_port);
      tcp_ = socket(AF_INET, SOCK_STREAM, 0);
      int one = 1;
      setsockopt(tcp_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      if (bind(tcp_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && listen(tcp_, 16) == 0) {
        break;
      }
      close(udp_);
      close(tcp_);
    }
    thread_ = std::thread([this] { run(); });
  }
  ~FakeUpstream() {
    stop_ = true;
    thread_.join();
    close(udp_);
    close(tcp_);
  }
  int port() const { return port_; }
  int udp_queries() const { return udp_queries_; }
  int tcp_queries() const { return tcp_queries_; }

 private:
  Bytes reply_to(const uint8_t* d, size_t n) {
    ldns_pkt* q = nullptr;
    if (ldns_wire2pkt(&q, d, n) != LDNS_STATUS_OK) return {};
    Pkt query(q);
    Pkt r(ldns_pkt_new());
    ldns_pkt_set_id(r.get(), ldns_pkt_id(q));
    ldns_pkt_set_qr(r.get(), true);
    ldns_pkt_set_rd(r.get(), true);
    ldns_pkt_set_ra(r.get(), true);
    const ldns_rr* question = ldns_rr_list_rr(ldns_pkt_question(q), 0);
    ldns_pkt_push_rr(r.get(), LDNS_SECTION_QUESTION, ldns_rr_clone(question));
    if (ldns_rr_get_type(question) == LDNS_RR_TYPE_A) {
      char* owner = ldns_rdf2str(ldns_rr_owner(question));
      std::string text = std::string(owner) + " 60 IN A " + address_;
      free(owner);
      ldns_rr* rr = nullptr;
      if (ldns_rr_new_frm_str(&rr, text.c_str(), 0, nullptr, nullptr) == LDNS_STATUS_OK) {
        ldns_pkt_push_rr(r.get(), LDNS_SECTION_ANSWER, rr);
      }
    }
    return wire_of(r.get());
  }

  void run() {
    while (!stop_) {
      pollfd fds[2] = {{udp_, POLLIN, 0}, {tcp_, POLLIN, 0}};
      if (poll(fds, 2, 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        uint8_t buf[4096];
        sockaddr_in from{};
        socklen_t len = sizeof(from);
        ssize_t n = recvfrom(udp_, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
        ++udp_queries_;
        if (n > 0 && !silent_) {
          Bytes r = reply_to(buf, static_cast<size_t>(n));
          sendto(udp_, r.data(), r.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
        }
      }
      if (fds[1].revents & POLLIN) {
        int c = accept(tcp_, nullptr, nullptr);
        if (c < 0) continue;
        uint8_t len[2];
        if (read_full(c, len, 2, 2000)) {
          Bytes msg(static_cast<size_t>(len[0] << 8 | len[1]));
          if (read_full(c, msg.data(), msg.size(), 2000)) {
            ++tcp_queries_;
            if (!silent_) {
              Bytes r = reply_to(msg.data(), msg.size());
              uint8_t hdr[2] = {static_cast<uint8_t>(r.size() >> 8),
                                static_cast<uint8_t>(r.size())};
              send(c, hdr, 2, MSG_NOSIGNAL);
              send(c, r.data(), r.size(), MSG_NOSIGNAL);
            }
          }
        }
        close(c);
      }
    }
  }

  std::string address_;
  bool silent_;
  int udp_ = -1, tcp_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> udp_queries_{0}, tcp_queries_{0};
  std::thread thread_;
};

}  // namespace skiff::dns::testing
