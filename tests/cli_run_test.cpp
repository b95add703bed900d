// `mproc run`, the parallel command runner, run as a real program: its output, exit
// codes, joblog, timeouts and signal handling, through real processes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<std::string> sorted_lines(const std::string& s) {
  auto v = split_lines(s);
  std::sort(v.begin(), v.end());
  return v;
}

std::size_t lines(const std::string& s) { return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n')); }

/// A fresh directory per test, removed afterwards.
class Run : public ::testing::Test {
 protected:
  struct Result {
    int code;
    std::string out, err;
    double seconds;
  };

  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("mproc-run-" + std::to_string(::getpid()) + "-" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// Starts `mproc run ARGS...` (no shell in between, so arguments arrive verbatim) with
  /// `input` on stdin and stdout/stderr going to files.
  pid_t start(const std::vector<std::string>& args, const std::string& input = "") {
    std::ofstream(dir_ / "stdin", std::ios::binary) << input;
    std::vector<std::string> argv{MPROC_BINARY, "run"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    const std::string in = (dir_ / "stdin").string(), out = (dir_ / "stdout").string(),
                      err = (dir_ / "stderr").string();
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int i = ::open(in.c_str(), O_RDONLY);
      const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (i < 0 || o < 0 || e < 0) ::_exit(99);
      ::dup2(i, 0);
      ::dup2(o, 1);
      ::dup2(e, 2);
      ::execv(cargv[0], cargv.data());
      ::_exit(98);
    }
    return pid;
  }

  Result finish(pid_t pid, Clock::time_point t0) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
            slurp(dir_ / "stdout"), slurp(dir_ / "stderr"), secs};
  }

  Result run(const std::vector<std::string>& args, const std::string& input = "") {
    const auto t0 = Clock::now();
    return finish(start(args, input), t0);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

/// True once `pid` is gone or a zombie (init may take a moment to reap an orphan).
bool dead(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), {});
  const auto close = stat.rfind(')');
  return close == std::string::npos || (close + 2 < stat.size() && stat[close + 2] == 'Z');
}

