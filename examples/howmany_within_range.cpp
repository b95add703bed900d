// The tutorial's running example: how many numbers of each row lie within [4, 8], for
// 200000 rows of 5 random ints in 0..9 (fixed seed): serially, with Pool.map and
// Pool.starmap, and with one task per row by Pool.apply (each call waits: per-task overhead
// dominates) and Pool.apply_async with a done callback, on the first 5000 rows. Mirrors
//   data = np.random.RandomState(100).randint(0, 10, size=[200000, 5]).tolist()
//   pool.map(rowonly, data); pool.starmap(f, args); [pool.apply(f, (row, 4, 8)) for ...]
#include <algorithm>
#include <array>
#include <cstdio>
#include <latch>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>
#include <mproc/mproc.hpp>

using Row = std::array<int, 5>;

int howmany_within_range(const Row& row, int minimum, int maximum) {
  int count = 0;
  for (int n : row) count += minimum <= n && n <= maximum;
  return count;
}
int howmany_within_range_rowonly(const Row& row) { return howmany_within_range(row, 4, 8); }

int main() {
  std::mt19937 rng(100);
  std::vector<Row> data(200'000);
  for (auto& row : data) std::ranges::generate(row, [&] { return static_cast<int>(rng() % 10); });
  std::vector<int> serial;
  for (const Row& row : data) serial.push_back(howmany_within_range(row, 4, 8));
  auto report = [&](const char* how, const std::vector<int>& r) {
    const bool same = std::equal(r.begin(), r.end(), serial.begin());
    std::printf("%-12s %zu rows, %ld in range, first rows %d %d %d %d (%s)\n", how, r.size(),
                std::accumulate(r.begin(), r.end(), 0L), r[0], r[1], r[2], r[3],
                same ? "as serial" : "DIFFERENT");
  };
  report("serial:", serial);

  mproc::Pool pool(2);
  report("map:", pool.map(howmany_within_range_rowonly, data));
  std::vector<std::tuple<Row, int, int>> args;
  for (const Row& row : data) args.emplace_back(row, 4, 8);
  report("starmap:", pool.starmap(howmany_within_range, args));

  constexpr std::size_t kFew = 5000;
  std::vector<int> applied(kFew), collected(kFew);
  for (std::size_t i = 0; i < kFew; ++i)
    applied[i] = pool.apply(howmany_within_range, data[i], 4, 8);  // waits for each result
  report("apply:", applied);
  std::latch pending(kFew);
  for (std::size_t i = 0; i < kFew; ++i)
    pool.apply_async(howmany_within_range, data[i], 4, 8).add_done_callback([&, i](auto& f) {
      collected[i] = f.get();  // in the pool's dispatcher thread: the latch publishes it
      pending.count_down();
    });
  pending.wait();
  report("apply_async:", collected);
}
