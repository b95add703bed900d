// What every Pool backend shares, written once and run on each (the cases come from
// pool_cases(), see pool_semantics.hpp): exact results of every method over every kind of
// input, input order, chunk sizes, errors by input order, initializers, close, terminate,
// and several threads on one pool. Callables are plain functions or captureless lambdas,
// which every backend can ship, and errors are checked by their message, which every
// backend keeps (the process and mpi backends deliver a task's exception as
// mproc::RemoteError, the thread backend as itself). What one backend alone does is in
// pool_test.cpp (process), thread_pool_test.cpp (thread) and mpi/mpi_pool_test.cpp (mpi).
#include "pool_semantics.hpp"
#include "proc_counts.hpp"
#include "task_errors.hpp"

#include <unistd.h>

#include <mproc/lines.hpp>
#include <mproc/pool.hpp>
#include <mproc/seed.hpp>

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <filesystem>
#include <forward_list>
#include <fstream>
#include <list>
#include <map>
#include <mutex>
#include <new>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

class PoolSemantics : public ::testing::TestWithParam<PoolCase> {
 protected:
  mproc::Pool make_pool(mproc::PoolOptions o = {}) const {
    o.workers = GetParam().workers;
    o.backend = GetParam().backend;
    return mproc::Pool(o);
  }
  bool mpi() const { return GetParam().backend == mproc::Backend::mpi; }
};

long square(long x) { return x * x; }
int add(int a, int b) { return a + b; }
std::string shout(const std::string& s) { return s + "!"; }

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

// ---- every Pool method, exact results ----------------------------------------------------

TEST_P(PoolSemantics, MapOverRangeStringsListAndSinglePassInputs) {
  auto pool = make_pool();
  EXPECT_EQ(pool.workers(), GetParam().workers);
  EXPECT_EQ(pool.backend(), GetParam().backend);

  auto squares = pool.map(square, mproc::range(1L, 20001L));
  ASSERT_EQ(squares.size(), 20000u);
  for (long i = 1; i <= 20000; ++i) ASSERT_EQ(squares[i - 1], i * i) << i;
  EXPECT_EQ(std::accumulate(squares.begin(), squares.begin() + 5000, 0L), 41679167500L);

  // Results keep input order, long strings included.
  std::vector<std::string> words{"alpha", "beta", "", std::string(100000, 'x')};
  for (int i = 0; i < 500; ++i)
    words.push_back(std::string(i % 17, static_cast<char>('a' + i % 26)) + std::to_string(i));
  auto shouted = pool.map(shout, words);
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
  EXPECT_TRUE(pool.map(shout, std::vector<std::string>{}).empty());
  EXPECT_TRUE(pool.map([](int x) { return x; }, std::list<int>{}).empty());
  EXPECT_TRUE(pool.map_async([](int x) { return x; }, mproc::range(5, 5)).get().empty());
  EXPECT_EQ(pool.map_reduce([](int x) { return x; }, std::plus<>{}, mproc::range(0)), 0);
}

std::list<std::string> reverse_and_mark(const std::list<std::string>& l) {
  std::list<std::string> out;
  for (const std::string& s : l) out.push_front(s + "*");
  return out;
}

TEST_P(PoolSemantics, StandardContainersTravelAsArgumentsAndResults) {
  auto pool = make_pool();
  std::vector<std::list<std::string>> inputs;
  for (int i = 0; i < 300; ++i) {
    std::list<std::string> l;
    for (int j = 0; j < i % 7; ++j) l.push_back(std::to_string(i) + ":" + std::to_string(j));
    inputs.push_back(std::move(l));
  }
  const auto out = pool.map(reverse_and_mark, inputs, {.chunksize = 4});
  ASSERT_EQ(out.size(), inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    std::list<std::string> expected;
    for (const std::string& s : inputs[i]) expected.push_front(s + "*");
    EXPECT_EQ(out[i], expected) << "item " << i;
  }

  const auto countdown = pool.apply(
      [](int n) {
        std::deque<int> d;
        for (int i = 0; i < n; ++i) d.push_front(i);
        return d;
      },
      5);
  EXPECT_EQ(countdown, (std::deque<int>{4, 3, 2, 1, 0}));
  const auto by_parity = pool.apply(
      [](const std::forward_list<int>& f) {
        std::multimap<int, int> m;
        for (int x : f) m.emplace(x % 2, x);
        return m;
      },
      std::forward_list<int>{1, 2, 3, 4, 5});
  EXPECT_EQ(by_parity, (std::multimap<int, int>{{1, 1}, {0, 2}, {1, 3}, {0, 4}, {1, 5}}));
}

TEST_P(PoolSemantics, MapAsyncStarmapAndStarmapAsync) {
  auto pool = make_pool();
  auto lengths = pool.map_async([](const std::string& s) { return s.size(); },
                                std::vector<std::string>{"", "a", "bb", "ccc"});
  auto cubes = pool.map_async([](long x) { return x * x * x; }, mproc::range(0L, 3000L));
  auto small = pool.map_async(square, std::vector<long>{3, 4});

  std::vector<std::tuple<int, std::string, double>> rows;
  for (int i = 0; i < 300; ++i)
    rows.emplace_back(i, std::string(1, static_cast<char>('a' + i % 26)), i * 0.5);
  auto labels = pool.starmap(
      [](int i, const std::string& s, double d) {
        return s + std::to_string(i) + ":" + std::to_string(d * 2 == i);
      },
      rows);
  ASSERT_EQ(labels.size(), rows.size());
  for (int i = 0; i < 300; ++i) {
    // Appended rather than string + string: g++ 12 reports a bogus -Wrestrict for
    // operator+(string&&, string&&) (GCC bug 105329).
    std::string expected(1, static_cast<char>('a' + i % 26));
    expected += std::to_string(i);
    expected += ":1";
    EXPECT_EQ(labels[i], expected);
  }

  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < 100; ++i) pairs.emplace_back(i, 1000 * i);
  std::vector<int> pair_sums = pool.starmap(add, pairs);
  ASSERT_EQ(pair_sums.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(pair_sums[i], 1001 * i);

  std::list<std::tuple<int, int>> linked;  // not random access either
  for (int i = 0; i < 200; ++i) linked.emplace_back(i, 1000 * i);
  auto sums = pool.starmap_async(add, linked);

  EXPECT_EQ(lengths.get(), (std::vector<std::size_t>{0, 1, 2, 3}));
  const auto& c = cubes.get();
  ASSERT_EQ(c.size(), 3000u);
  for (long i = 0; i < 3000; ++i) EXPECT_EQ(c[i], i * i * i);
  EXPECT_EQ(small.get(), (std::vector<long>{9, 16}));
  const auto& s = sums.get();
  ASSERT_EQ(s.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(s[i], 1001 * i);
  EXPECT_TRUE(sums.done());
}

TEST_P(PoolSemantics, ApplyAndApplyAsync) {
  auto pool = make_pool();
  EXPECT_EQ(pool.apply(add, 2, 40), 42);
  EXPECT_EQ(pool.apply([](int a, int b) { return a * b; }, 6, 7), 42);
  EXPECT_EQ(pool.apply([](const std::string& a, std::string b) { return a + b; },
                       std::string("con"), std::string("cat")),
            "concat");
  EXPECT_EQ(pool.apply([] { return 5; }), 5);

  mproc::Future<int> f = pool.apply_async(add, 20, 22);
  auto hey = pool.apply_async(shout, std::string("hey"));
  std::vector<mproc::Future<std::string>> futures;
  for (int i = 0; i < 200; ++i)
    futures.push_back(pool.apply_async([](int x) { return std::to_string(x * x); }, i));
  for (int i = 0; i < 200; ++i) EXPECT_EQ(futures[i].get(), std::to_string(i * i));
  EXPECT_EQ(f.get(), 42);
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.cancelled());
  EXPECT_EQ(hey.get(), "hey!");
}

