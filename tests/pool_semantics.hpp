// The backends and worker counts pool_semantics.cpp runs on. Each test binary that builds
// pool_semantics.cpp defines pool_cases(): pool_semantics_local.cpp gives thread and
// process pools, mpi_pool_test.cpp an mpi pool over the ranks of its launch.
#pragma once

#include <mproc/pool.hpp>

#include <ostream>
#include <string>
#include <vector>

struct PoolCase {
  mproc::Backend backend;
  unsigned workers;
  /// Tasks run in other processes, so their exceptions arrive as RemoteException<E>
  /// (process; mpi with worker ranks), not as themselves (thread; mpi alone on rank 0).
  bool remote = false;
};

/// Called when the tests are registered: in mpi_pool_test, after main has set up
/// mproc::Runtime.
std::vector<PoolCase> pool_cases();

/// "thread_4", "process_2", "mpi_2".
inline std::string pool_case_name(const PoolCase& c) {
  const char* b = c.backend == mproc::Backend::thread    ? "thread"
                  : c.backend == mproc::Backend::process ? "process"
                                                         : "mpi";
  return std::string(b) + "_" + std::to_string(c.workers);
}

inline std::ostream& operator<<(std::ostream& os, const PoolCase& c) {
  return os << pool_case_name(c);
}
