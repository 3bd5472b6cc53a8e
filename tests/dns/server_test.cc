#include "dns/server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>

#include "dns/records.h"
#include "dns_test_util.h"
#include "support/ports.h"
#include "support/temp_dir.h"

namespace skiff::dns {
namespace {

using namespace skiff::dns::testing;

Json service(const std::string& ns, const std::string& name, const Json& spec) {
  return {{"metadata", {{"namespace", ns}, {"name", name}}}, {"spec", spec}};
}

class DnsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RecordsOptions o;
    o.service_cidrs = {"10.43.0.0/16"};
    auto r = ClusterRecords::create(o);
    ASSERT_TRUE(r.is_ok());
    records_ = std::move(r).value();
    records_->upsert_service(
        service("default", "web",
                {{"clusterIP", "10.43.0.20"}, {"ports", {{{"name", "http"}, {"port", 80}}}}}));
    records_->upsert_service(
        service("default", "ext", {{"type", "ExternalName"}, {"externalName", "example.com"}}));
  }

  void start(std::vector<std::string> upstreams = {},
             std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
    DnsServerOptions o;
    o.address = "127.0.0.1";
    o.port = 0;
    o.upstreams = std::move(upstreams);
    o.upstream_timeout = timeout;
    server_ = std::make_unique<DnsServer>(*records_, o);
    Status s = server_->start();
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    ASSERT_GT(server_->port(), 0);
  }

  int port() const { return server_->port(); }

  std::unique_ptr<ClusterRecords> records_;
  std::unique_ptr<DnsServer> server_;
};

TEST_F(DnsServerTest, AnswersServiceOverUdpAndTcp) {
  start();
  for (bool tcp : {false, true}) {
    Bytes q = make_query("web.default.svc.cluster.local.", LDNS_RR_TYPE_A);
    Pkt r = parse(tcp ? tcp_exchange(port(), q) : udp_exchange(port(), q));
    ASSERT_TRUE(r) << (tcp ? "tcp" : "udp");
    EXPECT_EQ(ldns_pkt_id(r.get()), 4242);
    EXPECT_TRUE(ldns_pkt_qr(r.get()));
    EXPECT_TRUE(ldns_pkt_aa(r.get()));
    EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_NOERROR);
    EXPECT_EQ(answers(r.get(), LDNS_RR_TYPE_A), std::vector<std::string>{"10.43.0.20"});
    EXPECT_EQ(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_answer(r.get()), 0)), 5u);
    EXPECT_EQ(ldns_pkt_qdcount(r.get()), 1);
  }
}

TEST_F(DnsServerTest, SeveralQueriesOnOneTcpConnection) {
  start();
  auto replies = tcp_exchange(
      port(), {make_query("web.default.svc.cluster.local.", LDNS_RR_TYPE_A),
               make_query("nope.default.svc.cluster.local.", LDNS_RR_TYPE_A),
               make_query("_http._tcp.web.default.svc.cluster.local.", LDNS_RR_TYPE_SRV)});
  ASSERT_EQ(replies.size(), 3u);
  EXPECT_EQ(ldns_pkt_get_rcode(parse(replies[1]).get()), LDNS_RCODE_NXDOMAIN);
  Pkt srv = parse(replies[2]);
  EXPECT_EQ(answers(srv.get(), LDNS_RR_TYPE_SRV),
            std::vector<std::string>{"0 100 80 web.default.svc.cluster.local."});
  EXPECT_EQ(ldns_pkt_arcount(srv.get()), 1);
}

