// Child program of durability_test: opens the embedded store under DATA_DIR and runs THREADS
// writers that put distinct keys "TAG/<thread>/<n>" (value "value-of-<key>") until the process
// is killed. After each acknowledged put it prints "ack <key> <revision>\n" on stdout with one
// write() (lines are shorter than PIPE_BUF, so lines of different threads never interleave).
//
// usage: durability_writer DATA_DIR THREADS TAG

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "storage/embedded/embedded_store.h"

namespace {

void write_line(const std::string& line) {
  ssize_t n;
  do {
    n = ::write(STDOUT_FILENO, line.data(), line.size());
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(line.size())) {
    std::fprintf(stderr, "durability_writer: short write to stdout\n");
    std::_Exit(4);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s DATA_DIR THREADS TAG\n", argv[0]);
    return 2;
  }
  skiff::storage::EmbeddedStoreOptions options;
  options.data_dir = argv[1];
  const int threads = std::atoi(argv[2]);
  const std::string tag = argv[3];
  if (threads <= 0) {
    std::fprintf(stderr, "durability_writer: THREADS must be positive\n");
    return 2;
  }

  auto store = skiff::storage::open_embedded_store(options);
  if (!store.is_ok()) {
    std::fprintf(stderr, "durability_writer: %s\n", store.status().to_string().c_str());
    return 1;
  }
  skiff::storage::Store& s = **store;

  std::vector<std::thread> writers;
  for (int t = 0; t < threads; ++t) {
    writers.emplace_back([&s, &tag, t] {
      for (long n = 0;; ++n) {
        std::string key = tag + "/" + std::to_string(t) + "/" + std::to_string(n);
        auto revision = s.put(key, "value-of-" + key);
        if (!revision.is_ok()) {
          std::fprintf(stderr, "durability_writer: put %s: %s\n", key.c_str(),
                       revision.status().to_string().c_str());
          std::_Exit(3);
        }
        write_line("ack " + key + " " + std::to_string(*revision) + "\n");
      }
    });
  }
  for (auto& w : writers) w.join();
  return 0;
}
