// Pool with Backend::thread, what is its own: endless inputs stopped half-way, move-only
// arguments, any callable (captures by reference, move-only and mutable functors),
// exceptions as their own types, scheduling (spreading, work stealing, nested waits that
// must not deadlock), one initializer call per worker thread, terminate and cancel of
// queued work, and no thread outliving the pool. The semantics every backend shares
// (results of every method, order, chunk sizes, errors by input order, initializers,
// close, terminate, several threads) are in pool_semantics.cpp, run on this backend too.
#include <mproc/pool.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "proc_counts.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <numeric>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

mproc::PoolOptions threads(unsigned n) {
  return {.workers = n, .backend = mproc::Backend::thread};
}

/// A one-shot event with a bounded wait: a pool that never runs the other side fails the
/// test instead of hanging it.
class Flag {
 public:
  void open() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds limit = 10s) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, limit, [&] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

/// Each caller waits (bounded) until `n` callers are inside at the same time. Only threads
/// that really run at once can get through together, so it proves parallelism without
/// measuring time.
class Rendezvous {
 public:
  explicit Rendezvous(int n) : n_(n) {}
  bool arrive_and_wait(std::chrono::milliseconds limit = 10s) {
    std::unique_lock lock(mutex_);
    ++inside_;
    cv_.notify_all();
    return cv_.wait_for(lock, limit, [&] { return inside_ >= n_; });
  }

 private:
  const int n_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int inside_ = 0;
};

/// The threads that ran something.
class ThreadIds {
 public:
  void add() {
    std::lock_guard lock(mutex_);
    ids_.insert(std::this_thread::get_id());
  }
  std::set<std::thread::id> get() {
    std::lock_guard lock(mutex_);
    return ids_;
  }
  std::size_t size() { return get().size(); }

 private:
  std::mutex mutex_;
  std::set<std::thread::id> ids_;
};

std::size_t count_threads() { return static_cast<std::size_t>(proc_counts::threads()); }

/// An endless input of unknown size that counts how far it has been read.
struct Endless {
  std::atomic<long>* pulled;
  struct iterator {
    using value_type = long;
    using difference_type = std::ptrdiff_t;
    std::atomic<long>* pulled = nullptr;
    long i = 0;
    long operator*() const { return i; }
    iterator& operator++() {
      ++i;
      pulled->store(i);
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return false; }
  };
  iterator begin() const { return {pulled}; }
  std::default_sentinel_t end() const { return {}; }
};

class ThreadWorkers : public ::testing::TestWithParam<unsigned> {};

// ---- endless inputs and arguments ------------------------------------------------------

TEST_P(ThreadWorkers, ImapOverEndlessInputStopsWhenTheConsumerStops) {
  const unsigned n = GetParam();
  mproc::Pool pool(threads(n));
  for (bool ordered : {true, false}) {
    std::atomic<long> pulled{0};
    long seen = 0;
    std::set<long> values;
    {
      auto f = [](long x) { return x * 3; };
      auto stream = ordered ? pool.imap(f, Endless{&pulled}) : pool.imap_unordered(f, Endless{&pulled});
      for (long r : stream) {
        if (ordered) {
          EXPECT_EQ(r, seen * 3);
        }
        values.insert(r);
        if (++seen == 3000) break;
      }
      // Leaving the scope destroys the stream half-way: it must stop the runners and
      // return, though the input never ends.
    }
    EXPECT_EQ(values.size(), 3000u);  // no result delivered twice
    for (long v : values) EXPECT_EQ(v % 3, 0);
    // Only a bounded window ahead of the consumer was ever read from the endless input.
    EXPECT_LT(pulled.load(), seen + 2 * 1024 * static_cast<long>(n) + 16) << "ordered " << ordered;
  }
  // Slow items, stopped after the first result: destruction still returns promptly enough
  // (it waits only for the items in progress).
  {
    std::atomic<long> pulled{0};
    auto stream = pool.imap(
        [](long x) {
          std::this_thread::sleep_for(1ms);
          return x;
        },
        Endless{&pulled});
    auto it = stream.begin();
    ASSERT_TRUE(it != stream.end());
    EXPECT_EQ(*it, 0);
  }
  EXPECT_EQ(pool.apply([] { return 5; }), 5);  // the pool is still usable
}

