// Process: real forks, real signals, real zombies, fds counted in /proc, daemons killed
// with their (really SIGKILLed) parents.
#include <mproc/process.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// ThreadSanitizer builds read this at start-up (the sanitizers' *_default_options hook;
// other builds ignore it). A daemon child _exit()s while its parent-watcher thread runs,
// and TSan would sleep atexit_sleep_ms (1 s) in every such child; and a daemon started
// from a thread starts that watcher after a fork of a multi-threaded process, which TSan
// refuses unless die_after_fork=0. process_helper says the same.
extern "C" const char* __tsan_default_options() { return "atexit_sleep_ms=0:die_after_fork=0"; }

namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

/// 'R', 'S', 'Z', ... or 0 when no such process exists.
char proc_state(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), {});
  const auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() ? 0 : stat[close + 2];
}

/// Exists and is not dead. An orphan killed after its parent died is reparented to
/// pid 1, which in a container may never reap it: a zombie counts as gone.
bool running(pid_t pid) {
  const char s = proc_state(pid);
  return s != 0 && s != 'Z' && s != 'X';
}

bool gone_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (running(pid) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  return !running(pid);
}

std::string read_file(const char* path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

/// The helper program with `mode`; its stdout goes to a pipe (returned) or to a file.
struct Helper {
  pid_t pid = -1;
  int out = -1;

  explicit Helper(const char* mode, const char* stdout_file = nullptr) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    pid = ::fork();
    if (pid == 0) {
      const int fd = stdout_file ? ::open(stdout_file, O_WRONLY | O_CREAT | O_TRUNC, 0600) : fds[1];
      ::dup2(fd, 1);
      ::execl(MPROC_PROCESS_HELPER, MPROC_PROCESS_HELPER, mode, static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    out = fds[0];
  }
  Helper(const Helper&) = delete;
  Helper& operator=(const Helper&) = delete;
  ~Helper() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    ::close(out);
  }

  /// The next line of output as a pid (0 at end of output).
  pid_t read_pid() {
    std::string line;
    char c;
    while (::read(out, &c, 1) == 1 && c != '\n') line += c;
    return static_cast<pid_t>(std::atoi(line.c_str()));
  }
  /// Waits for the helper to end; its wait status.
  int wait() {
    int ws = 0;
    ::waitpid(pid, &ws, 0);
    pid = -1;
    return ws;
  }
  void kill_and_wait() {
    ::kill(pid, SIGKILL);
    wait();
  }
};

// --- exit codes ---------------------------------------------------------------------

TEST(Process, ExitCodeZeroAfterANormalRun) {
  mproc::Process p([] {});
  EXPECT_FALSE(p.exitcode().has_value());
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.pid(), 0);
  p.start();
  EXPECT_GT(p.pid(), 0);
  EXPECT_NE(p.pid(), ::getpid());
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(p.is_alive());
}

TEST(Process, ExitStatusOfUnderscoreExit) {
  mproc::Process p([] { ::_exit(7); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 7);
}

TEST(Process, SignalsGiveMinusTheSignalNumber) {
  mproc::Process killed([] { ::pause(); });
  killed.start();
  ::kill(killed.pid(), SIGKILL);  // from outside, as the OOM killer would
  killed.join();
  EXPECT_EQ(killed.exitcode(), -9);

  mproc::Process termed([] { ::pause(); });
  termed.start();
  termed.terminate();
  termed.join();
  EXPECT_EQ(termed.exitcode(), -15);

  mproc::Process k([] { ::pause(); });
  k.start();
  k.kill();
  k.join();
  EXPECT_EQ(k.exitcode(), -9);
  k.kill();  // reaped: nothing to signal, and no error
  k.terminate();
}

namespace custom {
struct ParseFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace custom

TEST(Process, EscapingExceptionPrintsTypeAndMessageAndExitsOne) {
  char path[] = "/tmp/mproc-process-test-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  const int saved = ::dup(2);
  ::dup2(fd, 2);  // the children inherit this stderr
  mproc::Process a(mproc::ProcessOptions{.name = "thrower"},
                   [] { throw std::invalid_argument("bad input 42"); });
  mproc::Process b([] { throw custom::ParseFailure("line 3"); });
  a.start();
  b.start();
  ::dup2(saved, 2);
  ::close(saved);
  ::close(fd);
  a.join();
  b.join();
  EXPECT_EQ(a.exitcode(), 1);
  EXPECT_EQ(b.exitcode(), 1);
  const std::string err = read_file(path);
  ::unlink(path);
  EXPECT_THAT(err, HasSubstr("Process thrower (pid " + std::to_string(a.pid()) +
                             "): std::invalid_argument: bad input 42\n"));
  EXPECT_THAT(err, HasSubstr("Process " + b.name() + " (pid " + std::to_string(b.pid()) +
                             "): (anonymous namespace)::custom::ParseFailure: line 3\n"));
}

// --- joining ------------------------------------------------------------------------

TEST(Process, JoinWithTimeoutReturnsFalseWhileTheChildSleeps) {
  mproc::Process p([] { ::sleep(30); });
  p.start();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(p.join(200ms));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 200ms);
  EXPECT_FALSE(p.join(0s));
  EXPECT_TRUE(p.is_alive());
  EXPECT_FALSE(p.exitcode().has_value());
  p.kill();
  EXPECT_TRUE(p.join(10s));
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), -9);
}

