// JobStore on SQLite: the schema, its versioning, and one transaction per call. All SQLite errors
// become absl::Status in SqliteStatus() below and nowhere else. No job logic lives here (states,
// epochs and accounting are the Coordinator's); this file only stores and loads what it is given.
#include "coordinator/job_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace dsv3::coordinator {
namespace {

constexpr char kDbFileName[] = "state.db";
constexpr int kBusyTimeoutMs = 5000;

// Schema version 1. `meta` holds schema_version (integer), coordinator_id (text) and
// next_job_number (integer, the N of the next "job-N").
constexpr const char* kSchemaV1[] = {
    R"sql(CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value NOT NULL))sql",
    R"sql(CREATE TABLE jobs (
            number          INTEGER PRIMARY KEY,   -- the N of "job-N"
            job_id          TEXT NOT NULL UNIQUE,
            name            TEXT NOT NULL,
            state           TEXT NOT NULL,         -- dsv3.v1.JobState name, e.g. "RUNNING"
            created_unix_ms INTEGER NOT NULL,
            updated_unix_ms INTEGER NOT NULL,
            status          BLOB NOT NULL          -- dsv3.v1.JobStatus, events cleared
          ))sql",
    R"sql(CREATE TABLE job_events (
            seq          INTEGER PRIMARY KEY,      -- write order, across all jobs
            job_id       TEXT NOT NULL REFERENCES jobs (job_id),
            time_unix_ms INTEGER NOT NULL,
            epoch        INTEGER NOT NULL,
            kind         TEXT NOT NULL,
            message      TEXT NOT NULL))sql",
    "CREATE INDEX job_events_by_job ON job_events (job_id, seq)",
    R"sql(CREATE TABLE workers (
            name      TEXT PRIMARY KEY,
            worker_id TEXT NOT NULL,
            state     TEXT NOT NULL,
            info      BLOB NOT NULL                -- dsv3.v1.WorkerInfo
          ))sql",
};

// The file:line of a call, taken as a default argument so that it is the caller's. (The builtins
// work in GCC and Clang; std::source_location does not in Clang 14 with libstdc++.)
struct CallSite {
  static CallSite Here(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return {file, line};
  }
  const char* file;
  int line;
};

absl::StatusCode CodeFor(int rc) {
  switch (rc & 0xff) {  // the primary code of an extended one
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::StatusCode::kDataLoss;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::StatusCode::kUnavailable;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return absl::StatusCode::kInternal;
  }
}

// The one conversion from an SQLite result code to absl::Status. `doing` says what failed (an SQL
// text is shortened); the message also carries the database path, the code, sqlite3_errmsg and the
// caller's file:line.
absl::Status SqliteStatus(sqlite3* db, int rc, absl::string_view doing,
                          CallSite where = CallSite::Here()) {
  const char* path = db != nullptr ? sqlite3_db_filename(db, "main") : nullptr;
  const absl::string_view generic = sqlite3_errstr(rc);
  const absl::string_view specific = db != nullptr ? sqlite3_errmsg(db) : generic;
  absl::string_view file = where.file;
  file.remove_prefix(std::min(file.size(), file.rfind('/') + 1));
  constexpr size_t kMaxDoing = 100;
  std::string short_doing(doing.substr(0, kMaxDoing));
  if (doing.size() > kMaxDoing) {
    short_doing += "...";
  }
  const bool has_path = path != nullptr && *path != '\0';  // not before the file is open
  return absl::Status(
      CodeFor(rc),
      absl::StrFormat("%s%s: sqlite error %d (%s)%s [%s:%d]",
                      has_path ? absl::StrCat(path, ": ") : "", short_doing, rc, generic,
                      specific == generic ? "" : absl::StrCat(": ", specific), file, where.line));
}

// Runs SQL that has no values in it (pragmas, schema, transaction control).
absl::Status Exec(sqlite3* db, const char* sql, CallSite where = CallSite::Here()) {
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) {
    return SqliteStatus(db, rc, sql, where);
  }
  return absl::OkStatus();
}

