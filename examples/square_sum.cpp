// The first Pool program of every Python tutorial: square the numbers 1..5000 on a pool
// of worker processes and add them up. Prints 41679167500.
#include <cstdio>
#include <numeric>
#include <mproc/mproc.hpp>

long square(long x) { return x * x; }

int main() {
  mproc::Pool pool(4);  // four worker processes; the end of scope joins them
  std::vector<long> squares = pool.map(square, mproc::range(1L, 5001L));
  long total = std::accumulate(squares.begin(), squares.end(), 0L);
  std::printf("sum of squares of 1..5000 = %ld\n", total);

  // The same, reduced inside the workers: only one partial sum per worker comes back.
  long reduced = pool.map_reduce(square, [](long a, long b) { return a + b; },
                                 mproc::range(1L, 5001L));
  std::printf("with map_reduce           = %ld\n", reduced);
}
