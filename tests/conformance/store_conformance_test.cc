// The store conformance suite: every Store backend must pass these tests, which pin down the
// etcd v3 semantics documented in storage/store.h. Instances: memory, embedded (a temp data dir
// per store), etcd1 (one real etcd member) and etcd3 (three members). The etcd instances share
// one cluster between their tests; every test works under its own key prefix and revokes the
// leases it granted, so no test sees another's keys or revisions.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "conformance/store_harness.h"
#include "conformance/test_util.h"
#include "storage/store.h"
#include "support/watch_collector.h"

namespace skiff::storage {
namespace {

using namespace std::chrono_literals;
using conformance::must;
using conformance::OpenOptions;
using Clock = std::chrono::steady_clock;
using skiff::testing::WatchCollector;

constexpr auto kEventTimeout = 10s;

class StoreTest : public ::testing::TestWithParam<std::string> {
 public:
  static void TearDownTestSuite() { conformance::shut_down_backends(); }

 protected:
  void SetUp() override {
    backend_ = &conformance::backend_named(GetParam());
    if (std::string reason = backend_->skip_reason(); !reason.empty()) GTEST_SKIP() << reason;
    Status prepared = backend_->prepare();
    ASSERT_TRUE(prepared.is_ok()) << prepared.to_string();
    prefix_ = "/conformance/" +
              std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "/";
    ASSERT_NO_FATAL_FAILURE(reopen({}));
  }

  void TearDown() override {
    // Leases left behind would expire in the middle of a later test sharing the cluster.
    if (store_) {
      for (int64_t id : leases_) (void)store_->lease_revoke(id);
    }
    store_.reset();
    if (backend_) backend_->after_test();
  }

  // Replaces the test's store with a new one opened with `options` (for memory and embedded, an
  // empty one).
  void reopen(const OpenOptions& options) {
    store_.reset();
    auto opened = backend_->open(options);
    ASSERT_TRUE(opened.is_ok()) << "opening the " << GetParam()
                                << " store: " << opened.status().to_string();
    store_ = std::move(opened).value();
  }

  Store& store() { return *store_; }
  std::string k(std::string_view name) const { return prefix_ + std::string(name); }
  KeyRange mine() const { return KeyRange::prefix(prefix_); }
  int64_t rev() { return must(store().current_revision()); }

  int64_t grant(int64_t ttl) {
    int64_t id = must(store().lease_grant(ttl));
    leases_.push_back(id);
    return id;
  }

  TxnResult txn(Txn t) { return must(store().txn(t)); }

  // Writes that record the event a watcher of mine() should see, in the form describe() gives.
  int64_t put_logged(std::vector<std::string>* log, std::string_view name, std::string value) {
    int64_t r = must(store().put(k(name), value));
    log->push_back("PUT " + std::string(name) + "=" + value + " @" + std::to_string(r));
    return r;
  }
  int64_t del_logged(std::vector<std::string>* log, std::string_view name) {
    Txn t;
    t.success.push_back(Op::del(KeyRange::single(k(name))));
    TxnResult res = txn(t);
    EXPECT_EQ(res.results.at(0).count, 1) << "deleting " << name;
    log->push_back("DEL " + std::string(name) + " @" + std::to_string(res.revision));
    return res.revision;
  }

  std::unique_ptr<WatchCollector> collect(KeyRange range, int64_t start_revision,
                                          bool prev_kv = false) {
    WatchOptions options;
    options.range = std::move(range);
    options.start_revision = start_revision;
    options.prev_kv = prev_kv;
    return must(WatchCollector::start(store(), std::move(options)));
  }

  std::string strip(const std::string& key) const {
    return key.starts_with(prefix_) ? key.substr(prefix_.size()) : key;
  }

  std::string describe(const Event& e) const {
    std::string at = " @" + std::to_string(e.revision);
    switch (e.type) {
      case EventType::kPut:
        if (!e.kv) return "PUT <no kv>" + at;
        return "PUT " + strip(e.kv->key) + "=" + e.kv->value + at;
      case EventType::kDelete:
        if (!e.kv) return "DEL <no kv>" + at;
        return "DEL " + strip(e.kv->key) + at;
      case EventType::kProgress:
        return "PROGRESS" + at;
    }
    return "?";
  }

  std::vector<std::string> describe(const std::vector<Event>& events) const {
    std::vector<std::string> out;
    for (const Event& e : events) out.push_back(describe(e));
    return out;
  }

  std::vector<std::string> keys_of(const std::vector<KeyValuePtr>& kvs) const {
    std::vector<std::string> out;
    for (const auto& kv : kvs) out.push_back(kv ? strip(kv->key) : "<null>");
    return out;
  }
  std::vector<std::string> pairs_of(const std::vector<KeyValuePtr>& kvs) const {
    std::vector<std::string> out;
    for (const auto& kv : kvs) out.push_back(kv ? strip(kv->key) + "=" + kv->value : "<null>");
    return out;
  }

  conformance::Backend* backend_ = nullptr;
  std::unique_ptr<Store> store_;
  std::string prefix_;
  std::vector<int64_t> leases_;
};

// ---------------------------------------------------------------------------------------------
// Reads, writes and revisions

TEST_P(StoreTest, PutGetAndKeyMetadata) {
  int64_t r0 = rev();
  int64_t r1 = must(store().put(k("a"), "1"));
  EXPECT_EQ(r1, r0 + 1);
  KeyValuePtr kv = must(store().get(k("a")));
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->key, k("a"));
  EXPECT_EQ(kv->value, "1");
  EXPECT_EQ(kv->create_revision, r1);
  EXPECT_EQ(kv->mod_revision, r1);
  EXPECT_EQ(kv->version, 1);
  EXPECT_EQ(kv->lease, 0);

  int64_t r2 = must(store().put(k("a"), "2"));
  EXPECT_EQ(r2, r1 + 1);
  kv = must(store().get(k("a")));
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->value, "2");
  EXPECT_EQ(kv->create_revision, r1);
  EXPECT_EQ(kv->mod_revision, r2);
  EXPECT_EQ(kv->version, 2);

  // Binary values, including NUL bytes, round-trip.
  std::string binary("\0\x01\xff value", 9);
  int64_t r3 = must(store().put(k("bin"), binary));
  kv = must(store().get(k("bin")));
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->value, binary);
  EXPECT_EQ(kv->mod_revision, r3);

  EXPECT_EQ(must(store().get(k("absent"))), nullptr);
  EXPECT_EQ(rev(), r3);
}

TEST_P(StoreTest, RevisionIncreasesByOnePerWritingTxn) {
  int64_t last = rev();
  for (int i = 0; i < 10; ++i) {
    int64_t r = must(store().put(k("key" + std::to_string(i % 3)), std::to_string(i)));
    EXPECT_EQ(r, last + 1) << "write " << i;
    EXPECT_EQ(rev(), r);
    last = r;
  }
  EXPECT_EQ(must(store().del(KeyRange::prefix(k("key")))), 3);
  EXPECT_EQ(rev(), last + 1) << "a delete of three keys is one revision";
}

