// mproc::Process: Python's multiprocessing.Process with the fork start method.
//
// start() forks: the child has this process's memory as it was at that moment, so any
// callable and any arguments work (nothing is serialized). The child runs the callable
// and ends with _exit after flushing its own stdio: it never runs the parent's atexit
// handlers or static destructors, and never writes the parent's buffered output a second
// time (start() flushes stdout and stderr first, as Python does, and the child discards
// anything buffered that it inherited). An exception escaping the callable prints
// "Process <name> (pid N): <type>: <what()>" to stderr and makes the exit code 1.
//
// A Process is a handle: copies refer to the same child (as Python's objects do).
// When the last handle goes away, a started child that was not joined is joined (like
// std::jthread), or, for a daemon, killed with SIGKILL and reaped; so no zombie is left.
// Daemon children are also killed when this process exits normally, and when it dies
// from a signal (SIGKILL included): they watch a pipe whose only writer is the parent.
// A child that calls exit() itself runs the atexit handlers it inherited; that is the
// callable's choice, as in Python.
//
// Every method is thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <sys/types.h>

#include "export.hpp"

namespace mproc {

/// What Python's current_process() tells.
struct ProcessInfo {
  pid_t pid;
  std::string name;     ///< "MainProcess", a Process's name, or "PoolWorker-N"
  bool is_pool_worker;  ///< true inside a worker of a process Pool
};

/// The calling process. Thread-safe.
MPROC_API ProcessInfo current_process();

struct ProcessOptions {
  std::string name{};  ///< empty: "Process-N", N counting Processes created in this process
  bool daemon = false;
};

namespace detail {
struct ProcessState;
/// Names the calling process for current_process(); the Pool calls it in its workers.
MPROC_API void set_current_process(std::string name, bool is_pool_worker);
}  // namespace detail

class MPROC_API Process {
 public:
  /// A Process that will run f(args...) in a child. Nothing starts until start().
  template <class F, class... Args>
    requires std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&...>
  explicit Process(F&& f, Args&&... args)
      : Process(ProcessOptions{}, std::forward<F>(f), std::forward<Args>(args)...) {}

  template <class F, class... Args>
    requires std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&...>
  Process(ProcessOptions options, F&& f, Args&&... args)
      : Process(std::move(options),
                std::function<void()>([f = std::forward<F>(f),
                                       tup = std::make_tuple(std::forward<Args>(args)...)]() mutable {
                  std::apply(f, tup);
                }),
                Tag{}) {}

  /// Forks the child. Throws std::logic_error if already started, std::system_error
  /// ("fork for Process") if the OS refuses.
  void start();

  /// Waits for the child to end. Throws std::logic_error if not started.
  void join();
  /// Waits at most `timeout`; returns whether the child has ended.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_for(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }

  /// Started and not yet ended. Reaps the child if it has ended.
  bool is_alive();
  /// None while running or before start(); then 0, the exit status, or minus the signal.
  std::optional<int> exitcode();
  /// The child's pid (0 before start()).
  pid_t pid() const;
  std::string name() const;
  void set_name(std::string name);
  bool daemon() const;
  /// Before start() only (std::logic_error otherwise).
  void set_daemon(bool daemon);
  /// Sends SIGTERM (no-op once the child has been reaped).
  void terminate();
  /// Sends SIGKILL (no-op once the child has been reaped).
  void kill();

 private:
  friend MPROC_API std::vector<Process> active_children();
  struct Tag {};
  Process(ProcessOptions options, std::function<void()> target, Tag);
  explicit Process(std::shared_ptr<detail::ProcessState> state) : state_(std::move(state)) {}
  bool join_for(std::chrono::nanoseconds timeout);

  std::shared_ptr<detail::ProcessState> state_;
};

/// The children started by this process (with Process) that are still running; finished
/// ones are reaped, as Python's active_children() does. Thread-safe.
MPROC_API std::vector<Process> active_children();

}  // namespace mproc