bool dies_within(pid_t pid, std::chrono::seconds limit) {
  const auto until = Clock::now() + limit;
  while (!dead(pid)) {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

std::vector<pid_t> read_pids(const fs::path& dir, const std::string& ext) {
  std::vector<pid_t> pids;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ext) {
      const std::string text = slurp(e.path());
      if (!text.empty() && text.back() == '\n') pids.push_back(std::stoi(text));  // whole only
    }
  return pids;
}

TEST_F(Run, RunsTheCommandOncePerArgument) {
  Result r = run({"--", "echo", "{}", ":::", "a", "b", "c"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(sorted_lines(r.out), ElementsAre("a", "b", "c"));
  EXPECT_EQ(r.err, "");
}

TEST_F(Run, ArgumentIsAppendedWithoutPlaceholderAndReplacedEverywhereInAWord) {
  Result appended = run({"echo", "x", ":::", "a"});  // no `--` needed: options end at CMD
  EXPECT_EQ(appended.code, 0) << appended.err;
  EXPECT_EQ(appended.out, "x a\n");

  Result inner = run({"--", "echo", "pre{}mid{}post", "-{}-", ":::", "A"});
  EXPECT_EQ(inner.code, 0) << inner.err;
  EXPECT_EQ(inner.out, "preAmidApost -A-\n");
}

TEST_F(Run, ReadsArgumentsFromStdinOnePerLineSkippingEmptyOnes) {
  Result r = run({"-j", "2", "--keep-order", "--", "echo", "<{}>"}, "one\n\ntwo words\n\nthree");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "<one>\n<two words>\n<three>\n");
}

TEST_F(Run, KeepOrderPrintsInInputOrderEvenWhenEarlierJobsAreSlower) {
  const std::vector<std::string> cmd{"--shell", "--", "sleep 0.{}; echo {}", ":::", "8", "4", "1"};
  std::vector<std::string> ordered{"-j", "3", "--keep-order"};
  ordered.insert(ordered.end(), cmd.begin(), cmd.end());
  Result kept = run(ordered);
  EXPECT_EQ(kept.code, 0) << kept.err;
  EXPECT_EQ(kept.out, "8\n4\n1\n");

  std::vector<std::string> unordered{"-j", "3"};
  unordered.insert(unordered.end(), cmd.begin(), cmd.end());
  Result done = run(unordered);
  EXPECT_EQ(done.code, 0) << done.err;
  EXPECT_EQ(done.out, "1\n4\n8\n");  // completion order: 0.1 s, 0.4 s, 0.8 s
}

TEST_F(Run, NoShellUnlessAskedFor) {
  ::setenv("MPROC_RUN_TEST_VAR", "expanded", 1);
  Result direct = run({"--keep-order", "--", "echo", "{}", ";", "echo", "z", ":::", "$MPROC_RUN_TEST_VAR",
                       "a;b", "*"});
  EXPECT_EQ(direct.code, 0) << direct.err;
  EXPECT_EQ(direct.out, "$MPROC_RUN_TEST_VAR ; echo z\na;b ; echo z\n* ; echo z\n");

  // The template is the shell's; the values are quoted for it, so they never execute.
  Result shell = run({"--keep-order", "--shell", "--", "echo", "$MPROC_RUN_TEST_VAR", "{};", "echo", "z",
                      ":::", "$MPROC_RUN_TEST_VAR", "a;id", "it's"});
  EXPECT_EQ(shell.code, 0) << shell.err;
  EXPECT_EQ(shell.out, "expanded $MPROC_RUN_TEST_VAR\nz\nexpanded a;id\nz\nexpanded it's\nz\n");
}

TEST_F(Run, OutputBlocksNeverInterleave) {
  // Eight jobs, four at a time, each writing 2000 tagged lines to stdout and to stderr in
  // small writes, and one writing megabytes: each job's lines must come out contiguous.
  Result r = run({"-j", "4", "--shell", "--",
                  "if [ {} = big ]; then yes big-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -n 100000; "
                  "else i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo {}-$i; echo {}-$i >&2; done; fi",
                  ":::", "a", "b", "c", "d", "big", "e", "f", "g"});
  ASSERT_EQ(r.code, 0) << r.err.substr(0, 500);
  const std::string big_line = "big-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
  std::size_t want = 100000 * (big_line.size() + 1);
  for (int i = 1; i <= 2000; ++i) want += 7 * (std::to_string(i).size() + 3);  // "a-17\n"
  EXPECT_EQ(r.out.size(), want);
  for (const std::string* text : {&r.out, &r.err}) {
    std::map<std::string, std::vector<std::size_t>> where;  // tag -> line numbers
    const auto ls = split_lines(*text);
    for (std::size_t i = 0; i < ls.size(); ++i) where[ls[i].substr(0, ls[i].find('-'))].push_back(i);
    EXPECT_EQ(where.size(), text == &r.out ? 8u : 7u);
    for (const auto& [tag, at] : where) {
      EXPECT_EQ(at.back() - at.front() + 1, at.size()) << "lines of job " << tag << " are not contiguous";
      if (tag != "big") {
        ASSERT_EQ(at.size(), 2000u) << tag;
        EXPECT_EQ(ls[at.front()], tag + "-1");
        EXPECT_EQ(ls[at.back()], tag + "-2000");
      }
    }
  }
}

TEST_F(Run, ExitCodeIsTheNumberOfFailedJobsAndTheSummaryListsThem) {
  Result r = run({"--shell", "--", "exit {}", ":::", "0", "1", "2", "3"});
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.err, HasSubstr("mproc run: 3 of 4 jobs failed:\n"));
  EXPECT_THAT(r.err, HasSubstr("seq 2: exit code 1: exit 1\n"));
  EXPECT_THAT(r.err, HasSubstr("seq 4: exit code 3: exit 3\n"));
  EXPECT_THAT(r.err, Not(HasSubstr("seq 1:")));
}

TEST_F(Run, ExitCodeIsCappedAt101) {
  std::vector<std::string> args{"-j", "8", "--", "false", ":::"};
  for (int i = 1; i <= 105; ++i) args.push_back(std::to_string(i));
  Result r = run(args);
  EXPECT_EQ(r.code, 101);
  EXPECT_THAT(r.err, HasSubstr("105 of 105 jobs failed"));
}

TEST_F(Run, CommandNotFoundFailsWith127) {
  Result r = run({"--", "mproc-no-such-command-xyz", "{}", ":::", "a", "b"});
  EXPECT_EQ(r.code, 2);  // two failed jobs
  EXPECT_THAT(r.err, HasSubstr("cannot execute 'mproc-no-such-command-xyz'"));
  EXPECT_THAT(r.err, HasSubstr("seq 1: exit code 127 (command not found): mproc-no-such-command-xyz a"));

  Result absolute = run({"--joblog", path("log"), "--", "/nonexistent/bin/x", ":::", "a"});
  EXPECT_EQ(absolute.code, 1);
  EXPECT_THAT(split_lines(slurp(dir_ / "log")).at(1), HasSubstr("\t127\t0\t/nonexistent/bin/x a"));
}

TEST_F(Run, TimeoutKillsTheJobAndItsGrandchildren) {
  // The shell starts a background sleep (a grandchild of the runner) and records its pid.
  Result r = run({"-j", "3", "--timeout", "0.5", "--shell", "--",
                  "sleep 30 & echo $! > " + path("{}.pid") + "; sleep 30", ":::", "1", "2", "3"});
  EXPECT_EQ(r.code, 3);
  EXPECT_LT(r.seconds, 15.0);  // the sleeps would take 30 s
  EXPECT_THAT(r.err, HasSubstr("seq 2: timed out after 0.5 s"));
  const auto pids = read_pids(dir_, ".pid");
  ASSERT_EQ(pids.size(), 3u);
  for (pid_t p : pids) EXPECT_TRUE(dies_within(p, std::chrono::seconds(5))) << "grandchild " << p;
}

TEST_F(Run, RetriesRerunAFailedJobAndPrintOnlyTheLastAttempt) {
  const std::string flaky = "if [ -e " + path("{}") + " ]; then echo second-{}; else touch " + path("{}") +
                            "; echo first-{}; exit 1; fi";
  Result r = run({"--retries", "2", "--joblog", path("log"), "--shell", "--", flaky, ":::", "m"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "second-m\n");
  const auto log = split_lines(slurp(dir_ / "log"));
  ASSERT_EQ(log.size(), 3u);  // header + one line per attempt
  EXPECT_THAT(log[1], HasSubstr("\t1\t0\t"));
  EXPECT_THAT(log[2], HasSubstr("\t0\t0\t"));

  Result once = run({"--shell", "--", flaky, ":::", "n"});  // no retries: the failure stands
  EXPECT_EQ(once.code, 1);
  EXPECT_EQ(once.out, "first-n\n");

  Result hopeless = run({"--retries", "2", "--joblog", path("log2"), "--", "false", ":::", "x"});
  EXPECT_EQ(hopeless.code, 1);
  EXPECT_EQ(lines(slurp(dir_ / "log2")), 4u);  // three attempts
}

TEST_F(Run, JoblogHasGnuParallelColumns) {
  Result r = run({"-j", "1", "--joblog", path("log"), "--shell", "--", "{}", ":::", "exit 0", "exit 3",
                  "kill -TERM $$", "printf 12345"});
  EXPECT_EQ(r.code, 2);
  const auto log = split_lines(slurp(dir_ / "log"));
  ASSERT_EQ(log.size(), 5u) << slurp(dir_ / "log");
  EXPECT_EQ(log[0], "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand");
  // GNU parallel's: ":" for this host, the runtime right-aligned in 10 columns, Receive the
  // bytes of stdout, Exitval 0 beside the signal that killed a job.
  const std::regex row(R"((\d+)\t:\t(\d+\.\d{3})\t( *\d+\.\d{3})\t0\t(\d+)\t(-?\d+)\t(\d+)\t(.*))");
  const std::vector<std::vector<std::string>> want{{"1", "0", "0", "0", "exit 0"},
                                                   {"2", "0", "3", "0", "exit 3"},
                                                   {"3", "0", "0", "15", "kill -TERM $$"},
                                                   {"4", "5", "0", "0", "printf 12345"}};
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (std::size_t i = 0; i < want.size(); ++i) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(log[i + 1], m, row)) << log[i + 1];
    EXPECT_EQ(m[1], want[i][0]);
    EXPECT_NEAR(std::stod(m[2]), now, 60.0);
    EXPECT_EQ(m[3].length(), 10) << log[i + 1];
    EXPECT_LT(std::stod(m[3]), 30.0);
    EXPECT_EQ(m[4], want[i][1]);
    EXPECT_EQ(m[5], want[i][2]);
    EXPECT_EQ(m[6], want[i][3]);
    EXPECT_EQ(m[7], want[i][4]);
  }
  EXPECT_THAT(r.err, HasSubstr("seq 3: killed by SIGTERM: kill -TERM $$"));
}

