// `mproc dot --size N --method queue|shared|map|all`: the dot product of two float64
// arrays in shared memory, x[i] = i % 7 and y[i] = i % 5, computed the three ways of the
// seed exercise, each timed and checked against a serial loop:
//   queue   one mproc::Process per worker computes the dot of its slice and puts it on a
//           Queue<double>; the parent gets and sums them;
//   shared  the same children add their partial to a Value<double> under its lock;
//   map     Pool::map over slice numbers, the arrays bound to the function (a shared Array
//           travels as a handle, never its elements), the partials summed.
// Every product and partial sum is a whole number below 2^53, so every method gives the
// exact same double, in any order of addition.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "commands.hpp"
#include "compute.hpp"
#include <mproc/bind.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/range.hpp>
#include <mproc/shared.hpp>

namespace mproc::cli {
namespace {

// 2^31 elements is 16 GiB per array: beyond it the exactness argument above still holds,
// but no test machine has the memory.
constexpr std::uint64_t max_size = std::uint64_t{1} << 31;

double dot_of(const Array<double>& x, const Array<double>& y) {
  return std::transform_reduce(x.begin(), x.end(), y.begin(), 0.0);
}

/// The bounds of slice `s` of `k` nearly equal slices of [0, n).
std::uint64_t slice_begin(std::uint64_t n, std::uint64_t k, std::uint64_t s) { return n * s / k; }

/// The dot of slice `s` of `k` of x and y: the function Pool::map calls, x and y bound.
double slice_dot(const Array<double>& x, const Array<double>& y, std::uint64_t k,
                 std::uint64_t s) {
  const std::uint64_t lo = slice_begin(x.size(), k, s), hi = slice_begin(x.size(), k, s + 1);
  return dot_of(x.slice(lo, hi - lo), y.slice(lo, hi - lo));
}

/// Starts one Process per slice running body(x_slice, y_slice), and joins them all.
/// Throws if a child failed: its partial is missing, so the result would be wrong.
template <class F>
void run_children(const Array<double>& x, const Array<double>& y, std::uint64_t k, F body) {
  std::vector<Process> children;
  children.reserve(k);
  for (std::uint64_t s = 0; s < k; ++s) {
    const std::uint64_t lo = slice_begin(x.size(), k, s), hi = slice_begin(x.size(), k, s + 1);
    children.emplace_back(body, x.slice(lo, hi - lo), y.slice(lo, hi - lo));
  }
  for (auto& c : children) c.start();
  for (auto& c : children) c.join();
  for (auto& c : children)
    if (c.exitcode() != 0)
      throw std::runtime_error(fmt::format("child process {} failed (exit code {})", c.name(),
                                           c.exitcode().value_or(-1)));
}

double by_queue(const Array<double>& x, const Array<double>& y, std::uint64_t k) {
  Queue<double> q;
  // A Queue holds any number of small messages without a reader (1 MiB ring), so the
  // children can all finish before the parent reads: join first, then get.
  run_children(x, y, k, [q](const Array<double>& xs, const Array<double>& ys) {
    q.put(dot_of(xs, ys));
  });
  double total = 0;
  for (std::uint64_t s = 0; s < k; ++s) {
    std::optional<double> part = q.try_get();
    if (!part) throw std::runtime_error("a partial sum is missing from the queue");
    total += *part;
  }
  return total;
}

double by_shared_value(const Array<double>& x, const Array<double>& y, std::uint64_t k) {
  Value<double> total(0.0);
  run_children(x, y, k, [total](const Array<double>& xs, const Array<double>& ys) {
    const double part = dot_of(xs, ys);
    // get() and set() are each atomic, but the sum of the two is not: the lock makes the
    // read-modify-write exact (without it, updates are lost, as in Python).
    std::lock_guard hold(total.get_lock());
    total.set(total.get() + part);
  });
  return total.get();
}

double by_map(Pool& pool, const Array<double>& x, const Array<double>& y, std::uint64_t k,
              const MapOptions& opts) {
  const std::vector<double> parts =
      pool.map(mproc::bind(slice_dot, x, y, k), mproc::range(k), opts);
  return std::accumulate(parts.begin(), parts.end(), 0.0);
}

struct Options {
  ComputeOptions common;
  std::uint64_t size = 10'000'000;
  std::string method = "all";
};

struct Outcome {
  std::string method;
  double dot;
  double seconds;
  std::string how;
};

int run(const Options& o) {
  check_compute_options(o.common);
  const std::uint64_t n = o.size;
  Array<double> x(n), y(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    x[i] = static_cast<double>(i % 7);
    y[i] = static_cast<double>(i % 5);
  }
  const unsigned workers = o.common.resolved_workers();
  const std::uint64_t procs = std::min<std::uint64_t>(workers, n);
  const auto all_start = std::chrono::steady_clock::now();

  auto start = std::chrono::steady_clock::now();
  const double expected = dot_of(x, y);
  std::vector<Outcome> outcomes{{"serial", expected, seconds_since(start), "one loop in this process"}};
  auto wants = [&](const char* m) { return o.method == "all" || o.method == m; };

  if (wants("queue")) {
    start = std::chrono::steady_clock::now();
    const double d = by_queue(x, y, procs);
    outcomes.push_back({"queue", d, seconds_since(start),
                        fmt::format("{} processes put partial sums on a Queue", procs)});
  }
  if (wants("shared")) {
    start = std::chrono::steady_clock::now();
    const double d = by_shared_value(x, y, procs);
    outcomes.push_back({"shared", d, seconds_since(start),
                        fmt::format("{} processes add partial sums to a Value under its lock", procs)});
  }
  if (wants("map")) {
    Pool pool = make_pool(o.common);
    // A few slices per worker, so that a slow worker does not hold up the end.
    const std::uint64_t slices = std::min<std::uint64_t>(n, std::uint64_t{pool.workers()} * 4);
    start = std::chrono::steady_clock::now();
    const double d = by_map(pool, x, y, slices, o.common.map_options());
    outcomes.push_back({"map", d, seconds_since(start),
                        fmt::format("Pool.map over {} slices of a shared Array, {} {} workers",
                                    slices, pool.workers(), o.common.backend)});
  }
  const double total_seconds = seconds_since(all_start);

  int code = ok;
  for (const Outcome& r : outcomes)
    if (r.dot != expected) {
      fmt::print(stderr, "mproc dot: method {} gave {:.17g}, the serial loop {:.17g}\n", r.method,
                 r.dot, expected);
      code = task_failures;
    }

  if (o.common.json) {
    std::vector<JsonObject> results;
    for (const Outcome& r : outcomes) {
      JsonObject& e = results.emplace_back();
      e.add("method", r.method).add("dot", r.dot).add("seconds", r.seconds).add("ok", r.dot == expected);
    }
    JsonObject j;
    j.add("command", "dot").add("size", n).add("method", o.method).add("expected", expected);
    j.add("results", std::move(results)).add_pool(o.common, workers).add("seconds", total_seconds);
    write_stdout(j.str() + "\n");
  } else {
    std::string out;
    for (const Outcome& r : outcomes)
      out += fmt::format("{:<7} dot = {:.0f}  {:.4f} s  {}\n", r.method, r.dot, r.seconds, r.how);
    write_stdout(out);
  }
  if (!o.common.quiet)
    fmt::print(stderr, "mproc dot: {}, method {}, {} ({}), {:.3f} s\n", plural(n, "element"),
               o.method, plural(workers, "worker"), o.common.backend, total_seconds);
  return code;
}

}  // namespace

void add_dot(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("dot", "Dot product of two shared arrays, three ways");
  cmd->add_option("--size", o->size, "Elements per array")
      ->check(integer_in(1, max_size))
      ->capture_default_str();
  cmd->add_option("--method", o->method, "queue, shared, map, or all of them")
      ->check(CLI::IsMember({"queue", "shared", "map", "all"}))
      ->capture_default_str();
  add_compute_options(*cmd, o->common);
  cmd->footer(
      "The dot product of two float64 arrays in shared memory (x[i] = i % 7,\n"
      "y[i] = i % 5), computed the seed's three ways and timed, each checked against a\n"
      "serial loop: queue (child processes put partial sums on a Queue), shared (they\n"
      "add them to a shared Value under its lock), map (Pool.map over slices of the\n"
      "shared arrays). queue and shared start one process per worker whatever\n"
      "--backend; map uses the pool.\n"
      "\n"
      "Exit codes: 0 success, 1 some tasks failed or a method disagreed with the\n"
      "serial loop, 2 usage or input error.");
  cmd->callback([o, exit_code] { run_command("dot", exit_code, [&] { return run(*o); }); });
}

}  // namespace mproc::cli
