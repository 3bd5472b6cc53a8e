#include <nftables/libnftables.h>

#include <mutex>

#include "proxy/backend.h"

namespace skiff::proxy {
namespace {

// libnftables keeps a cache of the ruleset per context; one context, used under a mutex (the
// library is not thread-safe), refreshes only what each script needs.
class LibNftablesRunner : public NftRunner {
 public:
  LibNftablesRunner() : ctx_(nft_ctx_new(NFT_CTX_DEFAULT)) {
    nft_ctx_buffer_output(ctx_);
    nft_ctx_buffer_error(ctx_);
  }
  ~LibNftablesRunner() override { nft_ctx_free(ctx_); }

  Status run(const std::string& script) override {
    std::lock_guard lock(mu_);
    int rc = nft_run_cmd_from_buffer(ctx_, script.c_str());
    const char* err = nft_ctx_get_error_buffer(ctx_);
    std::string message = err ? err : "";
    // Each get_*_buffer call hands over what was collected; reading output resets it as well.
    (void)nft_ctx_get_output_buffer(ctx_);
    if (rc != 0) {
      if (message.size() > 4000) message = message.substr(0, 4000) + "...";
      return error(StatusCode::kInternal, "nftables: " + message);
    }
    return Status::ok();
  }

 private:
  std::mutex mu_;
  nft_ctx* ctx_;
};

}  // namespace

std::unique_ptr<NftRunner> make_libnftables_runner() {
  return std::make_unique<LibNftablesRunner>();
}

}  // namespace skiff::proxy