TEST_P(PoolSemantics, ReadyAndSuccessfulReportEachAsyncResult) {
  auto pool = make_pool();
  auto good = pool.apply_async(add, 1, 2);
  auto bad = pool.apply_async(
      [](int x) -> int { throw std::out_of_range("item " + std::to_string(x)); }, 5);
  auto all = pool.map_async(square, mproc::range(0L, 100L));
  auto failed_map = pool.map_async(
      [](int x) {
        if (x == 3) throw std::runtime_error("three");
        return x;
      },
      mproc::range(0, 10));
  good.wait();
  bad.wait();
  all.wait();
  failed_map.wait();
  EXPECT_TRUE(good.ready());
  EXPECT_TRUE(good.successful());
  EXPECT_EQ(good.get(), 3);
  EXPECT_TRUE(bad.ready());
  EXPECT_FALSE(bad.successful());
  EXPECT_TRUE(all.successful());
  EXPECT_EQ(all.get().at(99), 99L * 99L);
  EXPECT_FALSE(failed_map.successful());
  EXPECT_THROW(failed_map.get(), std::exception);
}

TEST_P(PoolSemantics, ApplyAsyncCallbacksRunOnceWithTheResultOrTheError) {
  // Python's `pool.apply_async(f, (i,), callback=results.append, error_callback=...)`
  // followed by close() and join(): every callback has run when join() returns. The
  // callbacks run in this process, so they may capture anything (here by reference).
  auto pool = make_pool();
  std::mutex mutex;
  std::vector<int> results;
  std::vector<std::string> errors;
  std::atomic<int> void_calls{0};
  const std::string prefix = "failed: ";
  for (int i = 0; i < 60; ++i) {
    auto f = pool.apply_async(
        [](int x) {
          if (x % 7 == 3) throw std::invalid_argument("item " + std::to_string(x));
          return x * x;
        },
        i,
        mproc::Callbacks{.callback =
                             [&](const int& r) {
                               std::lock_guard lock(mutex);
                               results.push_back(r);
                             },
                         .error_callback =
                             [&](const std::exception& e) {
                               std::lock_guard lock(mutex);
                               errors.push_back(prefix + e.what());
                             }});
    static_assert(std::is_same_v<decltype(f), mproc::Future<int>>);
  }
  // Only a callback, only an error callback, a void task, and two ordinary arguments.
  auto sum = pool.apply_async(add, 40, 2, mproc::Callbacks{.callback = [&](int r) {
                                std::lock_guard lock(mutex);
                                results.push_back(-r);
                              }});
  pool.apply_async([](int) -> int { throw std::out_of_range("lonely"); }, 0,
                   mproc::Callbacks{.error_callback = [&](std::exception_ptr e) {
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& x) {
                       std::lock_guard lock(mutex);
                       errors.push_back(std::string("ptr: ") + x.what());
                     }
                   }});
  pool.apply_async([](int) {}, 1, mproc::Callbacks{.callback = [&] { ++void_calls; }});
  EXPECT_EQ(sum.get(), 42);
  pool.close();
  pool.join();

  std::vector<int> expected;
  std::vector<int> expected_failures;
  for (int i = 0; i < 60; ++i) (i % 7 == 3 ? expected_failures : expected).push_back(i);
  for (int& x : expected) x *= x;
  expected.push_back(-42);
  std::lock_guard lock(mutex);
  std::sort(results.begin(), results.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(results, expected);
  // Each failed item reached error_callback once, with its own message.
  std::vector<int> failures;
  for (const auto& e : errors) {
    if (e.rfind(prefix, 0) != 0) continue;
    const auto at = e.find("item ");
    ASSERT_NE(at, std::string::npos) << e;
    failures.push_back(std::stoi(e.substr(at + 5)));
  }
  std::sort(failures.begin(), failures.end());
  EXPECT_EQ(failures, expected_failures);
  EXPECT_EQ(errors.size(), expected_failures.size() + 1);
  EXPECT_EQ(std::count_if(errors.begin(), errors.end(),
                          [](const std::string& e) {
                            return e.rfind("ptr: ", 0) == 0 &&
                                   e.find("lonely") != std::string::npos;
                          }),
            1);
  EXPECT_EQ(void_calls.load(), 1);
}

TEST_P(PoolSemantics, MapAsyncAndStarmapAsyncCallbacksGetTheWholeResult) {
  auto pool = make_pool();
  std::mutex mutex;
  std::vector<std::vector<long>> map_results;
  std::vector<std::vector<int>> starmap_results;
  std::vector<std::string> errors;
  int wrong_calls = 0;

  auto squares = pool.map_async(square, mproc::range(0L, 2000L),
                                mproc::Callbacks{.callback = [&](const std::vector<long>& v) {
                                  std::lock_guard lock(mutex);
                                  map_results.push_back(v);
                                }});
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < 300; ++i) pairs.emplace_back(i, 2 * i);
  pool.starmap_async(add, pairs, {.chunksize = 7},
                     mproc::Callbacks{.callback =
                                          [&](const std::vector<int>& v) {
                                            std::lock_guard lock(mutex);
                                            starmap_results.push_back(v);
                                          },
                                      .error_callback = [&](std::exception_ptr) {
                                        std::lock_guard lock(mutex);
                                        ++wrong_calls;
                                      }});
  // A map with one failed item calls error_callback once, with that item's error, and
  // never callback.
  pool.map_async(
      [](int x) {
        if (x == 123) throw std::runtime_error("bad item 123");
        return x;
      },
      mproc::range(0, 500), {.chunksize = 10},
      mproc::Callbacks{.callback =
                           [&](const std::vector<int>&) {
                             std::lock_guard lock(mutex);
                             ++wrong_calls;
                           },
                       .error_callback = [&](const std::exception& e) {
                         std::lock_guard lock(mutex);
                         errors.push_back(e.what());
                       }});
  EXPECT_EQ(squares.get().size(), 2000u);
  pool.close();
  pool.join();

  std::lock_guard lock(mutex);
  ASSERT_EQ(map_results.size(), 1u);
  ASSERT_EQ(map_results[0].size(), 2000u);
  for (long i = 0; i < 2000; ++i) ASSERT_EQ(map_results[0][i], i * i);
  ASSERT_EQ(starmap_results.size(), 1u);
  ASSERT_EQ(starmap_results[0].size(), 300u);
  for (int i = 0; i < 300; ++i) ASSERT_EQ(starmap_results[0][i], 3 * i);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_THAT(errors[0], HasSubstr("bad item 123"));
  EXPECT_EQ(wrong_calls, 0);
}

