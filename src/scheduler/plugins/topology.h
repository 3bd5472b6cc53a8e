#pragma once

// A topology value as a hash-set key that points into labels owned by the cycle's snapshot (valid
// for one scheduling cycle only).
//
// Thread-safety: plain values.

#include <cstddef>

#include "scheduler/labels.h"

namespace skiff::scheduler::plugins {

struct ValueRef {
  const HString* value;
  bool operator==(const ValueRef& o) const { return *value == *o.value; }
};

struct ValueRefHash {
  size_t operator()(const ValueRef& v) const { return static_cast<size_t>(v.value->hash()); }
};

}  // namespace skiff::scheduler::plugins
