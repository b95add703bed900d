// Progress reporting of the map family: the guarantees a callback gets on both backends
// (never concurrent, counts that only grow, a final report with every item counted), a
// callback that throws, and the bar drawn on a real pseudo-terminal (and not on a pipe).
#include <mproc/pool.hpp>
#include <mproc/progress.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <functional>
#include <memory>
#include <ostream>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr long kItems = 3000;

// Plain functions, so the process backend can ship them. Some items sleep a little, so
// that a run lasts long enough (a few hundred ms) for reports before the final one, which
// come at most every 50 ms. (Set before a process pool forks its workers.)
long g_sleep_every = 10;

long twice(long x) {
  if (x % g_sleep_every == 0) ::usleep(1000);
  return 2 * x;
}
long add_pair(long a, long b) {
  if (a % g_sleep_every == 0) ::usleep(1000);
  return a + b;
}
long plus(long a, long b) { return a + b; }

/// Records every progress call, and whether two ever overlapped.
struct ProgressLog {
  std::mutex mutex;
  std::vector<mproc::Progress> calls;
  std::atomic<bool> inside{false};
  std::atomic<int> overlaps{0};

  mproc::ProgressOption option() {
    return [this](const mproc::Progress& p) {
      if (inside.exchange(true)) ++overlaps;
      {
        std::lock_guard lock(mutex);
        calls.push_back(p);
      }
      // Stay inside a little, so that a concurrent second call would be caught.
      std::this_thread::sleep_for(200us);
      inside.store(false);
    };
  }

  /// What every run must satisfy; `n` items, sized input.
  void expect_sound(std::size_t n) {
    std::lock_guard lock(mutex);
    ASSERT_FALSE(calls.empty()) << "no progress report at all";
    EXPECT_EQ(overlaps.load(), 0) << "the callback ran concurrently with itself";
    for (std::size_t i = 0; i < calls.size(); ++i) {
      EXPECT_EQ(calls[i].total, n) << "call " << i;
      EXPECT_LE(calls[i].done, n) << "call " << i;
      if (i > 0) {
        EXPECT_GE(calls[i].done, calls[i - 1].done) << "done went backwards at call " << i;
        EXPECT_GE(calls[i].elapsed, calls[i - 1].elapsed) << "elapsed went backwards at call " << i;
      }
    }
    EXPECT_EQ(calls.back().done, n) << "the last report does not count every item ("
                                    << calls.size() << " calls)";
    EXPECT_EQ(calls.back().total, n);
  }
};

enum class Variant { map, map_async, starmap, imap, imap_unordered, map_reduce };

const char* name_of(Variant v) {
  switch (v) {
    case Variant::map: return "map";
    case Variant::map_async: return "map_async";
    case Variant::starmap: return "starmap";
    case Variant::imap: return "imap";
    case Variant::imap_unordered: return "imap_unordered";
    case Variant::map_reduce: return "map_reduce";
  }
  return "?";
}

/// Runs `v` over kItems items with `opts` and checks the results.
void run_and_check(mproc::Pool& pool, Variant v, const mproc::MapOptions& opts) {
  const auto in = mproc::range(0L, kItems);
  switch (v) {
    case Variant::map: {
      auto r = pool.map(twice, in, opts);
      ASSERT_EQ(r.size(), static_cast<std::size_t>(kItems));
      for (long i = 0; i < kItems; ++i) ASSERT_EQ(r[i], 2 * i);
      break;
    }
    case Variant::map_async: {
      auto r = pool.map_async(twice, in, opts).get();
      ASSERT_EQ(r.size(), static_cast<std::size_t>(kItems));
      for (long i = 0; i < kItems; ++i) ASSERT_EQ(r[i], 2 * i);
      break;
    }
    case Variant::starmap: {
      std::vector<std::pair<long, long>> pairs;
      for (long i = 0; i < kItems; ++i) pairs.emplace_back(i, 1000 * i);
      auto r = pool.starmap(add_pair, pairs, opts);
      ASSERT_EQ(r.size(), static_cast<std::size_t>(kItems));
      for (long i = 0; i < kItems; ++i) ASSERT_EQ(r[i], 1001 * i);
      break;
    }
    case Variant::imap: {
      long i = 0;
      for (long r : pool.imap(twice, in, opts)) ASSERT_EQ(r, 2 * i++);
      ASSERT_EQ(i, kItems);
      break;
    }
    case Variant::imap_unordered: {
      long n = 0, sum = 0;
      for (long r : pool.imap_unordered(twice, in, opts)) {
        ++n;
        sum += r;
      }
      ASSERT_EQ(n, kItems);
      ASSERT_EQ(sum, kItems * (kItems - 1));
      break;
    }
    case Variant::map_reduce: {
      ASSERT_EQ(pool.map_reduce(twice, plus, in, opts), kItems * (kItems - 1));
      break;
    }
  }
}

