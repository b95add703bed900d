// Lock and RLock are glibc's robust, process-shared pthread mutexes: the kernel walks
// each dying thread's robust list, marks the mutexes it held FUTEX_OWNER_DIED and wakes
// a waiter, whose pthread_mutex_lock returns EOWNERDEAD (see futex(2), "robust futexes",
// and pthread_mutexattr_setrobust(3)). Semaphore, Event, Condition and Barrier are futex
// words with waiter counts, so a release makes a system call only when someone sleeps.
#include "mproc/sync.hpp"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

#include "mproc/error.hpp"
#include "mproc/serialize.hpp"
#include "ipc/sync_block.hpp"
#include "os/futex.hpp"
#include "os/platform.hpp"

namespace mproc {

namespace detail {

namespace {

// gettid() costs a system call; cache it per thread. A forked child's only thread has a
// new id but inherits the parent thread's cache, so the cache is tagged with a fork
// generation that an atfork handler bumps in the child.
std::atomic<std::uint32_t> fork_generation{0};

pid_t my_tid() noexcept {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr,
                     [] { fork_generation.fetch_add(1, std::memory_order_relaxed); });
    return true;
  }();
  (void)registered;
  thread_local pid_t tid = 0;
  thread_local std::uint32_t generation = 0;
  const std::uint32_t g = fork_generation.load(std::memory_order_relaxed);
  if (tid == 0 || generation != g) {
    tid = ::gettid();
    generation = g;
  }
  return tid;
}

struct SemBlock {
  std::uint32_t kind;
  std::atomic<std::uint32_t> value;
  std::atomic<std::uint32_t> waiters;
  std::uint32_t max;  // 0: unbounded
};
struct EventBlock {
  std::uint32_t kind;
  std::atomic<std::uint32_t> flag;
  std::atomic<std::uint32_t> waiters;
};
struct CondBlock {
  std::uint32_t kind;
  std::atomic<std::uint32_t> seq;
  std::atomic<std::uint32_t> waiters;
};
struct BarrierBlock {
  std::uint32_t kind;
  std::uint32_t parties;
  std::atomic<std::uint32_t> gen;          // futex word: bumped when a round ends
  std::atomic<std::uint32_t> count;        // arrived in this round
  std::atomic<std::uint32_t> broken;
  std::atomic<std::uint32_t> aborted_gen;  // g + 1 if round g was ended by reset()
  alignas(64) std::byte lock[kLockBlockBytes];
};
static_assert(sizeof(SemBlock) <= 64 && sizeof(EventBlock) <= 64 && sizeof(CondBlock) <= 64);
static_assert(sizeof(BarrierBlock) <= 192);

template <class Block>
Block* make_block(SharedRef& ref, SharedKind kind, const char* purpose) {
  ref.segment = Segment::create(sizeof(Block), purpose);
  ref.offset = 0;
  auto* b = new (ref.get()) Block{};
  b->kind = static_cast<std::uint32_t>(kind);
  return b;
}

// Sleeps on `word` while it equals `expected`, until `deadline`; true if the deadline
// passed. Wakes early for signals and spurious reasons: callers loop.
bool sleep_until(std::atomic<std::uint32_t>* word, std::uint32_t expected, SteadyTime deadline) {
  if (deadline == kForever) return futex_wait(word, expected);
  const auto left = deadline - std::chrono::steady_clock::now();
  if (left <= std::chrono::steady_clock::duration::zero()) return true;
  return futex_wait(word, expected, std::chrono::duration_cast<std::chrono::nanoseconds>(left));
}

[[maybe_unused]] timespec monotonic_timespec(SteadyTime t) {  // unused under TSan
  // libstdc++'s steady_clock is CLOCK_MONOTONIC.
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return ts;
}

#if defined(__SANITIZE_THREAD__)
timespec realtime_timespec(SteadyTime t) {
  const auto left = t - std::chrono::steady_clock::now();
  const auto at = std::chrono::system_clock::now() +
                  std::chrono::duration_cast<std::chrono::system_clock::duration>(left);
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
  return timespec{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}
#endif

}  // namespace

// ---- lock block -----------------------------------------------------------------------

void init_lock_block(std::byte* p, bool recursive) {
  auto* b = new (p) LockBlock{};
  b->kind = static_cast<std::uint32_t>(recursive ? SharedKind::rlock : SharedKind::lock);
  b->recursive = recursive ? 1 : 0;
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  // Error-checking, so that a thread locking a Lock it holds gets an error, not a hang.
  ::pthread_mutexattr_settype(&attr,
                              recursive ? PTHREAD_MUTEX_RECURSIVE : PTHREAD_MUTEX_ERRORCHECK);
  const int rc = ::pthread_mutex_init(&b->mutex, &attr);
  ::pthread_mutexattr_destroy(&attr);
  if (rc != 0) throw_system_error(rc, "pthread_mutex_init for a shared lock");
}

bool robust_lock(LockBlock* b, SteadyTime deadline, bool try_only) {
  int rc;
  if (try_only) {
    rc = ::pthread_mutex_trylock(&b->mutex);
    if (rc == EBUSY) return false;
  } else if (deadline == kForever) {
    rc = ::pthread_mutex_lock(&b->mutex);
  } else {
#if defined(__SANITIZE_THREAD__)
    // GCC 12's TSan does not intercept pthread_mutex_clocklock (it would report false
    // races); its timedlock takes CLOCK_REALTIME.
    const timespec ts = realtime_timespec(deadline);
    rc = ::pthread_mutex_timedlock(&b->mutex, &ts);
#else
    const timespec ts = monotonic_timespec(deadline);
    rc = ::pthread_mutex_clocklock(&b->mutex, CLOCK_MONOTONIC, &ts);
#endif
    if (rc == ETIMEDOUT) return false;
  }
  bool died = false;
  if (rc == EOWNERDEAD) {
    // The holder died: we hold the lock now. Mark it consistent so that it stays usable
    // after we release it, and tell the caller.
    ::pthread_mutex_consistent(&b->mutex);
    died = true;
    b->depth = 0;
  } else if (rc == EDEADLK) {
    throw std::logic_error(
        "mproc::Lock: this thread already holds the lock (a Lock is not recursive; use RLock)");
  } else if (rc != 0) {
    throw_system_error(rc, "pthread_mutex_lock on a shared lock");
  }
  if (b->depth == 0) {
    b->owner_died.store(died ? 1 : 0, std::memory_order_relaxed);
    b->owner_tid.store(my_tid(), std::memory_order_relaxed);
  } else if (died) {
    b->owner_died.store(1, std::memory_order_relaxed);
  }
  ++b->depth;
  return true;
}

void robust_unlock(LockBlock* b) {
  if (b->owner_tid.load(std::memory_order_relaxed) != my_tid() || b->depth == 0)
    throw std::logic_error("mproc::Lock: release() of a lock this thread does not hold");
  if (--b->depth == 0) {
    b->owner_died.store(0, std::memory_order_relaxed);
    b->owner_tid.store(0, std::memory_order_relaxed);
  }
  const int rc = ::pthread_mutex_unlock(&b->mutex);
  if (rc != 0) throw_system_error(rc, "pthread_mutex_unlock on a shared lock");
}

bool lock_held_by_me(const LockBlock* b) noexcept {
  return b->depth != 0 && b->owner_tid.load(std::memory_order_relaxed) == my_tid();
}

// ---- Lock, RLock ----------------------------------------------------------------------

LockBase::LockBase(bool recursive) {
  if (decoding()) return;
  ref_.segment = Segment::create(kLockBlockBytes, recursive ? "RLock" : "Lock");
  init_lock_block(ref_.get(), recursive);
}

void LockBase::check_loaded(std::optional<SharedKind> kind) const {
  if (kind) return check_kind(ref_.get(), *kind, kind_name(*kind));
  std::uint32_t tag = 0;
  std::memcpy(&tag, ref_.get(), sizeof tag);
  if (tag != static_cast<std::uint32_t>(SharedKind::lock) &&
      tag != static_cast<std::uint32_t>(SharedKind::rlock))
    throw SharedStateError("Lock: the handle does not name a Lock or RLock");
}

void LockBase::lock() const { robust_lock(ref_.as<LockBlock>(), kForever, false); }
bool LockBase::try_lock() const { return robust_lock(ref_.as<LockBlock>(), kForever, true); }
bool LockBase::lock_until(SteadyTime deadline) const {
  return robust_lock(ref_.as<LockBlock>(), deadline, false);
}
void LockBase::unlock() const { robust_unlock(ref_.as<LockBlock>()); }
bool LockBase::owner_died() const noexcept {
  return ref_.as<LockBlock>()->owner_died.load(std::memory_order_relaxed) != 0;
}
bool LockBase::held_by_me() const noexcept { return lock_held_by_me(ref_.as<LockBlock>()); }

}  // namespace detail

