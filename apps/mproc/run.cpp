// `mproc run`: a parallel command runner in the spirit of GNU parallel.
//
//   mproc run [-j N] [--timeout S] [--retries N] [--keep-order] [--joblog FILE] [--shell]
//             [--] CMD [ARGS...] [::: ARG...]
//
// One job per argument. The runner is a single-threaded event loop: each job is
// fork() + execvp() in a process group of its own, its stdout and stderr on two pipes;
// poll() watches every pipe plus a signalfd for SIGCHLD, SIGINT, SIGTERM and SIGHUP, and its
// timeout is the nearest job deadline. So a job never blocks on a full pipe (the loop always
// reads), a signal arriving between two checks is never lost (it waits in the signalfd), and
// nothing sleeps blindly. Every child is reaped with waitpid() before the runner returns.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "commands.hpp"
#include "text.hpp"
#include <mproc/cpu_count.hpp>

namespace mproc::cli {
namespace {

using Clock = std::chrono::steady_clock;

/// Exit codes above this would collide with the shell's 126/127/128+N conventions.
constexpr int max_exit_code = 101;
/// How long a job may take to die after SIGTERM before its process group gets SIGKILL.
constexpr auto kill_grace = std::chrono::seconds(1);
constexpr std::size_t read_chunk = 64 * 1024;

struct Options {
  std::vector<std::string> words;
  std::string jobs = "0";
  std::string timeout = "0";
  std::string retries = "0";
  std::string joblog;
  bool shell = false;
  bool keep_order = false;
};

/// A usage or input error: one line on stderr, exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Settings {
  unsigned jobs = 1;
  double timeout = 0;  // seconds; 0: none
  int retries = 0;
  bool keep_order = false;
};

struct Job {
  std::size_t seq = 0;            // 1-based input order
  std::vector<std::string> argv;  // what execvp() gets
  std::string command;            // the command line, for the joblog and the summary
  int attempts = 0;
};

// ---------------------------------------------------------------------------------------
// Arguments

long long parse_count(const std::string& s, const char* flag, long long max) {
  long long v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end || v < 0)
    throw UsageError(fmt::format("{}: not a non-negative integer: '{}'", flag, s));
  if (v > max) throw UsageError(fmt::format("{}: at most {}: '{}'", flag, max, s));
  return v;
}

double parse_seconds(const std::string& s) {
  double v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end || !std::isfinite(v) || v < 0)
    throw UsageError(fmt::format("--timeout: not a number of seconds: '{}'", s));
  if (v > 1e9) throw UsageError(fmt::format("--timeout: at most 1e9 seconds: '{}'", s));
  return v;
}

Settings validate(const Options& o) {
  Settings s;
  s.jobs = static_cast<unsigned>(parse_count(o.jobs, "--jobs", 1'000'000));
  if (s.jobs == 0) s.jobs = cpu_count();
  s.timeout = parse_seconds(o.timeout);
  s.retries = static_cast<int>(parse_count(o.retries, "--retries", 1'000'000));
  s.keep_order = o.keep_order;
  return s;
}

/// The lines of stdin, without empty ones. Reads to the end before any job starts.
std::vector<std::string> read_stdin_lines() {
  std::string text;
  char buf[read_chunk];
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n > 0) {
      text.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      throw UsageError(fmt::format("cannot read arguments from stdin: {}", std::strerror(errno)));
    }
  }
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    if (nl > pos) lines.emplace_back(text, pos, nl - pos);
    pos = nl + 1;
  }
  return lines;
}

