// The mpi backend under `mpiexec -n N` (ctest runs it with 3 ranks, over shared memory and
// over TCP, and with 1 rank). Rank 0 runs the tests; the other ranks serve the tasks
// inside mproc::Runtime and exit when it ends. The semantics every backend shares (every
// Pool method's exact results, order, errors, close, terminate, several threads) are
// pool_semantics.cpp, built into this binary and run here on an mpi pool over the ranks
// (pool_cases() below). This file keeps what is the mpi backend's own: which ranks compute,
// packed chunks, errors from a given rank, one pool at a time, refused options, terminate
// and the next pool, calls nobody waits for, waits across pools, the executor and the trace.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <mproc/mproc.hpp>

#include "pool_semantics.hpp"

/// pool_semantics.cpp on one mpi pool over every other rank (rank 0 itself when alone).
std::vector<PoolCase> pool_cases() {
  const int size = mproc::Runtime::size();
  return {{mproc::Backend::mpi, static_cast<unsigned>(size > 1 ? size - 1 : 1)}};
}

namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

/// The ranks that run tasks: 1..N-1, or rank 0 itself when it is alone.
std::set<int> worker_ranks() {
  std::set<int> r;
  for (int k = 1; k < mproc::Runtime::size(); ++k) r.insert(k);
  if (r.empty()) r.insert(0);
  return r;
}

std::pair<int, long> rank_and_square(int x) {
  return {mproc::Runtime::rank(), static_cast<long>(x) * x};
}

mproc::Pool mpi_pool(mproc::PoolOptions o = {}) {
  o.backend = mproc::Backend::mpi;
  return mproc::Pool(o);
}

TEST(MpiRuntime, RankZeroRunsMain) {
  EXPECT_TRUE(mproc::Runtime::mpi());
  EXPECT_EQ(mproc::Runtime::rank(), 0);
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  ASSERT_NE(size, nullptr) << "run under mpiexec";
  EXPECT_EQ(mproc::Runtime::size(), std::stoi(size));
}

TEST(MpiPool, MapRunsOnEveryOtherRank) {
  auto pool = mpi_pool({.chunksize = 7});
  EXPECT_EQ(pool.workers(), static_cast<unsigned>(worker_ranks().size()));
  auto out = pool.map(rank_and_square, mproc::range(1000));
  ASSERT_EQ(out.size(), 1000u);
  std::set<int> ranks;
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(out[static_cast<std::size_t>(i)].second, static_cast<long>(i) * i);
    ranks.insert(out[static_cast<std::size_t>(i)].first);
  }
  // Every rank gets a first chunk before any gets a second.
  EXPECT_EQ(ranks, worker_ranks());
}

int add(int a, int b) { return a + b; }

int fail_on_rank_2(int x) {
  if (mproc::Runtime::rank() == 2) throw std::out_of_range("rank 2 says no to " + std::to_string(x));
  return x;
}

TEST(MpiPool, AnExceptionOnRankTwoArrivesWithItsTypeAndMessage) {
  if (mproc::Runtime::size() < 3) GTEST_SKIP() << "needs 3 ranks";
  auto pool = mpi_pool({.chunksize = 1});
  // Item 1 goes to rank 2: each rank gets one item before any gets a second.
  try {
    pool.map(fail_on_rank_2, mproc::range(10));
    FAIL() << "no error";
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.type_name(), "std::out_of_range");
    EXPECT_THAT(e.message(), HasSubstr("rank 2 says no to "));
    EXPECT_THAT(e.traceback(), HasSubstr("on rank 2 (pid "));
    ASSERT_TRUE(e.task_index().has_value());
    EXPECT_NE(e.worker_pid(), ::getpid());
  }
  // The pool goes on.
  EXPECT_EQ(pool.apply(add, 1, 2), 3);
}

