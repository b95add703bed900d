// `mproc run`: a parallel command runner that takes GNU parallel's options and replacement
// strings (run_jobs.hpp parses them and builds each job's command).
//
//   mproc run [OPTIONS] [--] CMD [ARGS...] [::: ARG... | :::: FILE...]...
//
// The runner is a single-threaded event loop: each job is fork() + execvp() in a process
// group of its own. Its stdout and stderr go straight to two unlinked temporary files (the
// spools: O_TMPFILE, else mkstemp + unlink), copied out when it ends, so the runner's
// memory does not grow with what a job writes and nothing is left on disk however the
// runner ends; with --line-buffer they go through pipes the loop reads into the spools.
// poll() watches the pipes plus a signalfd for SIGCHLD, SIGINT, SIGTERM and SIGHUP, and
// its timeout is the nearest deadline (--timeout, --delay, a kill's grace). So a job never
// blocks on a full pipe, a signal arriving between two checks is never lost (it waits in
// the signalfd), and nothing sleeps blindly. Every child is reaped before the runner
// returns. A guard process outlives a SIGKILLed runner just long enough to SIGKILL every
// job's process group (see Guard).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "commands.hpp"
#include "run_jobs.hpp"
#include "text.hpp"
#include <mproc/cpu_count.hpp>
#include <mproc/detail/trace.hpp>

namespace mproc::cli {
namespace {

using namespace run_detail;
using Clock = std::chrono::steady_clock;

/// GNU parallel's exit codes: the number of failed jobs up to this; 255 for other errors.
constexpr int max_exit_code = 101;
constexpr int run_error = 255;
/// How long a job may take to die after SIGTERM before its process group gets SIGKILL.
constexpr auto kill_grace = std::chrono::seconds(1);
constexpr std::size_t read_chunk = 64 * 1024;

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

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev != nullptr ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", sig);
}

/// An unlinked temporary file in $TMPDIR (else /tmp), read and write; -errno on failure.
/// Unlinked from the start, so it goes with its last descriptor whatever kills whom.
int open_spool() {
  const char* env = std::getenv("TMPDIR");
  const std::string dir = env != nullptr && *env != '\0' ? env : "/tmp";
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  if (errno == EMFILE || errno == ENFILE) return -errno;
  // File systems without O_TMPFILE (EOPNOTSUPP, EISDIR on old kernels): a name for a moment.
  std::string path = dir + "/mproc-run-XXXXXX";
  fd = ::mkostemp(path.data(), O_CLOEXEC);
  if (fd < 0) return -errno;
  ::unlink(path.c_str());
  return fd;
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

/// Kills every job's process group when the runner dies, even by SIGKILL, which no code in
/// the runner survives to handle. A forked process holding the read end of a pipe: each job,
/// before it execs, writes its pid (its group id) there; the runner writes -pid once it has
/// reaped the job (from then on the id may be reused). When every write end is gone - the
/// runner has exited, however - the guard SIGKILLs the groups still listed and exits.
/// PR_SET_PDEATHSIG alone would reach only each job's first process, not what it started.
class Guard {
 public:
  Guard() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0)
      throw std::system_error(errno, std::generic_category(), "pipe for mproc run's guard");
    pid_ = ::fork();
    if (pid_ < 0) {
      const int e = errno;
      ::close(p[0]);
      ::close(p[1]);
      throw std::system_error(e, std::generic_category(), "fork of mproc run's guard");
    }
    if (pid_ == 0) {
      ::close(p[1]);
      serve(p[0]);
    }
    ::close(p[0]);
    fd_ = p[1];
  }
  ~Guard() {
    ::close(fd_);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;

  /// The write end, for a job to announce itself between fork and exec.
  int fd() const { return fd_; }
  /// The job with process group `pgid` has been reaped.
  void forget(pid_t pgid) const {
    const std::int32_t v = -static_cast<std::int32_t>(pgid);
    write_all(fd_, std::string_view(reinterpret_cast<const char*>(&v), sizeof v));
  }

 private:
  [[noreturn]] static void serve(int in) {
    // Ctrl-C and a SIGTERM meant for the runner's group are the runner's to handle; the
    // guard stays until the runner is gone.
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) ::signal(s, SIG_IGN);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Hold nothing of the runner's open: a reader of its stdout must see EOF when it goes.
    const int null = ::open("/dev/null", O_RDWR);
    for (int fd = 0; fd <= 2; ++fd) ::dup2(null, fd);
    if (::dup2(in, 3) == 3) in = 3;
    ::syscall(SYS_close_range, 4U, ~0U, 0U);
    std::set<pid_t> groups;
    char buf[4096];
    std::size_t have = 0;
    for (;;) {
      const ssize_t n = ::read(in, buf + have, sizeof buf - have);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      have += static_cast<std::size_t>(n);
      std::size_t at = 0;
      for (; at + 4 <= have; at += 4) {
        std::int32_t v;
        std::memcpy(&v, buf + at, 4);
        if (v > 0) groups.insert(v);
        else groups.erase(-v);
      }
      std::memmove(buf, buf + at, have - at);
      have -= at;
    }
    for (pid_t g : groups) ::kill(-g, SIGKILL);
    ::_exit(0);
  }

