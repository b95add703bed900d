// Progress of a map: a callback that receives (done, total, elapsed), or a live progress
// bar on stderr. Every map variant of Pool (map, map_async, starmap, starmap_async, imap,
// imap_unordered, map_reduce) and of the executors accepts one in its options:
//
//   pool.map(f, inputs, {.progress = true});                       // bar, if stderr is a tty
//   pool.map(f, inputs, {.progress = mproc::ProgressOption::bar("counting", "blocks")});
//   pool.map(f, inputs, {.progress = [](const mproc::Progress& p) { log(p.done); }});
//
// and a program's own phases get the same bar from ProgressBar:
//
//   mproc::ProgressBar bar("generating", "MB", 50.0);
//   while (...) bar.update(chunk_mb);                             // from any thread
//   bar.close();                                                  // or let it go out of scope
//
// The callback runs in a pool thread (a thread-pool worker, the process pool's
// dispatcher, or for an mpi pool the thread waiting on the call; an imap's final report
// may come from the consuming thread), never
// concurrently with itself, at most about every 50 ms while items
// finish, and once more at the end with every item counted. It must not block for long;
// an exception it throws is reported like a done callback's (set_callback_error_handler).
// Once an imap stream is destroyed, its callback is not called again.
//
// The bar is drawn as tqdm draws it, on one line that is rewritten in place:
//
//   counting:  45%|█████▌      | 123/272 blocks [00:01<00:01, 98.4 blocks/s]
//   counting: 123 blocks [00:01, 98.4 blocks/s]               (total unknown, or 0)
//
// label, percentage, bar, count and unit, elapsed<remaining, and the mean rate since the
// start (counts from 100000 and rates in k, M, G; under 1 per second as seconds per unit).
// The line fills the terminal's width minus one column, so the cursor never wraps: the
// width is read at every redraw (TIOCGWINSZ on stderr, else $COLUMNS, else 80). A
// narrow terminal shrinks the bar first, down to min_bar_columns, then drops the rate,
// then the remaining time, then the elapsed time, then the bar; what still does not fit
// is cut. The bar uses Unicode eighth blocks when the locale's charset is UTF-8 (the
// first of $LC_ALL, $LC_CTYPE, $LANG that is set names UTF-8 or utf8), '#' otherwise. It
// is redrawn at most 10 times a second, and a last time when the map or the ProgressBar
// ends, that line ending in '\n'. It is drawn only when stderr is a terminal; otherwise
// nothing is written.
#pragma once

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "export.hpp"

namespace mproc {

/// A snapshot of a map's progress.
struct Progress {
  std::size_t done = 0;                 ///< items finished (successfully or not)
  std::optional<std::size_t> total{};   ///< items in all, when the input's size is known
  std::chrono::nanoseconds elapsed{0};  ///< since the call started
};

/// What a map reports its progress to: nothing (the default), a bar on stderr (`true`, or
/// bar(label, unit)), or a callback taking `const Progress&`.
class ProgressOption {
 public:
  ProgressOption() = default;
  /// `true`: a bar labelled "map" that counts "items"; `false`: nothing.
  ProgressOption(bool bar) : bar_(bar) {}  // NOLINT: implicit, for `.progress = true`
  /// Reports to `callback` (see the top of this header for when and where it runs).
  template <class F>
    requires(std::invocable<F&, const Progress&> && !std::same_as<std::decay_t<F>, bool> &&
             !std::same_as<std::decay_t<F>, ProgressOption>)
  ProgressOption(F callback)  // NOLINT: implicit, for `.progress = [](auto& p) {...}`
      : callback_(std::move(callback)) {}

  /// A bar on stderr (when it is a terminal) that reads `label: 45%|...| 123/272 unit`.
  /// An empty label drops the "label: " prefix, an empty unit the word after the count.
  /// Does not block. Throws std::bad_alloc only.
  static ProgressOption bar(std::string label, std::string unit = "items") {
    ProgressOption o(true);
    o.label_ = std::move(label);
    o.unit_ = std::move(unit);
    return o;
  }

  /// Whether a bar is asked for.
  bool bar() const noexcept { return bar_; }
  /// The bar's label ("map" unless bar(label, unit) named one).
  const std::string& label() const noexcept { return label_; }
  /// The bar's unit ("items" unless bar(label, unit) named one).
  const std::string& unit() const noexcept { return unit_; }
  const std::function<void(const Progress&)>& callback() const noexcept { return callback_; }
  explicit operator bool() const noexcept { return bar_ || callback_ != nullptr; }