// int -> long and double -> double are their own wire encoding: a rank runs such a chunk
// back to back and answers with the results as one array (packed) instead of a record per
// item. Results, errors and current_task() must be what the per-item path gives.
long cube(int x) { return static_cast<long>(x) * x * x; }
double half(double x) { return x / 2; }
long throw_at_537(int x) {
  if (x % 1000 == 537) throw std::invalid_argument("no " + std::to_string(x));
  return 2L * x;
}
struct Point {
  int x;
  double y;
};
Point to_point(std::array<int, 2> v) { return {v[0] + v[1], v[0] * 0.5}; }
long task_index(int) { return static_cast<long>(mproc::current_task()->index); }
long chunk_first(int) { return static_cast<long>(mproc::current_task()->chunk_first); }

TEST(MpiPool, PackedMapsGiveExactResults) {
  auto pool = mpi_pool();
  for (std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{0}}) {
    auto out = pool.map(cube, mproc::range(-5000, 5000), {.chunksize = chunk});
    ASSERT_EQ(out.size(), 10000u);
    for (int i = 0; i < 10000; ++i)
      ASSERT_EQ(out[static_cast<std::size_t>(i)], cube(i - 5000)) << "chunksize " << chunk;
  }
  // A trivially copyable struct and a std::array are their own encoding too.
  std::vector<std::array<int, 2>> pairs;
  for (int i = 0; i < 500; ++i) pairs.push_back({i, 3 * i});
  auto points = pool.map(to_point, pairs, {.chunksize = 64});
  ASSERT_EQ(points.size(), 500u);
  for (int i = 0; i < 500; ++i) {
    EXPECT_EQ(points[static_cast<std::size_t>(i)].x, 4 * i);
    EXPECT_EQ(points[static_cast<std::size_t>(i)].y, i * 0.5);
  }
  std::vector<double> xs{1.0, -3.5, 1e300, 0.1};
  EXPECT_EQ(pool.map(half, xs), (std::vector<double>{0.5, -1.75, 5e299, 0.05}));
  // imap takes the packed results item by item.
  long k = 0;
  for (long v : pool.imap(cube, mproc::range(0, 3000), {.chunksize = 100}))
    EXPECT_EQ(v, cube(static_cast<int>(k++)));
  EXPECT_EQ(k, 3000);
}

TEST(MpiPool, PackedChunksReportTheItemThatThrewAndKeepTheOthers) {
  // One rank runs tasks on a thread, where the task's own exception arrives.
  if (mproc::Runtime::size() < 2) GTEST_SKIP() << "one rank runs tasks in-process";
  auto pool = mpi_pool();
  try {
    pool.map(throw_at_537, mproc::range(3000), {.chunksize = 100});
    FAIL() << "no error";
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.type_name(), "std::invalid_argument");
    EXPECT_EQ(e.message(), "no 537");
    EXPECT_EQ(e.task_index(), std::optional<std::size_t>(537));
  }
  // imap_unordered hands over every other item's result; the three that threw raise where
  // the stream reaches them (the dereference), and the stream goes on.
  long sum = 0;
  int errors = 0;
  auto stream = pool.imap_unordered(throw_at_537, mproc::range(3000), {.chunksize = 100});
  for (auto it = stream.begin(); it != stream.end(); ++it) {
    try {
      sum += *it;
    } catch (const mproc::RemoteError& e) {
      ++errors;
      EXPECT_EQ(e.task_index().value_or(0) % 1000, 537u);
    }
  }
  EXPECT_EQ(errors, 3);
  EXPECT_EQ(sum, 2L * (2999L * 3000 / 2 - (537 + 1537 + 2537)));
}

TEST(MpiPool, PackedTasksSeeTheirOwnIndex) {
  auto pool = mpi_pool({.chunksize = 50});
  auto index = pool.map(task_index, mproc::range(1000));
  auto first = pool.map(chunk_first, mproc::range(1000));
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(index[static_cast<std::size_t>(i)], i);
    EXPECT_EQ(first[static_cast<std::size_t>(i)], i - i % 50);
  }
}

