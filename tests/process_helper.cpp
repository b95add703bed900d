// Programs the Process tests run in a process of their own:
//   process_helper stdout          printf without flushing, start a child that prints,
//                                  join, exit: the parent's line must appear once.
//   process_helper daemon          start a daemon child that sleeps, print its pid, wait.
//   process_helper daemon-thread   the same, started from a thread that then exits.
//   process_helper daemon-exit     start a daemon child, print its pid, return from main.
#include <mproc/process.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

namespace {

void sleep_forever() {
  for (;;) ::pause();
}


}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string mode = argv[1];
  if (mode == "stdout") {
    std::printf("parent-line\n");  // stdout is a file: fully buffered, not yet written
    mproc::Process p([] { std::printf("child-line\n"); });
    p.start();
    p.join();
    return *p.exitcode();
  }
  if (mode == "daemon" || mode == "daemon-exit") {
    mproc::Process p({.daemon = true}, sleep_forever);
    p.start();
    std::printf("%d\n", p.pid());
    std::fflush(stdout);
    if (mode == "daemon-exit") {
      ::usleep(100'000);
      return 0;
    }
    sleep_forever();
  }
  if (mode == "daemon-thread") {
    pid_t pid = 0;
    std::optional<mproc::Process> keep;
    std::thread([&] {
      keep.emplace(mproc::ProcessOptions{.daemon = true}, sleep_forever);
      keep->start();
      pid = keep->pid();
    }).join();  // the thread that forked the daemon is gone now
    std::printf("%d\n", pid);
    std::fflush(stdout);
    sleep_forever();
  }
  return 2;
}
