// Synchronization across processes and threads: Python's multiprocessing Lock, RLock,
// Semaphore, BoundedSemaphore, Event, Condition and Barrier.
//
// Each object lives in shared memory (an anonymous memfd, mode 0600; see
// detail/segment.hpp). The C++ object is a handle: copies refer to the same lock, a
// forked Process inherits it, and it can be passed as an argument to Pool tasks and
// executors (it is serializable). The shared state goes away with the last handle in the
// last process, also when processes holding handles are SIGKILLed.
//
// The methods are const: a handle is like a pointer, and copies captured by value in a
// lambda must be usable.
//
// Every blocking call has a timeout twin: lock() and try_lock_for(d), acquire() and
// acquire(timeout), wait() and wait(timeout). Timeouts use the steady clock.
//
// Robust locks. Lock and RLock are robust: if a process or thread dies holding one, the
// next acquirer gets it (it never hangs) and is told: owner_died() returns true until it
// releases the lock. The state the dead holder protected may be half updated; check or
// repair it before releasing. Semaphores, Events, Conditions and Barriers have no owner,
// so a process that dies after acquiring a Semaphore takes its unit with it, as in Python.
//
// Departure from Python: a Lock (like std::mutex) may be released only by the thread that
// holds it; release() by another throws std::logic_error. Use a Semaphore(1) to signal
// between processes.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "detail/deadline.hpp"
#include "detail/lock_block.hpp"
#include "detail/segment.hpp"
#include "export.hpp"

namespace mproc {

class Condition;

namespace detail {

/// Makes the lock block at `p` (kLockBlockBytes, 64-aligned, zeroed) a robust,
/// process-shared mutex, recursive or not.
MPROC_API void init_lock_block(std::byte* p, bool recursive);

/// What Lock and RLock share. Not used directly.
class MPROC_API LockBase {
 public:
  /// Blocks until this thread holds the lock. If the previous holder died with it, the
  /// lock is taken anyway and owner_died() is true.
  void lock() const;
  /// Takes the lock if it is free now.
  bool try_lock() const;
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) const {
    return lock_until(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool try_lock_until(std::chrono::time_point<Clock, Duration> deadline) const {
    return lock_until(detail::to_steady(deadline));
  }
  /// Releases the lock. Throws std::logic_error if this thread does not hold it.
  void unlock() const;

  /// Python's names: acquire() blocks and returns true; acquire(timeout) returns whether
  /// the lock was taken; release() is unlock().
  bool acquire() const {
    lock();
    return true;
  }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) const {
    return try_lock_for(timeout);
  }
  void release() const { unlock(); }

  /// True while held by a thread that took the lock from a holder that had died. Reset
  /// when that thread releases it.
  bool owner_died() const noexcept;
  /// True if the calling thread holds the lock.
  bool held_by_me() const noexcept;

  /// Ships the handle; loading accepts a Lock or an RLock (a Condition's lock is either).
  template <class Archive>
  void serialize(Archive& ar) {
    serialize_as(ar, std::nullopt);
  }

 protected:
  LockBase() = default;
  explicit LockBase(bool recursive);
  explicit LockBase(SharedRef ref) noexcept : ref_(std::move(ref)) {}
  bool lock_until(SteadyTime deadline) const;

  /// Loading checks the block's kind tag: `kind`, or either lock kind if none is given.
  template <class Archive>
  void serialize_as(Archive& ar, std::optional<SharedKind> kind) {
    if constexpr (Archive::is_saving) {
      ref_.save(ar);
    } else {
      ref_.load(ar, kLockBlockBytes);
      check_loaded(kind);
    }
  }
  void check_loaded(std::optional<SharedKind> kind) const;

 protected:
  friend class mproc::Condition;
  SharedRef ref_;
};

/// What Semaphore, Event, Condition and Barrier share: the reference to their block in
/// shared memory, and its serialization (the kind tag and size are checked on loading).
template <SharedKind Kind, std::size_t Bytes>
class SyncHandle {
 public:
  template <class Archive>
  void serialize(Archive& ar) {
    if constexpr (Archive::is_saving) {
      ref_.save(ar);
    } else {
      ref_.load(ar, Bytes);
      check_kind(ref_.get(), Kind, kind_name(Kind));
    }
  }

 protected:
  SharedRef ref_;
};

}  // namespace detail

/// A mutual-exclusion lock shared by processes and threads; std::lock_guard and
/// std::unique_lock work with it. Not recursive: locking it twice from one thread
/// deadlocks (use RLock). Robust (see above).
class MPROC_API Lock : public detail::LockBase {
 public:
  /// A new, unlocked lock in shared memory.
  Lock() : LockBase(false) {}

  /// Ships the handle. Loading throws SharedStateError unless the bytes name a Lock (an
  /// RLock is refused: it would not be the non-recursive lock the type promises),
  /// SerializationError if they are malformed.
  template <class Archive>
  void serialize(Archive& ar) {
    serialize_as(ar, detail::SharedKind::lock);
  }
};

/// A lock its holder may take again; each lock() needs its unlock(). Robust.
class MPROC_API RLock : public detail::LockBase {
 public:
  RLock() : LockBase(true) {}

  /// Ships the handle. Loading throws SharedStateError unless the bytes name an RLock,
  /// SerializationError if they are malformed.
  template <class Archive>
  void serialize(Archive& ar) {
    serialize_as(ar, detail::SharedKind::rlock);
  }

