// Pool with Backend::thread: exact results of every method over every kind of input,
// any callable, exceptions as their own types, scheduling (spreading, work stealing,
// nested waits that must not deadlock), initializers, and shutdown.
#include <mproc/pool.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <ranges>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
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

std::size_t count_threads() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

/// A single-pass input whose values are made as it advances, like a generator: it cannot
/// be read twice, so the pool must consume it exactly once, in order.
class Generator {
 public:
  explicit Generator(int n) : n_(n) {}
  struct iterator {
    using value_type = int;
    using difference_type = std::ptrdiff_t;
    Generator* g = nullptr;
    int operator*() const { return g->current_ * 10; }
    iterator& operator++() {
      ++g->current_;
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return g->current_ >= g->n_; }
  };
  iterator begin() { return {this}; }
  std::default_sentinel_t end() const { return {}; }

 private:
  int n_;
  int current_ = 0;
};
static_assert(std::ranges::input_range<Generator>);
static_assert(!std::ranges::forward_range<Generator>);

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

// ---- every Pool method, exact results ----------------------------------------------------

TEST_P(ThreadWorkers, MapOverRangeStringsListAndSinglePassInputs) {
  mproc::Pool pool(threads(GetParam()));
  EXPECT_EQ(pool.workers(), GetParam());
  EXPECT_EQ(pool.backend(), mproc::Backend::thread);

  auto squares = pool.map([](long x) { return x * x; }, mproc::range(1L, 20001L));
  ASSERT_EQ(squares.size(), 20000u);
  for (long i = 1; i <= 20000; ++i) ASSERT_EQ(squares[i - 1], i * i) << i;

  // Strings are passed as they are (no serialization): results keep input order.
  std::vector<std::string> words;
  for (int i = 0; i < 500; ++i) words.push_back(std::string(i % 17, 'a' + i % 26) + std::to_string(i));
  auto shouted = pool.map([](const std::string& w) { return w + "!"; }, words);
  ASSERT_EQ(shouted.size(), words.size());
  for (std::size_t i = 0; i < words.size(); ++i) EXPECT_EQ(shouted[i], words[i] + "!");

  // A linked list is not random access: the pool must still keep the order.
  std::list<int> linked;
  for (int i = 0; i < 777; ++i) linked.push_back(i * 7 % 1000);
  auto tripled = pool.map([](int x) { return 3 * x; }, linked);
  ASSERT_EQ(tripled.size(), linked.size());
  std::size_t k = 0;
  for (int x : linked) EXPECT_EQ(tripled[k++], 3 * x);

  // Single-pass inputs: a stream of numbers and a generator.
  std::string text;
  for (int i = 0; i < 1000; ++i) text += std::to_string(i * i) + " ";
  std::istringstream in(text);
  auto plus_one = pool.map([](long x) { return x + 1; }, std::views::istream<long>(in));
  ASSERT_EQ(plus_one.size(), 1000u);
  for (long i = 0; i < 1000; ++i) EXPECT_EQ(plus_one[i], i * i + 1);

  Generator gen(600);
  auto halves = pool.map([](int x) { return x / 2; }, gen);
  ASSERT_EQ(halves.size(), 600u);
  for (int i = 0; i < 600; ++i) EXPECT_EQ(halves[i], i * 5);

  // Empty inputs give empty results at once.
  EXPECT_TRUE(pool.map([](int x) { return x; }, mproc::range(0)).empty());
  EXPECT_TRUE(pool.map([](const std::string& s) { return s; }, std::vector<std::string>{}).empty());
  EXPECT_TRUE(pool.map([](int x) { return x; }, std::list<int>{}).empty());
  EXPECT_TRUE(pool.map_async([](int x) { return x; }, mproc::range(5, 5)).get().empty());
  EXPECT_EQ(pool.map_reduce([](int x) { return x; }, std::plus<>{}, mproc::range(0)), 0);
}