TEST_F(DnsServerTest, NxdomainAndNodataCarrySoa) {
  start();
  Pkt nx =
      parse(udp_exchange(port(), make_query("nope.default.svc.cluster.local.", LDNS_RR_TYPE_A)));
  ASSERT_TRUE(nx);
  EXPECT_EQ(ldns_pkt_get_rcode(nx.get()), LDNS_RCODE_NXDOMAIN);
  EXPECT_TRUE(ldns_pkt_aa(nx.get()));
  ASSERT_EQ(ldns_pkt_nscount(nx.get()), 1);
  EXPECT_EQ(ldns_rr_get_type(ldns_rr_list_rr(ldns_pkt_authority(nx.get()), 0)), LDNS_RR_TYPE_SOA);
  Pkt nodata =
      parse(udp_exchange(port(), make_query("default.svc.cluster.local.", LDNS_RR_TYPE_A)));
  ASSERT_TRUE(nodata);
  EXPECT_EQ(ldns_pkt_get_rcode(nodata.get()), LDNS_RCODE_NOERROR);
  EXPECT_EQ(ldns_pkt_ancount(nodata.get()), 0);
  EXPECT_EQ(ldns_pkt_nscount(nodata.get()), 1);
  // Reverse names in the service CIDR are ours.
  Pkt ptr = parse(udp_exchange(port(), make_query("20.0.43.10.in-addr.arpa.", LDNS_RR_TYPE_PTR)));
  EXPECT_EQ(answers(ptr.get(), LDNS_RR_TYPE_PTR),
            std::vector<std::string>{"web.default.svc.cluster.local."});
  Pkt ptr_nx = parse(udp_exchange(port(), make_query("9.9.43.10.in-addr.arpa.", LDNS_RR_TYPE_PTR)));
  EXPECT_EQ(ldns_pkt_get_rcode(ptr_nx.get()), LDNS_RCODE_NXDOMAIN);
}

TEST_F(DnsServerTest, TruncatesLargeUdpAnswers) {
  // A headless Service with 100 endpoints: far above 512 bytes.
  records_->upsert_service(service("default", "many", {{"clusterIP", "None"}}));
  Json eps = Json::array();
  for (int i = 0; i < 100; ++i) {
    eps.push_back({{"addresses", Json::array({"10.42.1." + std::to_string(i)})}});
  }
  records_->upsert_endpoint_slice({{"metadata",
                                    {{"namespace", "default"},
                                     {"name", "many-1"},
                                     {"labels", {{"kubernetes.io/service-name", "many"}}}}},
                                   {"addressType", "IPv4"},
                                   {"endpoints", eps}});
  start();
  Bytes q = make_query("many.default.svc.cluster.local.", LDNS_RR_TYPE_A);
  Bytes udp = udp_exchange(port(), q);
  EXPECT_LE(udp.size(), 512u);
  Pkt tc = parse(udp);
  ASSERT_TRUE(tc);
  EXPECT_TRUE(ldns_pkt_tc(tc.get()));
  // As many addresses as fit (about 16 bytes each): a client that never retries over TCP still
  // gets some.
  const size_t fitted = answers(tc.get(), LDNS_RR_TYPE_A).size();
  EXPECT_GE(fitted, 20u);
  EXPECT_LT(fitted, 100u);
  EXPECT_EQ(ldns_pkt_ancount(tc.get()), fitted);
  EXPECT_EQ(ldns_pkt_nscount(tc.get()), 0);
  // Over TCP it all comes.
  Pkt full = parse(tcp_exchange(port(), q));
  ASSERT_TRUE(full);
  EXPECT_FALSE(ldns_pkt_tc(full.get()));
  EXPECT_EQ(answers(full.get(), LDNS_RR_TYPE_A).size(), 100u);
  // So it does over UDP to a client that takes 4096 bytes (EDNS); the answer carries our OPT.
  Bytes big =
      udp_exchange(port(), make_query("many.default.svc.cluster.local.", LDNS_RR_TYPE_A, 4096));
  EXPECT_GT(big.size(), 512u);
  Pkt edns = parse(big);
  ASSERT_TRUE(edns);
  EXPECT_FALSE(ldns_pkt_tc(edns.get()));
  EXPECT_EQ(answers(edns.get(), LDNS_RR_TYPE_A).size(), 100u);
  EXPECT_EQ(ldns_pkt_edns_udp_size(edns.get()), 1232);
  // A client with EDNS 1000 bytes gets at most that.
  Bytes small =
      udp_exchange(port(), make_query("many.default.svc.cluster.local.", LDNS_RR_TYPE_A, 1000));
  EXPECT_LE(small.size(), 1000u);
  Pkt small_pkt = parse(small);
  EXPECT_TRUE(ldns_pkt_tc(small_pkt.get()));
  EXPECT_GT(answers(small_pkt.get(), LDNS_RR_TYPE_A).size(), fitted);
}