TEST_P(StoreTest, ReadsAndFailedComparesDoNotBumpTheRevision) {
  int64_t r = must(store().put(k("a"), "1"));

  Txn read_only;
  read_only.success.push_back(Op::get(KeyRange::single(k("a"))));
  TxnResult res = txn(read_only);
  EXPECT_TRUE(res.succeeded);
  EXPECT_EQ(res.revision, r);
  ASSERT_EQ(res.results.size(), 1u);
  ASSERT_EQ(res.results[0].kvs.size(), 1u);
  EXPECT_EQ(res.results[0].kvs[0]->value, "1");
  EXPECT_EQ(rev(), r);

  Txn failed;
  failed.compare.push_back(Compare::value_is(k("a"), CompareOp::kEqual, "other"));
  failed.success.push_back(Op::put(k("a"), "never"));
  res = txn(failed);
  EXPECT_FALSE(res.succeeded);
  EXPECT_EQ(res.revision, r);
  EXPECT_TRUE(res.results.empty());
  EXPECT_EQ(rev(), r);

  failed.failure.push_back(Op::get(KeyRange::single(k("a"))));
  res = txn(failed);
  EXPECT_FALSE(res.succeeded);
  EXPECT_EQ(res.revision, r);
  ASSERT_EQ(res.results.size(), 1u);
  EXPECT_EQ(res.results[0].type, Op::Type::kRange);
  ASSERT_EQ(res.results[0].kvs.size(), 1u);
  EXPECT_EQ(res.results[0].kvs[0]->value, "1");
  EXPECT_EQ(rev(), r);

  (void)must(store().range(mine()));
  EXPECT_EQ(rev(), r);

  // A failed compare whose failure branch writes is a write.
  failed.failure.push_back(Op::put(k("b"), "from failure"));
  res = txn(failed);
  EXPECT_FALSE(res.succeeded);
  EXPECT_EQ(res.revision, r + 1);
  EXPECT_EQ(rev(), r + 1);
  KeyValuePtr b = must(store().get(k("b")));
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->value, "from failure");
  EXPECT_EQ(must(store().get(k("a")))->value, "1");
}

TEST_P(StoreTest, DeletingNothingDoesNotBumpTheRevision) {
  int64_t r = must(store().put(k("a"), "1"));
  Txn t;
  t.success.push_back(Op::del(KeyRange::single(k("absent")), true));
  TxnResult res = txn(t);
  EXPECT_TRUE(res.succeeded);
  ASSERT_EQ(res.results.size(), 1u);
  EXPECT_EQ(res.results[0].count, 0);
  EXPECT_TRUE(res.results[0].kvs.empty());
  EXPECT_EQ(res.revision, r) << "etcd: a delete that deletes nothing is not a write";
  EXPECT_EQ(rev(), r);
}

TEST_P(StoreTest, VersionResetsAfterDeleteAndRecreate) {
  int64_t r1 = must(store().put(k("a"), "1"));
  int64_t r2 = must(store().put(k("a"), "2"));
  EXPECT_EQ(must(store().del(KeyRange::single(k("a")))), 1);
  int64_t r3 = rev();
  EXPECT_EQ(r3, r2 + 1);
  EXPECT_EQ(must(store().get(k("a"))), nullptr);

  // History still has the deleted key.
  RangeResult old = must(store().range(KeyRange::single(k("a")), {.revision = r2}));
  ASSERT_EQ(old.kvs.size(), 1u);
  EXPECT_EQ(old.kvs[0]->value, "2");
  EXPECT_EQ(old.kvs[0]->version, 2);
  EXPECT_EQ(old.kvs[0]->create_revision, r1);

  int64_t r4 = must(store().put(k("a"), "3"));
  EXPECT_EQ(r4, r3 + 1);
  KeyValuePtr kv = must(store().get(k("a")));
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->value, "3");
  EXPECT_EQ(kv->version, 1) << "version restarts after delete + recreate";
  EXPECT_EQ(kv->create_revision, r4) << "create_revision is the recreation's";
  EXPECT_EQ(kv->mod_revision, r4);
}

TEST_P(StoreTest, RangeOverPrefixWithLimitKeysOnlyAndCountOnly) {
  for (std::string name : {"p/c", "p/a", "p/d", "p/b", "p", "p0", "o", "q/a"}) {
    must(store().put(k(name), "v-" + name));
  }
  KeyRange p = KeyRange::prefix(k("p/"));

  RangeResult all = must(store().range(p));
  EXPECT_EQ(pairs_of(all.kvs),
            (std::vector<std::string>{"p/a=v-p/a", "p/b=v-p/b", "p/c=v-p/c", "p/d=v-p/d"}));
  EXPECT_EQ(all.count, 4);
  EXPECT_FALSE(all.more);
  EXPECT_EQ(all.revision, rev());

  RangeResult limited = must(store().range(p, {.limit = 2}));
  EXPECT_EQ(keys_of(limited.kvs), (std::vector<std::string>{"p/a", "p/b"}));
  EXPECT_EQ(limited.count, 4) << "count ignores the limit";
  EXPECT_TRUE(limited.more);

  RangeResult exact = must(store().range(p, {.limit = 4}));
  EXPECT_EQ(exact.kvs.size(), 4u);
  EXPECT_FALSE(exact.more);
  RangeResult over = must(store().range(p, {.limit = 10}));
  EXPECT_EQ(over.kvs.size(), 4u);
  EXPECT_FALSE(over.more);

  RangeResult keys = must(store().range(p, {.keys_only = true}));
  EXPECT_EQ(keys_of(keys.kvs), (std::vector<std::string>{"p/a", "p/b", "p/c", "p/d"}));
  for (const auto& kv : keys.kvs) {
    EXPECT_TRUE(kv->value.empty()) << kv->key << " has a value in a keys_only range";
    EXPECT_GT(kv->mod_revision, 0) << kv->key;
  }
  EXPECT_EQ(keys.count, 4);

  RangeResult counted = must(store().range(p, {.count_only = true}));
  EXPECT_TRUE(counted.kvs.empty());
  EXPECT_EQ(counted.count, 4);

  // An explicit [key, range_end).
  RangeResult bc = must(store().range(KeyRange{k("p/b"), k("p/d")}));
  EXPECT_EQ(keys_of(bc.kvs), (std::vector<std::string>{"p/b", "p/c"}));
  EXPECT_EQ(bc.count, 2);

  RangeResult single = must(store().range(KeyRange::single(k("p"))));
  EXPECT_EQ(pairs_of(single.kvs), (std::vector<std::string>{"p=v-p"}));

  RangeResult none = must(store().range(KeyRange::prefix(k("nothing/"))));
  EXPECT_TRUE(none.kvs.empty());
  EXPECT_EQ(none.count, 0);
  EXPECT_FALSE(none.more);
}

