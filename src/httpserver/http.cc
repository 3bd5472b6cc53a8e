#include "httpserver/http.h"

#include <strings.h>

#include <array>
#include <cstdio>

namespace skiff::http {

std::string_view Request::header(std::string_view name) const {
  for (const HttpHeader& h : headers) {
    if (h.name.size() == name.size() && strncasecmp(h.name.data(), name.data(), name.size()) == 0) {
      return h.value;
    }
  }
  return {};
}

std::string_view Request::param(std::string_view name) const {
  for (const auto& [k, v] : query) {
    if (k == name) return v;
  }
  return {};
}

bool Request::has_param(std::string_view name) const {
  for (const auto& [k, v] : query) {
    if (k == name) return true;
  }
  return false;
}

std::vector<std::string> Request::params(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : query) {
    if (k == name) out.push_back(v);
  }
  return out;
}

bool Request::flag(std::string_view name) const {
  for (const auto& [k, v] : query) {
    if (k != name) continue;
    return v == "true" || v == "True" || v == "TRUE" || v == "1" || v == "t" || v == "T";
  }
  return false;
}

namespace {

bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// A failure as a Kubernetes Status object.
std::string status_json(int code, std::string_view reason, std::string_view message) {
  std::string escaped;
  for (char c : message) {
    if (c == '"' || c == '\\') {
      escaped.push_back('\\');
      escaped.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\u%04x", static_cast<unsigned>(c));
      escaped += hex;
    } else {
      escaped.push_back(c);
    }
  }
  return "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
         "\"message\":\"" +
         escaped + "\",\"reason\":\"" + std::string(reason) +
         "\",\"code\":" + std::to_string(code) + "}";
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

void Responder::upgrade(UpgradeTarget) {
  respond(Response{500,
                   "application/json",
                   {},
                   status_json(500, "InternalError", "this server cannot relay upgrades")});
}

std::vector<HttpHeader> upgrade_headers(const Request& request) {
  static constexpr std::array<std::string_view, 7> kRelayed = {
      "Connection",
      "Upgrade",
      "Sec-WebSocket-Key",
      "Sec-WebSocket-Version",
      "Sec-WebSocket-Protocol",
      "Sec-WebSocket-Extensions",
      "X-Stream-Protocol-Version",
  };
  std::vector<HttpHeader> out;
  for (const HttpHeader& h : request.headers) {
    for (std::string_view name : kRelayed) {
      if (same_name(h.name, name)) {
        out.push_back(h);
        break;
      }
    }
  }
  return out;
}

std::string percent_decode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%' && i + 2 < in.size()) {
      int hi = hex_value(in[i + 1]);
      int lo = hex_value(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && c == '+' ? ' ' : c);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> parse_query(std::string_view raw) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!raw.empty()) {
    size_t amp = raw.find('&');
    std::string_view part = raw.substr(0, amp);
    raw = amp == std::string_view::npos ? std::string_view() : raw.substr(amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string key = percent_decode(part.substr(0, eq), true);
    std::string value =
        eq == std::string_view::npos ? std::string() : percent_decode(part.substr(eq + 1), true);
    out.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

}  // namespace skiff::http
