// A first program written from Python habits, run on the thread and the process backend:
// callbacks, catching a task's exception by its type, starmap over zip, a range with a
// step, rows of a table, and a random stream per item. Mirrors
//   pool.apply_async(square, (7,), callback=got, error_callback=failed)
//   try: pool.apply(checked_at, (5,))
//   except IndexError as e: ...
//   pool.starmap(add, zip(a, b));  pool.map(half, range(0, 24, 2))
//   df.apply(lambda row: max(row) - min(row), axis=1)
//   np.random.default_rng(SeedSequence(7).spawn(n)[i]) in each task
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <vector>

#include <mproc/mproc.hpp>

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
long half(long x) { return x / 2; }

int checked_at(int i) {
  const std::vector<int> v{1, 2, 3};
  return v.at(static_cast<std::size_t>(i));  // std::out_of_range for i >= 3
}

double spread(std::span<const double> row) {
  const auto [lo, hi] = std::minmax_element(row.begin(), row.end());
  return *hi - *lo;
}

// Each item draws from its own stream: the same numbers whichever worker runs it.
std::uint64_t draw(int) {
  mproc::Xoshiro256 rng(mproc::task_seed(7));
  return rng() % 1000;
}

void run(const char* name, mproc::Backend backend) {
  mproc::Pool pool({.workers = 2, .backend = backend});

  // apply_async(f, args, callback=, error_callback=)
  // The callback runs in this process, in the thread that finishes the future, maybe
  // after get() returns: wait for it.
  std::atomic<int> got{-1};
  auto future = pool.apply_async(
      square, 7,
      mproc::Callbacks{.callback =
                           [&](const int& r) {
                             got = r;
                             got.notify_all();
                           },
                       .error_callback =
                           [&](const std::exception&) {
                             got = -2;
                             got.notify_all();
                           }});
  got.wait(-1);

  // except IndexError: the task's std::out_of_range is caught by its own type.
  const char* caught = "nothing";
  try {
    pool.apply(checked_at, 5);
  } catch (const std::out_of_range&) {
    caught = "std::out_of_range";
  }

  const std::vector<int> a{1, 2, 3, 4}, b{10, 20, 30, 40};
  const std::vector<int> sums = pool.starmap(add, mproc::zip(a, b));
  const std::vector<long> halves = pool.map(half, mproc::range(0L, 24L, 2L));

  mproc::Array2D<double> table(1000, 5);
  for (std::size_t i = 0; i < table.rows(); ++i)
    for (std::size_t j = 0; j < table.cols(); ++j) table.row(i)[j] = double(i % 7) * double(j);
  const std::vector<double> spreads = pool.map_rows(spread, table);

  const std::vector<std::uint64_t> draws = pool.map(draw, mproc::range(0, 100), {.chunksize = 7});
  bool as_serial = true;  // item i's stream is seed_for(7, i)'s, whoever ran it
  for (std::size_t i = 0; i < draws.size(); ++i)
    as_serial = as_serial && draws[i] == mproc::Xoshiro256(mproc::seed_for(7, i))() % 1000;

  std::printf("%s: callback %d, caught %s, sums %d, halves %ld, spreads %.0f, draws %s\n", name,
              got.load(), caught, std::accumulate(sums.begin(), sums.end(), 0),
              std::accumulate(halves.begin(), halves.end(), 0L),
              std::accumulate(spreads.begin(), spreads.end(), 0.0),
              as_serial ? "as serial" : "differ from serial");
}

int main() {
  run("thread", mproc::Backend::thread);
  run("process", mproc::Backend::process);
}
