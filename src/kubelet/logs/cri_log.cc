#include "kubelet/logs/cri_log.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

namespace skiff::kubelet::logs {
namespace {

constexpr size_t kReadBlock = 64 * 1024;

bool digits(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

size_t stream_index(LogStream s) {
  return s == LogStream::kStdout ? 0 : 1;
}

bool selected(StreamSelection selection, LogStream s) {
  switch (selection) {
    case StreamSelection::kAll:
      return true;
    case StreamSelection::kStdout:
      return s == LogStream::kStdout;
    case StreamSelection::kStderr:
      return s == LogStream::kStderr;
  }
  return true;
}

// A file descriptor closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.fd_;
      other.fd_ = -1;
    }
    return *this;
  }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

Status errno_status(const std::string& what, const std::string& path) {
  int err = errno;
  return Status(err == ENOENT ? StatusCode::kNotFound : StatusCode::kInternal,
                what + " " + path + ": " + std::strerror(err));
}

// Turns records into output: joins partial records per stream, applies the since and stream
// filters, the timestamp prefix and the byte limit, and batches output for the writer.
class Renderer {
 public:
  Renderer(const LogOptions& options, const ChunkWriter& write)
      : options_(options), write_(write) {}

  // False once no more output is wanted (limit reached, writer said stop).
  bool open() const { return !stopped_; }

  void line(std::string_view text) {
    if (stopped_) return;
    std::optional<CriRecord> r = parse_cri_record(text);
    if (!r || !selected(options_.stream, r->stream)) return;
    Pending& p = pending_[stream_index(r->stream)];
    if (!p.active) {
      // The first record of a line decides about the whole line.
      p.active = true;
      p.skip = options_.since_ns && r->timestamp_ns < *options_.since_ns;
      p.continuation = false;
      p.timestamp = options_.timestamps ? rfc3339_nano(r->timestamp) : std::string();
      p.text.clear();
    }
    if (!p.skip) p.text.append(r->content);
    if (!r->partial) {
      if (!p.skip) {
        p.text.push_back('\n');
        emit_pending(p);
      }
      p.active = false;
    } else if (!p.skip && p.text.size() >= kMaxPendingLine) {
      emit_pending(p);  // a very long line goes out in pieces
      p.continuation = true;
    }
  }

  // At the end of reading without follow: lines still waiting for their final record go out
  // as they are.
  void finish_partial_lines() {
    for (Pending& p : pending_) {
      if (p.active && !p.skip) emit_pending(p);
      p.active = false;
    }
  }

  // Hands the batched output to the writer.
  void flush() {
    if (out_.empty()) return;
    if (!write_(out_)) stopped_ = true;
    out_.clear();
  }

 private:
  struct Pending {
    bool active = false;        // a line has started and not ended
    bool skip = false;          // it is older than since
    bool continuation = false;  // part of it was written already (no second timestamp)
    std::string timestamp;
    std::string text;
  };

  void emit_pending(Pending& p) {
    if (!p.continuation && options_.timestamps) {
      emit(p.timestamp);
      emit(" ");
    }
    emit(p.text);
    p.text.clear();
  }

  void emit(std::string_view data) {
    if (stopped_) return;
    if (options_.limit_bytes) {
      int64_t room = *options_.limit_bytes - written_;
      if (static_cast<int64_t>(data.size()) >= room) {
        out_.append(data.substr(0, static_cast<size_t>(std::max<int64_t>(room, 0))));
        written_ += room;
        flush();
        stopped_ = true;
        return;
      }
    }
    out_.append(data);
    written_ += static_cast<int64_t>(data.size());
    if (out_.size() >= kReadBlock) flush();
  }

