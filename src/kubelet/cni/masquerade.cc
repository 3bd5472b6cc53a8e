#include "kubelet/cni/masquerade.h"

#include <nftables/libnftables.h>

#include "kubelet/cni/cni_config.h"

namespace skiff::kubelet::cni {
namespace {

Status run_nft(const std::string& script) {
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (ctx == nullptr) return error(StatusCode::kInternal, "nftables: cannot create a context");
  nft_ctx_buffer_output(ctx);
  nft_ctx_buffer_error(ctx);
  int rc = nft_run_cmd_from_buffer(ctx, script.c_str());
  const char* err = nft_ctx_get_error_buffer(ctx);
  std::string message = err != nullptr ? err : "";
  nft_ctx_free(ctx);
  if (rc != 0) return error(StatusCode::kInternal, "nftables: " + message);
  return Status::ok();
}

}  // namespace

Result<std::string> render_masquerade_rules(const std::vector<std::string>& pod_cidrs) {
  if (pod_cidrs.empty()) return error(StatusCode::kInvalidArgument, "no pod CIDR to masquerade");
  std::string rules;
  for (const std::string& cidr : pod_cidrs) {
    SKIFF_ASSIGN_OR_RETURN(int family, cidr_family(cidr));
    std::string ip = family == 4 ? "ip" : "ip6";
    std::string multicast = family == 4 ? "224.0.0.0/4" : "ff00::/8";
    rules += "    " + ip + " saddr " + cidr + " " + ip + " daddr != " + cidr + " " + ip +
             " daddr != " + multicast + " masquerade\n";
  }
  // "add" then "delete" makes the delete succeed whether or not the table exists; the whole
  // script is one transaction.
  std::string table = std::string("inet ") + kMasqueradeTable;
  return "add table " + table + "\ndelete table " + table + "\ntable " + table +
         " {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy "
         "accept;\n" +
         rules + "  }\n}\n";
}

Status apply_masquerade_rules(const std::vector<std::string>& pod_cidrs) {
  SKIFF_ASSIGN_OR_RETURN(std::string script, render_masquerade_rules(pod_cidrs));
  return run_nft(script);
}

Status remove_masquerade_rules() {
  std::string table = std::string("inet ") + kMasqueradeTable;
  return run_nft("add table " + table + "\ndelete table " + table + "\n");
}

}  // namespace skiff::kubelet::cni
