// Pool with Backend::process, what is its own: bound values shipped once per worker,
// adaptive chunking, endless inputs, errors as RemoteError with the worker's stack, and
// every failure done for real (SIGKILL, segfault, exit, abort, hang, bad bytes, retries,
// timeouts, a 1 GiB result, leaks, a killed parent). The semantics every backend shares
// (results of every method, order, chunk sizes, errors by input order, initializers,
// close, terminate, several threads) are in pool_semantics.cpp, run on this backend too.
#include <mproc/pool.hpp>
#include <mproc/process.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "proc_counts.hpp"
#include "sanitizers.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

long square(long x) { return x * x; }
int add(int a, int b) { return a + b; }

using proc_counts::children_of;
using proc_counts::count_dir;

/// Running, as opposed to gone or a zombie (an orphan's zombie waits for init to reap it).
bool alive(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), {});
  auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z' &&
         stat[close + 2] != 'X';
}

std::string greet(const std::string& greeting, const std::string& name) {
  return greeting + ", " + name;
}

TEST(Pool, BindShipsValues) {
  mproc::Pool pool(2);
  const std::string greeting(1000, 'h');  // not a trivially copyable capture: bound instead
  std::vector<std::string> names{"ann", "bob", "cy"};
  auto out = pool.map(mproc::bind(greet, greeting), names);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[1], greeting + ", bob");
}

/// A bound value that counts, in shared memory, how often a worker decodes it.
struct CountedTable {
  std::vector<int> values;
  template <class A>
  void serialize(A& ar) {
    ar(values);
    if constexpr (A::is_loading) g_decodes->fetch_add(1);
  }
  static inline std::atomic<int>* g_decodes = [] {
    void* m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return new (m) std::atomic<int>(0);
  }();
};

int lookup(const CountedTable& t, int i) { return t.values[static_cast<std::size_t>(i)]; }

TEST(Pool, BoundValuesTravelOncePerWorkerNotPerItem) {
  mproc::Pool pool(2);
  CountedTable table{std::vector<int>(100)};
  std::iota(table.values.begin(), table.values.end(), 1000);
  CountedTable::g_decodes->store(0);
  auto out = pool.map(mproc::bind(lookup, table), mproc::range(0, 100), {.chunksize = 1});
  EXPECT_EQ(out[42], 1042);
  EXPECT_GE(CountedTable::g_decodes->load(), 1);
  EXPECT_LE(CountedTable::g_decodes->load(), 2);  // one per worker, though 100 chunks went out
}

mproc::TaskInfo where(int) { return *mproc::current_task(); }

TEST(Pool, AdaptiveChunkingBatchesCheapItems) {
  mproc::Pool pool(2);
  auto infos = pool.map(where, mproc::range(0, 20000));
  std::size_t max_chunk = 0;
  for (auto& t : infos) max_chunk = std::max(max_chunk, t.chunk_size);
  EXPECT_GT(max_chunk, 10u);  // not one message per item
  EXPECT_EQ(infos.back().chunk_first + infos.back().chunk_size, 20000u);
}

/// An input range of unknown size that counts how far it has been read.
struct Counted {
  std::atomic<long>* pulled;
  struct iterator {
    using value_type = long;
    using difference_type = std::ptrdiff_t;
    std::atomic<long>* pulled;
    long i = 0;
    long operator*() const { return i; }
    iterator& operator++() {
      ++i;
      pulled->store(i);
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return false; }  // endless
  };
  iterator begin() const { return {pulled}; }
  std::default_sentinel_t end() const { return {}; }
};

TEST(Pool, UnsizedInputStreamsWithBoundedMemory) {
  std::atomic<long> pulled{0};
  mproc::Pool pool(2);
  long seen = 0;
  for (long r : pool.imap(square, Counted{&pulled})) {
    EXPECT_EQ(r, seen * seen);
    if (++seen == 5000) break;
  }
  // An endless input: only a bounded window ahead of the consumer was ever read.
  EXPECT_LT(pulled.load(), seen + 2 * 1024 * 2 + 16);
}

}  // namespace

// Outside the anonymous namespace, so that its name is in the dynamic symbol table
// (the test links with ENABLE_EXPORTS) and shows in the worker's stack trace.
int throw_on_7(int x) {
  if (x == 7) throw std::out_of_range("seven is out of range");
  return x;
}

