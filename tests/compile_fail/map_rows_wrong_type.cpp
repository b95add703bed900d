// Must NOT compile: map_rows over a table of int with a function that takes rows of
// double. The static_assert names the type the function must take.
#include <mproc/pool.hpp>

#include <span>

double first(std::span<const double> row) { return row.empty() ? 0.0 : row[0]; }

int main() {
  mproc::Pool pool(1);
  mproc::Array2D<int> table(2, 2);
  return static_cast<int>(pool.map_rows(first, table).size());
}