using detail::kForever;
using detail::SteadyTime;

// ---- Semaphore ----------------------------------------------------------------------------

namespace {
constexpr std::uint32_t kMaxSemaphore = std::numeric_limits<std::int32_t>::max();
}

Semaphore::Semaphore(std::uint32_t value) : Semaphore(value, 0) {}

Semaphore::Semaphore(std::uint32_t value, std::uint32_t max) {
  if (detail::decoding()) return;
  if (value > kMaxSemaphore)
    throw std::invalid_argument("mproc::Semaphore: initial value above 2^31 - 1");
  auto* b = detail::make_block<detail::SemBlock>(ref_, detail::SharedKind::semaphore,
                                                 max != 0 ? "BoundedSemaphore" : "Semaphore");
  b->value.store(value, std::memory_order_relaxed);
  b->max = max;
}

bool Semaphore::try_acquire() const {
  auto* b = ref_.as<detail::SemBlock>();
  std::uint32_t v = b->value.load(std::memory_order_relaxed);
  while (v > 0) {
    if (b->value.compare_exchange_weak(v, v - 1, std::memory_order_acquire,
                                       std::memory_order_relaxed))
      return true;
  }
  return false;
}

bool Semaphore::acquire() const { return acquire_until(kForever); }

bool Semaphore::acquire_until(SteadyTime deadline) const {
  auto* b = ref_.as<detail::SemBlock>();
  for (int spin = 0; spin < 64; ++spin) {
    if (try_acquire()) return true;
    detail::cpu_relax();
  }
  for (;;) {
    if (try_acquire()) return true;
    b->waiters.fetch_add(1, std::memory_order_seq_cst);
    const bool timed_out = b->value.load(std::memory_order_seq_cst) == 0 &&
                           detail::sleep_until(&b->value, 0, deadline);
    b->waiters.fetch_sub(1, std::memory_order_relaxed);
    if (timed_out) return try_acquire();
  }
}

