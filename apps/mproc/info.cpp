// `mproc info`: what this build of mproc is and what it sees of the machine.
#include <fmt/core.h>

#include "commands.hpp"
#include <mproc/cpu_count.hpp>
#include <mproc/version.hpp>

#if defined(MPROC_HAS_MPI)
// Only for the version macros of the MPI this tool was built against.
#include <mpi.h>
#endif

namespace mproc::cli {
namespace {

std::string compiler() {
#if defined(__clang__)
  return fmt::format("clang {}.{}.{}", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
  return fmt::format("g++ {}.{}.{}", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}

/// The `mpi` line of the backends: whether this tool links the MPI backend
/// (MPROC_HAS_MPI, from mproc::mpi) and the MPI library's version from its mpi.h.
std::string mpi_backend() {
#if defined(MPROC_HAS_MPI)
#if defined(OMPI_MAJOR_VERSION)
  const std::string library = fmt::format("Open MPI {}.{}.{}", OMPI_MAJOR_VERSION,
                                          OMPI_MINOR_VERSION, OMPI_RELEASE_VERSION);
#elif defined(MPICH_VERSION)
  const std::string library = fmt::format("MPICH {}", MPICH_VERSION);
#else
  const std::string library = "an MPI library";
#endif
  return fmt::format("built ({}, MPI {}.{}; run under mpirun: --backend mpi)", library,
                     MPI_VERSION, MPI_SUBVERSION);
#else
  return "not built (configure with Open MPI's dev files installed)";
#endif
}

void print_info() {
  const CpuCountInfo c = cpu_count_info();
  fmt::print("mproc {}\n", version_string);
  fmt::print("compiler:  {} (C++ {})\n", compiler(), __cplusplus);
  fmt::print("cpu_count: {}\n", c.result);
  fmt::print("  hardware threads: {}\n", c.hardware);
  fmt::print("  affinity mask:    {}\n", c.affinity);
  if (c.cgroup_quota)
    fmt::print("  cgroup cpu.max:   {:.2f} CPUs ({})\n", *c.cgroup_quota, c.cgroup_path);
  else
    fmt::print("  cgroup cpu.max:   no limit{}\n",
               c.cgroup_path.empty() ? std::string() : fmt::format(" ({})", c.cgroup_path));
  if (c.env_override)
    fmt::print("  MPROC_CPU_COUNT:  {}\n", *c.env_override);
  else if (!c.env_error.empty())
    fmt::print("  MPROC_CPU_COUNT:  ignored: {}\n", c.env_error);
  else
    fmt::print("  MPROC_CPU_COUNT:  not set\n");
  fmt::print("backends:\n");
  fmt::print("  process  built (Pool: fork server, shared-memory rings)\n");
  fmt::print("  thread   built (Pool and ThreadPoolExecutor: work-stealing deques)\n");
  fmt::print("  mpi      {}\n", mpi_backend());
}

}  // namespace

void add_info(CLI::App& app, int* exit_code) {
  CLI::App* cmd = app.add_subcommand(
      "info", "Version, cpu_count() and the backends built");
  cmd->callback([exit_code] {
    print_info();
    *exit_code = ok;
  });
}

}  // namespace mproc::cli
