// Progress reports and the bar they draw. One formatter (format_bar) and one drawer
// (BarDrawer: terminal width, padding, throttle) serve both a map's ProgressReporter and a
// program's ProgressBar. The format and the order in which fields give way follow tqdm's
// format_meter (tqdm/std.py), which is what users of a Python pool already read.
#include "mproc/progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "mproc/callback_error.hpp"
#include "os/platform.hpp"

namespace mproc::detail {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto report_every = std::chrono::milliseconds(50);
constexpr auto draw_every = std::chrono::milliseconds(100);

/// tqdm's format_sizeof: three significant digits and a k/M/G... suffix ("98.4", "1.23k").
std::string sizeof_text(double x) {
  static constexpr std::array<const char*, 8> suffixes = {"", "k", "M", "G", "T", "P", "E", "Z"};
  for (const char* suffix : suffixes) {
    if (std::abs(x) < 999.5) {
      if (std::abs(x) < 9.995) return fmt::format("{:.2f}{}", x, suffix);
      if (std::abs(x) < 99.95) return fmt::format("{:.1f}{}", x, suffix);
      return fmt::format("{:.0f}{}", x, suffix);
    }
    x /= 1000;
  }
  return fmt::format("{:.1f}Y", x);
}

/// A count: whole numbers exactly, unless `scaled` (the counts run into six digits).
std::string count_text(double x, bool scaled) {
  if (!scaled && x == std::floor(x)) return fmt::format("{:.0f}", x);
  return sizeof_text(x);
}

/// tqdm's format_interval: "MM:SS", or "H:MM:SS" from an hour on; seconds truncated.
std::string clock_text(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  if (seconds >= 1e9) return "?";  // a rate so slow that the estimate means nothing
  const auto s = static_cast<long long>(seconds);
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{:02}:{:02}", s / 60, s % 60);
}

/// "98.4 blocks/s"; under one a second tqdm's inverse, "2.00 s/MB"; "? blocks/s" at first.
std::string rate_text(double rate, std::string_view unit) {
  const std::string_view u = unit.empty() ? std::string_view("it") : unit;
  if (!(rate > 0)) return fmt::format("? {}/s", u);
  if (rate < 1) return fmt::format("{} s/{}", sizeof_text(1 / rate), u);
  return fmt::format("{} {}/s", sizeof_text(rate), u);
}

/// Length in bytes of the UTF-8 sequence starting with `lead` (0: not a lead byte).
std::size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

/// Width of one code point, after Markus Kuhn's wcwidth (the ranges that matter for
/// labels: combining marks, CJK, Hangul, fullwidth forms, emoji). wcwidth(3) itself is
/// no use here: it answers by the program's locale, which is "C" unless it called
/// setlocale.
std::size_t code_point_columns(char32_t c) {
  if ((c >= 0x0300 && c <= 0x036F) || (c >= 0x1AB0 && c <= 0x1AFF) ||
      (c >= 0x1DC0 && c <= 0x1DFF) || (c >= 0x20D0 && c <= 0x20FF) ||
      (c >= 0xFE20 && c <= 0xFE2F) || c == 0x200B || c == 0x200C || c == 0x200D)
    return 0;
  if ((c >= 0x1100 && c <= 0x115F) || (c >= 0x2E80 && c <= 0x303E) ||
      (c >= 0x3041 && c <= 0x33FF) || (c >= 0x3400 && c <= 0x4DBF) ||
      (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xA000 && c <= 0xA4CF) ||
      (c >= 0xAC00 && c <= 0xD7A3) || (c >= 0xF900 && c <= 0xFAFF) ||
      (c >= 0xFE30 && c <= 0xFE4F) || (c >= 0xFF00 && c <= 0xFF60) ||
      (c >= 0xFFE0 && c <= 0xFFE6) || (c >= 0x1F300 && c <= 0x1F64F) ||
      (c >= 0x1F900 && c <= 0x1F9FF) || (c >= 0x20000 && c <= 0x3FFFD))
    return 2;
  return 1;
}

/// Decodes the code point at `s[i]`, its byte length in `len` (1 for a stray byte).
char32_t decode_at(std::string_view s, std::size_t i, std::size_t& len) {
  const auto lead = static_cast<unsigned char>(s[i]);
  len = utf8_length(lead);
  if (len <= 1 || i + len > s.size()) {
    len = 1;
    return lead;  // ASCII, or a stray byte the terminal shows as one cell
  }
  char32_t c = lead & (0x7F >> len);
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) {
      len = 1;
      return lead;
    }
    c = (c << 6) | (b & 0x3F);
  }
  return c;
}

