// Value, Array and the locks of sync.hpp, across real processes: the Python tutorial's
// race on a shared counter and its two fixes, robust locks whose holder is SIGKILLed,
// handles shipped to pool workers that started before the objects existed, and leaks.
#include <gtest/gtest.h>

#include "proc_counts.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mproc/bind.hpp"
#include "mproc/error.hpp"
#include "mproc/pool.hpp"
#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/serialize.hpp"
#include "mproc/shared.hpp"
#include "mproc/sync.hpp"

namespace {

using namespace std::chrono_literals;

using proc_counts::count_dir;
using proc_counts::mproc_mappings;
using proc_counts::open_fds;

// Runs f in `n` processes (argument: the process's index) and joins them, failing the
// test if one does not end within the timeout or exits non-zero.
template <class F>
void run_processes(int n, F f, std::chrono::seconds timeout = 60s) {
  std::vector<mproc::Process> ps;
  for (int i = 0; i < n; ++i) ps.emplace_back(f, i);
  for (auto& p : ps) p.start();
  for (auto& p : ps) {
    ASSERT_TRUE(p.join(timeout)) << "a child did not finish";
    EXPECT_EQ(p.exitcode(), 0);
  }
}

// ---- the seed's race ----------------------------------------------------------------

constexpr int kRacers = 8;
constexpr int kAddsEach = 20000;

// get() then set() is two separate atomic accesses: between them another process can
// store its own increment, which this set() then overwrites. The processes start
// together (an Event) so that they overlap however slowly they are forked; with 8 of
// them on any multi-core machine, or on one core that preempts them, some increments
// are lost. The test asks for that only once in several rounds so that a lucky schedule
// cannot fail it.
TEST(ValueRace, UnsynchronisedAddsLoseUpdates) {
  constexpr int adds = 10 * kAddsEach;
  bool lost = false;
  for (int round = 0; round < 10 && !lost; ++round) {
    mproc::Value<double> v(0.0);
    mproc::Event go;
    std::vector<mproc::Process> ps;
    for (int k = 0; k < kRacers; ++k)
      ps.emplace_back([v, go] {
        if (!go.wait(30s)) ::_exit(2);
        for (int i = 0; i < adds; ++i) v.set(v.get() + 1.0);
      });
    for (auto& p : ps) p.start();
    go.set();
    for (auto& p : ps) {
      ASSERT_TRUE(p.join(60s));
      ASSERT_EQ(p.exitcode(), 0);
    }
    const double total = v.get();
    EXPECT_LE(total, double(kRacers) * adds);
    lost = total < double(kRacers) * adds;
  }
  EXPECT_TRUE(lost) << "10 rounds of 8 unsynchronised processes lost no update";
}

TEST(ValueRace, GetLockMakesTheTotalExact) {
  mproc::Value<double> v(0.0);
  run_processes(kRacers, [v](int) {
    for (int i = 0; i < kAddsEach / 4; ++i) {
      std::lock_guard lk(v.get_lock());
      v.set(v.get() + 1.0);
    }
  });
  EXPECT_EQ(v.get(), double(kRacers) * (kAddsEach / 4));
}

TEST(ValueRace, AtomicAddMakesTheTotalExact) {
  mproc::Value<double> v(0.0);
  mproc::Value<std::int64_t> n(0);
  run_processes(kRacers, [v, n](int) {
    for (int i = 0; i < kAddsEach; ++i) {
      v += 1.0;
      n.fetch_add(2);
    }
  });
  EXPECT_EQ(v.get(), double(kRacers) * kAddsEach);
  EXPECT_EQ(n.get(), 2 * std::int64_t{kRacers} * kAddsEach);
}

TEST(Value, BasicsAndCompareExchange) {
  mproc::Value<int> v;
  EXPECT_EQ(v.get(), 0);
  v.set(5);
  EXPECT_EQ(v += 3, 8);
  EXPECT_EQ(v -= 1, 7);
  int expected = 6;
  EXPECT_FALSE(v.compare_exchange(expected, 100));
  EXPECT_EQ(expected, 7);
  EXPECT_TRUE(v.compare_exchange(expected, 100));
  EXPECT_EQ(v.exchange(1), 100);
  mproc::Value<int> copy = v;  // a handle: same memory
  copy.set(42);
  EXPECT_EQ(v.get(), 42);

  struct Big {
    double a[6];
  };
  mproc::Value<Big> big(Big{{1, 2, 3, 4, 5, 6}});
  Big b = big.get();
  EXPECT_EQ(b.a[5], 6);
  b.a[0] = 9;
  big.set(b);
  EXPECT_EQ(big.get().a[0], 9);
}

// ---- Array ----------------------------------------------------------------------------

TEST(Array, ContiguousRange) {
  mproc::Array<double> a(5, 1.5);
  EXPECT_EQ(a.size(), 5u);
  EXPECT_EQ(std::accumulate(a.begin(), a.end(), 0.0), 7.5);
  a[2] = 10;
  EXPECT_EQ(a.span()[2], 10);
  EXPECT_THROW((void)a.at(5), std::out_of_range);
  mproc::Array<int> b{1, 2, 3, 4};
  EXPECT_EQ(b.to_vector(), (std::vector<int>{1, 2, 3, 4}));
  std::vector<int> src(100);
  std::iota(src.begin(), src.end(), 0);
  mproc::Array<int> c(src);
  auto s = c.slice(10, 5);
  EXPECT_EQ(s.to_vector(), (std::vector<int>{10, 11, 12, 13, 14}));
  s[0] = -1;
  EXPECT_EQ(c[10], -1);
  EXPECT_THROW((void)c.slice(99, 2), std::out_of_range);
  mproc::Array<int> empty(0);
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.begin(), empty.end());
}

