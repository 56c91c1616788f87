// SPDX-License-Identifier: Apache-2.0
#pragma once
// A real redis-server child process on a free port in its own temporary directory, for the
// Redis client and Redis store tests (integration label: they use sockets and processes).
#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace tollgate::testing {

using namespace std::chrono_literals;

inline std::uint16_t free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (s >= 0) ::close(s);
    return 0;
  }
  ::close(s);
  return ntohs(a.sin_port);
}

/// A redis-server child process on a fixed port in its own temporary directory.
class redis_server {
 public:
  explicit redis_server(std::vector<std::string> extra = {}) : extra_(std::move(extra)), port_(free_port()) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tollgate-redis-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) dir_ = tmpl;
  }
  ~redis_server() {
    kill();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  std::uint16_t port() const { return port_; }
  std::string unix_path() const { return dir_ + "/redis.sock"; }

  /// Starts (or restarts, on the same port) and waits until it answers PING.
  bool start() {
    if (pid_ > 0 || dir_.empty() || port_ == 0) return false;
    std::vector<std::string> args{"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", dir_,
                                  "--unixsocket", unix_path(), "--unixsocketperm", "700"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    const std::string log = dir_ + "/redis.log";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    return pid_ > 0 && wait_ready(10s);
  }

  /// SIGSTOP: the server keeps its connections and reads nothing until resume(); what clients
  /// send meanwhile waits in its sockets and runs at resume().
  void pause() {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  void resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }

  /// SIGKILL, no shutdown: clients see the connection drop.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  bool wait_ready(std::chrono::milliseconds limit) const {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      timeval tv{0, 200000};
      redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
      if (c != nullptr && c->err == 0) {
        auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
        const bool answered = r != nullptr;  // +PONG, or -NOAUTH with requirepass: it answers
        if (r != nullptr) freeReplyObject(r);
        redisFree(c);
        if (answered) return true;
      } else if (c != nullptr) {
        redisFree(c);
      }
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  std::vector<std::string> extra_;
  std::uint16_t port_;
  std::string dir_;
  pid_t pid_ = -1;
};

}  // namespace tollgate::testing
