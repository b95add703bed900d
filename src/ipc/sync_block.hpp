// The lock block behind Lock and RLock, and the robust-mutex calls that the Queue and
// Manager use on their own lock blocks. Internal to libmproc.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>

#include "mproc/detail/deadline.hpp"
#include "mproc/detail/lock_block.hpp"

namespace mproc::detail {

/// kLockBlockBytes of shared memory. Fields other than the mutex are written only by
/// the holder.
struct LockBlock {
  std::uint32_t kind;
  std::uint32_t recursive;
  std::atomic<std::uint32_t> owner_died;  // the holder took it from a dead holder
  std::uint32_t depth;                    // lock levels held (1 for a Lock)
  std::atomic<pid_t> owner_tid;           // gettid() of the holder, 0 when free
  alignas(64) pthread_mutex_t mutex;
};
static_assert(sizeof(LockBlock) <= kLockBlockBytes);

/// Takes the lock (only if free with try_only; else until the deadline). Returns false
/// on timeout or when busy. A dead holder's lock is taken and made consistent, and the
/// block's owner_died set. Throws std::logic_error on self-deadlock of a Lock.
bool robust_lock(LockBlock* b, SteadyTime deadline, bool try_only);
/// Releases one level. Throws std::logic_error if the caller does not hold it.
void robust_unlock(LockBlock* b);
bool lock_held_by_me(const LockBlock* b) noexcept;

/// Holds a lock block for a scope; tells whether the previous holder had died.
class BlockGuard {
 public:
  explicit BlockGuard(LockBlock* b) : b_(b) { robust_lock(b_, kForever, false); }
  ~BlockGuard() { robust_unlock(b_); }
  BlockGuard(const BlockGuard&) = delete;
  BlockGuard& operator=(const BlockGuard&) = delete;
  bool owner_died() const noexcept { return b_->owner_died.load(std::memory_order_relaxed) != 0; }

 private:
  LockBlock* b_;
};

}  // namespace mproc::detail
