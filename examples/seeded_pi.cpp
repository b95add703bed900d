// Ten Monte Carlo estimates of pi, one per item of Pool.map, first with one global
// generator (the trap), then with a stream per item (the fix). Mirrors
//   np.random.seed(2024)                               # one global generator...
//   def estimate(i): return 4 * np.mean(np.sum(np.random.rand(n, 2)**2, axis=1) < 1)
//   with Pool(4) as pool: print(len(set(pool.map(estimate, range(10)))))   # ...3, not 10
// The workers are forked when the Pool starts, each with a copy of the generator in the
// same state, so each worker draws the same numbers: the k-th item a worker runs gives
// the same estimate in every worker. mproc::task_seed(base) seeds each item from its index
// instead: all estimates differ, and they are the same with any number of workers.
#include <cstdint>
#include <cstdio>
#include <random>
#include <set>
#include <vector>
#include <mproc/mproc.hpp>

constexpr std::uint64_t kBase = 2024;
constexpr int kItems = 10;
constexpr long kSamples = 200'000;

// Seeded once, before the pool: the same state in every forked worker.
std::mt19937_64 global_rng(kBase);

/// pi from kSamples points drawn from `rng`; the top 53 bits as a double in [0, 1), the
/// same numbers with any standard library.
template <class Rng>
double estimate_with(Rng& rng) {
  long inside = 0;
  for (long i = 0; i < kSamples; ++i) {
    const double x = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const double y = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    inside += x * x + y * y < 1.0;
  }
  return 4.0 * static_cast<double>(inside) / kSamples;
}

double estimate_global(int) { return estimate_with(global_rng); }

double estimate_seeded(int) {
  mproc::Xoshiro256 rng(mproc::task_seed(kBase));  // item i's own stream
  return estimate_with(rng);
}

std::size_t distinct(const std::vector<double>& v) { return std::set<double>(v.begin(), v.end()).size(); }

int main() {
  mproc::Pool pool({.workers = 4, .backend = mproc::Backend::process});
  const auto global = pool.map(estimate_global, mproc::range(kItems), {.chunksize = 1});
  std::printf("global generator: %zu distinct estimates of %d\n", distinct(global), kItems);

  const auto seeded = pool.map(estimate_seeded, mproc::range(kItems), {.chunksize = 1});
  mproc::Pool one({.workers = 1, .backend = mproc::Backend::process});
  const auto seeded_one = one.map(estimate_seeded, mproc::range(kItems), {.chunksize = 3});
  std::vector<double> serial;
  for (int i = 0; i < kItems; ++i) {
    mproc::Xoshiro256 rng(mproc::seed_for(kBase, static_cast<std::uint64_t>(i)));
    serial.push_back(estimate_with(rng));
  }
  double mean = 0;
  for (double e : seeded) mean += e / kItems;
  std::printf("task_seed: %zu distinct estimates of %d, Pool(4) %s Pool(1), %s the serial loop\n",
              distinct(seeded), kItems, seeded == seeded_one ? "equals" : "DIFFERS FROM",
              seeded == serial ? "equals" : "DIFFERS FROM");
  std::printf("mean of the task_seed estimates: %.5f\n", mean);
}
