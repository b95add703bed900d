// Progress of a map: a callback that receives (done, total, elapsed), or a live progress
// bar on stderr. Every map variant of Pool (map, map_async, starmap, starmap_async, imap,
// imap_unordered, map_reduce) and of the executors accepts one in its options:
//
//   pool.map(f, inputs, {.progress = true});                       // bar, if stderr is a tty
//   pool.map(f, inputs, {.progress = [](const mproc::Progress& p) { log(p.done); }});
//
// The callback runs in a pool thread (a thread-pool worker, the process pool's
// dispatcher, or for an mpi pool the thread waiting on the call; an imap's final report
// may come from the consuming thread), never
// concurrently with itself, at most about every 50 ms while items
// finish, and once more at the end with every item counted. It must not block for long;
// an exception it throws is reported like a done callback's (set_callback_error_handler).
// Once an imap stream is destroyed, its callback is not called again.
// The bar (counts, percentage, rate, ETA) is redrawn at most 10 times a second and is
// drawn only when stderr is a terminal; otherwise nothing is written.
#pragma once

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
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

/// What a map reports its progress to: nothing (the default), a bar on stderr (`true`),
/// or a callback taking `const Progress&`.
class ProgressOption {
 public:
  ProgressOption() = default;
  ProgressOption(bool bar) : bar_(bar) {}  // NOLINT: implicit, for `.progress = true`
  template <class F>
    requires(std::invocable<F&, const Progress&> && !std::same_as<std::decay_t<F>, bool> &&
             !std::same_as<std::decay_t<F>, ProgressOption>)
  ProgressOption(F callback)  // NOLINT: implicit, for `.progress = [](auto& p) {...}`
      : callback_(std::move(callback)) {}

  bool bar() const noexcept { return bar_; }
  const std::function<void(const Progress&)>& callback() const noexcept { return callback_; }
  explicit operator bool() const noexcept { return bar_ || callback_ != nullptr; }

 private:
  bool bar_ = false;
  std::function<void(const Progress&)> callback_;
};

namespace detail {

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
  /// No further reports at all (the consumer went away).
  void stop() noexcept;

 private:
  void report(std::size_t done, bool final) noexcept;
  void draw_bar(const Progress& p, bool final) noexcept;

  ProgressOption option_;
  std::optional<std::size_t> total_;
  const std::chrono::steady_clock::time_point start_;
  const bool tty_;
  std::atomic<std::size_t> done_{0};
  std::atomic<std::chrono::steady_clock::rep> next_report_{0};
  std::mutex mutex_;  // one report at a time
  bool finished_ = false;
  std::size_t bar_width_ = 0;
  std::chrono::steady_clock::time_point last_draw_{};
};

/// A reporter for `option` (null when it asks for nothing). A bar is only made when
/// stderr is a terminal.
MPROC_API std::shared_ptr<ProgressReporter> make_progress(const ProgressOption& option,
                                                          std::optional<std::size_t> total);

}  // namespace detail
}  // namespace mproc
