// The thread backend's scheduler: worker threads with one work-stealing deque each.
// Pool and ThreadPoolExecutor build their tasks in templates (any callable, no
// serialization) and hand them to a ThreadCore. Internal to mproc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "../export.hpp"

namespace mproc::detail {

/// A unit of work for a ThreadCore. The core calls exactly one of run() or discard() on
/// every task it accepted; after that call the core never touches the task again, so a
/// task may free itself inside it.
class ThreadTask {
 public:
  /// Runs the task. Must not throw: tasks catch their own exceptions.
  virtual void run() noexcept = 0;
  /// The task will not run: fail it with `reason`, which is Cancelled (`cancelled`:
  /// terminate(), cancel_pending()) or BrokenPool (an initializer failed).
  virtual void discard(std::exception_ptr reason, bool cancelled) noexcept = 0;

  ThreadTask* next_ = nullptr;      ///< the core's intrusive link while the task is queued
  std::uint64_t generation_ = 0;    ///< the core's cancel_pending() count at submit()

 protected:
  ~ThreadTask() = default;
};

/// Thread-backend settings (the parts of PoolOptions that apply to threads).
struct ThreadCoreOptions {
  unsigned workers = 0;  ///< 0: cpu_count()
  std::function<void()> initializer{};
  std::string trace{};  ///< timeline file ("" = off): see detail/trace.hpp
};

class MPROC_API ThreadCore {
 public:
  /// Starts the workers. Throws std::system_error if a thread cannot start.
  explicit ThreadCore(ThreadCoreOptions options);
  ThreadCore(const ThreadCore&) = delete;
  ThreadCore& operator=(const ThreadCore&) = delete;
  /// join(). Never throws.
  ~ThreadCore();

  unsigned workers() const noexcept;

  /// Queues `task`. From a worker of this core it goes to that worker's own deque (run
  /// last-in first-out, stolen first-in first-out by idle workers); from another thread
  /// it goes to a worker's inbox. Throws PoolClosed after close() (tasks of this core's
  /// own workers are still accepted until join() finishes, so running work can finish),
  /// BrokenPool if an initializer failed. Thread-safe.
  void submit(ThreadTask* task);

  /// No new work from outside the pool's workers. Thread-safe.
  void close();
  /// close(), then waits until every accepted task has run and the workers have exited.
  /// Throws std::logic_error from inside one of this core's tasks (it would wait for
  /// itself).
  void join();
  /// close(); queued tasks are discarded with Cancelled; running tasks finish; then joins
  /// (not from inside one of this core's tasks: there it returns once it has begun).
  void terminate();
  /// Whether the calling thread is one of this core's workers.
  bool in_own_task() const noexcept;
  /// Tasks that have not started are discarded with Cancelled as the workers reach them
  /// (before anything queued later runs); new work is still accepted unless closed.
  void cancel_pending();

  /// In one of this core's workers: runs one queued task, if any; returns whether it did.
  /// Elsewhere returns false. Lets a worker that must wait keep the pool going.
  bool run_one() noexcept;

  /// The index of the calling thread among this core's workers, if it is one.
  std::optional<unsigned> worker_index() const noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

class Tracer;

/// The timeline recorder of the thread pool whose worker is calling (null when the caller
/// is no pool worker or its pool does not trace). Tasks record their chunks through it.
MPROC_API Tracer* current_thread_tracer() noexcept;

}  // namespace mproc::detail