/// `word` with every "{}" replaced by `arg`; sets `used` when there was one.
std::string substitute(std::string_view word, std::string_view arg, bool& used) {
  std::string out;
  std::size_t pos = 0;
  for (std::size_t at; (at = word.find("{}", pos)) != std::string_view::npos; pos = at + 2) {
    out.append(word.substr(pos, at - pos));
    out.append(arg);
    used = true;
  }
  out.append(word.substr(pos));
  return out;
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

std::vector<Job> make_jobs(const Options& o) {
  const auto sep = std::find(o.words.begin(), o.words.end(), ":::");
  const std::vector<std::string> tmpl(o.words.begin(), sep);
  if (tmpl.empty())
    throw UsageError("no command given (usage: mproc run [OPTIONS] -- CMD [ARGS...] ::: ARG...)");
  std::vector<std::string> args;
  if (sep != o.words.end()) {
    args.assign(sep + 1, o.words.end());
    if (std::find(args.begin(), args.end(), ":::") != args.end())
      throw UsageError("only one ::: input source is supported");
  } else {
    args = read_stdin_lines();
  }
  if (args.empty()) throw UsageError("no arguments (give them after ::: or on stdin)");

  std::vector<Job> jobs;
  jobs.reserve(args.size());
  for (const auto& arg : args) {
    Job j;
    j.seq = jobs.size() + 1;
    bool used = false;
    if (o.shell) {
      std::string line = substitute(join(tmpl), arg, used);
      if (!used) line += " " + arg;
      j.argv = {"/bin/sh", "-c", line};
      j.command = std::move(line);
    } else {
      for (const auto& w : tmpl) j.argv.push_back(substitute(w, arg, used));
      if (!used) j.argv.push_back(arg);
      j.command = join(j.argv);
    }
    jobs.push_back(std::move(j));
  }
  return jobs;
}

// ---------------------------------------------------------------------------------------
// Small OS helpers

/// Writes all of `data`; false when the reader has gone (EPIPE) or another error.
bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n >= 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
    } else if (errno == EAGAIN) {  // an inherited O_NONBLOCK stdout
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, -1);
    } else if (errno != EINTR) {
      return false;
    }
  }
  return true;
}

/// Reads what `fd` has, up to `max_reads` chunks, into `buf`; closes it at EOF (fd = -1).
void read_available(int& fd, std::string& buf, int max_reads) {
  for (int i = 0; i < max_reads && fd >= 0; ++i) {
    const std::size_t old = buf.size();
    buf.resize(old + read_chunk);
    const ssize_t n = ::read(fd, buf.data() + old, read_chunk);
    buf.resize(old + static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    ::close(fd);  // EOF, or an error that reading again would not cure
    fd = -1;
  }
}

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev != nullptr ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", sig);
}

/// Blocks the signals the loop handles and routes them to a signalfd; ignores SIGPIPE so a
/// closed stdout is an EPIPE the loop sees. Restores everything when it goes.
class SignalRoute {
 public:
  SignalRoute() {
    sigset_t set;
    ::sigemptyset(&set);
    for (int s : {SIGCHLD, SIGINT, SIGTERM, SIGHUP}) ::sigaddset(&set, s);
    if (::sigprocmask(SIG_BLOCK, &set, &old_mask_) != 0)
      throw std::system_error(errno, std::generic_category(), "sigprocmask for mproc run");
    fd_ = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd_ < 0) {
      const int e = errno;
      ::sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
      throw std::system_error(e, std::generic_category(), "signalfd for mproc run");
    }
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ign, &old_pipe_);
  }
  ~SignalRoute() {
    ::close(fd_);
    ::sigaction(SIGPIPE, &old_pipe_, nullptr);
    ::sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  SignalRoute(const SignalRoute&) = delete;
  SignalRoute& operator=(const SignalRoute&) = delete;

  int fd() const { return fd_; }
  const sigset_t& old_mask() const { return old_mask_; }

 private:
  int fd_ = -1;
  sigset_t old_mask_{};
  struct sigaction old_pipe_ {};
};

/// The --joblog file, in GNU parallel's format. Disabled when the path is empty.
class JobLog {
 public:
  explicit JobLog(const std::string& path) {
    if (path.empty()) return;
    f_ = std::fopen(path.c_str(), "we");
    if (f_ == nullptr)
      throw UsageError(fmt::format("cannot open joblog '{}': {}", path, std::strerror(errno)));
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    host_ = host;
    fmt::print(f_, "Seq\tHost\tStarttime\tJobRuntime\tExitval\tSignal\tCommand\n");
    if (std::fflush(f_) != 0)
      throw UsageError(fmt::format("cannot write joblog '{}': {}", path, std::strerror(errno)));
  }
  ~JobLog() {
    if (f_ != nullptr) std::fclose(f_);
  }
  JobLog(const JobLog&) = delete;
  JobLog& operator=(const JobLog&) = delete;