TEST_P(ThreadWorkers, ApplyTakesMoveOnlyArgumentsAndCallablesWithCaptures) {
  mproc::Pool pool(threads(GetParam()));
  // Arguments are stored by value and may be move-only.
  EXPECT_EQ(pool.apply([](std::unique_ptr<int> p) { return *p + 1; }, std::make_unique<int>(41)), 42);
  std::atomic<int> side{0};
  pool.apply([&side] { side = 9; });  // void
  EXPECT_EQ(side.load(), 9);
  auto v = pool.apply_async([&side] { side += 1; });
  v.get();
  EXPECT_EQ(side.load(), 10);
  EXPECT_TRUE(v.done());
  EXPECT_FALSE(v.cancelled());
}

// ---- any callable ------------------------------------------------------------------------

/// A functor whose call operator is not const and reuses a scratch buffer between calls.
struct Joiner {
  std::string separator;
  std::string scratch;
  std::string operator()(const std::vector<std::string>& parts) {
    scratch.clear();
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (i) scratch += separator;
      scratch += parts[i];
    }
    return scratch;
  }
};

/// A functor with a non-const call operator and shared state it updates safely.
struct Tally {
  std::atomic<long>* total;
  long operator()(long x) {
    total->fetch_add(x);
    return -x;
  }
};

struct Table {
  std::unique_ptr<std::vector<int>> values;
};

TEST_P(ThreadWorkers, AnyCallableWorksCapturesByReferenceAndMutableFunctors) {
  mproc::Pool pool(threads(GetParam()));
  // Captures of non-trivially-copyable state by reference: fine for threads.
  const std::string prefix = "item-";
  const std::vector<int> weights{5, 7, 11};
  auto named = pool.map([&](int i) { return prefix + std::to_string(i * weights[i % 3]); },
                        mproc::range(0, 300));
  for (int i = 0; i < 300; ++i) EXPECT_EQ(named[i], "item-" + std::to_string(i * weights[i % 3]));

  Table table{std::make_unique<std::vector<int>>(1000)};
  std::iota(table.values->begin(), table.values->end(), 100);
  auto looked_up = pool.map([&table](int i) { return (*table.values)[i]; }, mproc::range(0, 1000));
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(looked_up[i], 100 + i);

  // A move-only callable.
  auto owner = [p = std::make_unique<int>(3)](int x) { return x * *p; };
  EXPECT_EQ(pool.map(std::move(owner), mproc::range(0, 4)), (std::vector<int>{0, 3, 6, 9}));

  // Non-const call operators.
  std::atomic<long> total{0};
  auto negated = pool.map(Tally{&total}, mproc::range(1L, 1001L));
  EXPECT_EQ(total.load(), 500500);
  EXPECT_EQ(negated[999], -1000);
  int calls = 0;
  std::mutex m;
  auto counted = pool.map([&, bonus = 1](int x) mutable {
    std::lock_guard lock(m);
    ++calls;
    return x + bonus;
  }, mproc::range(0, 100));
  EXPECT_EQ(calls, 100);
  EXPECT_EQ(counted[99], 100);
  EXPECT_EQ(pool.apply(Tally{&total}, 10L), -10);
  EXPECT_EQ(total.load(), 500510);
}

TEST(ThreadPool, MutableFunctorWithScratchStateOnOneWorker) {
  // One worker runs the items one after another, so a functor that keeps scratch state
  // in itself is safe there.
  mproc::Pool pool(threads(1));
  std::vector<std::vector<std::string>> parts{{"a", "b"}, {}, {"x"}, {"1", "2", "3"}};
  EXPECT_EQ(pool.map(Joiner{"-", {}}, parts), (std::vector<std::string>{"a-b", "", "x", "1-2-3"}));
  std::vector<std::string> streamed;
  for (auto& s : pool.imap(Joiner{"+", {}}, parts)) streamed.push_back(s);
  EXPECT_EQ(streamed, (std::vector<std::string>{"a+b", "", "x", "1+2+3"}));
}