void Semaphore::release(std::uint32_t n) const {
  if (n == 0) return;
  auto* b = ref_.as<detail::SemBlock>();
  std::uint32_t v = b->value.load(std::memory_order_relaxed);
  const std::uint32_t limit = b->max != 0 ? b->max : kMaxSemaphore;
  do {
    if (n > limit || v > limit - n)
      throw std::logic_error(b->max != 0 ? "mproc::BoundedSemaphore released too many times"
                                         : "mproc::Semaphore: value would exceed 2^31 - 1");
  } while (!b->value.compare_exchange_weak(v, v + n, std::memory_order_seq_cst,
                                           std::memory_order_relaxed));
  if (b->waiters.load(std::memory_order_seq_cst) != 0)
    detail::futex_wake(&b->value, static_cast<int>(n));
}

std::uint32_t Semaphore::get_value() const noexcept {
  return ref_.as<detail::SemBlock>()->value.load(std::memory_order_relaxed);
}

void BoundedSemaphore::check_bounded() const {
  if (ref_.as<detail::SemBlock>()->max == 0)
    throw SharedStateError("BoundedSemaphore: the handle names a Semaphore without a bound");
}

// ---- Event ----------------------------------------------------------------------------

Event::Event() {
  if (detail::decoding()) return;
  detail::make_block<detail::EventBlock>(ref_, detail::SharedKind::event, "Event"); }