/// A user's error with a const char* constructor, registered by a call (not the macro).
struct QuotaError : std::logic_error {
  explicit QuotaError(const char* what) : std::logic_error(what) {}
};
int throw_quota_on_2(int x) {
  if (x == 2) throw QuotaError("quota of two");
  return x;
}

namespace {

TEST(Pool, TaskExceptionIsRemoteErrorOthersComplete) {
  mproc::Pool pool(2);
  try {
    pool.map(throw_on_7, mproc::range(0, 20));
    FAIL() << "no exception";
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.type_name(), "std::out_of_range");
    EXPECT_EQ(e.message(), "seven is out of range");
    EXPECT_EQ(e.task_index(), 7u);
    // Taken where the task threw, not where the worker caught: the innermost frame is
    // the task itself.
    const std::string first_frame = e.traceback().substr(0, e.traceback().find('\n'));
    EXPECT_THAT(first_frame, HasSubstr("throw_on_7")) << e.traceback();
    EXPECT_NE(e.worker_pid(), ::getpid());
  }
  int ok = 0, failed = 0;
  auto stream = pool.imap(throw_on_7, mproc::range(0, 20), {.chunksize = 1});
  for (auto it = stream.begin(); it != stream.end();) {
    try {
      ++ok;
      ++it;
    } catch (const mproc::RemoteError&) {
      ++failed;
      ++it;
    }
  }
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(pool.apply(add, 1, 1), 2);  // still usable
}

TEST(Pool, ATypeRegisteredBeforeThePoolStartsArrivesAsItself) {
  // Before the pool: its workers are forked with the registry as it is now.
  mproc::register_exception<QuotaError>();
  mproc::register_exception<QuotaError>();  // twice is harmless
  mproc::Pool pool(2);
  try {
    pool.map(throw_quota_on_2, mproc::range(0, 6));
    FAIL() << "no exception";
  } catch (const QuotaError& e) {
    const auto* r = dynamic_cast<const mproc::RemoteError*>(&e);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->type_name(), "QuotaError");
    EXPECT_EQ(r->message(), "quota of two");
    EXPECT_EQ(r->task_index(), 2u);
    EXPECT_THAT(r->traceback(), HasSubstr("throw_quota_on_2"));
    EXPECT_THAT(e.what(), HasSubstr("QuotaError: quota of two (task 2, worker pid "));
  }
}

int die_on_5(int x) {
  if (x == 5) ::raise(SIGKILL);
  return x;
}
int segfault_on_5(int x) {
  if (x == 5) *static_cast<volatile int*>(nullptr) = 1;
  return x;
}
int exit_on_5(int x) {
  if (x == 5) std::exit(3);
  return x;
}
int abort_on_5(int x) {
  if (x == 5) std::abort();
  return x;
}

TEST(Pool, AWorkerKilledInAFoldFailsTheCallAndThePoolGoesOn) {
  mproc::Pool pool(2);
  // The dead worker's accumulator held items already folded: the call cannot be whole,
  // so it fails with WorkerCrashed, as map_reduce does, and nothing is counted twice.
  EXPECT_THROW(pool.fold(0L, [](long acc, int x) { return acc + die_on_5(x); }, std::plus<>{},
                         mproc::range(0, 100), {.chunksize = 1}),
               mproc::WorkerCrashed);
  EXPECT_EQ(pool.fold(0L, [](long acc, int x) { return acc + x; }, std::plus<>{},
                      mproc::range(0, 100)),
            4950L);
}

struct CrashCase {
  const char* name;
  int (*f)(int);
  int signal;
  int exit_code;
};

class PoolCrash : public ::testing::TestWithParam<CrashCase> {};

