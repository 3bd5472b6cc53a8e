#include "scheduler/plugins/counts_memo.h"

#include <algorithm>

namespace skiff::scheduler::plugins {

void TopologyCountsMemo::Emitter::operator()(const LabelKey& key, const HString& value,
                                             int64_t count) {
  share_.emplace_back(memo_.pair_id(key, value), count);
}

uint32_t TopologyCountsMemo::pair_id(const LabelKey& key, const HString& value) {
  auto it = index_.find(View{key, &value});
  if (it != index_.end()) return it->second;
  uint32_t key_index = 0;
  for (; key_index < keys_.size(); ++key_index) {
    if (keys_[key_index].key == key) break;
  }
  if (key_index == keys_.size()) keys_.push_back({key, {}, 0});
  const uint32_t id = static_cast<uint32_t>(pairs_.size());
  pairs_.push_back({key, value, 0, 0, key_index});
  keys_[key_index].pairs.push_back(id);
  const Pair& p = pairs_.back();
  index_.emplace(View{p.key, &p.value}, id);
  return id;
}

void TopologyCountsMemo::apply(const Share& share, int sign) {
  for (const auto& [id, count] : share) {
    Pair& p = pairs_[id];
    const bool was_nonzero = p.count != 0;
    const bool was_present = p.shares > 0;
    p.count += sign * count;
    p.shares += sign;
    if (was_nonzero != (p.count != 0)) nonzero_ += p.count != 0 ? 1 : -1;
    if (was_present != (p.shares > 0)) {
      KeyInfo& k = keys_[p.key_index];
      if (p.shares > 0) {
        ++k.domains;
      } else {
        --k.domains;
      }
    }
  }
}

void TopologyCountsMemo::reset(size_t nodes) {
  pairs_.clear();
  index_.clear();
  keys_.clear();
  shares_.assign(nodes, Share());
  nonzero_ = 0;
}

const TopologyCountsMemo::Pair* TopologyCountsMemo::find(const LabelKey& key,
                                                         const HString& value) const {
  auto it = index_.find(View{key, &value});
  return it == index_.end() ? nullptr : &pairs_[it->second];
}

const TopologyCountsMemo::KeyInfo* TopologyCountsMemo::find_key(const LabelKey& key) const {
  for (const KeyInfo& k : keys_) {
    if (k.key == key) return &k;
  }
  return nullptr;
}

int64_t TopologyCountsMemo::count(const LabelKey& key, const HString& value) const {
  const Pair* p = find(key, value);
  return p == nullptr ? 0 : p->count;
}

bool TopologyCountsMemo::present(const LabelKey& key, const HString& value) const {
  const Pair* p = find(key, value);
  return p != nullptr && p->shares > 0;
}

size_t TopologyCountsMemo::domains(const LabelKey& key) const {
  const KeyInfo* k = find_key(key);
  return k == nullptr ? 0 : k->domains;
}

int64_t TopologyCountsMemo::min_count(const LabelKey& key) const {
  int64_t min = std::numeric_limits<int32_t>::max();
  const KeyInfo* k = find_key(key);
  if (k == nullptr) return min;
  for (uint32_t id : k->pairs) {
    const Pair& p = pairs_[id];
    if (p.shares > 0) min = std::min(min, p.count);
  }
  return min;
}

std::vector<LabelKey> TopologyCountsMemo::nonzero_keys() const {
  std::vector<LabelKey> out;
  for (const KeyInfo& k : keys_) {
    for (uint32_t id : k.pairs) {
      if (pairs_[id].count != 0) {
        out.push_back(k.key);
        break;
      }
    }
  }
  return out;
}

const CountsOverlay::Delta* CountsOverlay::find(const LabelKey& key, const HString& value) const {
  for (const Delta& d : deltas_) {
    if (d.key == key && d.value == value) return &d;
  }
  return nullptr;
}

int64_t CountsOverlay::count(const LabelKey& key, const HString& value) const {
  const Delta* d = find(key, value);
  return memo_->count(key, value) + (d == nullptr ? 0 : d->change);
}

size_t CountsOverlay::nonzero_pairs() const {
  return static_cast<size_t>(static_cast<int64_t>(memo_->nonzero_pairs()) + nonzero_adjust_);
}

int64_t CountsOverlay::min_count(const LabelKey& key) const {
  if (deltas_.empty()) return memo_->min_count(key);
  int64_t min = std::numeric_limits<int32_t>::max();
  memo_->for_each_domain(key, [&](const HString& value, int64_t count) {
    const Delta* d = find(key, value);
    min = std::min(min, count + (d == nullptr ? 0 : d->change));
  });
  return min;
}

void CountsOverlay::change(const LabelKey& key, const HString& value, int64_t change) {
  const int64_t before = count(key, value);
  auto it = std::find_if(deltas_.begin(), deltas_.end(),
                         [&](const Delta& d) { return d.key == key && d.value == value; });
  if (it != deltas_.end()) {
    it->change += change;
  } else {
    deltas_.push_back({key, value, change});
  }
  const int64_t after = before + change;
  nonzero_adjust_ += int64_t{after != 0} - int64_t{before != 0};
}

}  // namespace skiff::scheduler::plugins
