// Entry points of the processes a process pool forks. Internal to libmproc.
#pragma once

#include <functional>

#include <sys/types.h>

#include "pool_protocol.hpp"
#include "ring.hpp"

namespace mproc::detail::pool {

/// What a worker needs: its slot's rings and control block, and the pool's settings.
struct WorkerEnv {
  unsigned number;  ///< 1, 2, ... in spawn order: the worker's name is PoolWorker-<number>
  SlotControl* control;
  SpscRing* tasks;    ///< parent -> worker
  SpscRing* results;  ///< worker -> parent
  const std::function<void()>* initializer;
  unsigned max_tasks;
  /// The pool has a task_timeout: publish each item's start time (a clock read per item).
  bool timed;
};

/// Runs the worker loop; never returns.
[[noreturn]] void worker_main(const WorkerEnv& env);

struct ForkServerEnv {
  pid_t parent_pid;
  int socket;  ///< SOCK_SEQPACKET to the parent
  /// The Pool was made on the parent's main thread, so PR_SET_PDEATHSIG (which fires when
  /// the forking *thread* exits) means "the parent died". From another thread it would
  /// kill the fork server when that thread ends, while the Pool lives on.
  bool from_main_thread;
  /// The environment of the worker for `slot` with the given number.
  std::function<WorkerEnv(unsigned slot, unsigned number)> worker;
};

/// Runs the fork server loop; never returns.
[[noreturn]] void fork_server_main(const ForkServerEnv& env);

}  // namespace mproc::detail::pool