TEST_P(PoolSemantics, BracedListsSteppedRangesAndZipAsInputs) {
  auto pool = make_pool();
  EXPECT_EQ(pool.map(square, {1L, 2L, 3L}), (std::vector<long>{1, 4, 9}));
  EXPECT_EQ(pool.map_async([](int x) { return -x; }, {4, 5}).get(), (std::vector<int>{-4, -5}));
  std::vector<std::string> echoed;
  for (auto& r : pool.imap(shout, {std::string("a"), std::string("b")})) echoed.push_back(r);
  EXPECT_EQ(echoed, (std::vector<std::string>{"a!", "b!"}));
  std::vector<int> unordered;
  for (int r : pool.imap_unordered([](int x) { return x + 1; }, {10, 20, 30}))
    unordered.push_back(r);
  std::sort(unordered.begin(), unordered.end());
  EXPECT_EQ(unordered, (std::vector<int>{11, 21, 31}));

  // Braced argument lists for starmap, as Python's pool.starmap(add, [(1, 2), (3, 4)]):
  // each inner list is made into the tuple of f's parameter types.
  EXPECT_EQ(pool.starmap(add, {{1, 2}, {30, 40}, {-5, 5}}), (std::vector<int>{3, 70, 0}));
  EXPECT_EQ(pool.starmap([](const std::string& s, int n) { return s + std::to_string(n * n); },
                         {{"a", 3}, {"bc", 12}}, {.chunksize = 1}),
            (std::vector<std::string>{"a9", "bc144"}));
  EXPECT_EQ(pool.starmap([] { return 7; }, {{}, {}}), (std::vector<int>{7, 7}));
  EXPECT_EQ(pool.starmap_async(add, {{100, 23}, {4, 5}}).get(), (std::vector<int>{123, 9}));
  EXPECT_EQ(pool.starmap_async(mproc::bind(add, 1000), {{1}, {2}, {3}}, {.chunksize = 2}).get(),
            (std::vector<int>{1001, 1002, 1003}));
  std::vector<int> from_callback;
  std::mutex mutex;
  auto braced_async = pool.starmap_async(
      add, {{8, 1}, {8, 2}}, mproc::Callbacks{.callback = [&](const std::vector<int>& v) {
        std::lock_guard lock(mutex);
        from_callback = v;
      }});
  EXPECT_EQ(braced_async.get(), (std::vector<int>{9, 10}));

  // Python's range(3000, -1, -3): 3000, 2997, ..., 0.
  auto down = pool.map(square, mproc::range(3000L, -1L, -3L));
  ASSERT_EQ(down.size(), 1001u);
  for (long i = 0; i < 1001; ++i) ASSERT_EQ(down[i], (3000 - 3 * i) * (3000 - 3 * i)) << i;
  EXPECT_TRUE(pool.map(square, mproc::range(0L, 10L, -1L)).empty());

  // zip feeds starmap: f(xs[i], ys[i]) up to the shorter input.
  std::vector<int> xs(500), ys(400);
  for (int i = 0; i < 500; ++i) xs[i] = i;
  for (int i = 0; i < 400; ++i) ys[i] = 7 * i;
  auto sums = pool.starmap(add, mproc::zip(xs, ys));
  ASSERT_EQ(sums.size(), 400u);
  for (int i = 0; i < 400; ++i) ASSERT_EQ(sums[i], 8 * i);
  auto labels = pool.starmap_async(
      [](int i, const std::string& s) { return s + std::to_string(i); },
      mproc::zip(mproc::range(0, 9, 4), std::vector<std::string>{"p", "q", "r", "s"}));
  EXPECT_EQ(labels.get(), (std::vector<std::string>{"p0", "q4", "r8"}));
  pool.close();
  pool.join();  // every callback has run
  std::lock_guard lock(mutex);
  EXPECT_EQ(from_callback, (std::vector<int>{9, 10}));
}

TEST_P(PoolSemantics, ImapKeepsOrderImapUnorderedKeepsEverything) {
  auto pool = make_pool();
  std::vector<long> ordered;
  for (long r : pool.imap(square, mproc::range(0L, 5000L))) ordered.push_back(r);
  ASSERT_EQ(ordered.size(), 5000u);
  for (long i = 0; i < 5000; ++i) ASSERT_EQ(ordered[i], i * i);

  std::vector<std::string> words{"x", "yy", "zzz", "", "wwww"};
  std::vector<std::string> echoed;
  for (auto& w : pool.imap([](const std::string& s) { return s + s; }, words, {.chunksize = 1}))
    echoed.push_back(w);
  EXPECT_EQ(echoed, (std::vector<std::string>{"xx", "yyyy", "zzzzzz", "", "wwwwwwww"}));

  for (std::size_t cs : {std::size_t{1}, std::size_t{3}}) {
    std::multiset<long> unordered;
    for (long r : pool.imap_unordered([](long x) { return 2 * x; }, mproc::range(0L, 3000L),
                                      {.chunksize = cs}))
      unordered.insert(r);
    std::multiset<long> expected;
    for (long i = 0; i < 3000; ++i) expected.insert(2 * i);
    EXPECT_EQ(unordered, expected) << "chunksize " << cs;
  }

  // Empty input: the stream ends at once.
  int n = 0;
  for ([[maybe_unused]] int r : pool.imap([](int x) { return x; }, mproc::range(0))) ++n;
  for ([[maybe_unused]] int r : pool.imap_unordered([](int x) { return x; }, std::list<int>{})) ++n;
  EXPECT_EQ(n, 0);
}

std::map<std::string, int> count_words(const std::string& line) {
  std::map<std::string, int> m;
  std::istringstream in(line);
  for (std::string w; in >> w;) ++m[w];
  return m;
}
std::map<std::string, int> count_letters(const std::string& word) {
  std::map<std::string, int> m;
  for (char c : word) ++m[std::string(1, c)];
  return m;
}
void merge_counts(std::map<std::string, int>& acc, std::map<std::string, int>&& m) {
  for (auto& [k, v] : m) acc[k] += v;
}

