// `mproc run`, the parallel command runner, run as a real program: its output, exit
// codes, joblog, timeouts and signal handling, through real processes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
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

#include <mproc/cpu_count.hpp>

#include "sanitizers.hpp"

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
    std::vector<std::string> argv{MPROC_BINARY, "run"};
    argv.insert(argv.end(), args.begin(), args.end());
    return start_program(argv, input);
  }

  /// Starts `argv` in the test's directory with `input` on stdin, stdout and stderr to files,
  /// HOME the test's directory (GNU parallel writes there).
  pid_t start_program(std::vector<std::string> argv, const std::string& input) {
    std::ofstream(dir_ / "stdin", std::ios::binary) << input;
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    const std::string in = (dir_ / "stdin").string(), out = (dir_ / "stdout").string(),
                      err = (dir_ / "stderr").string(), home = (dir_ / "home").string(),
                      work = (dir_ / "work").string();
    fs::create_directories(home);
    fs::create_directories(work);
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int i = ::open(in.c_str(), O_RDONLY);
      const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (i < 0 || o < 0 || e < 0 || ::chdir(work.c_str()) != 0) ::_exit(99);
      ::setenv("HOME", home.c_str(), 1);
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

  Result run_program(const std::vector<std::string>& argv, const std::string& input = "") {
    const auto t0 = Clock::now();
    return finish(start_program(argv, input), t0);
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

// ---------------------------------------------------------------------------------------
// Against GNU parallel: the same jobs through both, stdout compared byte for byte.

constexpr const char* gnu_parallel = "/usr/bin/parallel";

std::string str(const std::vector<std::string>& v) { return ::testing::PrintToString(v); }

/// Every file under `root`, by relative path, with its contents.
std::map<std::string, std::string> tree(const fs::path& root) {
  std::map<std::string, std::string> files;
  if (!fs::exists(root)) return files;
  for (auto& e : fs::recursive_directory_iterator(root))
    files[fs::relative(e.path(), root).string() + (e.is_directory() ? "/" : "")] =
        e.is_directory() ? "" : slurp(e.path());
  return files;
}

class VsGnu : public Run {
 protected:
  void SetUp() override {
    Run::SetUp();
    if (::access(gnu_parallel, X_OK) != 0) GTEST_SKIP() << gnu_parallel << " is not installed";
  }

  /// `parallel --will-cite ARGS...` (without it GNU parallel asks to be cited).
  Result gnu(const std::vector<std::string>& args, const std::string& input = "") {
    std::vector<std::string> argv{gnu_parallel, "--will-cite"};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto t0 = Clock::now();
    return finish(start_program(argv, input), t0);
  }

  /// The same arguments through both (mproc gets `extra` first, e.g. --shell where the
  /// command is shell syntax, which GNU parallel always runs with a shell): the same
  /// stdout and exit code.
  void same(const std::vector<std::string>& args, const std::string& input = "",
            const std::vector<std::string>& extra = {}) {
    Result g = gnu(args, input);
    std::vector<std::string> mine = extra;
    mine.insert(mine.end(), args.begin(), args.end());
    Result m = run(mine, input);
    EXPECT_EQ(m.out, g.out) << str(args) << "\nmproc stderr: " << m.err << "\nparallel stderr: " << g.err;
    EXPECT_EQ(m.code, g.code) << str(args) << "\nmproc stderr: " << m.err << "\nparallel stderr: " << g.err;
  }

  fs::path work() const { return dir_ / "work"; }
  void write(const std::string& name, const std::string& text) {
    fs::create_directories((work() / name).parent_path());
    std::ofstream(work() / name, std::ios::binary) << text;
  }
};

TEST_F(VsGnu, ReplacementStrings) {
  same({"-k", "echo", "{}", "{.}", "{/}", "{//}", "{/.}", "{#}", ":::", "dir/file.tar.gz", "a.b/c", "plain",
        "/x/y.z", ".bashrc", "a.", "a/b/", "/", "a..b", "a b.c", "./x.y", ""});
  same({"-k", "echo", "{1.}", "{2/}", "{-1}", "{3}", "{2//}", "{1/.}", "x{1}y{2}z", ":::", "a.b/c.d", "e.f",
        ":::", "x/y", "z"});
  same({"-k", "echo", "pre{}post", "{}{}", ":::", "A", "B"});
  same({"-k", "echo", "{#}", ":::", "a", "b"});  // a replacement string: nothing appended
  same({"-k", "echo", "x", ":::", "a", "b c"});  // none: the argument appended, one word
  same({"-k", "echo", "{", "}", "{a}", "{}", "{1x}", ":::", "v"});  // not replacement strings
}

TEST_F(VsGnu, CartesianAndLinkedSources) {
  write("f1", "x\ny\n");
  write("f2", "1\n2\n3\n");
  same({"-k", "echo", "{1}", "{2}", "{}", ":::", "a", "b", ":::", "1", "2"});
  same({"-k", "echo", ":::", "a", "b", ":::", "1", "2", ":::", "X", "Y"});
  same({"-k", "echo", "{1}", "{2}", ":::", "a", "b", "c", ":::+", "1", "2"});  // as long as the shortest
  same({"-k", "echo", "{1}", "{2}", "{3}", ":::", "a", "b", ":::+", "1", "2", ":::", "p", "q"});
  same({"-k", "echo", "{1}", "{2}", "::::", "f1", "f2"});
  same({"-k", "echo", "{1}", "{2}", "::::", "f1", "::::+", "f2"});
  same({"-k", "echo", "{1}", "{2}", "::::", "f1", ":::", "p", "q"});
  same({"-k", "-a", "f1", "-a", "f2", "echo"});
  same({"-k", "echo", "in:{}"}, "one\ntwo words\nthree\n");
  same({"-k", "-a", "-", "echo"}, "s1\ns2\n");
}

TEST_F(VsGnu, KeepOrderPrintsInInputOrder) {
  same({"-k", "-j", "3", "sleep 0.{}; echo {}; echo err{} >&2", ":::", "5", "1", "3"}, "", {"--shell"});
  same({"--keep-order", "-j", "4", "echo", ":::", "1", "2", "3", "4", "5", "6", "7", "8", "9"});
}

TEST_F(VsGnu, Halt) {
  const std::vector<std::string> sh{"--shell"};
  same({"-k", "-j1", "--halt", "now,fail=1", "echo {}; exit {}", ":::", "0", "3", "0", "4"}, "", sh);
  same({"-k", "-j1", "--halt", "soon,fail=2", "echo {}; exit {}", ":::", "1", "0", "2", "3", "4"}, "", sh);
  same({"-k", "-j1", "--halt", "now,success=1", "echo {}; exit {}", ":::", "1", "0", "2"}, "", sh);
  same({"-k", "-j1", "--halt", "now,done=2", "echo {}; exit {}", ":::", "3", "0", "0", "0"}, "", sh);
  same({"-k", "-j1", "--halt", "now,fail=50%", "echo {}; exit {}", ":::", "0", "1", "1", "0"}, "", sh);
  same({"-k", "-j1", "--halt", "2", "echo {}; exit {}", ":::", "0", "5", "0"}, "", sh);
  same({"-k", "-j1", "--halt", "now,fail=1", "kill -9 $$", ":::", "1"}, "", sh);  // 128 + 9
  // now: the running job is killed and its output dropped; soon: it finishes and prints.
  same({"-j2", "--halt", "now,fail=1", "sleep {}; echo {}; exit 1", ":::", "0.2", "20"}, "", sh);
  same({"-j2", "--halt", "soon,fail=1", "sleep {}; echo {}; exit 1", ":::", "0.2", "1.5", "3"}, "", sh);
}

TEST_F(VsGnu, ExitCodes) {
  const std::vector<std::string> sh{"--shell"};
  same({"exit {}", ":::", "0", "1", "2", "3"}, "", sh);  // 3 failed
  std::vector<std::string> many{"-j", "8", "false", ":::"};
  for (int i = 1; i <= 105; ++i) many.push_back(std::to_string(i));
  same(many);  // 101
  same({"--", "mproc-no-such-command-xyz", ":::", "a"});  // 1 failed
  Result g = gnu({"--no-such-option", "echo", ":::", "a"});
  Result m = run({"--no-such-option", "echo", ":::", "a"});
  EXPECT_EQ(g.code, 255);
  EXPECT_EQ(m.code, 255);
  EXPECT_EQ(m.err, "mproc run: unknown or unsupported option '--no-such-option' (see mproc run --help)\n");
  EXPECT_EQ(m.out, "");
}

TEST_F(VsGnu, DryRunQuotesLikeGnuParallel) {
  same({"--dry-run", "-k", "echo", ":::", "a b", "it's", "a;id", "$x", "", "\xc3\xa9", "a*", "~x", "a=b", "a,b", "a+b",
        "-x", "a/b.c", "'a'", "a''b", "x'", "'", "a\"b", "a\\b", "a\tb", "{}", "#a", "a!b"});
  same({"--dry-run", "-k", "echo $HOME", "{}", "pre{}post", ":::", "x y"});
  same({"--dry-run", "{}", "x", ":::", "echo a"});  // starts with a replacement string: unquoted
  // Without -k the order of several jobs' lines is not fixed, in GNU parallel either.
  same({"--dry-run", "-k", "-j", "2", "-X", "echo", "pre{}post", ":::", "a", "b", "c"});
  same({"--dry-run", "-k", "-j", "3", "-m", "echo", ":::", "a", "b", "c", "d", "e", "f", "g"});
  same({"--dry-run", "-k", "-N", "2", "echo", "{1}+{2}", ":::", "a", "b", "c"});
  EXPECT_FALSE(fs::exists(work() / "ran"));
  same({"--dry-run", "touch", "ran", ":::", "a"});
  EXPECT_FALSE(fs::exists(work() / "ran"));
}

TEST_F(VsGnu, MaxArgs) {
  same({"-k", "-N2", "echo", "{1}-{2}", ":::", "a", "b", "c"});
  same({"-k", "-N2", "echo", ":::", "a", "b", "c"});
  same({"-k", "-N3", "echo", "{}", "{3}", ":::", "a", "b", "c", "d"});
  same({"-k", "-j3", "-X", "echo", "x{}y", ":::", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"});
  same({"-k", "-j3", "-m", "echo", "x{}y", ":::", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"});
}

TEST_F(VsGnu, Colsep) {
  same({"-k", "--colsep", ",", "echo", "{2}", "{1}", "{}", ":::", "a,b", "c,d,e"});
  same({"-k", "--colsep", ",", "echo", "{2}-{1}"}, "a,b\nc,d\n");
  same({"-k", "--colsep", ",", "echo"}, "a,b\nc,d\n");
  same({"-k", "--colsep", "\\s+", "echo", "{3}", "{1}"}, "a  b\tc\nd e f\n");
}

TEST_F(VsGnu, Tag) {
  same({"-k", "--tag", "echo", ":::", "a", "b", ":::", "1", "2"});
  same({"-k", "--colsep", ",", "--tag", "echo", ":::", "a,b"});
  // Every line tagged, also a last one without a newline; stdout before stderr.
  same({"-k", "--tag", "echo x; echo y >&2; printf z", ":::", "a"}, "", {"--shell"});
  Result r = run({"-k", "--tag", "--shell", "echo x; echo y >&2; printf z", ":::", "a"});
  EXPECT_EQ(r.err, "a\ty\n");
}

TEST_F(VsGnu, NullSeparatedInput) {
  same({"-0", "-k", "echo", "x{}"}, std::string("a\0b c\0d\nd\0", 10));
  same({"--null", "-k", "echo", "x{}"}, std::string("p\0q\0", 4));
}

TEST_F(VsGnu, ShellModeQuotesValuesSoTheyNeverRun) {
  same({"-k", "echo", "{}", ":::", "a;id", "$(id)", "`id`", "it's", "a|b", "$HOME", "*"}, "", {"--shell"});
  Result r = run({"--shell", "--", "echo", "{}", ":::", "a;id"});
  EXPECT_EQ(r.out, "a;id\n");
}

TEST_F(VsGnu, JoblogColumns) {
  const std::vector<std::string> cmd{"-j1", "echo {}; exit {}", ":::", "0", "3", "1"};
  std::vector<std::string> g_args{"--joblog", path("g.log")}, m_args{"--shell", "--joblog", path("m.log")};
  g_args.insert(g_args.end(), cmd.begin(), cmd.end());
  m_args.insert(m_args.end(), cmd.begin(), cmd.end());
  Result g = gnu(g_args);
  Result m = run(m_args);
  EXPECT_EQ(m.code, g.code);
  const auto gl = split_lines(slurp(dir_ / "g.log")), ml = split_lines(slurp(dir_ / "m.log"));
  ASSERT_EQ(ml.size(), gl.size());
  ASSERT_EQ(gl.size(), 4u);
  EXPECT_EQ(ml[0], gl[0]);  // the header
  auto fields = [](const std::string& line) {
    std::vector<std::string> f;
    std::size_t pos = 0;
    for (std::size_t tab; (tab = line.find('\t', pos)) != std::string::npos; pos = tab + 1)
      f.push_back(line.substr(pos, tab - pos));
    f.push_back(line.substr(pos));
    return f;
  };
  const std::regex start(R"(\d+\.\d{3})"), runtime(R"( *\d+\.\d{3})");
  for (std::size_t i = 1; i < gl.size(); ++i) {
    const auto gf = fields(gl[i]), mf = fields(ml[i]);
    ASSERT_EQ(gf.size(), 9u) << gl[i];
    ASSERT_EQ(mf.size(), 9u) << ml[i];
    for (std::size_t c : {0, 1, 4, 5, 6, 7, 8}) EXPECT_EQ(mf[c], gf[c]) << "column " << c << ": " << ml[i];
    EXPECT_TRUE(std::regex_match(mf[2], start)) << mf[2];
    EXPECT_TRUE(std::regex_match(mf[3], runtime)) << mf[3];
    EXPECT_EQ(mf[3].size(), gf[3].size());
  }
}

TEST_F(VsGnu, ResultsDirectoryLayout) {
  Result g = gnu({"--results", path("g"), "echo", "{}; echo e{} >&2", ":::", "a", "b/c", "d e", ":::", "1", "2"});
  Result m = run({"--shell", "--results", path("m"), "echo", "{}; echo e{} >&2", ":::", "a", "b/c", "d e", ":::",
                  "1", "2"});
  EXPECT_EQ(m.code, g.code) << m.err;
  const auto gt = tree(dir_ / "g"), mt = tree(dir_ / "m");
  EXPECT_EQ(mt, gt);
  EXPECT_EQ(mt.at("1/b\\_c/2/2/stdout"), "b/c 2\n");
  EXPECT_EQ(mt.at("1/b\\_c/2/2/stderr"), "eb/c 2\n");
}

/// The command lines of docs/run.md, each through GNU parallel and mproc run: the same
/// output, exit code and files.
TEST_F(VsGnu, TheCommandLinesOfTheDocs) {
  struct Case {
    std::vector<std::string> args;
    std::string input;
  };
  const std::vector<Case> cases{
      {{"gzip", ":::", "a.txt", "b.txt", "c.txt"}, ""},
      {{"-j4", "sort", "-o", "{.}.sorted", "{}", ":::", "a.txt", "b.txt", "c.txt"}, ""},
      {{"-k", "wc", "-l"}, "./logs/x.log\n./logs/y.log\n"},
      {{"echo", "{1}", "{2}", ":::", "a", "b", ":::", "1", "2"}, ""},
      {{"--joblog", "jobs.log", "-j8", "./job.sh", ":::", "1", "2", "3"}, ""},
      {{"-j10", "-k", "md5sum", "{}"}, "a.txt\nb.txt\nc.txt\n"},
      {{"--dry-run", "mv", "{}", "{.}.bak", ":::", "a.txt", "my notes.txt"}, ""},
      {{"-j1", "--halt", "now,fail=1", "gzip", "-t", ":::", "ok.gz", "bad.gz", "ok.gz"}, ""},
      {{"-k", "-N2", "echo", "{1}", "is", "{2}", ":::", "alice", "30", "bob", "25"}, ""},
      {{"-k", "--colsep", ",", "echo", "{2}", "{1}", "::::", "people.csv"}, ""},
  };
  auto prepare = [&] {
    fs::remove_all(work());
    fs::create_directories(work());
    write("a.txt", "pear\napple\n");
    write("b.txt", "fig\n");
    write("c.txt", "kiwi\nlime\nbanana\n");
    write("my notes.txt", "n\n");
    write("logs/x.log", "1\n2\n");
    write("logs/y.log", "1\n");
    write("people.csv", "alice,30\nbob,25\n");
    write("job.sh", "#!/bin/sh\necho job $1\n");
    fs::permissions(work() / "job.sh", fs::perms::owner_all);
    write("bad.gz", "not gzip\n");
    const std::string gz = work().string() + "/ok.gz";
    ASSERT_EQ(std::system(("printf ok | gzip > '" + gz + "'").c_str()), 0);
  };
  // gzip records the time in its header: compressed files are compared by name and size.
  auto files = [&] {
    auto t = tree(work());
    for (auto& [name, text] : t)
      if (name.size() > 3 && name.compare(name.size() - 3, 3, ".gz") == 0) text = std::to_string(text.size());
    return t;
  };
  for (const auto& c : cases) {
    prepare();
    Result g = gnu(c.args, c.input);
    const auto gt = files();
    prepare();
    Result m = run(c.args, c.input);
    auto mt = files();
    const bool ordered = std::find(c.args.begin(), c.args.end(), "-k") != c.args.end() ||
                         std::find(c.args.begin(), c.args.end(), "--dry-run") != c.args.end();
    if (ordered) EXPECT_EQ(m.out, g.out) << str(c.args) << "\n" << m.err;
    else EXPECT_EQ(sorted_lines(m.out), sorted_lines(g.out)) << str(c.args) << "\n" << m.err;
    EXPECT_EQ(m.code, g.code) << str(c.args) << "\n" << m.err << "\n" << g.err;
    auto gfiles = gt;
    if (gfiles.count("jobs.log")) {  // times differ; the rest is compared in JoblogColumns
      EXPECT_EQ(split_lines(mt["jobs.log"]).size(), split_lines(gfiles["jobs.log"]).size());
      mt.erase("jobs.log");
      gfiles.erase("jobs.log");
    }
    EXPECT_EQ(mt, gfiles) << str(c.args);
  }
}

// ---------------------------------------------------------------------------------------
// What needs no comparison: memory, temporary files, jobs dying with the runner, -j.

TEST_F(Run, OutputIsSpooledSoTheRunnerStaysSmall) {
  // The runner's peak RSS (KiB) for one job writing `bytes` bytes.
  auto peak_rss = [&](const std::string& bytes) {
    const pid_t pid = start({"--", "head", "-c", bytes, ":::", "/dev/zero"});
    int status = 0;
    rusage ru{};
    while (::wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << slurp(dir_ / "stderr");
    EXPECT_EQ(fs::file_size(dir_ / "stdout"), std::stoull(bytes));
    return ru.ru_maxrss;
  };
  const long small = peak_rss("1");
  const long large = peak_rss("100000000");
  // 100 MB from one job: held in memory, the runner's peak RSS would grow by 100 MB.
  EXPECT_LT(large - small, 20 * 1024) << "peak RSS in KiB: " << small << " for 1 byte, "
                                      << large << " for 100 MB";
  // The absolute bound holds without sanitizers, whose shadow memory and allocator
  // quarantine add tens of MB to any process.
  if (!kSanitized) {
    EXPECT_LT(large, 50 * 1024) << "peak RSS in KiB of the runner";
  }
}

TEST_F(Run, SpoolsAreUnlinkedFilesInTmpdir) {
  const fs::path tmp = dir_ / "tmp";
  fs::create_directories(tmp);
  ::setenv("TMPDIR", tmp.c_str(), 1);
  const pid_t runner = start({"-j", "2", "--shell", "--", "echo > " + path("{}.ready") + "; sleep 30", ":::", "1", "2"});
  ::unsetenv("TMPDIR");
  const auto until = Clock::now() + std::chrono::seconds(10);
  while ((!fs::exists(dir_ / "1.ready") || !fs::exists(dir_ / "2.ready")) && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::size_t spools = 0;
  for (auto& e : fs::directory_iterator("/proc/" + std::to_string(runner) + "/fd")) {
    std::error_code ec;
    const std::string target = fs::read_symlink(e.path(), ec).string();
    if (target.rfind(tmp.string() + "/", 0) == 0 && target.find("(deleted)") != std::string::npos) ++spools;
  }
  EXPECT_EQ(spools, 4u);  // stdout and stderr of the two running jobs
  EXPECT_TRUE(fs::is_empty(tmp));
  ASSERT_EQ(::kill(runner, SIGTERM), 0);
  Result r = finish(runner, Clock::now());
  EXPECT_EQ(r.code, 128 + SIGTERM);
  EXPECT_TRUE(fs::is_empty(tmp));
}

TEST_F(Run, JobsDieWithTheRunnerEvenBySigkill) {
  // Each job ignores SIGTERM and leaves a grandchild (which inherits that) behind.
  const pid_t runner = start({"-j", "3", "--shell", "--",
                              "trap '' TERM; echo $$ > " + path("{}.pid") + "; sleep 30 & echo $! > " +
                                  path("{}.gc") + "; wait",
                              ":::", "1", "2", "3"});
  const auto until = Clock::now() + std::chrono::seconds(10);
  while ((read_pids(dir_, ".gc").size() < 3 || read_pids(dir_, ".pid").size() < 3) && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto pids = read_pids(dir_, ".gc");
  const auto children = read_pids(dir_, ".pid");
  pids.insert(pids.end(), children.begin(), children.end());
  ASSERT_EQ(pids.size(), 6u);
  ASSERT_EQ(::kill(runner, SIGKILL), 0);
  finish(runner, Clock::now());
  for (pid_t p : pids) EXPECT_TRUE(dies_within(p, std::chrono::seconds(2))) << p;
}

TEST_F(Run, JobsTakesGnuParallelsForms) {
  const unsigned cpus = mproc::cpu_count();
  // {%} is the job slot, the lowest free one: the first N jobs start at once in slots
  // 1..N, so the highest slot seen is the number of jobs at a time.
  auto at_a_time = [&](std::vector<std::string> jobs_flag) {
    std::vector<std::string> args = std::move(jobs_flag);
    args.insert(args.end(), {"--", "echo", "{%}", ":::"});
    for (int i = 0; i < 40; ++i) args.push_back(std::to_string(i));
    Result r = run(args);
    EXPECT_EQ(r.code, 0) << r.err;
    unsigned top = 0;
    for (const auto& l : split_lines(r.out)) top = std::max(top, static_cast<unsigned>(std::stoul(l)));
    return top;
  };
  EXPECT_EQ(at_a_time({"-j", "3"}), 3u);
  EXPECT_EQ(at_a_time({"-j3"}), 3u);
  EXPECT_EQ(at_a_time({}), cpus);
  EXPECT_EQ(at_a_time({"-j", "100%"}), cpus);
  EXPECT_EQ(at_a_time({"-j", "200%"}), 2 * cpus);
  EXPECT_EQ(at_a_time({"-j", "50%"}), std::max(1u, cpus / 2));
  EXPECT_EQ(at_a_time({"-j", "+1"}), cpus + 1);
  EXPECT_EQ(at_a_time({"-j", "-1"}), std::max(1u, cpus - 1));
  EXPECT_EQ(at_a_time({"-j", "0"}), 40u);
  EXPECT_EQ(at_a_time({"--jobs=5"}), 5u);
}

TEST_F(Run, LineBufferPrintsLinesWhileTheJobRuns) {
  // The job prints a line, then waits for a file the test creates only once that line
  // has come out: without --line-buffer it would wait for ever (the watchdog fails it).
  const std::string go = path("go");
  for (const std::string mode : {"--line-buffer", "-u"}) {
    fs::remove(go);
    const pid_t runner = start({mode, "--shell", "--",
                                ": {}; printf 'first\\nhalf'; i=0; while [ ! -e " + go +
                                    " ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; echo -done",
                                ":::", "x"});
    const std::string want_early = mode == "-u" ? "first\nhalf" : "first\n";
    const auto until = Clock::now() + std::chrono::seconds(10);
    while (slurp(dir_ / "stdout") != want_early && Clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(slurp(dir_ / "stdout"), want_early) << mode;
    std::ofstream(go) << "";
    Result r = finish(runner, Clock::now());
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "first\nhalf-done\n") << mode;
  }
}

TEST_F(Run, DelaySpacesTheStarts) {
  Result r = run({"--delay", "0.3", "--joblog", path("log"), "-j", "3", "--", "true", ":::", "1", "2", "3"});
  EXPECT_EQ(r.code, 0) << r.err;
  const auto log = split_lines(slurp(dir_ / "log"));
  ASSERT_EQ(log.size(), 4u);
  std::vector<double> starts;
  for (std::size_t i = 1; i < log.size(); ++i) starts.push_back(std::stod(log[i].substr(log[i].find(":\t") + 2)));
  std::sort(starts.begin(), starts.end());
  EXPECT_GE(starts[1] - starts[0], 0.29);
  EXPECT_GE(starts[2] - starts[1], 0.29);
}

TEST_F(Run, ProgressOnlyOnATerminal) {
  Result r = run({"--bar", "--", "true", ":::", "1", "2"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.err, "");
  if (::access("/usr/bin/script", X_OK) != 0) GTEST_SKIP() << "no script(1) to give it a terminal";
  // script(1) runs it on a pseudo-terminal: the bar is drawn, and ends at 100%.
  Result t = run_program({"/usr/bin/script", "-qec", std::string("'") + MPROC_BINARY + "' run --bar -- true ::: 1 2 3",
                          "/dev/null"});
  EXPECT_EQ(t.code, 0) << t.err;
  EXPECT_THAT(t.out, HasSubstr("100% 3/3"));
}

TEST_F(Run, WarnsWhenArgumentsComeFromATerminal) {
  Result piped = run({"--", "echo"}, "a\n");
  EXPECT_EQ(piped.out, "a\n");
  EXPECT_EQ(piped.err, "");
  if (::access("/usr/bin/script", X_OK) != 0) GTEST_SKIP() << "no script(1) to give it a terminal";
  // On a pseudo-terminal stdin is the terminal: the warning, then end of input.
  Result t = run_program({"/usr/bin/script", "-qec", std::string("'") + MPROC_BINARY + "' run -- echo", "/dev/null"});
  EXPECT_THAT(t.out, HasSubstr("mproc run: warning: reading arguments from the terminal"));
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