  const LogOptions& options_;
  const ChunkWriter& write_;
  std::array<Pending, 2> pending_;
  std::string out_;
  int64_t written_ = 0;
  bool stopped_ = false;
};

// Where reading starts so that `lines` lines (of the selected streams) remain: right after the
// end of the (lines+1)-th line from the end; 0 when the file has no more lines than that.
Result<int64_t> tail_offset(int fd, int64_t size, int64_t lines, StreamSelection selection) {
  std::array<bool, 2> seen_stream = {false, false};
  int64_t ends = 0;
  int64_t pos = size;  // the file before pos is still to be scanned
  std::string carry;   // the start of a line whose beginning lies before pos
  std::vector<char> block(kReadBlock);
  // Counts one line (scanning backwards); true when it is the (lines+1)-th line end.
  auto count = [&](std::string_view line) -> bool {
    std::optional<CriRecord> r = parse_cri_record(line);
    if (!r || !selected(selection, r->stream)) return false;
    size_t i = stream_index(r->stream);
    bool last_of_stream = !seen_stream[i];
    seen_stream[i] = true;
    if (r->partial && !last_of_stream) return false;
    return ++ends == lines + 1;
  };
  while (pos > 0) {
    int64_t n = std::min<int64_t>(pos, static_cast<int64_t>(block.size()));
    pos -= n;
    ssize_t got = ::pread(fd, block.data(), static_cast<size_t>(n), pos);
    if (got != n) return Status(StatusCode::kInternal, "short read while seeking the log's tail");
    // Lines in this block, last first. `carry` holds the bytes after the block's last '\n'
    // that belong to a line continuing into the previous blocks' data.
    std::string_view data(block.data(), static_cast<size_t>(n));
    size_t line_end = data.size();  // exclusive, within data
    std::string tail_part = std::move(carry);
    carry.clear();
    while (true) {
      size_t nl = line_end == 0 ? std::string_view::npos : data.rfind('\n', line_end - 1);
      if (nl == std::string_view::npos) {
        // The line continues before this block.
        carry = std::string(data.substr(0, line_end)) + tail_part;
        break;
      }
      std::string line = std::string(data.substr(nl + 1, line_end - nl - 1)) + tail_part;
      tail_part.clear();
      int64_t end_offset = pos + static_cast<int64_t>(nl) + 1 + static_cast<int64_t>(line.size());
      // The line's own '\n' follows it, except for an unterminated last line of the file.
      if (end_offset < size) ++end_offset;
      if (!line.empty() && count(line)) return end_offset;
      line_end = nl;
    }
  }
  // The file's first line.
  if (!carry.empty()) {
    int64_t end_offset = static_cast<int64_t>(carry.size());
    if (end_offset < size) ++end_offset;
    if (count(carry)) return end_offset;
  }
  return int64_t{0};
}

// Watches one file for changes (inotify), so a follower wakes as soon as it grows.
class FileWatch {
 public:
  FileWatch() : fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {}
  void watch(const std::string& path) {
    if (fd_.get() < 0) return;
    if (wd_ >= 0) ::inotify_rm_watch(fd_.get(), wd_);
    wd_ = ::inotify_add_watch(fd_.get(), path.c_str(),
                              IN_MODIFY | IN_MOVE_SELF | IN_DELETE_SELF | IN_ATTRIB);
  }
  // Waits for a change, up to `timeout`.
  void wait(std::chrono::milliseconds timeout) {
    if (fd_.get() < 0 || wd_ < 0) {
      std::this_thread::sleep_for(timeout);
      return;
    }
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) > 0) {
      alignas(inotify_event) char buf[4096];
      while (::read(fd_.get(), buf, sizeof(buf)) > 0) {
      }
    }
  }

 private:
  Fd fd_;
  int wd_ = -1;
};

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

}  // namespace

std::optional<CriRecord> parse_cri_record(std::string_view line) {
  CriRecord r;
  size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return std::nullopt;
  r.timestamp = line.substr(0, sp);
  std::optional<int64_t> ns = parse_rfc3339_nanos(r.timestamp);
  if (!ns) return std::nullopt;
  r.timestamp_ns = *ns;
  std::string_view rest = line.substr(sp + 1);
  if (rest.starts_with("stdout ")) {
    r.stream = LogStream::kStdout;
  } else if (rest.starts_with("stderr ")) {
    r.stream = LogStream::kStderr;
  } else {
    return std::nullopt;
  }
  rest.remove_prefix(7);
  // The tag: F or P, possibly followed by ':'-separated flags of later CRI versions.
  size_t tag_end = rest.find(' ');
  std::string_view tag = rest.substr(0, tag_end);
  size_t colon = tag.find(':');
  std::string_view first = tag.substr(0, colon);
  if (first == "F") {
    r.partial = false;
  } else if (first == "P") {
    r.partial = true;
  } else {
    return std::nullopt;
  }
  r.content = tag_end == std::string_view::npos ? std::string_view() : rest.substr(tag_end + 1);
  return r;
}