// ---- exceptions travel as their own type ---------------------------------------------

struct Oops {
  int code;
};

TEST_P(ThreadWorkers, ExceptionsKeepTheirOwnType) {
  mproc::Pool pool(threads(GetParam()));
  auto f3 = [](int x) {
    if (x == 3) {
      std::this_thread::sleep_for(20ms);
      throw std::out_of_range("three");
    }
    if (x == 7) throw std::invalid_argument("seven");
    return x;
  };
  try {
    pool.map(f3, mproc::range(0, 20), {.chunksize = 1});
    FAIL() << "no exception";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "three");
  }
  auto fut = pool.map_async(f3, mproc::range(0, 20), {.chunksize = 1});
  EXPECT_THROW(fut.get(), std::out_of_range);
  EXPECT_THROW(fut.get(), std::out_of_range);  // every time
  // Not even derived from std::exception.
  EXPECT_THROW(pool.starmap([](int a, int b) -> int { if (a == 2) throw Oops{b}; return a; },
                            std::vector<std::pair<int, int>>{{1, 1}, {2, 22}, {3, 33}}),
               Oops);
  EXPECT_THROW(pool.map_reduce([](int x) -> int { if (x == 50) throw std::domain_error("fifty"); return x; },
                               std::plus<>{}, mproc::range(0, 100)),
               std::domain_error);
  int oops = 0, ok = 0;
  auto stream = pool.imap([](int x) { if (x == 5) throw Oops{x}; return x; }, mproc::range(0, 10));
  for (auto it = stream.begin(); it != stream.end();) {
    try {
      ++ok;
      ++it;
    } catch (const Oops& e) {
      EXPECT_EQ(e.code, 5);
      ++oops;
      ++it;
    }
  }
  EXPECT_EQ(oops, 1);
  try {
    pool.apply([](std::vector<int> v) { return v.at(10); }, std::vector<int>{1, 2});
    FAIL() << "no exception";
  } catch (const std::out_of_range&) {
  }
  auto f = pool.apply_async([]() -> int { throw Oops{42}; });
  try {
    f.get();
    FAIL() << "no exception";
  } catch (const Oops& e) {
    EXPECT_EQ(e.code, 42);
  }
  EXPECT_NE(f.exception(), nullptr);
  EXPECT_FALSE(f.cancelled());
  EXPECT_EQ(pool.apply([] { return 1; }), 1);
}

// ---- scheduling ------------------------------------------------------------------------

TEST_P(ThreadWorkers, WorkSpreadsOverEveryWorker) {
  const unsigned n = GetParam();
  mproc::Pool pool(threads(n));
  // Each item waits until all n are inside at once: only n distinct threads get through.
  {
    Rendezvous all(static_cast<int>(n));
    ThreadIds ids;
    auto ok = pool.map(
        [&](int) {
          ids.add();
          return all.arrive_and_wait();
        },
        mproc::range(0, static_cast<int>(n)), {.chunksize = 1});
    EXPECT_EQ(std::count(ok.begin(), ok.end(), true), static_cast<long>(n));
    EXPECT_EQ(ids.size(), n);
  }
  {
    Rendezvous all(static_cast<int>(n));
    ThreadIds ids;
    std::vector<mproc::Future<bool>> futures;
    for (unsigned i = 0; i < n; ++i)
      futures.push_back(pool.apply_async([&] {
        ids.add();
        return all.arrive_and_wait();
      }));
    for (auto& f : futures) EXPECT_TRUE(f.get());
    EXPECT_EQ(ids.size(), n);
    EXPECT_FALSE(ids.get().contains(std::this_thread::get_id()));
  }
}

