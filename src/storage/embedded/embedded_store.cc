#include "storage/embedded/embedded_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "base/log.h"
#include "storage/memory/memory_store.h"

namespace skiff::storage {
namespace {

constexpr char kDatabaseFile[] = "store.db";
constexpr char kLockFile[] = "LOCK";
// Identifies a skiff store database (SQLite's application_id header field).
constexpr int kApplicationId = 0x736b6666;  // "skff"
constexpr int kFormatVersion = 1;

class Statement {
 public:
  Statement() = default;
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  int prepare(sqlite3* db, const char* sql) {
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
  }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

// The durable half of the embedded store: an append-only table of key revisions in SQLite
// (WAL mode, synchronous=FULL), one SQLite transaction (one fsync) per engine batch.
// Used from the engine's commit thread only.
class SqliteLog final : public CommitLog {
 public:
  SqliteLog(std::string dir, int lock_fd) : dir_(std::move(dir)), lock_fd_(lock_fd) {}

  ~SqliteLog() override {
    // close_v2 defers the close until the member statements are finalized after this body.
    if (db_) sqlite3_close_v2(db_);
    if (lock_fd_ >= 0) close(lock_fd_);
  }

  Status open(RecoveredState* state) {
    std::string path = dir_ + "/" + kDatabaseFile;
    int rc =
        sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) return fail("cannot open " + path);
    SKIFF_RETURN_IF_ERROR(check_header());
    SKIFF_RETURN_IF_ERROR(exec("PRAGMA journal_mode=WAL"));
    SKIFF_RETURN_IF_ERROR(exec("PRAGMA synchronous=FULL"));
    SKIFF_RETURN_IF_ERROR(
        exec("CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);"
             "CREATE TABLE IF NOT EXISTS kv(rev INTEGER NOT NULL, sub INTEGER NOT NULL,"
             " key BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,"
             " lease INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY(rev, sub)) WITHOUT ROWID;"
             "CREATE INDEX IF NOT EXISTS kv_key ON kv(key, rev);"
             "CREATE TABLE IF NOT EXISTS lease(id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL);"));
    SKIFF_RETURN_IF_ERROR(exec("PRAGMA application_id=" + std::to_string(kApplicationId)));
    SKIFF_RETURN_IF_ERROR(exec("PRAGMA user_version=" + std::to_string(kFormatVersion)));
    SKIFF_RETURN_IF_ERROR(load(state));
    if (insert_kv_.prepare(db_,
                           "INSERT INTO kv(rev, sub, key, create_rev, version, lease, value)"
                           " VALUES(?, ?, ?, ?, ?, ?, ?)") != SQLITE_OK ||
        insert_lease_.prepare(db_, "INSERT OR REPLACE INTO lease(id, ttl) VALUES(?, ?)") !=
            SQLITE_OK ||
        delete_lease_.prepare(db_, "DELETE FROM lease WHERE id = ?") != SQLITE_OK ||
        set_meta_.prepare(db_, "INSERT OR REPLACE INTO meta(k, v) VALUES(?, ?)") != SQLITE_OK ||
        // Drop history before the compaction point, keeping each key's newest live write.
        compact_.prepare(db_,
                         "DELETE FROM kv WHERE rev < ?1 AND (version = 0 OR rev < (SELECT "
                         "MAX(k2.rev) FROM kv AS k2 WHERE k2.key = kv.key AND k2.rev <= ?1))") !=
            SQLITE_OK) {
      return fail("cannot prepare statements");
    }
    return Status::ok();
  }

  Status commit(const CommitBatch& batch) override {
    SKIFF_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE"));
    Status s = write(batch);
    if (!s.is_ok()) {
      (void)exec("ROLLBACK");
      return s;
    }
    return exec("COMMIT");
  }