struct Case {
  mproc::Backend backend;
  Variant variant;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << (c.backend == mproc::Backend::thread ? "thread " : "process ") << name_of(c.variant);
}

class ProgressCallback : public ::testing::TestWithParam<Case> {};

TEST_P(ProgressCallback, NeverConcurrentGrowingAndFinalCountsEverything) {
  const Case c = GetParam();
  mproc::Pool pool({.workers = 2, .backend = c.backend});
  ProgressLog log;
  run_and_check(pool, c.variant, {.progress = log.option()});
  log.expect_sound(static_cast<std::size_t>(kItems));
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (auto b : {mproc::Backend::thread, mproc::Backend::process})
    for (auto v : {Variant::map, Variant::map_async, Variant::starmap, Variant::imap,
                   Variant::imap_unordered, Variant::map_reduce})
      out.push_back({b, v});
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, ProgressCallback, ::testing::ValuesIn(all_cases()),
                         [](const auto& p) {
                           return std::string(p.param.backend == mproc::Backend::thread
                                                  ? "thread_"
                                                  : "process_") +
                                  name_of(p.param.variant);
                         });

TEST(ProgressCallback, ThreadBackendWithEightWorkersAndChunksOfOne) {
  // Many reporting threads at once: still one call at a time, counts still growing.
  mproc::Pool pool({.workers = 8, .backend = mproc::Backend::thread});
  // More sleeping items: eight workers get through the rest fast.
  struct Restore {
    ~Restore() { g_sleep_every = 10; }
  } restore;
  g_sleep_every = 2;
  for (Variant v : {Variant::map, Variant::imap_unordered, Variant::map_reduce}) {
    ProgressLog log;
    run_and_check(pool, v, {.chunksize = 1, .progress = log.option()});
    log.expect_sound(static_cast<std::size_t>(kItems));
  }
}

/// Installs a capturing callback error handler and restores the previous one.
class CapturedCallbackErrors {
 public:
  CapturedCallbackErrors()
      : previous_(mproc::set_callback_error_handler([this](std::exception_ptr e) {
          std::string what = "unknown";
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            what = ex.what();
          } catch (...) {
          }
          std::lock_guard lock(mutex_);
          messages_.push_back(what);
        })) {}
  ~CapturedCallbackErrors() { mproc::set_callback_error_handler(std::move(previous_)); }
  std::vector<std::string> messages() {
    std::lock_guard lock(mutex_);
    return messages_;
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> messages_;
  mproc::CallbackErrorHandler previous_;
};

struct BackendParam {
  mproc::Backend backend;
};
void PrintTo(const BackendParam& b, std::ostream* os) {
  *os << (b.backend == mproc::Backend::thread ? "thread" : "process");
}

class ProgressBackend : public ::testing::TestWithParam<BackendParam> {};