// Progress reports count every item, packed or not, and end with the total.
TEST(MpiPool, ProgressCountsEveryItem) {
  auto pool = mpi_pool();
  for (bool packed : {true, false}) {
    std::vector<std::size_t> done;
    std::optional<std::size_t> total;
    auto record = [&](const mproc::Progress& p) {
      done.push_back(p.done);
      total = p.total;
    };
    if (packed)
      EXPECT_EQ(pool.map(cube, mproc::range(20000), {.chunksize = 100, .progress = record})[19999],
                cube(19999));
    else
      EXPECT_EQ(pool.map(rank_and_square, mproc::range(2000), {.progress = record})[1999].second,
                1999L * 1999);
    const std::size_t n = packed ? 20000 : 2000;
    ASSERT_FALSE(done.empty());
    EXPECT_EQ(done.back(), n);
    EXPECT_EQ(total, std::optional<std::size_t>(n));
    EXPECT_TRUE(std::is_sorted(done.begin(), done.end()));
  }
}

TEST(MpiPool, BoundValuesTravelWithTheTask) {
  auto pool = mpi_pool();
  auto greet = mproc::bind([](const std::string& greeting, int n) {
    return greeting + " " + std::to_string(n);
  }, std::string("hello"));
  auto out = pool.map(greet, mproc::range(3));
  EXPECT_EQ(out, (std::vector<std::string>{"hello 0", "hello 1", "hello 2"}));
}

TEST(MpiPool, PoolsOneAfterAnotherAndOnlyOneAtATime) {
  for (int round = 0; round < 3; ++round) {
    auto pool = mpi_pool();
    EXPECT_EQ(pool.apply(add, round, 1), round + 1);
    if (mproc::Runtime::size() > 1) {
      EXPECT_THROW(mpi_pool(), std::invalid_argument);
    }
  }
}

double row_sum(std::span<const double> row) { return std::accumulate(row.begin(), row.end(), 0.0); }

TEST(MpiPool, MapRowsIsRefusedAcrossRanksAndRunsOnOne) {
  auto pool = mpi_pool();
  mproc::Array2D<double> table(40, 3, 1.5);
  if (mproc::Runtime::size() > 1) {
    try {
      (void)pool.map_rows(row_sum, table);
      FAIL() << "no exception";
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), HasSubstr("map_rows"));
      EXPECT_THAT(e.what(), HasSubstr("pool.map(f, rows)"));
    }
  } else {
    EXPECT_EQ(pool.map_rows(row_sum, table), std::vector<double>(40, 4.5));
  }
  EXPECT_EQ(pool.apply(add, 2, 3), 5);  // the pool is still good
}

TEST(MpiPool, OptionsMpiCannotKeepAreRefused) {
  if (mproc::Runtime::size() < 2) GTEST_SKIP() << "one rank runs tasks in-process";
  EXPECT_THROW(mpi_pool({.task_timeout = 1s}), std::invalid_argument);
  EXPECT_THROW(mpi_pool({.initializer = [] {}}), std::invalid_argument);
  EXPECT_THROW(mpi_pool({.max_tasks_per_child = 3}), std::invalid_argument);
}

int nap(int x) {
  std::this_thread::sleep_for(20ms);
  return x;
}

TEST(MpiPool, TerminateCancelsWhatHasNotRunAndTheRanksServeTheNextPool) {
  // One rank runs tasks on a thread, where terminate() lets a running map finish.
  if (mproc::Runtime::size() < 2) GTEST_SKIP() << "one rank runs tasks in-process";
  {
    auto pool = mpi_pool({.chunksize = 1});
    auto big = pool.map_async(nap, mproc::range(1000));
    std::this_thread::sleep_for(100ms);
    pool.terminate();
    EXPECT_THROW(big.get(), mproc::Cancelled);
  }
  auto pool = mpi_pool();
  auto out = pool.map(rank_and_square, mproc::range(100));
  EXPECT_EQ(out[99].second, 99L * 99);
}