TEST_P(StoreTest, RangeAtOlderRevisionShowsOldValues) {
  int64_t r1 = must(store().put(k("a"), "1"));
  int64_t r2 = must(store().put(k("b"), "1"));
  int64_t r3 = must(store().put(k("a"), "2"));
  EXPECT_EQ(must(store().del(KeyRange::single(k("b")))), 1);
  int64_t r4 = rev();
  int64_t r5 = must(store().put(k("c"), "1"));

  auto at = [&](int64_t revision) {
    RangeResult res = must(store().range(mine(), {.revision = revision}));
    EXPECT_EQ(res.revision, r5) << "the header revision is the current one, not the one read";
    return pairs_of(res.kvs);
  };
  EXPECT_EQ(at(r1), (std::vector<std::string>{"a=1"}));
  EXPECT_EQ(at(r2), (std::vector<std::string>{"a=1", "b=1"}));
  EXPECT_EQ(at(r3), (std::vector<std::string>{"a=2", "b=1"}));
  EXPECT_EQ(at(r4), (std::vector<std::string>{"a=2"}));
  EXPECT_EQ(at(r5), (std::vector<std::string>{"a=2", "c=1"}));

  RangeResult old_a = must(store().range(KeyRange::single(k("a")), {.revision = r2}));
  ASSERT_EQ(old_a.kvs.size(), 1u);
  EXPECT_EQ(old_a.kvs[0]->value, "1");
  EXPECT_EQ(old_a.kvs[0]->mod_revision, r1);
  EXPECT_EQ(old_a.kvs[0]->version, 1);

  RangeResult limited = must(store().range(mine(), {.revision = r3, .limit = 1}));
  EXPECT_EQ(keys_of(limited.kvs), (std::vector<std::string>{"a"}));
  EXPECT_EQ(limited.count, 2);
  EXPECT_TRUE(limited.more);
}

// ---------------------------------------------------------------------------------------------
// Transactions

TEST_P(StoreTest, TxnCreateIfAbsent) {
  auto create = [&](const std::string& value) {
    Txn t;
    t.compare.push_back(Compare::absent(k("lock")));
    t.success.push_back(Op::put(k("lock"), value));
    t.failure.push_back(Op::get(KeyRange::single(k("lock"))));
    return txn(t);
  };
  int64_t r0 = rev();
  TxnResult first = create("first");
  EXPECT_TRUE(first.succeeded);
  EXPECT_EQ(first.revision, r0 + 1);
  ASSERT_EQ(first.results.size(), 1u);
  EXPECT_EQ(first.results[0].type, Op::Type::kPut);

  TxnResult second = create("second");
  EXPECT_FALSE(second.succeeded);
  EXPECT_EQ(second.revision, r0 + 1);
  ASSERT_EQ(second.results.size(), 1u);
  EXPECT_EQ(second.results[0].type, Op::Type::kRange);
  EXPECT_EQ(pairs_of(second.results[0].kvs), (std::vector<std::string>{"lock=first"}));
  EXPECT_EQ(second.results[0].count, 1);

  EXPECT_EQ(rev(), r0 + 1);
  EXPECT_EQ(must(store().get(k("lock")))->value, "first");
}

TEST_P(StoreTest, TxnCompareAndSwapOnModRevision) {
  auto cas = [&](const std::string& key, int64_t expected_mod, const std::string& value) {
    Txn t;
    t.compare.push_back(Compare::mod_revision(k(key), CompareOp::kEqual, expected_mod));
    t.success.push_back(Op::put(k(key), value, 0, /*prev_kv=*/true));
    t.failure.push_back(Op::get(KeyRange::single(k(key))));
    return txn(t);
  };
  int64_t r1 = must(store().put(k("x"), "v1"));

  TxnResult ok = cas("x", r1, "v2");
  EXPECT_TRUE(ok.succeeded);
  EXPECT_EQ(ok.revision, r1 + 1);
  ASSERT_EQ(ok.results.size(), 1u);
  ASSERT_NE(ok.results[0].prev_kv, nullptr);
  EXPECT_EQ(ok.results[0].prev_kv->value, "v1");
  EXPECT_EQ(ok.results[0].prev_kv->mod_revision, r1);

  TxnResult stale = cas("x", r1, "v3");
  EXPECT_FALSE(stale.succeeded);
  EXPECT_EQ(stale.revision, r1 + 1);
  ASSERT_EQ(stale.results.size(), 1u);
  ASSERT_EQ(stale.results[0].kvs.size(), 1u);
  EXPECT_EQ(stale.results[0].kvs[0]->value, "v2") << "the failure branch reads the current value";
  EXPECT_EQ(stale.results[0].kvs[0]->mod_revision, r1 + 1);

  KeyValuePtr x = must(store().get(k("x")));
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->value, "v2");

  // A missing key has mod_revision 0.
  TxnResult created = cas("y", 0, "new");
  EXPECT_TRUE(created.succeeded);
  ASSERT_EQ(created.results.size(), 1u);
  EXPECT_EQ(created.results[0].prev_kv, nullptr) << "no previous value for a new key";
  EXPECT_EQ(rev(), r1 + 2);
}

TEST_P(StoreTest, TxnCompareTargetsAndOperators) {
  int64_t r1 = must(store().put(k("x"), "m"));
  int64_t r2 = must(store().put(k("x"), "m"));
  int64_t before = rev();

  struct Case {
    Compare compare;
    bool want;
  };
  using C = CompareOp;
  std::vector<Case> cases = {
      {Compare::version(k("x"), C::kEqual, 2), true},
      {Compare::version(k("x"), C::kNotEqual, 2), false},
      {Compare::version(k("x"), C::kGreater, 1), true},
      {Compare::version(k("x"), C::kGreater, 2), false},
      {Compare::version(k("x"), C::kLess, 3), true},
      {Compare::version(k("x"), C::kLess, 2), false},
      {Compare::create_revision(k("x"), C::kEqual, r1), true},
      {Compare::create_revision(k("x"), C::kNotEqual, r1), false},
      {Compare::create_revision(k("x"), C::kLess, r2), true},
      {Compare::create_revision(k("x"), C::kGreater, r1), false},
      {Compare::mod_revision(k("x"), C::kEqual, r2), true},
      {Compare::mod_revision(k("x"), C::kEqual, r1), false},
      {Compare::mod_revision(k("x"), C::kGreater, r1), true},
      {Compare::mod_revision(k("x"), C::kLess, r2), false},
      {Compare::mod_revision(k("x"), C::kNotEqual, r1), true},
      {Compare::value_is(k("x"), C::kEqual, "m"), true},
      {Compare::value_is(k("x"), C::kEqual, "n"), false},
      {Compare::value_is(k("x"), C::kNotEqual, "n"), true},
      {Compare::value_is(k("x"), C::kNotEqual, "m"), false},
      {Compare::value_is(k("x"), C::kGreater, "a"), true},
      {Compare::value_is(k("x"), C::kGreater, "z"), false},
      {Compare::value_is(k("x"), C::kLess, "z"), true},
      {Compare::value_is(k("x"), C::kLess, "a"), false},
      // A missing key: version and revisions 0; value comparisons are false whatever the op.
      {Compare::absent(k("missing")), true},
      {Compare::version(k("missing"), C::kGreater, 0), false},
      {Compare::create_revision(k("missing"), C::kEqual, 0), true},
      {Compare::mod_revision(k("missing"), C::kEqual, 0), true},
      {Compare::mod_revision(k("missing"), C::kLess, 1), true},
      {Compare::value_is(k("missing"), C::kEqual, ""), false},
      {Compare::value_is(k("missing"), C::kNotEqual, "m"), false},
      {Compare::value_is(k("missing"), C::kGreater, ""), false},
      {Compare::absent(k("x")), false},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    Txn t;
    t.compare.push_back(cases[i].compare);
    TxnResult res = txn(t);
    EXPECT_EQ(res.succeeded, cases[i].want)
        << "case " << i << " on key " << strip(cases[i].compare.key);
  }

  // Several compares must all hold.
  Txn both;
  both.compare = {Compare::version(k("x"), C::kEqual, 2),
                  Compare::value_is(k("x"), C::kEqual, "m")};
  EXPECT_TRUE(txn(both).succeeded);
  both.compare.push_back(Compare::absent(k("x")));
  EXPECT_FALSE(txn(both).succeeded);

  EXPECT_EQ(rev(), before);
}

