// Many small jobs through a ProcessPoolExecutor: 100000 squares, sent to the workers in
// chunks of 100 items (one message per chunk instead of one per item), then one by one
// for comparison. Both sums are sum(x * x for x in range(100000)); the times depend on
// the machine. Mirrors
//   with ProcessPoolExecutor(2) as executor:
//       total = sum(executor.map(f, range(N), chunksize=100))
#include <chrono>
#include <cstdio>
#include <mproc/mproc.hpp>

long f(long x) { return x * x; }

int main() {
  constexpr long kN = 100'000;
  mproc::ProcessPoolExecutor executor(2);
  for (std::size_t chunksize : {100, 1}) {
    const auto start = std::chrono::steady_clock::now();
    long total = 0;
    for (long r : executor.map(f, mproc::range(0L, kN), {.chunksize = chunksize})) total += r;
    const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    std::printf("chunksize=%-3zu sum of %ld squares = %ld in %.1f ms\n", chunksize, kN, total,
                took.count());
  }
}