TEST_P(ProgressBackend, ThrowingCallbackIsReportedAndTheMapStillCompletes) {
  CapturedCallbackErrors errors;
  mproc::Pool pool({.workers = 2, .backend = GetParam().backend});
  std::atomic<int> calls{0};
  auto throwing = [&calls](const mproc::Progress&) {
    ++calls;
    throw std::runtime_error("progress callback failed");
  };
  run_and_check(pool, Variant::map, {.progress = throwing});
  run_and_check(pool, Variant::imap, {.progress = throwing});
  const auto messages = errors.messages();
  EXPECT_GE(calls.load(), 2);  // at least the final report of each call
  EXPECT_EQ(messages.size(), static_cast<std::size_t>(calls.load()));
  for (const auto& m : messages) EXPECT_EQ(m, "progress callback failed");
}

long pause_20ms(long x) {
  ::usleep(20000);
  return x;
}

TEST_P(ProgressBackend, NoCallbackAfterAnAbandonedStreamIsDestroyed) {
  // A progress callback typically captures locals by reference (as in the header's own
  // example). Once the consumer has destroyed an imap stream it stopped early, the
  // callback must not run any more: the captured locals may be gone by then.
  // (Process backend: items still in flight report later, every time. Thread backend: a
  // race with the last runner, so a broken implementation is caught in only some rounds;
  // hence several rounds. A correct one passes every time.)
  struct Round {
    std::atomic<bool> stream_gone{false};
    std::atomic<int> calls_after{0};
  };
  std::vector<std::unique_ptr<Round>> rounds;  // outlive the pool, so late calls are safe
  {
    mproc::Pool pool({.workers = 2, .backend = GetParam().backend});
    for (int r = 0; r < 16; ++r) {
      rounds.push_back(std::make_unique<Round>());
      Round* round = rounds.back().get();
      {
        auto stream = pool.imap(pause_20ms, mproc::range(0L, 100L),
                                {.chunksize = 1, .progress = [round](const mproc::Progress&) {
                                   if (round->stream_gone) ++round->calls_after;
                                 }});
        for ([[maybe_unused]] long x : stream) break;
      }
      round->stream_gone = true;
    }
  }  // joined: every report there will ever be has been made
  int late = 0, rounds_with_late = 0;
  for (auto& r : rounds) {
    late += r->calls_after;
    rounds_with_late += r->calls_after > 0;
  }
  EXPECT_EQ(late, 0) << rounds_with_late << " of " << rounds.size()
                     << " abandoned streams still called their progress callback after "
                        "being destroyed";
}

INSTANTIATE_TEST_SUITE_P(Backends, ProgressBackend,
                         ::testing::Values(BackendParam{mproc::Backend::thread},
                                           BackendParam{mproc::Backend::process}),
                         [](const auto& p) {
                           return std::string(p.param.backend == mproc::Backend::thread
                                                  ? "thread"
                                                  : "process");
                         });

// ---- the bar ------------------------------------------------------------------------------

constexpr const char* kMarker = "[child done]";

struct ChildRun {
  std::string output;  ///< everything the child wrote to its stderr
  int status = -1;
  bool timed_out = false;
};