void Event::set() const {
  auto* b = ref_.as<detail::EventBlock>();
  b->flag.store(1, std::memory_order_seq_cst);
  if (b->waiters.load(std::memory_order_seq_cst) != 0) detail::futex_wake_all(&b->flag);
}

void Event::clear() const { ref_.as<detail::EventBlock>()->flag.store(0, std::memory_order_seq_cst); }

bool Event::is_set() const noexcept {
  return ref_.as<detail::EventBlock>()->flag.load(std::memory_order_acquire) != 0;
}

void Event::wait() const { wait_until(kForever); }

bool Event::wait_until(SteadyTime deadline) const {
  auto* b = ref_.as<detail::EventBlock>();
  while (b->flag.load(std::memory_order_acquire) == 0) {
    b->waiters.fetch_add(1, std::memory_order_seq_cst);
    const bool timed_out = b->flag.load(std::memory_order_seq_cst) == 0 &&
                           detail::sleep_until(&b->flag, 0, deadline);
    b->waiters.fetch_sub(1, std::memory_order_relaxed);
    if (timed_out) break;
  }
  return b->flag.load(std::memory_order_acquire) != 0;
}

// ---- Condition ------------------------------------------------------------------------

Condition::Condition() : Condition(RLock()) {}
// While decoding, RLock() above is empty and so is the condition.
Condition::Condition(const Lock& lock) : lock_(lock) {
  detail::make_block<detail::CondBlock>(ref_, detail::SharedKind::condition, "Condition");
}
Condition::Condition(const RLock& lock) : lock_(lock) {
  if (detail::decoding()) return;
  detail::make_block<detail::CondBlock>(ref_, detail::SharedKind::condition, "Condition");
}

void Condition::wait() const { wait_until(kForever); }

bool Condition::wait_until(SteadyTime deadline) const {
  auto* b = ref_.as<detail::CondBlock>();
  auto* lb = lock_.ref_.as<detail::LockBlock>();
  if (!detail::lock_held_by_me(lb))
    throw std::logic_error("mproc::Condition::wait: the lock is not held by this thread");
  // The sequence is read with the lock held, so a notify() after we release it changes
  // it and the futex wait below returns at once instead of missing the wake-up.
  const std::uint32_t seq = b->seq.load(std::memory_order_seq_cst);
  const std::uint32_t depth = lb->depth;
  for (std::uint32_t i = 0; i < depth; ++i) detail::robust_unlock(lb);
  b->waiters.fetch_add(1, std::memory_order_seq_cst);
  bool timed_out = false;
  try {
    timed_out = detail::sleep_until(&b->seq, seq, deadline);
  } catch (...) {
    b->waiters.fetch_sub(1, std::memory_order_relaxed);
    for (std::uint32_t i = 0; i < depth; ++i) detail::robust_lock(lb, kForever, false);
    throw;
  }
  b->waiters.fetch_sub(1, std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < depth; ++i) detail::robust_lock(lb, kForever, false);
  return !timed_out;
}

void Condition::notify(std::uint32_t n) const {
  if (!lock_.held_by_me())
    throw std::logic_error("mproc::Condition::notify: the lock is not held by this thread");
  auto* b = ref_.as<detail::CondBlock>();
  b->seq.fetch_add(1, std::memory_order_seq_cst);
  if (n != 0 && b->waiters.load(std::memory_order_seq_cst) != 0)
    detail::futex_wake(&b->seq, n > kMaxSemaphore ? static_cast<int>(kMaxSemaphore)
                                                  : static_cast<int>(n));
}

void Condition::notify_all() const {
  if (!lock_.held_by_me())
    throw std::logic_error("mproc::Condition::notify_all: the lock is not held by this thread");
  auto* b = ref_.as<detail::CondBlock>();
  b->seq.fetch_add(1, std::memory_order_seq_cst);
  if (b->waiters.load(std::memory_order_seq_cst) != 0) detail::futex_wake_all(&b->seq);
}

