// Maps whose data does not travel: a map over mproc::range runs from its items' indices,
// a map over an Array reads the elements where they lie, and Pool::map_into writes its
// results into an Array. Values at the edges of the integer types, void maps, slices,
// crashes and exceptions in the middle of a chunk (exactly that item fails, every other
// item runs once), and the options under which the items travel as bytes again.
#include <mproc/bind.hpp>
#include <mproc/detail/chunking.hpp>
#include <mproc/pool.hpp>
#include <mproc/range.hpp>
#include <mproc/shared.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "proc_counts.hpp"
#include "sanitizers.hpp"

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

long affine(long x) { return 3 * x + 1; }
std::int8_t negate8(std::int8_t x) { return static_cast<std::int8_t>(-x); }
std::uint64_t high_bits(std::uint64_t x) { return x >> 32; }
double halve(const double& x) { return x / 2; }
std::uint32_t square32(const std::uint32_t& x) { return x * x; }

class IndexMap : public ::testing::TestWithParam<mproc::Backend> {
 protected:
  mproc::Pool pool_{{.workers = 2, .backend = GetParam()}};
};

TEST_P(IndexMap, ARangeGivesEveryValueInOrder) {
  for (long n : {0L, 1L, 7L, 1000L, 300'000L}) {
    std::vector<long> want;
    for (long i = 0; i < n; ++i) want.push_back(affine(i));
    EXPECT_EQ(pool_.map(affine, mproc::range(n)), want) << n << " items";
  }
  // Adaptive chunks and fixed ones, several of each per worker.
  std::vector<long> want;
  for (long i = -500; i < 40'000; ++i) want.push_back(affine(i));
  EXPECT_EQ(pool_.map(affine, mproc::range(-500L, 40'000L), {.chunksize = 777}), want);
}

TEST_P(IndexMap, AStepRangeGivesPythonsValues) {
  std::vector<long> want;
  for (long i = 10'000; i > -20'000; i -= 3) want.push_back(affine(i));
  EXPECT_EQ(pool_.map(affine, mproc::range(10'000L, -20'000L, -3L)), want);
  // The argument type's own wrap-around: int8 values from 127 down to -128.
  std::vector<std::int8_t> bytes;
  for (int i = 127; i >= -128; --i) bytes.push_back(negate8(static_cast<std::int8_t>(i)));
  EXPECT_EQ(pool_.map(negate8, mproc::range(std::int8_t{127}, std::int8_t{-128}, std::int8_t{-1})),
            std::vector<std::int8_t>(bytes.begin(), bytes.end() - 1));
}

TEST_P(IndexMap, TheLargestValuesOfTheTypeArriveExactly) {
  constexpr std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
  std::vector<std::uint64_t> want;
  for (std::uint64_t i = top - 5000; i < top; ++i) want.push_back(high_bits(i));
  EXPECT_EQ(pool_.map(high_bits, mproc::range(top - 5000, top)), want);
  constexpr long low = std::numeric_limits<long>::min();
  std::vector<long> lows;
  for (long i = low; i < low + 3000; ++i) lows.push_back(i / 7);
  EXPECT_EQ(pool_.map(+[](long x) { return x / 7; }, mproc::range(low, low + 3000)), lows);
}

void put_square(const mproc::Array<long>& out, long i) { out[static_cast<std::size_t>(i)] = i * i; }

TEST_P(IndexMap, AVoidMapOverARangeRunsEveryItem) {
  mproc::Array<long> out(120'000, -1);
  pool_.map(mproc::bind(put_square, out), mproc::range(120'000L));
  for (std::size_t i = 0; i < out.size(); ++i)
    ASSERT_EQ(out[i], static_cast<long>(i * i)) << "item " << i;
}

TEST_P(IndexMap, AMapOverAnArrayOrASliceEqualsTheMapOverItsValues) {
  std::vector<double> values(200'000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(i) * 1.5 - 7;
  const mproc::Array<double> shared(values);
  EXPECT_EQ(pool_.map(halve, shared), pool_.map(halve, values));
  const auto part = shared.slice(1234, 50'000);
  const auto got = pool_.map(halve, part);
  ASSERT_EQ(got.size(), 50'000u);
  for (std::size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], values[1234 + i] / 2) << i;
  EXPECT_TRUE(pool_.map(halve, mproc::Array<double>()).empty());
}

struct Point {
  float x, y;
  std::int32_t tag;
};
bool operator==(const Point& a, const Point& b) {
  return a.x == b.x && a.y == b.y && a.tag == b.tag;
}
Point flip(const Point& p) { return {p.y, p.x, -p.tag}; }

TEST_P(IndexMap, ABigVectorGivesTheSameResultsAndLeavesNothing) {
  // From 2 MiB a process pool copies the vector into a shared mapping for the call.
  std::vector<Point> points(400'000);
  for (std::size_t i = 0; i < points.size(); ++i)
    points[i] = {static_cast<float>(i), static_cast<float>(i) / 4, static_cast<std::int32_t>(i)};
  std::vector<Point> want;
  for (const Point& p : points) want.push_back(flip(p));
  (void)pool_.map(flip, std::vector<Point>(10));  // the workers are up and hold what they keep
  const int fds = proc_counts::open_fds(), maps = proc_counts::mproc_mappings();
  EXPECT_EQ(pool_.map(flip, points), want);
  // A process pool keeps that mapping for its next call (one fd, one mapping), and the
  // calls after it reuse it: for as many values, for fewer, and for other values of the
  // same type. Values of another type, or more of them, replace it.
  const int kept = GetParam() == mproc::Backend::process ? 1 : 0;
  const auto expect_kept = [&](const char* after) {
    EXPECT_EQ(proc_counts::open_fds(), fds + kept) << after;
    EXPECT_EQ(proc_counts::mproc_mappings(), maps + kept) << after;
  };
  expect_kept("the first call");
  for (int round = 0; round < 3; ++round) EXPECT_EQ(pool_.map(flip, points), want);
  expect_kept("three more");
  std::vector<Point> fewer(points.begin(), points.begin() + 300'000);
  for (Point& p : fewer) p.tag = -p.tag;
  std::vector<Point> want_fewer;
  for (const Point& p : fewer) want_fewer.push_back(flip(p));
  EXPECT_EQ(pool_.map(flip, fewer), want_fewer);
  EXPECT_EQ(pool_.map(flip, points), want);  // the old values are not left behind
  expect_kept("fewer values");
  std::vector<double> doubles(600'000);
  for (std::size_t i = 0; i < doubles.size(); ++i) doubles[i] = static_cast<double>(i);
  const auto halves = pool_.map(halve, doubles);
  ASSERT_EQ(halves.size(), doubles.size());
  EXPECT_EQ(halves[599'999], 599'999.0 / 2);
  EXPECT_EQ(pool_.map(flip, points), want);
  expect_kept("values of other types");
}

TEST(IndexMapStaging, APoolLeavesNothingOfItsKeptMappingWhenItIsGone) {
  std::vector<double> values(1'000'000, 3.0);
  const int fds = proc_counts::open_fds(), maps = proc_counts::mproc_mappings();
  {
    mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
    EXPECT_EQ(pool.map(halve, values).back(), 1.5);
    EXPECT_EQ(pool.map(halve, values).back(), 1.5);
  }
  EXPECT_EQ(proc_counts::open_fds(), fds);
  EXPECT_EQ(proc_counts::mproc_mappings(), maps);
}

TEST_P(IndexMap, MapIntoWritesEveryResultIntoTheOutputArray) {
  mproc::Array<std::uint32_t> in(250'000);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::uint32_t>(i * 7 + 3);
  mproc::Array<std::uint32_t> out(in.size(), 0);
  pool_.map_into(square32, in, out);
  for (std::size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i], square32(in[i])) << i;

  // Slices of both, at different offsets; what lies outside them is left alone.
  mproc::Array<double> wide(1000, -1.0);
  mproc::Array<double> src(600);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<double>(i);
  pool_.map_into(halve, src.slice(100, 400), wide.slice(500, 400), {.chunksize = 33});
  for (std::size_t i = 0; i < wide.size(); ++i)
    ASSERT_EQ(wide[i], i >= 500 && i < 900 ? static_cast<double>(i - 400) / 2 : -1.0) << i;

  // An empty pair is nothing to do.
  pool_.map_into(halve, src.slice(0, 0), wide.slice(0, 0));
}

TEST_P(IndexMap, MapIntoRefusesArraysOfDifferentSizes) {
  mproc::Array<double> a(10), b(11);
  try {
    pool_.map_into(halve, a, b);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("the input has 10 elements, the output 11"));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, IndexMap,
                         ::testing::Values(mproc::Backend::thread, mproc::Backend::process),
                         [](const auto& p) {
                           return std::string(p.param == mproc::Backend::thread ? "thread"
                                                                                : "process");
                         });

// ---- failures inside a chunk that travels as indices (process backend) -------------

constexpr std::size_t kItems = 20'000;
constexpr std::size_t kCrashAt = 12'345;
constexpr std::size_t kThrowAt = 3'001;

/// Counts each item's starts in `starts`, then: SIGKILLs its own worker on `kCrashAt`,
/// throws std::out_of_range on `kThrowAt`, and otherwise returns twice its input.
double counted(const mproc::Array<std::uint32_t>& starts, const double& x) {
  const auto i = static_cast<std::size_t>(x);
  starts.fetch_add(i, 1);
  if (i == kCrashAt) std::raise(SIGKILL);
  if (i == kThrowAt) throw std::out_of_range("item " + std::to_string(i));
  return 2 * x;
}

/// counted() by index, for a map over mproc::range.
double counted_index(const mproc::Array<std::uint32_t>& starts, std::size_t i) {
  return counted(starts, static_cast<double>(i));
}

mproc::Array<double> iota_array(std::size_t n) {
  mproc::Array<double> a(n);
  for (std::size_t i = 0; i < n; ++i) a[i] = static_cast<double>(i);
  return a;
}

/// Mappings of mproc Arrays in the pool's workers (the children of its fork server, the
/// one child this test process has while the pool lives).
int worker_array_mappings() {
  int n = 0;
  for (pid_t server : proc_counts::children_of(::getpid()))
    for (pid_t worker : proc_counts::children_of(server))
      n += proc_counts::mappings_named(std::to_string(worker), "memfd:mproc:Array");
  return n;
}

TEST(ArrayMappings, WorkersKeepABigArrayBetweenCallsAndLetItGoWithIt) {
  mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
  ASSERT_EQ(pool.apply(affine, 1L), 4);  // the workers are up, and map no Array
  EXPECT_EQ(worker_array_mappings(), 0);
  {
    mproc::Array<double> in(1'000'000), out(1'000'000);
    for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<double>(i);
    for (int round = 0; round < 3; ++round) {
      pool.map_into(halve, in, out);
      ASSERT_EQ(out[999'999], 999'999.0 / 2);
    }
    // The call is over and its code dropped, but the next call over these Arrays maps
    // nothing again: each worker that ran part of it keeps both.
    std::this_thread::sleep_for(200ms);
    const int kept = worker_array_mappings();
    EXPECT_GE(kept, 2);
    EXPECT_LE(kept, 4);
  }
  // The Arrays are gone here: the workers are told, and let them go too.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (worker_array_mappings() != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(worker_array_mappings(), 0);
  EXPECT_EQ(pool.apply(affine, 2L), 7);
}

TEST(ArrayMappings, AJobOfLittleWorkGoesOutInFewChunks) {
  // Chunks shrink towards the end of a call so that the workers finish together, but not
  // below a tenth of the target's work: 1000 items of 2 ns are one chunk, not a tail of
  // ever smaller ones (each a round trip that costs more than its items).
  using mproc::detail::adaptive_chunk;
  EXPECT_GE(adaptive_chunk(2.0, 500'000, 1 << 20, 1000, 2), 1000u);
  // Big calls still split evenly, and expensive items still go one by one.
  EXPECT_EQ(adaptive_chunk(1.0, 500'000, 1 << 20, 2'000'000, 2), 500'000u);
  EXPECT_EQ(adaptive_chunk(1.0, 500'000, 1 << 20, 400'000, 2), 100'000u);
  EXPECT_EQ(adaptive_chunk(1.0, 500'000, 1 << 20, 40'000, 2), 50'000u);
  EXPECT_EQ(adaptive_chunk(1e6, 500'000, 1 << 20, 1000, 2), 1u);
  EXPECT_EQ(adaptive_chunk(-1.0, 500'000, 1 << 20, 1000, 2), 1u);  // the cost is unknown
}

TEST(IndexMapFailures, ACrashMidChunkFailsThatItemAloneAndNoItemRunsTwice) {
  for (std::size_t chunksize : {std::size_t{0}, std::size_t{5000}, std::size_t{kItems}}) {
    SCOPED_TRACE("chunksize " + std::to_string(chunksize));
    mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
    const mproc::Array<std::uint32_t> starts(kItems, 0);
    const auto in = iota_array(kItems);
    mproc::Array<double> out(kItems, -1.0);
    try {
      pool.map_into(mproc::bind(counted, starts), in, out, {.chunksize = chunksize});
      FAIL() << "no exception";
    } catch (const std::out_of_range& e) {
      // The first failure in input order is the throw; the crash comes after it.
      EXPECT_THAT(e.what(), ::testing::HasSubstr("item 3001"));
    }
    for (std::size_t i = 0; i < kItems; ++i) {
      ASSERT_EQ(starts[i], 1u) << "item " << i << " started " << starts[i] << " times";
      if (i == kCrashAt || i == kThrowAt)
        ASSERT_EQ(out[i], -1.0) << i;
      else
        ASSERT_EQ(out[i], 2.0 * static_cast<double>(i)) << i;
    }
    // The pool goes on with a replacement worker.
    EXPECT_EQ(pool.map(affine, mproc::range(3L)), (std::vector<long>{1, 4, 7}));
  }
}

TEST(IndexMapFailures, ACrashMidChunkKeepsTheResultsBeforeItAndRunsTheRestElsewhere) {
  // Results that come back, in chunks bigger than a worker's scratch block: those the
  // crashed worker finished but had not sent are taken from its block, not run again.
  for (std::size_t chunksize : {std::size_t{0}, std::size_t{kItems / 2}}) {
    SCOPED_TRACE("chunksize " + std::to_string(chunksize));
    mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
    const mproc::Array<std::uint32_t> starts(kItems, 0);
    std::size_t index = 0;
    auto stream = pool.imap(mproc::bind(counted_index, starts), mproc::range(kItems),
                            {.chunksize = chunksize});
    for (auto it = stream.begin(); it != stream.end(); ++it, ++index) {
      SCOPED_TRACE("item " + std::to_string(index));
      if (index == kCrashAt) {
        try {
          (void)*it;
          FAIL() << "no crash";
        } catch (const mproc::WorkerCrashed& e) {
          EXPECT_EQ(e.task_index(), std::optional<std::size_t>(kCrashAt));
          EXPECT_EQ(e.signal(), SIGKILL);
        }
      } else if (index == kThrowAt) {
        EXPECT_THROW((void)*it, std::out_of_range);
      } else {
        ASSERT_EQ(*it, 2.0 * static_cast<double>(index));
      }
    }
    EXPECT_EQ(index, kItems);
    for (std::size_t i = 0; i < kItems; ++i)
      ASSERT_EQ(starts[i], 1u) << "item " << i << " started " << starts[i] << " times";
  }
}

TEST(IndexMapFailures, TimeoutsAndTaskBudgetsStillCountEachItem) {
  // Under these options the items travel as bytes again, item by item.
  mproc::Pool timed({.workers = 2, .backend = mproc::Backend::process, .task_timeout = 200ms});
  EXPECT_THROW(timed.map(+[](long i) {
                           if (i == 5) ::pause();
                           return i;
                         },
                         mproc::range(10L)),
               mproc::TaskTimeout);
  std::vector<long> want;
  for (long i = 0; i < 500; ++i) want.push_back(affine(i));
  EXPECT_EQ(timed.map(affine, mproc::range(500L)), want);
  mproc::Pool budget({.workers = 2, .backend = mproc::Backend::process,
                      .max_tasks_per_child = 37});
  EXPECT_EQ(budget.map(affine, mproc::range(500L)), want);
  mproc::Array<long> out(500, -1);
  budget.map(mproc::bind(put_square, out), mproc::range(500L));
  for (std::size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], static_cast<long>(i * i));
}

/// Crashes its worker the first time item 777 runs, and returns the index.
std::size_t crash_once(const mproc::Array<std::uint32_t>& starts, std::size_t i) {
  if (starts.fetch_add(i, 1) == 0 && i == 777) std::raise(SIGKILL);
  return i;
}

TEST(IndexMapFailures, ARetryRunsTheCrashedItemAgainAndNothingElse) {
  mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process, .retries = 1});
  const mproc::Array<std::uint32_t> starts(5000, 0);
  std::vector<std::size_t> want(5000);
  for (std::size_t i = 0; i < want.size(); ++i) want[i] = i;
  EXPECT_EQ(pool.map(mproc::bind(crash_once, starts), mproc::range(std::size_t{5000}),
                     {.chunksize = 1000}),
            want);
  for (std::size_t i = 0; i < starts.size(); ++i) ASSERT_EQ(starts[i], i == 777 ? 2u : 1u) << i;
}

TEST(IndexMapFailures, ACrashInABigVectorMapFailsThatItemAlone) {
  mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
  const mproc::Array<std::uint32_t> starts(kItems * 20, 0);
  std::vector<double> values(kItems * 20);  // 3.2 MB: through a shared mapping
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(i);
  try {
    (void)pool.map(mproc::bind(counted, starts), values);
    FAIL() << "no exception";
  } catch (const std::out_of_range& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("item 3001"));
  }
  for (std::size_t i = 0; i < values.size(); ++i) ASSERT_EQ(starts[i], 1u) << "item " << i;
}

}  // namespace
