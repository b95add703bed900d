// mproc::Runtime: the start of a program that may run as an MPI job.
//
//   int main(int argc, char** argv) {
//     mproc::Runtime runtime(argc, argv);   // needed for Backend::mpi; harmless otherwise
//     mproc::Pool pool({.backend = mproc::Backend::mpi});
//     ...
//   }
//
// Linked with mproc::mpi and started with `mpirun -n N ./app` (or srun, or mpiexec), the
// constructor initialises MPI on every rank and checks that all ranks run the same executable (same build-id).
// Rank 0 returns and runs main; ranks 1..N-1 never return: they serve the tasks of rank
// 0's mpi pools and exit (status 0) when rank 0's Runtime ends, whether main returns,
// throws, or calls exit(). Without mproc::mpi, or started without a launcher (one rank,
// and MPI is not initialised at all), it does nothing more than record that it exists;
// an mpi Pool then runs its tasks in this process.
#pragma once

#include <memory>

#include "export.hpp"

namespace mproc {

struct PoolOptions;

namespace detail {

class PoolCore;

/// What mproc::mpi provides to libmproc: the MPI side of Runtime and the mpi pool.
struct MpiHooks {
  /// Initialises MPI. Returns on rank 0 only; other ranks serve tasks and exit.
  void (*start)(int& argc, char**& argv);
  /// Rank 0: releases the other ranks and finalises MPI. Idempotent; never throws.
  void (*stop)() noexcept;
  int (*rank)() noexcept;
  int (*size)() noexcept;
  /// Whether MPI was initialised (a launcher started the program, or MPROC_MPI=1).
  bool (*initialized)() noexcept;
  /// A pool whose workers are ranks 1..N-1 (N > 1).
  std::unique_ptr<PoolCore> (*make_pool)(const PoolOptions& options);
};

/// The hooks of the running Runtime, or null (no Runtime, or one built without MPI).
MPROC_API const MpiHooks* active_mpi_hooks() noexcept;

}  // namespace detail

}  // namespace mproc

#if defined(MPROC_HAS_MPI)
/// Defined by libmproc_mpi (the mproc::mpi target, which defines MPROC_HAS_MPI).
extern "C" MPROC_API const mproc::detail::MpiHooks* mproc_mpi_hooks() noexcept;
#endif

namespace mproc {

class MPROC_API Runtime {
 public:
  /// Initialises mproc (and MPI, when linked with mproc::mpi). Only one Runtime may exist
  /// at a time (std::logic_error otherwise).
  Runtime(int& argc, char**& argv) : Runtime(argc, argv, linked_hooks()) {}
  /// Rank 0: releases the other ranks and finalises MPI. Pools must be gone by then.
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  /// This process's rank in the MPI job (0 without MPI).
  static int rank() noexcept;
  /// The number of ranks in the MPI job (1 without MPI).
  static int size() noexcept;
  /// Whether a Runtime initialised MPI: the program is linked with mproc::mpi and was
  /// started by an MPI launcher (mpirun, mpiexec, srun) or with MPROC_MPI=1.
  static bool mpi() noexcept;

 private:
  Runtime(int& argc, char**& argv, const detail::MpiHooks* hooks);
  static const detail::MpiHooks* linked_hooks() noexcept {
#if defined(MPROC_HAS_MPI)
    return mproc_mpi_hooks();
#else
    return nullptr;
#endif
  }
};

}  // namespace mproc
