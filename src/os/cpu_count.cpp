#include "mproc/cpu_count.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

namespace mproc {
namespace detail {
namespace {

namespace fs = std::filesystem;

std::string read_small_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return {};
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string_view> split_ws(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t' && s[j] != '\n') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

template <class T>
std::optional<T> parse_whole(std::string_view s) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

/// quota/period in CPUs from a cpu.max file ("150000 100000"); nullopt for "max ..."
/// (no limit), a missing file or anything malformed.
std::optional<double> read_cpu_max(const fs::path& file) {
  const std::string text = read_small_file(file);
  const auto fields = split_ws(text);
  if (fields.size() != 2 || fields[0] == "max") return std::nullopt;
  const auto quota = parse_whole<unsigned long long>(fields[0]);
  const auto period = parse_whole<unsigned long long>(fields[1]);
  if (!quota || !period || *quota == 0 || *period == 0) return std::nullopt;
  return static_cast<double>(*quota) / static_cast<double>(*period);
}

/// Where the cgroup2 hierarchy is mounted, and which cgroup is the mount's root, from
/// /proc/self/mountinfo (proc(5)): "... <root> <mount point> <options> ... - cgroup2 ...".
/// /sys/fs/cgroup on unified systems, /sys/fs/cgroup/unified on hybrid ones.
std::optional<std::pair<std::string, std::string>> cgroup2_mount() {
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    const auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    const auto after = split_ws(std::string_view(line).substr(dash + 3));
    if (after.empty() || after[0] != "cgroup2") continue;
    const auto before = split_ws(std::string_view(line).substr(0, dash));
    if (before.size() < 5) continue;
    return std::pair{std::string(before[3]), std::string(before[4])};
  }
  return std::nullopt;
}

unsigned affinity_cpus() noexcept {
  // The mask may be wider than the fixed cpu_set_t (1024 CPUs): grow until the kernel
  // accepts the size (sched_getaffinity(2), EINVAL).
  for (int n = 1024; n <= (1 << 22); n *= 2) {
    cpu_set_t* set = CPU_ALLOC(n);
    if (set == nullptr) return 0;
    const std::size_t size = CPU_ALLOC_SIZE(n);
    const int r = ::sched_getaffinity(0, size, set);
    const int count = r == 0 ? CPU_COUNT_S(size, set) : 0;
    const int err = errno;
    CPU_FREE(set);
    if (r == 0) return static_cast<unsigned>(count);
    if (err != EINVAL) return 0;
  }
  return 0;
}

}  // namespace

CgroupCpuLimit cgroup_cpu_limit(std::string_view proc_self_cgroup,
                                const std::filesystem::path& cgroup_root) {
  // cgroup v2 has one line "0::<path>"; the v1 lines of a hybrid system
  // ("4:cpu,cpuacct:/x") describe other hierarchies.
  std::optional<std::string_view> cgroup;
  while (!proc_self_cgroup.empty()) {
    const auto nl = proc_self_cgroup.find('\n');
    const std::string_view line = proc_self_cgroup.substr(0, nl);
    proc_self_cgroup.remove_prefix(nl == std::string_view::npos ? proc_self_cgroup.size() : nl + 1);
    if (line.starts_with("0::")) {
      cgroup = line.substr(3);
      break;
    }
  }
  CgroupCpuLimit limit;
  if (!cgroup) return limit;

  const fs::path root = cgroup_root.lexically_normal();
  fs::path rel = fs::path(*cgroup).relative_path().lexically_normal();
  // "/../.." appears for a process outside the cgroup namespace of the mount; we cannot
  // see its cgroup, so only the root's limits (there are none at a real root) apply.
  if (!rel.empty() && *rel.begin() == "..") rel.clear();
  if (rel == ".") rel.clear();
  fs::path dir = rel.empty() ? root : (root / rel).lexically_normal();
  limit.path = dir.string();

  // Every ancestor's cpu.max applies too; the smallest quota wins (ties: the deepest).
  for (;;) {
    if (auto q = read_cpu_max(dir / "cpu.max"); q && (!limit.quota || *q < *limit.quota)) {
      limit.quota = q;
      limit.path = dir.string();
    }
    if (rel.empty()) break;
    rel = rel.parent_path();
    dir = rel.empty() ? root : root / rel;
  }
  return limit;
}

unsigned combine_cpu_count(unsigned hardware, unsigned affinity, std::optional<double> quota,
                           std::optional<unsigned> env) noexcept {
  unsigned n = UINT_MAX;
  if (hardware > 0) n = std::min(n, hardware);
  if (affinity > 0) n = std::min(n, affinity);
  if (quota && *quota > 0) {
    const double c = std::ceil(*quota);
    if (c < static_cast<double>(n)) n = static_cast<unsigned>(c);
  }
  if (env && *env > 0) n = std::min(n, *env);
  return n == UINT_MAX ? 1u : std::max(1u, n);  // UINT_MAX: nothing was known
}

std::optional<unsigned> parse_cpu_count_env(std::string_view text, std::string& error) {
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  if (!digits) {
    error = "not a positive integer: \"" + std::string(text) + "\"";
    return std::nullopt;
  }
  unsigned long long v = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc::result_out_of_range || v > UINT_MAX) return UINT_MAX;  // saturate
  if (ec != std::errc() || p != text.data() + text.size() || v == 0) {
    error = "not a positive integer: \"" + std::string(text) + "\"";
    return std::nullopt;
  }
  return static_cast<unsigned>(v);
}

}  // namespace detail

CpuCountInfo cpu_count_info() noexcept {
  CpuCountInfo info;
  const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  info.hardware = online > 0 ? static_cast<unsigned>(online) : 1u;
  const unsigned aff = detail::affinity_cpus();
  info.affinity = aff > 0 ? aff : info.hardware;
  try {
    if (auto mount = detail::cgroup2_mount()) {
      const auto& [mount_root, mount_point] = *mount;
      std::string text = detail::read_small_file("/proc/self/cgroup");
      // A mount of a sub-tree (root field not "/") shows our cgroup relative to it.
      if (mount_root != "/") {
        const std::string prefix = "0::" + mount_root;
        const auto at = text.find(prefix);
        const auto end = at + prefix.size();
        if (at != std::string::npos && (at == 0 || text[at - 1] == '\n') &&
            (end == text.size() || text[end] == '/' || text[end] == '\n'))
          text.replace(at, prefix.size(), "0::");
      }
      auto limit = detail::cgroup_cpu_limit(text, mount_point);
      info.cgroup_quota = limit.quota;
      info.cgroup_path = std::move(limit.path);
    }
    if (const char* env = std::getenv("MPROC_CPU_COUNT"))
      info.env_override = detail::parse_cpu_count_env(env, info.env_error);
  } catch (...) {
    // Out of memory: the figures gathered so far still give a sound answer.
  }
  info.result = detail::combine_cpu_count(info.hardware, info.affinity, info.cgroup_quota,
                                          info.env_override);
  return info;
}

unsigned cpu_count() noexcept { return cpu_count_info().result; }

}  // namespace mproc