TEST(Process, JoinWithTimeoutReturnsAsSoonAsTheChildEnds) {
  mproc::Process p([] { ::usleep(50'000); });
  p.start();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(p.join(std::chrono::hours::max()));  // saturates, does not overflow
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_TRUE(p.join(1ms));  // already reaped
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, NoZombieAfterJoinOrIsAlive) {
  mproc::Process p([] {});
  p.start();
  const pid_t pid = p.pid();
  p.join();
  EXPECT_EQ(proc_state(pid), 0) << "the child is still in /proc (a zombie?)";

  // is_alive() and exitcode() reap a child that has ended, as Python's do.
  mproc::Process q([] {});
  q.start();
  const pid_t qpid = q.pid();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (q.is_alive() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(proc_state(qpid), 0);
  EXPECT_EQ(q.exitcode(), 0);
}

TEST(Process, ConcurrentJoinsAllReturnAndAgree) {
  mproc::Process p([] {
    ::usleep(100'000);
    ::_exit(5);
  });
  p.start();
  std::atomic<int> fives{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      if (i % 2 == 0) {
        p.join();
      } else {
        while (!p.join(7ms)) {
          (void)p.is_alive();
        }
      }
      if (p.exitcode() == 5 && !p.is_alive()) ++fives;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(fives.load(), 4);
}

TEST(Process, TwoHundredProcessesLeaveNoFdBehind) {
  {
    // The first daemon creates the process-wide life pipe, which stays: not a leak.
    mproc::Process warm_up({.daemon = true}, [] {});
    warm_up.start();
    warm_up.join();
  }
  const std::size_t before = open_fds();
  for (int i = 0; i < 200; ++i) {
    mproc::Process p({.daemon = i % 2 == 1}, [i] { ::_exit(i % 7); });
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), i % 7);
  }
  EXPECT_EQ(open_fds(), before);
}

// --- what the child sees ------------------------------------------------------------

int global_value = 0;

TEST(Process, ChildSeesParentMemoryAndItsWritesStayInTheChild) {
  global_value = 42;  // set before start(): the child sees it
  int local = 7;
  mproc::Process p([&local] {
    const bool saw = global_value == 42 && local == 7;
    global_value = -1;  // the child's own copy
    local = -1;
    ::_exit(saw && global_value == -1 ? 0 : 1);
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(global_value, 42);
  EXPECT_EQ(local, 7);
}

TEST(Process, ArgumentsAreStoredDecayedAndMoveOnlyOnesWork) {
  auto check = [](std::string s, const std::vector<int>& v) {
    ::_exit(s == "abc" && v.size() == 3 ? 0 : 1);
  };
  std::string s = "abc";
  mproc::Process p(check, s, std::vector<int>{1, 2, 3});
  s = "changed after construction";  // the Process holds its own copy
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);

  mproc::Process q([](std::unique_ptr<int> v) { ::_exit(*v); }, std::make_unique<int>(4));
  q.start();
  q.join();
  EXPECT_EQ(q.exitcode(), 4);

  mproc::Process r([u = std::make_unique<int>(5)] { ::_exit(*u); });
  r.start();
  r.join();
  EXPECT_EQ(r.exitcode(), 5);
}

TEST(Process, TheCallableIsReleasedInTheParentAfterStart) {
  auto token = std::make_shared<int>(0);
  mproc::Process p([token] {});
  EXPECT_EQ(token.use_count(), 2);
  p.start();
  EXPECT_EQ(token.use_count(), 1);  // no cycle if the callable holds the Process itself
  p.join();
}

TEST(Process, TheChildCanUseItsOwnHandle) {
  // The handle's lock must be usable in the child: it is not held across fork().
  mproc::Process* self = nullptr;
  mproc::Process p({.name = "selfie"}, [&self] {
    bool ok = self->name() == "selfie" && self->pid() == ::getpid() && self->is_alive() &&
              !self->exitcode().has_value();
    try {
      self->join();  // only the creating process may join
      ok = false;
    } catch (const std::logic_error&) {
    }
    ::_exit(ok ? 0 : 1);
  });
  self = &p;
  p.start();
  ASSERT_TRUE(p.join(20s)) << "the child deadlocked on its own handle";
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, ParentBufferedOutputIsNotDuplicated) {
  char path[] = "/tmp/mproc-stdout-XXXXXX";
  ::close(::mkstemp(path));
  Helper h("stdout", path);
  const int ws = h.wait();
  ASSERT_TRUE(WIFEXITED(ws));
  EXPECT_EQ(WEXITSTATUS(ws), 0);
  const std::string out = read_file(path);
  ::unlink(path);
  EXPECT_EQ(out, "parent-line\nchild-line\n");
}

// --- names and current_process ------------------------------------------------------

TEST(Process, CurrentProcessInParentAndChild) {
  const auto me = mproc::current_process();
  EXPECT_EQ(me.name, "MainProcess");
  EXPECT_EQ(me.pid, ::getpid());
  EXPECT_FALSE(me.is_pool_worker);

  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  mproc::Process p(mproc::ProcessOptions{.name = "kid"}, [&fds] {
    const auto info = mproc::current_process();
    const std::string line =
        std::to_string(info.pid) + " " + info.name + " " + (info.is_pool_worker ? "1" : "0");
    ::_exit(::write(fds[1], line.data(), line.size()) == static_cast<ssize_t>(line.size()) ? 0 : 1);
  });
  p.start();
  p.join();
  ::close(fds[1]);
  char buf[128] = {};
  const ssize_t n = ::read(fds[0], buf, sizeof buf - 1);
  ::close(fds[0]);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf), std::to_string(p.pid()) + " kid 0");
  EXPECT_EQ(mproc::current_process().name, "MainProcess");  // unchanged in the parent
}

TEST(Process, DefaultNamesCountLikePython) {
  mproc::Process a([] {});
  mproc::Process b([] {});
  ASSERT_EQ(a.name().rfind("Process-", 0), 0u);
  const int na = std::stoi(a.name().substr(8));
  EXPECT_EQ(b.name(), "Process-" + std::to_string(na + 1));
  b.set_name("renamed");
  EXPECT_EQ(b.name(), "renamed");

  // Inside a child, numbering restarts under the child's identity: "Process-N:1".
  mproc::Process* self = nullptr;
  mproc::Process c([&self] {
    mproc::Process grandchild([] {});
    ::_exit(grandchild.name() == self->name() + ":1" ? 0 : 1);
  });
  self = &c;
  c.start();
  c.join();
  EXPECT_EQ(c.exitcode(), 0);
}

// --- handles, lifetime, active_children ---------------------------------------------

TEST(Process, CopiesShareTheChild) {
  mproc::Process p([] { ::_exit(3); });
  mproc::Process copy = p;
  EXPECT_TRUE(copy == p);
  p.start();
  EXPECT_EQ(copy.pid(), p.pid());
  copy.join();
  EXPECT_EQ(p.exitcode(), 3);
  mproc::Process moved = std::move(copy);
  EXPECT_EQ(copy.exitcode(), 3);  // a "moved-from" handle still works
  EXPECT_TRUE(moved == p);
}

TEST(Process, DestructorJoinsAnUnjoinedChild) {
  pid_t pid = 0;
  const auto t0 = std::chrono::steady_clock::now();
  {
    mproc::Process p([] { ::usleep(200'000); });
    p.start();
    pid = p.pid();
  }
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 150ms) << "the child was not waited for";
  EXPECT_EQ(proc_state(pid), 0) << "not reaped";
}

TEST(Process, DestructorKillsAndReapsADaemon) {
  pid_t pid = 0;
  const auto t0 = std::chrono::steady_clock::now();
  {
    mproc::Process p({.daemon = true}, [] { ::sleep(60); });
    p.start();
    pid = p.pid();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(proc_state(pid), 0);
}

TEST(Process, ActiveChildrenListsTheRunningOnes) {
  // Daemons, so that a failed assertion cannot leave the test waiting for ever in their
  // destructors.
  mproc::Process a({.daemon = true}, [] { ::pause(); });
  mproc::Process b({.name = "bee", .daemon = true}, [] { ::pause(); });
  mproc::Process done([] {});
  mproc::Process never([] {});
  a.start();
  b.start();
  done.start();
  const pid_t done_pid = done.pid();
  // Let `done` finish without joining it: wait until it is waitable, without reaping it.
  // (Not "until /proc says Z": a leader thread is a zombie before its process is waitable.)
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(done_pid), &info, WEXITED | WNOWAIT), 0);
  ASSERT_EQ(proc_state(done_pid), 'Z');

  auto kids = mproc::active_children();
  std::string listed;
  for (auto& k : kids) listed += k.name() + "/" + std::to_string(k.pid()) + " ";
  ASSERT_EQ(kids.size(), 2u) << listed << "done=" << done.name() << "/" << done_pid;
  std::sort(kids.begin(), kids.end(), [](auto& x, auto& y) { return x.pid() < y.pid(); });
  std::vector<pid_t> want{a.pid(), b.pid()};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(kids[0].pid(), want[0]);
  EXPECT_EQ(kids[1].pid(), want[1]);
  EXPECT_TRUE(kids[0].name() == "bee" || kids[1].name() == "bee");
  EXPECT_EQ(proc_state(done_pid), 0) << "active_children() reaps finished children";
  EXPECT_EQ(done.exitcode(), 0);

  for (auto& k : kids) k.terminate();  // handles to the same children
  a.join();
  b.join();
  EXPECT_EQ(a.exitcode(), -15);
  EXPECT_EQ(b.exitcode(), -15);
  EXPECT_TRUE(mproc::active_children().empty());
}

TEST(Process, MisuseIsReported) {
  mproc::Process p([] {});
  EXPECT_THROW(p.join(), std::logic_error);
  EXPECT_THROW((void)p.join(1s), std::logic_error);
  p.terminate();  // before start: nothing to signal
  p.set_daemon(true);
  EXPECT_TRUE(p.daemon());
  p.set_daemon(false);
  p.start();
  EXPECT_THROW(p.start(), std::logic_error);
  EXPECT_THROW(p.set_daemon(true), std::logic_error);
  p.join();
  EXPECT_THROW(p.start(), std::logic_error);
}

// --- daemons die with their parent --------------------------------------------------

TEST(Daemon, KilledWhenTheParentIsSigkilled) {
  Helper h("daemon");
  const pid_t daemon = h.read_pid();
  ASSERT_GT(daemon, 0);
  EXPECT_TRUE(running(daemon));
  h.kill_and_wait();
  EXPECT_TRUE(gone_within(daemon, 1s));
}

TEST(Daemon, StartedFromAnExitedThreadLivesWithTheParentAndDiesWithIt) {
  Helper h("daemon-thread");
  const pid_t daemon = h.read_pid();
  ASSERT_GT(daemon, 0);
  // PR_SET_PDEATHSIG alone would have killed it when the starting thread exited.
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(running(daemon)) << "killed while its parent lives";
  h.kill_and_wait();
  EXPECT_TRUE(gone_within(daemon, 1s));
}

TEST(Daemon, AnotherForkedChildDoesNotKeepTheLifePipeOpen) {
  Helper h("daemon-thread-fork");
  const pid_t daemon = h.read_pid();
  const pid_t plain = h.read_pid();
  ASSERT_GT(daemon, 0);
  ASSERT_GT(plain, 0);
  h.kill_and_wait();
  const bool gone = gone_within(daemon, 1s);
  ::kill(plain, SIGKILL);
  ::kill(daemon, SIGKILL);
  EXPECT_TRUE(gone) << "a plain fork() of the parent held the life pipe's write end";
}

TEST(Daemon, KilledWhenTheParentReturnsFromMain) {
  Helper h("daemon-exit");
  const pid_t daemon = h.read_pid();
  ASSERT_GT(daemon, 0);
  const int ws = h.wait();
  EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
  EXPECT_TRUE(gone_within(daemon, 1s));
}

TEST(Daemon, KilledWhenTheParentCallsExitWithTheHandleLeaked) {
  Helper h("daemon-exit-leaked");
  const pid_t daemon = h.read_pid();
  ASSERT_GT(daemon, 0);
  const int ws = h.wait();
  EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
  EXPECT_TRUE(gone_within(daemon, 1s));
}

TEST(Daemon, AGrandchildDaemonWatchesItsOwnParent) {
  Helper h("nested-daemon");
  const pid_t grandchild = h.read_pid();
  const pid_t child = h.read_pid();
  ASSERT_GT(grandchild, 0);
  ASSERT_GT(child, 0);
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(running(grandchild));
  ::kill(child, SIGKILL);  // the helper (grandparent) lives on
  const bool gone = gone_within(grandchild, 1s);
  ::kill(grandchild, SIGKILL);
  EXPECT_TRUE(gone) << "the daemon watched its grandparent instead of its parent";
}

}  // namespace