TEST_P(StoreTest, TxnWithSeveralOpsIsOneRevision) {
  must(store().put(k("a"), "old"));
  must(store().put(k("d"), "gone"));
  int64_t r = rev();

  Txn t;
  t.success.push_back(Op::get(mine()));
  t.success.push_back(Op::put(k("a"), "1", 0, /*prev_kv=*/true));
  t.success.push_back(Op::put(k("b"), "2"));
  t.success.push_back(Op::put(k("c"), "3", 0, /*prev_kv=*/true));
  t.success.push_back(Op::del(KeyRange::single(k("d")), /*prev_kv=*/true));
  TxnResult res = txn(t);
  EXPECT_TRUE(res.succeeded);
  EXPECT_EQ(res.revision, r + 1);
  EXPECT_EQ(rev(), r + 1);
  ASSERT_EQ(res.results.size(), 5u);

  EXPECT_EQ(res.results[0].type, Op::Type::kRange);
  EXPECT_EQ(pairs_of(res.results[0].kvs), (std::vector<std::string>{"a=old", "d=gone"}));
  EXPECT_EQ(res.results[1].type, Op::Type::kPut);
  ASSERT_NE(res.results[1].prev_kv, nullptr);
  EXPECT_EQ(res.results[1].prev_kv->value, "old");
  EXPECT_EQ(res.results[3].prev_kv, nullptr);
  EXPECT_EQ(res.results[4].type, Op::Type::kDelete);
  EXPECT_EQ(res.results[4].count, 1);
  EXPECT_EQ(pairs_of(res.results[4].kvs), (std::vector<std::string>{"d=gone"}));

  RangeResult now = must(store().range(mine()));
  EXPECT_EQ(pairs_of(now.kvs), (std::vector<std::string>{"a=1", "b=2", "c=3"}));
  for (const auto& kv : now.kvs) EXPECT_EQ(kv->mod_revision, r + 1) << kv->key;
}

TEST_P(StoreTest, DeleteRangeWithPrevKv) {
  for (std::string name : {"p/a", "p/b", "p/c", "q"}) must(store().put(k(name), "v-" + name));
  int64_t r = rev();

  Txn t;
  t.success.push_back(Op::del(KeyRange::prefix(k("p/")), /*prev_kv=*/true));
  TxnResult res = txn(t);
  EXPECT_EQ(res.revision, r + 1);
  ASSERT_EQ(res.results.size(), 1u);
  EXPECT_EQ(res.results[0].type, Op::Type::kDelete);
  EXPECT_EQ(res.results[0].count, 3);
  EXPECT_EQ(pairs_of(res.results[0].kvs),
            (std::vector<std::string>{"p/a=v-p/a", "p/b=v-p/b", "p/c=v-p/c"}));
  EXPECT_EQ(rev(), r + 1) << "deleting a range is one revision";

  EXPECT_EQ(must(store().range(KeyRange::prefix(k("p/")))).count, 0);
  EXPECT_EQ(pairs_of(must(store().range(mine())).kvs), (std::vector<std::string>{"q=v-q"}));
  EXPECT_EQ(must(store().range(KeyRange::prefix(k("p/")), {.revision = r})).count, 3);

  Txn plain;
  plain.success.push_back(Op::del(KeyRange::single(k("q"))));
  res = txn(plain);
  ASSERT_EQ(res.results.size(), 1u);
  EXPECT_EQ(res.results[0].count, 1);
  EXPECT_TRUE(res.results[0].kvs.empty()) << "no prev_kv asked for";
}

TEST_P(StoreTest, PutWithPrevKv) {
  Txn first;
  first.success.push_back(Op::put(k("a"), "1", 0, /*prev_kv=*/true));
  TxnResult res = txn(first);
  ASSERT_EQ(res.results.size(), 1u);
  EXPECT_EQ(res.results[0].prev_kv, nullptr);
  int64_t r1 = res.revision;

  Txn second;
  second.success.push_back(Op::put(k("a"), "2", 0, /*prev_kv=*/true));
  res = txn(second);
  ASSERT_EQ(res.results.size(), 1u);
  ASSERT_NE(res.results[0].prev_kv, nullptr);
  EXPECT_EQ(res.results[0].prev_kv->key, k("a"));
  EXPECT_EQ(res.results[0].prev_kv->value, "1");
  EXPECT_EQ(res.results[0].prev_kv->mod_revision, r1);
  EXPECT_EQ(res.results[0].prev_kv->version, 1);
}

// ---------------------------------------------------------------------------------------------
// Limits and malformed requests

TEST_P(StoreTest, ValueOverTheDefaultLimitIsTooLarge) {
  int64_t r0 = rev();
  std::string big(kDefaultMaxValueBytes + 1, 'x');
  EXPECT_CODE(store().put(k("big"), big), StatusCode::kTooLarge);

  // A transaction with one oversized value writes none of its ops.
  Txn t;
  t.success.push_back(Op::put(k("small"), "fine"));
  t.success.push_back(Op::put(k("big"), big));
  EXPECT_CODE(store().txn(t), StatusCode::kTooLarge);

  EXPECT_EQ(rev(), r0);
  EXPECT_EQ(must(store().range(mine())).count, 0);
}