TEST_P(ThreadWorkers, MapAsyncStarmapAndStarmapAsync) {
  mproc::Pool pool(threads(GetParam()));
  auto lengths = pool.map_async([](const std::string& s) { return s.size(); },
                                std::vector<std::string>{"", "a", "bb", "ccc"});
  auto cubes = pool.map_async([](long x) { return x * x * x; }, mproc::range(0L, 3000L));

  std::vector<std::tuple<int, std::string, double>> rows;
  for (int i = 0; i < 300; ++i) rows.emplace_back(i, std::string(1, 'a' + i % 26), i * 0.5);
  auto labels = pool.starmap(
      [](int i, const std::string& s, double d) { return s + std::to_string(i) + ":" + std::to_string(d * 2 == i); },
      rows);
  ASSERT_EQ(labels.size(), rows.size());
  for (int i = 0; i < 300; ++i)
    EXPECT_EQ(labels[i], std::string(1, 'a' + i % 26) + std::to_string(i) + ":1");

  std::list<std::tuple<int, int>> pairs;  // not random access either
  for (int i = 0; i < 200; ++i) pairs.emplace_back(i, 1000 * i);
  auto sums = pool.starmap_async([](int a, int b) { return a + b; }, pairs);

  EXPECT_EQ(lengths.get(), (std::vector<std::size_t>{0, 1, 2, 3}));
  const auto& c = cubes.get();
  ASSERT_EQ(c.size(), 3000u);
  for (long i = 0; i < 3000; ++i) EXPECT_EQ(c[i], i * i * i);
  const auto& s = sums.get();
  ASSERT_EQ(s.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(s[i], 1001 * i);
  EXPECT_TRUE(sums.done());
}

TEST_P(ThreadWorkers, ImapKeepsOrderImapUnorderedKeepsEverything) {
  mproc::Pool pool(threads(GetParam()));
  std::vector<long> ordered;
  for (long r : pool.imap([](long x) { return x * x; }, mproc::range(0L, 5000L)))
    ordered.push_back(r);
  ASSERT_EQ(ordered.size(), 5000u);
  for (long i = 0; i < 5000; ++i) ASSERT_EQ(ordered[i], i * i);

  std::vector<std::string> words{"x", "yy", "zzz", "", "wwww"};
  std::vector<std::string> echoed;
  for (auto& w : pool.imap([](const std::string& s) { return s + s; }, words, {.chunksize = 1}))
    echoed.push_back(w);
  EXPECT_EQ(echoed, (std::vector<std::string>{"xx", "yyyy", "zzzzzz", "", "wwwwwwww"}));

  std::multiset<long> unordered;
  for (long r : pool.imap_unordered([](long x) { return 2 * x; }, mproc::range(0L, 3000L),
                                    {.chunksize = 3}))
    unordered.insert(r);
  std::multiset<long> expected;
  for (long i = 0; i < 3000; ++i) expected.insert(2 * i);
  EXPECT_EQ(unordered, expected);

  // Empty input: the stream ends at once.
  int n = 0;
  for ([[maybe_unused]] int r : pool.imap([](int x) { return x; }, mproc::range(0))) ++n;
  for ([[maybe_unused]] int r : pool.imap_unordered([](int x) { return x; }, std::list<int>{})) ++n;
  EXPECT_EQ(n, 0);
}

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

TEST_P(ThreadWorkers, ApplyAndApplyAsync) {
  mproc::Pool pool(threads(GetParam()));
  EXPECT_EQ(pool.apply([](int a, int b) { return a * b; }, 6, 7), 42);
  EXPECT_EQ(pool.apply([](const std::string& a, std::string b) { return a + b; },
                       std::string("con"), std::string("cat")),
            "concat");
  // Arguments are stored by value and may be move-only.
  EXPECT_EQ(pool.apply([](std::unique_ptr<int> p) { return *p + 1; }, std::make_unique<int>(41)), 42);
  std::atomic<int> side{0};
  pool.apply([&side] { side = 9; });  // void
  EXPECT_EQ(side.load(), 9);

  std::vector<mproc::Future<std::string>> futures;
  for (int i = 0; i < 200; ++i)
    futures.push_back(pool.apply_async([](int x) { return std::to_string(x * x); }, i));
  for (int i = 0; i < 200; ++i) EXPECT_EQ(futures[i].get(), std::to_string(i * i));
  auto v = pool.apply_async([&side] { side += 1; });
  v.get();
  EXPECT_EQ(side.load(), 10);
  EXPECT_TRUE(v.done());
  EXPECT_FALSE(v.cancelled());
}

std::map<std::string, int> count_words(const std::string& line) {
  std::map<std::string, int> m;
  std::istringstream in(line);
  for (std::string w; in >> w;) ++m[w];
  return m;
}

TEST_P(ThreadWorkers, MapReduce) {
  mproc::Pool pool(threads(GetParam()));
  const long long sum = pool.map_reduce([](long long x) { return x * x; },
                                        [](long long a, long long b) { return a + b; },
                                        mproc::range(1LL, 100001LL));
  EXPECT_EQ(sum, 100000LL * 100001LL * 200001LL / 6);  // 333338333350000

  const char* vocabulary[] = {"the", "cat", "sat", "on", "mat", "a", "dog"};
  std::vector<std::string> lines;
  std::map<std::string, int> expected;
  for (int i = 0; i < 2000; ++i) {
    std::string line;
    for (int j = 0; j <= i % 9; ++j) {
      const char* w = vocabulary[(i * 3 + j * 5) % 7];
      line += std::string(w) + " ";
      ++expected[w];
    }
    lines.push_back(line);
  }
  // The in-place form void(R&, R&&) merges maps without copying the accumulator.
  std::atomic<int> merges{0};
  auto merge = [&merges](std::map<std::string, int>& acc, std::map<std::string, int>&& m) {
    ++merges;
    for (auto& [w, c] : m) acc[w] += c;
  };
  EXPECT_EQ(pool.map_reduce(count_words, merge, lines), expected);
  EXPECT_GE(merges.load(), 1);

  // Over a list (copied into an indexable form first) and a single-pass stream.
  std::list<std::string> linked(lines.begin(), lines.end());
  EXPECT_EQ(pool.map_reduce(count_words, merge, linked), expected);
  std::istringstream in("1 2 3 4 5 6 7 8 9 10");
  EXPECT_EQ(pool.map_reduce([](int x) { return x; }, std::plus<>{}, std::views::istream<int>(in)), 55);
}

mproc::TaskInfo where(int) { return *mproc::current_task(); }

TEST_P(ThreadWorkers, ExplicitChunksizeIsHonouredExactly) {
  mproc::Pool pool(threads(GetParam()));
  EXPECT_FALSE(mproc::current_task().has_value());  // not inside a task here
  for (std::size_t cs : {1u, 3u, 7u, 64u, 500u}) {
    auto infos = pool.map(where, mproc::range(0, 200), {.chunksize = cs});
    ASSERT_EQ(infos.size(), 200u);
    for (std::size_t i = 0; i < infos.size(); ++i) {
      EXPECT_EQ(infos[i].index, i);
      EXPECT_EQ(infos[i].chunk_first, i / cs * cs) << "chunksize " << cs << " item " << i;
      EXPECT_EQ(infos[i].chunk_size, std::min(cs, 200 - i / cs * cs)) << "chunksize " << cs << " item " << i;
    }
    // imap batches the same way.
    std::size_t i = 0;
    for (const mproc::TaskInfo& t : pool.imap(where, mproc::range(0, 200), {.chunksize = cs})) {
      EXPECT_EQ(t.index, i);
      EXPECT_EQ(t.chunk_first, i / cs * cs) << "imap chunksize " << cs << " item " << i;
      EXPECT_EQ(t.chunk_size, std::min(cs, 200 - i / cs * cs)) << "imap chunksize " << cs << " item " << i;
      ++i;
    }
    EXPECT_EQ(i, 200u);
  }
  EXPECT_FALSE(mproc::current_task().has_value());
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

TEST_P(ThreadWorkers, MapThrowsTheFirstFailedItemInInputOrder) {
  mproc::Pool pool(threads(GetParam()));
  // Item 3 fails late (after item 7 has failed, when there are several workers): the
  // error reported is still item 3's, by input order, not completion order.
  auto f = [](int x) {
    if (x == 3) {
      std::this_thread::sleep_for(20ms);
      throw std::out_of_range("three");
    }
    if (x == 7) throw std::invalid_argument("seven");
    return x;
  };
  try {
    pool.map(f, mproc::range(0, 20), {.chunksize = 1});
    FAIL() << "no exception";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "three");
  }
  auto fut = pool.map_async(f, mproc::range(0, 20), {.chunksize = 1});
  EXPECT_THROW(fut.get(), std::out_of_range);
  EXPECT_THROW(fut.get(), std::out_of_range);  // every time
  EXPECT_THROW(pool.starmap([](int a, int b) -> int { if (a == 2) throw Oops{b}; return a; },
                            std::vector<std::pair<int, int>>{{1, 1}, {2, 22}, {3, 33}}),
               Oops);
  try {
    pool.map_reduce([](int x) -> int { if (x == 50) throw std::domain_error("fifty"); return x; },
                    std::plus<>{}, mproc::range(0, 100));
    FAIL() << "no exception";
  } catch (const std::domain_error& e) {
    EXPECT_STREQ(e.what(), "fifty");
  }
  // The pool goes on.
  EXPECT_EQ(pool.map([](int x) { return x; }, mproc::range(0, 3)), (std::vector<int>{0, 1, 2}));
}

TEST_P(ThreadWorkers, ImapThrowsWhenTheFailedItemIsReached) {
  mproc::Pool pool(threads(GetParam()));
  auto f = [](int x) {
    if (x == 5) throw Oops{x};
    if (x == 12) throw std::runtime_error("twelve");
    return x * 2;
  };
  std::vector<int> got;
  std::vector<std::string> errors;
  auto stream = pool.imap(f, mproc::range(0, 20), {.chunksize = 2});
  for (auto it = stream.begin(); it != stream.end();) {
    try {
      got.push_back(*it);
      ++it;
    } catch (const Oops& e) {
      errors.push_back("oops " + std::to_string(e.code) + " after " + std::to_string(got.size()));
      ++it;
    } catch (const std::runtime_error& e) {
      errors.push_back(std::string(e.what()) + " after " + std::to_string(got.size()));
      ++it;
    }
  }
  // Items before a failed one were delivered before its error; the stream went on after.
  EXPECT_EQ(errors, (std::vector<std::string>{"oops 5 after 5", "twelve after 11"}));
  ASSERT_EQ(got.size(), 18u);
  for (std::size_t i = 0, x = 0; i < got.size(); ++i, ++x) {
    if (x == 5 || x == 12) ++x;
    EXPECT_EQ(got[i], static_cast<int>(2 * x));
  }
}

TEST_P(ThreadWorkers, ApplyRethrowsTheOriginalType) {
  mproc::Pool pool(threads(GetParam()));
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

TEST_P(ThreadWorkers, InitializerFailureBreaksThePoolWithItsMessage) {
  mproc::Pool pool({.workers = GetParam(),
                    .backend = mproc::Backend::thread,
                    .initializer = [] { throw std::runtime_error("no config file"); }});
  try {
    pool.map([](int x) { return x; }, mproc::range(0, 10));
    FAIL() << "no exception";
  } catch (const mproc::BrokenPool& e) {
    EXPECT_THAT(e.what(), HasSubstr("no config file"));
  }
  // Later calls fail the same way, whether at submission or through the future.
  auto later = [&] { return pool.apply_async([] { return 1; }).get(); };
  try {
    later();
    FAIL() << "no exception";
  } catch (const mproc::BrokenPool& e) {
    EXPECT_THAT(e.what(), HasSubstr("no config file"));
  }
  EXPECT_THROW(pool.apply([] { return 1; }), mproc::BrokenPool);
  EXPECT_THROW(
      {
        for ([[maybe_unused]] int x : pool.imap([](int v) { return v; }, mproc::range(0, 3))) {
        }
      },
      mproc::BrokenPool);
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

TEST(ThreadPool, CloseRefusesNewWorkButFinishesQueuedWork) {
  mproc::Pool pool(threads(2));
  std::vector<mproc::Future<int>> queued;
  for (int i = 0; i < 50; ++i)
    queued.push_back(pool.apply_async(
        [](int x) {
          std::this_thread::sleep_for(100us);
          return x + 1;
        },
        i));
  auto mapped = pool.map_async([](int x) { return -x; }, mproc::range(0, 100));
  pool.close();
  EXPECT_THROW(pool.apply_async([] { return 0; }), mproc::PoolClosed);
  EXPECT_THROW(pool.apply([] { return 0; }), mproc::PoolClosed);
  EXPECT_THROW(pool.map([](int x) { return x; }, mproc::range(0, 3)), mproc::PoolClosed);
  EXPECT_THROW(pool.map_async([](int x) { return x; }, mproc::range(0, 3)).get(), mproc::PoolClosed);
  pool.join();
  for (int i = 0; i < 50; ++i) EXPECT_EQ(queued[i].get(), i + 1);
  EXPECT_EQ(mapped.get()[99], -99);
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

// ---- concurrency and leaks -------------------------------------------------------------

TEST_P(ThreadWorkers, ManyThreadsShareOnePool) {
  mproc::Pool pool(threads(GetParam()));
  constexpr int kThreads = 8, kRounds = 200;
  std::atomic<int> ok{0}, bad{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        const int n = 1 + (t * 31 + r * 7) % 64;
        auto fut = pool.apply_async([](int a, int b) { return a * 1000 + b; }, t, r);
        auto v = pool.map([t](int x) { return x * t; }, mproc::range(0, n));
        bool good = static_cast<int>(v.size()) == n;
        for (int x = 0; good && x < n; ++x) good = v[x] == x * t;
        good = good && fut.get() == t * 1000 + r;
        if (r % 10 == 0) {
          long sum = 0;
          for (long x : pool.imap_unordered([](long x) { return x; }, mproc::range(0L, 100L + t)))
            sum += x;
          good = good && sum == (99L + t) * (100L + t) / 2;
        }
        (good ? ok : bad).fetch_add(1);
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(ok.load(), kThreads * kRounds);
}

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
