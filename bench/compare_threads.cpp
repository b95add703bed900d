// Side-by-side: mproc's thread backend (ThreadPoolExecutor, Pool with Backend::thread)
// against oneTBB's task_group, an OpenMP parallel for, a serial loop and std::async, on
// the same machine in the same run. The contenders of a figure run interleaved in every
// repetition (alternating which goes first), so the noise of a shared VM hits them alike;
// each figure is the median of --repeat repetitions, and every implementation checks its
// own results. A baseline that was not found at configure time is reported as skipped.
//
//   compare_threads [--workers N (default cpu_count())] [--repeat R (default 5)]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <mproc/cpu_count.hpp>
#include <mproc/executor.hpp>
#include <mproc/future.hpp>
#include <mproc/pool.hpp>
#include <mproc/range.hpp>

#ifdef MPROC_BENCH_HAVE_TBB
#include <tbb/task_arena.h>
#include <tbb/task_group.h>
#include <tbb/version.h>
#endif

#include "compare_util.hpp"

namespace {

using bench::Clock;

long twice_plus_one(long i) { return i * 2 + 1; }

// Cheap and pure: the map figure measures scheduling and memory traffic, not the work.
constexpr auto map_fn = [](long i) { return std::sqrt(static_cast<double>(i)) * 1.5 + 1.0; };

using bench::check;
using bench::seconds_since;

bool same_values(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(),
                    [](double x, double y) { return std::fabs(x - y) <= 1e-12 * (1 + std::fabs(y)); });
}

// libgomp's and TBB's idle workers spin for a while before they sleep; a pause before
// each run lets the previous contender's threads park instead of taking this one's cores.
void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(30)); }

struct Contender {
  std::string name;
  std::function<double()> run;  // one timed run, seconds; throws if its result is wrong
  std::vector<double> times{};
};

/// Runs every contender once per repetition, forwards on even repetitions and backwards
/// on odd ones, so neither always runs first (or right after the other).
void run_interleaved(std::vector<Contender>& cs, int repeat) {
  for (int r = 0; r < repeat; ++r)
    for (std::size_t k = 0; k < cs.size(); ++k) {
      auto& c = cs[r % 2 == 0 ? k : cs.size() - 1 - k];
      settle();
      c.times.push_back(c.run());
    }
}

std::optional<double> median(const std::vector<Contender>& cs, const std::string& name) {
  for (auto& c : cs)
    if (c.name == name) {
      auto v = c.times;
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    }
  return std::nullopt;
}

std::string fmt_time(double s) {
  if (s < 1e-6) return fmt::format("{:.0f} ns", s * 1e9);
  if (s < 1e-3) return fmt::format("{:.2f} us", s * 1e6);
  if (s < 1) return fmt::format("{:.1f} ms", s * 1e3);
  return fmt::format("{:.2f} s", s);
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown cpu";
}