// std::vector<bool> keeps 64 results in a word: workers that set neighbouring items at once
// must not write the same word, or one of the two results is lost. The window is a few
// instructions wide, so a lost result is rare here; under ThreadSanitizer the race itself
// fails the test.
TEST_P(ThreadWorkers, BoolResultsOfNeighbouringItemsAreNeverLost) {
  mproc::Pool pool(threads(GetParam()));
  constexpr int kItems = 100'000;
  for (int round = 0; round < 2; ++round) {
    const std::vector<bool> odd =
        pool.map([](int x) { return x % 2 == 1; }, mproc::range(0, kItems), {.chunksize = 1});
    ASSERT_EQ(odd.size(), static_cast<std::size_t>(kItems));
    long wrong = 0;
    for (int i = 0; i < kItems; ++i) wrong += odd[i] != (i % 2 == 1);
    EXPECT_EQ(wrong, 0) << "round " << round;
  }
}

TEST_P(ThreadWorkers, SubtasksOfOneTaskAreStolenByIdleWorkers) {
  const unsigned n = GetParam();
  mproc::Pool pool(threads(n));
  ThreadIds ids;
  // All 100 subtasks go to the submitting worker's own deque; others can only get them
  // by stealing.
  const long sum = pool.apply([&] {
    std::vector<mproc::Future<long>> subs;
    for (long i = 0; i < 100; ++i)
      subs.push_back(pool.apply_async([&ids, i] {
        ids.add();
        std::this_thread::sleep_for(2ms);
        return i * i;
      }));
    long s = 0;
    for (auto& f : subs) s += f.get();
    return s;
  });
  EXPECT_EQ(sum, 328350);  // sum of i^2 for i < 100
  if (n == 1) {
    EXPECT_EQ(ids.size(), 1u);
  } else {
    EXPECT_GT(ids.size(), 1u) << "no subtask was stolen";
  }
}

TEST(ThreadPool, NestedWaitsOnOneWorkerDoNotDeadlock) {
  mproc::Pool pool(threads(1));
  // The only worker waits for work it submitted itself: it must run that work meanwhile.
  const long r = pool.apply([&] {
    const long a = pool.apply_async([](long x) { return x * 100; }, 7L).get();
    auto squares = pool.map([](long x) { return x * x; }, mproc::range(0L, 100L));
    auto more = pool.map_async([](long x) { return x + 1; }, mproc::range(0L, 10L));
    const long b = std::accumulate(squares.begin(), squares.end(), 0L);
    const long c = pool.map_reduce([](long x) { return x; }, std::plus<>{}, mproc::range(0L, 10L));
    return a + b + c + more.get().back();
  });
  EXPECT_EQ(r, 700 + 328350 + 45 + 10);
}

TEST_P(ThreadWorkers, NestedMapInsideEveryItemAndTaskInfoIsRestored) {
  mproc::Pool pool(threads(GetParam()));
  // Every worker can be inside an outer item waiting for its inner map at the same time.
  auto sums = pool.map(
      [&](int i) {
        const std::size_t before = mproc::current_task()->index;
        auto inner = pool.map([i](int j) { return i * j; }, mproc::range(0, 50), {.chunksize = 5});
        const std::size_t after = mproc::current_task()->index;
        const int s = std::accumulate(inner.begin(), inner.end(), 0);
        return before == static_cast<std::size_t>(i) && after == before ? s : -1;
      },
      mproc::range(0, 16), {.chunksize = 1});
  for (int i = 0; i < 16; ++i) EXPECT_EQ(sums[i], i * 1225) << i;
}

long fib(mproc::Pool& pool, int n) {
  if (n < 2) return n;
  auto a = pool.apply_async([&pool, n] { return fib(pool, n - 1); });
  auto b = pool.apply_async([&pool, n] { return fib(pool, n - 2); });
  return a.get() + b.get();
}