  /// One line per attempt, flushed at once so the file is current while jobs still run.
  void add(std::size_t seq, double start_epoch, double runtime, int exitval, int sig,
           const std::string& command) {
    if (f_ == nullptr) return;
    fmt::print(f_, "{}\t{}\t{:.3f}\t{:.3f}\t{}\t{}\t{}\n", seq, host_, start_epoch, runtime,
               exitval, sig, command);
    if (std::fflush(f_) != 0 && !warned_) {
      warned_ = true;
      fmt::print(stderr, "mproc run: warning: cannot write the joblog: {}\n", std::strerror(errno));
    }
  }

 private:
  std::FILE* f_ = nullptr;
  std::string host_;
  bool warned_ = false;
};

// ---------------------------------------------------------------------------------------
// The runner

/// One running attempt of a job.
struct Attempt {
  std::size_t job = 0;
  pid_t pid = -1;  // also its process group id
  int out_fd = -1, err_fd = -1;
  std::string out, err;
  Clock::time_point start, end;
  double start_epoch = 0;
  std::optional<Clock::time_point> deadline;  // --timeout: SIGTERM then
  std::optional<Clock::time_point> kill_at;   // SIGKILL then, unless it has ended
  bool timed_out = false;
  bool reaped = false;
  int status = 0;
};

/// Runs in the child between fork() and exec: only async-signal-safe calls (strerror aside,
/// which is safe here because the runner is single-threaded).
[[noreturn]] void exec_child(char* const* argv, int out_w, int err_w, const sigset_t& mask,
                             pid_t parent) {
  ::setpgid(0, 0);  // its own group, so killpg() reaches its grandchildren too
  const int null = ::open("/dev/null", O_RDONLY);
  if (null > 0) {
    ::dup2(null, STDIN_FILENO);
    ::close(null);
  }
  ::dup2(out_w, STDOUT_FILENO);  // the originals are O_CLOEXEC; the copies are not
  ::dup2(err_w, STDERR_FILENO);
  ::signal(SIGPIPE, SIG_DFL);  // an ignored signal would stay ignored across exec
  // Best effort for a runner killed by SIGKILL: its direct children get SIGTERM.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) ::_exit(126);
  ::sigprocmask(SIG_SETMASK, &mask, nullptr);  // the mask survives exec: give the original back
  ::execvp(argv[0], argv);
  const int e = errno;
  auto say = [](const char* text) {
    if (::write(STDERR_FILENO, text, std::strlen(text)) < 0) return;  // nowhere to report it
  };
  say("mproc run: cannot execute '");
  say(argv[0]);
  say("': ");
  say(std::strerror(e));
  say("\n");
  ::_exit(e == ENOENT || e == ENOTDIR ? 127 : 126);  // the shell's codes
}

class Runner {
 public:
  Runner(std::vector<Job> jobs, const Settings& s, JobLog& log)
      : jobs_(std::move(jobs)), s_(s), log_(log) {
    for (std::size_t i = 0; i < jobs_.size(); ++i) pending_.push_back(i);
  }

  /// Runs every job; returns the exit code.
  int run() {
    while (!running_.empty() || (stop_signal_ == 0 && !pending_.empty())) {
      if (stop_signal_ == 0) start_jobs();
      if (running_.empty()) continue;
      wait_for_events();
      reap();
      check_timers();
      finish_reaped();
    }
    if (stop_signal_ != 0) {
      if (stop_signal_ != SIGPIPE)
        fmt::print(stderr, "mproc run: interrupted by {}: stopped {}, {} not started\n",
                   signal_name(stop_signal_), plural(stopped_, "running job"), pending_.size());
      return 128 + stop_signal_;
    }
    if (failures_.empty()) return ok;
    std::sort(failures_.begin(), failures_.end());
    std::string summary =
        fmt::format("mproc run: {} of {} failed:\n", failures_.size(), plural(jobs_.size(), "job"));
    for (const auto& [seq, reason] : failures_)
      summary += fmt::format("  seq {}: {}: {}\n", seq, reason, jobs_[seq - 1].command);
    write_all(STDERR_FILENO, summary);
    return static_cast<int>(std::min<std::size_t>(failures_.size(), max_exit_code));
  }