/// The longest prefix of `s` at most `columns` wide, cut between code points.
std::string cut_to_columns(std::string_view s, std::size_t columns) {
  std::size_t used = 0, i = 0;
  while (i < s.size()) {
    std::size_t len = 1;
    const std::size_t w = code_point_columns(decode_at(s, i, len));
    if (used + w > columns) break;
    used += w;
    i += len;
  }
  return std::string(s.substr(0, i));
}

/// `cells` columns of bar, `frac` (0..1) of them filled: in eighths with Unicode blocks
/// (tqdm's UTF charset), in whole cells of '#' otherwise.
std::string bar_text(double frac, std::size_t cells, bool unicode) {
  std::string out;
  if (!unicode) {
    const auto full = std::min(cells, static_cast<std::size_t>(frac * static_cast<double>(cells)));
    out.append(full, '#');
    out.append(cells - full, ' ');
    return out;
  }
  static constexpr std::array<const char*, 8> eighths = {
      " ", "\u258F", "\u258E", "\u258D", "\u258C", "\u258B", "\u258A", "\u2589"};
  const auto filled =
      std::min(cells * 8, static_cast<std::size_t>(frac * static_cast<double>(cells * 8)));
  const std::size_t full = filled / 8;
  for (std::size_t i = 0; i < full; ++i) out += "\u2588";
  if (full < cells) {
    out += eighths[filled % 8];
    out.append(cells - full - 1, ' ');
  }
  return out;
}

/// The terminal's width: stderr's window size, else $COLUMNS, else 80. A pseudo-terminal
/// nobody sized reports 0 columns (a container's console, a CI runner), hence the rest.
std::size_t terminal_columns() noexcept {
  winsize ws{};
  if (::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* env = std::getenv("COLUMNS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0 && v < 100000) return static_cast<std::size_t>(v);
  }
  return 80;
}

/// Whether the locale's charset is UTF-8, judged as setlocale(LC_CTYPE, "") would pick
/// the locale (the first of LC_ALL, LC_CTYPE, LANG that is set and not empty) but
/// without calling it: the program's own locale is its business.
bool locale_is_utf8() noexcept {
  for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    std::string lower;
    for (const char* p = v; *p; ++p)
      lower += static_cast<char>(std::tolower(static_cast<unsigned char>(*p)));
    return lower.find("utf-8") != std::string::npos || lower.find("utf8") != std::string::npos;
  }
  return false;
}

}  // namespace

std::size_t text_columns(std::string_view utf8) noexcept {
  std::size_t columns = 0;
  for (std::size_t i = 0, len = 1; i < utf8.size(); i += len)
    columns += code_point_columns(decode_at(utf8, i, len));
  return columns;
}