 private:
  Status write(const CommitBatch& batch) {
    for (const Mutation& m : batch.mutations) {
      sqlite3_stmt* st = insert_kv_.get();
      const KeyValue& kv = *m.kv;
      sqlite3_bind_int64(st, 1, kv.mod_revision);
      sqlite3_bind_int64(st, 2, m.sub);
      sqlite3_bind_blob(st, 3, kv.key.data(), static_cast<int>(kv.key.size()), SQLITE_STATIC);
      sqlite3_bind_int64(st, 4, kv.create_revision);
      sqlite3_bind_int64(st, 5, kv.version);
      sqlite3_bind_int64(st, 6, kv.lease);
      // A zero-length blob, never NULL, for an empty value.
      sqlite3_bind_blob(st, 7, kv.value.empty() ? "" : kv.value.data(),
                        static_cast<int>(kv.value.size()), SQLITE_STATIC);
      SKIFF_RETURN_IF_ERROR(step_reset(st));
    }
    for (auto [id, ttl] : batch.lease_grants) {
      sqlite3_bind_int64(insert_lease_.get(), 1, id);
      sqlite3_bind_int64(insert_lease_.get(), 2, ttl);
      SKIFF_RETURN_IF_ERROR(step_reset(insert_lease_.get()));
    }
    for (int64_t id : batch.lease_revokes) {
      sqlite3_bind_int64(delete_lease_.get(), 1, id);
      SKIFF_RETURN_IF_ERROR(step_reset(delete_lease_.get()));
    }
    if (batch.compact_revision > 0) {
      sqlite3_bind_int64(compact_.get(), 1, batch.compact_revision);
      SKIFF_RETURN_IF_ERROR(step_reset(compact_.get()));
      SKIFF_RETURN_IF_ERROR(set_meta("compact_revision", batch.compact_revision));
    }
    return set_meta("revision", batch.revision);
  }

  Status set_meta(const char* key, int64_t value) {
    sqlite3_bind_text(set_meta_.get(), 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(set_meta_.get(), 2, value);
    return step_reset(set_meta_.get());
  }

  Status step_reset(sqlite3_stmt* st) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) return fail("write failed");
    return Status::ok();
  }

  // Refuses SQLite databases that are not skiff stores, and files that are not databases.
  Status check_header() {
    Statement st;
    if (st.prepare(db_, "PRAGMA application_id") != SQLITE_OK) return fail("cannot read");
    int rc = sqlite3_step(st.get());
    if (rc != SQLITE_ROW) return fail("cannot read");
    int app_id = sqlite3_column_int(st.get(), 0);
    if (app_id != 0 && app_id != kApplicationId) {
      return Status(StatusCode::kFailedPrecondition,
                    "data directory " + dir_ + ": " + kDatabaseFile +
                        " is a SQLite database but not a skiff store");
    }
    return Status::ok();
  }

  Status load(RecoveredState* state) {
    Statement meta;
    if (meta.prepare(db_, "SELECT k, v FROM meta") != SQLITE_OK) return fail("cannot read meta");
    int rc;
    while ((rc = sqlite3_step(meta.get())) == SQLITE_ROW) {
      std::string_view k(reinterpret_cast<const char*>(sqlite3_column_text(meta.get(), 0)));
      int64_t v = sqlite3_column_int64(meta.get(), 1);
      if (k == "revision") state->current_revision = v;
      if (k == "compact_revision") state->compact_revision = v;
    }
    if (rc != SQLITE_DONE) return fail("cannot read meta");

    Statement rows;
    if (rows.prepare(db_,
                     "SELECT rev, sub, key, create_rev, version, lease, value FROM kv"
                     " ORDER BY rev, sub") != SQLITE_OK) {
      return fail("cannot read history");
    }
    sqlite3_stmt* st = rows.get();
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      auto kv = std::make_shared<KeyValue>();
      kv->mod_revision = sqlite3_column_int64(st, 0);
      int64_t sub = sqlite3_column_int64(st, 1);
      kv->key.assign(static_cast<const char*>(sqlite3_column_blob(st, 2)),
                     sqlite3_column_bytes(st, 2));
      kv->create_revision = sqlite3_column_int64(st, 3);
      kv->version = sqlite3_column_int64(st, 4);
      kv->lease = sqlite3_column_int64(st, 5);
      if (int n = sqlite3_column_bytes(st, 6); n > 0) {
        kv->value.assign(static_cast<const char*>(sqlite3_column_blob(st, 6)), n);
      }
      state->mutations.push_back(Mutation{sub, std::move(kv)});
    }
    if (rc != SQLITE_DONE) return fail("cannot read history");

