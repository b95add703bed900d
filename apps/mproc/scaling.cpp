// `mproc scaling [--max-jobs N] [--repeat R] [--html FILE] [--json] -- COMMAND...`: how a
// command speeds up with more workers. The command is an mproc compute subcommand, run
// with `-j J` added, or any command line with `{jobs}` in it, run with J put there; it
// runs R times at each J = 1..N, each run a fresh process whose wall time is measured
// from fork to reaping. Per J: the least, median and greatest time, the speed-up (median
// at 1 worker / median at J) and the efficiency (speed-up / J), as a table, as JSON, and
// as a self-contained HTML page of three SVG charts. It is seed 004's `%%time` of
// Pool(1..N) and its matplotlib plot, done once for any command.
//
// The rounds interleave (J = 1..N, then again, R times), so that a change in the
// machine's load spreads over every J instead of falling on one. A run's stdout goes to
// /dev/null and its stderr to a memfd, so a chatty command costs the run what writing to
// a file costs, never what a terminal does; the end of the stderr of a failing run is
// quoted in the one error line. A failing run (exit status other than 0, or a signal)
// stops everything: no table, no JSON and no page then.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "commands.hpp"
#include "compute.hpp"
#include "html.hpp"
#include "run_jobs.hpp"
#include "text.hpp"
#include <mproc/cpu_count.hpp>

namespace mproc::cli {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view jobs_mark = "{jobs}";
/// The compute subcommands: they take -j and do work worth timing.
constexpr std::string_view compute_subcommands[] = {"wordcount", "countlines", "pi", "dot",
                                                    "rangecount"};
/// -j's own limit (compute.cpp): the thread pool's.
constexpr std::uint64_t max_jobs_limit = 4096;
constexpr std::uint64_t max_repeat = 1000;
/// How much of a failing run's stderr is kept to quote from.
constexpr std::size_t stderr_tail = 4096;

struct Options {
  unsigned max_jobs = 0;  // 0: cpu_count()
  unsigned repeat = 3;
  std::string html;
  bool json = false;
  bool quiet = false;
  std::vector<std::string> command;  // the words after --, from main()
};

bool contains_mark(const std::string& word) { return word.find(jobs_mark) != std::string::npos; }

std::string replace_marks(std::string word, unsigned jobs) {
  const std::string n = std::to_string(jobs);
  for (std::size_t at = word.find(jobs_mark); at != std::string::npos;
       at = word.find(jobs_mark, at + n.size()))
    word.replace(at, jobs_mark.size(), n);
  return word;
}

bool is_workers_flag(std::string_view w) {
  for (std::string_view f : {"--jobs", "--workers"})
    if (w == f || (w.size() > f.size() && w.substr(0, f.size() + 1) == std::string(f) + "="))
      return true;
  return w.substr(0, 2) == "-j";  // -j, -j4 (CLI11 takes both)
}

/// What is timed: an argv template whose words may hold {jobs}, and whether argv[0] is
/// this program (an mproc subcommand).
struct Command {
  std::vector<std::string> words;
  bool self = false;