std::string format_bar(const BarLine& line, std::size_t columns) {
  const std::size_t room = columns > 0 ? columns - 1 : 0;
  const double n = line.n >= 0 ? line.n : 0;  // also NaN
  const bool known = line.total && *line.total > 0 && n <= *line.total;
  const double rate = line.elapsed > 0 && n > 0 ? n / line.elapsed : 0;
  const std::string prefix = line.label.empty() ? "" : fmt::format("{}: ", line.label);
  const std::string unit = line.unit.empty() ? "" : fmt::format(" {}", line.unit);
  const std::string elapsed = clock_text(line.elapsed);
  const std::string rate_field = rate_text(rate, line.unit);

  if (!known) {
    const std::string count = count_text(n, n >= 1e5) + unit;
    for (const std::string& candidate :
         {fmt::format("{}{} [{}, {}]", prefix, count, elapsed, rate_field),
          fmt::format("{}{} [{}]", prefix, count, elapsed), prefix + count})
      if (text_columns(candidate) <= room) return candidate;
    return cut_to_columns(prefix + count, room);
  }

  const double total = *line.total;
  const double frac = n / total;
  const bool scaled = total >= 1e5;
  const std::string count = count_text(n, scaled) + "/" + count_text(total, scaled) + unit;
  const std::string remaining = rate > 0 ? clock_text((total - n) / rate) : "?";
  // Division of the exact product: floor(100 * 29 / 100) is 29, floor(0.29 * 100) is 28.
  const auto percent = static_cast<int>(std::min(100.0, std::floor(n * 100 / total)));
  const std::string left = fmt::format("{}{:3d}%|", prefix, percent);
  // What follows the bar, widest first: each drops one more field.
  const std::array<std::string, 4> rights = {
      fmt::format("| {} [{}<{}, {}]", count, elapsed, remaining, rate_field),
      fmt::format("| {} [{}<{}]", count, elapsed, remaining),
      fmt::format("| {} [{}]", count, elapsed),
      fmt::format("| {}", count),
  };
  const std::size_t left_columns = text_columns(left);
  for (const std::string& right : rights) {
    const std::size_t fixed = left_columns + text_columns(right);
    if (fixed + min_bar_columns <= room)
      return left + bar_text(frac, room - fixed, line.unicode) + right;
  }
  const std::string bare = fmt::format("{}{:3d}% {}", prefix, percent, count);
  return text_columns(bare) <= room ? bare : cut_to_columns(bare, room);
}

/// One bar's line on stderr. Callers serialize draw().
class BarDrawer {
 public:
  BarDrawer(std::string label, std::string unit)
      : label_(std::move(label)), unit_(std::move(unit)), unicode_(locale_is_utf8()) {}

  /// Rewrites the line, unless it was drawn less than draw_every before `now` and this
  /// is not the `final` draw, which ends the line.
  void draw(double n, std::optional<double> total, Clock::duration elapsed, Clock::time_point now,
            bool final) noexcept {
    if (!final && drawn_ && now - last_draw_ < draw_every) return;
    drawn_ = true;
    last_draw_ = now;
    try {
      const std::size_t columns = terminal_columns();
      const std::string text = format_bar(
          {label_, unit_, n, total, std::chrono::duration<double>(elapsed).count(), unicode_},
          columns);
      const std::size_t width = text_columns(text);
      std::string out = "\r" + text;
      // Blank what is left of a longer previous line, but never past the last column
      // but one: a line that reaches the last column wraps the cursor on most terminals.
      const std::size_t pad_to = std::min(last_width_, columns > 0 ? columns - 1 : 0);
      if (width < pad_to) out.append(pad_to - width, ' ');
      last_width_ = final ? 0 : width;
      if (final) out += '\n';
      write_all(2, out);
    } catch (...) {
      // Formatting failed (out of memory): a progress bar is not worth failing work for.
    }
  }

 private:
  const std::string label_;
  const std::string unit_;
  const bool unicode_;
  bool drawn_ = false;
  Clock::time_point last_draw_{};
  std::size_t last_width_ = 0;  // columns of text now on the line
};

ProgressReporter::ProgressReporter(ProgressOption option, std::optional<std::size_t> total)
    : option_(std::move(option)),
      total_(total),
      start_(Clock::now()),
      // A bar alone needs no report it would not draw.
      report_every_(option_.callback() ? Clock::duration(report_every) : Clock::duration(draw_every)),
      drawer_(option_.bar() && ::isatty(2) == 1
                  ? std::make_unique<BarDrawer>(option_.label(), option_.unit())
                  : nullptr) {
  next_report_.store((start_ + report_every_).time_since_epoch().count(),
                     std::memory_order_relaxed);
  if (drawer_) {
    const auto as_double = [](std::optional<std::size_t> t) -> std::optional<double> {
      if (t) return static_cast<double>(*t);
      return std::nullopt;
    };
    drawer_->draw(0, as_double(total_), Clock::duration(0), start_, false);
  }
}

ProgressReporter::~ProgressReporter() { finish(); }

void ProgressReporter::set_total(std::size_t total) noexcept {
  std::lock_guard lock(mutex_);
  total_ = total;
}