 private:
  void start_jobs() {
    while (!starved_ && running_.size() < s_.jobs && !pending_.empty()) {
      const std::size_t j = pending_.front();
      pending_.pop_front();
      ++jobs_[j].attempts;
      const int err = spawn(j);
      if (err == 0) continue;
      const bool transient = err == EMFILE || err == ENFILE || err == EAGAIN || err == ENOMEM;
      if (transient && !running_.empty()) {
        // Out of fds or processes for now: try again when a running job has ended.
        --jobs_[j].attempts;
        pending_.push_front(j);
        starved_ = true;
      } else {
        Attempt a;
        a.job = j;
        a.start = a.end = Clock::now();
        a.start_epoch = epoch_now();
        a.err = fmt::format("mproc run: cannot start job {}: {}\n", jobs_[j].seq, std::strerror(err));
        finish(a, -1, 0, fmt::format("could not start: {}", std::strerror(err)));
      }
    }
  }

  /// Starts an attempt of job `j`; 0 or the errno of what failed.
  int spawn(std::size_t j) {
    std::vector<char*> argv;
    for (auto& w : jobs_[j].argv) argv.push_back(w.data());
    argv.push_back(nullptr);
    int out_p[2], err_p[2];
    if (::pipe2(out_p, O_CLOEXEC) != 0) return errno;
    if (::pipe2(err_p, O_CLOEXEC) != 0) {
      const int e = errno;
      ::close(out_p[0]);
      ::close(out_p[1]);
      return e;
    }
    auto a = std::make_unique<Attempt>();
    a->job = j;
    a->start = Clock::now();
    a->start_epoch = epoch_now();
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) exec_child(argv.data(), out_p[1], err_p[1], signals_.old_mask(), parent);
    const int fork_errno = errno;
    ::close(out_p[1]);
    ::close(err_p[1]);
    if (pid < 0) {
      ::close(out_p[0]);
      ::close(err_p[0]);
      return fork_errno;
    }
    // Also here, not only in the child: whichever runs first, the group exists before the
    // runner might killpg() it. EACCES once the child has exec'd is harmless.
    ::setpgid(pid, pid);
    ::fcntl(out_p[0], F_SETFL, O_NONBLOCK);
    ::fcntl(err_p[0], F_SETFL, O_NONBLOCK);
    a->pid = pid;
    a->out_fd = out_p[0];
    a->err_fd = err_p[0];
    if (s_.timeout > 0)
      a->deadline = a->start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(s_.timeout));
    running_.push_back(std::move(a));
    return 0;
  }

  static double epoch_now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  void wait_for_events() {
    std::vector<pollfd> fds{{signals_.fd(), POLLIN, 0}};
    std::vector<std::pair<Attempt*, bool>> owners{{nullptr, false}};  // bool: stderr
    for (auto& a : running_) {
      if (a->out_fd >= 0) {
        fds.push_back({a->out_fd, POLLIN, 0});
        owners.emplace_back(a.get(), false);
      }
      if (a->err_fd >= 0) {
        fds.push_back({a->err_fd, POLLIN, 0});
        owners.emplace_back(a.get(), true);
      }
    }
    const int n = ::poll(fds.data(), fds.size(), poll_timeout_ms());
    if (n < 0) {
      if (errno == EINTR) return;
      throw std::system_error(errno, std::generic_category(), "poll in mproc run");
    }
    if (fds[0].revents != 0) handle_signals();
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      Attempt* a = owners[i].first;
      if (owners[i].second)
        read_available(a->err_fd, a->err, 16);
      else
        read_available(a->out_fd, a->out, 16);
    }
  }

  int poll_timeout_ms() const {
    std::optional<Clock::time_point> next;
    for (const auto& a : running_) {
      if (a->reaped) return 0;
      for (const auto& t : {a->deadline, a->kill_at})
        if (t && (!next || *t < *next)) next = t;
    }
    if (!next) return -1;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(ms, 0, 60'000));
  }

  void handle_signals() {
    signalfd_siginfo si{};
    while (::read(signals_.fd(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      // SIGCHLD needs nothing here: reap() checks every running job after each poll.
      if (si.ssi_signo != SIGCHLD) stop(static_cast<int>(si.ssi_signo));
    }
  }

  /// Stops the run: no new jobs; SIGTERM to every running job's group, SIGKILL after the
  /// grace period (at once on a second signal).
  void stop(int sig) {
    const bool again = stop_signal_ != 0;
    if (!again) stop_signal_ = sig;
    const auto now = Clock::now();
    for (auto& a : running_) {
      if (a->reaped) continue;
      if (!again) ++stopped_;
      ::killpg(a->pid, again ? SIGKILL : SIGTERM);
      a->deadline.reset();
      a->kill_at = again ? std::nullopt : std::optional(now + kill_grace);
    }
  }

  void reap() {
    for (auto& a : running_) {
      if (a->reaped) continue;
      int status = 0;
      const pid_t r = ::waitpid(a->pid, &status, WNOHANG);
      if (r == a->pid || (r < 0 && errno == ECHILD)) {
        a->reaped = true;
        a->status = r == a->pid ? status : (255 << 8);
        a->end = Clock::now();
      }
    }
  }

  void check_timers() {
    const auto now = Clock::now();
    for (auto& a : running_) {
      if (a->reaped) continue;
      if (a->deadline && now >= *a->deadline) {
        a->deadline.reset();
        a->timed_out = true;
        ::killpg(a->pid, SIGTERM);
        a->kill_at = now + kill_grace;
      }
      if (a->kill_at && now >= *a->kill_at) {
        a->kill_at.reset();
        ::killpg(a->pid, SIGKILL);
      }
    }
  }

  void finish_reaped() {
    for (std::size_t i = 0; i < running_.size();) {
      Attempt& a = *running_[i];
      if (!a.reaped) {
        ++i;
        continue;
      }
      // Everything the job's process wrote is in the pipes by now. Background processes it
      // left behind may hold the pipes open for ever, so take what is there and close.
      read_available(a.out_fd, a.out, 1 << 14);
      read_available(a.err_fd, a.err, 1 << 14);
      for (int* fd : {&a.out_fd, &a.err_fd})
        if (*fd >= 0) {
          ::close(*fd);
          *fd = -1;
        }
      // A killed job's group may still hold processes that ignored SIGTERM. The group id
      // cannot be reused while any of them lives, so this reaches only them.
      if (a.timed_out || stop_signal_ != 0) ::killpg(a.pid, SIGKILL);

      int exitval = 0, sig = 0;
      std::string reason;
      if (WIFSIGNALED(a.status)) {
        exitval = -1;
        sig = WTERMSIG(a.status);
        reason = fmt::format("killed by {}", signal_name(sig));
      } else {
        exitval = WEXITSTATUS(a.status);
        reason = fmt::format("exit code {}", exitval);
        if (exitval == 127) reason += " (command not found)";
        if (exitval == 126) reason += " (command not executable)";
      }
      if (a.timed_out) reason = fmt::format("timed out after {:g} s", s_.timeout);
      else if (exitval == 0 && sig == 0) reason.clear();
      std::unique_ptr<Attempt> done = std::move(running_[i]);
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
      starved_ = false;
      finish(*done, exitval, sig, std::move(reason));
    }
  }

  /// Logs an ended attempt, then retries the job or delivers its output. An empty
  /// `reason` means success.
  void finish(Attempt& a, int exitval, int sig, std::string reason) {
    Job& job = jobs_[a.job];
    log_.add(job.seq, a.start_epoch, std::chrono::duration<double>(a.end - a.start).count(),
             exitval, sig, job.command);
    if (stop_signal_ != 0) return;  // killed by the runner: its output is cut short
    if (!reason.empty() && job.attempts <= s_.retries) {
      pending_.push_front(a.job);  // before the others, so --keep-order is not held up
      return;
    }
    if (!reason.empty()) failures_.emplace_back(job.seq, std::move(reason));
    if (!s_.keep_order) {
      print_block(a.out, a.err);
      return;
    }
    ready_.emplace(job.seq, std::pair{std::move(a.out), std::move(a.err)});
    for (auto it = ready_.find(next_seq_); it != ready_.end(); it = ready_.find(next_seq_)) {
      print_block(it->second.first, it->second.second);
      ready_.erase(it);
      ++next_seq_;
    }
  }

  void print_block(const std::string& out, const std::string& err) {
    if (stop_signal_ == SIGPIPE) return;
    if (!write_all(STDOUT_FILENO, out) && errno == EPIPE) {
      stop(SIGPIPE);  // nobody reads our output any more: stop as a killed program would
      return;
    }
    write_all(STDERR_FILENO, err);
  }

  std::vector<Job> jobs_;
  Settings s_;
  JobLog& log_;
  SignalRoute signals_;
  std::deque<std::size_t> pending_;  // indexes into jobs_
  std::vector<std::unique_ptr<Attempt>> running_;
  bool starved_ = false;  // a start failed for want of fds or processes
  int stop_signal_ = 0;
  std::size_t stopped_ = 0;
  std::vector<std::pair<std::size_t, std::string>> failures_;  // seq, reason
  std::map<std::size_t, std::pair<std::string, std::string>> ready_;  // --keep-order backlog
  std::size_t next_seq_ = 1;
};

/// Makes sure fds 0-2 are open, so that no pipe lands on them and a job's dup2() is real.
void ensure_std_fds() {
  for (int fd = 0; fd <= 2; ++fd)
    if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF) ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
}

int run(const Options& o) {
  ensure_std_fds();
  const Settings s = validate(o);
  std::vector<Job> jobs = make_jobs(o);
  JobLog log(o.joblog);
  std::fflush(stdout);
  Runner runner(std::move(jobs), s, log);
  return runner.run();
}

constexpr const char* run_help = R"(Usage: mproc run [OPTIONS] [--] CMD [ARGS...] [::: ARG...]
Runs CMD once per argument, up to --jobs at a time, like GNU parallel.

Arguments: the words after ':::', or else one per line of stdin (empty lines
  skipped; stdin is read to its end before the first job starts). No arguments
  at all is a usage error (exit 2, "no arguments").
{} in the command's words is replaced by the argument, every occurrence, also
  inside a word (pre{}post); without any {}, the argument is appended as one
  more word.
The command is executed directly (execvp, no shell: $VAR, ;, * and quotes in it
  or in the arguments stay literal), unless --shell: then the words are joined
  with spaces, {} is replaced by the argument verbatim (not quoted), and
  /bin/sh -c runs the result. A command that cannot be executed fails with exit
  code 127 (not found) or 126.
Each job runs in a process group of its own, stdin from /dev/null. Its stdout
  and stderr are captured and printed when it ends, as one block each (to
  stdout and stderr), never mixed with other jobs' output: in completion order,
  or input order with --keep-order. A job ends when its process exits; output
  that background processes it started write after that is not captured.
--timeout: the job's process group gets SIGTERM, then SIGKILL 1 s later; it
  fails as "timed out".
--retries N: a failed job runs up to N more times; only the last attempt's
  output is printed.
--joblog: tab-separated, header Seq Host Starttime JobRuntime Exitval Signal
  Command, one line per attempt (a retried job has several lines with its Seq),
  in completion order; Starttime in seconds since the epoch; Exitval -1 when a
  signal killed the job or it could not be started. An unwritable joblog is a
  usage error (exit 2) and nothing runs.
Failed jobs are listed on stderr at the end ("mproc run: N of M jobs failed:").
Exit code: the number of failed jobs, capped at 101 (0: all succeeded); 2 for
  usage errors (bad or unknown options, no command, no arguments) - "2 jobs
  failed" also exits 2, the summary on stderr tells them apart; 128+N when the
  runner got signal N (SIGINT, SIGTERM, SIGHUP), after it has killed the
  running jobs' process groups.)";

}  // namespace