TEST_F(DnsServerTest, ForwardsOtherNamesUpstream) {
  FakeUpstream upstream("192.0.2.7");
  start({"127.0.0.1:" + std::to_string(upstream.port())});
  Pkt r = parse(udp_exchange(port(), make_query("example.org.", LDNS_RR_TYPE_A)));
  ASSERT_TRUE(r);
  EXPECT_EQ(ldns_pkt_id(r.get()), 4242);
  EXPECT_FALSE(ldns_pkt_aa(r.get()));
  EXPECT_EQ(answers(r.get(), LDNS_RR_TYPE_A), std::vector<std::string>{"192.0.2.7"});
  EXPECT_EQ(upstream.udp_queries(), 1);
  // TCP questions go upstream over TCP.
  Pkt t = parse(tcp_exchange(port(), make_query("example.org.", LDNS_RR_TYPE_A)));
  ASSERT_TRUE(t);
  EXPECT_EQ(answers(t.get(), LDNS_RR_TYPE_A), std::vector<std::string>{"192.0.2.7"});
  EXPECT_EQ(upstream.tcp_queries(), 1);
  // Reverse names outside the cluster's ranges too.
  parse(udp_exchange(port(), make_query("8.8.8.8.in-addr.arpa.", LDNS_RR_TYPE_PTR)));
  EXPECT_EQ(upstream.udp_queries(), 2);
  // Cluster names never do.
  parse(udp_exchange(port(), make_query("nope.default.svc.cluster.local.", LDNS_RR_TYPE_A)));
  EXPECT_EQ(upstream.udp_queries(), 2);
}

TEST_F(DnsServerTest, FollowsExternalNameUpstream) {
  FakeUpstream upstream("192.0.2.9");
  start({"127.0.0.1:" + std::to_string(upstream.port())});
  Pkt r = parse(udp_exchange(port(), make_query("ext.default.svc.cluster.local.", LDNS_RR_TYPE_A)));
  ASSERT_TRUE(r);
  EXPECT_EQ(answers(r.get(), LDNS_RR_TYPE_CNAME), std::vector<std::string>{"example.com."});
  EXPECT_EQ(answers(r.get(), LDNS_RR_TYPE_A), std::vector<std::string>{"192.0.2.9"});
  // Only address questions are followed.
  Pkt c =
      parse(udp_exchange(port(), make_query("ext.default.svc.cluster.local.", LDNS_RR_TYPE_CNAME)));
  EXPECT_EQ(answers(c.get(), LDNS_RR_TYPE_CNAME), std::vector<std::string>{"example.com."});
  EXPECT_EQ(upstream.udp_queries(), 1);
}

TEST_F(DnsServerTest, UpstreamTimeoutIsServfail) {
  FakeUpstream silent("192.0.2.1", /*silent=*/true);
  start({"127.0.0.1:" + std::to_string(silent.port())}, std::chrono::milliseconds(200));
  auto begin = std::chrono::steady_clock::now();
  Pkt r = parse(udp_exchange(port(), make_query("example.org.", LDNS_RR_TYPE_A)));
  auto took = std::chrono::steady_clock::now() - begin;
  ASSERT_TRUE(r);
  EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_SERVFAIL);
  EXPECT_EQ(ldns_pkt_id(r.get()), 4242);
  EXPECT_GE(took, std::chrono::milliseconds(190));
  EXPECT_LT(took, std::chrono::milliseconds(2000));
  Pkt t = parse(tcp_exchange(port(), make_query("example.org.", LDNS_RR_TYPE_A)));
  ASSERT_TRUE(t);
  EXPECT_EQ(ldns_pkt_get_rcode(t.get()), LDNS_RCODE_SERVFAIL);
}

