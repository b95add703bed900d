// The cubes of 0..49999 on pools of 1, 2, ... cpu_count() workers, timed: the tutorial's
// way of seeing how a pool scales. Every run prints the same checksum (the sum of the
// cubes, (49999 * 50000 / 2)^2); the times depend on the machine. Mirrors
//   for n in range(1, os.cpu_count() + 1):
//       with Pool(n) as pool: start = time.time(); cubes = pool.map(cube, range(50000))
#include <chrono>
#include <cstdio>
#include <numeric>
#include <vector>
#include <mproc/mproc.hpp>

long cube(long x) { return x * x * x; }

int main() {
  for (unsigned workers = 1; workers <= mproc::cpu_count(); ++workers) {
    mproc::Pool pool(workers);
    const auto start = std::chrono::steady_clock::now();
    std::vector<long> cubes = pool.map(cube, mproc::range(0L, 50000L));
    const std::chrono::duration<double, std::milli> elapsed =
        std::chrono::steady_clock::now() - start;
    std::printf("%u worker%s: checksum %ld in %.2f ms\n", workers, workers == 1 ? "" : "s",
                std::accumulate(cubes.begin(), cubes.end(), 0L), elapsed.count());
  }
}