 private:
  template <class T>
  friend class Value;
  template <class T>
  friend class Array;
  explicit RLock(detail::SharedRef ref) noexcept : LockBase(std::move(ref)) {}
};

/// A counter that acquire() decrements, waiting while it is 0, and release() increments.
class MPROC_API Semaphore : public detail::SyncHandle<detail::SharedKind::semaphore, 64> {
 public:
  /// Throws std::invalid_argument if value exceeds 2^31 - 1.
  explicit Semaphore(std::uint32_t value = 1);

  /// Waits for the counter to be positive and decrements it; returns true.
  bool acquire() const;
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) const {
    return acquire_until(detail::deadline_after(timeout));
  }
  /// Decrements the counter if positive; never blocks.
  bool try_acquire() const;
  /// Adds n to the counter, waking up to n waiters.
  void release(std::uint32_t n = 1) const;
  /// The counter now (Python's get_value()).
  std::uint32_t get_value() const noexcept;

  // std::lock_guard compatibility.
  void lock() const { acquire(); }
  bool try_lock() const { return try_acquire(); }
  void unlock() const { release(); }

 protected:
  Semaphore(std::uint32_t value, std::uint32_t max);
  bool acquire_until(detail::SteadyTime deadline) const;
};

/// A Semaphore that refuses to be released above its initial value: release() then
/// throws std::logic_error (Python's ValueError).
class MPROC_API BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(std::uint32_t value = 1) : Semaphore(value, value) {}

  /// Ships the handle. Loading throws SharedStateError unless the bytes name a
  /// BoundedSemaphore (a plain Semaphore has no bound to keep).
  template <class Archive>
  void serialize(Archive& ar) {
    Semaphore::serialize(ar);
    if constexpr (Archive::is_loading) check_bounded();
  }

 private:
  void check_bounded() const;
};

/// A flag processes can wait for.
class MPROC_API Event : public detail::SyncHandle<detail::SharedKind::event, 64> {
 public:
  Event();
  void set() const;
  void clear() const;
  bool is_set() const noexcept;
  /// Blocks until the flag is set.
  void wait() const;
  /// Blocks until the flag is set or the timeout passes; returns is_set().
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) const {
    return wait_until(detail::deadline_after(timeout));
  }

 private:
  bool wait_until(detail::SteadyTime deadline) const;
};

/// A condition variable bound to a Lock or RLock (a new RLock by default), as Python's.
/// wait() must be called with the lock held; it releases it (every level of an RLock)
/// while waiting and takes it back before returning. Wake-ups may be spurious: wait in a
/// loop, or use wait_for(predicate).
class MPROC_API Condition : public detail::SyncHandle<detail::SharedKind::condition, 64> {
 public:
  Condition();
  explicit Condition(const Lock& lock);
  explicit Condition(const RLock& lock);

  void wait() const;
  /// Returns false if the timeout passed (the lock is held again either way).
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) const {
    return wait_until(detail::deadline_after(timeout));
  }
  /// Waits until pred() is true; returns pred().
  template <class Pred>
  bool wait_for(Pred pred) const {
    while (!pred()) wait();
    return true;
  }
  template <class Pred, class Rep, class Period>
  bool wait_for(Pred pred, std::chrono::duration<Rep, Period> timeout) const {
    const auto deadline = detail::deadline_after(timeout);
    while (!pred()) {
      if (!wait_until(deadline)) return pred();
    }
    return true;
  }
  /// Wakes up to n waiters / all waiters. The lock must be held (std::logic_error).
  void notify(std::uint32_t n = 1) const;
  void notify_all() const;

  // The underlying lock.
  void lock() const { lock_.lock(); }
  bool try_lock() const { return lock_.try_lock(); }
  void unlock() const { lock_.unlock(); }
  bool acquire() const { return lock_.acquire(); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) const {
    return lock_.acquire(timeout);
  }
  void release() const { lock_.release(); }

  template <class Archive>
  void serialize(Archive& ar) {
    SyncHandle::serialize(ar);
    ar(lock_);
  }

 private:
  bool wait_until(detail::SteadyTime deadline) const;
  detail::LockBase lock_;
};

/// Python's Barrier: `parties` processes or threads wait until all have arrived. A wait
/// that times out, abort() and reset() break it for the parties waiting then: they
/// throw BrokenBarrierError, as do later waits until reset().
class MPROC_API Barrier : public detail::SyncHandle<detail::SharedKind::barrier, 192> {
 public:
  /// An empty handle, to assign a Barrier to (decoding needs one); using it is an error.
  Barrier() noexcept = default;
  /// Throws std::invalid_argument if parties is 0.
  explicit Barrier(std::uint32_t parties);

  /// Waits for all parties; returns this party's arrival index, 0 .. parties-1.
  std::uint32_t wait() const;
  template <class Rep, class Period>
  std::uint32_t wait(std::chrono::duration<Rep, Period> timeout) const {
    return wait_until(detail::deadline_after(timeout));
  }
  /// Breaks the barrier: current and later waits throw until reset().
  void abort() const;
  /// Back to the initial state; parties waiting now throw BrokenBarrierError.
  void reset() const;
  std::uint32_t parties() const noexcept;
  std::uint32_t n_waiting() const noexcept;
  bool broken() const noexcept;

 private:
  std::uint32_t wait_until(detail::SteadyTime deadline) const;
};

}  // namespace mproc