TEST(ThreadPool, RecursiveFibonacciByNestedApplyAsync) {
  for (unsigned n : {1u, 2u}) {
    mproc::Pool pool(threads(n));
    EXPECT_EQ(pool.apply([&pool] { return fib(pool, 18); }), 2584) << n << " workers";
    EXPECT_EQ(fib(pool, 12), 144) << n << " workers";  // from outside the pool too
  }
}

/// Runs `body` in a forked child and reports whether it exited 0 within `limit`. A child
/// still running at the limit (a deadlock) is killed. Used for a check that would hang
/// the test binary if the library deadlocked.
::testing::AssertionResult finishes_in_child(std::function<bool()> body, std::chrono::seconds limit) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    bool ok = false;
    try {
      ok = body();
    } catch (...) {
    }
    ::_exit(ok ? 0 : 1);
  }
  if (pid < 0) return ::testing::AssertionFailure() << "fork failed";
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return ::testing::AssertionFailure() << "still blocked after " << limit.count() << " s (deadlock)";
    }
    std::this_thread::sleep_for(10ms);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "child failed, status " << status;
}

/// An imap consumed inside the only worker's task; true if the sum is right.
bool nested_imap_on_one_worker() {
  mproc::Pool pool(threads(1));
  const long r = pool.apply([&] {
    long s = 0;
    for (long x : pool.imap([](long v) { return v * v; }, mproc::range(0L, 100L))) s += x;
    return s;
  });
  return r == 328350;
}

bool nested_imap_unordered_on_one_worker() {
  mproc::Pool pool(threads(1));
  const long r = pool.apply([&] {
    long s = 0;
    for (long x : pool.imap_unordered([](long v) { return v; }, mproc::range(0L, 100L))) s += x;
    return s;
  });
  return r == 4950;
}

TEST(ThreadPool, NestedImapOnOneWorkerDoesNotDeadlock) {
  // As with map and Future::get, an imap consumed inside a task must not just sleep while
  // its runners sit queued behind that very task. Run in a child process: a deadlock
  // would otherwise hang the whole binary.
  EXPECT_TRUE(finishes_in_child(nested_imap_on_one_worker, 3s)) << "imap";
  EXPECT_TRUE(finishes_in_child(nested_imap_unordered_on_one_worker, 3s)) << "imap_unordered";
}

// ---- initializer -------------------------------------------------------------------------

TEST_P(ThreadWorkers, InitializerRunsOnceInEachWorkerThread) {
  const unsigned n = GetParam();
  std::atomic<int> calls{0};
  ThreadIds init_ids, task_ids;
  {
    mproc::Pool pool({.workers = n,
                      .backend = mproc::Backend::thread,
                      .initializer = [&] {
                        ++calls;
                        init_ids.add();
                      }});
    pool.map(
        [&](int) {
          task_ids.add();
          return 0;
        },
        mproc::range(0, 2000), {.chunksize = 1});
  }  // joined: every worker has started (and run its initializer) by now
  EXPECT_EQ(calls.load(), static_cast<int>(n));
  EXPECT_EQ(init_ids.size(), n);
  // Tasks ran only on threads that had been initialized.
  const auto init = init_ids.get();
  for (auto id : task_ids.get()) EXPECT_TRUE(init.contains(id));
  EXPECT_FALSE(init.contains(std::this_thread::get_id()));
}

// ---- shutdown and cancellation -------------------------------------------------------

