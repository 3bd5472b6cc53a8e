#include "storage/store.h"

namespace skiff::storage {

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

KeyRange KeyRange::prefix(std::string prefix) {
  std::string end = prefix_end(prefix);
  return {std::move(prefix), std::move(end)};
}

bool KeyRange::contains(std::string_view k) const {
  if (range_end.empty()) return k == key;
  if (k < std::string_view(key)) return false;
  if (range_end.size() == 1 && range_end[0] == '\0') return true;
  return k < std::string_view(range_end);
}

Result<KeyValuePtr> Store::get(const std::string& key) {
  auto result = range(KeyRange::single(key));
  if (!result.is_ok()) return result.status();
  if (result->kvs.empty()) return KeyValuePtr();
  return std::move(result->kvs.front());
}

Result<int64_t> Store::put(std::string key, std::string value, int64_t lease) {
  Txn t;
  t.success.push_back(Op::put(std::move(key), std::move(value), lease));
  t.compare.clear();
  auto result = txn(t);
  if (!result.is_ok()) return result.status();
  return result->revision;
}

Result<int64_t> Store::del(KeyRange range) {
  Txn t;
  t.success.push_back(Op::del(std::move(range)));
  auto result = txn(t);
  if (!result.is_ok()) return result.status();
  return result->results.front().count;
}

}  // namespace skiff::storage
