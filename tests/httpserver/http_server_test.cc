#include "httpserver/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <string>
#include <thread>

#include "support/raw_http.h"

namespace skiff::http {
namespace {

// Sends one raw HTTP/1.1 request to 127.0.0.1:port and returns the whole reply (the server
// closes the connection because of "Connection: close").
std::string raw_request(int port, const std::string& request) {
  int fd = skiff::testing::dial_loopback(port);
  if (fd < 0) return "";
  (void)!write(fd, request.data(), request.size());
  std::string reply;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) reply.append(buf, static_cast<size_t>(n));
  close(fd);
  return reply;
}

std::string get(const std::string& path) {
  return "GET " + path + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
}

TEST(HttpServerTest, OverloadAnswers429WithRetryAfterButStreamsAreExempt) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> slow_started;
  HttpServerOptions options;
  options.bind_address = "127.0.0.1";
  options.port = 0;
  options.max_in_flight = 1;
  options.long_running = [](const Request& r) { return r.flag("watch"); };
  HttpServer server(
      options,
      [&](Request& req, Responder& r) {
        if (req.path == "/slow") {
          slow_started.set_value();
          released.wait();
        }
        r.respond(Response{200, "text/plain", {}, "done " + req.path});
      },
      nullptr);
  ASSERT_TRUE(server.start().is_ok());
  std::string slow_reply;
  std::thread slow([&] { slow_reply = raw_request(server.port(), get("/slow")); });
  slow_started.get_future().wait();

  std::string busy = raw_request(server.port(), get("/other"));
  EXPECT_NE(busy.find("HTTP/1.1 429"), std::string::npos) << busy;
  EXPECT_NE(busy.find("Retry-After: 1"), std::string::npos) << busy;
  EXPECT_NE(busy.find("\"reason\":\"TooManyRequests\""), std::string::npos) << busy;
  // Long-running requests are not counted.
  std::string watch = raw_request(server.port(), get("/w?watch=true"));
  EXPECT_NE(watch.find("HTTP/1.1 200"), std::string::npos) << watch;

  release.set_value();
  slow.join();
  EXPECT_NE(slow_reply.find("done /slow"), std::string::npos) << slow_reply;
  std::string after = raw_request(server.port(), get("/other"));
  EXPECT_NE(after.find("HTTP/1.1 200"), std::string::npos) << after;
  server.stop();
}

TEST(HttpServerTest, BodyOverTheLimitIs413) {
  HttpServerOptions options;
  options.bind_address = "127.0.0.1";
  options.port = 0;
  options.max_body_bytes = 1024;
  HttpServer server(
      options,
      [](Request&, Responder& r) {
        r.respond(Response{200, "text/plain", {}, "ok"});
      },
      nullptr);
  ASSERT_TRUE(server.start().is_ok());
  std::string body(4096, 'x');
  std::string reply =
      raw_request(server.port(), "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: " +
                                     std::to_string(body.size()) + "\r\n\r\n" + body);
  EXPECT_NE(reply.find("HTTP/1.1 413"), std::string::npos) << reply;
  EXPECT_NE(reply.find("RequestEntityTooLarge"), std::string::npos) << reply;
  server.stop();
}

TEST(HttpServerTest, AStoppedServerRefusesConnections) {
  HttpServerOptions options;
  options.bind_address = "127.0.0.1";
  options.port = 0;
  HttpServer server(
      options,
      [](Request&, Responder& r) {
        r.respond(Response{200, "text/plain", {}, "ok"});
      },
      nullptr);
  ASSERT_TRUE(server.start().is_ok());
  int port = server.port();
  EXPECT_NE(raw_request(port, get("/")).find("HTTP/1.1 200"), std::string::npos);
  server.stop();
  // Refused at once, not accepted into a backlog that nobody serves any more.
  int fd = skiff::testing::dial_loopback(port);
  EXPECT_EQ(fd, -1);
  if (fd >= 0) close(fd);
}

}  // namespace
}  // namespace skiff::http