TEST(Array, ChildrenWriteDisjointSlices) {
  mproc::Array<std::int64_t> a(4000, 0);
  run_processes(4, [a](int k) {
    auto part = a.slice(std::size_t(k) * 1000, 1000);
    for (std::size_t i = 0; i < part.size(); ++i) part[i] = std::int64_t(k) * 1000 + std::int64_t(i);
  });
  for (std::size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], std::int64_t(i));
}

// The seed's dot product over two arrays of 2e6, sliced across processes, each adding
// its partial sum into a shared Value under its lock. Elements are small integers so
// that every partial sum is exact in a double and the order of addition cannot matter.
TEST(Array, DotProductWithValueAndLock) {
  constexpr std::size_t n = 2'000'000;
  mproc::Array<double> x(n), y(n);
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = double(i % 7);
    y[i] = double(i % 5);
  }
  double serial = 0;
  for (std::size_t i = 0; i < n; ++i) serial += x[i] * y[i];

  mproc::Value<double> result(0.0);
  constexpr int parts = 4;
  run_processes(parts, [x, y, result](int k) {
    const std::size_t first = n / parts * std::size_t(k);
    double partial = 0;
    for (std::size_t i = first; i < first + n / parts; ++i) partial += x[i] * y[i];
    std::lock_guard lk(result.get_lock());
    result.set(result.get() + partial);
  });
  EXPECT_EQ(result.get(), serial);
}

// The same dot product as the seed first wrote it: each process computes the partial
// dot product of its slice of two plain vectors (inherited through fork) and puts it on a
// Queue; the parent sums what it gets.
TEST(Array, DotProductThroughAQueue) {
  constexpr std::size_t n = 2'000'000;
  constexpr int parts = 4;
  std::vector<double> x(n), y(n);
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = double(i % 7);
    y[i] = double(i % 5);
  }
  double serial = 0;
  for (std::size_t i = 0; i < n; ++i) serial += x[i] * y[i];

  mproc::Queue<double> partials;
  std::vector<mproc::Process> ps;
  for (int k = 0; k < parts; ++k)
    ps.emplace_back([&x, &y, partials](int part) {
      const std::size_t first = n / parts * std::size_t(part);
      double partial = 0;
      for (std::size_t i = first; i < first + n / parts; ++i) partial += x[i] * y[i];
      partials.put(partial);
    }, k);
  for (auto& p : ps) p.start();
  double total = 0;
  for (int k = 0; k < parts; ++k) {
    const auto partial = partials.get(60s);
    ASSERT_TRUE(partial.has_value()) << "a partial never arrived";
    total += *partial;
  }
  for (auto& p : ps) {
    ASSERT_TRUE(p.join(30s));
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(total, serial);
  EXPECT_FALSE(partials.try_get().has_value());
}

