// Seed 003's "parallelize a pandas DataFrame", row by row: a 200000 x 5 table of small
// integers, each row's hypotenuse (the square root of the sum of its squares) and each
// row min-max normalized in place. Mirrors
//   df = pd.DataFrame(np.random.randint(3, 10, size=[200000, 5]))
//   def hypotenuse(row): return math.sqrt(sum(x * x for x in row))
//   def normalize(row): return (row - row.min()) / (row.max() - row.min())
//   with Pool(2) as pool:
//       hyp = pool.map(hypotenuse, (row for _, row in df.iterrows()))
//       df = pd.DataFrame(pool.map(normalize, (row for _, row in df.iterrows())))
// The table is an mproc::Array2D: its rows live in shared memory, so map_rows sends row
// numbers, not rows, and a row written in place by a worker process is written here.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <span>
#include <vector>
#include <mproc/mproc.hpp>

constexpr std::size_t kRows = 200'000, kCols = 5;

double hypotenuse(std::span<const double> row) {
  double s = 0;
  for (double x : row) s += x * x;
  return std::sqrt(s);
}

void normalize(std::span<double> row) {
  const auto [lo, hi] = std::minmax_element(row.begin(), row.end());
  const double min = *lo, span = *hi - *lo;
  for (double& x : row) x = span == 0 ? 0.0 : (x - min) / span;
}

int main() {
  mproc::Array2D<double> df(kRows, kCols);
  mproc::Xoshiro256 rng(mproc::seed_for(3, 0));
  for (double& x : df.span()) x = static_cast<double>(3 + rng() % 7);  // randint(3, 10)
  // The serial computation, on a private copy.
  std::vector<double> copy(df.span().begin(), df.span().end());
  std::vector<double> serial_hyp;
  for (std::size_t i = 0; i < kRows; ++i) {
    std::span<double> row(copy.data() + i * kCols, kCols);
    serial_hyp.push_back(hypotenuse(row));
    normalize(row);
  }

  mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
  const std::vector<double> hyp = pool.map_rows(hypotenuse, df, {.chunksize = 5000});
  pool.map_rows(normalize, df, {.chunksize = 5000});

  const bool same_hyp = hyp == serial_hyp;
  const bool same_rows = std::equal(copy.begin(), copy.end(), df.span().begin());
  double hyp_sum = 0, norm_sum = 0;
  for (double h : hyp) hyp_sum += h;
  for (std::size_t i = 0; i < kRows; ++i)
    for (std::size_t j = 0; j < kCols; ++j) norm_sum += static_cast<double>(j + 1) * df(i, j);
  std::printf("hypotenuse of %zu rows: checksum %.4f (%s)\n", hyp.size(), hyp_sum,
              same_hyp ? "same as serial" : "DIFFERS FROM SERIAL");
  std::printf("normalized in place: checksum %.4f (%s)\n", norm_sum,
              same_rows ? "same as serial" : "DIFFERS FROM SERIAL");
  std::printf("first row: [%.2f, %.2f, %.2f, %.2f, %.2f]\n", df(0, 0), df(0, 1), df(0, 2),
              df(0, 3), df(0, 4));
}
