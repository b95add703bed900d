// The adversarial cases, bounded so that they run in `make test`: storms of crashes (and
// hangs) over 2000 items, where every item is accounted for and none runs twice; 200
// crash cycles that leak nothing; a parent SIGKILLed at random moments while it makes
// pools, which leaves nothing behind.
#include <mproc/pool.hpp>

#include <gtest/gtest.h>

#include "proc_counts.hpp"
#include "sanitizers.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

constexpr long kItems = 2000;

/// How many times each item started, in memory every worker shares (mapped before any
/// pool, so every fork inherits it).
std::atomic<int>* g_runs = [] {
  void* p = ::mmap(nullptr, kItems * sizeof(std::atomic<int>), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) std::abort();
  return new (p) std::atomic<int>[kItems]();
}();

void reset_runs() {
  for (long i = 0; i < kItems; ++i) g_runs[i].store(0);
}

enum class Fate { ok, kill, segv, abort, exit, throws, hang };

/// A fixed pseudo-random fate per item: about one item in nine misbehaves.
Fate fate_of(long i, bool hangs) {
  std::uint64_t h = static_cast<std::uint64_t>(i + 1) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 31;
  switch (h % 54) {
    case 0: return Fate::kill;
    case 1: return Fate::segv;
    case 2: return Fate::abort;
    case 3: return Fate::exit;
    case 4: return Fate::throws;
    case 5: return hangs ? Fate::hang : Fate::ok;
    default: return Fate::ok;
  }
}

long run_fate(long i, bool hangs) {
  g_runs[i].fetch_add(1);
  switch (fate_of(i, hangs)) {
    case Fate::ok: break;
    case Fate::kill: ::raise(SIGKILL); break;
    case Fate::segv: *static_cast<volatile int*>(nullptr) = 1; break;
    case Fate::abort: std::abort();
    case Fate::exit: ::_exit(3);
    case Fate::throws: throw std::runtime_error("item " + std::to_string(i));
    case Fate::hang:
      for (;;) ::pause();
  }
  return i * 3 + 1;
}

// long -> long: the packed path, with its results written to shared scratch memory.
long storm(long i) { return run_fate(i, false); }
long storm_with_hangs(long i) { return run_fate(i, true); }

/// What the consumer saw of each item: its value, or the error it got and its fields.
struct Outcome {
  int seen = 0;
  long value = -1;
  std::string error;  // "", "crashed", "remote", "timeout"
  int signal = 0, exit_code = 0;
};

/// Consumes an imap of the storm, recording each outcome by the index it names: a value
/// is i * 3 + 1, an error carries its task index. Wherever the stream raises an item's
/// error (at the increment that reaches it, or at the dereference), the next increment
/// goes on past it.
template <class Stream>
std::vector<Outcome> consume(Stream& stream) {
  std::vector<Outcome> out(kItems);
  auto note = [&](std::optional<std::size_t> index, Outcome o) {
    ASSERT_TRUE(index && *index < static_cast<std::size_t>(kItems));
    o.seen = out[*index].seen + 1;
    out[*index] = o;
  };
  std::optional<decltype(stream.begin())> it;
  for (int steps = 0; steps < 2 * kItems + 2; ++steps) {
    try {
      if (!it)
        it.emplace(stream.begin());
      else
        ++*it;
      if (*it == stream.end()) break;
      const long v = **it;
      note(static_cast<std::size_t>((v - 1) / 3), Outcome{0, v, "", 0, 0});
    } catch (const mproc::WorkerCrashed& e) {
      note(e.task_index(), Outcome{0, -1, "crashed", e.signal(), e.exit_code()});
    } catch (const mproc::RemoteError& e) {
      note(e.task_index(), Outcome{0, -1, "remote", 0, 0});
    } catch (const mproc::TaskTimeout& e) {
      note(e.task_index(), Outcome{0, -1, "timeout", 0, 0});
    }
  }
  return out;
}

/// Every item was seen once, with what its fate makes of it.
void expect_outcomes(const std::vector<Outcome>& out, bool hangs) {
  for (long i = 0; i < kItems; ++i) {
    SCOPED_TRACE("item " + std::to_string(i));
    const Outcome& o = out[i];
    EXPECT_EQ(o.seen, 1);
    switch (fate_of(i, hangs)) {
      case Fate::ok: EXPECT_EQ(o.value, i * 3 + 1) << o.error; break;
      case Fate::kill:
        EXPECT_EQ(o.error, "crashed");
        EXPECT_EQ(o.signal, SIGKILL);
        break;
      case Fate::segv:
        EXPECT_EQ(o.error, "crashed");
        EXPECT_EQ(o.signal, kSegvSignal);
        EXPECT_EQ(o.exit_code, kSegvExitCode);
        break;
      case Fate::abort:
        EXPECT_EQ(o.error, "crashed");
        EXPECT_EQ(o.signal, SIGABRT);
        break;
      case Fate::exit:
        EXPECT_EQ(o.error, "crashed");
        EXPECT_EQ(o.exit_code, 3);
        break;
      case Fate::throws: EXPECT_EQ(o.error, "remote"); break;
      case Fate::hang: EXPECT_EQ(o.error, "timeout"); break;
    }
  }
}