// One prepared statement, finalized on destruction. Bind errors are kept and reported by the next
// Step, so call sites bind without checking each time.
class Statement {
 public:
  static absl::StatusOr<Statement> Prepare(sqlite3* db, const char* sql,
                                           CallSite where = CallSite::Here()) {
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return SqliteStatus(db, rc, sql, where);
    }
    return Statement(db, stmt);
  }

  // Parameters are numbered from 1, as in SQL ("?1").
  void BindInt(int index, int64_t value) { Check(sqlite3_bind_int64(stmt_.get(), index, value)); }
  void BindText(int index, absl::string_view text) {
    Check(sqlite3_bind_text64(stmt_.get(), index, text.data(), text.size(), SQLITE_TRANSIENT,
                              SQLITE_UTF8));
  }
  void BindBlob(int index, absl::string_view bytes) {
    Check(sqlite3_bind_blob64(stmt_.get(), index, bytes.data(), bytes.size(), SQLITE_TRANSIENT));
  }

  // Advances one row: true when a row is ready to read, false when the statement is done.
  absl::StatusOr<bool> Step(CallSite where = CallSite::Here()) {
    if (bind_rc_ != SQLITE_OK) {
      return SqliteStatus(db_, bind_rc_, Sql(), where);
    }
    const int rc = sqlite3_step(stmt_.get());
    if (rc == SQLITE_ROW) {
      return true;
    }
    if (rc == SQLITE_DONE) {
      return false;
    }
    return SqliteStatus(db_, rc, Sql(), where);
  }

  // Runs a statement that returns no rows.
  absl::Status Run(CallSite where = CallSite::Here()) {
    ASSIGN_OR_RETURN(const bool row, Step(where));
    if (row) {
      return absl::InternalError(absl::StrCat("unexpected row from: ", Sql()));
    }
    return absl::OkStatus();
  }

  // Columns are numbered from 0.
  int64_t Int(int column) { return sqlite3_column_int64(stmt_.get(), column); }
  bool IsInt(int column) { return sqlite3_column_type(stmt_.get(), column) == SQLITE_INTEGER; }
  std::string Text(int column) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_.get(), column));
    return std::string(text != nullptr ? text : "",
                       static_cast<size_t>(sqlite3_column_bytes(stmt_.get(), column)));
  }
  std::string Blob(int column) {
    const auto* bytes = static_cast<const char*>(sqlite3_column_blob(stmt_.get(), column));
    return std::string(bytes != nullptr ? bytes : "",
                       static_cast<size_t>(sqlite3_column_bytes(stmt_.get(), column)));
  }

 private:
  struct Finalizer {
    void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
  };

  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  void Check(int rc) {
    if (bind_rc_ == SQLITE_OK) {
      bind_rc_ = rc;
    }
  }
  const char* Sql() const { return sqlite3_sql(stmt_.get()); }

  sqlite3* db_;
  std::unique_ptr<sqlite3_stmt, Finalizer> stmt_;
  int bind_rc_ = SQLITE_OK;
};

// A write transaction (BEGIN IMMEDIATE: takes the write lock at once). Rolled back on destruction
// unless committed.
class Transaction {
 public:
  static absl::StatusOr<Transaction> Begin(sqlite3* db, CallSite where = CallSite::Here()) {
    RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE", where));
    return Transaction(db);
  }
  Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction() {
    // A failed COMMIT may leave the transaction open; some errors end it already.
    if (db_ != nullptr && sqlite3_get_autocommit(db_) == 0) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }

  absl::Status Commit(CallSite where = CallSite::Here()) {
    RETURN_IF_ERROR(Exec(db_, "COMMIT", where));
    db_ = nullptr;
    return absl::OkStatus();
  }

