// Side-by-side: `mproc run` against GNU parallel (/usr/bin/parallel) on the same command
// lines in the same run: 200 short jobs (echo), and gzip of the 27 Shakespeare plays
// (../shared/data/shakespeare/plays; skipped without them). Each figure is the median of
// --repeat runs, the two contenders interleaved; each run's stdout (-k, so in input order)
// must be byte-identical between the two, or the benchmark fails.
//
//   compare_run [--jobs 2] [--repeat 5]
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <mproc/cpu_count.hpp>

#include "compare_util.hpp"

namespace {

using bench::check;
using bench::Clock;
using bench::run_command;
using bench::seconds_since;

constexpr const char* gnu_parallel = "/usr/bin/parallel";

struct Row {
  std::string figure;
  double mproc, gnu;
};

/// Median seconds of `repeat` runs of each command, interleaved; their outputs must match.
std::pair<double, double> race(const std::string& mine, const std::string& theirs, int repeat,
                               const char* what) {
  std::vector<double> m, g;
  for (int i = 0; i < repeat; ++i) {
    auto t = Clock::now();
    const std::string a = run_command(mine);
    m.push_back(seconds_since(t));
    t = Clock::now();
    const std::string b = run_command(theirs);
    g.push_back(seconds_since(t));
    check(!a.empty() && a == b, what);
  }
  std::sort(m.begin(), m.end());
  std::sort(g.begin(), g.end());
  return {m[m.size() / 2], g[g.size() / 2]};
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 5;
  unsigned jobs = mproc::cpu_count();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--repeat") repeat = std::atoi(argv[i + 1]);
    else if (a == "--jobs") jobs = static_cast<unsigned>(std::atoi(argv[i + 1]));
    else throw std::invalid_argument("unknown option " + a);
  }
  if (::access(gnu_parallel, X_OK) != 0) {
    fmt::print(stderr, "compare_run: {} not found: skipped\n", gnu_parallel);
    return 0;
  }
  const std::string mine = fmt::format("{} run -k -j {}", MPROC_BENCH_BINARY, jobs);
  const std::string theirs = fmt::format("{} --will-cite -k -j {}", gnu_parallel, jobs);
  std::vector<Row> rows;

  auto [m1, g1] = race("seq 200 | " + mine + " echo", "seq 200 | " + theirs + " echo", repeat,
                       "200 echo jobs: the outputs differ");
  rows.push_back({"200 short jobs (`seq 200`, `-k echo`)", m1, g1});

  const std::string plays = std::string(MPROC_BENCH_DATA_DIR) + "/shakespeare/plays";
  if (::access(plays.c_str(), R_OK) == 0) {
    std::string files;
    for (const auto& e : std::filesystem::directory_iterator(plays))
      if (e.is_regular_file()) files += " '" + e.path().string() + "'";
    auto [m2, g2] = race(mine + " gzip -c ::: " + files, theirs + " gzip -c ::: " + files, repeat,
                         "gzip of the plays: the outputs differ");
    rows.push_back({"gzip -c of the 27 plays", m2, g2});
  } else {
    fmt::print(stderr, "compare_run: {} not found: gzip row skipped\n", plays);
  }

  std::string model = run_command("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
  model.erase(0, model.find_first_not_of(' '));
  if (!model.empty() && model.back() == '\n') model.pop_back();
  std::string version = run_command(std::string(gnu_parallel) + " --will-cite --version | head -1");
  if (!version.empty() && version.back() == '\n') version.pop_back();
  fmt::print("machine: {}, cpu_count() = {}, -j {}; {}; median of {} runs\n\n", model,
             mproc::cpu_count(), jobs, version, repeat);
  fmt::print("| figure | mproc run | GNU parallel | ratio |\n");
  fmt::print("|---|---|---|---|\n");
  for (const auto& r : rows)
    fmt::print("| {} | {:.0f} ms | {:.0f} ms | {:.1f}x faster |\n", r.figure, r.mproc * 1e3,
               r.gnu * 1e3, r.gnu / r.mproc);
  return 0;
}
