// mproc::Process: Python's multiprocessing.Process with the fork start method.
//
// start() forks: the child has this process's memory as it was at that moment, so any
// callable and any arguments work (nothing is serialized); its writes go to its own copy.
// The child runs the callable and ends with _exit() after flushing its own stdout and
// stderr: it never runs the parent's atexit handlers or static destructors. start()
// flushes stdout and stderr first (as Python does) and the child discards any buffered
// output it inherited, so nothing the parent printed appears twice. An exception escaping
// the callable prints "Process <name> (pid N): <type>: <what()>" to stderr and makes the
// exit code 1. A callable that calls exit() itself runs the atexit handlers of its copy of
// the parent (as in Python); stdio streams other than stdout and stderr are not flushed.
//
// Lifetime. A Process is a handle, like Python's object: copies (and the ones
// active_children() returns) refer to the same child; a moved-from Process still does.
// When the last handle goes away, a started child that was never joined is joined (like
// std::jthread: the destructor blocks until it ends), and a daemon child is killed with
// SIGKILL and reaped instead. So no zombie outlives the last handle. The callable and its
// arguments are released in the parent once start() has forked.
//
// Daemons end with their parent process however it ends: an atexit handler kills and
// reaps them on exit() or return from main, and each daemon watches a "life pipe" whose
// only writer is its parent, so it kills itself when the parent dies, SIGKILL included
// (plus PR_SET_PDEATHSIG when started from the main thread). A daemon started from a
// thread that has since exited lives on while its parent does.
//
// Only the process that created a Process may start, join, terminate or kill it; in a
// forked child the copies of the parent's handles are read-only snapshots (start() and
// friends throw std::logic_error there). Every method is thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/types.h>

#include "export.hpp"

namespace mproc {

/// What Python's current_process() tells about the calling process.
struct ProcessInfo {
  pid_t pid;            ///< getpid(), read on each call (right after fork, too)
  std::string name;     ///< "MainProcess", a Process's name, or "PoolWorker-N"
  bool is_pool_worker;  ///< true inside a worker of a process Pool
};

/// The calling process. Does not block. Thread-safe.
MPROC_API ProcessInfo current_process();

/// Options of a Process, as designated initializers: `Process({.daemon = true}, f)`.
struct ProcessOptions {
  /// Empty: "Process-N" as in Python, N counting the Processes created in this process
  /// ("Process-2:1" for the first one created inside the child "Process-2").
  std::string name{};
  /// Killed when this process ends, instead of outliving it.
  bool daemon = false;
};

namespace detail {

struct ProcessState;

/// Type-erased callable run by the child. It lives in the parent's memory, which the child
/// inherits, so it is called in the child without having been copied or serialized.
class ProcessTarget {
 public:
  virtual ~ProcessTarget() = default;
  virtual void run() = 0;
};

template <class F, class... Args>
class BoundProcessTarget final : public ProcessTarget {
 public:
  template <class G, class... A>
  explicit BoundProcessTarget(G&& g, A&&... a)
      : f_(std::forward<G>(g)), args_(std::forward<A>(a)...) {}
  // The child calls run() once and ends: moving out of the stored values, as std::thread
  // does, lets move-only arguments and rvalue-reference parameters work.
  void run() override { std::apply(std::move(f_), std::move(args_)); }

 private:
  F f_;
  std::tuple<Args...> args_;
};

/// Names the calling process for current_process(); the Pool calls it in its workers.
/// Thread-safe.
MPROC_API void set_current_process(std::string name, bool is_pool_worker);

}  // namespace detail

class MPROC_API Process {
 public:
  /// A Process that will run std::invoke(f, args...) in a child; f and args are stored
  /// decayed (copied or moved in, as std::thread does). Nothing runs until start().
  template <class F, class... Args>
    requires std::is_invocable_v<std::decay_t<F>, std::decay_t<Args>...>
  explicit Process(F&& f, Args&&... args)
      : Process(ProcessOptions{}, std::forward<F>(f), std::forward<Args>(args)...) {}

  /// The same with a name and the daemon flag.
  template <class F, class... Args>
    requires std::is_invocable_v<std::decay_t<F>, std::decay_t<Args>...>
  Process(ProcessOptions options, F&& f, Args&&... args)
      : Process(std::move(options),
                std::unique_ptr<detail::ProcessTarget>(
                    new detail::BoundProcessTarget<std::decay_t<F>, std::decay_t<Args>...>(
                        std::forward<F>(f), std::forward<Args>(args)...))) {}

  // A handle: copying shares the child. No move operations are declared, so a "move"
  // copies and a Process is never empty.
  Process(const Process&) = default;
  Process& operator=(const Process&) = default;
  /// Releases this handle; the last one joins (or, for a daemon, kills and reaps) a
  /// started child that was not joined. Blocks then. Never throws.
  ~Process();

  /// Forks the child, which runs the callable. Flushes stdout and stderr first.
  /// Throws std::logic_error if already started (or not called in the process that
  /// created this Process), std::system_error ("fork for Process", "pidfd_open for
  /// Process") if the OS refuses.
  void start();

  /// Blocks until the child ends and reaps it. Returns at once if it was reaped already.
  /// Throws std::logic_error if not started.
  void join();
  /// Blocks at most `timeout` (sleeping in poll() on a pidfd); returns whether the child
  /// has ended (and then it is reaped). Throws std::logic_error if not started.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    // Saturate rather than overflow: join(std::chrono::hours::max()) waits for ever.
    if (std::chrono::duration<double, std::nano>(timeout).count() >= 9.2e18) {
      join();
      return true;
    }
    return join_for(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }

  /// True from start() until the child ends. Reaps an ended child (as Python does).
  /// Does not block.
  bool is_alive() const;
  /// nullopt before start() and while the child runs; then 0, its exit status, or minus
  /// the signal that killed it (-9 after kill(), -15 after terminate()). Reaps an ended
  /// child. Does not block.
  std::optional<int> exitcode() const;
  /// The child's pid; 0 before start().
  pid_t pid() const;
  std::string name() const;
  void set_name(std::string name);
  bool daemon() const;
  /// Before start() only; throws std::logic_error after.
  void set_daemon(bool daemon);
  /// Sends SIGTERM. Does nothing before start() or once the child has been reaped.
  /// Throws std::logic_error outside the creating process.
  void terminate();
  /// Sends SIGKILL. Does nothing before start() or once the child has been reaped.
  /// Throws std::logic_error outside the creating process.
  void kill();

  /// Whether two handles refer to the same Process.
  friend bool operator==(const Process& a, const Process& b) noexcept {
    return a.state_ == b.state_;
  }

 private:
  friend MPROC_API std::vector<Process> active_children();
  Process(ProcessOptions options, std::unique_ptr<detail::ProcessTarget> target);
  explicit Process(std::shared_ptr<detail::ProcessState> state) noexcept;
  bool join_for(std::chrono::nanoseconds timeout);

  std::shared_ptr<detail::ProcessState> state_;
};

/// Handles to the children this process started with Process that are still running;
/// finished ones are reaped on the way, as Python's active_children() does. Does not
/// block. Thread-safe.
MPROC_API std::vector<Process> active_children();

}  // namespace mproc