  /// The template as a shell would read it, {jobs} left as it is (inside the quotes when
  /// the word needs quoting: {jobs} is literal there).
  std::string text() const {
    std::string out = self ? "mproc" : "";
    for (const std::string& w : words) {
      if (!out.empty()) out += ' ';
      const std::string filled = replace_marks(w, 1);
      out += run_detail::shell_quote(filled) == filled ? w : run_detail::shell_quote(w);
    }
    return out;
  }
  /// The argv of a run with `jobs` workers; argv[0] is the program to execute.
  std::vector<std::string> argv(unsigned jobs, const std::string& self_path) const {
    std::vector<std::string> out;
    if (self) out.push_back(self_path);
    for (const std::string& w : words) out.push_back(replace_marks(w, jobs));
    return out;
  }
};

/// Checks the words after -- and makes them a Command; throws UsageError.
Command make_command(std::vector<std::string> words) {
  if (words.empty())
    throw UsageError(
        "no command: write mproc scaling [OPTIONS] -- COMMAND... (e.g. -- pi --samples "
        "20000000, or -- sh -c 'xz -T{jobs} -c big >/dev/null')");
  const bool marked = std::any_of(words.begin(), words.end(), contains_mark);
  const std::string& first = words.front();
  const bool compute = std::find(std::begin(compute_subcommands), std::end(compute_subcommands),
                                 first) != std::end(compute_subcommands);
  if (compute) {
    Command c{std::move(words), true};
    if (!marked) {
      // Before the subcommand's own --, if it has one: after it, -j would be a path.
      std::size_t end = 1;
      for (; end < c.words.size() && c.words[end] != "--"; ++end)
        if (is_workers_flag(c.words[end]))
          throw UsageError(fmt::format(
              "'{}' sets the workers, which mproc scaling varies: leave it out (or write "
              "-j {{jobs}})",
              c.words[end]));
      const auto at = c.words.begin() + static_cast<std::ptrdiff_t>(end);
      c.words.insert(at, {"-j", std::string(jobs_mark)});
    }
    return c;
  }
  if (marked) return Command{std::move(words), false};
  for (std::string_view other : {"info", "run", "trace-view", "scaling"})
    if (first == other)
      throw UsageError(fmt::format(
          "'{}' is not a compute subcommand (those are wordcount, countlines, pi, dot, "
          "rangecount); another command needs {{jobs}} where its worker count goes",
          first));
  for (std::string_view name : compute_subcommands)
    if (is_typo_of(edit_distance(first, name), name))
      throw UsageError(fmt::format("unknown subcommand '{}'; did you mean '{}'?", first, name));
  throw UsageError(fmt::format(
      "'{}' is not an mproc compute subcommand (wordcount, countlines, pi, dot, rangecount) "
      "and the command has no {{jobs}} to put the worker count in",
      first));
}

/// This program's path, for running an mproc subcommand.
std::string self_path() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::system_error(ec, "reading /proc/self/exe for mproc scaling");
  return p.string();
}

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev != nullptr ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", sig);
}

/// A memfd that takes each run's stderr, emptied before every run.
class StderrCapture {
 public:
  StderrCapture() : fd_(::memfd_create("mproc-scaling-stderr", MFD_CLOEXEC)) {
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "memfd_create for mproc scaling");
  }
  ~StderrCapture() { ::close(fd_); }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  int fd() const { return fd_; }
  void clear() {
    if (::ftruncate(fd_, 0) != 0 || ::lseek(fd_, 0, SEEK_SET) != 0)
      throw std::system_error(errno, std::generic_category(), "emptying mproc scaling's stderr capture");
  }
  /// The last non-empty line of what was written (its last stderr_tail bytes at most).
  std::string last_line() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || st.st_size <= 0) return {};
    const auto size = static_cast<std::size_t>(st.st_size);
    const std::size_t from = size > stderr_tail ? size - stderr_tail : 0;
    std::string text(size - from, '\0');
    const ssize_t n = ::pread(fd_, text.data(), text.size(), static_cast<off_t>(from));
    text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
      text.pop_back();
    const std::size_t nl = text.rfind('\n');
    if (nl != std::string::npos) text.erase(0, nl + 1);
    for (char& c : text)
      if (static_cast<unsigned char>(c) < 0x20 && c != '\t') c = ' ';
    return text;
  }

 private:
  int fd_;
};

/// How a run ended: its wall time, and "" or what went wrong.
struct RunResult {
  double seconds = 0;
  std::string failure;  // "exited with status 3", "was killed by SIGKILL"
};

