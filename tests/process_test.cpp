// Process: real forks, real signals, real zombies and fds counted in /proc.
#include <mproc/process.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

/// 'R', 'S', 'Z', ... or 0 when the process does not exist.
char proc_state(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), {});
  auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() ? 0 : stat[close + 2];
}

bool running(pid_t pid) {
  const char s = proc_state(pid);
  return s != 0 && s != 'Z' && s != 'X';
}

/// Runs `argv` with stdout to a pipe; returns its pid and the read end.
std::pair<pid_t, int> spawn(const std::vector<std::string>& argv, const char* stdout_file = nullptr) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe");
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (stdout_file)
      ::dup2(::open(stdout_file, O_WRONLY | O_CREAT | O_TRUNC, 0600), 1);
    else
      ::dup2(fds[1], 1);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}

pid_t read_pid(int fd) {
  char buf[32] = {};
  std::size_t got = 0;
  while (got < sizeof buf - 1) {
    ssize_t n = ::read(fd, buf + got, 1);
    if (n <= 0 || buf[got] == '\n') break;
    ++got;
  }
  return std::atoi(buf);
}

bool gone_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (running(pid) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  return !running(pid);
}

TEST(Process, ExitCodes) {
  mproc::Process ok([] {});
  EXPECT_FALSE(ok.exitcode().has_value());
  ok.start();
  ok.join();
  EXPECT_EQ(ok.exitcode(), 0);

  mproc::Process seven([] { ::_exit(7); });
  seven.start();
  seven.join();
  EXPECT_EQ(seven.exitcode(), 7);

  mproc::Process killed([] { ::pause(); });
  killed.start();
  killed.kill();
  killed.join();
  EXPECT_EQ(killed.exitcode(), -SIGKILL);

  mproc::Process termed([] { ::pause(); });
  termed.start();
  termed.terminate();
  termed.join();
  EXPECT_EQ(termed.exitcode(), -SIGTERM);
}

TEST(Process, EscapingExceptionPrintsTypeAndMessageAndExitsOne) {
  char path[] = "/tmp/mproc-process-test-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  const int saved = ::dup(2);
  ::dup2(fd, 2);
  mproc::Process p(mproc::ProcessOptions{.name = "thrower"},
                   [] { throw std::invalid_argument("bad input 42"); });
  p.start();
  ::dup2(saved, 2);
  ::close(saved);
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
  std::ifstream f(path);
  std::string err((std::istreambuf_iterator<char>(f)), {});
  ::close(fd);
  ::unlink(path);
  EXPECT_THAT(err, HasSubstr("Process thrower"));
  EXPECT_THAT(err, HasSubstr("std::invalid_argument: bad input 42"));
}

TEST(Process, JoinWithTimeoutReturnsWhileTheChildSleeps) {
  mproc::Process p([] { ::sleep(30); });
  p.start();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(p.join(200ms));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 200ms);
  EXPECT_TRUE(p.is_alive());
  EXPECT_FALSE(p.exitcode().has_value());
  p.kill();
  EXPECT_TRUE(p.join(10s));
  EXPECT_FALSE(p.is_alive());
}

TEST(Process, NoZombieAfterJoin) {
  mproc::Process p([] {});
  p.start();
  const pid_t pid = p.pid();
  p.join();
  EXPECT_EQ(proc_state(pid), 0) << "the child is still in /proc (a zombie?)";
}

TEST(Process, TwoHundredProcessesLeaveNoFdBehind) {
  const std::size_t before = open_fds();
  for (int i = 0; i < 200; ++i) {
    mproc::Process p([i] { ::_exit(i % 7); });
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), i % 7);
  }
  EXPECT_EQ(open_fds(), before);
}