  pid_t pid_ = -1;
  int fd_ = -1;
};

/// The --joblog file, in GNU parallel's format. Disabled when the path is empty.
class JobLog {
 public:
  JobLog(const std::string& path, bool append) {
    if (path.empty()) return;
    f_ = std::fopen(path.c_str(), append ? "ae" : "we");
    if (f_ == nullptr)
      throw UsageError(fmt::format("cannot open joblog '{}': {}", path, std::strerror(errno)));
    if (!append)
      fmt::print(f_, "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n");
    if (std::fflush(f_) != 0)
      throw UsageError(fmt::format("cannot write joblog '{}': {}", path, std::strerror(errno)));
  }
  ~JobLog() {
    if (f_ != nullptr) std::fclose(f_);
  }
  JobLog(const JobLog&) = delete;
  JobLog& operator=(const JobLog&) = delete;

  /// One line per attempt, flushed at once so the file is current while jobs still run.
  /// Host is ":", GNU parallel's name for this machine; Send is 0 (no --pipe).
  void add(std::size_t seq, double start_epoch, double runtime, std::uint64_t received,
           int exitval, int sig, const std::string& command) {
    if (f_ == nullptr) return;
    fmt::print(f_, "{}\t:\t{:.3f}\t{:10.3f}\t0\t{}\t{}\t{}\t{}\n", seq, start_epoch, runtime,
               received, exitval, sig, command);
    if (std::fflush(f_) != 0 && !warned_) {
      warned_ = true;
      fmt::print(stderr, "mproc run: warning: cannot write the joblog: {}\n", std::strerror(errno));
    }
  }

 private:
  std::FILE* f_ = nullptr;
  bool warned_ = false;
};

// ---------------------------------------------------------------------------------------
// The runner

struct Settings {
  unsigned jobs = 1;
  double timeout = 0;
  double delay = 0;
  int retries = 0;
  bool keep_order = false;
  bool tag = false;
  OutputMode output = OutputMode::group;
  Progress progress = Progress::none;
  Halt halt;
  std::string results;
};

struct Job {
  JobInput in;
  std::string command;  // the last attempt's command line (joblog, summary)
  std::string tag;      // --tag's prefix, with its tab
  int attempts = 0;

  std::size_t seq() const { return in.seq; }
};

/// One of a job's two output streams: the spool it ends up in, and how far it is printed.
struct Stream {
  int spool = -1;
  int pipe = -1;           // --line-buffer: the job's end is the other side
  off_t size = 0;          // bytes in the spool (line-buffer mode, where the runner writes)
  off_t printed = 0;
  bool line_start = true;  // --tag: the next byte printed starts a line
};

/// One running (or ended, not yet printed) attempt of a job.
struct Attempt {
  std::size_t job = 0;
  std::size_t slot = 0;
  pid_t pid = -1;  // also its process group id
  Stream out, err;
  Clock::time_point start, end;
  double start_epoch = 0;
  std::optional<Clock::time_point> deadline;  // --timeout: SIGTERM then
  std::optional<Clock::time_point> kill_at;   // SIGKILL then, unless it has ended
  bool timed_out = false;
  bool killed = false;  // by the runner (--halt now, a signal): its output is dropped
  bool reaped = false;
  int status = 0;

  ~Attempt() {
    for (int fd : {out.spool, out.pipe, err.spool, err.pipe})
      if (fd >= 0) ::close(fd);
  }
};

