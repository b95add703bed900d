#include "mproc/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio_ext.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "os/parent_watch.hpp"
#include "os/platform.hpp"
#include "trace_events.hpp"

namespace mproc {
namespace detail {

// Lock order: registry mutex, then a ProcessState's mutex. Nothing holds a ProcessState's
// mutex while it forks, blocks or runs user code (the one exception: the atexit handler
// reaps a child it has just SIGKILLed, which is immediate); start() forks holding no
// lock at all.
struct ProcessState : std::enable_shared_from_this<ProcessState> {
  ProcessState(std::string name_, std::string identity_, bool daemon_,
               std::unique_ptr<ProcessTarget> target_);
  ProcessState(const ProcessState&) = delete;
  ProcessState& operator=(const ProcessState&) = delete;
  ~ProcessState();

  /// The process that created this object: the only one that may fork, wait for or
  /// signal the child. In a forked child the inherited copies are snapshots.
  const pid_t owner;
  const std::string identity;  // "2" or "2:1": the numbers of Python's default names

  mutable std::mutex mutex;
  std::unique_ptr<ProcessTarget> target;  // released in the parent once forked
  std::string name;
  bool daemon;
  bool starting = false;  // between start()'s checks and the fork's outcome
  bool started = false;
  pid_t pid = 0;
  /// What join() sleeps on: a pidfd, or where pidfd_open() is refused, the read end of a
  /// pipe whose write end only the child holds (Python's fork "sentinel"), which reports
  /// end-of-file when the child exits. Shared with threads sleeping in poll() on it, so
  /// that reaping never closes an fd number another thread is about to poll.
  std::shared_ptr<UniqueFd> waitfd;
  bool waitfd_is_pidfd = false;
  std::optional<int> status;
  std::uint32_t trace_slot = 0;  // its event in the shared trace slots (trace_to), + 1

  bool owned_here() const noexcept { return owner == ::getpid(); }
  /// waitpid(WNOHANG); records the status and drops waitfd once. `mutex` held.
  void try_reap_locked() noexcept;
  /// The child has ended or is about to: SIGKILL if asked, then a blocking waitpid.
  /// `mutex` held (or the object otherwise unreachable).
  void reap_blocking_locked(bool kill_first) noexcept;
};

namespace {

/// pidfd_open(2) needs Linux 5.3; valgrind 3.19 does not know it and some seccomp
/// profiles (Docker before 20.10) refuse it. Asked once.
bool pidfd_supported() noexcept {
  static const bool supported = [] {
    const long fd = ::syscall(SYS_pidfd_open, ::getpid(), 0);
    if (fd < 0) return false;
    ::close(static_cast<int>(fd));
    return true;
  }();
  return supported;
}

/// Process-wide state. Leaked on purpose: atexit handlers and static destructors of the
/// program (a static Process) may still use it after our own statics are gone.
struct Globals {
  std::mutex registry_mutex;
  std::vector<ProcessState*> registry;  // every ProcessState alive in this process