TEST_P(StoreTest, TxnOverTheDefaultOpLimitIsTooLarge) {
  int64_t r0 = rev();
  Txn at_limit;
  for (size_t i = 0; i < kDefaultMaxTxnOps; ++i) {
    at_limit.success.push_back(Op::put(k("ok/" + std::to_string(i)), "v"));
  }
  TxnResult res = txn(at_limit);
  EXPECT_EQ(res.revision, r0 + 1);
  EXPECT_EQ(must(store().range(KeyRange::prefix(k("ok/")))).count,
            static_cast<int64_t>(kDefaultMaxTxnOps));

  Txn over;
  for (size_t i = 0; i <= kDefaultMaxTxnOps; ++i) {
    over.success.push_back(Op::put(k("over/" + std::to_string(i)), "v"));
  }
  EXPECT_CODE(store().txn(over), StatusCode::kTooLarge);
  EXPECT_EQ(rev(), r0 + 1);
  EXPECT_EQ(must(store().range(KeyRange::prefix(k("over/")))).count, 0);
}

TEST_P(StoreTest, ConfiguredLimitsAreEnforced) {
  OpenOptions options;
  options.limits.max_value_bytes = 1000;
  options.limits.max_txn_ops = 4;
  ASSERT_NO_FATAL_FAILURE(reopen(options));
  int64_t r0 = rev();

  EXPECT_OK(store().put(k("max"), std::string(1000, 'v')));
  EXPECT_CODE(store().put(k("over"), std::string(1001, 'v')), StatusCode::kTooLarge);
  EXPECT_EQ(must(store().get(k("over"))), nullptr);
  EXPECT_EQ(rev(), r0 + 1);

  Txn four;
  for (int i = 0; i < 4; ++i) four.success.push_back(Op::put(k("four/" + std::to_string(i)), "v"));
  EXPECT_EQ(txn(four).revision, r0 + 2);

  Txn five;
  for (int i = 0; i < 5; ++i) five.success.push_back(Op::put(k("five/" + std::to_string(i)), "v"));
  EXPECT_CODE(store().txn(five), StatusCode::kTooLarge);

  Txn five_in_failure;
  for (int i = 0; i < 5; ++i) {
    five_in_failure.failure.push_back(Op::put(k("five/" + std::to_string(i)), "v"));
  }
  EXPECT_CODE(store().txn(five_in_failure), StatusCode::kTooLarge);

  EXPECT_EQ(rev(), r0 + 2);
  EXPECT_EQ(must(store().range(KeyRange::prefix(k("five/")))).count, 0);
}

TEST_P(StoreTest, MalformedRequestsAreInvalidArguments) {
  int64_t r0 = must(store().put(k("a"), "1"));

  EXPECT_CODE(store().put("", "v"), StatusCode::kInvalidArgument);
  EXPECT_CODE(store().range(KeyRange::single("")), StatusCode::kInvalidArgument);
  EXPECT_CODE(store().del(KeyRange::single("")), StatusCode::kInvalidArgument);

  Txn empty_compare;
  empty_compare.compare.push_back(Compare::absent(""));
  empty_compare.success.push_back(Op::put(k("b"), "v"));
  EXPECT_CODE(store().txn(empty_compare), StatusCode::kInvalidArgument);

  Txn mixed;
  mixed.success.push_back(Op::put(k("c"), "v"));
  mixed.success.push_back(Op::put("", "v"));
  EXPECT_CODE(store().txn(mixed), StatusCode::kInvalidArgument);

  Txn range_at_revision;
  range_at_revision.success.push_back(Op::get(mine(), {.revision = r0}));
  EXPECT_CODE(store().txn(range_at_revision), StatusCode::kInvalidArgument);

  EXPECT_CODE(store().range(mine(), {.limit = -1}), StatusCode::kInvalidArgument);
  EXPECT_CODE(store().range(mine(), {.revision = -1}), StatusCode::kInvalidArgument);

  EXPECT_EQ(rev(), r0);
  EXPECT_EQ(keys_of(must(store().range(mine())).kvs), (std::vector<std::string>{"a"}));
}

// ---------------------------------------------------------------------------------------------
// Compaction

TEST_P(StoreTest, CompactionDropsOlderRevisions) {
  int64_t r1 = must(store().put(k("a"), "1"));
  int64_t r2 = must(store().put(k("a"), "2"));
  int64_t r3 = must(store().put(k("b"), "1"));
  int64_t r4 = must(store().put(k("a"), "3"));

  must(store().compact(r2));
  EXPECT_CODE(store().range(KeyRange::single(k("a")), {.revision = r1}), StatusCode::kCompacted);
  EXPECT_CODE(store().range(mine(), {.revision = r2 - 1}), StatusCode::kCompacted);

  RangeResult at_r2 = must(store().range(mine(), {.revision = r2}));
  EXPECT_EQ(pairs_of(at_r2.kvs), (std::vector<std::string>{"a=2"}));
  EXPECT_EQ(pairs_of(must(store().range(mine(), {.revision = r3})).kvs),
            (std::vector<std::string>{"a=2", "b=1"}));
  EXPECT_EQ(pairs_of(must(store().range(mine())).kvs), (std::vector<std::string>{"a=3", "b=1"}));

  EXPECT_CODE(store().range(mine(), {.revision = r4 + 1}), StatusCode::kFutureRevision);
  EXPECT_CODE(store().compact(r1), StatusCode::kCompacted);
  EXPECT_CODE(store().compact(r4 + 1), StatusCode::kFutureRevision);

  // Compaction is not a write.
  EXPECT_EQ(rev(), r4);
  // The store goes on working at and after the compaction point.
  int64_t r5 = must(store().put(k("c"), "1"));
  EXPECT_EQ(r5, r4 + 1);
  must(store().compact(r4));
  EXPECT_CODE(store().range(mine(), {.revision = r3}), StatusCode::kCompacted);
  EXPECT_EQ(pairs_of(must(store().range(mine(), {.revision = r4})).kvs),
            (std::vector<std::string>{"a=3", "b=1"}));
}