/// Runs `body` in a forked child whose stderr (fd 2) is the slave side of a new
/// pseudo-terminal (`terminal`) or the write end of a pipe, and collects what it writes
/// there. The child writes kMarker when `body` is done and waits for the parent to have
/// read everything up to it before it exits, so no output can be lost with the slave.
ChildRun run_with_stderr(bool terminal, const std::function<bool()>& body) {
  ChildRun run;
  int reader = -1, writer = -1;
  if (terminal) {
    // posix_openpt/grantpt/unlockpt/ptsname need no extra library (openpty may need -lutil).
    reader = ::posix_openpt(O_RDWR | O_NOCTTY);
    if (reader < 0 || ::grantpt(reader) != 0 || ::unlockpt(reader) != 0) {
      ADD_FAILURE() << "posix_openpt: " << std::strerror(errno);
      return run;
    }
    const char* name = ::ptsname(reader);
    writer = name ? ::open(name, O_RDWR | O_NOCTTY) : -1;
  } else {
    int p[2];
    if (::pipe(p) == 0) {
      reader = p[0];
      writer = p[1];
    }
  }
  int go[2];
  if (writer < 0 || ::pipe(go) != 0) {
    ADD_FAILURE() << "cannot set up the child's stderr";
    return run;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(writer, 2);
    ::close(writer);
    ::close(reader);
    ::close(go[1]);
    bool ok = false;
    try {
      ok = body();
    } catch (...) {
    }
    const std::string marker = std::string("\n") + kMarker + "\n";
    (void)!::write(2, marker.data(), marker.size());
    char c;
    (void)!::read(go[0], &c, 1);  // until the parent has the marker (or is gone)
    ::_exit(ok ? 0 : 1);
  }
  ::close(writer);
  ::close(go[0]);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  bool released = false;
  for (;;) {
    if (!released && run.output.find(kMarker) != std::string::npos) {
      ::close(go[1]);  // the child may exit now
      released = true;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      run.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{reader, POLLIN, 0};
    if (::poll(&pfd, 1, 100) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(reader, buf, sizeof buf);
    if (n > 0) {
      run.output.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno == EIO) {
      break;  // a pipe's EOF, or a pseudo-terminal whose slave is closed everywhere
    } else if (errno != EINTR && errno != EAGAIN) {
      break;
    }
  }
  if (!released) ::close(go[1]);
  ::close(reader);
  ::waitpid(pid, &run.status, 0);
  return run;
}

bool exited_ok(const ChildRun& run) {
  return !run.timed_out && WIFEXITED(run.status) && WEXITSTATUS(run.status) == 0;
}

long slow_square(long x) {
  std::this_thread::sleep_for(2ms);
  return x * x;
}

bool map_with_bar() {
  mproc::Pool pool({.workers = 2, .backend = mproc::Backend::thread});
  auto r = pool.map(slow_square, mproc::range(0L, 200L), {.progress = true});
  return r.size() == 200 && r[199] == 199L * 199L;
}

TEST(ProgressBar, DrawnOnATerminal) {
  const ChildRun run = run_with_stderr(true, map_with_bar);
  EXPECT_TRUE(exited_ok(run)) << "status " << run.status << ", output: " << run.output;
  EXPECT_THAT(run.output, HasSubstr("100%"));
  EXPECT_THAT(run.output, HasSubstr("200/200"));
  EXPECT_THAT(run.output, HasSubstr(kMarker));
}

TEST(ProgressBar, NothingWrittenWhenStderrIsAPipe) {
  const ChildRun run = run_with_stderr(false, map_with_bar);
  EXPECT_TRUE(exited_ok(run)) << "status " << run.status;
  // Only the child's own end marker: the map wrote nothing.
  EXPECT_EQ(run.output, std::string("\n") + kMarker + "\n");
}

TEST(ProgressBar, PoolOptionTurnsTheBarOnForEveryMapWithoutItsOwnProgress) {
  const ChildRun run = run_with_stderr(true, [] {
    mproc::Pool pool({.workers = 2, .backend = mproc::Backend::thread, .progress = true});
    auto a = pool.map(slow_square, mproc::range(0L, 200L));
    long n = 0;
    for (long r : pool.imap(slow_square, mproc::range(0L, 150L))) n += r == n * n ? 1 : 0;
    // A map with its own progress callback reports there instead of drawing the bar.
    std::size_t last_done = 0;
    auto c = pool.map(slow_square, mproc::range(0L, 120L),
                      {.progress = [&](const mproc::Progress& p) { last_done = p.done; }});
    return a.size() == 200 && a[199] == 199L * 199L && n == 150 && c.size() == 120 &&
           last_done == 120;
  });
  EXPECT_TRUE(exited_ok(run)) << "status " << run.status << ", output: " << run.output;
  EXPECT_THAT(run.output, HasSubstr("100%"));
  EXPECT_THAT(run.output, HasSubstr("200/200"));
  EXPECT_THAT(run.output, HasSubstr("150/150"));
  EXPECT_THAT(run.output, Not(HasSubstr("/120")));
}

}  // namespace
