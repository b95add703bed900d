// Side-by-side: mproc's process Pool against Python's multiprocessing.Pool (system
// python3, bench/python/pool_bench.py) and against the raw limit (a futex ping-pong
// between two processes), on the same machine in the same run. Each figure is the median
// of --repeat runs; every implementation checks its own results.
//
//   compare_pool [--workers 2] [--repeat 5] [--python bench/python] [--no-python]
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <mproc/cpu_count.hpp>
#include <mproc/pool.hpp>
#include <mproc/shared.hpp>

#include "compare_util.hpp"

namespace {

using bench::check;
using bench::Clock;
using bench::json_number;
using bench::median_of;
using bench::python_bin;
using bench::run_command;
using bench::seconds_since;

using Clock = std::chrono::steady_clock;

long square(long x) { return x * x; }
double square_d(const double& x) { return x * x; }
int die(int) {
  ::raise(SIGKILL);
  return 0;
}

/// Round trip of a futex ping-pong between this process and a forked child, seconds.
double futex_round_trip(int rounds) {
  auto* word = static_cast<std::atomic<std::uint32_t>*>(
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (word) std::atomic<std::uint32_t>(0);
  auto wait_for = [&](std::uint32_t want) {
    for (int spin = 0; spin < 2000; ++spin)
      if (word->load(std::memory_order_acquire) == want) return;
    std::uint32_t v;
    while ((v = word->load(std::memory_order_acquire)) != want)
      ::syscall(SYS_futex, word, FUTEX_WAIT, v, nullptr, nullptr, 0);
  };
  auto set = [&](std::uint32_t v) {
    word->store(v, std::memory_order_release);
    ::syscall(SYS_futex, word, FUTEX_WAKE, 1, nullptr, nullptr, 0);
  };
  pid_t child = ::fork();
  if (child == 0) {
    for (int i = 0; i < rounds; ++i) {
      wait_for(2 * i + 1);
      set(2 * i + 2);
    }
    ::_exit(0);
  }
  auto t = Clock::now();
  for (int i = 0; i < rounds; ++i) {
    set(2 * i + 1);
    wait_for(2 * i + 2);
  }
  const double s = seconds_since(t) / rounds;
  ::waitpid(child, nullptr, 0);
  ::munmap(word, 4096);
  return s;
}

struct Row {
  std::string figure;
  double mproc;
  double anchor;
  std::string anchor_name;
  std::string target;
  bool higher_is_better_ratio;  // ratio = anchor / mproc
};

std::string fmt_time(double s) {
  if (s < 1e-6) return fmt::format("{:.0f} ns", s * 1e9);
  if (s < 1e-3) return fmt::format("{:.1f} us", s * 1e6);
  if (s < 1) return fmt::format("{:.2f} ms", s * 1e3);
  return fmt::format("{:.2f} s", s);
}

}  // namespace

int main(int argc, char** argv) {
  unsigned workers = 2;
  int repeat = 5;
  std::string python_dir = MPROC_BENCH_PYTHON_DIR;
  bool python = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--workers" && i + 1 < argc) workers = static_cast<unsigned>(std::atoi(argv[++i]));
    else if (a == "--repeat" && i + 1 < argc) repeat = std::atoi(argv[++i]);
    else if (a == "--python" && i + 1 < argc) python_dir = argv[++i];
    else if (a == "--no-python") python = false;
    else {
      std::fprintf(stderr, "usage: compare_pool [--workers N] [--repeat N] [--no-python]\n");
      return 2;
    }
  }
  const long map_items = 1'000'000, chunk1_items = 20'000;
  const int applies = 2'000;