TEST_P(StoreTest, AutomaticCompactionWithAShortWindow) {
  OpenOptions options;
  options.compaction_window = 500ms;
  ASSERT_NO_FATAL_FAILURE(reopen(options));

  int64_t r1 = must(store().put(k("a"), "1"));
  must(store().put(k("a"), "2"));
  auto start = Clock::now();
  bool compacted = false;
  while (Clock::now() - start < 8s) {
    must(store().put(k("tick"), "t"));
    auto res = store().range(KeyRange::single(k("a")), {.revision = r1});
    if (!res.is_ok()) {
      EXPECT_CODE(res, StatusCode::kCompacted);
      compacted = true;
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(compacted)
      << "revision " << r1 << " still readable "
      << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()
      << " ms after it was written, with a 500 ms compaction window";
  EXPECT_EQ(must(store().get(k("a")))->value, "2");
}

// ---------------------------------------------------------------------------------------------
// Watches

TEST_P(StoreTest, WatchFromNowSeesPutsAndDeletesInOrder) {
  int64_t r0 = must(store().put(k("a"), "0"));  // before the watch: not delivered
  auto w = collect(mine(), 0);

  std::vector<std::string> want;
  int64_t r1 = put_logged(&want, "a", "1");
  put_logged(&want, "b", "1");
  int64_t r3 = del_logged(&want, "a");
  put_logged(&want, "b", "2");
  del_logged(&want, "b");

  std::vector<Event> events = w->wait_for(want.size(), kEventTimeout);
  EXPECT_EQ(describe(events), want);
  ASSERT_EQ(events.size(), want.size());

  // Puts carry the whole new value.
  ASSERT_NE(events[0].kv, nullptr);
  EXPECT_EQ(events[0].kv->create_revision, r0);
  EXPECT_EQ(events[0].kv->mod_revision, r1);
  EXPECT_EQ(events[0].kv->version, 2);
  EXPECT_EQ(events[0].prev_kv, nullptr) << "prev_kv was not asked for";
  // Deletes carry the key and the deletion's revision.
  ASSERT_NE(events[2].kv, nullptr);
  EXPECT_EQ(events[2].kv->key, k("a"));
  EXPECT_EQ(events[2].kv->mod_revision, r3);
  EXPECT_TRUE(events[2].kv->value.empty());
  EXPECT_EQ(events[2].prev_kv, nullptr);

  // Nothing more arrives.
  EXPECT_EQ(w->wait_for(want.size() + 1, 300ms).size(), want.size());
  EXPECT_OK(w->wait_end(0ms));
}

TEST_P(StoreTest, WatchWithPrevKv) {
  int64_t r1 = must(store().put(k("a"), "1"));
  auto w = collect(mine(), 0, /*prev_kv=*/true);
  std::vector<std::string> want;
  int64_t r2 = put_logged(&want, "a", "2");
  del_logged(&want, "a");
  put_logged(&want, "b", "1");

  std::vector<Event> events = w->wait_for(3, kEventTimeout);
  ASSERT_EQ(describe(events), want);
  ASSERT_NE(events[0].prev_kv, nullptr);
  EXPECT_EQ(events[0].prev_kv->value, "1");
  EXPECT_EQ(events[0].prev_kv->mod_revision, r1);
  ASSERT_NE(events[1].prev_kv, nullptr);
  EXPECT_EQ(events[1].prev_kv->value, "2");
  EXPECT_EQ(events[1].prev_kv->mod_revision, r2);
  EXPECT_EQ(events[2].prev_kv, nullptr) << "a new key has no previous value";
}

TEST_P(StoreTest, WatchFromAnOldRevisionReplaysHistoryThenContinues) {
  std::vector<std::string> history;
  put_logged(&history, "a", "1");
  int64_t start = put_logged(&history, "b", "1");
  put_logged(&history, "a", "2");
  del_logged(&history, "b");
  put_logged(&history, "c", "1");
  put_logged(&history, "a", "3");

  auto w = collect(mine(), start);
  std::vector<std::string> want(history.begin() + 1, history.end());
  EXPECT_EQ(describe(w->wait_for(want.size(), kEventTimeout)), want);

  put_logged(&want, "d", "1");
  del_logged(&want, "a");
  put_logged(&want, "c", "2");
  EXPECT_EQ(describe(w->wait_for(want.size(), kEventTimeout)), want);
  EXPECT_EQ(w->wait_for(want.size() + 1, 300ms).size(), want.size()) << "no duplicates";
}

TEST_P(StoreTest, WatchCatchesUpWhileWritesContinue) {
  // Watches that start in the past while writes keep landing must switch from history to live
  // events without a gap or a duplicate.
  constexpr int kBefore = 150, kDuring = 150;
  int64_t first = 0;
  for (int i = 0; i < kBefore; ++i) {
    int64_t r = must(store().put(k("k" + std::to_string(i % 10)), std::to_string(i)));
    if (i == 0) first = r;
  }
  std::atomic<int> write_errors{0};
  std::unique_ptr<WatchCollector> w;
  {
    std::jthread writer([&] {
      for (int i = kBefore; i < kBefore + kDuring; ++i) {
        if (!store().put(k("k" + std::to_string(i % 10)), std::to_string(i)).is_ok()) {
          ++write_errors;
        }
      }
    });
    w = collect(mine(), first);
  }
  ASSERT_EQ(write_errors.load(), 0);
  std::vector<Event> events = w->wait_for(kBefore + kDuring, 30s);
  ASSERT_EQ(events.size(), static_cast<size_t>(kBefore + kDuring));
  for (int i = 0; i < kBefore + kDuring; ++i) {
    const Event& e = events[i];
    ASSERT_EQ(e.type, EventType::kPut) << "event " << i;
    EXPECT_EQ(e.revision, first + i) << "event " << i;
    ASSERT_NE(e.kv, nullptr);
    EXPECT_EQ(e.kv->value, std::to_string(i)) << "event " << i;
  }
  EXPECT_EQ(w->wait_for(events.size() + 1, 300ms).size(), events.size()) << "no duplicates";
}

TEST_P(StoreTest, PrefixAndSingleKeyWatchesSeeOnlyTheirKeys) {
  auto in_prefix = collect(KeyRange::prefix(k("in/")), 0);
  auto single = collect(KeyRange::single(k("in/1")), 0);
  int64_t r1 = must(store().put(k("in/1"), "a"));
  for (std::string other : {"out/1", "in", "in0", "i", "im/1"}) must(store().put(k(other), "x"));
  int64_t r2 = must(store().put(k("in/2"), "b"));
  int64_t r3 = must(store().put(k("in/1"), "c"));

  EXPECT_EQ(describe(in_prefix->wait_for(3, kEventTimeout)),
            (std::vector<std::string>{"PUT in/1=a @" + std::to_string(r1),
                                      "PUT in/2=b @" + std::to_string(r2),
                                      "PUT in/1=c @" + std::to_string(r3)}));
  EXPECT_EQ(describe(single->wait_for(2, kEventTimeout)),
            (std::vector<std::string>{"PUT in/1=a @" + std::to_string(r1),
                                      "PUT in/1=c @" + std::to_string(r3)}));
  EXPECT_EQ(in_prefix->wait_for(4, 300ms).size(), 3u);
  EXPECT_EQ(single->wait_for(3, 0ms).size(), 2u);
}

TEST_P(StoreTest, WatchFromACompactedRevisionEndsWithCompacted) {
  int64_t r1 = must(store().put(k("a"), "1"));
  int64_t r2 = must(store().put(k("a"), "2"));
  int64_t r3 = must(store().put(k("b"), "1"));
  must(store().compact(r2));

  auto w = collect(mine(), r1);
  EXPECT_CODE(w->wait_end(kEventTimeout), StatusCode::kCompacted);
  EXPECT_GE(w->watch().compact_revision(), r2)
      << "compact_revision() tells the revision compacted up to";
  EXPECT_TRUE(w->events().empty()) << "no events from a compacted start";

  // The compaction point itself is still served.
  auto at_compaction = collect(mine(), r2);
  EXPECT_EQ(describe(at_compaction->wait_for(2, kEventTimeout)),
            (std::vector<std::string>{"PUT a=2 @" + std::to_string(r2),
                                      "PUT b=1 @" + std::to_string(r3)}));
  EXPECT_OK(at_compaction->wait_end(0ms));
}

TEST_P(StoreTest, ProgressRequestReportsTheRevision) {
  auto w = collect(mine(), 0);
  must(store().put(k("a"), "1"));
  must(store().put(k("a"), "2"));
  int64_t last = must(store().put(k("b"), "1"));
  ASSERT_EQ(w->wait_for(3, kEventTimeout).size(), 3u);

  w->watch().request_progress();
  std::vector<Event> events = w->wait_for(4, kEventTimeout);
  ASSERT_EQ(events.size(), 4u) << "no progress event after request_progress()";
  EXPECT_EQ(events[3].type, EventType::kProgress);
  EXPECT_GE(events[3].revision, last);
  EXPECT_EQ(events[3].kv, nullptr);

  // A watch that has seen no event at all still learns how far it is.
  auto quiet = collect(KeyRange::prefix(k("quiet/")), 0);
  quiet->watch().request_progress();
  std::vector<Event> quiet_events = quiet->wait_for(1, kEventTimeout);
  ASSERT_EQ(quiet_events.size(), 1u);
  EXPECT_EQ(quiet_events[0].type, EventType::kProgress);
  EXPECT_GE(quiet_events[0].revision, last);
}

TEST_P(StoreTest, ManyWatchersEachSeeEverything) {
  constexpr int kWatchers = 5, kWrites = 60;
  std::vector<std::unique_ptr<WatchCollector>> watchers;
  for (int i = 0; i < kWatchers; ++i) watchers.push_back(collect(mine(), 0, i % 2 == 1));
  std::vector<std::string> want;
  for (int i = 0; i < kWrites; ++i) {
    if (i % 7 == 6) {
      del_logged(&want, "k" + std::to_string((i - 1) % 5));
    } else {
      put_logged(&want, "k" + std::to_string(i % 5), std::to_string(i));
    }
  }
  for (int i = 0; i < kWatchers; ++i) {
    EXPECT_EQ(describe(watchers[i]->wait_for(want.size(), kEventTimeout)), want) << "watcher " << i;
  }
}

TEST_P(StoreTest, SlowWatcherIsCutOffWithoutBlockingWriters) {
  constexpr size_t kBuffer = 16;
  constexpr int kWrites = 200;
  auto fast = collect(mine(), 0);
  WatchOptions options;
  options.range = mine();
  options.max_buffered_events = kBuffer;
  options.notify = [] {};
  std::unique_ptr<Watch> slow = must(store().watch(std::move(options)));

  int64_t first = 0;
  auto max_latency = Clock::duration::zero();
  auto start = Clock::now();
  for (int i = 0; i < kWrites; ++i) {
    auto before = Clock::now();
    int64_t r = must(store().put(k("k" + std::to_string(i)), "v"));
    max_latency = std::max(max_latency, Clock::now() - before);
    if (i == 0) first = r;
  }
  auto total = Clock::now() - start;
  auto ms = [](Clock::duration d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  EXPECT_LT(max_latency, 2s) << "a write took " << ms(max_latency) << " ms with a stalled watcher";
  EXPECT_LT(total, 30s) << kWrites << " writes took " << ms(total) << " ms";

  // The fast watcher is unaffected.
  EXPECT_EQ(fast->wait_for(kWrites, kEventTimeout).size(), static_cast<size_t>(kWrites));

  // The slow one is cut off; what it had buffered is a gap-free prefix.
  std::this_thread::sleep_for(300ms);
  std::vector<Event> got;
  Status end;
  auto deadline = Clock::now() + 5s;
  while ((end = slow->poll(&got)).is_ok() && Clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_CODE(end, StatusCode::kResourceExhausted);
  EXPECT_LT(got.size(), static_cast<size_t>(kWrites));
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].revision, first + static_cast<int64_t>(i)) << "buffered event " << i;
  }
  slow.reset();

  // The store keeps working, for new watchers too.
  auto again = collect(mine(), 0);
  int64_t r = must(store().put(k("after"), "v"));
  EXPECT_EQ(describe(again->wait_for(1, kEventTimeout)),
            (std::vector<std::string>{"PUT after=v @" + std::to_string(r)}));
}

TEST_P(StoreTest, CancelledAndDestroyedWatchesAreClean) {
  auto w = collect(mine(), 0);
  must(store().put(k("a"), "1"));
  ASSERT_EQ(w->wait_for(1, kEventTimeout).size(), 1u);
  w->watch().cancel();
  EXPECT_CODE(w->wait_end(kEventTimeout), StatusCode::kCancelled);
  must(store().put(k("a"), "2"));
  EXPECT_CODE(w->wait_end(0ms), StatusCode::kCancelled);
  w.reset();

  // Watches created, polled and destroyed while writes keep landing.
  int64_t from = rev();
  std::atomic<int> write_errors{0};
  {
    std::jthread writer([&](std::stop_token stop) {
      for (int i = 0; !stop.stop_requested() && i < 2000; ++i) {
        if (!store().put(k("w/" + std::to_string(i % 20)), std::to_string(i)).is_ok()) {
          ++write_errors;
        }
      }
    });
    for (int i = 0; i < 30; ++i) {
      WatchOptions options;
      options.range = mine();
      options.start_revision = i % 3 == 0 ? 0 : from;
      options.prev_kv = i % 2 == 0;
      options.notify = [] {};
      std::unique_ptr<Watch> watch = must(store().watch(std::move(options)));
      std::this_thread::sleep_for(std::chrono::milliseconds(i % 4 * 5));
      std::vector<Event> events;
      if (i % 2 == 0) EXPECT_OK(watch->poll(&events));
      if (i % 5 == 0) watch->cancel();
    }
  }
  EXPECT_EQ(write_errors.load(), 0);

  auto fresh = collect(mine(), 0);
  int64_t r = must(store().put(k("b"), "1"));
  EXPECT_EQ(describe(fresh->wait_for(1, kEventTimeout)),
            (std::vector<std::string>{"PUT b=1 @" + std::to_string(r)}));
}

// ---------------------------------------------------------------------------------------------
// Leases

TEST_P(StoreTest, LeaseRevokeDeletesAttachedKeysInOneRevision) {
  int64_t id = grant(60);
  EXPECT_NE(id, 0);
  must(store().put(k("a"), "1", id));
  must(store().put(k("b"), "1", id));
  must(store().put(k("c"), "1"));
  KeyValuePtr a = must(store().get(k("a")));
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->lease, id);
  EXPECT_EQ(must(store().get(k("c")))->lease, 0);

  auto w = collect(mine(), 0);
  int64_t before = rev();
  must(store().lease_revoke(id));
  EXPECT_EQ(rev(), before + 1) << "revoking deletes every attached key in one revision";
  EXPECT_EQ(pairs_of(must(store().range(mine())).kvs), (std::vector<std::string>{"c=1"}));

  std::string at = " @" + std::to_string(before + 1);
  EXPECT_EQ(describe(w->wait_for(2, kEventTimeout)),
            (std::vector<std::string>{"DEL a" + at, "DEL b" + at}));
  EXPECT_CODE(store().lease_keep_alive(id), StatusCode::kNotFound);
}