/// 2000 lines of 1-9 words from a small vocabulary, and how often each word occurs in them.
std::vector<std::string> vocabulary_lines(std::map<std::string, int>& expected) {
  const char* vocabulary[] = {"the", "cat", "sat", "on", "mat", "a", "dog"};
  std::vector<std::string> lines;
  for (int i = 0; i < 2000; ++i) {
    std::string line;
    for (int j = 0; j <= i % 9; ++j) {
      const char* w = vocabulary[(i * 3 + j * 5) % 7];
      line += std::string(w) + " ";
      ++expected[w];
    }
    lines.push_back(line);
  }
  return lines;
}

TEST_P(PoolSemantics, MapReduce) {
  auto pool = make_pool();
  const long long sum = pool.map_reduce([](long long x) { return x * x; },
                                        [](long long a, long long b) { return a + b; },
                                        mproc::range(1LL, 100001LL));
  EXPECT_EQ(sum, 100000LL * 100001LL * 200001LL / 6);  // 333338333350000
  EXPECT_EQ(pool.map_reduce([](int x) { return static_cast<long>(x); },
                            [](long a, long b) { return a + b; }, mproc::range(1, 100001)),
            100000L * 100001 / 2);

  std::map<std::string, int> expected;
  const std::vector<std::string> lines = vocabulary_lines(expected);
  // The in-place form void(R&, R&&) merges maps without copying the accumulator.
  EXPECT_EQ(pool.map_reduce(count_words, merge_counts, lines), expected);

  std::vector<std::string> words;
  for (int i = 0; i < 3000; ++i) words.push_back(i % 2 ? "abc" : "aab");
  auto letters = pool.map_reduce(count_letters, merge_counts, words);
  EXPECT_EQ(letters, (std::map<std::string, int>{{"a", 1500 * 1 + 1500 * 2}, {"b", 3000}, {"c", 1500}}));

  // Over a list (copied into an indexable form first) and a single-pass stream.
  std::list<std::string> linked(lines.begin(), lines.end());
  EXPECT_EQ(pool.map_reduce(count_words, merge_counts, linked), expected);
  std::istringstream in("1 2 3 4 5 6 7 8 9 10");
  EXPECT_EQ(pool.map_reduce([](int x) { return x; }, std::plus<>{}, std::views::istream<int>(in)), 55);
}

void add_line_words(std::map<std::string, int>& acc, const std::string& line) {
  merge_counts(acc, count_words(line));
}

TEST_P(PoolSemantics, FoldAddsEachItemToOneAccumulatorPerWorker) {
  auto pool = make_pool();
  // R(R, item): a sum of squares, and every item folded exactly once.
  EXPECT_EQ(pool.fold(0LL, [](long long acc, long long x) { return acc + x * x; }, std::plus<>{},
                      mproc::range(1LL, 100001LL)),
            100000LL * 100001LL * 200001LL / 6);
  for (std::size_t cs : {0u, 1u, 7u})
    EXPECT_EQ(pool.fold(0L, [](long acc, int) { return acc + 1; }, std::plus<>{},
                        mproc::range(0, 5000), {.chunksize = cs}),
              5000L)
        << "chunksize " << cs;

  // void(R&, item): words added in place to a map, over a vector, a list and a stream.
  std::map<std::string, int> expected;
  const std::vector<std::string> lines = vocabulary_lines(expected);
  const std::map<std::string, int> none;
  EXPECT_EQ(pool.fold(none, add_line_words, merge_counts, lines), expected);
  std::list<std::string> linked(lines.begin(), lines.end());
  EXPECT_EQ(pool.fold(none, add_line_words, merge_counts, linked), expected);
  std::istringstream in("1 2 3 4 5 6 7 8 9 10");
  EXPECT_EQ(pool.fold(0, [](int acc, int x) { return acc + x; }, std::plus<>{},
                      std::views::istream<int>(in)),
            55);

  // An empty input gives init itself, whatever it is.
  EXPECT_EQ(pool.fold(7, [](int acc, int x) { return acc + x; }, std::plus<>{}, mproc::range(0)), 7);
  EXPECT_EQ(pool.fold(std::map<std::string, int>{{"x", 1}}, add_line_words, merge_counts,
                      std::vector<std::string>{}),
            (std::map<std::string, int>{{"x", 1}}));

  // A failed item fails the call with its error; the pool goes on.
  try {
    pool.fold(0, [](int acc, int x) -> int {
      if (x == 50) throw std::domain_error("fold fifty");
      return acc + x;
    }, std::plus<>{}, mproc::range(0, 100));
    FAIL() << "no exception";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("fold fifty"));
  }
  EXPECT_EQ(pool.fold(0, [](int acc, int x) { return acc + x; }, std::plus<>{}, mproc::range(0, 10)), 45);

  // Every worker (a process, a rank or a thread) folds its items into one accumulator:
  // the combine sees at most one per worker, not one per item.
  {
    using SumAndParts = std::pair<long, long>;  // the sum, and how many accumulators made it
    const SumAndParts r = pool.fold(
        SumAndParts{0, 1}, [](SumAndParts& acc, int x) { acc.first += x; },
        [](SumAndParts& acc, SumAndParts&& other) {
          acc.first += other.first;
          acc.second += other.second;
        },
        mproc::range(0, 20000), {.chunksize = 10});
    EXPECT_EQ(r.first, 20000L * 19999 / 2);
    EXPECT_GE(r.second, 1);
    EXPECT_LE(r.second, static_cast<long>(pool.workers()));
  }
}

mproc::TaskInfo where(int) { return *mproc::current_task(); }

TEST_P(PoolSemantics, ExplicitChunksizeIsHonouredExactly) {
  auto pool = make_pool();
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

// ---- errors, by input order ----------------------------------------------------------------

// Item 3 fails late (after item 7 has failed, when there are several workers).
int three_late_seven_early(int x) {
  if (x == 3) {
    std::this_thread::sleep_for(20ms);
    throw std::out_of_range("three");
  }
  if (x == 7) throw std::invalid_argument("seven");
  return x;
}

TEST_P(PoolSemantics, MapThrowsTheFirstFailedItemInInputOrder) {
  auto pool = make_pool();
  // The error reported is item 3's, by input order, not completion order.
  try {
    pool.map(three_late_seven_early, mproc::range(0, 20), {.chunksize = 1});
    FAIL() << "no exception";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("three"));
    EXPECT_THAT(e.what(), Not(HasSubstr("seven")));
  }
  auto fut = pool.map_async(three_late_seven_early, mproc::range(0, 20), {.chunksize = 1});
  for (int k = 0; k < 2; ++k) {  // every time
    try {
      fut.get();
      FAIL() << "no exception";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), HasSubstr("three"));
    }
  }
  try {
    pool.starmap(
        [](int a, int b) -> int {
          if (a == 2) throw std::length_error("starmap " + std::to_string(b));
          return a;
        },
        std::vector<std::pair<int, int>>{{1, 1}, {2, 22}, {3, 33}});
    FAIL() << "no exception";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("starmap 22"));
  }
  try {
    pool.map_reduce(
        [](int x) -> int {
          if (x == 50) throw std::domain_error("fifty");
          return x;
        },
        std::plus<>{}, mproc::range(0, 100));
    FAIL() << "no exception";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("fifty"));
  }
  try {
    pool.apply([](std::vector<int> v) { return v.at(10); }, std::vector<int>{1, 2});
    FAIL() << "no exception";
  } catch (const std::exception&) {
  }
  auto failed = pool.apply_async([]() -> int { throw std::runtime_error("forty-two"); });
  try {
    failed.get();
    FAIL() << "no exception";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("forty-two"));
  }
  EXPECT_NE(failed.exception(), nullptr);
  EXPECT_FALSE(failed.cancelled());
  // The pool goes on.
  EXPECT_EQ(pool.map([](int x) { return x; }, mproc::range(0, 3)), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(pool.apply(add, 1, 1), 2);
}

}  // namespace