 private:
  explicit Transaction(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

absl::Status InsertEvent(sqlite3* db, const std::string& job_id, const v1::JobEvent& event) {
  ASSIGN_OR_RETURN(Statement insert,
                   Statement::Prepare(db,
                                      "INSERT INTO job_events (job_id, time_unix_ms, epoch, kind, "
                                      "message) VALUES (?1, ?2, ?3, ?4, ?5)"));
  insert.BindText(1, job_id);
  insert.BindInt(2, event.time_unix_ms());
  insert.BindInt(3, event.epoch());
  insert.BindText(4, event.kind());
  insert.BindText(5, event.message());
  return insert.Run();
}

// `job` serialized with its events left out (they live in job_events).
std::string StatusBlob(const v1::JobStatus& job) {
  v1::JobStatus copy = job;
  copy.clear_events();
  return copy.SerializeAsString();
}

// Reads an integer from meta. DATA_LOSS if the key is missing or not an integer.
absl::StatusOr<int64_t> MetaInt(sqlite3* db, const char* key) {
  ASSIGN_OR_RETURN(Statement select,
                   Statement::Prepare(db, "SELECT value FROM meta WHERE key = ?1"));
  select.BindText(1, key);
  ASSIGN_OR_RETURN(const bool row, select.Step());
  if (!row || !select.IsInt(0)) {
    return absl::DataLossError(absl::StrFormat("%s: meta.%s is missing or not an integer",
                                               sqlite3_db_filename(db, "main"), key));
  }
  return select.Int(0);
}

// Creates the schema in an empty database, or checks the version of an existing one, and returns
// the coordinator id. Runs inside the caller's transaction.
absl::StatusOr<std::string> InitSchema(sqlite3* db, const std::string& path) {
  ASSIGN_OR_RETURN(Statement tables,
                   Statement::Prepare(db,
                                      "SELECT count(*), count(*) FILTER (WHERE name = "
                                      "'meta') FROM sqlite_schema WHERE type = 'table'"));
  ASSIGN_OR_RETURN(const bool row, tables.Step());
  if (!row) {
    return absl::InternalError("SELECT count(*) returned no row");
  }
  const int64_t table_count = tables.Int(0);
  const bool has_meta = tables.Int(1) > 0;

  if (!has_meta && table_count > 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s is an SQLite database but not a dsv3 coordinator state (it has no meta table)", path));
  }
  if (!has_meta) {
    for (const char* sql : kSchemaV1) {
      RETURN_IF_ERROR(Exec(db, sql));
    }
    ASSIGN_OR_RETURN(Statement insert,
                     Statement::Prepare(db,
                                        "INSERT INTO meta (key, value) VALUES "
                                        "('schema_version', ?1), ('next_job_number', 1), "
                                        "('coordinator_id', lower(hex(randomblob(8))))"));
    insert.BindInt(1, JobStore::kSchemaVersion);
    RETURN_IF_ERROR(insert.Run());
  }

  ASSIGN_OR_RETURN(const int64_t version, MetaInt(db, "schema_version"));
  if (version > JobStore::kSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s has schema version %d, this coordinator understands up to %d", path,
                        version, JobStore::kSchemaVersion));
  }
  if (version < 1) {
    return absl::DataLossError(absl::StrFormat("%s has schema version %d", path, version));
  }

  ASSIGN_OR_RETURN(Statement select,
                   Statement::Prepare(db, "SELECT value FROM meta WHERE key = 'coordinator_id'"));
  ASSIGN_OR_RETURN(const bool has_id, select.Step());
  if (!has_id || select.Text(0).empty()) {
    return absl::DataLossError(absl::StrFormat("%s: meta.coordinator_id is missing", path));
  }
  return select.Text(0);
}

// Switches to write-ahead logging and returns the journal mode now in effect ("wal" on success).
absl::StatusOr<std::string> SetJournalModeWal(sqlite3* db) {
  ASSIGN_OR_RETURN(Statement pragma, Statement::Prepare(db, "PRAGMA journal_mode = WAL"));
  ASSIGN_OR_RETURN(const bool row, pragma.Step());
  if (!row) {
    return absl::InternalError("PRAGMA journal_mode returned no row");
  }
  return pragma.Text(0);
}