TEST_F(DnsServerTest, NextUpstreamAfterAFailure) {
  FakeUpstream silent("192.0.2.1", /*silent=*/true);
  FakeUpstream good("192.0.2.2");
  start({"127.0.0.1:" + std::to_string(silent.port()), "127.0.0.1:" + std::to_string(good.port())},
        std::chrono::milliseconds(200));
  for (int i = 0; i < 2; ++i) {  // whichever the rotation starts with
    Pkt r = parse(udp_exchange(port(), make_query("example.org.", LDNS_RR_TYPE_A, 0, 100 + i)));
    ASSERT_TRUE(r);
    EXPECT_EQ(answers(r.get(), LDNS_RR_TYPE_A), std::vector<std::string>{"192.0.2.2"});
  }
}

TEST_F(DnsServerTest, NoUpstreamIsServfail) {
  start();
  Pkt r = parse(udp_exchange(port(), make_query("example.org.", LDNS_RR_TYPE_A)));
  ASSERT_TRUE(r);
  EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_SERVFAIL);
}

TEST_F(DnsServerTest, NeverForwardsToItself) {
  int p = skiff::testing::free_tcp_port();
  DnsServerOptions o;
  o.address = "127.0.0.1";
  o.port = p;
  o.upstreams = {"127.0.0.1:" + std::to_string(p), "192.0.2.53"};
  DnsServer server(*records_, o);
  ASSERT_TRUE(server.start().is_ok());
  EXPECT_EQ(server.upstreams(), std::vector<std::string>{"192.0.2.53:53"});
}

TEST_F(DnsServerTest, RejectsBadOptions) {
  DnsServerOptions o;
  o.address = "not-an-ip";
  o.port = 0;
  EXPECT_EQ(DnsServer(*records_, o).start().code(), StatusCode::kInvalidArgument);
  o.address = "127.0.0.1";
  o.upstreams = {"1.2.3.4:99999"};
  EXPECT_EQ(DnsServer(*records_, o).start().code(), StatusCode::kInvalidArgument);
}