TEST_P(PoolCrash, OnlyTheRunningItemFailsAndThePoolGoesOn) {
  const CrashCase c = GetParam();
  mproc::Pool pool(2);
  auto fut = pool.map_async(c.f, mproc::range(0, 40), {.chunksize = 4});
  try {
    fut.get();
    FAIL() << "no exception";
  } catch (const mproc::WorkerCrashed& e) {
    EXPECT_EQ(e.signal(), c.signal);
    EXPECT_EQ(e.exit_code(), c.exit_code);
    EXPECT_EQ(e.task_index(), 5u);
    EXPECT_GT(e.pid(), 0);
  }
  // Every other item ran exactly once and has its result. The stream throws when it
  // reaches the failed item, and goes on after it.
  std::vector<int> results;
  std::vector<std::size_t> failed;
  auto stream = pool.imap(c.f, mproc::range(0, 40), {.chunksize = 4});
  for (auto it = stream.begin(); it != stream.end();) {
    try {
      results.push_back(*it);
      ++it;
    } catch (const mproc::WorkerCrashed& e) {
      failed.push_back(results.size() + failed.size());
      EXPECT_EQ(e.task_index(), 5u);
      ++it;
    }
  }
  EXPECT_EQ(failed, std::vector<std::size_t>{5});
  ASSERT_EQ(results.size(), 39u);
  for (int i = 0; i < 39; ++i) EXPECT_EQ(results[i], i < 5 ? i : i + 1);
  EXPECT_EQ(pool.map(square, std::vector<long>{1, 2, 3}), (std::vector<long>{1, 4, 9}));
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, PoolCrash,
    ::testing::Values(CrashCase{"sigkill", die_on_5, SIGKILL, 0},
                      CrashCase{"segfault", segfault_on_5, kSegvSignal, kSegvExitCode},
                      CrashCase{"exit", exit_on_5, 0, 3},
                      CrashCase{"abort", abort_on_5, SIGABRT, 0}),
    [](const auto& p) { return std::string(p.param.name); });

/// Shared with the workers: mapped before the pools start, so forked workers share it.
std::atomic<int>* g_attempts = [] {
  void* m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return new (m) std::atomic<int>(0);
}();

int crash_first_time(int x) {
  if (x == 3 && g_attempts->fetch_add(1) == 0) ::raise(SIGKILL);
  return x * 10;
}

TEST(Pool, RetriesRunACrashedItemAgainElsewhere) {
  g_attempts->store(0);
  {
    mproc::Pool pool({.workers = 2, .retries = 1});
    auto r = pool.map(crash_first_time, mproc::range(0, 8), {.chunksize = 1});
    EXPECT_EQ(r[3], 30);
    EXPECT_EQ(g_attempts->load(), 2);  // ran twice: once crashed, once fine
  }
  g_attempts->store(0);
  mproc::Pool pool(2);  // no retries: the crash is the item's result
  EXPECT_THROW(pool.map(crash_first_time, mproc::range(0, 8), {.chunksize = 1}),
               mproc::WorkerCrashed);
  EXPECT_EQ(g_attempts->load(), 1);
}

TEST(Pool, OptionsNotAvailableAreRefused) {
  EXPECT_THROW(mproc::Pool({.workers = 1, .backend = mproc::Backend::mpi}),
               std::invalid_argument);
  // A thread cannot be stopped, so a per-task timeout cannot be kept.
  EXPECT_THROW(mproc::Pool({.workers = 1,
                            .backend = mproc::Backend::thread,
                            .task_timeout = 1s}),
               std::invalid_argument);
}

TEST(Pool, UnshippableCallableOnProcessBackendIsATypedErrorNamingTheFix) {
  mproc::Pool pool(1);
  std::string prefix = "x";
  auto f = [prefix](int i) { return prefix.size() + static_cast<std::size_t>(i); };
  try {
    (void)pool.map(f, mproc::range(0, 3));
    FAIL() << "a lambda capturing a std::string was accepted by a process pool";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("cannot be sent to a worker process"));
    EXPECT_THAT(e.what(), testing::HasSubstr("mproc::bind"));
  }
  // The same call on the thread backend just works.
  mproc::Pool threads({.workers = 2, .backend = mproc::Backend::thread});
  EXPECT_EQ(threads.map(f, mproc::range(0, 3)), (std::vector<std::size_t>{1, 2, 3}));
}

int hang_on_3(int x) {
  if (x == 3) ::pause();
  return x;
}

