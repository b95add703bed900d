// `mproc pi --samples N --seed S`: pi by Monte Carlo, reproducible for a seed whatever the
// workers, backend and chunksize. The sample stream is cut into fixed blocks of 2^20
// samples; block b draws from its own generator, seeded from (seed, b), and the pool maps
// over block numbers and sums integer hit counts. How the blocks are spread over workers
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

namespace mproc::cli {
namespace {

constexpr std::uint64_t block_samples = std::uint64_t{1} << 20;
// Keeps samples + block_samples and the hit count far from overflow.
constexpr std::uint64_t max_samples = std::uint64_t{1} << 50;

/// splitmix64's output function (Steele, Lea, Flood 2014): a bijection that scatters
/// nearby inputs, so (seed, block) pairs give unrelated generator states.
constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// xoshiro256** (Blackman, Vigna), its state filled by splitmix64 as its authors advise.
class Xoshiro256 {
 public:
  explicit Xoshiro256(std::uint64_t seed) noexcept {
    for (auto& w : s_) {
      seed += 0x9e3779b97f4a7c15ull;
      w = mix64(seed);
    }
  }
  std::uint64_t operator()() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
    return (x << k) | (x >> (64 - k));
  }
  std::uint64_t s_[4];
};

/// Hits inside the quarter circle among block `block`'s samples. Integer arithmetic
/// throughout (31-bit coordinates, squares summed below 2^63), so the count is the same
/// on every machine and with every compiler flag; floating point could be contracted.
std::uint64_t block_hits(std::uint64_t seed, std::uint64_t block, std::uint64_t samples) {
  Xoshiro256 rng(mix64(mix64(seed) ^ block));
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