// ---- Barrier --------------------------------------------------------------------------

Barrier::Barrier(std::uint32_t parties) {
  if (parties == 0) throw std::invalid_argument("mproc::Barrier: parties must be at least 1");
  if (parties > kMaxSemaphore) throw std::invalid_argument("mproc::Barrier: too many parties");
  auto* b = detail::make_block<detail::BarrierBlock>(ref_, detail::SharedKind::barrier, "Barrier");
  b->parties = parties;
  detail::init_lock_block(b->lock, false);
}

namespace {
// The barrier's own robust lock. A holder that died left at most a count off by one,
// which the next round absorbs, so its death needs no repair.
detail::LockBlock* barrier_lock(detail::BarrierBlock* b) {
  return reinterpret_cast<detail::LockBlock*>(b->lock);
}
}  // namespace

std::uint32_t Barrier::wait() const { return wait_until(kForever); }

std::uint32_t Barrier::wait_until(SteadyTime deadline) const {
  auto* b = ref_.as<detail::BarrierBlock>();
  std::uint32_t g = 0;
  std::uint32_t index = 0;
  {
    detail::BlockGuard guard(barrier_lock(b));
    if (b->broken.load(std::memory_order_relaxed) != 0)
      throw BrokenBarrierError("mproc::Barrier is broken");
    g = b->gen.load(std::memory_order_relaxed);
    index = b->count.fetch_add(1, std::memory_order_relaxed);
    if (index + 1 >= b->parties) {
      b->count.store(0, std::memory_order_relaxed);
      b->gen.store(g + 1, std::memory_order_seq_cst);
      detail::futex_wake_all(&b->gen);
      return index;
    }
  }
  for (;;) {
    if (b->gen.load(std::memory_order_acquire) != g) {
      if (b->aborted_gen.load(std::memory_order_acquire) == g + 1)
        throw BrokenBarrierError("mproc::Barrier was reset while waiting");
      return index;
    }
    if (b->broken.load(std::memory_order_acquire) != 0)
      throw BrokenBarrierError("mproc::Barrier was aborted while waiting");
    if (detail::sleep_until(&b->gen, g, deadline)) {
      detail::BlockGuard guard(barrier_lock(b));
      if (b->gen.load(std::memory_order_relaxed) != g) continue;  // completed just now
      b->broken.store(1, std::memory_order_seq_cst);
      detail::futex_wake_all(&b->gen);
      throw BrokenBarrierError("mproc::Barrier: wait timed out (the barrier is now broken)");
    }
  }
}

void Barrier::abort() const {
  auto* b = ref_.as<detail::BarrierBlock>();
  detail::BlockGuard guard(barrier_lock(b));
  b->broken.store(1, std::memory_order_seq_cst);
  detail::futex_wake_all(&b->gen);
}

void Barrier::reset() const {
  auto* b = ref_.as<detail::BarrierBlock>();
  detail::BlockGuard guard(barrier_lock(b));
  const std::uint32_t g = b->gen.load(std::memory_order_relaxed);
  if (b->count.load(std::memory_order_relaxed) != 0 && b->broken.load() == 0)
    b->aborted_gen.store(g + 1, std::memory_order_relaxed);
  b->count.store(0, std::memory_order_relaxed);
  b->broken.store(0, std::memory_order_relaxed);
  b->gen.store(g + 1, std::memory_order_seq_cst);
  detail::futex_wake_all(&b->gen);
}

std::uint32_t Barrier::parties() const noexcept { return ref_.as<detail::BarrierBlock>()->parties; }
std::uint32_t Barrier::n_waiting() const noexcept {
  auto* b = ref_.as<detail::BarrierBlock>();
  return b->broken.load() != 0 ? 0 : b->count.load(std::memory_order_relaxed);
}
bool Barrier::broken() const noexcept {
  return ref_.as<detail::BarrierBlock>()->broken.load(std::memory_order_acquire) != 0;
}

}  // namespace mproc