TEST_F(Run, UnwritableJoblogIsAUsageErrorAndNothingRuns) {
  Result r = run({"--joblog", path("no/such/dir/log"), "--", "touch", path("{}"), ":::", "ran"});
  EXPECT_EQ(r.code, 255);
  EXPECT_THAT(r.err, HasSubstr("cannot open joblog"));
  EXPECT_EQ(lines(r.err), 1u);
  EXPECT_FALSE(fs::exists(dir_ / "ran"));
}

TEST_F(Run, JobsRunInParallel) {
  Result r = run({"-j", "4", "--", "sleep", ":::", "1", "1", "1", "1"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_LT(r.seconds, 3.5);  // one at a time would take 4 s
}

TEST_F(Run, SigtermStopsTheRunnerAndKillsRunningJobsWithTheirChildren) {
  const auto t0 = Clock::now();
  const pid_t runner = start({"-j", "2", "--shell", "--",
                              "sleep 30 & echo $! > " + path("{}.gc") + "; echo $$ > " + path("{}.pid") +
                                  "; sleep 30",
                              ":::", "1", "2", "3"});
  const auto until = Clock::now() + std::chrono::seconds(10);
  while ((read_pids(dir_, ".gc").size() < 2 || read_pids(dir_, ".pid").size() < 2) && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let the pid files be written whole
  ASSERT_EQ(::kill(runner, SIGTERM), 0);
  Result r = finish(runner, t0);
  EXPECT_EQ(r.code, 128 + SIGTERM);
  EXPECT_LT(r.seconds, 15.0);
  EXPECT_THAT(r.err, HasSubstr("interrupted by SIGTERM: stopped 2 running jobs, 1 not started"));
  auto pids = read_pids(dir_, ".gc");
  const auto children = read_pids(dir_, ".pid");
  pids.insert(pids.end(), children.begin(), children.end());
  EXPECT_EQ(pids.size(), 4u);  // the third job never started
  for (pid_t p : pids) EXPECT_TRUE(dies_within(p, std::chrono::seconds(5))) << p;
}

TEST_F(Run, UsageErrorsExit255WithOneLine) {
  const std::vector<std::vector<std::string>> cases{
      {},
      {"--"},
      {"--", ":::", "a"},
      {"-j", "abc", "--", "echo", ":::", "a"},
      {"-j", "+x", "--", "echo", ":::", "a"},
      {"-j", "5x", "--", "echo", ":::", "a"},
      {"--timeout", "x", "--", "echo", ":::", "a"},
      {"--timeout", "-2", "--", "echo", ":::", "a"},
      {"--retries", "1.5", "--", "echo", ":::", "a"},
      {"--no-such-flag", "--", "echo", ":::", "a"},
      {"--halt", "later,fail=1", "--", "echo", ":::", "a"},
      {"--halt", "now,fail=0", "--", "echo", ":::", "a"},
      {"-N", "x", "--", "echo", ":::", "a"},
      {"--colsep", "(", "--", "echo", ":::", "a"},
      {"--", "echo", "{=uc=}", ":::", "a"},
      {"--", "echo", ":::+", "a"},
      {"--", "echo", "::::", path("no-such-file")},
  };
  for (const auto& args : cases) {
    Result r = run(args);
    EXPECT_EQ(r.code, 255) << ::testing::PrintToString(args);
    EXPECT_EQ(lines(r.err), 1u) << r.err;
    EXPECT_EQ(r.out, "");
  }
  Result none = run({"--", "echo"}, "\n\n");
  EXPECT_EQ(none.code, 255);
  EXPECT_EQ(none.err, "mproc run: no arguments (give them after ::: or on stdin)\n");
}

TEST_F(Run, HelpDocumentsTheBehaviour) {
  Result r = run({"--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* s : {"--jobs", "--timeout", "--retries", "--keep-order", "--joblog", "--shell", ":::",
                        "no arguments", "127", "capped at 101", "line per attempt", "255", "--halt", "--colsep",
                        "{/.}", "--results", "--line-buffer"})
    EXPECT_THAT(r.out, HasSubstr(s));
}

}  // namespace