TEST(Process, ChildSeesParentMemoryAndCannotChangeIt) {
  int value = 41;
  value += 1;  // set before start(): the child sees it
  mproc::Process p([&value] { ::_exit(value == 42 ? (value = 0, 0) : 1); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(value, 42);  // the child's write went to its own copy
}

TEST(Process, ArgumentsAreCopiedIntoTheChild) {
  auto check = [](std::string s, std::vector<int> v) { ::_exit(s == "abc" && v.size() == 3 ? 0 : 1); };
  mproc::Process p(check, std::string("abc"), std::vector<int>{1, 2, 3});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, ParentBufferedOutputIsNotDuplicated) {
  char path[] = "/tmp/mproc-stdout-XXXXXX";
  ::close(::mkstemp(path));
  auto [pid, fd] = spawn({MPROC_PROCESS_HELPER, "stdout"}, path);
  ::close(fd);
  int ws = 0;
  ::waitpid(pid, &ws, 0);
  ASSERT_TRUE(WIFEXITED(ws));
  EXPECT_EQ(WEXITSTATUS(ws), 0);
  std::ifstream f(path);
  std::string out((std::istreambuf_iterator<char>(f)), {});
  ::unlink(path);
  EXPECT_EQ(out, "parent-line\nchild-line\n");
}

class Daemon : public ::testing::TestWithParam<const char*> {};

TEST_P(Daemon, DiesWithItsParent) {
  auto [helper, fd] = spawn({MPROC_PROCESS_HELPER, GetParam()});
  const pid_t daemon = read_pid(fd);
  ::close(fd);
  ASSERT_GT(daemon, 0);
  if (std::string(GetParam()) == "daemon-exit") {
    ::waitpid(helper, nullptr, 0);  // the parent returned from main
  } else {
    // Alive while the parent lives, even when the thread that started it has exited.
    std::this_thread::sleep_for(200ms);
    EXPECT_TRUE(running(daemon));
    ::kill(helper, SIGKILL);
    ::waitpid(helper, nullptr, 0);
  }
  EXPECT_TRUE(gone_within(daemon, 1s));
}

INSTANTIATE_TEST_SUITE_P(Modes, Daemon, ::testing::Values("daemon", "daemon-thread", "daemon-exit"),
                         [](const auto& p) {
                           std::string s = p.param;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

TEST(Process, ActiveChildrenListsRunningOnes) {
  mproc::Process a([] { ::pause(); });
  mproc::Process b([] {});
  a.start();
  b.start();
  b.join();
  auto kids = mproc::active_children();
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_EQ(kids[0].pid(), a.pid());
  EXPECT_EQ(kids[0].name(), a.name());
  kids[0].kill();  // a handle to the same child
  a.join();
  EXPECT_EQ(a.exitcode(), -SIGKILL);
  EXPECT_TRUE(mproc::active_children().empty());
}

TEST(Process, CurrentProcessInChildAndParent) {
  EXPECT_EQ(mproc::current_process().name, "MainProcess");
  EXPECT_EQ(mproc::current_process().pid, ::getpid());
  EXPECT_FALSE(mproc::current_process().is_pool_worker);
  mproc::Process p(mproc::ProcessOptions{.name = "kid"}, [] {
    auto me = mproc::current_process();
    ::_exit(me.name == "kid" && me.pid == ::getpid() && !me.is_pool_worker ? 0 : 1);
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(mproc::Process([] {}).name().rfind("Process-", 0), 0u);
}

TEST(Process, ConcurrentJoinsAgree) {
  mproc::Process p([] {
    ::usleep(100'000);
    ::_exit(5);
  });
  p.start();
  std::atomic<int> fives{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      p.join();
      if (p.exitcode() == 5) ++fives;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(fives.load(), 4);
}

TEST(Process, MisuseIsReported) {
  mproc::Process p([] {});
  EXPECT_THROW(p.join(), std::logic_error);
  p.start();
  EXPECT_THROW(p.start(), std::logic_error);
  EXPECT_THROW(p.set_daemon(true), std::logic_error);
  p.join();
}

}  // namespace