 private:
  bool bar_ = false;
  std::string label_ = "map";
  std::string unit_ = "items";
  std::function<void(const Progress&)> callback_;
};

/// A progress bar on stderr for a program's own work (reading, generating, ...), drawn
/// like a map's bar (see the top of this header): the count starts at 0 and is raised by
/// update() or set() from any thread. The bar is drawn at once, redrawn at most 10 times a
/// second as the count changes, and drawn a last time, ending its line, by close() or the
/// destructor. When stderr is not a terminal, nothing is ever written. Counts may be
/// fractional (megabytes); whole counts are shown without decimals. A count above the
/// total is shown as with an unknown total. Movable, not copyable.
class MPROC_API ProgressBar {
 public:
  /// A bar labelled `label` counting `unit`, out of `total` (nullopt or 0: unknown, shown
  /// without percentage, bar or remaining time). Writes its first line when stderr is a
  /// terminal. Throws std::bad_alloc only.
  explicit ProgressBar(std::string label, std::string unit = "items",
                       std::optional<double> total = std::nullopt);
  ProgressBar(ProgressBar&& other) noexcept;
  /// Closes this bar, then takes over `other`'s.
  ProgressBar& operator=(ProgressBar&& other) noexcept;
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  /// close().
  ~ProgressBar();

  /// Adds `n` to the count. Redraws when the last draw is 100 ms old; a thread that finds
  /// another drawing does not wait for it. Thread-safe. Does nothing after close().
  void update(double n = 1) noexcept;
  /// Sets the count to `n` (it may go down). Otherwise as update(). Thread-safe.
  void set(double n) noexcept;
  /// Changes the total (nullopt or 0: unknown); shown at the next draw. Thread-safe.
  void set_total(std::optional<double> total) noexcept;
  /// Draws the final line, ending it with '\n', and stops the bar; later calls of any
  /// method do nothing. Blocks while another thread draws. Thread-safe.
  void close() noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;  // null when stderr is not a terminal, or moved from
};

namespace detail {

/// A bar narrower than this shows nothing the percentage beside it does not; the line
/// drops fields instead of shrinking the bar below it.
inline constexpr std::size_t min_bar_columns = 4;

/// What one line of a bar shows.
struct BarLine {
  std::string_view label;
  std::string_view unit;
  double n = 0;                 ///< the count so far
  std::optional<double> total;  ///< nullopt, 0 or less than n: drawn as unknown
  double elapsed = 0;           ///< seconds since the start
  bool unicode = true;          ///< eighth blocks, else '#'
};

/// The text of `line` (no '\r', no padding) for a terminal `columns` wide: at most
/// columns - 1 terminal columns, fields dropped as the top of this header says. Pure.
/// Throws std::bad_alloc only.
MPROC_API std::string format_bar(const BarLine& line, std::size_t columns);

/// Terminal columns of UTF-8 text: 0 for combining marks, 2 for East Asian wide and
/// emoji code points, 1 for others (and for each byte that is not valid UTF-8).
MPROC_API std::size_t text_columns(std::string_view utf8) noexcept;

/// The terminal state of one bar (implemented in progress.cpp): where it draws, whether
/// in Unicode, how wide the last line was, when it was drawn.
class BarDrawer;

/// Counts finished items of one map call and reports them, throttled. add() may be called
/// from several threads at once.
class MPROC_API ProgressReporter {
 public:
  ProgressReporter(ProgressOption option, std::optional<std::size_t> total);
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;
  ~ProgressReporter();

  /// `n` more items finished.
  void add(std::size_t n) noexcept {
    const std::size_t done = done_.fetch_add(n, std::memory_order_relaxed) + n;
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    if (now >= next_report_.load(std::memory_order_relaxed)) report(done, false);
  }
  /// The total became known (an unsized input was exhausted).
  void set_total(std::size_t total) noexcept;
  /// Reports the final count once (later calls do nothing).
  void finish() noexcept;
  /// No further reports at all (the consumer went away). A bar ends its line at the
  /// count reached; a callback is not called again.
  void stop() noexcept;

 private:
  void report(std::size_t done, bool final) noexcept;

  ProgressOption option_;
  std::optional<std::size_t> total_;
  const std::chrono::steady_clock::time_point start_;
  const std::chrono::steady_clock::duration report_every_;
  std::unique_ptr<BarDrawer> drawer_;  // null: no bar (stderr is no terminal, or a callback)
  std::atomic<std::size_t> done_{0};
  std::atomic<std::chrono::steady_clock::rep> next_report_{0};
  std::mutex mutex_;  // one report at a time
  bool finished_ = false;
};

/// A reporter for `option` (null when it asks for nothing). A bar is only made when
/// stderr is a terminal.
MPROC_API std::shared_ptr<ProgressReporter> make_progress(const ProgressOption& option,
                                                          std::optional<std::size_t> total);

}  // namespace detail
}  // namespace mproc
