#pragma once

// Counts over the whole cluster that survive from one scheduling cycle to the next.
//
// Topology spreading and inter-pod affinity need, every cycle, counts of matching pods per
// topology domain over all nodes: upstream recomputes them from every pod on every node each
// cycle. A TopologyCountsMemo keeps the counts together with each node's share of them and, on
// the next use, recomputes only the nodes the snapshot reports changed since (after a placement,
// usually one), or everything when the node set changed (a new epoch). Plugins keep one memo per
// distinct question (same selector, namespace, topology key, node eligibility rules) in a
// MemoCache, an LRU keyed by a fingerprint of that question.
//
// Thread-safety: a memo is not synchronised; plugins use them from PreFilter/PreScore, which run
// on one scheduling thread, and read them from Filter/Score of the same cycle. MemoCache::get is
// safe from any thread.

#include <cstdint>
#include <deque>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "scheduler/framework.h"
#include "scheduler/labels.h"

namespace skiff::scheduler::plugins {

class TopologyCountsMemo {
 public:
  // Emits a node's share for (key, value). A zero count still makes the domain present.
  class Emitter {
   public:
    void operator()(const LabelKey& key, const HString& value, int64_t count);

   private:
    friend class TopologyCountsMemo;
    Emitter(TopologyCountsMemo& memo, std::vector<std::pair<uint32_t, int64_t>>& share)
        : memo_(memo), share_(share) {}
    TopologyCountsMemo& memo_;
    std::vector<std::pair<uint32_t, int64_t>>& share_;
  };

  // Brings the counts up to date with `nodes`. `contribute(const NodeInfo&, Emitter&)` computes a
  // node's share and must depend only on that NodeInfo (and on what the memo's key fixes).
  // `rebuild_scope`, when given, lists the only nodes that can contribute anything right now
  // (for example the nodes hosting pods with anti-affinity): a rebuild visits only them.
  template <typename Contribute>
  void sync(const NodeLister& nodes, Contribute&& contribute,
            const std::vector<const NodeInfo*>* rebuild_scope = nullptr);

  int64_t count(const LabelKey& key, const HString& value) const;
  // Some node contributes to (key, value), possibly zero.
  bool present(const LabelKey& key, const HString& value) const;
  // Domains of `key`: values with a contributing node.
  size_t domains(const LabelKey& key) const;
  // The smallest count among the domains of `key`; INT32_MAX when there is none.
  int64_t min_count(const LabelKey& key) const;
  // Pairs whose count is not zero.
  size_t nonzero_pairs() const { return nonzero_; }
  // f(key, value, count) for every pair whose count is not zero.
  template <typename F>
  void for_each_nonzero(F&& f) const {
    for (const Pair& p : pairs_) {
      if (p.count != 0) f(p.key, p.value, p.count);
    }
  }
  // Distinct keys with a non-zero pair.
  std::vector<LabelKey> nonzero_keys() const;
  // f(value, count) for every domain of `key`.
  template <typename F>
  void for_each_domain(const LabelKey& key, F&& f) const {
    const KeyInfo* k = find_key(key);
    if (k == nullptr) return;
    for (uint32_t id : k->pairs) {
      const Pair& p = pairs_[id];
      if (p.shares > 0) f(p.value, p.count);
    }
  }

  // How often sync() rebuilt everything / updated single nodes (for tests).
  uint64_t rebuilds() const { return rebuilds_; }
  uint64_t node_updates() const { return node_updates_; }

 private:
  struct Pair {
    LabelKey key;
    HString value;
    int64_t count = 0;
    int64_t shares = 0;  // node shares naming this pair
    uint32_t key_index = 0;
  };
  struct KeyInfo {
    LabelKey key;
    std::vector<uint32_t> pairs;
    size_t domains = 0;
  };
  struct View {
    LabelKey key;
    const HString* value;
  };
  struct ViewHash {
    using is_transparent = void;
    size_t operator()(const View& v) const {
      return static_cast<size_t>(v.key.hash() * 0x9e3779b97f4a7c15ull ^ v.value->hash());
    }
  };
  struct ViewEq {
    using is_transparent = void;
    bool operator()(const View& a, const View& b) const {
      return a.key == b.key && *a.value == *b.value;
    }
  };
  using Share = std::vector<std::pair<uint32_t, int64_t>>;

