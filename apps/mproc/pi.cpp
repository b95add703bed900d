// `mproc pi --samples N --seed S`: pi by Monte Carlo, reproducible for a seed whatever the
// workers, backend and chunksize. The sample stream is cut into fixed blocks of 2^20
// samples; block b draws from its own generator, seeded with mproc::seed_for(seed, b)
// (mproc/seed.hpp; b is also the item's index, so this is task_seed(seed)), and the pool
// maps over block numbers and sums integer hit counts. How the blocks are spread over workers
// cannot change a single draw, and integer sums do not depend on their order.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <numbers>
#include <numeric>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "commands.hpp"
#include "compute.hpp"
#include <mproc/pool.hpp>
#include <mproc/range.hpp>
#include <mproc/seed.hpp>

namespace mproc::cli {
namespace {

constexpr std::uint64_t block_samples = std::uint64_t{1} << 20;
// Keeps samples + block_samples and the hit count far from overflow.
constexpr std::uint64_t max_samples = std::uint64_t{1} << 50;

/// Hits inside the quarter circle among block `block`'s samples. Integer arithmetic
/// throughout (31-bit coordinates, squares summed below 2^63), so the count is the same
/// on every machine and with every compiler flag; floating point could be contracted.
std::uint64_t block_hits(std::uint64_t seed, std::uint64_t block, std::uint64_t samples) {
  Xoshiro256 rng(seed_for(seed, block));
  constexpr std::uint64_t r2 = std::uint64_t{1} << 62;
  std::uint64_t hits = 0;
  for (std::uint64_t i = 0; i < samples; ++i) {
    const std::uint64_t x = rng() >> 33, y = rng() >> 33;
    hits += x * x + y * y < r2;
  }
  return hits;
}

struct Options {
  ComputeOptions common;
  std::uint64_t samples = 10'000'000;
  std::uint64_t seed = 42;
};

int run(const Options& o) {
  check_compute_options(o.common);
  const std::uint64_t samples = o.samples, seed = o.seed;
  const std::uint64_t blocks = (samples + block_samples - 1) / block_samples;
  Pool pool = make_pool(o.common);
  const auto start = std::chrono::steady_clock::now();
  // Numbers only in the capture: the lambda ships to worker processes as it is.
  auto per_block = [seed, samples](std::uint64_t b) {
    return block_hits(seed, b, std::min(block_samples, samples - b * block_samples));
  };
  const std::vector<std::uint64_t> hits_per_block =
      pool.map(per_block, mproc::range(blocks), o.common.map_options("sampling", "blocks"));
  const std::uint64_t hits =
      std::accumulate(hits_per_block.begin(), hits_per_block.end(), std::uint64_t{0});
  const double seconds = seconds_since(start);
  const double pi = 4.0 * static_cast<double>(hits) / static_cast<double>(samples);
  const double error = pi - std::numbers::pi;

  if (o.common.json) {
    JsonObject j;
    j.add("command", "pi").add("samples", samples).add("seed", seed).add("hits", hits);
    j.add("pi", pi).add("error", error).add("blocks", blocks);
    j.add_pool(o.common, pool.workers()).add("seconds", seconds);
    write_stdout(j.str() + "\n");
  } else {
    write_stdout(fmt::format("pi ~= {:.10f} ({} hits of {} samples, error {:+.2e})\n", pi, hits,
                             samples, error));
  }
  if (!o.common.quiet)
    fmt::print(stderr, "mproc pi: {} in {}, seed {}, {} ({}), {:.3f} s, {:.1f} M samples/s\n",
               plural(samples, "sample"), plural(blocks, "block"), seed,
               plural(pool.workers(), "worker"), o.common.backend, seconds,
               static_cast<double>(samples) / 1e6 / std::max(seconds, 1e-9));
  return ok;
}

}  // namespace

void add_pi(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("pi", "Estimate pi by Monte Carlo");
  cmd->add_option("--samples", o->samples, "Number of random points")
      ->check(integer_in(1, max_samples))
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the random points")
      ->check(integer_in(0, UINT64_MAX))
      ->capture_default_str();
  add_compute_options(*cmd, o->common);
  cmd->footer(
      "Estimate pi by Monte Carlo: the share of random points of the unit square that\n"
      "fall inside the quarter circle, times 4. The result depends only on --samples\n"
      "and --seed, never on -j, --backend or --chunksize (the samples come in fixed\n"
      "blocks of 2^20, each from its own generator seeded from (seed, block)).\n"
      "\n"
      "Exit codes: 0 success, 1 some tasks failed, 2 usage or input error.");
  cmd->callback([o, exit_code] { run_command("pi", exit_code, [&] { return run(*o); }); });
}

}  // namespace mproc::cli
