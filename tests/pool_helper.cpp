// A program the pool tests start and kill: `pool_helper hold` starts a 2-worker pool,
// runs a few tasks on it, prints "ready" and waits to be killed.
#include <mproc/pool.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace {
int nap(int x) {
  ::usleep(20'000);
  return x;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "hold") != 0) {
    std::fprintf(stderr, "usage: pool_helper hold\n");
    return 2;
  }
  mproc::Pool pool(2);
  // Both workers are forked at start; a few rounds of work make sure they are running.
  if (pool.map(nap, mproc::range(0, 8), {.chunksize = 1}).back() != 7) return 1;
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) ::pause();
}
