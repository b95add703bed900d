// Entry points of the processes a process pool forks. Internal to libmproc.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <sys/types.h>

#include "mproc/export.hpp"

#include "pool/pool_protocol.hpp"
#include "pool/ring.hpp"

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
  /// The slot's scratch block in shared memory, where packed runs write their results.
  std::span<std::byte> scratch;
  /// The pool's owner: the worker keeps the segments it attaches from there mapped
  /// between calls (ipc/segment_keep.hpp).
  pid_t owner;
};

/// Runs the worker loop; never returns.
[[noreturn]] void worker_main(const WorkerEnv& env);

/// How a worker loop talks to its pool: the process backend's rings, or MPI messages.
class MPROC_API WorkerLink {
 public:
  virtual ~WorkerLink();
  /// Blocks for the next message from the pool.
  virtual void recv(std::vector<std::byte>& msg) = 0;
  /// Sends a message to the pool.
  virtual void send(std::span<const std::byte> msg) = 0;
  /// Sends one item's result; a link may batch these until the next send().
  virtual void send_item(std::span<const std::byte> msg) { send(msg); }
  /// Whether the pool takes items_packed frames: the results of a map whose argument and
  /// result types are their own encoding, run back to back without a frame per item.
  virtual bool packs_results() const { return false; }
  /// Where packed runs write their results, if the link has such a block in memory the
  /// pool can read after the worker's death (the process backend: every finished item's
  /// result must survive a crash). Empty: results are built in private memory.
  virtual std::span<std::byte> scratch() { return {}; }
  /// Sends one items_packed frame: `head` (kind and count), then `body` (the results).
  virtual void send_packed(std::span<const std::byte> head, std::span<const std::byte> body) {
    std::vector<std::byte> msg(head.begin(), head.end());
    msg.insert(msg.end(), body.begin(), body.end());
    send_item(msg);
  }
  /// Whether the link's descriptors are still its own. A task may close the fds it
  /// inherited (closefrom(3), close_range); the loop asks after every chunk. With
  /// `thorough` false, only what is known without a system call (a wake-up that already
  /// found its descriptor gone).
  virtual bool intact(bool thorough) const {
    (void)thorough;
    return true;
  }
  /// Stops using the link's descriptors (after !intact()): later sends only write memory.
  virtual void detach() {}
};

/// A worker loop's settings.
struct WorkerLoopOptions {
  std::string name;    ///< the worker's current_process() name
  SlotControl* control;  ///< where it publishes what it runs (may be private memory)
  const std::function<void()>* initializer = nullptr;
  unsigned max_tasks = 0;  ///< return after this many items (0: never)
  bool timed = false;      ///< publish each item's start time
};

/// Runs chunks from `link` until the pool sends `exit` or max_tasks items have run, and
/// returns. If the initializer throws, reports init_failed and returns. Errors of the
/// protocol itself propagate.
MPROC_API void run_worker_loop(WorkerLink& link, const WorkerLoopOptions& options);

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
