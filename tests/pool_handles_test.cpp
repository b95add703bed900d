// Shared handles in process Pool tasks, as docs/shared.md and docs/pool.md ("What the
// workers see") describe them: each handle type (Value, Array, Array2D, Queue, Lock,
// Manager dict and list) reaches a task by value through mproc::bind or as the item,
// also when it was created after the pool started, and the parent sees what the task
// wrote. A lambda that captures a handle by value is refused with a message saying so;
// a capture of a plain object is the worker's fork-time copy.
#include <mproc/manager.hpp>
#include <mproc/pool.hpp>
#include <mproc/queue.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using ::testing::HasSubstr;

mproc::Pool process_pool() { return mproc::Pool({.workers = 4, .backend = mproc::Backend::process}); }

constexpr long kItems = 400;

TEST(HandlesInProcessTasks, ValueBoundByValue) {
  mproc::Pool pool = process_pool();
  mproc::Value<long> total(0);  // made after the pool: reached through the handle
  auto add = [](mproc::Value<long> t, long x) { return t += x; };
  (void)pool.map(mproc::bind(add, total), mproc::range(1L, kItems + 1), {.chunksize = 7});
  EXPECT_EQ(total.get(), kItems * (kItems + 1) / 2);
}

TEST(HandlesInProcessTasks, ValueAsTheItem) {
  mproc::Pool pool = process_pool();
  std::vector<mproc::Value<int>> cells;
  for (int i = 0; i < 20; ++i) cells.emplace_back(i);
  pool.map([](mproc::Value<int> v) { v.set(v.get() * 10); }, cells, {.chunksize = 3});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(cells[static_cast<std::size_t>(i)].get(), i * 10);
}

TEST(HandlesInProcessTasks, ArrayBoundByValue) {
  mproc::Pool pool = process_pool();
  mproc::Array<double> out(kItems, -1.0);
  auto fill = [](mproc::Array<double> a, long i) {
    a[static_cast<std::size_t>(i)] = 0.5 * static_cast<double>(i);
  };
  pool.map(mproc::bind(fill, out), mproc::range(kItems), {.chunksize = 16});
  for (long i = 0; i < kItems; ++i)
    ASSERT_EQ(out[static_cast<std::size_t>(i)], 0.5 * static_cast<double>(i)) << i;
}

TEST(HandlesInProcessTasks, ArraySlicesAsItems) {
  mproc::Pool pool = process_pool();
  mproc::Array<int> data(1000, 1);
  std::vector<mproc::Array<int>> parts;
  for (std::size_t k = 0; k < 10; ++k) parts.push_back(data.slice(k * 100, 100));
  const auto sums = pool.map(
      [](mproc::Array<int> part) {
        for (int& x : part) x *= 3;
        return std::accumulate(part.begin(), part.end(), 0);
      },
      parts);
  EXPECT_EQ(sums, std::vector<int>(10, 300));
  EXPECT_EQ(std::accumulate(data.begin(), data.end(), 0), 3000);
}

TEST(HandlesInProcessTasks, QueueBoundByValue) {
  mproc::Pool pool = process_pool();
  mproc::Queue<std::string> q;
  auto say = [](mproc::Queue<std::string> out, long i) { out.put("item " + std::to_string(i)); };
  pool.map(mproc::bind(say, q), mproc::range(kItems), {.chunksize = 5});
  std::set<std::string> got;
  for (long i = 0; i < kItems; ++i) got.insert(q.get());
  EXPECT_EQ(got.size(), static_cast<std::size_t>(kItems));
  EXPECT_TRUE(got.count("item 0") && got.count("item " + std::to_string(kItems - 1)));
  EXPECT_TRUE(q.empty());
}

TEST(HandlesInProcessTasks, LockBoundByValueMakesReadModifyWriteExact) {
  mproc::Pool pool = process_pool();
  mproc::Lock lock;
  mproc::Value<long> counter(0);
  // get() then set() is not atomic: only the lock, shared by the workers, makes it exact.
  auto bump = [](mproc::Lock l, mproc::Value<long> c, long) {
    for (int k = 0; k < 50; ++k) {
      std::lock_guard guard(l);
      c.set(c.get() + 1);
    }
  };
  pool.map(mproc::bind(bump, lock, counter), mproc::range(kItems), {.chunksize = 1});
  EXPECT_EQ(counter.get(), kItems * 50);
}

TEST(HandlesInProcessTasks, ManagerDictAndListBoundByValue) {
  mproc::Pool pool = process_pool();
  mproc::Manager manager;
  auto counts = manager.dict<std::string, long>();
  auto seen = manager.list<long>();
  auto record = [](mproc::SharedDict<std::string, long> d, mproc::SharedList<long> l, long i) {
    d.merge(std::map<std::string, long>{{i % 2 ? "odd" : "even", 1}, {"all", i}});
    l.append(i);
  };
  pool.map(mproc::bind(record, counts, seen), mproc::range(kItems), {.chunksize = 9});
  EXPECT_EQ(counts.get("odd", 0), kItems / 2);
  EXPECT_EQ(counts.get("even", 0), kItems / 2);
  EXPECT_EQ(counts.get("all", 0), kItems * (kItems - 1) / 2);
  auto items = seen.to_vector();
  std::sort(items.begin(), items.end());
  std::vector<long> want(static_cast<std::size_t>(kItems));
  std::iota(want.begin(), want.end(), 0L);
  EXPECT_EQ(items, want);
}

TEST(HandlesInProcessTasks, CapturingAHandleByValueIsRefusedWithWhatToDo) {
  mproc::Pool pool = process_pool();
  mproc::Value<long> total(0);
  auto captured = [total](long x) { return total += x; };
  static_assert(!mproc::detail::shippable<decltype(captured)>);
  try {
    (void)pool.map(captured, mproc::range(3L));
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("mproc::bind"));
    EXPECT_THAT(e.what(), HasSubstr("pass the data as the item"));
    EXPECT_THAT(e.what(), HasSubstr("never pointers or references"));
  }
  EXPECT_EQ(total.get(), 0);
  // The thread backend runs any callable: the capture is the same handle.
  mproc::Pool threads({.workers = 2, .backend = mproc::Backend::thread});
  (void)threads.map(captured, mproc::range(1L, 11L));
  EXPECT_EQ(total.get(), 55);
}

long g_before_pool = 1;

TEST(HandlesInProcessTasks, APlainObjectIsTheWorkersForkTimeCopy) {
  g_before_pool = 7;
  mproc::Pool pool = process_pool();
  g_before_pool = 8;  // after the fork: the workers never see it
  const long* p = &g_before_pool;
  // A pointer to an object that existed when the pool started reads the worker's copy.
  auto read = [p](long) { return *p; };
  EXPECT_EQ(pool.map(read, mproc::range(10L), {.chunksize = 1}), std::vector<long>(10, 7));
  // A task's write goes to its worker's copy, never to this process.
  auto write = [](long v) {
    g_before_pool = v;
    return g_before_pool;
  };
  EXPECT_EQ(pool.apply(write, -1L), -1);
  EXPECT_EQ(g_before_pool, 8);
}

}  // namespace