std::optional<int64_t> parse_rfc3339_nanos(std::string_view s) {
  int year, month, day, hour, minute, second;
  if (!digits(s, 0, 4, &year) || s.size() < 20 || s[4] != '-' || !digits(s, 5, 2, &month) ||
      s[7] != '-' || !digits(s, 8, 2, &day) || (s[10] != 'T' && s[10] != 't') ||
      !digits(s, 11, 2, &hour) || s[13] != ':' || !digits(s, 14, 2, &minute) || s[16] != ':' ||
      !digits(s, 17, 2, &second)) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return std::nullopt;
  }
  size_t pos = 19;
  int64_t frac = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int n = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (n < 9) {
        frac = frac * 10 + (s[pos] - '0');
        ++n;
      }
      ++pos;
    }
    if (n == 0) return std::nullopt;
    for (; n < 9; ++n) frac *= 10;
  }
  if (pos >= s.size()) return std::nullopt;
  int64_t offset_seconds = 0;
  if (s[pos] == 'Z' || s[pos] == 'z') {
    ++pos;
  } else if (s[pos] == '+' || s[pos] == '-') {
    int oh, om;
    if (!digits(s, pos + 1, 2, &oh) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
        !digits(s, pos + 4, 2, &om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset_seconds = (oh * 3600 + om * 60) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  int64_t days = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  int64_t seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_seconds;
  return seconds * 1'000'000'000 + frac;
}

std::string rfc3339_nano(std::string_view timestamp) {
  size_t dot = timestamp.find('.');
  if (dot == std::string_view::npos) return std::string(timestamp);
  size_t end = dot + 1;
  while (end < timestamp.size() && timestamp[end] >= '0' && timestamp[end] <= '9') ++end;
  size_t last = end;
  while (last > dot + 1 && timestamp[last - 1] == '0') --last;
  std::string out(timestamp.substr(0, last == dot + 1 ? dot : last));
  out.append(timestamp.substr(end));
  return out;
}

Status read_container_log(const std::string& path, const LogOptions& options,
                          const ChunkWriter& write, const FollowControl& follow) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return errno_status("failed to open log file", path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_status("failed to stat log file", path);

  int64_t offset = 0;
  if (options.tail_lines) {
    Result<int64_t> start = tail_offset(fd.get(), st.st_size,
                                        std::max<int64_t>(*options.tail_lines, 0), options.stream);
    if (!start.is_ok()) return start.status();
    offset = *start;
  }

  Renderer renderer(options, write);
  FileWatch watch;
  if (options.follow) watch.watch(path);
  std::string carry;  // a line read without its '\n' yet
  std::vector<char> block(kReadBlock);
  auto cancelled = [&] { return follow.cancelled && follow.cancelled(); };

  // Reads what the file holds past `offset`; false on a read error.
  auto drain = [&]() -> bool {
    while (renderer.open()) {
      ssize_t n = ::pread(fd.get(), block.data(), block.size(), offset);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      if (n == 0) break;
      offset += n;
      std::string_view data(block.data(), static_cast<size_t>(n));
      while (!data.empty() && renderer.open()) {
        size_t nl = data.find('\n');
        if (nl == std::string_view::npos) {
          carry.append(data);
          break;
        }
        if (carry.empty()) {
          renderer.line(data.substr(0, nl));
        } else {
          carry.append(data.substr(0, nl));
          renderer.line(carry);
          carry.clear();
        }
        data.remove_prefix(nl + 1);
      }
      renderer.flush();
      if (cancelled()) return true;
    }
    return true;
  };
  auto read_error = [&] {
    return Status(StatusCode::kInternal,
                  "failed to read log file " + path + ": " + std::strerror(errno));
  };

  if (!drain()) return read_error();
  if (!options.follow) {
    if (!carry.empty()) renderer.line(carry);  // an unterminated last record
    renderer.finish_partial_lines();
    renderer.flush();
    return Status::ok();
  }

  while (renderer.open() && !cancelled()) {
    bool done = follow.source_done && follow.source_done();
    if (!drain()) return read_error();
    if (done || !renderer.open() || cancelled()) break;
    // Rotated away or removed? Finish this file, then continue with the new one.
    struct stat now {};
    if (::stat(path.c_str(), &now) != 0 || !same_file(now, st)) {
      if (!drain()) return read_error();
      auto deadline = std::chrono::steady_clock::now() + follow.reopen_grace;
      Fd next;
      while (!cancelled()) {
        next = Fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (next.get() >= 0 || std::chrono::steady_clock::now() >= deadline) break;
        std::this_thread::sleep_for(std::min(follow.poll_interval, std::chrono::milliseconds(50)));
      }
      if (next.get() < 0 || ::fstat(next.get(), &st) != 0) break;
      fd = std::move(next);
      offset = 0;
      carry.clear();
      watch.watch(path);
      continue;
    }
    watch.wait(follow.poll_interval);
  }
  if (!cancelled()) {
    // Nothing more will come: what is left of a line goes out as it is.
    if (!carry.empty()) renderer.line(carry);
    renderer.finish_partial_lines();
  }
  renderer.flush();
  return Status::ok();
}

}  // namespace skiff::kubelet::logs
