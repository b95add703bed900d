#include "mproc/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio_ext.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "platform.hpp"

namespace mproc {
namespace detail {

struct ProcessState {
  mutable std::mutex mutex;
  std::function<void()> target;
  std::string name;
  bool daemon = false;
  bool started = false;
  pid_t pid = 0;
  UniqueFd pidfd;
  std::optional<int> status;
  int pollers = 0;  // threads in poll() on pidfd: it is closed only when none is

  ~ProcessState();
  /// waitpid(WNOHANG) or blocking; records the status once. Call with `mutex` held.
  void reap_locked(bool block);
};

namespace {

std::mutex current_mutex;
std::string current_name = "MainProcess";
bool current_is_worker = false;

/// The children this process started, for active_children() and for killing daemons at
/// exit. Never destroyed: atexit handlers and late destructors may still use it.
struct Registry {
  std::mutex mutex;
  std::vector<std::weak_ptr<ProcessState>> children;
  std::atomic<unsigned> counter{0};
};
Registry& registry() {
  static auto* r = new Registry;
  return *r;
}

/// The life pipe: its write end exists only in this process, so its read end (in daemon
/// children) reports end-of-file when this process is gone, however it died. Created on
/// the first daemon start.
int life_pipe[2] = {-1, -1};
std::once_flag life_pipe_once;

int status_code(int wstatus) {
  if (WIFSIGNALED(wstatus)) return -WTERMSIG(wstatus);
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  return 0;
}

void kill_daemons_at_exit() {
  Registry& r = registry();
  std::vector<std::shared_ptr<ProcessState>> daemons;
  {
    std::lock_guard lock(r.mutex);
    for (auto& w : r.children)
      if (auto s = w.lock(); s && s->daemon) daemons.push_back(std::move(s));
  }
  for (auto& s : daemons) {
    std::lock_guard lock(s->mutex);
    if (s->started && !s->status) {
      ::kill(s->pid, SIGKILL);
      s->reap_locked(true);
    }
  }
}

void flush_stdio() {
  std::fflush(stdout);
  std::fflush(stderr);
  std::cout.flush();
  std::cerr.flush();
}

[[noreturn]] void child_main(ProcessState& s, bool from_main_thread, pid_t parent) {
  // Output the parent had buffered but not written belongs to the parent: drop our copy.
  __fpurge(stdout);
  __fpurge(stderr);
  {
    Registry& r = registry();
    // The parent's children are not ours. (Forked while another thread held the registry
    // lock, the mutex would stay locked here: rebuild it rather than lock it.)
    new (&r.mutex) std::mutex;
    r.children.clear();
  }
  if (life_pipe[1] >= 0) ::close(life_pipe[1]);
  set_current_process(s.name, false);
  if (s.daemon) {
    // PR_SET_PDEATHSIG fires when the forking *thread* ends, so use it only when that is
    // the main thread; the life pipe covers every case, including a short-lived thread.
    if (from_main_thread) ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    if (life_pipe[0] >= 0) {
      const int fd = life_pipe[0];
      std::thread([fd] {
        pollfd p{fd, POLLIN, 0};
        while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
        }
        ::kill(::getpid(), SIGKILL);
      }).detach();
    }
  }
  int code = 0;
  try {
    s.target();
  } catch (...) {
    flush_stdio();
    write_all(2, fmt::format("Process {} (pid {}): {}: {}\n", s.name, ::getpid(),
                             current_exception_type_name(), current_exception_message()));
    code = 1;
  }
  flush_stdio();
  ::_exit(code);
}

}  // namespace

void set_current_process(std::string name, bool is_pool_worker) {
  std::lock_guard lock(current_mutex);
  current_name = std::move(name);
  current_is_worker = is_pool_worker;
}

void ProcessState::reap_locked(bool block) {
  if (!started || status) return;
  int ws = 0;
  const pid_t r = retry_eintr([&] { return ::waitpid(pid, &ws, block ? 0 : WNOHANG); });
  if (r == pid) {
    status = status_code(ws);
  } else if (r < 0 && errno == ECHILD) {
    status = 0;  // reaped by someone else (SIGCHLD ignored): the status is lost
  } else {
    return;
  }
  if (pollers == 0) pidfd.reset();
}

ProcessState::~ProcessState() {
  if (!started || status) return;
  if (daemon) ::kill(pid, SIGKILL);
  reap_locked(true);
}

}  // namespace detail

ProcessInfo current_process() {
  std::lock_guard lock(detail::current_mutex);
  return ProcessInfo{::getpid(), detail::current_name, detail::current_is_worker};
}

