// Side-by-side: mproc's shared state against Python's multiprocessing (system python3,
// bench/python/shared_bench.py) and against memcpy, on the same machine in the same run.
// Each figure is the median of --repeat runs; every implementation checks its result.
//
//   Queue, small messages   1e6 uint64 from a producer process to the parent
//   Queue, 64 KiB messages  bytes/s against memcpy of 64 KiB blocks (in cache, in memory)
//   Manager dict            2 processes setting keys of one dict
//   Value                   2 processes adding 1: atomic fetch_add against get_lock()
//
//   compare_shared [--repeat 5] [--no-python]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <mproc/manager.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/shared.hpp>

#include "compare_util.hpp"

namespace {

using bench::Clock;
using bench::check;
using bench::median_of;
using bench::seconds_since;

void join_ok(mproc::Process& p) {
  p.join();
  check(p.exitcode() == 0, "a child failed");
}

// Messages per second from a child producer to this process.
double queue_small(std::uint64_t n) {
  mproc::Queue<std::uint64_t> q;
  mproc::Process producer([q, n] {
    for (std::uint64_t i = 0; i < n; ++i) q.put(i);
  });
  const auto t = Clock::now();
  producer.start();
  std::uint64_t sum = 0;
  for (std::uint64_t i = 0; i < n; ++i) sum += q.get();
  const double s = seconds_since(t);
  join_ok(producer);
  check(sum == n * (n - 1) / 2, "queue checksum");
  return double(n) / s;
}

constexpr std::size_t kBig = 64 << 10;

// Bytes per second of 64 KiB messages from a child producer to this process.
double queue_big(std::size_t messages) {
  mproc::Queue<std::vector<std::byte>> q;
  mproc::Process producer([q, messages] {
    std::vector<std::byte> msg(kBig);
    for (std::size_t i = 0; i < messages; ++i) {
      msg[0] = std::byte(i);
      q.put(msg);
    }
  });
  const auto t = Clock::now();
  producer.start();
  std::size_t bytes = 0;
  bool order = true;
  for (std::size_t i = 0; i < messages; ++i) {
    auto m = q.get();
    bytes += m.size();
    order = order && m[0] == std::byte(i);
  }
  const double s = seconds_since(t);
  join_ok(producer);
  check(order && bytes == messages * kBig, "64 KiB messages");
  return double(bytes) / s;
}

// Bytes per second of memcpy in 64 KiB blocks, the copy a consumer cannot avoid: out of
// a 1 MiB buffer (the queue's ring size, so cache-resident: the strict baseline), or
// through 256 MiB buffers (larger than any cache here: memory bandwidth).
double memcpy_big(std::size_t messages, std::size_t span) {
  std::vector<std::byte> src(span, std::byte{1}), dst(span);
  const auto t = Clock::now();
  std::size_t sum = 0;
  for (std::size_t i = 0; i < messages; ++i) {
    const std::size_t at = (i * kBig) % span;
    std::memcpy(dst.data() + at, src.data() + at, kBig);
    sum += std::size_t(dst[at + i % kBig]);
  }
  const double s = seconds_since(t);
  check(sum == messages, "memcpy");
  return double(messages * kBig) / s;
}

// Dict sets per second from two processes on 1000 keys.
double manager_sets(std::size_t n, std::size_t keys) {
  mproc::Manager m;
  auto d = m.dict<std::string, std::int64_t>();
  std::vector<mproc::Process> ps;
  for (std::size_t w = 0; w < 2; ++w)
    ps.emplace_back([d, w, n, keys] {
      std::string key;
      for (std::size_t i = 0; i < n; ++i) {
        key = std::to_string((i * 7 + w) % keys);  // "k" + to_string trips GCC 12's -Wrestrict
        d.set(key, std::int64_t(i));
      }
    });
  const auto t = Clock::now();
  for (auto& p : ps) p.start();
  for (auto& p : ps) join_ok(p);
  const double s = seconds_since(t);
  check(d.size() == keys, "dict size");
  return double(2 * n) / s;
}

// Adds per second of 1 to a shared Value from two processes.
double value_adds(std::size_t n, bool locked) {
  mproc::Value<std::int64_t> v(0);
  std::vector<mproc::Process> ps;
  for (int w = 0; w < 2; ++w)
    ps.emplace_back([v, n, locked] {
      for (std::size_t i = 0; i < n; ++i) {
        if (locked) {
          std::lock_guard lk(v.get_lock());
          v.set(v.get() + 1);
        } else {
          v += 1;
        }
      }
    });
  const auto t = Clock::now();
  for (auto& p : ps) p.start();
  for (auto& p : ps) join_ok(p);
  const double s = seconds_since(t);
  check(v.get() == std::int64_t(2 * n), "value total");
  return double(2 * n) / s;
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 5;
  bool python = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--no-python") {
      python = false;
    } else {
      std::fprintf(stderr, "usage: compare_shared [--repeat N] [--no-python]\n");
      return 2;
    }
  }
  try {
    const double q_small = median_of(repeat, [] { return queue_small(1'000'000); });
    const double q_big = median_of(repeat, [] { return queue_big(16'384); });
    const double copy_hot = median_of(repeat, [] { return memcpy_big(16'384, 1 << 20); });
    const double copy_mem = median_of(repeat, [] { return memcpy_big(16'384, 256 << 20); });
    const double dict = median_of(repeat, [] { return manager_sets(1'000'000, 1000); });
    const double atomic_add = median_of(repeat, [] { return value_adds(5'000'000, false); });
    const double locked_add = median_of(repeat, [] { return value_adds(1'000'000, true); });

    std::string py;
    if (python) {
      py = bench::run_command(fmt::format("{} {}/shared_bench.py --repeat {}", bench::python_bin(),
                                   MPROC_BENCH_PYTHON_DIR, std::min(repeat, 3)));
    }
    auto pyv = [&](const char* k) { return python ? bench::json_number(py, k) : 0.0; };
    const double py_queue = pyv("queue_small_per_s");
    const double py_dict = pyv("manager_set_per_s");
    const double py_value = pyv("value_locked_add_per_s");
    auto ratio = [](double a, double b) { return b > 0 ? fmt::format("{:.0f}x", a / b) : std::string("-"); };

    fmt::print("mproc shared state, medians of {} runs (Python: {} runs)\n", repeat,
               std::min(repeat, 3));
    fmt::print("{:<38} {:>16} {:>16} {:>8}\n", "figure", "mproc", "Python", "ratio");
    fmt::print("{:<38} {:>14.2f}M/s {:>14.3f}M/s {:>8}\n", "Queue, 1e6 small messages", q_small / 1e6,
               py_queue / 1e6, ratio(q_small, py_queue));
    fmt::print("{:<38} {:>14.2f}G/s {:>16} {:>7.0f}%\n", "Queue, 64 KiB msgs vs memcpy in cache",
               q_big / 1e9, fmt::format("{:.2f}G/s", copy_hot / 1e9), 100 * q_big / copy_hot);
    fmt::print("{:<38} {:>14.2f}G/s {:>16} {:>7.0f}%\n", "Queue, 64 KiB msgs vs memcpy 256 MiB",
               q_big / 1e9, fmt::format("{:.2f}G/s", copy_mem / 1e9), 100 * q_big / copy_mem);
    fmt::print("{:<38} {:>14.2f}M/s {:>14.3f}M/s {:>8}\n", "Manager dict set, 2 processes",
               dict / 1e6, py_dict / 1e6, ratio(dict, py_dict));
    fmt::print("{:<38} {:>14.2f}M/s {:>16} {:>8}\n", "Value += 1 (atomic), 2 processes",
               atomic_add / 1e6, "-", ratio(atomic_add, locked_add) + " lock");
    fmt::print("{:<38} {:>14.2f}M/s {:>14.3f}M/s {:>8}\n", "Value += 1 under get_lock(), 2 proc.",
               locked_add / 1e6, py_value / 1e6, ratio(locked_add, py_value));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compare_shared: %s\n", e.what());
    return 1;
  }
  return 0;
}