/// Runs in the child between fork() and exec: only async-signal-safe calls (strerror aside,
/// which is safe here because the runner is single-threaded).
[[noreturn]] void exec_child(char* const* argv, int out_w, int err_w, const sigset_t& mask,
                             pid_t parent, int guard) {
  ::setpgid(0, 0);  // its own group, so killpg() reaches its grandchildren too
  // Dies with the runner: SIGKILL, as a job ignoring SIGTERM must not outlive it. If the
  // runner died before this call, the parent is already someone else: give up.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(126);
  // Before exec, so the group is known to the guard before it can have started anything.
  const std::int32_t me = static_cast<std::int32_t>(::getpid());
  if (::write(guard, &me, sizeof me) < 0) {
    // The guard is gone (killed on its own): run unguarded rather than not at all.
  }
  const int null = ::open("/dev/null", O_RDONLY);
  if (null > 0) {
    ::dup2(null, STDIN_FILENO);
    ::close(null);
  }
  if (out_w >= 0) ::dup2(out_w, STDOUT_FILENO);  // the originals are O_CLOEXEC; the copies not
  if (err_w >= 0) ::dup2(err_w, STDERR_FILENO);
  ::signal(SIGPIPE, SIG_DFL);  // an ignored signal would stay ignored across exec
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
  Runner(const Options& o, std::vector<JobInput> inputs, const Settings& s, JobLog& log)
      : o_(o), s_(s), log_(log), slots_(s.jobs, false) {
    jobs_.reserve(inputs.size());
    for (auto& in : inputs) {
      Job j;
      if (s_.tag) j.tag = tag_of(in) + "\t";
      j.in = std::move(in);
      jobs_.push_back(std::move(j));
    }
    for (std::size_t i = 0; i < jobs_.size(); ++i) pending_.push_back(i);
    show_progress_ = s_.progress != Progress::none && ::isatty(STDERR_FILENO) == 1;
    started_at_ = Clock::now();
    if (!o.trace.empty()) {
      try {
        tracer_ = std::make_unique<mproc::detail::Tracer>(o.trace, "run", s_.jobs, false);
      } catch (const std::invalid_argument& e) {
        throw UsageError(std::string(e.what()).replace(0, 4, "--trace"));  // "Pool: ..."
      }
    }
  }

  /// Runs every job; returns the exit code.
  int run() {
    draw_progress();
    while (!running_.empty() || (!stopping() && !pending_.empty())) {
      if (!stopping()) start_jobs();
      if (running_.empty()) {
        if (!pending_.empty() && next_start_ && !stopping()) wait_for_events();  // --delay
        continue;
      }
      wait_for_events();
      reap();
      check_timers();
      finish_reaped();
    }
    if (show_progress_) write_all(STDERR_FILENO, "\n");
    if (stop_signal_ != 0) {
      if (stop_signal_ != SIGPIPE)
        fmt::print(stderr, "mproc run: interrupted by {}: stopped {}, {} not started\n",
                   signal_name(stop_signal_), plural(stopped_, "running job"), pending_.size());
      return 128 + stop_signal_;
    }
    if (!failures_.empty()) {
      std::sort(failures_.begin(), failures_.end());
      std::string summary = fmt::format("mproc run: {} of {} failed:\n", failures_.size(),
                                        plural(jobs_.size(), "job"));
      for (const auto& [seq, reason] : failures_)
        summary += fmt::format("  seq {}: {}: {}\n", seq, reason, jobs_[seq - 1].command);
      write_all(STDERR_FILENO, summary);
    }
    if (halt_code_) return *halt_code_;
    return static_cast<int>(std::min<std::size_t>(failures_.size(), max_exit_code));
  }

 private:
  bool stopping() const { return stop_signal_ != 0 || halt_code_.has_value(); }

  void start_jobs() {
    while (!starved_ && running_.size() < s_.jobs && !pending_.empty()) {
      if (next_start_ && Clock::now() < *next_start_) return;
      const std::size_t j = pending_.front();
      pending_.pop_front();
      ++jobs_[j].attempts;
      const int err = spawn(j);
      if (s_.delay > 0)
        next_start_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(s_.delay));
      if (err == 0) continue;
      const bool transient = err == EMFILE || err == ENFILE || err == EAGAIN || err == ENOMEM;
      if (transient && !running_.empty()) {
        // Out of fds or processes for now: try again when a running job has ended.
        --jobs_[j].attempts;
        pending_.push_front(j);
        starved_ = true;
      } else {
        auto a = std::make_unique<Attempt>();
        a->job = j;
        a->start = a->end = Clock::now();
        a->start_epoch = epoch_now();
        jobs_[j].command = render(o_, jobs_[j].in, 1, jobs_.size()).line;
        write_all(STDERR_FILENO,
                  fmt::format("mproc run: cannot start job {}: {}\n", jobs_[j].seq(), std::strerror(err)));
        finish(std::move(a), -1, 0, fmt::format("could not start: {}", std::strerror(err)));
      }
    }
  }

  /// Opens a stream's spool (or its --results file) and, for --line-buffer, its pipe.
  /// Returns the fd the job writes to, or -errno.
  int open_stream(Stream& st, const std::string& results_file) {
    if (results_file.empty()) {
      st.spool = open_spool();
    } else {
      st.spool = ::open(results_file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (st.spool < 0) st.spool = -errno;
    }
    if (st.spool < 0) return std::exchange(st.spool, -1);
    if (s_.output != OutputMode::line_buffer) return st.spool;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return -errno;
    ::fcntl(p[0], F_SETFL, O_NONBLOCK);
    st.pipe = p[0];
    return p[1];
  }

  /// Starts an attempt of job `j`; 0 or the errno of what failed.
  int spawn(std::size_t j) {
    auto a = std::make_unique<Attempt>();
    a->job = j;
    a->slot = static_cast<std::size_t>(std::find(slots_.begin(), slots_.end(), false) - slots_.begin());
    Rendered cmd = render(o_, jobs_[j].in, a->slot + 1, jobs_.size());
    jobs_[j].command = cmd.line;
    int out_w = -1, err_w = -1;
    if (s_.output != OutputMode::ungroup) {
      std::string out_file, err_file;
      if (!s_.results.empty()) {
        const std::string dir = results_dir(s_.results, jobs_[j].in);
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) return ec.value();
        out_file = dir + "/stdout";
        err_file = dir + "/stderr";
        const int seq = ::open((dir + "/seq").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (seq >= 0) {
          write_all(seq, std::to_string(jobs_[j].seq()));
          ::close(seq);
        }
      }
      out_w = open_stream(a->out, out_file);
      if (out_w < 0) return -out_w;
      err_w = open_stream(a->err, err_file);
      if (err_w < 0) {
        if (out_w != a->out.spool) ::close(out_w);
        return -err_w;
      }
    }
    std::vector<char*> argv;
    for (auto& w : cmd.argv) argv.push_back(w.data());
    argv.push_back(nullptr);
    a->start = Clock::now();
    a->start_epoch = epoch_now();
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) exec_child(argv.data(), out_w, err_w, signals_.old_mask(), parent, guard_.fd());
    const int fork_errno = errno;
    if (s_.output == OutputMode::line_buffer) {  // the job's ends of the pipes
      ::close(out_w);
      ::close(err_w);
    }
    if (pid < 0) return fork_errno;
    // Also here, not only in the child: whichever runs first, the group exists before the
    // runner might killpg() it. EACCES once the child has exec'd is harmless.
    ::setpgid(pid, pid);
    a->pid = pid;
    slots_[a->slot] = true;
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
    std::vector<std::pair<Attempt*, Stream*>> owners{{nullptr, nullptr}};
    for (auto& a : running_)
      for (Stream* st : {&a->out, &a->err})
        if (st->pipe >= 0) {
          fds.push_back({st->pipe, POLLIN, 0});
          owners.emplace_back(a.get(), st);
        }
    const int n = ::poll(fds.data(), fds.size(), poll_timeout_ms());
    if (n < 0) {
      if (errno == EINTR) return;
      throw std::system_error(errno, std::generic_category(), "poll in mproc run");
    }
    if (fds[0].revents != 0) handle_signals();
    for (std::size_t i = 1; i < fds.size(); ++i)
      if (fds[i].revents != 0) {
        drain_pipe(*owners[i].second, 16);
        if (is_live(*owners[i].first)) print_stream(*owners[i].first, *owners[i].second, false);
      }
  }

  /// --line-buffer: moves what the pipe has (up to `max_reads` chunks) into the spool;
  /// closes the pipe at EOF.
  void drain_pipe(Stream& st, int max_reads) {
    char buf[read_chunk];
    for (int i = 0; i < max_reads && st.pipe >= 0; ++i) {
      const ssize_t n = ::read(st.pipe, buf, sizeof buf);
      if (n > 0) {
        if (::pwrite(st.spool, buf, static_cast<std::size_t>(n), st.size) == n) st.size += n;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      ::close(st.pipe);  // EOF, or an error that reading again would not cure
      st.pipe = -1;
    }
  }

  int poll_timeout_ms() const {
    std::optional<Clock::time_point> next;
    auto consider = [&](const std::optional<Clock::time_point>& t) {
      if (t && (!next || *t < *next)) next = t;
    };
    for (const auto& a : running_) {
      if (a->reaped) return 0;
      consider(a->deadline);
      consider(a->kill_at);
    }
    if (!stopping() && !pending_.empty() && running_.size() < s_.jobs) consider(next_start_);
    if (show_progress_) consider(Clock::now() + std::chrono::seconds(1));
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

  /// Kills every running job: SIGTERM to its group, SIGKILL after the grace period (at
  /// once when `hard`). Their output is dropped.
  void kill_running(bool hard) {
    const auto now = Clock::now();
    for (auto& a : running_) {
      if (a->reaped) continue;
      if (!a->killed && stop_signal_ != 0) ++stopped_;
      a->killed = true;
      ::killpg(a->pid, hard ? SIGKILL : SIGTERM);
      a->deadline.reset();
      a->kill_at = hard ? std::nullopt : std::optional(now + kill_grace);
    }
  }

  /// Stops the run on a signal: no new jobs, running ones killed (at once on a second one).
  void stop(int sig) {
    const bool again = stop_signal_ != 0;
    if (!again) stop_signal_ = sig;
    kill_running(again);
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
    draw_progress();
  }

  void finish_reaped() {
    for (std::size_t i = 0; i < running_.size();) {
      Attempt& a = *running_[i];
      if (!a.reaped) {
        ++i;
        continue;
      }
      // Everything the job's process wrote is in the pipes by now. Background processes it
      // left behind may hold them open for ever, so take what is there and close.
      for (Stream* st : {&a.out, &a.err}) {
        drain_pipe(*st, 1 << 14);
        if (st->pipe >= 0) ::close(std::exchange(st->pipe, -1));
      }
      // A killed job's group may still hold processes that ignored SIGTERM. The group id
      // cannot be reused while any of them lives, so this reaches only them.
      if (a.timed_out || a.killed) ::killpg(a.pid, SIGKILL);
      guard_.forget(a.pid);
      slots_[a.slot] = false;

      int exitval = 0, sig = 0;
      std::string reason;
      if (WIFSIGNALED(a.status)) {
        sig = WTERMSIG(a.status);
        reason = fmt::format("killed by {}", signal_name(sig));
      } else {
        exitval = WEXITSTATUS(a.status);
        reason = fmt::format("exit code {}", exitval);
        if (exitval == 127) reason += " (command not found)";
        if (exitval == 126) reason += " (command not executable)";
      }
      if (a.timed_out) {
        reason = fmt::format("timed out after {:g} s", s_.timeout);
        exitval = -1;  // GNU parallel's joblog value for a job it killed
      } else if (a.killed) {
        exitval = -1;
      } else if (exitval == 0 && sig == 0) {
        reason.clear();
      }
      std::unique_ptr<Attempt> done = std::move(running_[i]);
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
      starved_ = false;
      finish(std::move(done), exitval, sig, std::move(reason));
    }
  }

  std::uint64_t stdout_bytes(const Attempt& a) const {
    if (a.out.spool < 0) return 0;
    if (s_.output == OutputMode::line_buffer) return static_cast<std::uint64_t>(a.out.size);
    struct stat st {};
    return ::fstat(a.out.spool, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  }

  /// Logs an ended attempt, then retries the job or delivers its output. An empty
  /// `reason` means success.
  /// One event per attempt, in its job slot's lane, named after its command.
  void trace(const Attempt& a, const Job& job, const std::string& reason) {
    using namespace mproc::detail;
    TraceEvent e;
    e.method = "job";
    e.job = job.seq();
    e.first = job.seq();
    e.items = 1;
    // steady_clock is CLOCK_MONOTONIC, the trace's clock.
    auto ns = [](Clock::time_point t) {
      return static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
    };
    e.start_ns = ns(a.start);
    e.end_ns = ns(a.end);
    e.lane = static_cast<std::uint32_t>(a.slot);
    e.worker_pid = a.pid;
    e.errors = reason.empty() ? 0 : 1;
    e.status = a.killed      ? TraceStatus::cancelled
               : a.timed_out ? TraceStatus::timeout
               : reason.empty() ? TraceStatus::ok
                                : TraceStatus::error;
    e.code.label = trace_label(job.command);
    e.error = reason;
    tracer_->record(e);
  }

  void finish(std::unique_ptr<Attempt> a, int exitval, int sig, std::string reason) {
    Job& job = jobs_[a->job];
    if (tracer_) trace(*a, job, reason);
    log_.add(job.seq(), a->start_epoch, std::chrono::duration<double>(a->end - a->start).count(),
             stdout_bytes(*a), exitval, sig, job.command);
    if (a->killed) return;  // killed by the runner: its output is cut short
    if (!reason.empty() && job.attempts <= s_.retries && !stopping()) {
      pending_.push_front(a->job);  // before the others, so --keep-order is not held up
      return;
    }
    ++done_;
    const bool failed = !reason.empty();
    if (failed) failures_.emplace_back(job.seq(), std::move(reason));
    const int code = WIFSIGNALED(a->status) ? 128 + sig : exitval;
    if (!s_.keep_order) {
      print_all(*a);
    } else {
      ready_.emplace(job.seq(), std::move(a));
      flush_ready();
    }
    check_halt(failed, code);
    draw_progress();
  }

  /// --keep-order: prints the ended jobs that are next in input order, then lets the
  /// running job that is next print live (--line-buffer).
  void flush_ready() {
    for (auto it = ready_.find(next_seq_); it != ready_.end(); it = ready_.find(next_seq_)) {
      print_all(*it->second);
      ready_.erase(it);
      ++next_seq_;
    }
    for (auto& a : running_)
      if (is_live(*a)) {
        print_stream(*a, a->out, false);
        print_stream(*a, a->err, false);
      }
  }

  /// Whether a running job's output goes out as it comes (--line-buffer).
  bool is_live(const Attempt& a) const {
    if (s_.output != OutputMode::line_buffer || a.killed) return false;
    return !s_.keep_order || jobs_[a.job].seq() == next_seq_;
  }

  void print_all(Attempt& a) {
    print_stream(a, a.out, true);
    print_stream(a, a.err, true);
  }

  /// Copies the unprinted part of a stream's spool to the runner's stdout or stderr: all
  /// of it when `to_end`, else up to its last newline (--line-buffer), with --tag's prefix
  /// before every line.
  void print_stream(Attempt& a, Stream& st, bool to_end) {
    if (st.spool < 0 || stop_signal_ == SIGPIPE) return;
    const int dst = &st == &a.out ? STDOUT_FILENO : STDERR_FILENO;
    off_t end = st.size;
    if (s_.output != OutputMode::line_buffer) {
      struct stat sb {};
      if (::fstat(st.spool, &sb) != 0) return;
      end = sb.st_size;
    }
    const std::string& tag = jobs_[a.job].tag;
    if (tag.empty() && to_end) {
      // The common case: the kernel copies file to file or pipe, nothing through the runner.
      while (st.printed < end) {
        const ssize_t n = ::sendfile(dst, st.spool, &st.printed, static_cast<std::size_t>(end - st.printed));
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
          pollfd p{dst, POLLOUT, 0};
          ::poll(&p, 1, -1);
          continue;
        }
        if (n < 0 && errno == EPIPE && dst == STDOUT_FILENO) return lost_stdout();
        break;  // sendfile cannot do it (EINVAL): below, by hand
      }
    }
    std::string buf(read_chunk, '\0');
    std::string out;
    while (st.printed < end) {
      const ssize_t n = ::pread(st.spool, buf.data(), std::min<off_t>(read_chunk, end - st.printed), st.printed);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      std::string_view chunk(buf.data(), static_cast<std::size_t>(n));
      if (!to_end) {
        // Whole lines only; a chunk without a newline goes as it is.
        const auto nl = chunk.rfind('\n');
        if (nl == std::string_view::npos && (static_cast<std::size_t>(n) < read_chunk)) break;
        if (nl != std::string_view::npos) chunk = chunk.substr(0, nl + 1);
      }
      out.clear();
      for (char c : chunk) {
        if (st.line_start) out += tag;
        out += c;
        st.line_start = c == '\n';
      }
      st.printed += static_cast<off_t>(chunk.size());
      if (!write_all(dst, out) && errno == EPIPE && dst == STDOUT_FILENO) return lost_stdout();
    }
  }

  /// Nobody reads our output any more: stop as a killed program would.
  void lost_stdout() {
    if (stop_signal_ == 0) stop(SIGPIPE);
  }

  /// --halt: stops the run when its condition is met. GNU parallel's exit codes: the
  /// failing job's own for fail=1, else the number of failed jobs (a percentage of all
  /// jobs for fail=N%), 0 for success=.
  void check_halt(bool failed, int code) {
    const Halt& h = s_.halt;
    if (h.when == Halt::When::never || stopping()) return;
    const std::size_t failures = failures_.size();
    const std::size_t n = h.why == Halt::Why::fail      ? failures
                          : h.why == Halt::Why::success ? done_ - failures
                                                        : done_;
    if (h.why == Halt::Why::fail && !failed) return;
    if (h.why == Halt::Why::success && failed) return;
    const bool met = h.percent ? 100.0 * static_cast<double>(n) > h.count * static_cast<double>(done_)
                               : static_cast<double>(n) >= h.count;
    if (!met) return;
    if (h.why == Halt::Why::success) halt_code_ = 0;
    else if (h.why == Halt::Why::fail && !h.percent && h.count == 1) halt_code_ = std::clamp(code, 0, 255);
    else if (h.percent) halt_code_ = static_cast<int>(100 * failures / jobs_.size());
    else halt_code_ = static_cast<int>(std::min<std::size_t>(failures, max_exit_code));
    fmt::print(stderr, "mproc run: halting (--halt {}): {} not started{}\n",
               h.when == Halt::When::now ? "now" : "soon", plural(pending_.size(), "job"),
               h.when == Halt::When::now ? fmt::format(", {} killed", plural(running_.size(), "running job"))
                                         : fmt::format(", waiting for {}", plural(running_.size(), "running job")));
    if (h.when == Halt::When::now) kill_running(false);
  }

  void draw_progress() {
    if (!show_progress_) return;
    const auto now = Clock::now();
    if (now - last_drawn_ < std::chrono::milliseconds(100) && done_ != jobs_.size()) return;
    last_drawn_ = now;
    const std::size_t total = jobs_.size();
    const double elapsed = std::chrono::duration<double>(now - started_at_).count();
    const double eta = done_ == 0 ? 0 : elapsed / static_cast<double>(done_) * static_cast<double>(total - done_);
    const int pct = static_cast<int>(100 * done_ / std::max<std::size_t>(total, 1));
    std::string line;
    switch (s_.progress) {
      case Progress::bar: {
        const std::size_t width = 30, filled = width * done_ / std::max<std::size_t>(total, 1);
        line = fmt::format("{:3}% {}/{} [{}{}] ETA {:.0f}s", pct, done_, total, std::string(filled, '='),
                           std::string(width - filled, ' '), eta);
        break;
      }
      case Progress::eta:
        line = fmt::format("ETA: {:.0f}s Left: {} AVG: {:.2f}s  local:{}/{}/{}%", eta, total - done_,
                           done_ == 0 ? 0.0 : elapsed / static_cast<double>(done_), running_.size(), done_, pct);
        break;
      default:
        line = fmt::format("local:{}/{}/{}%/{:.1f}s", running_.size(), done_, pct,
                           done_ == 0 ? 0.0 : elapsed / static_cast<double>(done_));
    }
    write_all(STDERR_FILENO, "\r" + line + "\033[K");
  }

  const Options& o_;
  Settings s_;
  JobLog& log_;
  std::vector<Job> jobs_;
  SignalRoute signals_;
  Guard guard_;
  std::vector<bool> slots_;  // {%}: which job slots are taken
  std::unique_ptr<mproc::detail::Tracer> tracer_;  // --trace
  std::deque<std::size_t> pending_;  // indexes into jobs_
  std::vector<std::unique_ptr<Attempt>> running_;
  std::optional<Clock::time_point> next_start_;  // --delay
  bool starved_ = false;  // a start failed for want of fds or processes
  int stop_signal_ = 0;
  std::optional<int> halt_code_;
  std::size_t stopped_ = 0;
  std::size_t done_ = 0;
  std::vector<std::pair<std::size_t, std::string>> failures_;  // seq, reason
  std::map<std::size_t, std::unique_ptr<Attempt>> ready_;       // --keep-order backlog
  std::size_t next_seq_ = 1;
  bool show_progress_ = false;
  Clock::time_point started_at_, last_drawn_{};
};

/// Makes sure fds 0-2 are open, so that no pipe lands on them and a job's dup2() is real.
void ensure_std_fds() {
  for (int fd = 0; fd <= 2; ++fd)
    if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF) ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
}