TEST(Pool, TaskTimeoutKillsAndReplacesTheWorker) {
  mproc::Pool pool({.workers = 2, .task_timeout = 300ms});
  auto fut = pool.map_async(hang_on_3, mproc::range(0, 10));
  try {
    fut.get();
    FAIL() << "no exception";
  } catch (const mproc::TaskTimeout& e) {
    EXPECT_EQ(e.task_index(), 3u);
    EXPECT_EQ(e.timeout(), 300ms);
  }
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
}

int retire_crash_or_hang(int x) {
  if (x % 17 == 5) ::raise(SIGKILL);
  if (x % 29 == 7) ::pause();
  return getpid();
}

TEST(Pool, MaxTasksPerChildWithCrashesAndTimeoutsNeverHangs) {
  mproc::Pool pool({.workers = 2, .max_tasks_per_child = 3, .task_timeout = 200ms});
  std::vector<mproc::Future<int>> futures;
  for (int i = 0; i < 60; ++i) futures.push_back(pool.apply_async(retire_crash_or_hang, i));
  std::set<int> pids;
  int crashed = 0, timed_out = 0;
  for (int i = 0; i < 60; ++i) {
    try {
      pids.insert(futures[i].get());
    } catch (const mproc::WorkerCrashed&) {
      ++crashed;
    } catch (const mproc::TaskTimeout&) {
      ++timed_out;
    }
  }
  int expect_crash = 0, expect_timeout = 0;
  for (int i = 0; i < 60; ++i) {
    if (i % 17 == 5)
      ++expect_crash;
    else if (i % 29 == 7)
      ++expect_timeout;
  }
  EXPECT_EQ(crashed, expect_crash);
  EXPECT_EQ(timed_out, expect_timeout);
  // 60 - failures items at 3 per worker: many distinct workers served them.
  EXPECT_GE(pids.size(), (60u - expect_crash - expect_timeout) / 3);
}

struct Fragile {
  int value = 0;
  bool poison = false;
  template <class A>
  void serialize(A& ar) {
    ar(value, poison);
    if (poison && A::is_saving) throw mproc::SerializationError("poisoned value");
  }
};
Fragile echo(Fragile f) {
  if (f.value == 2) f.poison = true;  // the result fails to serialize in the worker
  return f;
}

TEST(Pool, SerializationErrorFailsOnlyThatFuture) {
  mproc::Pool pool(2);
  auto bad_arg = pool.apply_async(echo, Fragile{1, true});
  auto bad_result = pool.apply_async(echo, Fragile{2, false});
  auto good = pool.apply_async(echo, Fragile{3, false});
  EXPECT_THROW(bad_arg.get(), mproc::SerializationError);
  EXPECT_THROW(
      {
        try {
          bad_result.get();
        } catch (const mproc::RemoteError& e) {
          EXPECT_EQ(e.type_name(), "mproc::SerializationError");
          throw mproc::SerializationError(e.what());
        }
      },
      mproc::SerializationError);
  EXPECT_EQ(good.get().value, 3);
}

std::vector<char> big_result(std::size_t n) {
  std::vector<char> v(n);
  for (std::size_t i = 0; i < n; i += 4096) v[i] = static_cast<char>(i / 4096);
  v.back() = 'z';
  return v;
}

TEST(Pool, OneGibResultStreamsThroughTheRing) {
  mproc::Pool pool(1);
  // 256 MiB under the sanitizers, whose instrumented copies take minutes for 1 GiB; either
  // is thousands of times the ring.
  const std::size_t n = std::size_t{1} << (kSanitized ? 28 : 30);
  std::vector<char> v = pool.apply(big_result, n);
  ASSERT_EQ(v.size(), n);
  EXPECT_EQ(v[4096 * 3], 3);
  EXPECT_EQ(v[4096 * 1000], static_cast<char>(1000));
  EXPECT_EQ(v.back(), 'z');
}

long slow_square(long x) {
  ::usleep(2000);
  return x * x;
}

