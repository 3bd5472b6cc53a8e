#pragma once

// PrioritySort (QueueSort): pods with a higher spec.priority are tried first; among equals, the
// one that entered the queue first.
//
// Thread-safety: stateless; safe to call concurrently.

#include <string_view>

#include "scheduler/framework.h"

namespace skiff::scheduler::plugins {

class PrioritySort final : public QueueSortPlugin {
 public:
  static constexpr std::string_view kName = "PrioritySort";

  std::string_view name() const override { return kName; }
  bool less(const QueuedPodInfo& a, const QueuedPodInfo& b) const override {
    return priority_sort_less(a, b);
  }
};

}  // namespace skiff::scheduler::plugins
