// Random numbers per item: a distinct, reproducible stream for every item of a Pool call,
// whatever the number of workers, the backend and the chunk sizes.
//
//   double estimate(int) {                      // one Monte Carlo estimate per item
//     mproc::Xoshiro256 rng(mproc::task_seed(42));
//     std::uniform_real_distribution<double> u(0.0, 1.0);
//     ...
//   }
//   pool.map(estimate, mproc::range(10));       // same 10 values with Pool(1) or Pool(8)
//
// Why. Process workers are forked: each starts with a copy of the parent's memory, so a
// global generator (std::rand, a static std::mt19937) is in the same state in every
// worker, and every worker draws the same numbers. Seeding from the pid or the clock
// gives distinct but unreproducible streams that depend on which worker ran which item.
// A seed derived from (base, item index) depends on neither.
//
// seed_for(base, index) scatters the pair with splitmix64's output function, so nearby
// bases and indices give unrelated seeds; Xoshiro256 fills its state from the seed with
// splitmix64 as its authors advise. Both are plain functions of their arguments: the same
// on every machine, compiler and backend.
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>

#include "detail/task.hpp"

namespace mproc {

/// splitmix64's output function (Steele, Lea, Flood 2014): a bijection on 64-bit words
/// that scatters nearby inputs.
constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// The seed of item `index` of a computation seeded with `base` (numpy's
/// SeedSequence(base).spawn()[index] in spirit): distinct for distinct indices, the same
/// for the same pair everywhere.
constexpr std::uint64_t seed_for(std::uint64_t base, std::uint64_t index) noexcept {
  return mix64(mix64(base) ^ index);
}

/// seed_for(base, i) where i is the index, in the call's input, of the item the calling
/// thread runs now (current_task()). Use it inside a function given to map, imap,
/// imap_unordered, starmap or map_reduce, on any backend. apply and submit run one item,
/// index 0, so every such call gets the same seed: pass an index and use seed_for.
/// Throws std::logic_error outside a pool task. Thread-safe.
inline std::uint64_t task_seed(std::uint64_t base) {
  const std::optional<TaskInfo> task = current_task();
  if (!task)
    throw std::logic_error(
        "mproc::task_seed: called outside a pool task (no item index); use "
        "mproc::seed_for(base, index)");
  return seed_for(base, task->index);
}

/// xoshiro256** (Blackman, Vigna 2018): a small, fast generator with 256 bits of state,
/// its state filled from one 64-bit seed by splitmix64. A UniformRandomBitGenerator, so
/// it works with the <random> distributions. Not thread-safe (make one per item).
class Xoshiro256 {
 public:
  using result_type = std::uint64_t;

  explicit constexpr Xoshiro256(std::uint64_t seed) noexcept {
    for (auto& w : s_) {
      seed += 0x9e3779b97f4a7c15ull;
      w = mix64(seed);
    }
  }

  static constexpr result_type min() noexcept { return 0; }
  static constexpr result_type max() noexcept {
    return std::numeric_limits<result_type>::max();
  }

  constexpr result_type operator()() noexcept {
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
  std::uint64_t s_[4]{};
};

}  // namespace mproc