int run(unsigned workers, int repeat) {
  const long submits = 1'000'000, map_items = 10'000'000, round_trips = 20'000;

  // Pools and the arena are built once, outside the timings: the figures are about work
  // on running workers. A first small run of each warms threads and allocators.
  mproc::ThreadPoolExecutor ex(workers);
  mproc::Pool pool({.workers = workers, .backend = mproc::Backend::thread});
  for (long i = 0; i < 1000; ++i) ex.submit(twice_plus_one, i).wait();
  pool.map(map_fn, mproc::range(0L, 100'000L));
#ifdef MPROC_BENCH_HAVE_TBB
  // The arena's count includes the thread that calls execute(), which runs tasks too.
  tbb::task_arena arena(static_cast<int>(workers));
  arena.execute([] {
    tbb::task_group tg;
    for (int i = 0; i < 1000; ++i) tg.run([] {});
    tg.wait();
  });
#endif

  // 1. Many tiny submits. Each run covers submitting, collecting every result and
  // releasing the bookkeeping (mproc's futures, TBB's tasks), so both pay for all of it.
  const long want_sum = submits * submits;  // sum of 2i+1 over [0, n)
  std::vector<mproc::Future<long>> futs;
  futs.reserve(submits);
  std::vector<long> out(submits);
  std::vector<Contender> tiny;
  tiny.push_back({"mproc", [&] {
                    auto t = Clock::now();
                    for (long i = 0; i < submits; ++i) futs.push_back(ex.submit(twice_plus_one, i));
                    long sum = 0;
                    for (auto& f : futs) sum += f.get();
                    futs.clear();
                    const double s = seconds_since(t);
                    check(sum == want_sum, "ThreadPoolExecutor.submit");
                    return s / submits;
                  }});
#ifdef MPROC_BENCH_HAVE_TBB
  tiny.push_back({"tbb", [&] {
                    std::fill(out.begin(), out.end(), 0L);
                    long sum = 0;
                    auto t = Clock::now();
                    arena.execute([&] {
                      tbb::task_group tg;
                      long* o = out.data();
                      for (long i = 0; i < submits; ++i) tg.run([o, i] { o[i] = twice_plus_one(i); });
                      tg.wait();
                    });
                    for (long v : out) sum += v;
                    const double s = seconds_since(t);
                    check(sum == want_sum, "tbb::task_group");
                    return s / submits;
                  }});
#endif
  run_interleaved(tiny, repeat);
  out = {};

  // 2. Parallel map. Every contender allocates its result inside the timing, as map does.
  std::vector<double> ref(map_items);
  for (long i = 0; i < map_items; ++i) ref[i] = map_fn(i);
  std::vector<Contender> maps;
  maps.push_back({"mproc", [&] {
                    auto t = Clock::now();
                    std::vector<double> r = pool.map(map_fn, mproc::range(0L, map_items));
                    const double s = seconds_since(t);
                    check(same_values(r, ref), "Pool.map (thread)");
                    return s;
                  }});
#ifdef MPROC_BENCH_HAVE_OPENMP
  maps.push_back({"openmp", [&] {
                    auto t = Clock::now();
                    std::vector<double> r(map_items);
                    double* o = r.data();
#pragma omp parallel for num_threads(workers) schedule(static)
                    for (long i = 0; i < map_items; ++i) o[i] = map_fn(i);
                    const double s = seconds_since(t);
                    check(same_values(r, ref), "omp parallel for");
                    return s;
                  }});
#endif
  maps.push_back({"serial", [&] {
                    auto t = Clock::now();
                    std::vector<double> r(map_items);
                    for (long i = 0; i < map_items; ++i) r[i] = map_fn(i);
                    const double s = seconds_since(t);
                    check(same_values(r, ref), "serial loop");
                    return s;
                  }});
  run_interleaved(maps, repeat);
  ref = {};

  // 3. One task at a time: the latency of handing work to a thread and getting it back.
  const long want_rt = round_trips * round_trips;
  std::vector<Contender> trips;
  trips.push_back({"mproc", [&] {
                     long sum = 0;
                     auto t = Clock::now();
                     for (long i = 0; i < round_trips; ++i) sum += ex.submit(twice_plus_one, i).get();
                     const double s = seconds_since(t);
                     check(sum == want_rt, "submit(...).get()");
                     return s / round_trips;
                   }});
  trips.push_back({"async", [&] {
                     long sum = 0;
                     auto t = Clock::now();
                     for (long i = 0; i < round_trips; ++i)
                       sum += std::async(std::launch::async, twice_plus_one, i).get();
                     const double s = seconds_since(t);
                     check(sum == want_rt, "std::async(...).get()");
                     return s / round_trips;
                   }});
  run_interleaved(trips, repeat);

  std::string libs;
#ifdef MPROC_BENCH_HAVE_TBB
  libs += fmt::format("oneTBB {}.{}", TBB_VERSION_MAJOR, TBB_VERSION_MINOR);
#else
  libs += "oneTBB not found";
#endif
#ifdef MPROC_BENCH_HAVE_OPENMP
  libs += fmt::format(", OpenMP {}", _OPENMP);
#else
  libs += ", OpenMP not found";
#endif
  fmt::print("machine: {}, cpu_count() = {}, {} workers; {}; median of {} runs\n\n", cpu_model(),
             mproc::cpu_count(), workers, libs, repeat);
  fmt::print("| figure | mproc | baseline | baseline time | mproc / baseline | target |\n");
  fmt::print("|---|---|---|---|---|---|\n");
  auto row = [](const char* figure, const std::vector<Contender>& cs, const char* base,
                const char* base_name, const char* target) {
    const double m = *median(cs, "mproc");
    if (auto b = median(cs, base))
      fmt::print("| {} | {} | {} | {} | {:.2f}x | {} |\n", figure, fmt_time(m), base_name,
                 fmt_time(*b), m / *b, target);
    else
      fmt::print("| {} | {} | {} | skipped | - | {} |\n", figure, fmt_time(m), base_name, target);
  };
  row("1e6 tiny submits, per submit", tiny, "tbb", "oneTBB task_group::run", "<= 1.5x");
  row("map of 1e7 items", maps, "openmp", "OpenMP parallel for, static", "<= 1.2x");
  row("map of 1e7 items", maps, "serial", "serial loop", "");
  row("submit + get round trip", trips, "async", "std::async + get", "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned workers = mproc::cpu_count();
  int repeat = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--workers" && i + 1 < argc) workers = static_cast<unsigned>(std::atoi(argv[++i]));
    else if (a == "--repeat" && i + 1 < argc) repeat = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: compare_threads [--workers N] [--repeat N]\n");
      return 2;
    }
  }
  if (workers == 0 || repeat <= 0) {
    std::fprintf(stderr, "compare_threads: --workers and --repeat must be positive\n");
    return 2;
  }
  try {
    return run(workers, repeat);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compare_threads: %s\n", e.what());
    return 1;
  }
}
