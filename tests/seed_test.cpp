// mproc::task_seed, seed_for and Xoshiro256: one stream per item, the same whatever the
// backend, the number of workers and the chunk sizes, and distinct between items.
#include <mproc/pool.hpp>
#include <mproc/range.hpp>
#include <mproc/seed.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace {

constexpr std::uint64_t kBase = 2024;

/// Three draws of the item's own stream, folded into one word (a wrong stream, or a
/// stream shared with another item, changes it).
std::uint64_t draws(long) {
  mproc::Xoshiro256 rng(mproc::task_seed(kBase));
  std::uint64_t h = rng();
  h = h * 31 + rng();
  return h * 31 + rng();
}

/// The same, computed without a pool from the item's index.
std::uint64_t expected_draws(std::uint64_t index) {
  mproc::Xoshiro256 rng(mproc::seed_for(kBase, index));
  std::uint64_t h = rng();
  h = h * 31 + rng();
  return h * 31 + rng();
}

std::vector<std::uint64_t> serial(std::size_t n) {
  std::vector<std::uint64_t> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(expected_draws(i));
  return out;
}

TEST(Seed, SeedForIsAFunctionOfBothArguments) {
  std::set<std::uint64_t> seen;
  for (std::uint64_t base : {0ull, 1ull, 2ull, 42ull})
    for (std::uint64_t i = 0; i < 1000; ++i) seen.insert(mproc::seed_for(base, i));
  EXPECT_EQ(seen.size(), 4000u);
  EXPECT_EQ(mproc::seed_for(7, 3), mproc::seed_for(7, 3));
}

TEST(Seed, XoshiroIsAUniformRandomBitGenerator) {
  static_assert(std::uniform_random_bit_generator<mproc::Xoshiro256>);
  mproc::Xoshiro256 a(5), b(5), c(6);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const double x = u(a);
    ASSERT_GE(x, 0.0);
    ASSERT_LT(x, 1.0);
    sum += x;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
  (void)u(b);
  EXPECT_NE(b(), c());
}

TEST(Seed, TaskSeedOutsideAPoolTaskIsALogicError) {
  EXPECT_THROW((void)mproc::task_seed(1), std::logic_error);
  try {
    (void)mproc::task_seed(1);
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("seed_for"), std::string::npos);
  }
}

using Case = std::tuple<mproc::Backend, unsigned>;

class TaskSeed : public ::testing::TestWithParam<Case> {
 protected:
  mproc::Pool make_pool() const {
    return mproc::Pool({.workers = std::get<1>(GetParam()), .backend = std::get<0>(GetParam())});
  }
};

TEST_P(TaskSeed, MapGivesEachItemItsStreamWhateverTheChunks) {
  constexpr std::size_t n = 500;
  const auto want = serial(n);
  EXPECT_EQ(std::set<std::uint64_t>(want.begin(), want.end()).size(), n);
  mproc::Pool pool = make_pool();
  for (std::size_t chunksize : {0, 1, 3, 64, 1000}) {
    SCOPED_TRACE("chunksize " + std::to_string(chunksize));
    EXPECT_EQ(pool.map(draws, mproc::range(0L, static_cast<long>(n)), {.chunksize = chunksize}),
              want);
  }
}

TEST_P(TaskSeed, ImapUnorderedAndStarmapKeepTheStreamOfTheIndex) {
  constexpr std::size_t n = 200;
  const auto want = serial(n);
  mproc::Pool pool = make_pool();
  // The item carries its index, so results that arrive out of order are matched back.
  auto tagged = [](long i) { return std::pair<long, std::uint64_t>(i, draws(i)); };
  std::vector<std::uint64_t> got(n);
  std::size_t count = 0;
  for (auto [i, h] : pool.imap_unordered(tagged, mproc::range(0L, static_cast<long>(n)),
                                         {.chunksize = 7})) {
    got[static_cast<std::size_t>(i)] = h;
    ++count;
  }
  EXPECT_EQ(count, n);
  EXPECT_EQ(got, want);

  std::vector<std::tuple<int, int>> pairs;
  for (int i = 0; i < static_cast<int>(n); ++i) pairs.emplace_back(i, -i);
  auto two = [](int, int) { return draws(0); };
  EXPECT_EQ(pool.starmap(two, pairs, {.chunksize = 5}), want);
}

INSTANTIATE_TEST_SUITE_P(
    BackendsAndWorkers, TaskSeed,
    ::testing::Combine(::testing::Values(mproc::Backend::thread, mproc::Backend::process),
                       ::testing::Values(1u, 2u, 4u)),
    [](const auto& p) {
      return std::string(std::get<0>(p.param) == mproc::Backend::thread ? "thread"
                                                                            : "process") +
             "_" + std::to_string(std::get<1>(p.param));
    });

}  // namespace