TEST(Pool, DestructorFinishesQueuedWorkAndLeavesNothing) {
  const int fds = count_dir("/proc/self/fd");
  const int threads = proc_counts::threads();
  const int shm = proc_counts::mproc_shm_names();
  mproc::Future<std::vector<long>> f;
  {
    mproc::Pool pool(2);
    f = pool.map_async(slow_square, mproc::range(0L, 200L), {.chunksize = 1});
  }
  ASSERT_TRUE(f.done());
  EXPECT_EQ(f.get()[199], 199L * 199L);
  EXPECT_EQ(count_dir("/proc/self/fd"), fds);
  EXPECT_EQ(proc_counts::threads(), threads);
  EXPECT_EQ(proc_counts::mproc_shm_names(), shm);
  EXPECT_TRUE(children_of(::getpid()).empty());
}

// As in Python, close() lets the workers exit once the work submitted before it is done,
// with no join(): the fork server reaps them and exits too, and join() finds nothing left.
TEST(Pool, CloseLetsTheWorkersExitOnceTheWorkIsDone) {
  mproc::Pool pool(2);
  auto f = pool.map_async(slow_square, mproc::range(0L, 100L), {.chunksize = 1});  // ~100 ms
  const std::vector<pid_t> servers = children_of(::getpid());
  ASSERT_EQ(servers.size(), 1u);
  const pid_t server = servers[0];
  pool.close();
  EXPECT_FALSE(f.done());
  EXPECT_EQ(children_of(server).size(), 2u);  // the work still runs: both workers are there
  EXPECT_EQ(f.get()[99], 99L * 99L);
  auto state = [](pid_t pid) {  // 'Z' once it has exited and waits to be reaped, 0 if gone
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    const std::string text((std::istreambuf_iterator<char>(stat)), {});
    const auto close = text.rfind(')');
    return close == std::string::npos || close + 2 >= text.size() ? '\0' : text[close + 2];
  };
  const auto until = std::chrono::steady_clock::now() + 10s;
  while ((!children_of(server).empty() || state(server) != 'Z') && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(children_of(server).empty()) << "the workers are still running after close()";
  EXPECT_EQ(state(server), 'Z') << "the fork server is still running after close()";
  pool.join();
  EXPECT_TRUE(children_of(::getpid()).empty());
}

TEST(Pool, TerminateKillsAtOnceAndLeavesNothing) {
  const int fds = count_dir("/proc/self/fd");
  const int threads = proc_counts::threads();
  mproc::Future<std::vector<int>> f;
  {
    mproc::Pool pool(2);
    f = pool.map_async(hang_on_3, std::vector<int>{3, 3, 3, 3});
    std::this_thread::sleep_for(50ms);
    pool.terminate();
    EXPECT_THROW(f.get(), mproc::Cancelled);
    EXPECT_THROW(pool.apply(add, 1, 2), mproc::PoolClosed);
  }
  EXPECT_EQ(count_dir("/proc/self/fd"), fds);
  EXPECT_EQ(proc_counts::threads(), threads);
  EXPECT_TRUE(children_of(::getpid()).empty());
}

long close_fds_on_3(long x) {
  if (x == 3) ::closefrom(3);
  return x * x;
}

TEST(Pool, ATaskThatClosesItsInheritedFdsFailsClearlyAndNothingHangs) {
  // The worker's doorbell eventfd is gone: its wake-ups were lost, and about one pool in
  // forty then slept forever in its destructor. Repeated for that reason.
  for (int run = 0; run < 25; ++run) {
    SCOPED_TRACE(run);
    mproc::Pool pool(2);
    try {
      pool.map(close_fds_on_3, mproc::range(0L, 40L), {.chunksize = 1});
      ADD_FAILURE() << "no exception";
    } catch (const mproc::RemoteError& e) {
      EXPECT_EQ(e.type_name(), "mproc::TransportLost");
      EXPECT_EQ(e.task_index(), 3u);
      EXPECT_THAT(e.message(), HasSubstr("item 3 closed or replaced the file descriptors"));
    }
    // That worker left and another took its place; every other item ran once.
    auto r = pool.imap(close_fds_on_3, mproc::range(0L, 8L), {.chunksize = 1});
    std::vector<long> ok;
    for (auto it = r.begin(); it != r.end();) {
      try {
        ok.push_back(*it);
        ++it;
      } catch (const mproc::RemoteError&) {
        ++it;
      }
    }
    EXPECT_EQ(ok, (std::vector<long>{0, 1, 4, 16, 25, 36, 49}));
  }
}

std::string g_reused_fd_path;

long reopen_as_fd_3(long) {
  ::closefrom(3);
  ::usleep(100'000);  // the pool's dispatcher falls asleep meanwhile
  const int fd = ::open(g_reused_fd_path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  return fd;
}

TEST(Pool, ATaskThatReusesTheDoorbellsNumberGetsNothingWrittenIntoItsFile) {
  g_reused_fd_path = ::testing::TempDir() + "pool_reused_fd_" + std::to_string(::getpid());
  mproc::Pool pool(1);
  try {
    pool.apply(reopen_as_fd_3, 0L);
    ADD_FAILURE() << "no exception";
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.type_name(), "mproc::TransportLost");
  }
  // The doorbell's 8-byte counter write went into this file before.
  EXPECT_EQ(std::filesystem::file_size(g_reused_fd_path), 0u);
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
  std::filesystem::remove(g_reused_fd_path);
}

long pid_times(long x) { return static_cast<long>(::getpid()) * 10'000 + x; }

TEST(Pool, FiveHundredTwelveWorkersStartRunAMapAndLeaveNothing) {
  // A few hundred spawn commands fill the fork server's socket buffer; the pool used to
  // take EAGAIN for the server's death (BrokenPool, or a hang in the destructor).
  const int fds = count_dir("/proc/self/fd");
  std::set<long> pids;
  {
    mproc::Pool pool(512);
    EXPECT_EQ(pool.apply(square, 9L), 81);
    auto r = pool.map(pid_times, mproc::range(0L, 5000L), {.chunksize = 1});
    ASSERT_EQ(r.size(), 5000u);
    for (long i = 0; i < 5000; ++i) {
      ASSERT_EQ(r[i] % 10'000, i);
      pids.insert(r[i] / 10'000);
    }
  }
  EXPECT_GT(pids.size(), 2u);
  EXPECT_LE(pids.size(), 512u);
  EXPECT_EQ(count_dir("/proc/self/fd"), fds);
  EXPECT_TRUE(children_of(::getpid()).empty());
}

long chunk_of(long) { return static_cast<long>(mproc::current_task()->chunk_size); }

TEST(Pool, ASecondCallOfTheSameFunctionStartsWithChunksSizedByItsCost) {
  mproc::Pool pool(2);
  const auto first = pool.map(chunk_of, mproc::range(0L, 200'000L));
  EXPECT_EQ(first[0], 1);  // a probe: nothing is known of the function yet
  const long largest = *std::max_element(first.begin(), first.end());
  EXPECT_GT(largest, 100);
  // Cheap items, known from the first call: large chunks from the start (how large
  // depends on the machine's speed; the first call reached `largest`).
  const auto second = pool.map(chunk_of, mproc::range(0L, 200'000L));
  EXPECT_GT(second[0], 16);
}

TEST(Pool, MadeInAShortLivedThreadKeepsItsWorkers) {
  std::unique_ptr<mproc::Pool> pool;
  std::thread([&] { pool = std::make_unique<mproc::Pool>(2); }).join();
  std::this_thread::sleep_for(100ms);  // a death signal tied to that thread would fire now
  EXPECT_EQ(pool->map(square, mproc::range(0L, 100L))[99], 99L * 99L);
}

TEST(Pool, ParentKilledTakesForkServerAndWorkersWithIt) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t helper = ::fork();
  if (helper == 0) {
    ::dup2(out[1], 1);
    ::execl(MPROC_POOL_HELPER, MPROC_POOL_HELPER, "hold", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  char buf[64] = {};
  ASSERT_GT(::read(out[0], buf, sizeof buf - 1), 0);  // "ready": the pool is up
  ::close(out[0]);
  std::vector<pid_t> server = children_of(helper);
  ASSERT_EQ(server.size(), 1u);
  std::vector<pid_t> workers = children_of(server[0]);
  ASSERT_EQ(workers.size(), 2u);
  ::kill(helper, SIGKILL);
  ::waitpid(helper, nullptr, 0);
  const auto deadline = std::chrono::steady_clock::now() + 1s;
  auto all_gone = [&] {
    for (pid_t p : {server[0], workers[0], workers[1]})
      if (alive(p)) return false;
    return true;
  };
  while (!all_gone() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(all_gone());
}

}  // namespace
