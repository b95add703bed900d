// How a thread-pool worker waits for a future: by running other tasks meanwhile, so that a
// task waiting on work it submitted to its own pool cannot deadlock it. Internal.
#pragma once

#include <chrono>

#include "mproc/export.hpp"
#include "mproc/future.hpp"

namespace mproc::detail {

class WaitHelper {
 public:
  /// Runs other work until `state` is finished or `deadline` (null: none) passes; returns
  /// state.done().
  virtual bool help_until(const FutureStateBase& state,
                          const std::chrono::steady_clock::time_point* deadline) = 0;

 protected:
  ~WaitHelper() = default;
};

// libmproc's thread-locals use the initial-exec model: one instruction to reach them
// instead of a __tls_get_addr call (libmproc is linked, not dlopen'ed, and they are few
// bytes of the static TLS block).
#define MPROC_INITIAL_EXEC __attribute__((tls_model("initial-exec")))

/// Set by a thread-pool worker for its own thread; null elsewhere.
extern MPROC_INITIAL_EXEC thread_local WaitHelper* current_wait_helper;

/// The helper of threads that have none of their own: the mpi pool, whose waiting callers
/// carry its messages themselves rather than hand them to a thread on the same core. Its
/// help_until() may return before the state is done (the helper is leaving); the waiter
/// then blocks as usual. Setting null waits until no thread is inside the old helper.
MPROC_API void set_process_wait_helper(WaitHelper* helper) noexcept;

}  // namespace mproc::detail
