// A program outside the mproc tree that uses the installed mproc::mpi: the Runtime and an
// mpi pool. Started on its own it is a job of one rank and rank 0 runs the tasks; under
// `mpiexec -n N` ranks 1..N-1 run them and rank 0 only hands them out.
#include <cstdio>
#include <set>
#include <utility>
#include <vector>

#include <mproc/pool.hpp>
#include <mproc/runtime.hpp>

namespace {

// A plain function: the other ranks find it in their own copy of this executable.
std::pair<int, long> rank_and_square(int x) {
  return {mproc::Runtime::rank(), static_cast<long>(x) * x};
}

}  // namespace

int main(int argc, char** argv) {
  mproc::Runtime runtime(argc, argv);  // ranks 1..N-1 serve tasks in here and exit
  const int size = mproc::Runtime::size();

  std::vector<int> xs;
  for (int i = 1; i <= 100; ++i) xs.push_back(i);
  std::set<int> ranks;
  long sum = 0;
  {
    mproc::Pool pool({.backend = mproc::Backend::mpi});
    for (const auto& [rank, square] : pool.map(rank_and_square, xs)) {
      ranks.insert(rank);
      sum += square;
    }
  }  // the pool must be gone before the Runtime ends

  // Alone, rank 0 runs every task. Otherwise every other rank gets a first task before
  // any gets a second, so with 100 tasks each of ranks 1..N-1 runs at least one.
  std::set<int> expected;
  for (int r = 1; r < size; ++r) expected.insert(r);
  if (expected.empty()) expected.insert(0);

  if (sum != 338350) {
    std::fprintf(stderr, "mpi consumer: sum of squares of 1..100 is %ld, not 338350\n", sum);
    return 1;
  }
  if (ranks != expected) {
    std::fprintf(stderr, "mpi consumer: tasks ran on ranks");
    for (int r : ranks) std::fprintf(stderr, " %d", r);
    std::fprintf(stderr, " of a job of %d\n", size);
    return 2;
  }
  std::printf("mpi consumer ok: ranks=%d mpi=%d sum=%ld\n", size,
              mproc::Runtime::mpi() ? 1 : 0, sum);
  return 0;
}
