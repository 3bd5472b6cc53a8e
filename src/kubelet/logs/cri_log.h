#pragma once

// Container logs as the CRI runtime writes them, one record per line:
//   <RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>
// (P: a partial line, continued by the stream's next record; F: the record ends the line), and
// their rendering for `kubectl logs`: tail, since, timestamps, limitBytes, stream selection and
// follow.
//
// Rendering joins the partial records of a line and writes whole lines (a line that grows past
// kMaxPendingLine is written in pieces), each prefixed with its first record's timestamp when
// timestamps are asked for. tailLines counts such lines from the end of the file (a trailing
// line still without its final record counts too). Malformed records are skipped.
//
// Thread-safety: the parsing functions are pure. read_container_log() blocks the calling thread
// for as long as it reads (until the end of the file, or while following, until told to stop);
// several calls may run at once on the same file. Its callbacks run on the calling thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace skiff::kubelet::logs {

enum class LogStream : uint8_t { kStdout, kStderr };

struct CriRecord {
  int64_t timestamp_ns = 0;    // since the Unix epoch
  std::string_view timestamp;  // as written
  LogStream stream = LogStream::kStdout;
  bool partial = false;      // tag P
  std::string_view content;  // without the line's newline
};

// Parses one record (a line without its '\n'; a trailing '\r' is kept as content). nullopt when
// the line is not a CRI record.
std::optional<CriRecord> parse_cri_record(std::string_view line);

// RFC 3339 ("2024-05-01T10:00:00Z", "2024-05-01T12:00:00.123456789+02:00"; up to nine fractional
// digits) as nanoseconds since the epoch; nullopt when malformed.
std::optional<int64_t> parse_rfc3339_nanos(std::string_view text);

// An RFC 3339 timestamp as Go's RFC3339Nano layout prints it: the fraction without trailing
// zeros (and without the dot when nothing is left), the zone as written.
std::string rfc3339_nano(std::string_view timestamp);

// Which of the container's streams to show (PodLogOptions.stream).
enum class StreamSelection : uint8_t { kAll, kStdout, kStderr };

struct LogOptions {
  bool follow = false;
  // The last N lines only (0: none, then only what follow adds).
  std::optional<int64_t> tail_lines;
  // Stops after this many bytes of output (timestamps included), possibly within a line.
  std::optional<int64_t> limit_bytes;
  // Lines whose timestamp is earlier are skipped (sinceSeconds/sinceTime, resolved by the caller).
  std::optional<int64_t> since_ns;
  bool timestamps = false;
  StreamSelection stream = StreamSelection::kAll;
};

// Receives rendered output; returns false to stop reading (the client went away).
using ChunkWriter = std::function<bool(std::string_view chunk)>;

// How following ends (LogOptions::follow).
struct FollowControl {
  // Checked between reads: true ends reading at once.
  std::function<bool()> cancelled;
  // True once nothing more will be written (the container exited): the rest of the file is
  // read, then reading ends.
  std::function<bool()> source_done;
  // The longest wait between checks; file changes wake the reader sooner (inotify).
  std::chrono::milliseconds poll_interval{250};
  // After the file was renamed away or removed (rotation), how long to wait for a new file at
  // the path; reading continues with it from its start, or ends when none appears.
  std::chrono::milliseconds reopen_grace{2000};
};

// The largest part of a line held back while waiting for its final record.
inline constexpr size_t kMaxPendingLine = 64 * 1024;

// Renders the log file at `path` into `write`. Returns ok when the file was read to its end
// (without follow), following ended (cancelled, source done, file gone), limit_bytes was
// reached or `write` returned false; kNotFound when the file does not exist, kInternal when it
// cannot be read.
Status read_container_log(const std::string& path, const LogOptions& options,
                          const ChunkWriter& write, const FollowControl& follow = {});

}  // namespace skiff::kubelet::logs
