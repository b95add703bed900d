// pool_semantics.cpp on the backends of one process, threads and forked workers, at 1, 2,
// 4 and 8 workers.
#include "pool_semantics.hpp"

std::vector<PoolCase> pool_cases() {
  std::vector<PoolCase> cases;
  for (mproc::Backend b : {mproc::Backend::thread, mproc::Backend::process})
    for (unsigned n : {1u, 2u, 4u, 8u}) cases.push_back({b, n, b == mproc::Backend::process});
  return cases;
}