// Calls nobody waits for still finish: the pool's own thread carries their messages, and
// their callbacks run there.
TEST(MpiPool, CallsFinishWithNobodyWaitingOnThem) {
  auto pool = mpi_pool();
  std::mutex m;
  std::condition_variable cv;
  long sum = 0;
  int done = 0;
  constexpr int calls = 200;
  for (int i = 0; i < calls; ++i) {
    auto f = pool.apply_async(rank_and_square, i);
    f.add_done_callback([&](const auto& done_future) {
      const long sq = done_future.get().second;
      std::lock_guard lock(m);
      sum += sq;
      ++done;
      cv.notify_all();
    });
  }
  // Wait on a condition variable, not on a future, so this thread drives nothing.
  std::unique_lock lock(m);
  ASSERT_TRUE(cv.wait_for(lock, 60s, [&] { return done == calls; }));
  EXPECT_EQ(sum, static_cast<long>(calls - 1) * calls * (2 * calls - 1) / 6);
}

// A timed wait on an mpi call times out while the task runs, and a wait on another pool's
// future while the mpi pool is open is not held up by it.
TEST(MpiPool, TimedWaitsAndOtherPoolsFutures) {
  auto pool = mpi_pool();
  auto slow = pool.apply_async(nap, 7);  // 20 ms on a rank
  EXPECT_FALSE(slow.wait_for(1ms));
  EXPECT_EQ(slow.get(), 7);
  mproc::Pool threads({.workers = 1, .backend = mproc::Backend::thread});
  auto local = threads.apply_async([] {
    std::this_thread::sleep_for(30ms);
    return 5;
  });
  EXPECT_EQ(local.get(), 5);
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
}

// A thread waiting on another pool's future helps the open mpi pool meanwhile; closing
// the mpi pool must not wait for that future, which here is released only after the mpi
// pool is gone (waiting for it would deadlock).
TEST(MpiPool, ClosingDoesNotWaitForThreadsWaitingOnOtherFutures) {
  mproc::Pool threads({.workers = 1, .backend = mproc::Backend::thread});
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto other = threads.apply_async([released] {
    released.wait();
    return 9;
  });
  std::atomic<bool> waiting{false};
  int got = 0;
  std::thread waiter;
  {
    auto pool = mpi_pool();
    EXPECT_EQ(pool.apply(add, 1, 1), 2);
    waiter = std::thread([&] {
      waiting = true;
      got = other.get();
    });
    while (!waiting) std::this_thread::yield();
    std::this_thread::sleep_for(20ms);  // let it settle into its wait
  }
  release.set_value();
  waiter.join();
  EXPECT_EQ(got, 9);
}

TEST(MpiExecutor, SubmitMapShutdown) {
  mproc::MpiPoolExecutor ex;
  std::vector<mproc::Future<int>> futures;
  for (int i = 0; i < 20; ++i) futures.push_back(ex.submit(add, i, i));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(futures[static_cast<std::size_t>(i)].get(), 2 * i);
  std::vector<int> xs(100), ys(100);
  std::iota(xs.begin(), xs.end(), 0);
  std::iota(ys.begin(), ys.end(), 100);
  int k = 0;
  for (int r : ex.map(add, xs, ys)) EXPECT_EQ(r, 2 * k++ + 100);
  EXPECT_EQ(k, 100);
  ex.shutdown({.wait = true});
  EXPECT_THROW(ex.submit(add, 1, 1), mproc::PoolClosed);
}

TEST(MpiPool, TraceHasOneLanePerRank) {
  const auto file = std::filesystem::temp_directory_path() /
                    ("mproc-mpi-trace-" + std::to_string(::getpid()) + ".json");
  {
    auto pool = mpi_pool({.chunksize = 10, .trace = file.string()});
    EXPECT_EQ(pool.map(rank_and_square, mproc::range(200)).size(), 200u);
  }
  std::ifstream in(file);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  std::filesystem::remove(file);
  const bool alone = mproc::Runtime::size() == 1;
  EXPECT_THAT(text, HasSubstr(alone ? "thread backend, 1 worker" : "mpi backend"));
  std::size_t events = 0;
  for (std::size_t at = 0; (at = text.find("\"ph\":\"X\"", at)) != std::string::npos; ++at) ++events;
  EXPECT_EQ(events, 20u);
}

}  // namespace

int main(int argc, char** argv) {
  mproc::Runtime runtime(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
