// Progress reporting of the map family: the guarantees a callback gets on both backends
// (never concurrent, counts that only grow, a final report with every item counted), a
// callback that throws; the bar's line as a pure function of the count and the width;
// and the bars of a map and of a ProgressBar drawn on a real pseudo-terminal of a given
// width (and not on a pipe).
#include <mproc/pool.hpp>
#include <mproc/progress.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
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
#include <string_view>
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

// ---- the bar's line, as a pure function --------------------------------------------------

/// Columns of text as the tests count them: one per UTF-8 code point (every character the
/// bar draws is one column wide), independent of the library's own text_columns.
std::size_t code_points(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool all_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

mproc::detail::BarLine counting_line() {
  return {.label = "counting", .unit = "blocks", .n = 123, .total = 272.0, .elapsed = 1.25};
}

TEST(BarFormat, TheTqdmLine) {
  EXPECT_EQ(mproc::detail::format_bar(counting_line(), 71),
            "counting:  45%|\u2588\u2588\u2588\u2588\u258C     | 123/272 blocks "
            "[00:01<00:01, 98.4 blocks/s]");
  auto ascii = counting_line();
  ascii.unicode = false;
  EXPECT_EQ(mproc::detail::format_bar(ascii, 71),
            "counting:  45%|####      | 123/272 blocks [00:01<00:01, 98.4 blocks/s]");
  auto unknown = counting_line();
  unknown.total.reset();
  EXPECT_EQ(mproc::detail::format_bar(unknown, 80), "counting: 123 blocks [00:01, 98.4 blocks/s]");
}

TEST(BarFormat, TotalsThatAreZeroOrExceededAreShownAsUnknown) {
  auto zero = counting_line();
  zero.n = 0;
  zero.total = 0.0;
  EXPECT_EQ(mproc::detail::format_bar(zero, 80), "counting: 0 blocks [00:01, ? blocks/s]");
  auto over = counting_line();
  over.total = 100.0;
  EXPECT_EQ(mproc::detail::format_bar(over, 80), "counting: 123 blocks [00:01, 98.4 blocks/s]");
}

TEST(BarFormat, NumbersAsTqdmShowsThem) {
  using mproc::detail::BarLine;
  using mproc::detail::format_bar;
  // Large counts and rates scaled, three significant digits.
  EXPECT_THAT(format_bar({.label = "map", .unit = "items", .n = 123456, .total = 272000.0,
                          .elapsed = 1.0},
                         200),
              HasSubstr("| 123k/272k items [00:01<00:01, 123k items/s]"));
  EXPECT_EQ(format_bar({.label = "map", .unit = "items", .n = 2.5e6, .total = std::nullopt, .elapsed = 2.0}, 200),
            "map: 2.50M items [00:02, 1.25M items/s]");
  // Whole counts exact below 100000, fractional ones to three digits.
  EXPECT_THAT(format_bar({.label = "g", .unit = "MB", .n = 23.4, .total = 50.0, .elapsed = 2.0},
                         200),
              HasSubstr("| 23.4/50 MB [00:02<00:02, 11.7 MB/s]"));
  EXPECT_THAT(format_bar({.label = "g", .unit = "items", .n = 99999, .total = 99999.0,
                          .elapsed = 10.0},
                         200),
              HasSubstr("| 99999/99999 items [00:10<00:00, 10.0k items/s]"));
  // Under one a second: seconds per unit.
  EXPECT_THAT(format_bar({.label = "g", .unit = "MB", .n = 1, .total = 50.0, .elapsed = 2.0}, 200),
              HasSubstr("[00:02<01:38, 2.00 s/MB]"));
  // Before anything is counted, no rate and no remaining time.
  EXPECT_THAT(format_bar({.label = "g", .unit = "MB", .n = 0, .total = 50.0, .elapsed = 0}, 200),
              HasSubstr("g:   0%|"));
  EXPECT_THAT(format_bar({.label = "g", .unit = "MB", .n = 0, .total = 50.0, .elapsed = 0}, 200),
              HasSubstr("| 0/50 MB [00:00<?, ? MB/s]"));
  // The percentage is floored from the exact ratio: 29/100 is 29% (0.29 * 100 is
  // 28.999...), and 999/1000 is not yet 100%.
  EXPECT_THAT(format_bar({.label = "p", .unit = "", .n = 29, .total = 100.0, .elapsed = 1}, 200),
              HasSubstr("p:  29%|"));
  EXPECT_THAT(format_bar({.label = "p", .unit = "", .n = 999, .total = 1000.0, .elapsed = 1}, 200),
              HasSubstr("p:  99%|"));
  // An empty unit leaves the word out (the rate says "it"), an empty label its prefix.
  EXPECT_THAT(format_bar({.label = "", .unit = "", .n = 5, .total = 10.0, .elapsed = 1}, 200),
              ::testing::StartsWith(" 50%|"));
  EXPECT_THAT(format_bar({.label = "", .unit = "", .n = 5, .total = 10.0, .elapsed = 1}, 200),
              HasSubstr("| 5/10 [00:01<00:01, 5.00 it/s]"));
  // Hours, and a rate so slow that it reads as seconds per item.
  EXPECT_EQ(format_bar({.label = "h", .unit = "items", .n = 7, .total = std::nullopt, .elapsed = 3725.0}, 200),
            "h: 7 items [1:02:05, 532 s/items]");
}

/// Which fields a line of the counting bar shows, from widest to narrowest level.
struct Fields {
  bool rate, remaining, elapsed, bar;
  std::size_t bar_columns = 0;
  int level() const { return rate ? 0 : remaining ? 1 : elapsed ? 2 : bar ? 3 : 4; }
};

Fields fields_of(const std::string& line) {
  Fields f{line.find("/s]") != std::string::npos, line.find('<') != std::string::npos,
           line.find('[') != std::string::npos, false};
  const auto first = line.find('|');
  const auto second = first == std::string::npos ? first : line.find('|', first + 1);
  f.bar = second != std::string::npos;
  if (f.bar) f.bar_columns = code_points(std::string_view(line).substr(first + 1, second - first - 1));
  return f;
}

TEST(BarFormat, FitsEveryWidthShrinkingTheBarFirstThenDroppingRateThenRemaining) {
  for (bool unicode : {true, false}) {
    auto l = counting_line();
    l.unicode = unicode;
    // Columns of each level's line without its bar, learnt from the widths that draw it.
    std::vector<std::size_t> fixed(5, 0);
    std::vector<Fields> at(201);
    for (std::size_t w = 10; w <= 200; ++w) {
      const std::string line = mproc::detail::format_bar(l, w);
      SCOPED_TRACE("width " + std::to_string(w) + ": '" + line + "'");
      const std::size_t cols = code_points(line);
      ASSERT_LE(cols, w - 1);
      ASSERT_EQ(mproc::detail::text_columns(line), cols);
      if (!unicode) {
        ASSERT_TRUE(all_ascii(line));
      }
      const Fields f = fields_of(line);
      at[w] = f;
      // Fields go in order: the rate before the remaining time before the elapsed time
      // before the bar.
      ASSERT_TRUE(!f.rate || f.remaining);
      ASSERT_TRUE(!f.remaining || f.elapsed);
      ASSERT_TRUE(!f.elapsed || f.bar);
      EXPECT_THAT(line, ::testing::StartsWith("counting"));
      if (f.bar) {
        // A drawn bar takes all the room there is, and never less than its minimum.
        ASSERT_GE(f.bar_columns, mproc::detail::min_bar_columns);
        ASSERT_EQ(cols, w - 1);
        fixed[f.level()] = cols - f.bar_columns;
      } else if (cols < w - 1) {
        fixed[f.level()] = cols;
      } else {
        // Cut: still the start of the barest line.
        EXPECT_THAT(std::string("counting:  45% 123/272 blocks"), ::testing::StartsWith(line));
      }
      if (w > 10) {
        ASSERT_LE(f.level(), at[w - 1].level()) << "a wider terminal shows less";
      }
    }
    for (int level = 0; level < 5; ++level)
      ASSERT_GT(fixed[level], 0u) << "no width in 10..200 drew level " << level;
    // A field is dropped only when the line keeping it does not fit even with the
    // narrowest bar: the bar shrinks first.
    for (std::size_t w = 10; w <= 200; ++w) {
      const int level = at[w].level();
      if (level == 0) continue;
      const std::size_t needs = fixed[level - 1] + (level - 1 < 4 ? mproc::detail::min_bar_columns : 0);
      EXPECT_GT(needs, w - 1) << "width " << w << " dropped to level " << level
                              << " though level " << level - 1 << " fits";
    }
    EXPECT_EQ(at[200].level(), 0);
  }
}

TEST(BarFormat, UnknownTotalFitsEveryWidthDroppingTheRateFirst) {
  auto l = counting_line();
  l.total.reset();
  const std::string full = "counting: 123 blocks [00:01, 98.4 blocks/s]";
  for (std::size_t w = 10; w <= 200; ++w) {
    const std::string line = mproc::detail::format_bar(l, w);
    SCOPED_TRACE("width " + std::to_string(w) + ": '" + line + "'");
    ASSERT_LE(code_points(line), w - 1);
    const bool rate = line.find("/s") != std::string::npos;
    const bool elapsed = line.find('[') != std::string::npos;
    ASSERT_TRUE(!rate || elapsed);
    ASSERT_EQ(rate, code_points(full) <= w - 1);
    if (!rate) {
      ASSERT_EQ(elapsed, code_points("counting: 123 blocks [00:01]") <= w - 1);
    }
    ASSERT_THAT(full, ::testing::StartsWith(line.substr(0, line.find(" ["))));
  }
}

TEST(BarFormat, WidthsAreTerminalColumns) {
  using mproc::detail::text_columns;
  EXPECT_EQ(text_columns("abc"), 3u);
  EXPECT_EQ(text_columns("\u2588\u258C"), 2u);      // 6 bytes, 2 columns
  EXPECT_EQ(text_columns("\u6570\u3048"), 4u);      // CJK: 2 columns each
  EXPECT_EQ(text_columns("e\u0301"), 1u);           // combining acute accent
  EXPECT_EQ(text_columns("\xff" "a"), 2u);          // a stray byte is one cell
  // A label of wide characters still fits, counted in columns.
  auto l = counting_line();
  l.label = "\u6570\u3048\u308B";  // 3 characters, 6 columns
  for (std::size_t w = 10; w <= 200; ++w) {
    const std::string line = mproc::detail::format_bar(l, w);
    ASSERT_LE(text_columns(line), w - 1) << "width " << w << ": " << line;
    if (w > 40) {
      ASSERT_EQ(text_columns(line), w - 1) << "width " << w << ": " << line;
    }
  }
}

// ---- the bar on a terminal ----------------------------------------------------------------

constexpr const char* kMarker = "[child done]";

struct ChildRun {
  std::string output;  ///< everything the child wrote to its stderr
  int status = -1;
  bool timed_out = false;
  double seconds = 0;  ///< from before the fork until the child's end marker arrived
};

/// The child's terminal and environment.
struct ChildSetup {
  bool terminal = true;       ///< stderr a pseudo-terminal, else a pipe
  unsigned short columns = 80;  ///< the terminal's window size (0: never set)
  /// Environment of the child: (name, value); a null value unsets the variable.
  std::vector<std::pair<const char*, const char*>> env = {
      {"COLUMNS", nullptr}, {"LC_ALL", "C.UTF-8"}};
};

/// Runs `body` in a forked child whose stderr (fd 2) is the slave side of a new
/// pseudo-terminal or the write end of a pipe, and collects what it writes there. The
/// child writes kMarker when `body` is done and waits for the parent to have read
/// everything up to it before it exits, so no output can be lost with the slave. The
/// terminal's output processing is off, so the bytes read are the bytes written (no
/// '\n' turned into "\r\n").
ChildRun run_with_stderr(const ChildSetup& setup, const std::function<bool()>& body) {
  ChildRun run;
  int reader = -1, writer = -1;
  if (setup.terminal) {
    // posix_openpt/grantpt/unlockpt/ptsname need no extra library (openpty may need -lutil).
    reader = ::posix_openpt(O_RDWR | O_NOCTTY);
    if (reader < 0 || ::grantpt(reader) != 0 || ::unlockpt(reader) != 0) {
      ADD_FAILURE() << "posix_openpt: " << std::strerror(errno);
      return run;
    }
    const char* name = ::ptsname(reader);
    writer = name ? ::open(name, O_RDWR | O_NOCTTY) : -1;
    termios t{};
    if (writer >= 0 && ::tcgetattr(writer, &t) == 0) {
      t.c_oflag &= ~static_cast<tcflag_t>(OPOST);
      ::tcsetattr(writer, TCSANOW, &t);
    }
    if (setup.columns > 0) {
      winsize ws{};
      ws.ws_col = setup.columns;
      ws.ws_row = 24;
      if (::ioctl(reader, TIOCSWINSZ, &ws) != 0) ADD_FAILURE() << "TIOCSWINSZ: " << std::strerror(errno);
    }
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
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(writer, 2);
    ::close(writer);
    ::close(reader);
    ::close(go[1]);
    for (const auto& [name, value] : setup.env) {
      if (value) ::setenv(name, value, 1);
      else ::unsetenv(name);
    }
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
  const auto deadline = start + 30s;
  bool released = false;
  for (;;) {
    if (!released && run.output.find(kMarker) != std::string::npos) {
      run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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

ChildRun run_with_stderr(bool terminal, const std::function<bool()>& body) {
  ChildSetup setup;
  setup.terminal = terminal;
  return run_with_stderr(setup, body);
}

bool exited_ok(const ChildRun& run) {
  return !run.timed_out && WIFEXITED(run.status) && WEXITSTATUS(run.status) == 0;
}

/// One stretch of drawn text, and the byte that ended it ('\r', '\n', or 0 at the end).
struct Piece {
  std::string text;
  char end = 0;
};

/// What the bars drew: the output before the end marker, cut at every '\r' and '\n'.
struct Drawn {
  std::string body;
  std::vector<Piece> pieces;
  std::size_t redraws = 0;  ///< '\r's: every draw starts with one

  explicit Drawn(const ChildRun& run) {
    body = run.output.substr(0, run.output.find(std::string("\n") + kMarker));
    Piece p;
    for (char c : body) {
      if (c == '\r' || c == '\n') {
        p.end = c;
        pieces.push_back(std::move(p));
        p = {};
        redraws += c == '\r';
      } else {
        p.text += c;
      }
    }
    pieces.push_back(std::move(p));
  }

  /// The widest piece, in code points.
  std::size_t widest() const {
    std::size_t w = 0;
    for (const auto& p : pieces) w = std::max(w, code_points(p.text));
    return w;
  }
  /// The last non-empty piece that contains `label`, or an empty one.
  Piece last_with(std::string_view label) const {
    for (auto it = pieces.rbegin(); it != pieces.rend(); ++it)
      if (it->text.find(label) != std::string::npos) return *it;
    return {};
  }
};

std::string trimmed(std::string s) {
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
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
  const Drawn drawn(run);
  const Piece last = drawn.last_with("map: ");
  // `.progress = true`: labelled "map", counting "items", at 80 columns.
  EXPECT_THAT(last.text, ::testing::StartsWith("map: 100%|\u2588\u2588"));
  EXPECT_THAT(last.text, HasSubstr("| 200/200 items [00:"));
  EXPECT_THAT(last.text, HasSubstr(" items/s]"));
  EXPECT_EQ(code_points(last.text), 79u);
  EXPECT_EQ(last.end, '\n') << "the final line does not end the line";
  EXPECT_LE(drawn.widest(), 79u);
  EXPECT_THAT(run.output, HasSubstr(kMarker));
}

TEST(ProgressBar, NothingWrittenWhenStderrIsAPipe) {
  const ChildRun run = run_with_stderr(false, map_with_bar);
  EXPECT_TRUE(exited_ok(run)) << "status " << run.status;
  // Only the child's own end marker: the map wrote nothing.
  EXPECT_EQ(run.output, std::string("\n") + kMarker + "\n");
}

TEST(ProgressBar, StandAloneBarWritesNothingWhenStderrIsAPipe) {
  const ChildRun run = run_with_stderr(false, [] {
    mproc::ProgressBar bar("generating", "MB", 50.0);
    for (int i = 0; i <= 20; ++i) {
      bar.set(2.5 * i);
      std::this_thread::sleep_for(10ms);
    }
    bar.close();
    mproc::ProgressBar unknown("reading", "files");
    unknown.update(3);
    return true;  // `unknown` closes in its destructor
  });
  EXPECT_TRUE(exited_ok(run)) << "status " << run.status;
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
  EXPECT_THAT(run.output, HasSubstr("200/200 items"));
  EXPECT_THAT(run.output, HasSubstr("150/150 items"));
  EXPECT_THAT(run.output, Not(HasSubstr("/120")));
}

/// The checks every drawn bar must pass on a terminal `columns` wide: no line wider
/// than columns - 1, and a final line for `label` that fills the line, shows `final_text`
/// and ends with '\n'.
void expect_bar(const ChildRun& run, std::size_t columns, const std::string& label,
                const std::string& final_text) {
  EXPECT_TRUE(exited_ok(run)) << "status " << run.status << ", output: " << run.output;
  const Drawn drawn(run);
  for (const auto& p : drawn.pieces)
    EXPECT_LE(code_points(p.text), columns - 1) << "a line wraps: '" << p.text << "'";
  ASSERT_GE(drawn.redraws, 2u) << "no first and final draw: " << run.output;
  const Piece last = drawn.last_with(label + ": ");
  EXPECT_THAT(last.text, ::testing::StartsWith(label + ": 100%|\u2588"));
  EXPECT_THAT(last.text, HasSubstr(final_text));
  EXPECT_EQ(code_points(last.text), columns - 1) << "'" << last.text << "'";
  EXPECT_EQ(last.end, '\n') << "the final line does not end the line";
  EXPECT_EQ(drawn.pieces.back().text, "") << "something follows the final line";
}

class BarWidth : public ::testing::TestWithParam<unsigned short> {};

TEST_P(BarWidth, PoolBarFitsTheTerminal) {
  const unsigned short columns = GetParam();
  ChildSetup setup;
  setup.columns = columns;
  const ChildRun run = run_with_stderr(setup, [] {
    mproc::Pool pool({.workers = 2, .backend = mproc::Backend::thread});
    auto r = pool.map(slow_square, mproc::range(0L, 300L),
                      {.chunksize = 4, .progress = mproc::ProgressOption::bar("squaring", "numbers")});
    return r.size() == 300 && r[299] == 299L * 299L;
  });
  expect_bar(run, columns, "squaring", "| 300/300 numbers [00:0");
  const Piece last = Drawn(run).last_with("squaring: ");
  if (columns >= 120) {
    EXPECT_THAT(last.text, HasSubstr("<00:00, "));  // remaining time and rate
    EXPECT_THAT(last.text, HasSubstr(" numbers/s]"));
  } else {
    EXPECT_THAT(last.text, Not(HasSubstr("numbers/s")));  // no room for the rate
  }
}

TEST_P(BarWidth, ProgressBarFitsTheTerminal) {
  const unsigned short columns = GetParam();
  ChildSetup setup;
  setup.columns = columns;
  const ChildRun run = run_with_stderr(setup, [] {
    mproc::ProgressBar bar("generating", "MB", 50.0);
    for (int i = 0; i < 20; ++i) {
      bar.set(0.5 + 2.45 * i);
      std::this_thread::sleep_for(15ms);
    }
    bar.set(50);
    return true;  // the destructor draws the final line
  });
  expect_bar(run, columns, "generating", "| 50/50 MB [00:0");
  const Drawn drawn(run);
  // Drawn while it ran, not only at the end: a fractional count at least once.
  EXPECT_THAT(drawn.body, ::testing::ContainsRegex("[0-9]\\.[0-9]+/50 MB"));
  if (columns >= 120) {
    EXPECT_THAT(drawn.last_with("generating: ").text, HasSubstr(" MB/s]"));
  }
}

INSTANTIATE_TEST_SUITE_P(Columns, BarWidth, ::testing::Values(50, 120),
                         [](const auto& p) { return std::to_string(p.param) + "_columns"; });

TEST(ProgressBar, ColumnsVariableWhenTheTerminalHasNoSize) {
  ChildSetup setup;
  setup.columns = 0;  // a fresh pseudo-terminal: 0x0, as a container's console may be
  setup.env = {{"COLUMNS", "50"}, {"LC_ALL", "C.UTF-8"}};
  const ChildRun run = run_with_stderr(setup, [] {
    winsize ws{};
    if (::ioctl(2, TIOCGWINSZ, &ws) != 0 || ws.ws_col != 0) return false;
    mproc::ProgressBar bar("generating", "MB", 50.0);
    for (int i = 0; i < 10; ++i) {
      bar.update(5);
      std::this_thread::sleep_for(10ms);
    }
    return true;
  });
  expect_bar(run, 50, "generating", "| 50/50 MB [00:0");
}

TEST(ProgressBar, FollowsAResizedTerminal) {
  ChildSetup setup;
  setup.columns = 120;
  const ChildRun run = run_with_stderr(setup, [] {
    mproc::ProgressBar bar("resizing", "steps", 100.0);
    bar.set(10);
    std::this_thread::sleep_for(150ms);
    bar.set(20);  // drawn at 120 columns
    winsize ws{};
    ws.ws_col = 60;
    ws.ws_row = 24;
    if (::ioctl(2, TIOCSWINSZ, &ws) != 0) return false;
    std::this_thread::sleep_for(150ms);
    bar.set(30);  // drawn at 60
    bar.set(100);
    bar.close();
    return true;
  });
  EXPECT_TRUE(exited_ok(run)) << "status " << run.status << ", output: " << run.output;
  const Drawn drawn(run);
  EXPECT_EQ(code_points(drawn.last_with("resizing:  20%").text), 119u) << run.output;
  const Piece at30 = drawn.last_with("resizing:  30%");
  EXPECT_EQ(code_points(trimmed(at30.text)), 59u) << run.output;
  const Piece last = drawn.last_with("resizing: 100%");
  EXPECT_EQ(code_points(last.text), 59u) << run.output;
  EXPECT_EQ(last.end, '\n');
}

TEST(ProgressBar, UnknownAndZeroTotalsCountWithoutABar) {
  const ChildRun run = run_with_stderr(true, [] {
    {
      mproc::ProgressBar bar("reading", "files");
      for (int i = 0; i < 7; ++i) bar.update();
    }
    mproc::ProgressBar empty("empty", "files", 0.0);
    empty.close();
    empty.update(5);  // after close(): nothing
    return true;
  });
  EXPECT_TRUE(exited_ok(run)) << "status " << run.status << ", output: " << run.output;
  const Drawn drawn(run);
  EXPECT_THAT(run.output, Not(HasSubstr("%")));
  const Piece reading = drawn.last_with("reading: ");
  EXPECT_THAT(reading.text, ::testing::StartsWith("reading: 7 files [00:00, "));
  EXPECT_EQ(reading.end, '\n');
  const Piece empty = drawn.last_with("empty: ");
  EXPECT_THAT(empty.text, ::testing::StartsWith("empty: 0 files [00:00, ? files/s]"));
  EXPECT_EQ(empty.end, '\n');
  EXPECT_THAT(run.output, Not(HasSubstr("5 files")));
  EXPECT_LE(drawn.widest(), 79u);
}

TEST(ProgressBar, HashesWhenTheLocaleIsNotUtf8) {
  ChildSetup setup;
  setup.env = {{"COLUMNS", nullptr}, {"LC_ALL", nullptr}, {"LC_CTYPE", "C"},
               {"LANG", "en_US.UTF-8"}};  // LC_CTYPE comes first
  const ChildRun run = run_with_stderr(setup, [] {
    mproc::ProgressBar bar("plain", "items", 10.0);
    bar.set(5);
    bar.close();
    return true;
  });
  EXPECT_TRUE(exited_ok(run)) << "status " << run.status << ", output: " << run.output;
  EXPECT_TRUE(all_ascii(run.output)) << run.output;
  const Piece last = Drawn(run).last_with("plain: ");
  EXPECT_THAT(last.text, ::testing::StartsWith("plain:  50%|####"));
  EXPECT_EQ(code_points(last.text), 79u);
}

TEST(ProgressBar, UpdatesFromSeveralThreadsAllCount) {
  const ChildRun run = run_with_stderr(true, [] {
    mproc::ProgressBar bar("counting", "items", 40000.0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&bar] {
        for (int i = 0; i < 10000; ++i) bar.update();
      });
    for (auto& t : threads) t.join();
    return true;
  });
  expect_bar(run, 80, "counting", "| 40000/40000 items [00:");
}

TEST(ProgressBar, AtMostAboutTenDrawsASecond) {
  // Two threads update as fast as they can for half a second: without the throttle this
  // draws hundreds of thousands of lines. Each draw starts with one '\r' (the terminal's
  // output processing is off), so the '\r's count the draws.
  const ChildRun run = run_with_stderr(true, [] {
    mproc::ProgressBar bar("spinning", "items");
    const auto until = std::chrono::steady_clock::now() + 500ms;
    auto spin = [&] {
      while (std::chrono::steady_clock::now() < until) bar.update();
    };
    std::thread other(spin);
    spin();
    other.join();
    return true;
  });
  EXPECT_TRUE(exited_ok(run)) << "status " << run.status;
  const Drawn drawn(run);
  // The first draw, one per 100 ms, the final one; generous slack on the upper side,
  // and the lower side only asks for a redraw between the first and the last.
  EXPECT_LE(static_cast<double>(drawn.redraws), 10 * run.seconds + 3)
      << "in " << run.seconds << " s";
  EXPECT_GE(drawn.redraws, 3u);
  EXPECT_EQ(drawn.last_with("spinning: ").end, '\n');
}

}  // namespace