void add_run(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("run", "Run a command per argument in parallel");
  cmd->add_option("-j,--jobs,--workers", o->jobs, "Jobs at a time (0: cpu_count())")
      ->type_name("N")
      ->capture_default_str();
  cmd->add_option("--timeout", o->timeout,
                  "Kill a job after this long (0: no limit)")
      ->type_name("SECONDS")
      ->capture_default_str();
  cmd->add_option("--retries", o->retries, "Run a failed job up to N more times")
      ->type_name("N")
      ->capture_default_str();
  cmd->add_flag("--keep-order", o->keep_order, "Print jobs' output in input order");
  cmd->add_option("--joblog", o->joblog, "Write a job log (TSV) to FILE")
      ->type_name("FILE");
  cmd->add_flag("--shell", o->shell, "Run the command with /bin/sh -c");
  cmd->add_option("command", o->words, "CMD [ARGS...] [::: ARG...]")
      ->type_name("WORD");
  // Everything from the command on is the command's: `mproc run ls -l {}` needs no `--`.
  cmd->positionals_at_end();
  cmd->footer(run_help);
  cmd->callback([o, exit_code] {
    try {
      *exit_code = run(*o);
    } catch (const UsageError& e) {
      fmt::print(stderr, "mproc run: {}\n", e.what());
      *exit_code = usage_error;
    } catch (const std::exception& e) {
      fmt::print(stderr, "mproc run: {}\n", e.what());
      *exit_code = usage_error;
    }
  });
}

}  // namespace mproc::cli
