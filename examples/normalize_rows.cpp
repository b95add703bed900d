// The tutorial's exercise "normalize each row of a 2D list to vary between 0 and 1"
// (min-max scaling), one row per item of Pool.map. Mirrors
//   list_a = [[2, 3, 4, 5], [6, 9, 10, 12], [11, 12, 13, 14], [21, 24, 25, 26]]
//   def normalize(row): mini, maxi = min(row), max(row)
//                       return [(i - mini) / (maxi - mini) for i in row]
//   with Pool() as pool: print(pool.map(normalize, list_a))
#include <algorithm>
#include <cstdio>
#include <vector>
#include <mproc/mproc.hpp>

using Row = std::vector<double>;

Row normalize(Row row) {
  const auto [mini, maxi] = std::minmax_element(row.begin(), row.end());
  const double lo = *mini, span = *maxi - *mini;
  for (double& x : row) x = span == 0 ? 0.0 : (x - lo) / span;
  return row;
}

int main() {
  const std::vector<Row> list_a{{2, 3, 4, 5}, {6, 9, 10, 12}, {11, 12, 13, 14}, {21, 24, 25, 26}};

  mproc::Pool pool(2);
  std::vector<Row> rows = pool.map(normalize, list_a);
  for (const Row& row : rows) {
    std::printf("[");
    for (std::size_t j = 0; j < row.size(); ++j) std::printf("%s%.3f", j ? ", " : "", row[j]);
    std::printf("]\n");
  }
}
