// Futex wait and wake on 32-bit words that live in MAP_SHARED memory, across processes.
// Internal to libmproc; never included by public headers.
//
// Why not std::atomic::wait/notify: libstdc++ implements them with FUTEX_WAIT_PRIVATE
// (and a process-local waiter table), which keys the futex on this process's virtual
// address; a waiter in another process is never woken. The shared ops used here key the
// futex on the backing page (the memfd's inode and offset), so every process that maps
// the page meets on the same futex. See futex(2), "FUTEX_PRIVATE_FLAG".
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

namespace mproc::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "a futex word must be a plain lock-free 32-bit integer");

/// Sleeps while *word == expected, for at most `timeout` (none: until woken).
/// Returns true if the wait timed out. Returns false when woken, when *word != expected
/// already (EAGAIN), when a signal interrupted the wait (EINTR), and on spurious
/// wake-ups: callers re-check their condition in a loop. A timeout <= 0 returns true at
/// once without a system call. Blocks. Process-safe.
/// Throws std::system_error on any other failure (a bad address: a bug).
bool futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::optional<std::chrono::nanoseconds> timeout = std::nullopt);

/// Wakes at most `count` processes or threads sleeping in futex_wait on `word`; returns
/// how many it woke. Never blocks. Process-safe.
/// Throws std::system_error on failure (a bad address: a bug).
int futex_wake(std::atomic<std::uint32_t>* word, int count = 1);

/// Wakes every sleeper on `word`.
int futex_wake_all(std::atomic<std::uint32_t>* word);

/// The waker's half of a sleep-flag handshake (src/pool/ring.hpp, "Wake-ups"; the
/// Queue's ring uses the same): clears the flag a waiter set before sleeping on it, and
/// wakes that waiter if it was set. The exchange makes sure that of several wakers
/// (a producer and close(), say) only one pays for the FUTEX_WAKE. The caller has
/// published its change and executed the seq_cst fence of the handshake. Process-safe.
inline void wake_if_sleeping(std::atomic<std::uint32_t>& flag) noexcept {
  if (flag.load(std::memory_order_relaxed) != 0 &&
      flag.exchange(0, std::memory_order_relaxed) != 0) {
    futex_wake(&flag, 1);
  }
}

/// One iteration's worth of politeness in a spin loop: PAUSE on x86 (lets the sibling
/// hyper-thread run and avoids the memory-order mis-speculation flush on loop exit),
/// YIELD on arm64.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace mproc::detail
