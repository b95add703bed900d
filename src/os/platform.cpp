#include "os/platform.hpp"

#include <cxxabi.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <memory>
#include <system_error>
#include <typeinfo>

namespace mproc::detail {

void throw_system_error(int err, std::string_view context) {
  throw std::system_error(err, std::system_category(), std::string(context));
}

void UniqueFd::reset(int fd) noexcept {
  // close(2): on Linux the fd is released even when close fails with EINTR, so a retry
  // could close an fd another thread has just been given.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

std::string current_exception_type_name() {
  const std::type_info* t = abi::__cxa_current_exception_type();
  if (t == nullptr) return "unknown";
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> name(
      abi::__cxa_demangle(t->name(), nullptr, nullptr, &status), &std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(t->name());
}

std::string current_exception_message() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return {};
  }
}

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

int status_code(int wstatus) noexcept {
  if (WIFSIGNALED(wstatus)) return -WTERMSIG(wstatus);
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  return 0;
}

void write_all(int fd, std::string_view s) noexcept {
  while (!s.empty()) {
    ssize_t n = ::write(fd, s.data(), s.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    s.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace mproc::detail