  uint32_t pair_id(const LabelKey& key, const HString& value);
  void apply(const Share& share, int sign);
  void reset(size_t nodes);
  const Pair* find(const LabelKey& key, const HString& value) const;
  const KeyInfo* find_key(const LabelKey& key) const;

  // index_'s keys point into pairs_, whose elements never move (a deque only appended to).
  std::deque<Pair> pairs_;
  std::unordered_map<View, uint32_t, ViewHash, ViewEq> index_;
  std::vector<KeyInfo> keys_;
  std::vector<Share> shares_;  // by node index
  size_t nonzero_ = 0;
  uint64_t epoch_ = 0;
  uint64_t generation_ = 0;
  uint64_t rebuilds_ = 0;
  uint64_t node_updates_ = 0;
  std::vector<const NodeInfo*> changed_;
};

template <typename Contribute>
void TopologyCountsMemo::sync(const NodeLister& nodes, Contribute&& contribute,
                              const std::vector<const NodeInfo*>* rebuild_scope) {
  const std::vector<const NodeInfo*>& all = nodes.list();
  if (nodes.epoch() != epoch_ || !nodes.changed_since(generation_, changed_)) {
    reset(all.size());
    ++rebuilds_;
    const std::vector<const NodeInfo*>& scope = rebuild_scope ? *rebuild_scope : all;
    for (size_t i = 0; i < scope.size(); ++i) {
      Share& share = shares_[rebuild_scope ? nodes.index_of(*scope[i]) : i];
      Emitter emit(*this, share);
      contribute(*scope[i], emit);
      apply(share, +1);
    }
  } else {
    for (const NodeInfo* node : changed_) {
      Share& share = shares_[nodes.index_of(*node)];
      apply(share, -1);
      share.clear();
      Emitter emit(*this, share);
      contribute(*node, emit);
      apply(share, +1);
      ++node_updates_;
    }
  }
  epoch_ = nodes.epoch();
  generation_ = nodes.generation();
}

// A memo's counts as a changed clone of a cycle's state sees them (PreFilterExtensions): the
// memo's, plus the changes made for pods added to or removed from nodes of the clone. The memo
// itself is shared and not changed; copying an overlay is cheap while the changes are few.
class CountsOverlay {
 public:
  CountsOverlay() = default;
  explicit CountsOverlay(std::shared_ptr<TopologyCountsMemo> memo) : memo_(std::move(memo)) {}

  explicit operator bool() const { return memo_ != nullptr; }
  TopologyCountsMemo& memo() const { return *memo_; }

  int64_t count(const LabelKey& key, const HString& value) const;
  size_t nonzero_pairs() const;
  // As TopologyCountsMemo::min_count (changes never add or remove domains).
  int64_t min_count(const LabelKey& key) const;
  // Adds `change` to the count of (key, value).
  void change(const LabelKey& key, const HString& value, int64_t change);

 private:
  struct Delta {
    LabelKey key;
    HString value;
    int64_t change = 0;
  };
  const Delta* find(const LabelKey& key, const HString& value) const;

  std::shared_ptr<TopologyCountsMemo> memo_;
  std::vector<Delta> deltas_;
  int64_t nonzero_adjust_ = 0;  // pairs made non-zero minus pairs made zero by the changes
};

// An LRU of memos keyed by a fingerprint of the question they answer.
template <typename Memo>
class MemoCache {
 public:
  explicit MemoCache(size_t capacity) : capacity_(capacity) {}

  std::shared_ptr<Memo> get(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
    lru_.emplace_front(key, std::make_shared<Memo>());
    index_.emplace(key, lru_.begin());
    if (lru_.size() > capacity_) {
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
    return lru_.front().second;
  }

 private:
  const size_t capacity_;
  std::mutex mu_;
  std::list<std::pair<std::string, std::shared_ptr<Memo>>> lru_;  // guarded by mu_
  std::unordered_map<std::string,
                     typename std::list<std::pair<std::string, std::shared_ptr<Memo>>>::iterator>
      index_;  // guarded by mu_
};

}  // namespace skiff::scheduler::plugins