/// Raises the soft limit on open files to the hard one: every running job holds two
/// spools, and with --keep-order so does every ended job still waiting for its turn.
/// Returns the limit.
rlim_t raise_fd_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return 1024;
  if (r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);
    ::getrlimit(RLIMIT_NOFILE, &r);
  }
  return r.rlim_cur;
}

int run(const std::vector<std::string>& args) {
  ensure_std_fds();
  Options o = parse_options(args);
  if (o.help) return -1;
  if (o.output == OutputMode::ungroup && (o.tag || !o.results.empty()))
    throw UsageError("--tag and --results need the output captured: not with --ungroup");
  Settings s;
  const rlim_t fds = raise_fd_limit();
  // -j 0: as many as the open-file limit allows (each job holds up to four descriptors).
  s.jobs = parse_jobs(o.jobs, cpu_count(), static_cast<unsigned>(std::clamp<rlim_t>(fds / 4, 1, 1'000'000)));
  s.timeout = o.timeout;
  s.delay = o.delay;
  s.retries = o.retries;
  s.keep_order = o.keep_order;
  s.tag = o.tag;
  s.output = o.output;
  s.progress = o.progress;
  s.halt = o.halt;
  s.results = o.results;
  std::vector<JobInput> inputs = make_inputs(o, s.jobs);
  s.jobs = static_cast<unsigned>(std::min<std::size_t>(s.jobs, inputs.size()));
  if (o.dry_run) {
    std::string out;
    for (const auto& in : inputs) out += render(o, in, (in.seq - 1) % s.jobs + 1, inputs.size()).line + "\n";
    write_all(STDOUT_FILENO, out);
    return 0;
  }
  JobLog log(o.joblog, o.joblog_append);
  std::fflush(stdout);
  Runner runner(o, std::move(inputs), s, log);
  return runner.run();
}

