// Two pools, one after the other: each lives for one block, and leaving the block closes
// it and joins its workers (Python's `with Pool(...) as p:`). The first is a pool of
// processes, the second a pool of threads running the same API. Mirrors
//   with Pool(3) as p: print(p.map(f, [1, 2, 3]))
//   with ThreadPool(2) as p: print(sum(p.map(cube, range(1, 101))))
#include <cstdio>
#include <numeric>
#include <vector>
#include <mproc/mproc.hpp>

int square(int x) { return x * x; }
long cube(long x) { return x * x * x; }

int main() {
  {
    mproc::Pool pool(3);
    std::vector<int> squares = pool.map(square, std::vector<int>{1, 2, 3});
    std::printf("first pool (%u processes): [%d, %d, %d]\n", pool.workers(), squares[0],
                squares[1], squares[2]);
  }  // closed and joined here
  {
    mproc::Pool pool({.workers = 2, .backend = mproc::Backend::thread});
    std::vector<long> cubes = pool.map(cube, mproc::range(1L, 101L));
    std::printf("second pool (%u threads): sum of cubes of 1..100 = %ld\n", pool.workers(),
                std::accumulate(cubes.begin(), cubes.end(), 0L));
  }
}
