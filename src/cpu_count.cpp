#include "mproc/cpu_count.hpp"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace mproc {
namespace detail {

namespace {

/// quota/period from a cpu.max file ("max 100000" or "150000 100000"); none for no limit.
std::optional<double> read_cpu_max(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string quota;
  long long period = 0;
  if (!(in >> quota >> period) || quota == "max" || period <= 0) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long q = std::strtoll(quota.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || q <= 0) return std::nullopt;
  return static_cast<double>(q) / static_cast<double>(period);
}

}  // namespace

CgroupLimit cgroup_cpu_limit(std::string_view proc_self_cgroup, const std::string& cgroup_root) {
  // cgroup v2 has a single line "0::/path"; v1 lines ("N:controllers:/path") are ignored.
  std::string rel;
  std::istringstream lines{std::string(proc_self_cgroup)};
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("0::", 0) == 0) {
      rel = line.substr(3);
      break;
    }
  }
  CgroupLimit limit;
  if (rel.empty()) return limit;
  namespace fs = std::filesystem;
  const fs::path root(cgroup_root);
  fs::path dir = (root / fs::path(rel).relative_path()).lexically_normal();
  limit.path = dir.string();
  // Each ancestor's limit applies too; the tightest wins.
  for (;;) {
    if (auto q = read_cpu_max(dir / "cpu.max"); q && (!limit.quota || *q < *limit.quota)) {
      limit.quota = q;
      limit.path = dir.string();
    }
    if (dir == root || !dir.has_parent_path() || dir.parent_path() == dir) break;
    const fs::path parent = dir.parent_path();
    if (parent.string().size() < root.string().size()) break;
    dir = parent;
  }
  return limit;
}

}  // namespace detail

CpuCountInfo cpu_count_info() noexcept {
  CpuCountInfo info;
  try {
    info.hardware = std::max(1u, std::thread::hardware_concurrency());
    info.affinity = info.hardware;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0)
      info.affinity = std::max(1, CPU_COUNT(&set));

    std::ifstream f("/proc/self/cgroup");
    std::string text((std::istreambuf_iterator<char>(f)), {});
    auto limit = detail::cgroup_cpu_limit(text, "/sys/fs/cgroup");
    info.cgroup_quota = limit.quota;
    info.cgroup_path = limit.path;

    if (const char* env = std::getenv("MPROC_CPU_COUNT")) {
      char* end = nullptr;
      errno = 0;
      const long v = std::strtol(env, &end, 10);
      if (*env == '\0' || *end != '\0' || errno != 0 || v <= 0 || v > 1'000'000)
        info.env_error = std::string("'") + env + "' is not a positive integer";
      else
        info.env_override = static_cast<unsigned>(v);
    }

    unsigned n = std::min(info.hardware, info.affinity);
    if (info.cgroup_quota)
      n = std::min(n, static_cast<unsigned>(std::max(1.0, std::ceil(*info.cgroup_quota))));
    if (info.env_override) n = std::min(n, *info.env_override);
    info.result = std::max(1u, n);
  } catch (...) {
    info.result = std::max(1u, std::min(info.hardware, info.affinity));
  }
  return info;
}

unsigned cpu_count() noexcept { return cpu_count_info().result; }

}  // namespace mproc