// ---- a task's exception keeps its type (the types and throw_kind: task_errors.hpp) ------

namespace {

/// Runs a map whose item 3 throws kind `kind` and returns what it threw.
std::exception_ptr task_error(mproc::Pool& pool, int kind) {
  try {
    pool.map(throw_kind, std::vector<int>{100, 101, 102, kind, 104}, {.chunksize = 1});
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

/// Checks that `p`, item 3's error of throw_kind(`kind`), is caught by `catch (const E&)`
/// with `type`'s details (the worker's, when `remote`; the task's own object otherwise),
/// then runs `more` on it.
template <class E, class More = void (*)(const E&)>
void expect_task_error(
    const std::exception_ptr& p, bool remote, const std::string& type, const std::string& message,
    More more = [](const E&) {}) {
  SCOPED_TRACE(type);
  ASSERT_NE(p, nullptr) << "no exception";
  try {
    std::rethrow_exception(p);
  } catch (const E& e) {
    const auto* r = dynamic_cast<const mproc::RemoteError*>(&e);
    if (!remote) {
      EXPECT_EQ(r, nullptr) << "a thread pool rethrows the task's own exception";
      EXPECT_EQ(mproc::detail::demangled_name(typeid(e)), type);
      EXPECT_STREQ(e.what(), message.c_str());
    } else {
      ASSERT_NE(r, nullptr) << mproc::detail::demangled_name(typeid(e));
      EXPECT_EQ(r->type_name(), type);
      EXPECT_EQ(r->message(), message);
      EXPECT_EQ(r->task_index(), 3u);
      EXPECT_GT(r->worker_pid(), 0);
      EXPECT_NE(r->worker_pid(), ::getpid());
      EXPECT_THAT(r->traceback(), HasSubstr("throw_kind")) << r->traceback();
      EXPECT_THAT(e.what(), HasSubstr(type + ": " + message + " (task 3, worker pid "));
      EXPECT_STREQ(e.what(), r->what());
    }
    more(e);
  } catch (...) {
    ADD_FAILURE() << "not caught as " << mproc::detail::demangled_name(typeid(E));
    return;
  }
  // Every remote error is also a RemoteError and a std::exception.
  if (!remote) return;
  try {
    std::rethrow_exception(p);
  } catch (const std::exception& e) {
    EXPECT_NE(dynamic_cast<const mproc::RemoteError*>(&e), nullptr);
  } catch (...) {
    ADD_FAILURE() << "not caught as std::exception";
  }
}

TEST_P(PoolSemantics, TaskExceptionsAreCaughtByTheirStandardType) {
  auto pool = make_pool();
  const bool remote = GetParam().remote;
  auto check = [&]<class E>(int kind, const char* type) {
    expect_task_error<E>(task_error(pool, kind), remote, type, "kind " + std::to_string(kind));
  };
  check.operator()<std::logic_error>(0, "std::logic_error");
  check.operator()<std::invalid_argument>(1, "std::invalid_argument");
  check.operator()<std::domain_error>(2, "std::domain_error");
  check.operator()<std::length_error>(3, "std::length_error");
  check.operator()<std::out_of_range>(4, "std::out_of_range");
  check.operator()<std::runtime_error>(5, "std::runtime_error");
  check.operator()<std::range_error>(6, "std::range_error");
  check.operator()<std::overflow_error>(7, "std::overflow_error");
  check.operator()<std::underflow_error>(8, "std::underflow_error");
  check.operator()<mproc::SerializationError>(11, "mproc::SerializationError");
  check.operator()<mproc::SharedStateError>(12, "mproc::SharedStateError");
  check.operator()<mproc::TimeoutError>(13, "mproc::TimeoutError");
  // The most derived known type, not a base: a task's out_of_range is not a plain
  // logic_error in the caller.
  EXPECT_THROW(std::rethrow_exception(task_error(pool, 4)), std::out_of_range);
  if (remote) {
    try {
      std::rethrow_exception(task_error(pool, 4));
    } catch (const mproc::RemoteException<std::out_of_range>&) {
    } catch (...) {
      ADD_FAILURE() << "not a RemoteException<std::out_of_range>";
    }
  }
  // mproc's own errors stay mproc::Errors.
  EXPECT_THROW(std::rethrow_exception(task_error(pool, 12)), mproc::Error);
  EXPECT_EQ(pool.apply(add, 2, 3), 5);  // the pool goes on
}

TEST_P(PoolSemantics, TaskSystemErrorKeepsItsCodeAndBadAllocArrivesAsBadAlloc) {
  auto pool = make_pool();
  const bool remote = GetParam().remote;
  const std::string enoent = std::error_code(ENOENT, std::generic_category()).message();
  expect_task_error<std::system_error>(
      task_error(pool, 9), remote, "std::system_error", "kind 9: " + enoent,
      [](const std::system_error& e) {
        EXPECT_EQ(e.code(), std::error_code(ENOENT, std::generic_category()));
      });
  const std::string sys = std::error_code(ENOENT, std::system_category()).message();
  expect_task_error<std::system_error>(
      task_error(pool, 19), remote, "std::system_error", "kind 19: " + sys,
      [](const std::system_error& e) {
        EXPECT_EQ(e.code(), std::error_code(ENOENT, std::system_category()));
        EXPECT_EQ(e.code().category(), std::system_category());
      });
  // A category only the worker can name: no std::system_error can be rebuilt with it, so
  // it arrives as its base, std::runtime_error, with the text that names the code.
  expect_task_error<std::runtime_error>(task_error(pool, 21), remote, "std::system_error",
                                        "kind 21: parser error 7");
  if (remote) {
    try {
      std::rethrow_exception(task_error(pool, 21));
    } catch (const std::system_error&) {
      ADD_FAILURE() << "a system_error whose category the caller cannot know";
    } catch (const mproc::RemoteException<std::runtime_error>& e) {
      EXPECT_EQ(e.error_code(), std::error_code());
    }
  }
  // new int[-1] throws std::bad_array_new_length, a std::bad_alloc.
  expect_task_error<std::bad_alloc>(task_error(pool, 10), remote, "std::bad_array_new_length",
                                    std::bad_array_new_length().what());
}

TEST_P(PoolSemantics, UserExceptionsArriveAsTheirMostDerivedRegisteredType) {
  auto pool = make_pool();
  const bool remote = GetParam().remote;
  expect_task_error<ConfigError>(task_error(pool, 14), remote, "ConfigError", "kind 14");
  expect_task_error<MissingKeyError>(task_error(pool, 15), remote, "MissingKeyError", "kind 15");
  // Not registered: caught as the registered (or standard) type it derives from, with
  // its own type name in the details.
  expect_task_error<MissingKeyError>(task_error(pool, 18), remote, "DeepKeyError", "kind 18");
  expect_task_error<std::runtime_error>(task_error(pool, 16), remote, "UnregisteredError",
                                        "kind 16");
  expect_task_error<std::out_of_range>(task_error(pool, 17), remote, "BadSlot", "kind 17");
  if (remote) {
    // What the caller cannot rebuild is not pretended: an unregistered type is not itself.
    EXPECT_THROW(std::rethrow_exception(task_error(pool, 16)),
                 mproc::RemoteException<std::runtime_error>);
    EXPECT_THROW(std::rethrow_exception(task_error(pool, 14)), mproc::RemoteException<ConfigError>);
  } else {
    EXPECT_THROW(std::rethrow_exception(task_error(pool, 16)), UnregisteredError);
  }
}

TEST_P(PoolSemantics, ATaskThatThrowsANonStdExceptionFailsItsItem) {
  auto pool = make_pool();
  const std::exception_ptr p = task_error(pool, 20);
  ASSERT_NE(p, nullptr);
  try {
    std::rethrow_exception(p);
  } catch (const mproc::RemoteError& e) {
    EXPECT_TRUE(GetParam().remote);
    EXPECT_EQ(e.type_name(), "int");
    EXPECT_EQ(e.message(), "");
    EXPECT_EQ(e.task_index(), 3u);
    EXPECT_THAT(e.traceback(), HasSubstr("throw_kind"));
    // It has no standard type: mproc::Error (so std::exception) catches it.
    EXPECT_NE(dynamic_cast<const mproc::Error*>(&e), nullptr);
  } catch (int v) {
    EXPECT_FALSE(GetParam().remote);
    EXPECT_EQ(v, 42);
  } catch (...) {
    ADD_FAILURE() << "neither a RemoteError nor the int";
  }
  // Every other item completed.
  auto stream = pool.imap(throw_kind, std::vector<int>{100, 20, 102}, {.chunksize = 1});
  std::vector<int> ok;
  int failed = 0;
  for (auto it = stream.begin(); it != stream.end();) {
    try {
      ok.push_back(*it);
    } catch (...) {
      ++failed;
    }
    ++it;
  }
  EXPECT_EQ(ok, (std::vector<int>{100, 102}));
  EXPECT_EQ(failed, 1);
}

int fail_at_5_and_12(int x) {
  if (x == 5) throw std::runtime_error("five");
  if (x == 12) throw std::runtime_error("twelve");
  return x * 2;
}

TEST_P(PoolSemantics, ImapThrowsWhenTheFailedItemIsReached) {
  auto pool = make_pool();
  for (std::size_t cs : {std::size_t{1}, std::size_t{2}}) {
    std::vector<int> got;
    std::vector<std::string> errors;
    auto stream = pool.imap(fail_at_5_and_12, mproc::range(0, 20), {.chunksize = cs});
    for (auto it = stream.begin(); it != stream.end();) {
      try {
        got.push_back(*it);
        ++it;
      } catch (const std::exception& e) {
        const std::string what = e.what();
        const std::string which = what.find("twelve") != std::string::npos ? "twelve"
                                  : what.find("five") != std::string::npos ? "five"
                                                                           : what;
        errors.push_back(which + " after " + std::to_string(got.size()));
        ++it;
      }
    }
    // Items before a failed one were delivered before its error; the stream went on after.
    EXPECT_EQ(errors, (std::vector<std::string>{"five after 5", "twelve after 11"})) << "chunksize " << cs;
    ASSERT_EQ(got.size(), 18u);
    for (std::size_t i = 0, x = 0; i < got.size(); ++i, ++x) {
      if (x == 5 || x == 12) ++x;
      EXPECT_EQ(got[i], static_cast<int>(2 * x));
    }
  }
  EXPECT_EQ(pool.apply(add, 1, 1), 2);  // still usable
}

int fail_at_0(int x) {
  if (x == 0) throw std::runtime_error("zero");
  return x * 2;
}
int fail_at_3(int x) {
  if (x == 3) throw std::runtime_error("three");
  return x * 2;
}

/// What a range-for over `stream` inside a try block sees: each value, then "end", or the
/// error (by the word of it that names the item) where it came out.
template <class Stream>
std::vector<std::string> range_for(Stream&& stream) {
  std::vector<std::string> seen;
  try {
    for (int x : stream) seen.push_back(std::to_string(x));
    seen.push_back("end");
  } catch (const std::exception& e) {
    const std::string what = e.what();
    seen.push_back("error " + (what.find("zero") != std::string::npos    ? std::string("zero")
                               : what.find("three") != std::string::npos ? std::string("three")
                                                                         : what));
  }
  return seen;
}

TEST_P(PoolSemantics, ImapErrorOfTheFirstItemComesOutOfTheLoopNotBegin) {
  auto pool = make_pool();
  for (const bool ordered : {true, false}) {
    SCOPED_TRACE(ordered ? "imap" : "imap_unordered");
    auto imap = [&](auto f, int n) {
      return ordered ? pool.imap(f, mproc::range(0, n), {.chunksize = 1})
                     : pool.imap_unordered(f, mproc::range(0, n), {.chunksize = 1});
    };
    // begin() waits for the first result but never throws its error: the dereference does.
    {
      auto stream = imap(fail_at_0, 1);
      std::optional<decltype(stream.begin())> it;
      EXPECT_NO_THROW(it.emplace(stream.begin()));
      ASSERT_TRUE(it.has_value());
      EXPECT_FALSE(*it == stream.end());
      EXPECT_THAT([&] { (void)**it; }, ::testing::ThrowsMessage<std::exception>(HasSubstr("zero")));
      ++*it;  // past the error it reported
      EXPECT_TRUE(*it == stream.end());
    }
    EXPECT_EQ(range_for(imap(fail_at_0, 1)), (std::vector<std::string>{"error zero"}));
    EXPECT_EQ(range_for(imap([](int) -> int { throw std::runtime_error("zero"); }, 5)),
              (std::vector<std::string>{"error zero"}));
    EXPECT_EQ(range_for(imap(fail_at_3, 0)), (std::vector<std::string>{"end"}));
    // An increment that skips a failed item without dereferencing it throws its error,
    // once, and leaves the iterator where it was; the next one moves on.
    {
      auto stream = imap(fail_at_0, 1);
      auto it = stream.begin();
      EXPECT_THAT([&] { ++it; }, ::testing::ThrowsMessage<std::exception>(HasSubstr("zero")));
      EXPECT_FALSE(it == stream.end());
      ++it;
      EXPECT_TRUE(it == stream.end());
    }
  }
  // In order: the items before the failed one, then its error, in the loop.
  EXPECT_EQ(range_for(pool.imap(fail_at_0, mproc::range(0, 6), {.chunksize = 1})),
            (std::vector<std::string>{"error zero"}));
  EXPECT_EQ(range_for(pool.imap(fail_at_3, mproc::range(0, 6), {.chunksize = 1})),
            (std::vector<std::string>{"0", "2", "4", "error three"}));
  EXPECT_EQ(range_for(pool.imap(fail_at_3, mproc::range(0, 6), {.chunksize = 4})),
            (std::vector<std::string>{"0", "2", "4", "error three"}));
  EXPECT_EQ(range_for(pool.imap(fail_at_3, mproc::range(0, 3))),
            (std::vector<std::string>{"0", "2", "4", "end"}));
}

TEST_P(PoolSemantics, ImapStreamEndsAfterTheErrorOfATerminatedPool) {
  // A loop that catches each error and goes on must come to an end when the pool is
  // gone: the error of the whole stream is reported once, then the stream is over. (The
  // thread backend's terminate() waits for the running tasks, which fill the stream's
  // window of 1024 items per worker first: a millisecond each keeps that short.)
  auto pool = make_pool();
  auto stream = pool.imap(
      [](int x) {
        std::this_thread::sleep_for(1ms);
        return x;
      },
      mproc::range(0, 100000), {.chunksize = 1});
  auto it = stream.begin();
  pool.terminate();
  std::size_t steps = 0, values = 0, errors = 0;
  for (; it != stream.end() && steps < 200000; ++steps) {
    try {
      (void)*it;
      ++values;
    } catch (const std::exception&) {
      ++errors;
    }
    try {
      ++it;
    } catch (const std::exception&) {
      ++errors;
    }
  }
  EXPECT_LT(steps, 200000u) << "the stream did not end";
  EXPECT_GE(errors, 1u);
  EXPECT_LT(values, 100000u);
}

// ---- initializer -------------------------------------------------------------------------

// Set by the initializer in the worker that runs it; read by that worker's tasks.
thread_local int t_initialized = 0;
int initialized(int) { return t_initialized; }

TEST_P(PoolSemantics, InitializerRunsInTheWorkerBeforeItsTasks) {
  if (mpi()) GTEST_SKIP() << "Backend::mpi has no initializer (MpiPool.OptionsMpiCannotKeepAreRefused)";
  auto pool = make_pool({.initializer = [] { t_initialized = 1; }});
  auto seen = pool.map(initialized, mproc::range(0, 2000), {.chunksize = 1});
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 2000);
  EXPECT_EQ(t_initialized, 0);  // not in the caller
}

TEST_P(PoolSemantics, InitializerFailureBreaksThePoolWithItsMessage) {
  if (mpi()) GTEST_SKIP() << "Backend::mpi has no initializer (MpiPool.OptionsMpiCannotKeepAreRefused)";
  auto pool = make_pool({.initializer = [] { throw std::runtime_error("no config file"); }});
  try {
    pool.map([](int x) { return x; }, mproc::range(0, 10));
    FAIL() << "no exception";
  } catch (const mproc::BrokenPool& e) {
    EXPECT_THAT(e.what(), HasSubstr("no config file"));
  }
  // Later calls fail the same way, whether at submission or through the future.
  try {
    pool.apply_async([] { return 1; }).get();
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

// ---- shutdown ------------------------------------------------------------------------------

TEST_P(PoolSemantics, CloseRefusesNewWorkButFinishesQueuedWork) {
  auto pool = make_pool();
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

TEST_P(PoolSemantics, TerminateRefusesMoreAndEndsEveryFuture) {
  auto pool = make_pool();
  std::vector<mproc::Future<int>> queued;
  for (int i = 0; i < 50; ++i)
    queued.push_back(pool.apply_async(
        [](int x) {
          std::this_thread::sleep_for(1ms);
          return x + 1;
        },
        i));
  pool.terminate();
  // Each future has its result or is cancelled; none is left waiting.
  for (int i = 0; i < 50; ++i) {
    EXPECT_TRUE(queued[i].done()) << i;
    try {
      EXPECT_EQ(queued[i].get(), i + 1);
    } catch (const mproc::Cancelled&) {
      EXPECT_TRUE(queued[i].cancelled());
    }
  }
  EXPECT_THROW(pool.apply_async(add, 1, 2), mproc::PoolClosed);
  EXPECT_THROW(pool.apply(add, 1, 2), mproc::PoolClosed);
  EXPECT_THROW(pool.map(square, mproc::range(0L, 5L)), mproc::PoolClosed);
}

// ---- the pool's own callbacks ---------------------------------------------------------------

/// Threads and open fds of this process, and its children: what a pool must give back.
struct Footprint {
  long threads = 0, fds = 0, children = 0;
  static long count_dir(const std::string& dir) {
    long n = 0;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(dir, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
      ++n;
    return n;
  }
  static Footprint now() {
    Footprint f;
    f.threads = proc_counts::threads();
    f.fds = count_dir("/proc/self/fd");
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/task", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      std::ifstream in(it->path() / "children");
      for (long pid; in >> pid;) ++f.children;
    }
    return f;
  }
  bool operator==(const Footprint&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Footprint& f) {
  return os << f.threads << " threads, " << f.fds << " fds, " << f.children << " children";
}

/// Waits up to 10 s for the footprint to come back to `before`.
Footprint settle_to(const Footprint& before) {
  Footprint f = Footprint::now();
  for (int i = 0; i < 1000 && !(f == before); ++i) {
    std::this_thread::sleep_for(10ms);
    f = Footprint::now();
  }
  return f;
}

int slow_plus_one(int x) {
  std::this_thread::sleep_for(50ms);
  return x + 1;
}

TEST_P(PoolSemantics, APoolDestroyedByItsOwnCallbackFinishesItsWorkAndLeavesNothing) {
  const Footprint before = Footprint::now();
  mproc::PoolOptions o;
  o.workers = GetParam().workers;
  o.backend = GetParam().backend;
  auto holder = std::make_shared<std::shared_ptr<mproc::Pool>>(std::make_shared<mproc::Pool>(o));
  mproc::Pool& pool = **holder;
  auto first = pool.apply_async(slow_plus_one, 1);
  std::vector<mproc::Future<int>> queued;
  for (int i = 0; i < 4; ++i) queued.push_back(pool.apply_async(slow_plus_one, 10 + i));
  std::atomic<bool> ran_elsewhere{false}, ran_inline{false}, adding{true};
  const auto test_thread = std::this_thread::get_id();
  first.add_done_callback([&, holder, test_thread](const mproc::Future<int>&) {
    ran_elsewhere = std::this_thread::get_id() != test_thread;
    // A future already done runs the callback at once, in add_done_callback.
    ran_inline = adding.load() && !ran_elsewhere;
    holder->reset();  // the last reference: the Pool is destroyed in its own callback
  });
  adding = false;
  holder.reset();
  EXPECT_EQ(first.get(), 2);
  // What was queued still runs to the end.
  for (int i = 0; i < 4; ++i) EXPECT_EQ(queued[i].get(), 11 + i);
  if (!mpi()) {
    EXPECT_TRUE(ran_elsewhere.load() || ran_inline.load())
        << "the callback ran on the caller's thread, after add_done_callback returned";
  }
  EXPECT_EQ(settle_to(before), before) << "the pool left threads, fds or processes behind";
}

TEST_P(PoolSemantics, JoinFromItsOwnCallbackThrowsAndTerminateThereStopsThePool) {
  const Footprint before = Footprint::now();
  {
    auto pool = make_pool();
    auto first = pool.apply_async(slow_plus_one, 1);
    std::vector<mproc::Future<int>> queued;
    for (int i = 0; i < 20; ++i) queued.push_back(pool.apply_async(slow_plus_one, i));
    std::atomic<int> join_threw{0};
    std::atomic<bool> terminated{false};
    first.add_done_callback([&](const mproc::Future<int>&) {
      try {
        pool.join();
      } catch (const std::logic_error& e) {
        if (std::string(e.what()).find("would wait for itself") != std::string::npos)
          join_threw = 1;
      }
      pool.terminate();
      terminated = true;
    });
    EXPECT_EQ(first.get(), 2);
    // Every queued future ends: with its result, or cancelled by the terminate.
    std::size_t cancelled = 0;
    for (auto& f : queued) {
      try {
        f.get();
      } catch (const mproc::Cancelled&) {
        ++cancelled;
      }
    }
    EXPECT_EQ(join_threw.load(), 1);
    EXPECT_TRUE(terminated.load());
    EXPECT_GT(cancelled, 0u) << "terminate() in the callback stopped nothing";
    EXPECT_THROW(pool.apply(add, 1, 2), mproc::PoolClosed);
  }
  EXPECT_EQ(settle_to(before), before);
}

// ---- several threads ----------------------------------------------------------------------

int times(int x, int t) { return x * t; }

TEST_P(PoolSemantics, SeveralThreadsShareOnePool) {
  auto pool = make_pool();
  constexpr int kThreads = 8;
  constexpr int rounds = 200;
  std::atomic<int> ok{0}, bad{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&, t] {
      for (int r = 0; r < rounds; ++r) {
        const int n = 1 + (t * 31 + r * 7) % 64;
        auto fut = pool.apply_async([](int a, int b) { return a * 1000 + b; }, t, r);
        std::vector<std::pair<int, int>> args;
        for (int x = 0; x < n; ++x) args.emplace_back(x, t);
        auto v = pool.starmap(times, args);
        bool good = static_cast<int>(v.size()) == n;
        for (int x = 0; good && x < n; ++x) good = v[x] == x * t;
        good = good && fut.get() == t * 1000 + r;
        good = good && pool.apply(add, t * 1000, r) == t * 1000 + r;
        if (r % 10 == 0) {
          long sum = 0;
          for (long x : pool.imap_unordered([](long x) { return x; }, mproc::range(0L, 100L + t)))
            sum += x;
          good = good && sum == (99L + t) * (100L + t) / 2;
          auto sq = pool.map(square, mproc::range(0L, 100L + t));
          good = good && sq.size() == static_cast<std::size_t>(100 + t) && sq[99] == 99 * 99;
        }
        (good ? ok : bad).fetch_add(1);
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(ok.load(), kThreads * rounds);
}

// ---- streams per item, lines of a file ---------------------------------------------------

std::uint64_t seeded_draw(long) {
  mproc::Xoshiro256 rng(mproc::task_seed(99));
  return rng() ^ (rng() >> 1);
}

TEST_P(PoolSemantics, TaskSeedGivesEachItemItsOwnReproducibleStream) {
  auto pool = make_pool();
  constexpr long n = 300;
  std::vector<std::uint64_t> want;
  for (long i = 0; i < n; ++i) {
    mproc::Xoshiro256 rng(mproc::seed_for(99, static_cast<std::uint64_t>(i)));
    want.push_back(rng() ^ (rng() >> 1));
  }
  ASSERT_EQ(std::set<std::uint64_t>(want.begin(), want.end()).size(), static_cast<std::size_t>(n));
  for (std::size_t chunksize : {0, 1, 13}) {
    SCOPED_TRACE("chunksize " + std::to_string(chunksize));
    EXPECT_EQ(pool.map(seeded_draw, mproc::range(n), {.chunksize = chunksize}), want);
    std::vector<std::uint64_t> streamed;
    for (std::uint64_t d : pool.imap(seeded_draw, mproc::range(n), {.chunksize = chunksize}))
      streamed.push_back(d);
    EXPECT_EQ(streamed, want);
  }
}

std::size_t line_key(const std::string& line) { return line.size() * 1000 + (line.empty() ? 0 : line[0]); }

TEST_P(PoolSemantics, LinesOfAFileFeedMapImapAndImapUnordered) {
  auto pool = make_pool();
  const auto path = std::filesystem::temp_directory_path() /
                    ("mproc_semantics_lines_" + std::to_string(::getpid()) + ".txt");
  std::vector<std::size_t> want;
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 2000; ++i) {
      std::string line(static_cast<std::size_t>(i % 37), static_cast<char>('a' + i % 26));
      out << line << (i % 5 == 0 ? "\r\n" : "\n");
      want.push_back(line_key(line));
    }
    out << "no newline";
    want.push_back(line_key("no newline"));
  }
  EXPECT_EQ(pool.map(line_key, mproc::lines(path), {.chunksize = 64}), want);
  std::vector<std::size_t> ordered;
  for (std::size_t k : pool.imap(line_key, mproc::lines(path), {.chunksize = 16}))
    ordered.push_back(k);
  EXPECT_EQ(ordered, want);
  std::multiset<std::size_t> unordered;
  for (std::size_t k : pool.imap_unordered(line_key, mproc::lines(path))) unordered.insert(k);
  EXPECT_EQ(unordered, std::multiset<std::size_t>(want.begin(), want.end()));
  std::filesystem::remove(path);
  EXPECT_THROW((void)pool.map(line_key, mproc::lines(path)), std::system_error);
}

INSTANTIATE_TEST_SUITE_P(Backends, PoolSemantics, ::testing::ValuesIn(pool_cases()),
                         [](const auto& p) { return pool_case_name(p.param); });

}  // namespace
