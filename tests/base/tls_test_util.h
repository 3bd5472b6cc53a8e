#pragma once

// Test helpers for the PKI/kubeconfig/authn tests: a scratch directory, child processes managed
// by PID (killed and reaped on destruction), a free loopback port and an `openssl s_server`
// running on one. Header-only so the tests need only skiff_base.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace skiff::tlstest {

struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

inline X509Ptr load_pem(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return X509Ptr(cert);
}

class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/skiff-pki-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr) std::abort();
    path_ = buf.data();
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

inline bool have_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (access((dir + "/" + name).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// A child process started with fork/execvp, stdout+stderr to `log_path`, stdin from /dev/null.
// Killed (SIGKILL, by PID) and reaped when destroyed if still running.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log_path) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      FILE* in = std::freopen("/dev/null", "r", stdin);
      FILE* out = std::freopen(log_path.c_str(), "w", stdout);
      (void)in;
      (void)out;
      dup2(STDOUT_FILENO, STDERR_FILENO);
      execvp(args[0], args.data());
      _exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  // Waits up to `timeout` for exit; returns the exit code, or -1 after killing it on timeout.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      int status = 0;
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        reaped_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        reaped_ = true;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  bool running() {
    if (reaped_) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) reaped_ = true;
    return !reaped_;
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
};

// Runs a command to completion; returns the exit code and fills `output` (stdout+stderr).
inline int run(const std::vector<std::string>& argv, const std::string& log_path,
               std::string* output) {
  int code;
  {
    Child child(argv, log_path);
    code = child.wait();
  }
  *output = slurp(log_path);
  return code;
}

inline int free_loopback_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  if (rc == 0) rc = getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return rc == 0 ? ntohs(addr.sin_port) : -1;
}

inline bool port_accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

// `openssl s_server -www` on 127.0.0.1 with the given serving pair; when `client_ca` is set it
// demands a client certificate signed by it (-Verify). Retries on a port race.
class OpensslServer {
 public:
  OpensslServer(const std::string& cert, const std::string& key, const std::string& client_ca,
                const std::string& log_path) {
    for (int attempt = 0; attempt < 5 && !child_; ++attempt) {
      port_ = free_loopback_port();
      std::vector<std::string> argv = {
          "openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port_), "-cert", cert,
          "-key",    key,        "-www"};
      if (!client_ca.empty()) {
        argv.insert(argv.end(), {"-CAfile", client_ca, "-Verify", "2", "-verify_return_error"});
      }
      auto child = std::make_unique<Child>(argv, log_path);
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (std::chrono::steady_clock::now() < deadline && child->running()) {
        if (port_accepts(port_)) {
          child_ = std::move(child);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
  bool ok() const { return child_ != nullptr; }
  int port() const { return port_; }

 private:
  int port_ = -1;
  std::unique_ptr<Child> child_;
};

}  // namespace skiff::tlstest
