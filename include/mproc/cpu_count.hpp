// cpu_count(): how many CPUs this process may actually use, which is what a pool should
// size itself by. Unlike Python's os.cpu_count() it honours the scheduler affinity mask
// (taskset, numactl, Kubernetes cpusets) and a cgroup v2 CPU quota (docker --cpus,
// Kubernetes CPU limits), and the MPROC_CPU_COUNT environment variable can lower it.
//
//   cpu_count() = max(1, min(online hardware threads,
//                            CPUs in the sched_getaffinity() mask,
//                            ceil(smallest cgroup v2 cpu.max quota / period) on the path
//                                 from this process's cgroup up to the root,
//                            MPROC_CPU_COUNT if it is a positive integer))
//
// The value is computed afresh on every call (the affinity mask and the cgroup can change
// while the process runs); a call costs a few small file reads.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "export.hpp"

namespace mproc {

/// How cpu_count() was derived; `mproc info` prints it.
struct CpuCountInfo {
  /// Online hardware threads (sysconf(_SC_NPROCESSORS_ONLN)).
  unsigned hardware = 1;
  /// CPUs in this process's sched_getaffinity() mask.
  unsigned affinity = 1;
  /// The smallest cgroup v2 cpu.max quota/period on the way to the root, in CPUs
  /// (1.5 for "150000 100000"); nullopt when no cgroup limits the CPU time.
  std::optional<double> cgroup_quota;
  /// The cgroup directory whose cpu.max set cgroup_quota; without a quota, this process's
  /// cgroup directory; empty when no cgroup v2 hierarchy was found.
  std::string cgroup_path;
  /// MPROC_CPU_COUNT when it is set to a positive integer (values beyond unsigned's
  /// range saturate).
  std::optional<unsigned> env_override;
  /// Why MPROC_CPU_COUNT was ignored ("not a positive integer: \"abc\""); empty when it
  /// is unset or valid.
  std::string env_error;
  /// What cpu_count() returns.
  unsigned result = 1;
};

/// The number of CPUs this process may use, at least 1. Does not block. Thread-safe.
/// Never throws: a source that cannot be read does not limit the result.
MPROC_API unsigned cpu_count() noexcept;

/// cpu_count() with the numbers it was derived from. Does not block. Thread-safe.
/// Never throws (out of memory, it returns the figures it has, with `result` right).
MPROC_API CpuCountInfo cpu_count_info() noexcept;

namespace detail {

/// The cgroup v2 CPU limit of the process whose /proc/<pid>/cgroup text is
/// `proc_self_cgroup`, in a cgroup2 hierarchy mounted at `cgroup_root` (cpu_count() finds
/// the mount in /proc/self/mountinfo: /sys/fs/cgroup, or /sys/fs/cgroup/unified on
/// hybrid systems).
struct CgroupCpuLimit {
  std::optional<double> quota;  // in CPUs; nullopt = no limit
  std::string path;             // as CpuCountInfo::cgroup_path
};

/// Reads `cpu.max` in the process's cgroup directory (from the "0::<path>" line) and in
/// each ancestor up to `cgroup_root`, and keeps the smallest quota. "max <period>", a
/// missing or malformed file mean no limit at that level. A path that would leave
/// `cgroup_root` ("/../..", seen without a cgroup namespace) is treated as the root.
/// Exported for tests, which build fake trees. Throws only std::bad_alloc.
MPROC_API CgroupCpuLimit cgroup_cpu_limit(std::string_view proc_self_cgroup,
                                          const std::filesystem::path& cgroup_root);

/// The formula of cpu_count() over its inputs:
/// max(1, min(hardware, affinity, ceil(quota), env)), a zero input meaning "unknown".
MPROC_API unsigned combine_cpu_count(unsigned hardware, unsigned affinity,
                                     std::optional<double> quota,
                                     std::optional<unsigned> env) noexcept;

/// Parses a MPROC_CPU_COUNT value: a positive decimal integer, nothing else.
/// Returns nullopt and sets `error` when the text is not one. Throws only std::bad_alloc.
MPROC_API std::optional<unsigned> parse_cpu_count_env(std::string_view text, std::string& error);

}  // namespace detail
}  // namespace mproc