/// Runs `argv` once, stdin and stdout /dev/null, stderr into `capture`, and waits for it.
RunResult run_once(const std::vector<std::string>& argv, StderrCapture& capture) {
  std::vector<char*> args;
  for (const std::string& w : argv) args.push_back(const_cast<char*>(w.c_str()));
  args.push_back(nullptr);
  capture.clear();
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) throw std::system_error(errno, std::generic_category(), "opening /dev/null");
  const pid_t parent = ::getpid();
  std::fflush(nullptr);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Only async-signal-safe calls from here to exec (strerror aside: it only reads).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with mproc scaling, even by SIGKILL
    if (::getppid() != parent) ::_exit(126);
    ::dup2(null, STDIN_FILENO);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(capture.fd(), STDERR_FILENO);
    ::execvp(args[0], args.data());
    const int e = errno;
    for (const char* text : {"cannot execute '", static_cast<const char*>(args[0]), "': ",
                             static_cast<const char*>(std::strerror(e)), "\n"})
      if (::write(STDERR_FILENO, text, std::strlen(text)) < 0) break;
    ::_exit(e == ENOENT || e == ENOTDIR ? 127 : 126);  // the shell's codes
  }
  const int fork_errno = errno;
  ::close(null);
  if (pid < 0) throw std::system_error(fork_errno, std::generic_category(), "fork for mproc scaling");
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "waitpid in mproc scaling");
  RunResult r;
  r.seconds = seconds_since(start);
  if (WIFSIGNALED(status))
    r.failure = fmt::format("was killed by {}", signal_name(WTERMSIG(status)));
  else if (WEXITSTATUS(status) != 0)
    r.failure = fmt::format("exited with status {}", WEXITSTATUS(status));
  return r;
}

/// The figures of one worker count.
struct Row {
  unsigned jobs = 0;
  std::vector<double> runs;  // seconds, in the order they ran
  double min = 0, median = 0, max = 0, speedup = 0, efficiency = 0;
};

void summarise(std::vector<Row>& rows) {
  for (Row& r : rows) {
    std::vector<double> v = r.runs;
    std::sort(v.begin(), v.end());
    r.min = v.front();
    r.max = v.back();
    const std::size_t n = v.size();
    r.median = n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }
  const double t1 = rows.front().median;
  for (Row& r : rows) {
    r.speedup = r.jobs == 1 ? 1.0 : t1 / r.median;
    r.efficiency = r.speedup / r.jobs;
  }
}

// ---------------------------------------------------------------------------------------
// Text and JSON

std::string table(const std::vector<Row>& rows, unsigned cpus) {
  std::string out = fmt::format("{:>7}  {:>10}  {:>10}  {:>10}  {:>8}  {:>10}\n", "workers",
                                "min (s)", "median (s)", "max (s)", "speed-up", "efficiency");
  for (const Row& r : rows)
    out += fmt::format("{:>7}  {:>10.4f}  {:>10.4f}  {:>10.4f}  {:>7.2f}x  {:>9.1f}%{}\n", r.jobs,
                       r.min, r.median, r.max, r.speedup, 100 * r.efficiency,
                       r.jobs > cpus ? "  (more workers than CPUs)" : "");
  return out;
}

std::string json_text(const Options& o, const Command& c, const std::vector<Row>& rows,
                      unsigned cpus) {
  JsonObject j;
  j.add("command", "scaling").add("measured", c.text());
  std::vector<std::string> argv = c.words;
  if (c.self) argv.insert(argv.begin(), "mproc");
  j.add("argv", argv);
  j.add("max_jobs", static_cast<unsigned>(rows.size())).add("repeat", o.repeat).add("cpu_count", cpus);
  std::vector<JsonObject> list;
  for (const Row& r : rows) {
    JsonObject row;
    row.add("jobs", r.jobs).add("runs", r.runs).add("min", r.min).add("median", r.median);
    row.add("max", r.max).add("speedup", r.speedup).add("efficiency", r.efficiency);
    list.push_back(std::move(row));
  }
  j.add("results", std::move(list));
  return j.str() + "\n";
}

// ---------------------------------------------------------------------------------------
// The page: three charts, each an SVG with a viewBox that CSS scales to the width it gets.

constexpr double chart_w = 480, chart_h = 330;
constexpr double margin_left = 62, margin_right = 18, margin_top = 34, margin_bottom = 48;
constexpr const char* series_colour = "#4e79a7";
constexpr const char* ideal_colour = "#e15759";

/// A linear map from data [lo, hi] onto pixels [a, b].
struct Scale {
  double lo, hi, a, b;
  double operator()(double v) const { return a + (v - lo) / (hi - lo) * (b - a); }
};

