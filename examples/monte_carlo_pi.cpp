// Monte Carlo pi on a pool: 16 tasks each throw 2.5 million darts at the unit square and
// count those inside the quarter circle; pi ~ 4 * hits / darts. Each task seeds its own
// generator from its index, so the result is the same on every run and at any pool size.
// Mirrors
//   def hits(seed):
//       rng = random.Random(seed); return sum(rng.random()**2 + rng.random()**2 < 1 for ...)
//   with Pool() as pool: print(f"pi ~ {4 * sum(pool.map(hits, range(16))) / darts:.2f}")
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>
#include <mproc/mproc.hpp>

constexpr long kTasks = 16;
constexpr long kDartsPerTask = 2'500'000;

long hits(long task) {
  std::mt19937_64 rng(0x5eed0000 + static_cast<std::uint64_t>(task));
  // The top 53 bits as a double in [0, 1): the same numbers with any standard library.
  auto uniform = [&] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };
  long inside = 0;
  for (long i = 0; i < kDartsPerTask; ++i) {
    const double x = uniform(), y = uniform();
    inside += x * x + y * y < 1.0;
  }
  return inside;
}

int main() {
  mproc::Pool pool;  // cpu_count() workers
  std::vector<long> per_task = pool.map(hits, mproc::range(kTasks), {.chunksize = 1});
  const long inside = std::accumulate(per_task.begin(), per_task.end(), 0L);
  const long darts = kTasks * kDartsPerTask;
  std::printf("%ld of %ld darts inside the quarter circle\n", inside, darts);
  const double pi = 4.0 * static_cast<double>(inside) / static_cast<double>(darts);
  std::printf("pi ~ %.2f (%.6f)\n", pi, pi);
}
