#include "os/parent_watch.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "os/platform.hpp"

namespace mproc::detail::parent_watch {
namespace {

// The state is plain ints under a pthread mutex: the atfork handlers must not allocate
// or throw.
pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
bool g_atfork_registered = false;  // guarded by g_mutex
int g_read = -1;                   // this process's own life pipe, guarded by g_mutex
int g_write = -1;
pid_t g_owner = 0;           // the process that created g_read/g_write
int g_inherited_read = -1;   // the read end of our parent's life pipe, if it had one
pid_t g_inherited_pid = 0;   // the process that adopted g_inherited_read

// Holding g_mutex across fork() makes the fds seen by the child consistent: a pipe being
// created by another thread at the moment of fork() is either wholly recorded (and so
// closed in the child) or not created yet. Nothing is ever done under g_mutex except
// recording the pipe, so taking it in the prepare handler cannot deadlock.
void atfork_prepare() noexcept { ::pthread_mutex_lock(&g_mutex); }
void atfork_parent() noexcept { ::pthread_mutex_unlock(&g_mutex); }
void atfork_child() noexcept {
  // The forking thread locked it in atfork_prepare, and that thread is this one now.
  ::pthread_mutex_unlock(&g_mutex);
  after_fork_in_child();
}

void* watch(void* arg) {
  const int fd = static_cast<int>(reinterpret_cast<std::intptr_t>(arg));
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    const int r = ::poll(&p, 1, -1);
    if (r < 0 && errno == EINTR) continue;
    // POLLNVAL: the program closed the fd behind our back; nothing left to watch.
    if (r < 0 || (p.revents & POLLNVAL) != 0) return nullptr;
    // Nobody ever writes to the pipe: any event is the write end's last copy closing,
    // which means the parent process has ended.
    ::kill(::getpid(), SIGKILL);
  }
}

bool start_watcher(int fd) noexcept {
  pthread_attr_t attr;
  if (::pthread_attr_init(&attr) != 0) return false;
  ::pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  // poll() and kill() need almost no stack; do not spend the default 8 MiB of address
  // space (a failure here just keeps the default).
  ::pthread_attr_setstacksize(&attr, 64 * 1024);
  // The watcher must never be the thread a process-directed signal is delivered to:
  // the program's own threads expect them. It inherits this mask.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t thread;
  const int err = ::pthread_create(&thread, &attr, &watch,
                                   reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)));
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::pthread_attr_destroy(&attr);
  return err == 0;
}

}  // namespace

void ensure_life_pipe() {
  ::pthread_mutex_lock(&g_mutex);
  if (!g_atfork_registered) {
    if (const int err = ::pthread_atfork(&atfork_prepare, &atfork_parent, &atfork_child); err != 0) {
      ::pthread_mutex_unlock(&g_mutex);
      throw_system_error(err, "pthread_atfork for the life pipe");
    }
    g_atfork_registered = true;
  }
  if (g_read < 0) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      const int err = errno;
      ::pthread_mutex_unlock(&g_mutex);
      throw_system_error(err, "pipe2 for the life pipe");
    }
    g_read = fds[0];
    g_write = fds[1];
    g_owner = ::getpid();
  }
  ::pthread_mutex_unlock(&g_mutex);
}

void after_fork_in_child() noexcept {
  const pid_t self = ::getpid();
  if (g_read < 0) {
    // Our parent had no life pipe of its own; a read end adopted by an ancestor means
    // nothing here.
    if (g_inherited_pid != self && g_inherited_read >= 0) {
      ::close(g_inherited_read);
      g_inherited_read = -1;
    }
    return;
  }
  if (g_owner == self) return;
  // The write end must go first and at once: while any child holds a copy, the parent's
  // death produces no POLLHUP.
  ::close(g_write);
  if (g_inherited_read >= 0) ::close(g_inherited_read);
  g_inherited_read = g_read;
  g_inherited_pid = self;
  g_read = -1;
  g_write = -1;
  g_owner = 0;
}

bool die_with_parent(pid_t parent, bool forked_from_main_thread) noexcept {
  after_fork_in_child();  // a no-op when the atfork handler already ran
  if (forked_from_main_thread) ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The parent may have died before prctl(): then no signal will ever come.
  if (::getppid() != parent) ::kill(::getpid(), SIGKILL);
  if (g_inherited_read < 0) return false;
  // If the parent died in the meantime, the first poll() returns at once: no race.
  return start_watcher(g_inherited_read);
}

void ignore_parent() noexcept {
  after_fork_in_child();
  if (g_inherited_read >= 0) {
    ::close(g_inherited_read);
    g_inherited_read = -1;
  }
}

}  // namespace mproc::detail::parent_watch