TEST(ThreadPool, TerminateCancelsQueuedWorkAndRefusesMore) {
  mproc::Pool pool(threads(1));
  Flag started, release;
  std::atomic<int> ran{0};
  auto blocker = pool.apply_async([&] {
    started.open();
    return release.wait();
  });
  ASSERT_TRUE(started.wait());
  auto body = [&ran](int i) {
    ++ran;
    return i;
  };
  std::vector<mproc::Future<int>> queued;
  for (int i = 0; i < 20; ++i) queued.push_back(pool.apply_async(body, i));

  // terminate() waits for the running task, which ends only when released. Release it
  // from another thread once terminate() has started: the pool refuses new work then.
  // (Tasks this thread queues before that are queued work too.)
  std::vector<mproc::Future<int>> late;
  std::thread unblocker([&] {
    for (int i = 0;; ++i) {
      try {
        late.push_back(pool.apply_async(body, 100 + i));
      } catch (const mproc::PoolClosed&) {
        break;
      }
      std::this_thread::sleep_for(1ms);
    }
    std::this_thread::sleep_for(50ms);  // close() and the cancel are two adjacent steps
    release.open();
  });
  pool.terminate();
  unblocker.join();

  EXPECT_TRUE(blocker.get());  // the running task finished normally
  EXPECT_FALSE(blocker.cancelled());
  EXPECT_EQ(ran.load(), 0) << "queued tasks ran after terminate()";
  for (auto* list : {&queued, &late}) {
    for (auto& f : *list) {
      EXPECT_TRUE(f.done());
      EXPECT_TRUE(f.cancelled());
      EXPECT_THROW(f.get(), mproc::Cancelled);
    }
  }
  EXPECT_THROW(pool.apply_async(body, 0), mproc::PoolClosed);
  EXPECT_THROW(pool.map(body, mproc::range(0, 5)), mproc::PoolClosed);
}

TEST(ThreadPool, JoinFromInsideATaskThrowsLogicError) {
  mproc::Pool pool(threads(2));
  const std::string what = pool.apply([&] {
    try {
      pool.join();
      return std::string("joined");
    } catch (const std::logic_error&) {
      return std::string("logic_error");
    }
  });
  EXPECT_EQ(what, "logic_error");
  EXPECT_EQ(pool.apply([] { return 3; }), 3);  // not closed by the failed join
}

TEST(ThreadPool, CancelledPendingFutureNeverRuns) {
  std::atomic<int> ran{0};
  mproc::Future<int> cancelled, after;
  {
    mproc::Pool pool(threads(1));
    Flag started, release;
    auto blocker = pool.apply_async([&] {
      started.open();
      return release.wait();
    });
    ASSERT_TRUE(started.wait());  // the only worker is busy: what follows stays pending
    cancelled = pool.apply_async([&ran] { return ++ran; });
    after = pool.apply_async([] { return 7; });
    EXPECT_FALSE(cancelled.running());
    EXPECT_TRUE(cancelled.cancel());
    EXPECT_TRUE(cancelled.cancel());  // again: still cancelled
    EXPECT_TRUE(cancelled.done());
    release.open();
    EXPECT_TRUE(blocker.get());
    EXPECT_FALSE(blocker.cancel());  // finished: too late
  }  // joined: anything still queued has run or been discarded
  EXPECT_EQ(ran.load(), 0);
  EXPECT_TRUE(cancelled.cancelled());
  EXPECT_THROW(cancelled.get(), mproc::Cancelled);
  EXPECT_THROW(cancelled.exception(), mproc::Cancelled);
  EXPECT_EQ(after.get(), 7);  // the cancel touched only its own task
}

// ---- leaks -----------------------------------------------------------------------------

TEST_P(ThreadWorkers, NoThreadOutlivesThePool) {
  const std::size_t before = count_threads();
  {
    mproc::Pool pool(threads(GetParam()));
    EXPECT_EQ(count_threads(), before + GetParam());
    EXPECT_EQ(pool.map([](int x) { return x; }, mproc::range(0, 1000)).size(), 1000u);
    std::atomic<long> pulled{0};
    for (long x : pool.imap([](long v) { return v; }, Endless{&pulled}))
      if (x == 10) break;
  }
  EXPECT_EQ(count_threads(), before);
  {
    mproc::Pool pool(threads(GetParam()));
    pool.terminate();
  }
  EXPECT_EQ(count_threads(), before);
}

INSTANTIATE_TEST_SUITE_P(Workers, ThreadWorkers, ::testing::Values(1u, 2u, 4u, 8u));

}  // namespace
