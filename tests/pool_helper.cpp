// A program the pool tests start and kill: `pool_helper hold` starts a 2-worker pool,
// runs a few tasks on it, prints "ready" and waits to be killed. `pool_helper trace FILE
// MODE` does the same with a pool tracing to FILE, one of whose items raises, then ends
// abnormally: MODE "terminate" calls std::terminate, "wait" waits for a signal.
// `pool_helper trace FILE program` traces the whole program (mproc::trace_to): a Process
// that exits 3, Queue traffic with a child, executor submits, a pool chunk whose worker
// segfaults, a Process still running, then dies of an uncaught exception.
#include <mproc/executor.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/trace.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

namespace {
int nap(int x) {
  ::usleep(20'000);
  return x;
}
int raise_at_3(int x) {
  if (x == 3) throw std::invalid_argument("item three");
  return x;
}

void exit_3() { std::exit(3); }
void put_three(mproc::Queue<int> q) {
  for (int i = 1; i <= 3; ++i) q.put(i);
}
void sleep_a_while() { ::sleep(3); }
int segfault_at_5(int x) {
  if (x == 5) {
    void* page = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *static_cast<volatile int*>(page) = 1;
  }
  return x;
}

int traced_program(const char* file) {
  mproc::trace_to(file);
  mproc::Process three(exit_3);
  three.start();
  three.join();
  mproc::Queue<int> q;
  mproc::Process producer(put_three, q);
  producer.start();
  int sum = 0;
  for (int i = 0; i < 3; ++i) sum += q.get();
  producer.join();
  if (sum != 6) return 1;
  {
    mproc::ProcessPoolExecutor ex(2);
    auto a = ex.submit(nap, 1);
    auto b = ex.submit(nap, 2);
    if (a.get() + b.get() != 3) return 1;
    mproc::Pool pool({.workers = 2, .chunksize = 2});
    try {
      pool.map(segfault_at_5, mproc::range(0, 8), {.label = "segfaults at 5"});
      return 1;
    } catch (const mproc::WorkerCrashed&) {
    }
  }
  mproc::Process sleeper(sleep_a_while);
  sleeper.start();
  std::printf("pids %d %d %d\nready\n", static_cast<int>(three.pid()),
              static_cast<int>(producer.pid()), static_cast<int>(sleeper.pid()));
  std::fflush(stdout);
  throw std::runtime_error("nobody catches this");
}

int traced(const char* file, const char* mode) {
  if (std::strcmp(mode, "program") == 0) return traced_program(file);
  mproc::Pool pool({.workers = 2, .chunksize = 1, .trace = file});
  if (pool.map(nap, mproc::range(0, 8), {.chunksize = 1, .label = "naps"}).back() != 7) return 1;
  try {
    pool.map(raise_at_3, mproc::range(0, 4), {.chunksize = 1});
    return 1;
  } catch (const std::exception&) {
  }
  std::printf("ready\n");
  std::fflush(stdout);
  if (std::strcmp(mode, "terminate") == 0) std::terminate();
  for (;;) ::pause();
}
}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "trace") == 0) return traced(argv[2], argv[3]);
  if (argc < 2 || std::strcmp(argv[1], "hold") != 0) {
    std::fprintf(stderr, "usage: pool_helper hold | pool_helper trace FILE terminate|wait|program\n");
    return 2;
  }
  mproc::Pool pool(2);
  // Both workers are forked at start; a few rounds of work make sure they are running.
  if (pool.map(nap, mproc::range(0, 8), {.chunksize = 1}).back() != 7) return 1;
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) ::pause();
}
