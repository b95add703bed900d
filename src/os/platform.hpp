// Thin wrappers over the Linux calls mproc uses everywhere: fds, EINTR, errors.
// Internal to libmproc; never included by public headers.
#pragma once

#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace mproc::detail {

/// Throws std::system_error(err) whose what() is "<context>: <strerror(err)>".
[[noreturn]] void throw_system_error(int err, std::string_view context);

/// Calls f() again while it fails with EINTR. f returns -1 and sets errno on failure,
/// as system calls do. Never use it for close(): see close(2), "Dealing with error returns".
template <class F>
auto retry_eintr(F&& f) {
  for (;;) {
    auto r = f();
    if (!(r == -1 && errno == EINTR)) return r;
  }
}

/// Owns a file descriptor; closes it once.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

/// The demangled type of the exception being handled ("std::out_of_range"), or
/// "unknown" outside a handler. Call only inside a catch block.
std::string current_exception_type_name();

/// what() of the exception being handled, or an empty string for non-std exceptions.
std::string current_exception_message();

/// CLOCK_MONOTONIC in nanoseconds: a plain number that another process can compare.
std::uint64_t monotonic_ns() noexcept;

/// A waitpid() status as Python's exitcode: the exit code, or minus the signal number.
int status_code(int wstatus) noexcept;

/// Writes all of s to fd, retrying short writes and EINTR; async-signal-safe.
void write_all(int fd, std::string_view s) noexcept;

}  // namespace mproc::detail