void ProgressReporter::finish() noexcept { report(done_.load(std::memory_order_relaxed), true); }

void ProgressReporter::stop() noexcept {
  std::lock_guard lock(mutex_);
  if (!finished_ && drawer_) {
    // End the bar's line where it stands, so that what the program writes next to stderr
    // starts on a line of its own.
    const auto now = Clock::now();
    std::size_t done = done_.load(std::memory_order_relaxed);
    if (total_ && done > *total_) done = *total_;
    std::optional<double> total;
    if (total_) total = static_cast<double>(*total_);
    drawer_->draw(static_cast<double>(done), total, now - start_, now, true);
  }
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
  const auto now = Clock::now();
  if (!final && now.time_since_epoch().count() < next_report_.load(std::memory_order_relaxed))
    return;
  next_report_.store((now + report_every_).time_since_epoch().count(), std::memory_order_relaxed);
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
  if (drawer_) {
    std::optional<double> total;
    if (total_) total = static_cast<double>(*total_);
    drawer_->draw(static_cast<double>(done), total, p.elapsed, now, final);
  }
}

std::shared_ptr<ProgressReporter> make_progress(const ProgressOption& option,
                                                std::optional<std::size_t> total) {
  if (!option.callback() && !(option.bar() && ::isatty(2) == 1)) return nullptr;
  return std::make_shared<ProgressReporter>(option, total);
}

}  // namespace mproc::detail

namespace mproc {

struct ProgressBar::Impl {
  Impl(std::string label, std::string unit, std::optional<double> t)
      : drawer(std::move(label), std::move(unit)), total(t) {}

  /// Hands the count to the drawer, which skips a draw that is not due and is not
  /// `final`. The caller holds `mutex`.
  void draw(detail::Clock::time_point now, bool final) noexcept {
    next_draw.store((now + detail::draw_every).time_since_epoch().count(),
                    std::memory_order_relaxed);
    drawer.draw(n.load(std::memory_order_relaxed), total, now - start, now, final);
  }

  /// After a change of the count: a draw when one is due and no other thread is drawing.
  void changed() noexcept {
    const auto now = detail::Clock::now();
    if (now.time_since_epoch().count() < next_draw.load(std::memory_order_relaxed)) return;
    std::unique_lock lock(mutex, std::try_to_lock);
    if (lock.owns_lock() && !closed) draw(now, false);
  }

  detail::BarDrawer drawer;            // guarded by mutex
  const detail::Clock::time_point start = detail::Clock::now();
  std::atomic<double> n{0};
  // When the next draw is due: lets update() skip the mutex between draws.
  std::atomic<detail::Clock::rep> next_draw{0};
  std::mutex mutex;
  std::optional<double> total;  // guarded by mutex
  bool closed = false;          // guarded by mutex
};

ProgressBar::ProgressBar(std::string label, std::string unit, std::optional<double> total) {
  if (::isatty(2) != 1) return;
  impl_ = std::make_unique<Impl>(std::move(label), std::move(unit), total);
  std::lock_guard lock(impl_->mutex);
  impl_->draw(impl_->start, false);
}

ProgressBar::ProgressBar(ProgressBar&& other) noexcept = default;

ProgressBar& ProgressBar::operator=(ProgressBar&& other) noexcept {
  if (this != &other) {
    close();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

ProgressBar::~ProgressBar() { close(); }

void ProgressBar::update(double n) noexcept {
  if (!impl_) return;
  impl_->n.fetch_add(n, std::memory_order_relaxed);
  impl_->changed();
}

void ProgressBar::set(double n) noexcept {
  if (!impl_) return;
  impl_->n.store(n, std::memory_order_relaxed);
  impl_->changed();
}

void ProgressBar::set_total(std::optional<double> total) noexcept {
  if (!impl_) return;
  std::lock_guard lock(impl_->mutex);
  impl_->total = total;
}

void ProgressBar::close() noexcept {
  if (!impl_) return;
  std::lock_guard lock(impl_->mutex);
  if (impl_->closed) return;
  impl_->closed = true;
  impl_->draw(detail::Clock::now(), true);
}

}  // namespace mproc
