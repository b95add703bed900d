#include "mproc/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <string>

#include <fmt/format.h>

#include "mproc/future.hpp"
#include "platform.hpp"

namespace mproc::detail {
namespace {

constexpr auto report_every = std::chrono::milliseconds(50);
constexpr auto draw_every = std::chrono::milliseconds(100);

std::string human_rate(double per_second) {
  if (per_second >= 1e6) return fmt::format("{:.1f}M/s", per_second / 1e6);
  if (per_second >= 1e3) return fmt::format("{:.1f}k/s", per_second / 1e3);
  return fmt::format("{:.1f}/s", per_second);
}

std::string clock_text(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

}  // namespace

ProgressReporter::ProgressReporter(ProgressOption option, std::optional<std::size_t> total)
    : option_(std::move(option)),
      total_(total),
      start_(std::chrono::steady_clock::now()),
      tty_(option_.bar() && ::isatty(2) == 1) {
  next_report_.store((start_ + report_every).time_since_epoch().count(),
                     std::memory_order_relaxed);
}

ProgressReporter::~ProgressReporter() { finish(); }

void ProgressReporter::set_total(std::size_t total) noexcept {
  std::lock_guard lock(mutex_);
  total_ = total;
}

void ProgressReporter::finish() noexcept { report(done_.load(std::memory_order_relaxed), true); }

void ProgressReporter::stop() noexcept {
  std::lock_guard lock(mutex_);
  finished_ = true;
}

void ProgressReporter::report(std::size_t done, bool final) noexcept {
  std::unique_lock lock(mutex_, std::defer_lock);
  if (final) {
    lock.lock();
  } else if (!lock.try_lock()) {
    return;  // another thread is reporting right now; the next add() catches up
  }
  if (finished_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!final && now.time_since_epoch().count() < next_report_.load(std::memory_order_relaxed))
    return;
  next_report_.store((now + report_every).time_since_epoch().count(), std::memory_order_relaxed);
  // Read the count under the lock: a caller's own count may be older than one already
  // reported by another thread, and reports must never go backwards.
  done = done_.load(std::memory_order_relaxed);
  if (final) finished_ = true;
  if (total_ && done > *total_) done = *total_;
  const Progress p{done, total_, now - start_};
  if (option_.callback()) {
    try {
      option_.callback()(p);
    } catch (...) {
      report_callback_error(std::current_exception());
    }
  }
  if (tty_) draw_bar(p, final);
}

void ProgressReporter::draw_bar(const Progress& p, bool final) noexcept {
  const auto now = std::chrono::steady_clock::now();
  if (!final && now - last_draw_ < draw_every) return;
  last_draw_ = now;
  try {
    const double secs = std::chrono::duration<double>(p.elapsed).count();
    const double rate = secs > 0 ? static_cast<double>(p.done) / secs : 0.0;
    std::string line;
    if (p.total && *p.total > 0) {
      const double frac = std::min(1.0, static_cast<double>(p.done) / static_cast<double>(*p.total));
      constexpr int width = 30;
      const int filled = static_cast<int>(frac * width);
      const std::string eta =
          rate > 0 ? clock_text(static_cast<double>(*p.total - std::min(p.done, *p.total)) / rate)
                   : "?";
      line = fmt::format("\r{:>3.0f}% [{}{}] {}/{} {} ETA {}", frac * 100,
                         std::string(static_cast<std::size_t>(filled), '#'),
                         std::string(static_cast<std::size_t>(width - filled), '.'), p.done,
                         *p.total, human_rate(rate), final ? clock_text(0) : eta);
    } else {
      line = fmt::format("\r{} done {} {}", p.done, human_rate(rate), clock_text(secs));
    }
    // Pad over a longer previous line, so no stale characters remain.
    const std::size_t len = line.size();
    if (len < bar_width_) line.append(bar_width_ - len, ' ');
    bar_width_ = len;
    if (final) line += '\n';
    write_all(2, line);
  } catch (...) {
    // Formatting failed (out of memory): a progress bar is not worth failing a map for.
  }
}

std::shared_ptr<ProgressReporter> make_progress(const ProgressOption& option,
                                                std::optional<std::size_t> total) {
  if (!option.callback() && !(option.bar() && ::isatty(2) == 1)) return nullptr;
  return std::make_shared<ProgressReporter>(option, total);
}

}  // namespace mproc::detail