  std::mutex current_mutex;  // a leaf: nothing else is locked while it is held
  std::string current_name = "MainProcess";
  bool current_is_pool_worker = false;
  std::string identity_prefix;         // "" in the main process, "2:" in Process-2
  std::atomic<unsigned> counter{0};    // Processes created in this process
};

// pthread_atfork handlers. Holding both mutexes across every fork() of the process (ours,
// the pool's, the program's) gives the child consistent copies it can lock. This cannot
// deadlock: current_mutex is a leaf, and a registry_mutex holder only ever waits for a
// ProcessState mutex, whose holders never wait for anything (see the lock order above).
void atfork_prepare() noexcept;
void atfork_parent() noexcept;
void atfork_child() noexcept;

Globals& globals() {
  static Globals* g = [] {
    auto* p = new Globals;
    ::pthread_atfork(&atfork_prepare, &atfork_parent, &atfork_child);
    return p;
  }();
  return *g;
}

void atfork_prepare() noexcept {
  globals().registry_mutex.lock();
  globals().current_mutex.lock();
}
void atfork_parent() noexcept {
  globals().current_mutex.unlock();
  globals().registry_mutex.unlock();
}
void atfork_child() noexcept {
  Globals& g = globals();
  // The parent's children are not this process's children. (The entries stay valid
  // objects in the child's copy of memory; only the list forgets them.)
  g.registry.clear();
  g.current_mutex.unlock();
  g.registry_mutex.unlock();
}

/// SIGKILLs and reaps the daemon children still running when this process exits
/// normally; registered with atexit() by the first daemon start().
void kill_daemons_at_exit() noexcept {
  Globals& g = globals();
  std::lock_guard lock(g.registry_mutex);
  for (ProcessState* s : g.registry) {
    std::lock_guard state_lock(s->mutex);
    if (s->owned_here() && s->daemon && s->started && !s->status)
      s->reap_blocking_locked(true);
  }
}

void flush_stdio() noexcept {
  std::fflush(stdout);
  std::fflush(stderr);
  try {
    std::cout.flush();
    std::cerr.flush();
    std::clog.flush();
  } catch (...) {
  }
}

[[noreturn]] void child_main(ProcessState& s, pid_t parent, bool from_main_thread,
                             int sentinel_read) noexcept {
  if (sentinel_read >= 0) ::close(sentinel_read);  // the parent's end
  // Output the parent had buffered when fork() copied it belongs to the parent, which
  // will write it: drop our copy. (start() flushed, but another thread may have printed
  // since.)
  __fpurge(stdout);
  __fpurge(stderr);
  // Our own handle, if the callable uses it, must work: another thread of the parent may
  // have held its mutex at the fork, and that thread does not exist here.
  new (&s.mutex) std::mutex;
  s.started = true;
  s.starting = false;
  s.pid = ::getpid();
  const std::string name = s.name;
  {
    // Children of this child are numbered afresh under its identity: "Process-2:1".
    Globals& g = globals();
    std::lock_guard lock(g.current_mutex);
    g.identity_prefix = s.identity + ":";
    g.counter = 0;
    g.current_name = name;
    g.current_is_pool_worker = false;
  }
  if (s.daemon) {
    if (!parent_watch::die_with_parent(parent, from_main_thread) && !from_main_thread)
      write_all(2, "mproc: a daemon Process could not start its parent watcher thread; "
                   "it may outlive its parent\n");
  } else {
    parent_watch::ignore_parent();
  }
  int code = 0;
  try {
    s.target->run();
  } catch (...) {
    flush_stdio();
    try {
      write_all(2, fmt::format("Process {} (pid {}): {}: {}\n", name, ::getpid(),
                               current_exception_type_name(), current_exception_message()));
    } catch (...) {
      write_all(2, "Process: an exception escaped the callable\n");
    }
    code = 1;
  }
  flush_stdio();
  ::_exit(code);
}

std::logic_error not_owner(const char* what) {
  return std::logic_error(fmt::format(
      "Process::{}: only the process that created a Process may do that", what));
}

}  // namespace

ProcessState::ProcessState(std::string name_, std::string identity_, bool daemon_,
                           std::unique_ptr<ProcessTarget> target_)
    : owner(::getpid()),
      identity(std::move(identity_)),
      target(std::move(target_)),
      name(std::move(name_)),
      daemon(daemon_) {
  Globals& g = globals();
  std::lock_guard lock(g.registry_mutex);
  g.registry.push_back(this);
}

ProcessState::~ProcessState() {
  {
    // After this, no other thread can reach the object: the registry was the only way.
    Globals& g = globals();
    std::lock_guard lock(g.registry_mutex);
    if (auto it = std::find(g.registry.begin(), g.registry.end(), this); it != g.registry.end()) {
      *it = g.registry.back();
      g.registry.pop_back();
    }
  }
  if (owned_here() && started && !status) reap_blocking_locked(daemon);
}

void ProcessState::try_reap_locked() noexcept {
  if (!started || status) return;
  int ws = 0;
  const pid_t r = ::waitpid(pid, &ws, WNOHANG);
  if (r == pid) {
    status = status_code(ws);
  } else if (r < 0 && errno == ECHILD) {
    // Someone else reaped it (SIGCHLD set to SIG_IGN, or a waitpid(-1) elsewhere): the
    // status is lost. Python's subprocess reports 0 in this case too.
    status = 0;
  } else {
    return;
  }
  if (trace_slot != 0) [[unlikely]] trace_process_exit(trace_slot, *status);
  waitfd.reset();
}

void ProcessState::reap_blocking_locked(bool kill_first) noexcept {
  if (!started || status) return;
  if (kill_first) ::kill(pid, SIGKILL);  // not reaped yet, so the pid is still our child's
  int ws = 0;
  const pid_t r = retry_eintr([&] { return ::waitpid(pid, &ws, 0); });
  status = r == pid ? status_code(ws) : 0;
  if (trace_slot != 0) [[unlikely]] trace_process_exit(trace_slot, *status);
  waitfd.reset();
}

void set_current_process(std::string name, bool is_pool_worker) {
  Globals& g = globals();
  std::lock_guard lock(g.current_mutex);
  g.current_name = std::move(name);
  g.current_is_pool_worker = is_pool_worker;
}

}  // namespace detail

ProcessInfo current_process() {
  detail::Globals& g = detail::globals();
  std::lock_guard lock(g.current_mutex);
  return ProcessInfo{::getpid(), g.current_name, g.current_is_pool_worker};
}

Process::Process(ProcessOptions options, std::unique_ptr<detail::ProcessTarget> target) {
  detail::Globals& g = detail::globals();
  const unsigned n = ++g.counter;
  std::string identity;
  {
    std::lock_guard lock(g.current_mutex);  // identity_prefix changes only after fork
    identity = g.identity_prefix + std::to_string(n);
  }
  std::string name = options.name.empty() ? "Process-" + identity : std::move(options.name);
  state_ = std::make_shared<detail::ProcessState>(std::move(name), std::move(identity),
                                                  options.daemon, std::move(target));
}

Process::Process(std::shared_ptr<detail::ProcessState> state) noexcept
    : state_(std::move(state)) {}

Process::~Process() = default;

void Process::start() {
  auto& s = *state_;
  if (!s.owned_here()) throw detail::not_owner("start");
  bool daemon = false;
  {
    std::lock_guard lock(s.mutex);
    if (s.started || s.starting) throw std::logic_error("Process::start: already started");
    s.starting = true;
    daemon = s.daemon;
  }
  // From here until the fork's outcome is recorded, `starting` keeps set_daemon() and a
  // second start() out; no lock is held across fork() (see ProcessState).
  auto fail = [&s](int err, const char* context) {
    {
      std::lock_guard lock(s.mutex);
      s.starting = false;
    }
    detail::throw_system_error(err, context);
  };
  if (daemon) {
    try {
      detail::parent_watch::ensure_life_pipe();
    } catch (...) {
      std::lock_guard lock(s.mutex);
      s.starting = false;
      throw;
    }
    static const bool at_exit_registered = [] {
      std::atexit([] { detail::kill_daemons_at_exit(); });
      return true;
    }();
    (void)at_exit_registered;
  }
  const pid_t parent = ::getpid();
  // PR_SET_PDEATHSIG follows the forking thread; only the main thread lives as long as
  // the process does.
  const bool from_main_thread = ::gettid() == parent;
  const bool use_pidfd = detail::pidfd_supported();
  detail::UniqueFd sentinel_read, sentinel_write;
  if (!use_pidfd) {
    // O_CLOEXEC, so that only this child keeps the write end, not programs it runs. (A
    // child forked by another thread right now could inherit it too: its exit would then
    // delay our EOF. That is the price of running without pidfds.)
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) fail(errno, "pipe2 for Process");
    sentinel_read.reset(fds[0]);
    sentinel_write.reset(fds[1]);
  }
  detail::flush_stdio();
  const pid_t pid = ::fork();
  if (pid < 0) fail(errno, "fork for Process");
  if (pid == 0) detail::child_main(s, parent, from_main_thread, sentinel_read.get());

