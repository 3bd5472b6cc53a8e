#include "storage/limits.h"

#include <algorithm>
#include <string>

namespace skiff::storage {
namespace {

Status validate_ops(const std::vector<Op>& ops, const StoreLimits& limits) {
  for (const Op& op : ops) {
    if (op.range.key.empty()) {
      return Status(StatusCode::kInvalidArgument, "empty key in transaction");
    }
    switch (op.type) {
      case Op::Type::kPut:
        if (!op.range.range_end.empty()) {
          return Status(StatusCode::kInvalidArgument, "put takes a single key, not a range");
        }
        if (op.value.size() > limits.max_value_bytes) {
          return Status(StatusCode::kTooLarge,
                        "value of " + std::to_string(op.value.size()) + " bytes for key \"" +
                            op.range.key + "\" exceeds the limit of " +
                            std::to_string(limits.max_value_bytes) + " bytes");
        }
        if (op.lease < 0) return Status(StatusCode::kInvalidArgument, "negative lease id");
        break;
      case Op::Type::kRange:
        if (op.range_options.revision != 0) {
          return Status(StatusCode::kInvalidArgument,
                        "a range inside a transaction reads at the transaction's revision");
        }
        if (op.range_options.limit < 0) {
          return Status(StatusCode::kInvalidArgument, "negative range limit");
        }
        break;
      case Op::Type::kDelete:
        break;
    }
  }
  // As etcd: a branch may write a key once, so every write has its own place in the revision.
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].type != Op::Type::kPut) continue;
    for (size_t j = 0; j < ops.size(); ++j) {
      if (i == j || ops[j].type == Op::Type::kRange) continue;
      bool clash = ops[j].type == Op::Type::kPut ? ops[j].range.key == ops[i].range.key
                                                 : ops[j].range.contains(ops[i].range.key);
      if (clash) {
        return Status(StatusCode::kInvalidArgument,
                      "key \"" + ops[i].range.key + "\" is written twice in one transaction");
      }
    }
  }
  return Status::ok();
}

}  // namespace

Status validate_txn(const Txn& txn, const StoreLimits& limits) {
  size_t ops = std::max({txn.compare.size(), txn.success.size(), txn.failure.size()});
  if (txn.success.size() > limits.max_txn_ops || txn.failure.size() > limits.max_txn_ops ||
      txn.compare.size() > limits.max_txn_ops) {
    return Status(StatusCode::kTooLarge, "transaction has " + std::to_string(ops) +
                                             " operations; the limit is " +
                                             std::to_string(limits.max_txn_ops));
  }
  for (const Compare& c : txn.compare) {
    if (c.key.empty()) return Status(StatusCode::kInvalidArgument, "empty key in compare");
  }
  SKIFF_RETURN_IF_ERROR(validate_ops(txn.success, limits));
  return validate_ops(txn.failure, limits);
}

Status validate_range(const KeyRange& range, const RangeOptions& options) {
  if (range.key.empty()) return Status(StatusCode::kInvalidArgument, "empty key in range");
  if (options.revision < 0) return Status(StatusCode::kInvalidArgument, "negative revision");
  if (options.limit < 0) return Status(StatusCode::kInvalidArgument, "negative range limit");
  return Status::ok();
}

}  // namespace skiff::storage