TEST_P(StoreTest, UnknownLeasesAreNotFound) {
  constexpr int64_t kUnknown = 0x5eed5eed5eed;
  int64_t r0 = must(store().put(k("a"), "1"));
  EXPECT_CODE(store().lease_keep_alive(kUnknown), StatusCode::kNotFound);

  EXPECT_CODE(store().put(k("leased"), "v", kUnknown), StatusCode::kNotFound);
  Txn t;
  t.success.push_back(Op::put(k("b"), "v"));
  t.success.push_back(Op::put(k("c"), "v", kUnknown));
  EXPECT_CODE(store().txn(t), StatusCode::kNotFound);

  EXPECT_EQ(rev(), r0) << "nothing written";
  EXPECT_EQ(keys_of(must(store().range(mine())).kvs), (std::vector<std::string>{"a"}));
}

TEST_P(StoreTest, LeaseKeepAliveExtendsThenExpiryDeletesKeys) {
  int64_t id = grant(2);
  must(store().put(k("a"), "1", id));
  must(store().put(k("b"), "1", id));
  must(store().put(k("c"), "1"));
  auto w = collect(mine(), 0);

  // Renewed for well past the TTL, the keys stay.
  auto start = Clock::now();
  while (Clock::now() - start < 3s) {
    int64_t ttl = must(store().lease_keep_alive(id));
    EXPECT_GE(ttl, 2);
    std::this_thread::sleep_for(400ms);
  }
  EXPECT_NE(must(store().get(k("a"))), nullptr) << "the lease expired despite keep-alives";
  EXPECT_TRUE(w->events().empty());

  // Left alone, it expires: the keys go and watchers see the deletions.
  std::vector<Event> events = w->wait_for(2, 15s);
  ASSERT_EQ(events.size(), 2u) << "lease keys not deleted 15 s after the last keep-alive";
  EXPECT_EQ(events[0].type, EventType::kDelete);
  EXPECT_EQ(events[1].type, EventType::kDelete);
  ASSERT_NE(events[0].kv, nullptr);
  ASSERT_NE(events[1].kv, nullptr);
  EXPECT_EQ(strip(events[0].kv->key), "a");
  EXPECT_EQ(strip(events[1].kv->key), "b");
  EXPECT_EQ(events[0].revision, events[1].revision) << "an expiry is one revision";
  EXPECT_EQ(pairs_of(must(store().range(mine())).kvs), (std::vector<std::string>{"c=1"}));
  EXPECT_CODE(store().lease_keep_alive(id), StatusCode::kNotFound);
}

