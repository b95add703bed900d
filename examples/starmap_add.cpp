// Pool.starmap: each input is a tuple whose elements become the function's arguments.
// Mirrors the Python tutorial's
//   def add(a, b): return a + b
//   with Pool(2) as pool: print(pool.starmap(add, [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]))
#include <cstdio>
#include <tuple>
#include <utility>
#include <vector>
#include <mproc/mproc.hpp>

int add(int a, int b) { return a + b; }
double fma3(double a, double b, double c) { return a * b + c; }

int main() {
  mproc::Pool pool(2);
  std::vector<std::pair<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}, {7, 8}, {9, 10}};
  std::vector<int> sums = pool.starmap(add, pairs);
  std::printf("sums:");
  for (int s : sums) std::printf(" %d", s);
  std::printf("\n");

  // Any arity: tuples of three.
  std::vector<std::tuple<double, double, double>> triples{{2, 3, 1}, {0.5, 4, 0.25}};
  std::vector<double> r = pool.starmap(fma3, triples);
  std::printf("a*b+c: %g %g\n", r[0], r[1]);
}
