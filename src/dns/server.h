#pragma once

// DnsServer: DNS over UDP and TCP for the cluster. Questions in the cluster domain (and reverse
// names of cluster addresses) are answered from a ClusterRecords; everything else is forwarded
// to upstream resolvers (UDP questions over UDP, TCP questions over TCP), trying each upstream in
// turn with a timeout, SERVFAIL when none answers. Packets are parsed and built with ldns; I/O
// runs on Boost.Asio, one event loop per worker thread, each with its own UDP socket on the
// shared port (SO_REUSEPORT lets the kernel spread clients over them).
//
// Protocol details: answers over UDP larger than 512 bytes, or than the client's EDNS payload
// size, come back truncated (TC, empty sections) so the client retries over TCP; malformed
// questions get FORMERR, opcodes other than QUERY NOTIMP, classes other than IN and zone transfers
// REFUSED, EDNS versions above 0 BADVERS; packets too short to carry a header, and responses, are
// dropped. An ExternalName's CNAME to a name outside the cluster is followed upstream for A and
// AAAA questions, as CoreDNS does.
//
// Thread-safety: start() and stop() from one thread; port() and upstreams() from any thread
// after start(). The ClusterRecords must outlive the server; it is read from the worker threads.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "dns/records.h"

namespace skiff::dns {

struct DnsServerOptions {
  std::string address = "0.0.0.0";
  int port = 53;  // 0 = any free port; port() tells which
  // "ip", "ip:port" or "[ipv6]:port". Entries that point back at this server are dropped.
  std::vector<std::string> upstreams;
  // How long each upstream gets to answer before the next one is asked.
  std::chrono::milliseconds upstream_timeout{2000};
  // Worker threads (event loops); 0 = one per core, at least 2.
  int threads = 0;
  // How long an idle TCP connection stays open.
  std::chrono::milliseconds tcp_idle_timeout{10000};
};

class DnsServer {
 public:
  DnsServer(const ClusterRecords& records, DnsServerOptions options);
  ~DnsServer();  // stops
  DnsServer(const DnsServer&) = delete;
  DnsServer& operator=(const DnsServer&) = delete;

  // Binds UDP and TCP and starts the workers. kInvalidArgument for a malformed address or
  // upstream, kUnavailable when the port cannot be bound.
  Status start();
  // Closes the sockets and joins the workers. Idempotent.
  void stop();

  // The port bound (after start()).
  int port() const;
  // The upstreams in use, "ip:port", after dropping any that point at this server.
  std::vector<std::string> upstreams() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// The nameserver entries of a resolv.conf file, in order. kNotFound when it cannot be read.
Result<std::vector<std::string>> read_resolv_conf(const std::string& path);

}  // namespace skiff::dns