Process::Process(ProcessOptions options, std::function<void()> target, Tag)
    : state_(std::make_shared<detail::ProcessState>()) {
  state_->target = std::move(target);
  const unsigned n = ++detail::registry().counter;
  state_->name = options.name.empty() ? fmt::format("Process-{}", n) : std::move(options.name);
  state_->daemon = options.daemon;
}

void Process::start() {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  if (s.started) throw std::logic_error("Process::start: already started");
  if (s.daemon) {
    std::call_once(detail::life_pipe_once, [] {
      if (::pipe2(detail::life_pipe, O_CLOEXEC) != 0)
        detail::throw_system_error(errno, "pipe2 for Process daemon");
      std::atexit(detail::kill_daemons_at_exit);
    });
  }
  const pid_t parent = ::getpid();
  const bool from_main_thread = ::gettid() == parent;
  detail::flush_stdio();
  const pid_t pid = ::fork();
  if (pid < 0) detail::throw_system_error(errno, "fork for Process");
  if (pid == 0) detail::child_main(s, from_main_thread, parent);
  s.started = true;
  s.pid = pid;
  // A pidfd lets join(timeout) sleep in poll() instead of polling waitpid. Taken before
  // anyone can reap the child, so it cannot name a reused pid.
  s.pidfd = detail::UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (s.pidfd) ::fcntl(s.pidfd.get(), F_SETFD, FD_CLOEXEC);
  auto& r = detail::registry();
  std::lock_guard rl(r.mutex);
  std::erase_if(r.children, [](auto& w) { return w.expired(); });
  r.children.push_back(state_);
}

void Process::join() { join_for(std::chrono::nanoseconds::max()); }

bool Process::join_for(std::chrono::nanoseconds timeout) {
  auto& s = *state_;
  const auto deadline = timeout == std::chrono::nanoseconds::max()
                            ? std::chrono::steady_clock::time_point::max()
                            : std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int fd;
    {
      std::lock_guard lock(s.mutex);
      if (!s.started) throw std::logic_error("Process::join: not started");
      s.reap_locked(false);
      if (s.status) return true;
      fd = s.pidfd.get();
      ++s.pollers;
    }
    int ms = -1;
    if (deadline != std::chrono::steady_clock::time_point::max()) {
      const auto left = deadline - std::chrono::steady_clock::now();
      ms = static_cast<int>(std::max<long long>(
          0, std::chrono::ceil<std::chrono::milliseconds>(left).count()));
    }
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, ms);
    } else {
      // No pidfd (kernel < 5.3): poll the status every millisecond.
      ::usleep(static_cast<useconds_t>(ms < 0 || ms > 1 ? 1000 : ms * 1000));
    }
    {
      std::lock_guard lock(s.mutex);
      --s.pollers;
      s.reap_locked(false);
      if (s.status) {
        if (s.pollers == 0) s.pidfd.reset();
        return true;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
}

bool Process::is_alive() {
  std::lock_guard lock(state_->mutex);
  state_->reap_locked(false);
  return state_->started && !state_->status;
}

std::optional<int> Process::exitcode() {
  std::lock_guard lock(state_->mutex);
  state_->reap_locked(false);
  return state_->status;
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
  if (state_->started) throw std::logic_error("Process::set_daemon: already started");
  state_->daemon = daemon;
}

namespace {
void send_signal(detail::ProcessState& s, int sig) {
  std::lock_guard lock(s.mutex);
  if (!s.started || s.status) return;
  // Through the pidfd when there is one: immune to pid reuse.
  if (s.pidfd && ::syscall(SYS_pidfd_send_signal, s.pidfd.get(), sig, nullptr, 0) == 0) return;
  ::kill(s.pid, sig);
}
}  // namespace

void Process::terminate() { send_signal(*state_, SIGTERM); }
void Process::kill() { send_signal(*state_, SIGKILL); }

std::vector<Process> active_children() {
  std::vector<std::shared_ptr<detail::ProcessState>> all;
  {
    auto& r = detail::registry();
    std::lock_guard lock(r.mutex);
    std::erase_if(r.children, [](auto& w) { return w.expired(); });
    for (auto& w : r.children)
      if (auto s = w.lock()) all.push_back(std::move(s));
  }
  std::vector<Process> out;
  for (auto& s : all) {
    Process p(s);
    if (p.is_alive()) out.push_back(std::move(p));
  }
  return out;
}

}  // namespace mproc