TEST_F(DnsServerTest, MalformedPackets) {
  start();
  // Too short for a header: dropped.
  EXPECT_TRUE(udp_exchange(port(), Bytes{1, 2, 3, 4, 5}, 300).empty());
  // A header promising a question that is not there: FORMERR.
  Bytes header = {0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0};
  Bytes r = udp_exchange(port(), header);
  ASSERT_GE(r.size(), 12u);
  EXPECT_EQ(r[0], 0x12);
  EXPECT_EQ(r[1], 0x34);
  EXPECT_TRUE(r[2] & 0x80);
  EXPECT_EQ(r[3] & 0x0f, LDNS_RCODE_FORMERR);
  // Garbage after the header.
  Bytes garbage = header;
  for (int i = 0; i < 40; ++i) garbage.push_back(0xff);
  r = udp_exchange(port(), garbage);
  ASSERT_GE(r.size(), 12u);
  EXPECT_EQ(r[3] & 0x0f, LDNS_RCODE_FORMERR);
  // Responses are not answered (no reflection loops).
  Bytes response = make_query("web.default.svc.cluster.local.", LDNS_RR_TYPE_A);
  response[2] |= 0x80;
  EXPECT_TRUE(udp_exchange(port(), response, 300).empty());
  // Two questions: FORMERR.
  {
    Pkt p(ldns_pkt_query_new(ldns_dname_new_frm_str("web.default.svc.cluster.local."),
                             LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, LDNS_RD));
    ldns_rr* second = ldns_rr_new_frm_type(LDNS_RR_TYPE_A);
    ldns_rr_set_owner(second, ldns_dname_new_frm_str("x.default.svc.cluster.local."));
    ldns_rr_set_question(second, true);
    ldns_pkt_push_rr(p.get(), LDNS_SECTION_QUESTION, second);
    Pkt a = parse(udp_exchange(port(), wire_of(p.get())));
    ASSERT_TRUE(a);
    EXPECT_EQ(ldns_pkt_get_rcode(a.get()), LDNS_RCODE_FORMERR);
  }
  // UPDATE: NOTIMP.
  Bytes update = make_query("web.default.svc.cluster.local.", LDNS_RR_TYPE_A);
  update[2] = static_cast<uint8_t>((update[2] & 0x87) | (LDNS_PACKET_UPDATE << 3));
  r = udp_exchange(port(), update);
  ASSERT_GE(r.size(), 12u);
  EXPECT_EQ(r[3] & 0x0f, LDNS_RCODE_NOTIMPL);
  // Class CHAOS and zone transfers: REFUSED.
  {
    Pkt p(ldns_pkt_query_new(ldns_dname_new_frm_str("version.bind."), LDNS_RR_TYPE_TXT,
                             LDNS_RR_CLASS_CH, LDNS_RD));
    Pkt a = parse(udp_exchange(port(), wire_of(p.get())));
    ASSERT_TRUE(a);
    EXPECT_EQ(ldns_pkt_get_rcode(a.get()), LDNS_RCODE_REFUSED);
  }
  Pkt axfr = parse(tcp_exchange(port(), make_query("cluster.local.", LDNS_RR_TYPE_AXFR)));
  ASSERT_TRUE(axfr);
  EXPECT_EQ(ldns_pkt_get_rcode(axfr.get()), LDNS_RCODE_REFUSED);
  // EDNS version 1: BADVERS.
  {
    Pkt p(ldns_pkt_query_new(ldns_dname_new_frm_str("web.default.svc.cluster.local."),
                             LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, LDNS_RD));
    ldns_pkt_set_edns_udp_size(p.get(), 1232);
    ldns_pkt_set_edns_version(p.get(), 1);
    Pkt a = parse(udp_exchange(port(), wire_of(p.get())));
    ASSERT_TRUE(a);
    EXPECT_EQ(ldns_pkt_edns_extended_rcode(a.get()), 1);
  }
  // A zero-length TCP message closes the connection; the server still answers afterwards.
  EXPECT_TRUE(tcp_exchange(port(), std::vector<Bytes>{Bytes{}}).empty());
  Pkt ok =
      parse(udp_exchange(port(), make_query("web.default.svc.cluster.local.", LDNS_RR_TYPE_A)));
  ASSERT_TRUE(ok);
  EXPECT_EQ(answers(ok.get(), LDNS_RR_TYPE_A), std::vector<std::string>{"10.43.0.20"});
}

TEST_F(DnsServerTest, StopIsIdempotentAndReleasesThePort) {
  start();
  int p = port();
  server_->stop();
  server_->stop();
  EXPECT_TRUE(
      udp_exchange(p, make_query("web.default.svc.cluster.local.", LDNS_RR_TYPE_A), 300).empty());
}

TEST(ResolvConfTest, ReadsNameservers) {
  skiff::testing::TempDir dir;
  std::string path = dir.path() + "/resolv.conf";
  std::ofstream(path) << "# comment\nsearch example.com\nnameserver 192.0.2.53\n"
                         "nameserver  fd00::53 \noptions ndots:5\n";
  auto r = read_resolv_conf(path);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(*r, (std::vector<std::string>{"192.0.2.53", "fd00::53"}));
  EXPECT_EQ(read_resolv_conf(dir.path() + "/missing").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace skiff::dns
