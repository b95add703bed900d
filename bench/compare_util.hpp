// What the side-by-side comparisons (compare_pool, compare_threads, compare_shared)
// share: timing, medians, result checks, and running the Python counterparts.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// The median of `repeat` runs of `run` (each returning its own measurement).
inline double median_of(int repeat, const std::function<double()>& run) {
  std::vector<double> v;
  for (int i = 0; i < repeat; ++i) v.push_back(run());
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Every implementation checks its result: a fast wrong answer is no answer.
inline void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("wrong result: ") + what);
}

/// The number after "key": in a flat JSON object.
inline double json_number(const std::string& json, const std::string& key) {
  auto p = json.find("\"" + key + "\"");
  if (p == std::string::npos) throw std::runtime_error("python output lacks " + key);
  p = json.find(':', p);
  return std::strtod(json.c_str() + p + 1, nullptr);
}

/// The system's python3 (Debian's /usr/bin/python3), not whatever a version manager put
/// first on PATH.
inline std::string python_bin() {
  return ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

/// Runs a shell command and returns its standard output; throws if it fails.
inline std::string run_command(const std::string& cmd) {
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) throw std::runtime_error("cannot run " + cmd);
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  if (::pclose(f) != 0) throw std::runtime_error("failed: " + cmd);
  return out;
}

}  // namespace bench