  detail::UniqueFd waitfd;
  if (use_pidfd) {
    // Taken before anyone can reap the child, so the pidfd cannot name a reused pid.
    waitfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!waitfd) {
      const int err = errno;
      ::kill(pid, SIGKILL);
      detail::retry_eintr([&] { return ::waitpid(pid, nullptr, 0); });
      fail(err, "pidfd_open for Process");
    }
  } else {
    sentinel_write.reset();
    waitfd = std::move(sentinel_read);
  }
  std::unique_ptr<detail::ProcessTarget> target;
  {
    std::lock_guard lock(s.mutex);
    s.waitfd = std::make_shared<detail::UniqueFd>(std::move(waitfd));
    s.waitfd_is_pidfd = use_pidfd;
    s.pid = pid;
    s.started = true;
    s.starting = false;
    if (detail::trace_slots() != nullptr) [[unlikely]]
      s.trace_slot = detail::trace_process_start(pid, s.name);
    target = std::move(s.target);
  }
  // Destroyed outside the lock: the callable may own a handle to this very Process (a
  // cycle otherwise, Python's bpo-30775) and its destructor may do anything.
  target.reset();
}

void Process::join() { join_for(std::chrono::nanoseconds::max()); }

bool Process::join_for(std::chrono::nanoseconds timeout) {
  auto& s = *state_;
  if (!s.owned_here()) throw detail::not_owner("join");
  using Clock = std::chrono::steady_clock;
  const bool forever = timeout == std::chrono::nanoseconds::max();
  const auto start = Clock::now();
  const auto deadline = forever || timeout > Clock::time_point::max() - start
                            ? Clock::time_point::max()
                            : start + std::max(timeout, std::chrono::nanoseconds::zero());
  for (;;) {
    std::shared_ptr<detail::UniqueFd> fd;
    bool is_pidfd = false;
    pid_t pid = 0;
    {
      std::lock_guard lock(s.mutex);
      if (!s.started) throw std::logic_error("Process::join: the Process was not started");
      s.try_reap_locked();
      if (s.status) return true;
      fd = s.waitfd;
      is_pidfd = s.waitfd_is_pidfd;
      pid = s.pid;
    }
    timespec ts{};
    timespec* tsp = nullptr;
    if (deadline != Clock::time_point::max()) {
      const auto left = std::max(deadline - Clock::now(), Clock::duration::zero());
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      tsp = &ts;
    }
    // A pidfd polls readable once the child has exited (pidfd_open(2)); the sentinel
    // pipe, once the child's write end is closed.
    pollfd p{fd->get(), POLLIN, 0};
    const int r = ::ppoll(&p, 1, tsp, nullptr);
    if (r < 0 && errno != EINTR) detail::throw_system_error(errno, "ppoll for Process::join");
    if (r > 0) {
      {
        std::lock_guard lock(s.mutex);
        s.try_reap_locked();
        if (s.status) return true;
      }
      // Readable but not waitable: with a pidfd, not expected; with the sentinel, the
      // child closed its end (exec, close_range) and still runs. Wait until the child is
      // waitable without reaping it (WNOWAIT: another thread may still reap), rather than
      // spin on an fd that stays readable.
      siginfo_t info{};
      const auto left = deadline - Clock::now();
      if (is_pidfd) {
        if (detail::retry_eintr([&] {
              return ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd->get()),
                              &info, WEXITED | WNOWAIT);
            }) != 0 &&
            errno == EINVAL)
          ::usleep(1000);  // Linux 5.3 has pidfds but not P_PIDFD
      } else if (forever) {
        // By pid: not reaped yet when we looked, and only this process reaps it.
        detail::retry_eintr([&] { return ::waitid(P_PID, static_cast<id_t>(pid), &info,
                                                  WEXITED | WNOWAIT); });
      } else if (left > Clock::duration::zero()) {
        // No fd tells us anything any more: check a few times a second until the deadline.
        std::this_thread::sleep_for(std::min<Clock::duration>(left, std::chrono::milliseconds(10)));
      }
    }
    if (Clock::now() >= deadline) {
      std::lock_guard lock(s.mutex);
      s.try_reap_locked();
      return s.status.has_value();
    }
  }
}