/// A step of 1, 2 or 5 times a power of ten that cuts [0, span] into at most `most` parts.
double nice_step(double span, int most) {
  const double raw = span / most;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

/// A number as an axis tick shows it: no more decimals than the step needs.
std::string tick_text(double v, double step) {
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return fmt::format("{:.{}f}", v, decimals);
}

class Chart {
 public:
  /// An x axis of workers 1..max_jobs and a y axis from 0 to a little over `y_top`.
  Chart(std::string cls, std::string title, std::string y_label, unsigned max_jobs, double y_top)
      : cls_(std::move(cls)) {
    x_ = Scale{0.5, max_jobs + 0.5, margin_left, chart_w - margin_right};
    y_step_ = nice_step(y_top > 0 ? y_top : 1, 6);
    const double top = std::ceil(y_top * 1.05 / y_step_) * y_step_;
    y_ = Scale{0, top > 0 ? top : y_step_, chart_h - margin_bottom, margin_top};
    put("<svg class=\"chart {}\" viewBox=\"0 0 {:.0f} {:.0f}\" role=\"img\" "
        "aria-label=\"{}\">\n",
        cls_, chart_w, chart_h, html_escape(title));
    put("<text class=\"title\" x=\"{:.1f}\" y=\"20\">{}</text>\n", margin_left, html_escape(title));
    put("<rect class=\"plot\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\"/>\n",
        margin_left, margin_top, chart_w - margin_left - margin_right,
        chart_h - margin_top - margin_bottom);
    for (double v = 0; v <= y_.hi + y_step_ / 1e6; v += y_step_)
      put("<line class=\"grid\" x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\"/>"
          "<text class=\"tick\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n",
          margin_left, y_(v), chart_w - margin_right, y_(v), margin_left - 6, y_(v) + 4,
          tick_text(v, y_step_));
    const double x_step = std::max(1.0, nice_step(max_jobs, 10));
    for (double j = 1; j <= max_jobs; j += x_step)
      put("<text class=\"tick\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:.0f}</text>\n",
          x_(j), chart_h - margin_bottom + 16, j);
    put("<text class=\"axis-label\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">workers "
        "(jobs)</text>\n",
        (x_.a + x_.b) / 2, chart_h - 10);
    put("<text class=\"axis-label\" transform=\"translate(16 {:.1f}) rotate(-90)\" "
        "text-anchor=\"middle\">{}</text>\n",
        (y_.a + y_.b) / 2, html_escape(y_label));
  }

  double x(double v) const { return x_(v); }
  double y(double v) const { return y_(v); }

  /// The measured values joined by a line, each a point with its figures as hover text.
  void series(const std::vector<Row>& rows, const std::vector<double>& values,
              const std::vector<std::string>& tips) {
    std::string points;
    for (std::size_t i = 0; i < rows.size(); ++i)
      points += fmt::format("{}{:.2f},{:.2f}", i ? " " : "", x_(rows[i].jobs), y_(values[i]));
    put("<polyline class=\"measured\" points=\"{}\" fill=\"none\" stroke=\"{}\" "
        "stroke-width=\"2\"/>\n",
        points, series_colour);
    for (std::size_t i = 0; i < rows.size(); ++i)
      put("<circle class=\"point {}\" data-jobs=\"{}\" cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"4.5\" "
          "fill=\"{}\"><title>{}</title></circle>\n",
          cls_, rows[i].jobs, x_(rows[i].jobs), y_(values[i]), series_colour,
          html_escape(tips[i]));
  }
  /// A dashed reference line from (x0, y0) to (x1, y1), in data units.
  void reference(const char* cls, double x0, double y0, double x1, double y1,
                 const std::string& label) {
    put("<line class=\"{}\" x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" "
        "stroke=\"{}\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"><title>{}</title></line>\n",
        cls, x_(x0), y_(y0), x_(x1), y_(y1), ideal_colour, html_escape(label));
  }
  /// A vertical bar from `lo` to `hi` at `jobs`, with caps.
  void whisker(unsigned jobs, double lo, double hi) {
    const double cx = x_(jobs), half = std::min(6.0, (x_(2) - x_(1)) / 4);
    put("<g class=\"whisker\" data-jobs=\"{}\"><line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" "
        "y2=\"{:.2f}\"/><line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\"/>"
        "<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\"/></g>\n",
        jobs, cx, y_(lo), cx, y_(hi), cx - half, y_(lo), cx + half, y_(lo), cx - half, y_(hi),
        cx + half, y_(hi));
  }
  /// A dotted vertical line at `cpus` workers: to its right, workers share CPUs.
  void cpu_marker(unsigned cpus) {
    put("<line class=\"cpus\" x1=\"{0:.2f}\" y1=\"{1:.2f}\" x2=\"{0:.2f}\" y2=\"{2:.2f}\" "
        "stroke=\"#999\" stroke-dasharray=\"2 3\"><title>cpu_count() = {3}: more workers share "
        "CPUs</title></line><text class=\"tick\" x=\"{4:.2f}\" y=\"{5:.2f}\">cpu_count()</text>\n",
        x_(cpus), y_.a, y_.b, cpus, x_(cpus) + 4, y_.b + 12);
  }
  std::string finish() {
    put("</svg>\n");
    return std::move(out_);
  }

 private:
  template <class... A>
  void put(fmt::format_string<A...> f, A&&... a) {
    out_ += fmt::format(f, std::forward<A>(a)...);
  }
  std::string cls_;
  Scale x_{}, y_{};
  double y_step_ = 1;
  std::string out_;
};

constexpr std::string_view page_style = R"(
body { margin: 16px; background: #fff; color: #222; font: 14px/1.4 system-ui, sans-serif; }
h1 { font-size: 20px; margin: 0 0 6px; }
h1 code { font-size: 17px; word-break: break-all; }
p { margin: 4px 0; }
.dim { color: #666; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr));
          gap: 16px; margin: 14px 0; }
svg.chart { display: block; width: 100%; height: auto; }
svg text { font-size: 12px; fill: #444; }
svg text.title { font-size: 14px; font-weight: 600; fill: #222; }
svg .plot { fill: #fafafa; stroke: #ccc; }
svg .grid { stroke: #e4e4e4; }
svg .whisker line { stroke: #4e79a7; stroke-width: 1.5; }
table { border-collapse: collapse; }
th, td { padding: 2px 10px; border-bottom: 1px solid #e3e3e3; text-align: right;
         font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; }
)";

std::string page(const Options& o, const Command& c, const std::vector<Row>& rows, unsigned cpus) {
  const unsigned n = static_cast<unsigned>(rows.size());
  std::string out;
  out += fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<title>{} - mproc scaling</title>\n<style>{}</style>\n</head>\n<body>\n",
      html_escape(c.text()), page_style);
  out += fmt::format("<h1>Scaling of <code id=\"command\">{}</code></h1>\n", html_escape(c.text()));
  out += fmt::format(
      "<p class=\"dim\">{} at each of 1 to {} ({}), wall time of each whole process; "
      "cpu_count() {}. Speed-up = median time at 1 worker / median time at J; "
      "efficiency = speed-up / J.</p>\n",
      plural(o.repeat, "run"), plural(n, "worker"), o.repeat > 1 ? "rounds interleaved" : "one round",
      cpus);
  out += "<div class=\"charts\">\n";

  double slowest = 0, best = 1, best_eff = 1;
  for (const Row& r : rows) {
    slowest = std::max(slowest, r.max);
    best = std::max(best, r.speedup);
    best_eff = std::max(best_eff, r.efficiency);
  }
  std::vector<double> medians, speedups, efficiencies;
  std::vector<std::string> time_tips, speed_tips, eff_tips;
  for (const Row& r : rows) {
    medians.push_back(r.median);
    speedups.push_back(r.speedup);
    efficiencies.push_back(100 * r.efficiency);
    time_tips.push_back(fmt::format("{}: median {:.4f} s (min {:.4f}, max {:.4f})",
                                    plural(r.jobs, "worker"), r.median, r.min, r.max));
    speed_tips.push_back(fmt::format("{}: speed-up {:.2f}x", plural(r.jobs, "worker"), r.speedup));
    eff_tips.push_back(
        fmt::format("{}: efficiency {:.1f}%", plural(r.jobs, "worker"), 100 * r.efficiency));
  }

  const bool oversubscribed = cpus < n;
  Chart time("time", "Wall time (median; bars: min to max)", "seconds", n, slowest);
  if (oversubscribed) time.cpu_marker(cpus);
  for (const Row& r : rows) time.whisker(r.jobs, r.min, r.max);
  time.series(rows, medians, time_tips);
  out += time.finish();

  Chart speed("speedup", "Speed-up (dashed: ideal, J times)", "speed-up (x)", n,
              std::max(best, static_cast<double>(n)));
  if (oversubscribed) speed.cpu_marker(cpus);
  speed.reference("ideal", 1, 1, n, n, "ideal: J workers, J times as fast");
  speed.series(rows, speedups, speed_tips);
  out += speed.finish();

  Chart eff("efficiency", "Efficiency (dashed: 100%)", "efficiency (%)", n, 100 * best_eff);
  if (oversubscribed) eff.cpu_marker(cpus);
  eff.reference("full", 0.5, 100, n + 0.5, 100, "100%: every worker fully used");
  eff.series(rows, efficiencies, eff_tips);
  out += eff.finish();
  out += "</div>\n";

  out += "<div class=\"table-wrap\"><table id=\"results\">\n<thead><tr><th>workers</th>"
         "<th>min (s)</th><th>median (s)</th><th>max (s)</th><th>speed-up</th>"
         "<th>efficiency</th><th>runs (s)</th></tr></thead>\n<tbody>\n";
  for (const Row& r : rows) {
    std::string runs;
    for (double s : r.runs) runs += fmt::format("{}{:.4f}", runs.empty() ? "" : " ", s);
    out += fmt::format(
        "<tr><td>{}</td><td>{:.4f}</td><td>{:.4f}</td><td>{:.4f}</td><td>{:.2f}x</td>"
        "<td>{:.1f}%</td><td>{}</td></tr>\n",
        r.jobs, r.min, r.median, r.max, r.speedup, 100 * r.efficiency, runs);
  }
  out += "</tbody>\n</table></div>\n</body>\n</html>\n";
  return out;
}

// ---------------------------------------------------------------------------------------

/// Refuses an --html path that cannot be written before any run, not after them all.
void check_output(const std::string& path) {
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  if (fs::is_directory(p, ec)) throw UsageError(fmt::format("--html: '{}' is a directory", path));
  if (!fs::is_directory(dir, ec))
    throw UsageError(fmt::format("--html: cannot write '{}': no directory '{}'", path, dir.string()));
  if (::access(dir.c_str(), W_OK) != 0 || (fs::exists(p, ec) && ::access(p.c_str(), W_OK) != 0))
    throw UsageError(fmt::format("--html: cannot write '{}': {}", path, std::strerror(errno)));
}

int run(const Options& o, const std::vector<std::string>& stray) {
  if (!stray.empty())
    throw UsageError(fmt::format(
        "unexpected '{}' before --: write mproc scaling [OPTIONS] -- COMMAND...", stray.front()));
  const Command cmd = make_command(o.command);
  if (!o.html.empty()) check_output(o.html);
  const unsigned cpus = cpu_count();
  const unsigned n = o.max_jobs != 0 ? o.max_jobs : cpus;
  const std::string self = cmd.self ? self_path() : std::string();
  const bool show_progress = !o.quiet && ::isatty(STDERR_FILENO) == 1;
  StderrCapture capture;
  std::vector<Row> rows(n);
  for (unsigned j = 1; j <= n; ++j) rows[j - 1].jobs = j;
  const auto start = std::chrono::steady_clock::now();
  const std::size_t total = std::size_t{n} * o.repeat;
  std::size_t done = 0;
  for (unsigned round = 1; round <= o.repeat; ++round)
    for (unsigned j = 1; j <= n; ++j) {
      if (show_progress)
        fmt::print(stderr, "\rmproc scaling: run {} of {} ({})\x1b[K", done + 1, total,
                   plural(j, "worker"));
      const std::vector<std::string> argv = cmd.argv(j, self);
      const RunResult r = run_once(argv, capture);
      if (!r.failure.empty()) {
        if (show_progress) fmt::print(stderr, "\r\x1b[K");
        std::string line;
        for (std::size_t i = 0; i < argv.size(); ++i)
          line += (i ? " " : "") + run_detail::shell_quote(i == 0 && cmd.self ? "mproc" : argv[i]);
        const std::string said = capture.last_line();
        fmt::print(stderr, "mproc scaling: {} {} ({}, run {} of {}){}\n", line, r.failure,
                   plural(j, "worker"), round, o.repeat, said.empty() ? "" : ": " + said);
        return task_failures;
      }
      rows[j - 1].runs.push_back(r.seconds);
      ++done;
    }
  if (show_progress) fmt::print(stderr, "\r\x1b[K");
  summarise(rows);
  if (!o.html.empty()) write_file(o.html, page(o, cmd, rows, cpus));
  if (o.json)
    write_stdout(json_text(o, cmd, rows, cpus));
  else
    write_stdout(fmt::format("{}\n{}", cmd.text(), table(rows, cpus)));
  if (!o.quiet) {
    const auto best = std::max_element(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
      return a.speedup < b.speedup;
    });
    fmt::print(stderr, "mproc scaling: {} in {:.1f} s; best speed-up {:.2f}x with {}{}\n",
               plural(total, "run"), seconds_since(start), best->speedup,
               plural(best->jobs, "worker"), o.html.empty() ? "" : "; wrote " + o.html);
  }
  return ok;
}

}  // namespace

void add_scaling(CLI::App& app, int* exit_code, std::vector<std::string> command) {
  auto o = std::make_shared<Options>();
  o->command = std::move(command);
  CLI::App* cmd = app.add_subcommand("scaling", "Time a command at 1..N workers; speed-up charts");
  cmd->add_option("--max-jobs", o->max_jobs,
                  "Workers 1 to N, N <= 4096 (default: cpu_count())")
      ->option_text("N")
      ->check(integer_in(1, max_jobs_limit));
  cmd->add_option("--repeat", o->repeat, "Runs at each worker count (the median counts)")
      ->option_text("R")
      ->check(integer_in(1, max_repeat))
      ->capture_default_str();
  cmd->add_option("--html", o->html, "Also write the charts as a self-contained page")
      ->option_text("FILE");
  cmd->add_flag("--json", o->json, "Print one JSON object instead of the table");
  cmd->add_flag("--quiet", o->quiet, "No summary line or progress on stderr");
  // Words before -- that are not options: an error that says where the command goes.
  cmd->allow_extras();
  cmd->footer(
      "Usage: mproc scaling [OPTIONS] -- COMMAND [ARGS...]\n"
      "\n"
      "Runs COMMAND R times with each worker count J = 1..N, a fresh process each\n"
      "time, and prints per J the min, median and max wall time, the speed-up\n"
      "(median at 1 / median at J) and the efficiency (speed-up / J).\n"
      "COMMAND is an mproc compute subcommand (wordcount, countlines, pi, dot,\n"
      "rangecount), run with -j J added, e.g.  -- pi --samples 20000000\n"
      "or any command line with {jobs} where J goes, run without a shell, e.g.\n"
      "  -- sh -c 'xz -T{jobs} -c big >/dev/null'\n"
      "Its stdout is discarded and its stderr kept: a run that fails stops it all\n"
      "with one line quoting the end of that stderr, and no table or page.\n"
      "\n"
      "Exit codes: 0 success, 1 a run failed, 2 usage error.");
  cmd->callback([o, exit_code, cmd] {
    run_command("scaling", exit_code, [&] { return run(*o, cmd->remaining()); });
  });
}

}  // namespace mproc::cli
