#include "os/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "os/platform.hpp"

namespace mproc::detail {

namespace {

// The kernel reads and compares the word itself; a std::atomic<uint32_t> is the integer
// (static_assert in the header), so its address is the futex address.
std::uint32_t* word_address(std::atomic<std::uint32_t>* word) noexcept {
  return reinterpret_cast<std::uint32_t*>(word);
}

}  // namespace

bool futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::optional<std::chrono::nanoseconds> timeout) {
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout) {
    if (timeout->count() <= 0) return true;
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(*timeout);
    ts.tv_sec = static_cast<time_t>(secs.count());
    ts.tv_nsec = static_cast<long>((*timeout - secs).count());
    tsp = &ts;
  }
  // FUTEX_WAIT's timeout is relative and measured against CLOCK_MONOTONIC.
  // No FUTEX_PRIVATE_FLAG: the word is shared between processes (see the header).
  const long r = ::syscall(SYS_futex, word_address(word), FUTEX_WAIT, expected, tsp, nullptr, 0);
  if (r == 0) return false;
  switch (errno) {
    case ETIMEDOUT:
      return true;
    case EAGAIN:  // *word != expected when the kernel looked: the state changed already.
    case EINTR:   // A signal handler ran; the caller re-checks and waits again.
      return false;
    default:
      throw_system_error(errno, "futex wait");
  }
}

int futex_wake(std::atomic<std::uint32_t>* word, int count) {
  const long r = ::syscall(SYS_futex, word_address(word), FUTEX_WAKE, count, nullptr, nullptr, 0);
  if (r < 0) throw_system_error(errno, "futex wake");
  return static_cast<int>(r);
}

int futex_wake_all(std::atomic<std::uint32_t>* word) { return futex_wake(word, INT_MAX); }

}  // namespace mproc::detail