bool Process::is_alive() const {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  // In a child, only the handle of the calling process itself is alive (as in Python).
  if (!s.owned_here()) return s.started && s.pid == ::getpid();
  s.try_reap_locked();
  return s.started && !s.status;
}

std::optional<int> Process::exitcode() const {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  if (!s.owned_here()) return std::nullopt;
  s.try_reap_locked();
  return s.status;
}

pid_t Process::pid() const {
  std::lock_guard lock(state_->mutex);
  return state_->pid;
}

std::string Process::name() const {
  std::lock_guard lock(state_->mutex);
  return state_->name;
}

void Process::set_name(std::string name) {
  std::lock_guard lock(state_->mutex);
  state_->name = std::move(name);
}

bool Process::daemon() const {
  std::lock_guard lock(state_->mutex);
  return state_->daemon;
}

void Process::set_daemon(bool daemon) {
  std::lock_guard lock(state_->mutex);
  if (state_->started || state_->starting)
    throw std::logic_error("Process::set_daemon: the Process has already started");
  state_->daemon = daemon;
}

namespace {
void send_signal(detail::ProcessState& s, int sig, const char* what) {
  if (!s.owned_here()) throw detail::not_owner(what);
  std::lock_guard lock(s.mutex);
  if (!s.started || s.status) return;
  // Not reaped yet (we hold the lock), so the pid cannot have been reused: kill() is
  // exact. A failure can only be EPERM after the child changed its credentials.
  if (::kill(s.pid, sig) != 0 && errno != ESRCH)
    detail::throw_system_error(errno, fmt::format("kill for Process::{}", what));
}
}  // namespace

void Process::terminate() { send_signal(*state_, SIGTERM, "terminate"); }
void Process::kill() { send_signal(*state_, SIGKILL, "kill"); }

std::vector<Process> active_children() {
  // Declared before the lock: should anything throw, these handles (one of which may be
  // the last, its destructor taking the registry lock) are released after the unlock.
  std::vector<std::shared_ptr<detail::ProcessState>> alive;
  {
    detail::Globals& g = detail::globals();
    std::lock_guard lock(g.registry_mutex);
    for (detail::ProcessState* s : g.registry) {
      {
        std::lock_guard state_lock(s->mutex);
        if (!s->owned_here() || !s->started) continue;
        s->try_reap_locked();
        if (s->status) continue;
      }
      // Empty if the last handle is being destroyed right now (its destructor waits for
      // the registry lock we hold): then it is not returned.
      if (auto p = s->weak_from_this().lock()) alive.push_back(std::move(p));
    }
  }
  std::vector<Process> out;
  out.reserve(alive.size());
  for (auto& p : alive) out.push_back(Process(std::move(p)));
  return out;
}

}  // namespace mproc