    Statement leases;
    if (leases.prepare(db_, "SELECT id, ttl FROM lease") != SQLITE_OK) {
      return fail("cannot read leases");
    }
    while ((rc = sqlite3_step(leases.get())) == SQLITE_ROW) {
      state->leases.emplace_back(sqlite3_column_int64(leases.get(), 0),
                                 sqlite3_column_int64(leases.get(), 1));
    }
    if (rc != SQLITE_DONE) return fail("cannot read leases");
    return Status::ok();
  }

  Status exec(const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    sqlite3_free(err);
    if (rc != SQLITE_OK) return fail("\"" + sql.substr(0, 40) + "\" failed");
    return Status::ok();
  }

  Status fail(const std::string& what) {
    int code = db_ ? sqlite3_extended_errcode(db_) : SQLITE_CANTOPEN;
    std::string detail = db_ ? sqlite3_errmsg(db_) : "out of memory";
    std::string where = "data directory " + dir_ + ": " + kDatabaseFile + ": ";
    int primary = code & 0xff;
    if (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT) {
      return Status(StatusCode::kDataLoss,
                    where + "the database is corrupt (" + detail +
                        "); restore the directory from a backup or move it aside");
    }
    return Status(StatusCode::kInternal, where + what + ": " + detail);
  }

  const std::string dir_;
  const int lock_fd_;
  sqlite3* db_ = nullptr;
  Statement insert_kv_, insert_lease_, delete_lease_, set_meta_, compact_;
};

// Takes the data directory's lock file; returns its fd (held for the store's lifetime).
Result<int> lock_data_dir(const std::string& dir) {
  std::string path = dir + "/" + kLockFile;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status(StatusCode::kPermissionDenied, "data directory " + dir + ": cannot open " +
                                                     kLockFile + ": " + std::strerror(errno));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char owner[32] = {0};
    ssize_t n = pread(fd, owner, sizeof(owner) - 1, 0);
    close(fd);
    std::string by = n > 0 ? " (held by pid " + std::string(owner, strcspn(owner, "\n")) + ")" : "";
    if (err == EWOULDBLOCK) {
      return Status(StatusCode::kFailedPrecondition,
                    "data directory " + dir + " is in use by another skiff process" + by);
    }
    return Status(StatusCode::kInternal,
                  "data directory " + dir + ": cannot lock: " + std::strerror(err));
  }
  std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    SKIFF_LOG_WARN("data directory {}: cannot record pid in {}", dir, kLockFile);
  }
  return fd;
}

}  // namespace

Result<std::unique_ptr<Store>> open_embedded_store(EmbeddedStoreOptions options) {
  const std::string& dir = options.data_dir;
  if (dir.empty()) return Status(StatusCode::kInvalidArgument, "empty data directory");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!std::filesystem::is_directory(dir)) {
    return Status(StatusCode::kFailedPrecondition, "data directory " + dir +
                                                       " cannot be created or is not a directory" +
                                                       (ec ? ": " + ec.message() : std::string()));
  }
  SKIFF_ASSIGN_OR_RETURN(int lock_fd, lock_data_dir(dir));
  auto log = std::make_unique<SqliteLog>(dir, lock_fd);
  RecoveredState state;
  SKIFF_RETURN_IF_ERROR(log->open(&state));
  MemoryStoreOptions engine;
  engine.limits = options.limits;
  engine.compaction_window = options.compaction_window;
  return new_memory_store(std::move(engine), std::move(log), std::move(state));
}

}  // namespace skiff::storage
