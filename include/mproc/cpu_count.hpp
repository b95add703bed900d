// cpu_count(): how many CPUs this process may use, which is what sizes a pool.
//
// Python's os.cpu_count() reports the machine's CPUs; in a container limited to two CPUs
// on a 64-CPU host it says 64, and a Pool of 64 workers then thrashes. mproc's answer is
//   max(1, min(hardware threads, CPUs in the sched_getaffinity mask,
//              ceil(cgroup v2 cpu.max quota / period), MPROC_CPU_COUNT))
// where a missing limit does not count. The result is computed on each call (affinity can
// change at run time); it never throws.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "export.hpp"

namespace mproc {

/// How cpu_count() was derived, for `mproc info` and for debugging a surprising number.
struct CpuCountInfo {
  unsigned hardware = 1;                 ///< std::thread::hardware_concurrency()
  unsigned affinity = 1;                 ///< CPUs in this process's affinity mask
  std::optional<double> cgroup_quota{};  ///< cpu.max quota/period, when a limit is set
  std::string cgroup_path{};             ///< the cgroup whose cpu.max set the limit (or ours)
  std::optional<unsigned> env_override{};  ///< a valid MPROC_CPU_COUNT
  std::string env_error{};               ///< why MPROC_CPU_COUNT was ignored, if it was
  unsigned result = 1;                   ///< what cpu_count() returns
};

/// The number of CPUs this process may use; at least 1. Thread-safe; never throws.
MPROC_API unsigned cpu_count() noexcept;

/// cpu_count() with the figures it was computed from. Thread-safe; never throws.
MPROC_API CpuCountInfo cpu_count_info() noexcept;

namespace detail {

struct CgroupLimit {
  std::optional<double> quota;  ///< CPUs: quota / period; none when no level sets a limit
  std::string path;             ///< the cgroup directory of the tightest limit, or our own
};

/// The tightest cgroup v2 cpu.max limit on the way from our cgroup (named in
/// `proc_self_cgroup`, the text of /proc/self/cgroup) up to `cgroup_root`.
/// Missing or unreadable files mean no limit. Exposed for tests.
MPROC_API CgroupLimit cgroup_cpu_limit(std::string_view proc_self_cgroup,
                                       const std::string& cgroup_root);

}  // namespace detail
}  // namespace mproc