struct Closer {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& state_dir) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot create state_dir %s: %s", state_dir, ec.message()));
  }
  const std::string path = (std::filesystem::path(state_dir) / kDbFileName).string();

  sqlite3* raw_db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  std::unique_ptr<sqlite3, Closer> db(raw_db);
  if (rc != SQLITE_OK) {
    const absl::Status status = SqliteStatus(db.get(), rc, "sqlite3_open_v2");
    return absl::Status(status.code(),
                        absl::StrFormat("cannot open %s: %s", path, status.message()));
  }
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);

  // The first statement reads the file header, so this is where a non-SQLite file shows.
  absl::StatusOr<std::string> journal_mode = SetJournalModeWal(db.get());
  if (absl::IsDataLoss(journal_mode.status())) {
    return absl::DataLossError(absl::StrFormat(
        "%s is not a readable SQLite database (corrupt, or not a dsv3 state.db): %s", path,
        journal_mode.status().message()));
  }
  if (!journal_mode.ok()) {
    return journal_mode.status();
  }
  if (*journal_mode != "wal") {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: cannot use write-ahead logging (journal_mode stays %s)", path, *journal_mode));
  }
  RETURN_IF_ERROR(Exec(db.get(), "PRAGMA synchronous = FULL"));
  RETURN_IF_ERROR(Exec(db.get(), "PRAGMA foreign_keys = ON"));

  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db.get()));
  ASSIGN_OR_RETURN(std::string coordinator_id, InitSchema(db.get(), path));
  RETURN_IF_ERROR(txn.Commit());

  return std::unique_ptr<JobStore>(new JobStore(db.release(), path, std::move(coordinator_id)));
}

JobStore::JobStore(sqlite3* db, std::string path, std::string coordinator_id)
    : db_(db), path_(std::move(path)), coordinator_id_(std::move(coordinator_id)) {}

JobStore::~JobStore() { sqlite3_close_v2(db_); }

absl::StatusOr<std::string> JobStore::CreateJob(v1::JobStatus job,
                                                const v1::JobEvent& submitted_event) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db_));

  ASSIGN_OR_RETURN(Statement next, Statement::Prepare(db_,
                                                      "UPDATE meta SET value = value + 1 "
                                                      "WHERE key = 'next_job_number' "
                                                      "RETURNING value - 1"));
  ASSIGN_OR_RETURN(const bool row, next.Step());
  if (!row) {
    return absl::DataLossError(absl::StrFormat("%s: meta.next_job_number is missing", path_));
  }
  const int64_t number = next.Int(0);
  RETURN_IF_ERROR(next.Run());  // finish the statement so its write is complete
  const std::string job_id = absl::StrCat("job-", number);
  job.set_job_id(job_id);

  ASSIGN_OR_RETURN(Statement insert,
                   Statement::Prepare(db_,
                                      "INSERT INTO jobs (number, job_id, name, state, "
                                      "created_unix_ms, updated_unix_ms, status) "
                                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
  insert.BindInt(1, number);
  insert.BindText(2, job_id);
  insert.BindText(3, job.name());
  insert.BindText(4, v1::JobState_Name(job.state()));
  insert.BindInt(5, job.created_unix_ms());
  insert.BindInt(6, job.updated_unix_ms());
  insert.BindBlob(7, StatusBlob(job));
  RETURN_IF_ERROR(insert.Run());
  RETURN_IF_ERROR(InsertEvent(db_, job_id, submitted_event));

  RETURN_IF_ERROR(txn.Commit());
  return job_id;
}

absl::Status JobStore::UpdateJob(const v1::JobStatus& job,
                                 const std::vector<v1::JobEvent>& new_events) {
  const std::string blob = StatusBlob(job);
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db_));

  ASSIGN_OR_RETURN(Statement update, Statement::Prepare(db_,
                                                        "UPDATE jobs SET name = ?2, state = ?3, "
                                                        "updated_unix_ms = ?4, status = ?5 "
                                                        "WHERE job_id = ?1"));
  update.BindText(1, job.job_id());
  update.BindText(2, job.name());
  update.BindText(3, v1::JobState_Name(job.state()));
  update.BindInt(4, job.updated_unix_ms());
  update.BindBlob(5, blob);
  RETURN_IF_ERROR(update.Run());
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(absl::StrFormat("no job '%s' in %s", job.job_id(), path_));
  }
  for (const v1::JobEvent& event : new_events) {
    RETURN_IF_ERROR(InsertEvent(db_, job.job_id(), event));
  }
  return txn.Commit();
}