// ---- shipping handles -------------------------------------------------------------

double sum_slice(mproc::Array<double> part) { return std::accumulate(part.begin(), part.end(), 0.0); }

void scale_slice(mproc::Array<double> part, double factor) {
  for (double& v : part) v *= factor;
}

int locked_add(mproc::Lock lock, mproc::Value<int> v, int d) {
  std::lock_guard lk(lock);
  v.set(v.get() + d);
  return ::getpid();
}

TEST(Shipping, ArrayTravelsAsAReference) {
  mproc::Array<double> a(1'000'000, 2.0);
  const auto bytes = mproc::dumps(a);
  EXPECT_LT(bytes.size(), 100u) << "an Array must travel as (segment, offset, length)";
  auto b = mproc::loads<mproc::Array<double>>(bytes);
  EXPECT_EQ(b.data(), a.data());  // same mapping in the same process
  auto s = mproc::loads<mproc::Array<double>>(mproc::dumps(a.slice(10, 20)));
  EXPECT_EQ(s.size(), 20u);
  EXPECT_EQ(s.data(), a.data() + 10);
}

TEST(Shipping, PoolWorkersReachObjectsCreatedAfterThePoolStarted) {
  mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
  (void)pool.apply([](int x) { return x; }, 1);  // the workers exist before the objects
  mproc::Array<double> a(100'000);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = double(i % 10);
  std::vector<mproc::Array<double>> parts;
  for (std::size_t k = 0; k < 4; ++k) parts.push_back(a.slice(k * 25'000, 25'000));
  const auto sums = pool.map(sum_slice, parts);
  ASSERT_EQ(sums.size(), 4u);
  for (double s : sums) EXPECT_EQ(s, 25'000 * 4.5);

  pool.map(mproc::bind(scale_slice, a), std::vector<double>{1.0});  // whole array, in place
  (void)pool.starmap(scale_slice, std::vector<std::tuple<mproc::Array<double>, double>>{
                                      {a.slice(0, 10), 3.0}});
  EXPECT_EQ(a[7], 21.0);
  EXPECT_EQ(a[17], 7.0);

  mproc::Lock lock;
  mproc::Value<int> v(0);
  std::vector<std::tuple<mproc::Lock, mproc::Value<int>, int>> args;
  for (int i = 1; i <= 100; ++i) args.emplace_back(lock, v, i);
  const auto pids = pool.starmap(locked_add, args);
  EXPECT_EQ(v.get(), 5050);
  EXPECT_EQ(std::set<int>(pids.begin(), pids.end()).count(::getpid()), 0u);
}

int signal_back(mproc::Semaphore sem, mproc::Event ev, mproc::Condition cond, mproc::Barrier b,
                mproc::RLock r) {
  {
    std::lock_guard lk(r);  // the parent holds nothing: this must not block
  }
  {
    std::lock_guard lk(cond);
    cond.notify_all();
  }
  sem.release();
  ev.set();
  return int(b.parties());
}

TEST(Shipping, EverySyncObjectIsATaskArgument) {
  mproc::Pool pool({.workers = 1, .backend = mproc::Backend::process});
  (void)pool.apply([](int x) { return x; }, 1);
  mproc::Semaphore sem(0);
  mproc::Event ev;
  mproc::Condition cond;
  mproc::Barrier b(3);
  mproc::RLock r;
  EXPECT_EQ(pool.apply(signal_back, sem, ev, cond, b, r), 3);
  EXPECT_TRUE(sem.acquire(10s));
  EXPECT_TRUE(ev.is_set());
}

TEST(Shipping, MalformedHandlesAreRefused) {
  mproc::Lock lock;
  auto bytes = mproc::dumps(lock);
  // A Lock's bytes are no Array: the kind tag is checked.
  EXPECT_THROW((void)mproc::loads<mproc::Array<double>>(mproc::dumps(lock, std::uint64_t{192},
                                                                     std::uint64_t{1})),
               mproc::Error);
  // A segment id nobody has: the fd is reopened through /proc and its id compared.
  auto bad = bytes;
  bad[8] ^= std::byte{0xff};
  EXPECT_THROW((void)mproc::loads<mproc::Lock>(bad), mproc::SharedStateError);
  // A process that does not exist (the size is one a segment can have: a page less the
  // segment's header).
  mproc::detail::SegmentWire w{999'999'999, 3, 1234, 4096 - 64};
  EXPECT_THROW((void)mproc::loads<mproc::Lock>(mproc::dumps(w, std::uint64_t{0})),
               mproc::SharedStateError);
  // Truncated.
  bytes.resize(bytes.size() - 1);
  EXPECT_THROW((void)mproc::loads<mproc::Lock>(bytes), mproc::SerializationError);
}

// ---- locks -----------------------------------------------------------------------------

TEST(Lock, MutualExclusionAndTimeouts) {
  mproc::Lock lock;
  lock.lock();
  EXPECT_FALSE(lock.owner_died());
  EXPECT_THROW(lock.lock(), std::logic_error);  // not recursive: an error, not a hang
  std::thread t([&] {
    EXPECT_FALSE(lock.try_lock());
    EXPECT_FALSE(lock.try_lock_for(20ms));
    EXPECT_FALSE(lock.acquire(1ms));
    EXPECT_THROW(lock.unlock(), std::logic_error);
  });
  t.join();
  lock.unlock();
  EXPECT_THROW(lock.release(), std::logic_error);
  EXPECT_TRUE(lock.try_lock_for(1s));
  lock.release();
}

TEST(Lock, RLockNests) {
  mproc::RLock r;
  r.lock();
  r.lock();
  std::thread([&] { EXPECT_FALSE(r.try_lock()); }).join();
  r.unlock();
  std::thread([&] { EXPECT_FALSE(r.try_lock()); }).join();
  r.unlock();
  std::thread([&] {
    EXPECT_TRUE(r.try_lock());
    r.unlock();
  }).join();
}

// A process dies holding the lock: the next acquirer must get it (not hang) and be told.
TEST(Lock, HolderKilledNextAcquirerIsTold) {
  for (bool recursive : {false, true}) {
    mproc::Lock lock;
    mproc::RLock rlock;
    mproc::Event held;
    mproc::Process holder([=](int) mutable {
      if (recursive) {
        rlock.lock();
        rlock.lock();
      } else {
        lock.lock();
      }
      held.set();
      for (;;) ::pause();
    }, 0);
    holder.start();
    ASSERT_TRUE(held.wait(30s));
    // A second process waits for the lock while the holder is killed.
    mproc::Process waiter([=](int) mutable {
      mproc::detail::LockBase& l = recursive ? static_cast<mproc::detail::LockBase&>(rlock)
                                             : static_cast<mproc::detail::LockBase&>(lock);
      if (!l.try_lock_for(30s)) ::_exit(3);
      const bool told = l.owner_died();
      l.unlock();
      ::_exit(told ? 0 : 4);
    }, 0);
    waiter.start();
    std::this_thread::sleep_for(50ms);
    holder.kill();
    holder.join();
    ASSERT_TRUE(waiter.join(60s));
    EXPECT_EQ(waiter.exitcode(), 0) << "3: timed out, 4: not told the owner died";
    // Afterwards the lock is an ordinary lock again.
    mproc::detail::LockBase& l = recursive ? static_cast<mproc::detail::LockBase&>(rlock)
                                           : static_cast<mproc::detail::LockBase&>(lock);
    ASSERT_TRUE(l.try_lock_for(5s));
    EXPECT_FALSE(l.owner_died());
    l.unlock();
  }
}

TEST(Lock, HolderThatExitsIsDetectedInThisProcess) {
  mproc::Lock lock;
  mproc::Process p([lock](int) mutable {
    lock.lock();
    ::_exit(0);  // exits holding it
  }, 0);
  p.start();
  p.join();
  ASSERT_TRUE(lock.try_lock_for(10s));
  EXPECT_TRUE(lock.owner_died());
  lock.unlock();
}

TEST(Semaphore, CountsAcrossProcesses) {
  mproc::Semaphore sem(2);
  EXPECT_TRUE(sem.try_acquire());
  EXPECT_TRUE(sem.acquire(1s));
  EXPECT_FALSE(sem.try_acquire());
  EXPECT_FALSE(sem.acquire(10ms));
  EXPECT_EQ(sem.get_value(), 0u);
  mproc::Semaphore done(0);
  mproc::Process p([sem, done](int) mutable {
    sem.release(2);
    done.acquire();  // the parent releases it
  }, 0);
  p.start();
  EXPECT_TRUE(sem.acquire(30s));
  EXPECT_TRUE(sem.acquire(30s));
  done.release();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);

  mproc::BoundedSemaphore b(1);
  EXPECT_THROW(b.release(), std::logic_error);
  b.acquire();
  b.release();
  EXPECT_EQ(b.get_value(), 1u);
}

TEST(Event, SetClearWait) {
  mproc::Event go;
  mproc::Value<int> woken(0);
  std::vector<mproc::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back([go, woken](int) mutable {
    if (!go.wait(30s)) ::_exit(2);
    woken += 1;
  }, i);
  for (auto& p : ps) p.start();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(woken.get(), 0);
  go.set();
  for (auto& p : ps) {
    ASSERT_TRUE(p.join(30s));
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(woken.get(), 3);
  go.clear();
  EXPECT_FALSE(go.is_set());
}

TEST(Condition, ProducerConsumerAcrossProcesses) {
  mproc::Condition cond;
  mproc::Value<int> items(0);
  mproc::Value<int> consumed(0);
  constexpr int n = 200;
  mproc::Process consumer([=](int) mutable {
    for (int i = 0; i < n; ++i) {
      std::lock_guard lk(cond);
      if (!cond.wait_for([&] { return items.get() > 0; }, 30s)) ::_exit(2);
      items.set(items.get() - 1);
      consumed += 1;
    }
  }, 0);
  consumer.start();
  for (int i = 0; i < n; ++i) {
    std::lock_guard lk(cond);
    items.set(items.get() + 1);
    cond.notify();
  }
  ASSERT_TRUE(consumer.join(60s));
  EXPECT_EQ(consumer.exitcode(), 0);
  EXPECT_EQ(consumed.get(), n);
  EXPECT_EQ(items.get(), 0);

  EXPECT_THROW(cond.notify(), std::logic_error);
  EXPECT_THROW(cond.wait(), std::logic_error);
  std::lock_guard lk(cond);
  EXPECT_FALSE(cond.wait(10ms));
  EXPECT_TRUE(cond.wait_for([] { return true; }, 0ms));
}

TEST(Condition, WaitReleasesEveryLevelOfAnRLock) {
  mproc::RLock r;
  mproc::Condition cond(r);
  r.lock();
  r.lock();
  std::thread t([&] {
    ASSERT_TRUE(r.try_lock_for(10s));  // possible only while wait() released both levels
    cond.notify();
    r.unlock();
  });
  EXPECT_TRUE(cond.wait(30s));
  EXPECT_TRUE(r.held_by_me());
  r.unlock();
  EXPECT_TRUE(r.held_by_me());
  r.unlock();
  t.join();
}

TEST(Barrier, RoundsAcrossProcessesGiveDistinctIndices) {
  constexpr int parties = 4;
  constexpr int rounds = 20;
  mproc::Barrier barrier(parties);
  mproc::Array<int> index_seen(parties * rounds, -1);
  mproc::Value<int> in_round(0);
  run_processes(parties, [=](int k) mutable {
    for (int r = 0; r < rounds; ++r) {
      in_round += 1;
      const auto idx = barrier.wait(30s);
      index_seen[std::size_t(r * parties) + idx] = k;
      // Everyone of this round arrived before anyone left it.
      if (in_round.get() < (r + 1) * parties) ::_exit(5);
      barrier.wait(30s);
    }
  });
  for (int r = 0; r < rounds; ++r) {
    std::set<int> who;
    for (int i = 0; i < parties; ++i) who.insert(index_seen[std::size_t(r * parties + i)]);
    EXPECT_EQ(who, (std::set<int>{0, 1, 2, 3})) << "round " << r;
  }
}

TEST(Barrier, TimeoutAbortAndReset) {
  mproc::Barrier b(2);
  EXPECT_THROW(b.wait(20ms), mproc::BrokenBarrierError);
  EXPECT_TRUE(b.broken());
  EXPECT_THROW(b.wait(), mproc::BrokenBarrierError);
  b.reset();
  EXPECT_FALSE(b.broken());
  std::thread t([&] { EXPECT_THROW(b.wait(30s), mproc::BrokenBarrierError); });
  while (b.n_waiting() == 0) std::this_thread::sleep_for(1ms);
  b.abort();
  t.join();
  b.reset();
  std::thread t2([&] { EXPECT_THROW(b.wait(30s), mproc::BrokenBarrierError); });
  while (b.n_waiting() == 0) std::this_thread::sleep_for(1ms);
  b.reset();  // waiting parties are released with an error
  t2.join();
  std::thread t3([&] { EXPECT_LT(b.wait(30s), 2u); });
  EXPECT_LT(b.wait(30s), 2u);
  t3.join();
  EXPECT_THROW(mproc::Barrier(0), std::invalid_argument);
}

// ---- leaks ------------------------------------------------------------------------------

TEST(Leaks, NothingRemainsAfterObjectsDieEvenWhenAUserIsKilled) {
  const int fds = open_fds();
  const int maps = mproc_mappings();
  const int shm = proc_counts::mproc_shm_names();
  {
    mproc::Value<double> v(1.0);
    mproc::Array<int> a(1 << 20, 7);
    mproc::Lock l;
    mproc::RLock r;
    mproc::Semaphore s(3);
    mproc::Event e;
    mproc::Condition c;
    mproc::Barrier b(2);
    EXPECT_GT(open_fds(), fds);
    mproc::Process user([=](int) mutable {
      l.lock();
      r.lock();
      s.acquire();
      v += 1;
      a[0] = 1;
      e.set();
      for (;;) ::pause();
    }, 0);
    user.start();
    ASSERT_TRUE(e.wait(30s));
    user.kill();
    user.join();
    EXPECT_TRUE(l.try_lock_for(10s));
    EXPECT_TRUE(l.owner_died());
    l.unlock();
    // A handle decoded from bytes maps the same segment once.
    auto again = mproc::loads<mproc::Array<int>>(mproc::dumps(a));
    EXPECT_EQ(again.data(), a.data());
  }
  EXPECT_EQ(open_fds(), fds);
  EXPECT_EQ(mproc_mappings(), maps);
  EXPECT_EQ(proc_counts::mproc_shm_names(), shm);
}

TEST(Leaks, SegmentsArePrivateToTheUser) {
  mproc::Lock l;
  bool found = false;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      char target[256] = {};
      const std::string path = std::string("/proc/self/fd/") + e->d_name;
      const auto len = ::readlink(path.c_str(), target, sizeof target - 1);
      if (len > 0 && std::string(target, std::size_t(len)).find("memfd:mproc:Lock") != std::string::npos) {
        struct stat st {};
        ASSERT_EQ(::stat(path.c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & 0777, 0600u);
        found = true;
      }
    }
    ::closedir(d);
  }
  EXPECT_TRUE(found);
}

}  // namespace
