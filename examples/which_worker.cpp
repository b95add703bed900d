// Which worker computed what. Each item returns its square and the pid of the worker
// process that computed it, so the results show the work spread over the pool.
// Mirrors the Python tutorial's
//   def f(x): return x * x, os.getpid()
//   with Pool(2) as pool: print(pool.map(f, range(1, 9)))
#include <cstdio>
#include <set>
#include <utility>
#include <unistd.h>
#include <mproc/mproc.hpp>

std::pair<int, int> square_and_pid(int x) { return {x * x, static_cast<int>(getpid())}; }

int main() {
  mproc::Pool pool(2);
  // chunksize 1: each item is its own task, so both workers get some.
  auto results = pool.map(square_and_pid, mproc::range(1, 9), {.chunksize = 1});

  std::set<int> pids;
  std::printf("squares:");
  for (auto [square, pid] : results) {
    std::printf(" %d", square);
    pids.insert(pid);
  }
  std::printf("\n");
  for (int x = 1; x <= 8; ++x)
    std::printf("  %d * %d = %2d computed by pid %d\n", x, x, results[x - 1].first,
                results[x - 1].second);
  std::printf("distinct worker pids: %zu (the parent, pid %d, computed %s)\n", pids.size(),
              static_cast<int>(getpid()), pids.count(getpid()) ? "some" : "none");
}