  std::vector<Row> rows;
  const double start_first = median_of(repeat, [&] {
    auto t = Clock::now();
    mproc::Pool pool(workers);
    check(pool.apply(square, 7L) == 49, "apply");
    return seconds_since(t);
  });
  // Pools of any size: start plus the first result, per worker, against the small pool's.
  std::vector<std::pair<unsigned, double>> sized;
  for (unsigned n : {64u, 512u, 2048u}) {
    sized.emplace_back(n, median_of(std::min(repeat, 3), [&] {
                         auto t = Clock::now();
                         mproc::Pool big(n);
                         check(big.apply(square, 7L) == 49, "apply");
                         return seconds_since(t);
                       }) / n);
  }
  mproc::Pool pool(workers);
  pool.map(square, mproc::range(0L, 1000L));
  const double map_trivial = median_of(repeat, [&] {
    auto t = Clock::now();
    auto r = pool.map(square, mproc::range(0L, map_items));
    const double s = seconds_since(t);
    check(r.back() == (map_items - 1) * (map_items - 1), "map");
    return s;
  });
  // What any map that returns a new vector pays at least: the serial loop into a new one
  // (8 MB of fresh pages, faulted in and zeroed).
  const double fresh_serial = median_of(repeat, [&] {
    auto t = Clock::now();
    std::vector<long> r(static_cast<std::size_t>(map_items));
    for (long i = 0; i < map_items; ++i) r[static_cast<std::size_t>(i)] = square(i);
    const double s = seconds_since(t);
    check(r.back() == (map_items - 1) * (map_items - 1), "serial map");
    return s;
  });
  // The same 1e6 items from a std::vector (below 2 MiB: through the rings).
  std::vector<long> longs(static_cast<std::size_t>(map_items));
  for (std::size_t i = 0; i < longs.size(); ++i) longs[i] = static_cast<long>(i);
  const double map_vector = median_of(repeat, [&] {
    auto t = Clock::now();
    auto r = pool.map(square, longs);
    const double s = seconds_since(t);
    check(r.back() == (map_items - 1) * (map_items - 1), "map vector");
    return s;
  });
  // Where the items travel: through the rings (a std::deque, which is not contiguous), a
  // shared mapping made for the call (a std::vector from 2 MiB), an Array (no copy), and
  // map_into (no copy either way); at 1e3, 1e6 and 1e7 doubles.
  struct Travel {
    std::size_t n;
    double ring, vector, array, into;
  };
  std::vector<Travel> travel;
  for (std::size_t n : {std::size_t{1000}, std::size_t{1'000'000}, std::size_t{10'000'000}}) {
    std::vector<double> xs(n);
    for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<double>(i % 1000) * 0.5;
    const std::deque<double> dq(xs.begin(), xs.end());
    const mproc::Array<double> in(xs);
    const mproc::Array<double> out(n);
    const double last = square_d(xs.back());
    const int reps = n >= 10'000'000 ? std::min(repeat, 3) : repeat;
    auto timed_map = [&](auto&& input, const char* what) {
      return median_of(reps, [&] {
        auto t = Clock::now();
        auto r = pool.map(square_d, input);
        const double s = seconds_since(t);
        check(r.size() == n && r.back() == last, what);
        return s;
      });
    };
    Travel row{n, timed_map(dq, "map deque"), timed_map(xs, "map vector"),
               timed_map(in, "map Array"), 0};
    row.into = median_of(reps, [&] {
      out[n - 1] = -1;
      auto t = Clock::now();
      pool.map_into(square_d, in, out);
      const double s = seconds_since(t);
      check(out[n - 1] == last, "map_into");
      return s;
    });
    travel.push_back(row);
  }
  // The seed's vector_square: 2,000,000 doubles squared, the pool already started, against
  // the serial loop writing into an output that exists already (as map_into's does).
  const std::size_t squares = 2'000'000;
  std::vector<double> sq_in(squares), sq_out(squares);
  for (std::size_t i = 0; i < squares; ++i) sq_in[i] = static_cast<double>(i) * 1e-3;
  const mproc::Array<double> sq_shared(sq_in), sq_result(squares);
  // map_into with `f`; each repetition clears the last result first, so that a call that
  // wrote nothing fails its check.
  const auto time_into = [&](const auto& f, const char* what) {
    return median_of(repeat, [&] {
      sq_result[squares - 1] = -1;
      auto t = Clock::now();
      pool.map_into(f, sq_shared, sq_result);
      const double s = seconds_since(t);
      check(sq_result[squares - 1] == f(sq_in[squares - 1]), what);
      return s;
    });
  };
  const double vs_into = time_into(square_d, "vector_square map_into");
  // The same with a lambda, which the worker's loop inlines (a function pointer costs an
  // indirect call per item); the serial loop inlines either.
  const double vs_lambda =
      time_into([](const double& x) { return x * x; }, "vector_square lambda");
  const double vs_serial = median_of(repeat, [&] {
    auto t = Clock::now();
    for (std::size_t i = 0; i < squares; ++i) sq_out[i] = square_d(sq_in[i]);
    const double s = seconds_since(t);
    check(sq_out[squares - 1] == square_d(sq_in[squares - 1]), "vector_square serial");
    return s;
  });
  // The same as a whole: Pool(2) started, the map over the vector, the pool closed and
  // joined (its destructor).
  const double vs_whole = median_of(std::min(repeat, 3), [&] {
    auto t = Clock::now();
    {
      mproc::Pool fresh(workers);
      auto r = fresh.map(square_d, sq_in);
      check(r.size() == squares && r.back() == square_d(sq_in.back()), "vector_square whole");
    }
    return seconds_since(t);
  });
  const double chunk1 = median_of(repeat, [&] {
    auto t = Clock::now();
    auto r = pool.map(square, mproc::range(0L, chunk1_items), {.chunksize = 1});
    const double s = seconds_since(t);
    check(r.back() == (chunk1_items - 1) * (chunk1_items - 1), "map chunksize=1");
    return s / chunk1_items;
  });
  const double apply_rt = median_of(repeat, [&] {
    auto t = Clock::now();
    for (long i = 0; i < applies; ++i) check(pool.apply(square, i) == i * i, "apply");
    return seconds_since(t) / applies;
  });
  const double futex_rt = median_of(repeat, [&] { return futex_round_trip(20'000); });
  // From submitting a task that SIGKILLs its worker to holding the WorkerCrashed error
  // (Python's Pool never reports it: it hangs).
  const double crash = median_of(repeat, [&] {
    auto t = Clock::now();
    try {
      pool.apply(die, 0);
    } catch (const mproc::WorkerCrashed& e) {
      check(e.signal() == SIGKILL, "crash signal");
      return seconds_since(t);
    }
    throw std::runtime_error("no WorkerCrashed");
  });

  std::string py;
  if (python) {
    py = run_command(fmt::format("{} {}/pool_bench.py --workers {} --repeat {}", python_bin(),
                                 python_dir, workers, repeat));
  }
  auto pyv = [&](const char* k) { return python ? json_number(py, k) : 0.0; };
  rows.push_back({"Pool.map, 1e6 trivial items", map_trivial, pyv("map_trivial"),
                  "Python Pool.map", ">= 100x", true});
  rows.push_back({"Pool.map, 1e6 trivial items", map_trivial, fresh_serial,
                  "serial loop into a new std::vector", "", false});
  rows.push_back({"Pool.map, 1e6 trivial items from a std::vector", map_vector,
                  pyv("map_trivial"), "Python Pool.map", ">= 100x", true});
  for (const Travel& t : travel) {
    const std::string n = t.n == 1000 ? "1e3" : t.n == 1'000'000 ? "1e6" : "1e7";
    rows.push_back({fmt::format("map, {} doubles from a std::vector", n), t.vector, t.ring,
                    "the same through the rings (std::deque)", "", true});
    rows.push_back({fmt::format("map, {} doubles from an Array", n), t.array, t.ring,
                    "the same through the rings (std::deque)", "", true});
    rows.push_back({fmt::format("map_into, {} doubles, Array to Array", n), t.into, t.ring,
                    "map through the rings (std::deque)", "", true});
  }
  rows.push_back({"vector_square: map_into of 2e6 doubles, pool started", vs_into, vs_serial,
                  "mproc's serial loop", "<= 1.0x", false});
  rows.push_back({"vector_square with a lambda, pool started", vs_lambda, vs_serial,
                  "mproc's serial loop", "<= 1.0x", false});
  rows.push_back({"vector_square: Pool(2) start, map of 2e6 doubles, join", vs_whole,
                  pyv("vector_square_whole"), "Python, the same whole", ">= 100x", true});
  rows.push_back({"apply round trip", apply_rt, futex_rt, "raw futex ping-pong", "<= 2x", false});
  rows.push_back({"apply round trip", apply_rt, pyv("apply_round_trip"), "Python Pool.apply", "",
                  true});
  rows.push_back({"worker SIGKILLed: WorkerCrashed raised after", crash, 0.1, "limit (Python hangs)",
                  "<= 100 ms", false});
  rows.push_back({"Pool(2) start + first result", start_first, pyv("start_first_result"),
                  "Python Pool(2)", ">= 20x", true});
  for (auto [n, per_worker] : sized)
    rows.push_back({fmt::format("Pool({}) start + first result, per worker", n), per_worker,
                    start_first / workers, fmt::format("Pool({}), per worker", workers),
                    "linear in N", false});
  rows.push_back({"map chunksize=1, per item", chunk1, pyv("map_chunksize1_per_item"),
                  "Python Pool.map chunksize=1", "", true});

  // Word count over the 27 plays: the mproc binary (2 workers and --serial) against the
  // Python reference, each run as a whole program and timed from its own stderr report.
  const std::string plays = std::string(MPROC_BENCH_DATA_DIR) + "/shakespeare/plays";
  if (::access(plays.c_str(), R_OK) == 0) {
    auto timed = [&](const std::string& cmd, const std::string& marker) {
      return median_of(repeat, [&] {
        std::string out = run_command(cmd + " 2>&1 >/dev/null");
        auto p = out.find(marker);
        if (p == std::string::npos) throw std::runtime_error("no timing in: " + out);
        return std::strtod(out.c_str() + p + marker.size(), nullptr);
      });
    };
    const std::string mproc_bin = MPROC_BENCH_BINARY;
    const double wc = timed(fmt::format("{} wordcount --no-speedup -j {} {}", mproc_bin, workers, plays),
                            fmt::format("; {} workers: ", workers));
    const double serial = timed(fmt::format("{} wordcount --serial {}", mproc_bin, plays), "; serial: ");
    rows.push_back({"wordcount, 27 plays", wc, serial, "mproc --serial", ">= 1.8x", true});
    if (python) {
      const double py_wc = timed(fmt::format("{} {}/countwords.py -j {} {}", python_bin(), python_dir, workers, plays),
                                 "files, ");
      rows.push_back({"wordcount, 27 plays", wc, py_wc, "Python countwords (Pool)", ">= 50x", true});
    }
  } else {
    fmt::print(stderr, "compare_pool: {} not found: word count rows skipped\n", plays);
  }

  // The main-job figure: the 92 Gutenberg books, each program timed as a whole
  // process (start, count, print, exit) by the wall clock, counting once (--no-speedup:
  // the default also counts again with one worker for its speed-up line).
  const std::string books = std::string(MPROC_BENCH_DATA_DIR) + "/gutenberg";
  if (::access(books.c_str(), R_OK) == 0) {
    auto wall = [&](int times, const std::string& cmd) {
      return median_of(times, [&] {
        const auto t0 = std::chrono::steady_clock::now();
        run_command(cmd + " >/dev/null 2>&1");
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      });
    };
    const std::string mproc_bin = MPROC_BENCH_BINARY;
    const double whole = wall(repeat, fmt::format("{} wordcount --no-speedup -j {} {}", mproc_bin, workers, books));
    const double serial = wall(repeat, fmt::format("{} wordcount --serial {}", mproc_bin, books));
    rows.push_back({"wordcount, 92 books, whole process", whole, serial, "mproc --serial, whole process", "", true});
    if (python) {
      // Python takes seconds a run: three are enough for a median.
      const double py_books = wall(std::min(repeat, 3), fmt::format("{} {}/countwords.py -j {} {}",
                                                                    python_bin(), python_dir, workers, books));
      rows.push_back({"wordcount, 92 books, whole process", whole, py_books,
                      "Python countwords (Pool), whole process", ">= 30x", true});
    }
  } else {
    fmt::print(stderr, "compare_pool: {} not found: the books row skipped\n", books);
  }

  std::string model = run_command("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
  model.erase(0, model.find_first_not_of(' '));
  if (!model.empty() && model.back() == '\n') model.pop_back();
  std::string pyver = python ? run_command(python_bin() + " --version") : std::string("-\n");
  pyver.pop_back();
  fmt::print("machine: {}, cpu_count() = {}, {} workers; {}; median of {} runs\n\n", model,
             mproc::cpu_count(), workers, pyver, repeat);
  fmt::print("| figure | mproc | anchor | anchor time | ratio | target |\n");
  fmt::print("|---|---|---|---|---|---|\n");
  for (auto& r : rows) {
    if (r.anchor <= 0) {
      fmt::print("| {} | {} | {} | - | - | {} |\n", r.figure, fmt_time(r.mproc), r.anchor_name, r.target);
      continue;
    }
    const std::string ratio = r.higher_is_better_ratio
                                  ? fmt::format("{:.1f}x faster", r.anchor / r.mproc)
                                  : fmt::format("{:.2f}x the anchor", r.mproc / r.anchor);
    fmt::print("| {} | {} | {} | {} | {} | {} |\n", r.figure, fmt_time(r.mproc), r.anchor_name,
               fmt_time(r.anchor), ratio, r.target);
  }
  return 0;
}