void expect_each_ran_once() {
  long twice = 0, never = 0;
  for (long i = 0; i < kItems; ++i) {
    twice += g_runs[i].load() > 1;
    never += g_runs[i].load() == 0;
  }
  EXPECT_EQ(twice, 0) << "items that ran more than once";
  EXPECT_EQ(never, 0) << "items that never ran";
}

TEST(Adversarial, CrashStormOverTwoThousandItemsLosesNothingAndRunsNothingTwice) {
  reset_runs();
  long misbehaving = 0;
  for (long i = 0; i < kItems; ++i) misbehaving += fate_of(i, false) != Fate::ok;
  ASSERT_GT(misbehaving, 100);
  mproc::Pool pool(2);
  // Adaptive chunks: crashes land inside chunks of many items, run packed.
  auto r = pool.imap(storm, mproc::range(0L, kItems));
  expect_outcomes(consume(r), false);
  expect_each_ran_once();
  EXPECT_EQ(pool.apply(storm, 0L), 1);  // still usable
}

TEST(Adversarial, StormWithHangsUnderATimeoutAccountsForEveryItem) {
  reset_runs();
  mproc::Pool pool(mproc::PoolOptions{.workers = 2, .task_timeout = 100ms});
  auto r = pool.imap(storm_with_hangs, mproc::range(0L, kItems));
  expect_outcomes(consume(r), true);
  expect_each_ran_once();
}

using proc_counts::children_of;
using proc_counts::count_dir;

long twice(long x) { return 2 * x; }

int crash_kind(int k) {
  switch (k % 4) {
    case 0: ::raise(SIGKILL); break;
    case 1: *static_cast<volatile int*>(nullptr) = 1; break;
    case 2: std::abort();
    default: ::_exit(5);
  }
  return k;
}

TEST(Adversarial, TwoHundredCrashCyclesLeakNoFdShmThreadOrChild) {
  const int fds0 = count_dir("/proc/self/fd");
  const int threads0 = proc_counts::threads();
  const int shm0 = proc_counts::mproc_shm_names();
  const int maps0 = proc_counts::mproc_mappings();
  {
    mproc::Pool pool(2);
    const auto servers = children_of(::getpid());
    ASSERT_EQ(servers.size(), 1u);  // the fork server; the workers are its children
    // Both workers up, each with its pidfd in this process.
    auto settle = [&] {
      EXPECT_EQ(pool.map(twice, mproc::range(0L, 64L), {.chunksize = 1})[63], 126);
      const auto deadline = std::chrono::steady_clock::now() + 2s;
      while (children_of(servers[0]).size() != 2 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(5ms);
      std::this_thread::sleep_for(20ms);
      EXPECT_EQ(children_of(servers[0]).size(), 2u);
    };
    settle();
    const int fds = count_dir("/proc/self/fd");
    const int threads = proc_counts::threads();
    for (int k = 0; k < 200; ++k) {
      try {
        pool.apply(crash_kind, k);
        ADD_FAILURE() << "cycle " << k << ": no WorkerCrashed";
      } catch (const mproc::WorkerCrashed&) {
      }
    }
    settle();
    EXPECT_EQ(count_dir("/proc/self/fd"), fds);
    EXPECT_EQ(proc_counts::threads(), threads);
    EXPECT_EQ(proc_counts::mproc_shm_names(), shm0);
  }
  EXPECT_EQ(count_dir("/proc/self/fd"), fds0);
  EXPECT_EQ(proc_counts::threads(), threads0);
  EXPECT_EQ(proc_counts::mproc_shm_names(), shm0);
  // mproc's shared memory is memfds: none of the pool's is still mapped here.
  EXPECT_EQ(proc_counts::mproc_mappings(), maps0);
  EXPECT_TRUE(children_of(::getpid()).empty());
}

TEST(Adversarial, ParentKilledWhileMakingPoolsLeavesNothingWithinASecond) {
  // Orphans are reparented to this process, so that it can reap them: a zombie still
  // counts as a member of its process group.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const pid_t parent = ::fork();
    ASSERT_GE(parent, 0);
    if (parent == 0) {
      ::setpgid(0, 0);
      for (long k = 0;; ++k) {
        mproc::Pool pool(2);
        if (pool.apply(twice, k) != 2 * k) ::_exit(1);
      }
    }
    ::setpgid(parent, parent);  // also here, so the group exists whoever runs first
    // Kill at a spread of moments: during the fork server's start, the workers' spawn,
    // the first task, the destructor.
    std::this_thread::sleep_for(std::chrono::microseconds(300 + (round * 1733) % 6000));
    ASSERT_EQ(::kill(parent, SIGKILL), 0);
    const auto killed = std::chrono::steady_clock::now();
    bool gone = false;
    while (std::chrono::steady_clock::now() - killed < 1s) {
      while (::waitpid(-1, nullptr, WNOHANG) > 0) {
      }
      if (::kill(-parent, 0) != 0 && errno == ESRCH) {
        gone = true;
        break;
      }
      std::this_thread::sleep_for(2ms);
    }
    EXPECT_TRUE(gone) << "processes of the killed parent's group still alive after 1 s";
    if (!gone) {
      ::kill(-parent, SIGKILL);
      while (::waitpid(-1, nullptr, 0) > 0) {
      }
    }
  }
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

}  // namespace
