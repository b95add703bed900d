// Starts one child process and shows that it sees the parent's memory as it was at
// start(), has its own pid and name, and reports its exit code; then prints cpu_count().
#include <cstdio>
#include <mproc/mproc.hpp>

int main() {
  int answer = 42;  // the child sees the parent's memory as it was at start()
  mproc::Process p([&] {
    std::printf("child %d (%s) sees %d\n", mproc::current_process().pid,
                mproc::current_process().name.c_str(), answer);
  });
  p.start();
  p.join();
  std::printf("child exited with %d; this machine gives us %u CPUs\n", *p.exitcode(),
              mproc::cpu_count());
}