// ---------------------------------------------------------------------------------------------
// Concurrency

TEST_P(StoreTest, ConcurrentCasIncrementsAreExact) {
  constexpr int kThreads = 4, kIncrements = 40;
  const std::string counter = k("counter");
  std::mutex mu;
  std::set<int64_t> revisions;
  std::atomic<int> errors{0}, conflicts{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        int64_t value = 0, mod = 0;
        for (int i = 0; i < kIncrements; ++i) {
          while (true) {
            Txn cas;
            cas.compare.push_back(Compare::mod_revision(counter, CompareOp::kEqual, mod));
            cas.success.push_back(Op::put(counter, std::to_string(value + 1)));
            cas.failure.push_back(Op::get(KeyRange::single(counter)));
            auto res = store().txn(cas);
            if (!res.is_ok()) {
              ADD_FAILURE() << res.status().to_string();
              ++errors;
              return;
            }
            if (res->succeeded) {
              std::lock_guard lock(mu);
              EXPECT_TRUE(revisions.insert(res->revision).second) << "revision reused";
              value += 1;
              mod = res->revision;
              break;
            }
            ++conflicts;
            const auto& kvs = res->results.at(0).kvs;
            value = kvs.empty() ? 0 : std::stoll(kvs[0]->value);
            mod = kvs.empty() ? 0 : kvs[0]->mod_revision;
          }
        }
      });
    }
  }
  ASSERT_EQ(errors.load(), 0);
  KeyValuePtr kv = must(store().get(counter));
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->value, std::to_string(kThreads * kIncrements));
  EXPECT_EQ(kv->version, kThreads * kIncrements);
  EXPECT_EQ(revisions.size(), static_cast<size_t>(kThreads * kIncrements));
  RecordProperty("cas_conflicts", conflicts.load());
}

TEST_P(StoreTest, ConcurrentPutsOnDistinctKeysAllLand) {
  constexpr int kThreads = 8, kPerThread = 25;
  int64_t r0 = rev();
  std::mutex mu;
  std::map<std::string, int64_t> written;
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          std::string key = k(std::to_string(t) + "/" + std::to_string(i));
          auto r = store().put(key, key);
          if (!r.is_ok()) {
            ADD_FAILURE() << key << ": " << r.status().to_string();
            continue;
          }
          std::lock_guard lock(mu);
          written[key] = *r;
        }
      });
    }
  }
  ASSERT_EQ(written.size(), static_cast<size_t>(kThreads * kPerThread));
  std::set<int64_t> revisions;
  for (const auto& [key, r] : written) revisions.insert(r);
  EXPECT_EQ(revisions.size(), written.size()) << "two writes got the same revision";
  EXPECT_EQ(*revisions.begin(), r0 + 1);
  EXPECT_EQ(*revisions.rbegin(), r0 + kThreads * kPerThread);
  EXPECT_EQ(rev(), r0 + kThreads * kPerThread);

  RangeResult all = must(store().range(mine()));
  ASSERT_EQ(all.kvs.size(), written.size());
  for (const auto& kv : all.kvs) {
    EXPECT_EQ(kv->value, kv->key);
    EXPECT_EQ(kv->mod_revision, written[kv->key]) << kv->key;
  }
}

std::string backend_param_name(const ::testing::TestParamInfo<std::string>& info) {
  return info.param;
}

// One instantiation per backend, so that each is its own test suite: the etcd clusters start
// on first use and stop when their suite ends.
INSTANTIATE_TEST_SUITE_P(memory, StoreTest, ::testing::Values("memory"), backend_param_name);
INSTANTIATE_TEST_SUITE_P(embedded, StoreTest, ::testing::Values("embedded"), backend_param_name);
INSTANTIATE_TEST_SUITE_P(etcd1, StoreTest, ::testing::Values("etcd1"), backend_param_name);
INSTANTIATE_TEST_SUITE_P(etcd3, StoreTest, ::testing::Values("etcd3"), backend_param_name);

}  // namespace
}  // namespace skiff::storage
