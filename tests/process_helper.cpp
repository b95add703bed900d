// Programs the Process tests run in a process of their own. Each prints pids one per
// line (flushed) for the test to watch, then waits to be killed or exits as named:
//   stdout               printf without flushing (stdout is a file: fully buffered),
//                        start a child that prints, join, exit: each line must appear once.
//   daemon               start a daemon that sleeps; print its pid; sleep.
//   daemon-thread        the same, started from a std::thread that has exited since.
//   daemon-thread-fork   daemon-thread, then fork() a plain child that sleeps (it must not
//                        keep the life pipe open); print the daemon's pid, then the
//                        plain child's.
//   daemon-exit          start a daemon; print its pid; return from main (the last handle
//                        goes: its destructor kills the daemon).
//   daemon-exit-leaked   start a daemon whose handle is leaked; print its pid; exit(0) (the
//                        atexit handler kills it).
//   nested-daemon        start a daemon, then a plain child C; C starts a daemon G from a short-lived
//                        thread and prints G's pid, then its own, and sleeps; the helper
//                        joins C and sleeps. Killing C must kill G.
#include <mproc/process.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

// For ThreadSanitizer builds, as in process_test.cpp: daemons start their watcher thread
// after forking a multi-threaded process, and _exit() while it runs.
extern "C" const char* __tsan_default_options() { return "atexit_sleep_ms=0:die_after_fork=0"; }

namespace {

[[noreturn]] void sleep_forever() {
  for (;;) ::pause();
}

void print_pid(pid_t pid) {
  std::printf("%d\n", static_cast<int>(pid));
  std::fflush(stdout);
}

/// Starts a daemon from a thread that ends before this returns.
mproc::Process daemon_from_thread() {
  std::optional<mproc::Process> p;
  std::thread([&] {
    p.emplace(mproc::ProcessOptions{.daemon = true}, sleep_forever);
    p->start();
  }).join();
  return *p;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string mode = argv[1];
  if (mode == "stdout") {
    std::printf("parent-line\n");  // buffered, not yet written
    mproc::Process p([] { std::printf("child-line\n"); });
    p.start();
    p.join();
    return *p.exitcode();
  }
  if (mode == "daemon" || mode == "daemon-exit") {
    mproc::Process p({.daemon = true}, sleep_forever);
    p.start();
    print_pid(p.pid());
    if (mode == "daemon-exit") return 0;
    sleep_forever();
  }
  if (mode == "daemon-exit-leaked") {
    auto* p = new mproc::Process({.daemon = true}, sleep_forever);
    p->start();
    print_pid(p->pid());
    std::exit(0);
  }
  if (mode == "daemon-thread" || mode == "daemon-thread-fork") {
    mproc::Process p = daemon_from_thread();
    print_pid(p.pid());
    if (mode == "daemon-thread-fork") {
      const pid_t plain = ::fork();
      if (plain == 0) sleep_forever();
      print_pid(plain);
    }
    sleep_forever();
  }
  if (mode == "nested-daemon") {
    // A daemon of our own first: C then inherits our life pipe, and must not mistake it
    // for its own when it starts G.
    mproc::Process mine({.daemon = true}, sleep_forever);
    mine.start();
    mproc::Process c([] {
      mproc::Process g = daemon_from_thread();
      print_pid(g.pid());
      print_pid(::getpid());
      sleep_forever();
    });
    c.start();
    c.join();
    sleep_forever();  // alive: G must die because C did, not because we did
  }
  return 2;
}