constexpr const char* run_help = R"(Usage: mproc run [OPTIONS] [--] CMD [ARGS...] [::: ARG... | :::: FILE...]...
Runs CMD once per argument, up to -j at a time, with GNU parallel's options.

Options (GNU parallel's meaning; docs/run.md compares them):
  -j, --jobs N      jobs at a time: N, N% of the CPUs, +N, -N, 0 (as many as
                    the open-file limit allows); default 100%
  -k, --keep-order  print jobs' output in input order (default: as they end)
  --group           print each job's output as a block when it ends (default)
  --line-buffer     print whole lines as they come; -u, --ungroup: as they come
  --tag             prefix each output line with the arguments and a tab
  -N N              N arguments per job ({1}..{N}); -X, -m: as many as fit
  --colsep REGEX    split each argument into columns {1} {2} ...
  -a, --arg-file F  read arguments from F (several: every combination)
  -0, --null        arguments end with NUL, not newline
  --dry-run         print the commands, run nothing
  --halt WHEN,WHY=N  now|soon, fail|success|done=N or N%: stop early
  --timeout SECS    SIGTERM a job after SECS, SIGKILL 1 s later
  --delay SECS      wait SECS between job starts
  --retries N       run a failed job up to N more times
  --joblog FILE     GNU parallel's 9-column job log (+FILE appends)
  --trace FILE      a timeline of the jobs, one event each (see trace-view)
  --results DIR     also save output as DIR/1/ARG/stdout, stderr, seq
  --bar, --eta, --progress  progress on stderr, when it is a terminal
  --shell           run the line with /bin/sh -c, replacement values quoted
  --will-cite       accepted and ignored
Any other option is an error, naming it.

Arguments: ':::' words, ':::: FILE' lines, ':::+' / '::::+' linked to the
  source before (side by side, as long as the shortest), else every
  combination, the first source varying slowest; no source: stdin's lines.
  Empty lines are skipped; no arguments at all is an error (exit 255).
Replacement strings: {} {.} {/} {//} {/.} {#} {%} {##} {N} {N.} {N/} {N//}
  {N/.} {-N}; without any, the arguments are appended.
CMD is executed directly (execvp, no shell: $VAR, ;, * and quotes stay
  literal); each replaced value is one word. With --shell the words are joined
  with spaces and /bin/sh -c runs the line, every value quoted for the shell
  (so '::: "a;id"' prints a;id). A command that cannot be executed fails with
  exit code 127 (not found) or 126.
Each job runs in a process group of its own, stdin from /dev/null, stdout and
  stderr spooled to unlinked temporary files in $TMPDIR (or /tmp), printed
  when it ends, stdout first. The jobs die with the runner, even by SIGKILL.
--retries: only the last attempt's output is printed.
--joblog: Seq Host Starttime JobRuntime Send Receive Exitval Signal Command,
  one line per attempt, in completion order; Exitval -1 for a job the runner
  killed or could not start.
Failed jobs are listed on stderr at the end ("mproc run: N of M jobs failed:").
Exit code: the number of failed jobs, capped at 101 (0: all succeeded); with
  --halt GNU parallel's (the failed job's own code for fail=1); 255 for usage
  and other errors; 128+N when the runner got signal N (SIGINT, SIGTERM,
  SIGHUP), after it has killed the running jobs' process groups.)";

}  // namespace

void add_run(CLI::App& app, int* exit_code) {
  // Listed in `mproc --help` only: main() hands every word after `run` to run_main, since
  // GNU parallel's options (-j +1, -0, --halt now,fail=1, :::+, a command after --) follow
  // rules of their own, not CLI11's.
  app.add_subcommand("run", "Run a command per argument in parallel");
  (void)exit_code;
}

int run_main(const std::vector<std::string>& args) {
  try {
    const int code = run(args);
    if (code >= 0) return code;
    fmt::print("{}\n", run_help);
    return ok;
  } catch (const UsageError& e) {
    fmt::print(stderr, "mproc run: {}\n", e.what());
  } catch (const std::exception& e) {
    fmt::print(stderr, "mproc run: {}\n", e.what());
  }
  return run_error;
}

}  // namespace mproc::cli