absl::StatusOr<std::vector<v1::JobStatus>> JobStore::LoadJobs() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement select,
                   Statement::Prepare(db_, "SELECT job_id, status FROM jobs ORDER BY number"));
  std::vector<v1::JobStatus> jobs;
  while (true) {
    ASSIGN_OR_RETURN(const bool row, select.Step());
    if (!row) {
      break;
    }
    v1::JobStatus& job = jobs.emplace_back();
    const std::string job_id = select.Text(0);
    if (!job.ParseFromString(select.Blob(1))) {
      return absl::DataLossError(
          absl::StrFormat("%s: the stored status of %s cannot be parsed", path_, job_id));
    }
    job.set_job_id(job_id);
    job.clear_events();
  }
  return jobs;
}

absl::StatusOr<std::vector<v1::JobEvent>> JobStore::Events(const std::string& job_id, int limit) {
  if (limit < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("event limit %d is negative", limit));
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement exists,
                   Statement::Prepare(db_, "SELECT 1 FROM jobs WHERE job_id = ?1"));
  exists.BindText(1, job_id);
  ASSIGN_OR_RETURN(const bool found, exists.Step());
  if (!found) {
    return absl::NotFoundError(absl::StrFormat("no job '%s' in %s", job_id, path_));
  }

  ASSIGN_OR_RETURN(Statement select,
                   Statement::Prepare(db_,
                                      "SELECT time_unix_ms, epoch, kind, message FROM job_events "
                                      "WHERE job_id = ?1 ORDER BY seq DESC LIMIT ?2"));
  select.BindText(1, job_id);
  select.BindInt(2, limit);
  std::vector<v1::JobEvent> events;
  while (true) {
    ASSIGN_OR_RETURN(const bool row, select.Step());
    if (!row) {
      break;
    }
    v1::JobEvent& event = events.emplace_back();
    event.set_time_unix_ms(select.Int(0));
    event.set_epoch(select.Int(1));
    event.set_kind(select.Text(2));
    event.set_message(select.Text(3));
  }
  std::reverse(events.begin(), events.end());
  return events;
}

absl::Status JobStore::PutWorker(const v1::WorkerInfo& worker) {
  if (worker.name().empty()) {
    return absl::InvalidArgumentError("worker name is empty");
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement upsert,
                   Statement::Prepare(db_,
                                      "INSERT INTO workers (name, worker_id, state, info) "
                                      "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO UPDATE SET "
                                      "worker_id = excluded.worker_id, state = excluded.state, "
                                      "info = excluded.info"));
  upsert.BindText(1, worker.name());
  upsert.BindText(2, worker.worker_id());
  upsert.BindText(3, worker.state());
  upsert.BindBlob(4, worker.SerializeAsString());
  return upsert.Run();  // one statement: its own transaction
}

absl::StatusOr<std::vector<v1::WorkerInfo>> JobStore::LoadWorkers() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement select,
                   Statement::Prepare(db_, "SELECT name, info FROM workers ORDER BY rowid"));
  std::vector<v1::WorkerInfo> workers;
  while (true) {
    ASSIGN_OR_RETURN(const bool row, select.Step());
    if (!row) {
      break;
    }
    if (!workers.emplace_back().ParseFromString(select.Blob(1))) {
      return absl::DataLossError(
          absl::StrFormat("%s: the stored worker '%s' cannot be parsed", path_, select.Text(0)));
    }
  }
  return workers;
}

}  // namespace dsv3::coordinator
