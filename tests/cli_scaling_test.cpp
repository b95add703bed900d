// `mproc scaling` run as a real program: its JSON, table and page for an mproc subcommand
// and for external commands whose run time is known (sleeps), a failing run, the one-line
// usage errors, and the page rendered in headless Chromium.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "browser.hpp"
#include "cli_runner.hpp"

namespace {

namespace fs = std::filesystem;
using cli_test::lines;
using cli_test::mproc;
using cli_test::Result;
using Json = nlohmann::json;

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size()))
    ++n;
  return n;
}

/// The value of attribute `name` in the first element of `html` whose text starts with
/// `open` (e.g. `<circle class="point speedup" data-jobs="1"`); NaN when there is none.
double attribute(const std::string& html, const std::string& open, const std::string& name) {
  const std::size_t at = html.find(open);
  if (at == std::string::npos) return std::nan("");
  const std::string element = html.substr(at, html.find('>', at) - at);
  std::smatch m;
  if (!std::regex_search(element, m, std::regex(" " + name + "=\"([-0-9.]+)\"")))
    return std::nan("");
  return std::stod(m[1]);
}

/// A fresh directory per test, removed afterwards.
class Scaling : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mproc-scaling-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// Checks the figures every result must satisfy, whatever the command: per row the
  /// runs, min <= median <= max with the median the middle of the sorted runs, the
  /// speed-up against the first row's median, the efficiency; returns the rows.
  static Json checked_rows(const Json& j, unsigned max_jobs, unsigned repeat) {
    EXPECT_EQ(j.at("command"), "scaling");
    EXPECT_EQ(j.at("max_jobs"), max_jobs);
    EXPECT_EQ(j.at("repeat"), repeat);
    const Json& rows = j.at("results");
    EXPECT_EQ(rows.size(), max_jobs);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Json& r = rows[i];
      EXPECT_EQ(r.at("jobs"), i + 1);
      std::vector<double> runs = r.at("runs").get<std::vector<double>>();
      EXPECT_EQ(runs.size(), repeat);
      std::sort(runs.begin(), runs.end());
      const double min = r.at("min"), median = r.at("median"), max = r.at("max");
      EXPECT_GT(runs.front(), 0);
      EXPECT_EQ(min, runs.front());
      EXPECT_EQ(max, runs.back());
      const std::size_t n = runs.size();
      EXPECT_DOUBLE_EQ(median, n % 2 ? runs[n / 2] : (runs[n / 2 - 1] + runs[n / 2]) / 2);
      EXPECT_LE(min, median);
      EXPECT_LE(median, max);
      const double speedup = r.at("speedup"), efficiency = r.at("efficiency");
      EXPECT_DOUBLE_EQ(speedup, rows[0].at("median").get<double>() / median);
      EXPECT_DOUBLE_EQ(efficiency, speedup / static_cast<double>(i + 1));
    }
    if (!rows.empty()) {
      EXPECT_EQ(rows[0].at("speedup").get<double>(), 1.0);
    }
    return rows;
  }

  fs::path dir_;
};

TEST_F(Scaling, PiAtOneAndTwoWorkersGivesConsistentJson) {
  // Each run rewrites the trace: the last run (round 2, two workers) must have had -j 2.
  const fs::path trace = dir_ / "pi.json";
  Result r = mproc({"scaling", "--max-jobs", "2", "--repeat", "2", "--json", "--quiet", "--", "pi",
                    "--samples", "3000000", "--trace", trace.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  ASSERT_EQ(lines(r.out), 1u) << r.out;
  const Json j = Json::parse(r.out);
  checked_rows(j, 2, 2);
  EXPECT_EQ(j.at("measured"), "mproc pi --samples 3000000 --trace " + trace.string() + " -j {jobs}");
  const auto argv = j.at("argv").get<std::vector<std::string>>();
  ASSERT_GE(argv.size(), 3u);
  EXPECT_EQ(argv.front(), "mproc");
  EXPECT_EQ(argv[argv.size() - 2], "-j");
  EXPECT_EQ(argv.back(), "{jobs}");
  EXPECT_GE(j.at("cpu_count").get<unsigned>(), 1u);
  const std::string last = slurp(trace);
  EXPECT_NE(last.find("process backend, 2 workers"), std::string::npos) << last.substr(0, 400);
}

TEST_F(Scaling, TheWorkersFlagGoesBeforeTheSubcommandsOwnDoubleDash) {
  // After wordcount's --, "-j" would be a file name: the run would fail.
  const fs::path text = dir_ / "-w.txt";
  std::ofstream(text) << "alpha beta alpha\n";
  Result r = mproc({"scaling", "--max-jobs", "1", "--repeat", "1", "--json", "--", "wordcount",
                    "--min-count", "1", "--", text.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).at("measured"),
            "mproc wordcount --min-count 1 -j {jobs} -- " + text.string());
}

TEST_F(Scaling, SleepsThatShrinkWithTheJobsComeOutInOrder) {
  // 0.6 / J seconds: 0.6, 0.3, 0.2. A run cannot be shorter than its sleep, and the gaps
  // (at least 100 ms) are far above what starting sh costs even on a loaded machine.
  const fs::path log = dir_ / "log";
  Result r = mproc({"scaling", "--max-jobs", "3", "--repeat", "3", "--json", "--", "sh", "-c",
                    "echo {jobs} >> " + log.string() + "; sleep 0.$((6/{jobs}))"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  const Json rows = checked_rows(Json::parse(r.out), 3, 3);
  // A fresh process per run, {jobs} filled in, the rounds interleaved.
  EXPECT_EQ(slurp(log), "1\n2\n3\n1\n2\n3\n1\n2\n3\n");
  const double sleeps[] = {0.6, 0.3, 0.2};
  for (std::size_t i = 0; i < 3; ++i) EXPECT_GE(rows[i].at("min").get<double>(), sleeps[i]);
  const double m1 = rows[0].at("median"), m2 = rows[1].at("median"), m3 = rows[2].at("median");
  EXPECT_GT(m1, m2);
  EXPECT_GT(m2, m3);
  EXPECT_GT(rows[1].at("speedup").get<double>(), 1.0);
  EXPECT_GT(rows[2].at("speedup").get<double>(), rows[1].at("speedup").get<double>());
}

TEST_F(Scaling, TableHasARowPerWorkerCountAndTheRunsOutputIsDiscarded) {
  Result r = mproc({"scaling", "--max-jobs", "3", "--repeat", "1", "--", "sh", "-c",
                    "echo noise-out; echo noise-err >&2; exit 0 # {jobs}"});
  ASSERT_EQ(r.code, 0) << r.err;
  // The command line is the table's first line; what the runs print is nowhere.
  EXPECT_EQ(r.out.find("noise-out\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.err.find("noise-err"), std::string::npos) << r.err;
  std::istringstream in(r.out);
  std::vector<std::string> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(line);
  ASSERT_EQ(rows.size(), 5u) << r.out;  // the command, the header, 3 rows
  EXPECT_EQ(rows[0], "sh -c 'echo noise-out; echo noise-err >&2; exit 0 # {jobs}'");
  EXPECT_NE(rows[1].find("median (s)"), std::string::npos) << rows[1];
  EXPECT_NE(rows[1].find("speed-up"), std::string::npos) << rows[1];
  for (int j = 1; j <= 3; ++j)
    EXPECT_EQ(rows[static_cast<std::size_t>(j) + 1].rfind("      " + std::to_string(j) + " ", 0), 0u)
        << rows[static_cast<std::size_t>(j) + 1];
  EXPECT_NE(rows[2].find("1.00x"), std::string::npos) << rows[2];
  EXPECT_NE(rows[2].find("100.0%"), std::string::npos) << rows[2];
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("mproc scaling: 3 runs in "), std::string::npos) << r.err;
}

TEST_F(Scaling, AFailingRunStopsWithOneLineAndNoPage) {
  const fs::path page = dir_ / "page.html";
  Result exit3 = mproc({"scaling", "--max-jobs", "3", "--repeat", "2", "--html", page.string(),
                        "--", "sh", "-c",
                        "if [ {jobs} = 2 ]; then echo first >&2; echo boom >&2; exit 3; fi"});
  EXPECT_EQ(exit3.code, 1) << exit3.err;
  EXPECT_EQ(exit3.out, "");
  EXPECT_FALSE(fs::exists(page));
  EXPECT_EQ(exit3.err,
            "mproc scaling: sh -c 'if [ 2 = 2 ]; then echo first >&2; echo boom >&2; exit 3; fi' "
            "exited with status 3 (2 workers, run 1 of 2): boom\n");

  Result killed = mproc({"scaling", "--max-jobs", "1", "--json", "--", "sh", "-c",
                         "kill -KILL $$ # {jobs}"});
  EXPECT_EQ(killed.code, 1);
  EXPECT_EQ(killed.out, "");
  EXPECT_EQ(lines(killed.err), 1u) << killed.err;
  EXPECT_NE(killed.err.find("was killed by SIGKILL (1 worker, run 1 of 3)"), std::string::npos)
      << killed.err;

  Result missing = mproc({"scaling", "--max-jobs", "1", "--", "no-such-program-here", "-T{jobs}"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_EQ(missing.err,
            "mproc scaling: no-such-program-here -T1 exited with status 127 (1 worker, run 1 of "
            "3): cannot execute 'no-such-program-here': No such file or directory\n");

  // An mproc subcommand's own usage error, quoted.
  Result pi = mproc({"scaling", "--max-jobs", "1", "--", "pi", "--samples", "0"});
  EXPECT_EQ(pi.code, 1);
  EXPECT_EQ(lines(pi.err), 1u) << pi.err;
  EXPECT_EQ(pi.err.rfind("mproc scaling: mproc pi --samples 0 -j 1 exited with status 2 ", 0), 0u)
      << pi.err;
  EXPECT_NE(pi.err.find("--samples"), std::string::npos) << pi.err;
}

/// True while `pid` is a process that has not ended (a zombie has).
bool running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  const std::size_t close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

TEST_F(Scaling, ARunDiesWithMprocScalingKilledBySigkill) {
  // mproc scaling is started and killed here, not through a shell or coreutils' timeout,
  // which signal a whole process group: only mproc scaling itself gets the SIGKILL.
  const fs::path pidfile = dir_ / "pid";
  const std::string script = "echo $$ > " + pidfile.string() + "; exec sleep 60 # {jobs}";
  const pid_t scaling = ::fork();
  ASSERT_GE(scaling, 0);
  if (scaling == 0) {
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    ::execl(MPROC_BINARY, MPROC_BINARY, "scaling", "--max-jobs", "1", "--", "sh", "-c",
            script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  pid_t run = 0;
  for (int i = 0; i < 100 && run <= 1; ++i, ::usleep(50'000)) run = std::atoi(slurp(pidfile).c_str());
  ::kill(scaling, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(scaling, &status, 0), scaling);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  ASSERT_GT(run, 1) << "the run never started";
  bool gone = false;
  for (int i = 0; i < 50 && !gone; ++i, ::usleep(100'000)) gone = !running(run);
  EXPECT_TRUE(gone) << "the run (pid " << run << ") outlived mproc scaling";
  if (!gone) ::kill(run, SIGKILL);
}

TEST_F(Scaling, BadCommandLinesAreOneLineAndExitTwo) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases{
      {{"scaling"}, "no command"},
      {{"scaling", "--"}, "no command"},
      {{"scaling", "--max-jobs", "2", "--", "frobnicate"}, "'frobnicate' is not an mproc compute"},
      {{"scaling", "--", "wordcunt", "books"}, "unknown subcommand 'wordcunt'; did you mean 'wordcount'?"},
      {{"scaling", "--", "info"}, "'info' is not a compute subcommand"},
      {{"scaling", "--", "trace-view", "x.json"}, "'trace-view' is not a compute subcommand"},
      {{"scaling", "--", "sh", "-c", "sleep 1"}, "has no {jobs}"},
      {{"scaling", "--max-jobs", "0", "--", "pi"}, "--max-jobs: '0' is out of range (1..4096)"},
      {{"scaling", "--max-jobs", "4097", "--", "pi"}, "--max-jobs: '4097' is out of range"},
      {{"scaling", "--max-jobs", "99999999999999999999999", "--", "pi"}, "--max-jobs"},
      {{"scaling", "--max-jobs", "lots", "--", "pi"}, "--max-jobs: 'lots' is not a whole number"},
      {{"scaling", "--max-jobs", "-1", "--", "pi"}, "--max-jobs"},
      {{"scaling", "--repeat", "0", "--", "pi"}, "--repeat: '0' is out of range"},
      {{"scaling", "--", "pi", "-j", "2"}, "'-j' sets the workers"},
      {{"scaling", "--", "pi", "--workers=2"}, "'--workers=2' sets the workers"},
      {{"scaling", "pi", "--samples", "10"}, "unexpected 'pi' before --"},
      {{"scaling", "--max-job", "2", "--", "pi"}, "unexpected '--max-job' before --"},
      {{"scaling", "--html", (fs::path("no-such-dir") / "p.html").string(), "--", "pi"},
       "no directory 'no-such-dir'"},
      {{"scaling", "--html", "/", "--", "pi"}, "is a directory"},
  };
  for (const auto& [args, what] : cases) {
    Result r = mproc(args);
    const std::string shown = args.size() > 1 ? args[1] : args[0];
    EXPECT_EQ(r.code, 2) << shown << ": " << r.err;
    EXPECT_EQ(r.out, "") << shown;
    EXPECT_EQ(lines(r.err), 1u) << shown << ": " << r.err;
    EXPECT_EQ(r.err.rfind("mproc", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << "expected '" << what << "' in: " << r.err;
  }
  EXPECT_FALSE(fs::exists("no-such-dir"));
}

TEST_F(Scaling, PageIsSelfContainedAndDrawsEveryWorkerCount) {
  const fs::path page = dir_ / "page.html";
  Result r = mproc({"scaling", "--max-jobs", "3", "--repeat", "2", "--html", page.string(), "--",
                    "sh", "-c", "echo \"<b>&\" >/dev/null; sleep 0.$((6/{jobs}))"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("wrote " + page.string()), std::string::npos) << r.err;
  const std::string html = slurp(page);
  ASSERT_FALSE(html.empty());
  for (const char* outside : {"http:", "https:", "<script", "src=", "@import", "url(", "<link"})
    EXPECT_EQ(html.find(outside), std::string::npos) << outside;
  // The command, escaped wherever it is quoted.
  EXPECT_EQ(html.find("<b>&"), std::string::npos);
  EXPECT_GE(count(html, "echo &quot;&lt;b&gt;&amp;&quot;"), 2u);  // title and heading
  EXPECT_EQ(count(html, "<svg class=\"chart "), 3u);
  EXPECT_EQ(count(html, "<circle class=\"point time\""), 3u);
  EXPECT_EQ(count(html, "<g class=\"whisker\""), 3u);
  EXPECT_EQ(count(html, "<circle class=\"point speedup\""), 3u);
  EXPECT_EQ(count(html, "<circle class=\"point efficiency\""), 3u);
  EXPECT_EQ(count(html, "<line class=\"ideal\""), 1u);
  EXPECT_EQ(count(html, "class=\"axis-label\""), 6u);
  EXPECT_NE(html.find(">workers (jobs)</text>"), std::string::npos);
  // Speed-up at 1 worker is 1: its point sits where the ideal line starts.
  const std::string speedup1 = "<circle class=\"point speedup\" data-jobs=\"1\"";
  EXPECT_NEAR(attribute(html, speedup1, "cx"), attribute(html, "<line class=\"ideal\"", "x1"), 0.01);
  EXPECT_NEAR(attribute(html, speedup1, "cy"), attribute(html, "<line class=\"ideal\"", "y1"), 0.01);
  // Times shrink with the workers (0.6, 0.3, 0.2 s of sleep, 100 ms apart at least):
  // each point lower on the chart, that is further down the SVG's y axis.
  auto time_y = [&](int j) {
    return attribute(html, "<circle class=\"point time\" data-jobs=\"" + std::to_string(j) + "\"",
                     "cy");
  };
  EXPECT_LT(time_y(1), time_y(2));
  EXPECT_LT(time_y(2), time_y(3));
  EXPECT_EQ(count(html, "<tr><td>"), 3u);  // the table, a row per worker count
}

TEST_F(Scaling, PageRendersInHeadlessChromiumAtAnyWidth) {
  const std::string chromium = cli_test::find_chromium();
  if (chromium.empty())
    GTEST_SKIP() << "no chromium-headless-shell or chromium on PATH and MPROC_CHROMIUM unset";
  const fs::path page = dir_ / "page.html";
  Result r = mproc({"scaling", "--max-jobs", "4", "--repeat", "2", "--html", page.string(),
                    "--quiet", "--", "sh", "-c", "sleep 0.0$((8/{jobs}))"});
  ASSERT_EQ(r.code, 0) << r.err;

  const std::string browser = "timeout 60 '" + chromium +
                              "' --headless --no-sandbox --disable-gpu --no-first-run "
                              "--disable-background-networking --disable-dev-shm-usage "
                              "--hide-scrollbars --virtual-time-budget=2000 --user-data-dir='" +
                              (dir_ / "profile").string() + "'";
  // A copy of the page with a probe at its end: what the browser made of the markup (SVG
  // elements, not unknown tags) and whether anything is wider than the window.
  const std::string probe =
      "<script>const q = (s) => document.querySelectorAll(s).length;"
      "document.body.dataset.probe = ['points', q('svg.chart circle.point'),"
      " 'ideal', q('svg.chart line.ideal'), 'whiskers', q('svg.chart g.whisker'),"
      " 'svg', [...document.querySelectorAll('circle.point')].every("
      "  (e) => e instanceof SVGCircleElement),"
      " 'fits', document.documentElement.scrollWidth <= window.innerWidth,"
      " 'chart', Math.round(document.querySelector('svg.chart').getBoundingClientRect().width)"
      "].join(' ');</script>";
  std::string probed = slurp(page);
  probed.insert(probed.rfind("</body>"), probe);
  const fs::path probe_page = dir_ / "probe.html";
  std::ofstream(probe_page) << probed;
  auto dom_probe = [&](int width) {
    const fs::path dom = dir_ / ("dom-" + std::to_string(width) + ".html");
    const std::string cmd = browser + " --window-size=" + std::to_string(width) +
                            ",900 --dump-dom 'file://" + probe_page.string() + "' >'" +
                            dom.string() + "' 2>/dev/null </dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    std::smatch m;
    const std::string text = slurp(dom);
    std::regex_search(text, m, std::regex("data-probe=\"([^\"]*)\""));
    return m.size() > 1 ? m[1].str() : std::string("no probe in: " + text.substr(0, 200));
  };
  for (int width : {1280, 420}) {
    const std::string seen = dom_probe(width);
    std::printf("at %d px: %s\n", width, seen.c_str());
    EXPECT_EQ(seen.rfind("points 12 ideal 1 whiskers 4 svg true fits true chart ", 0), 0u)
        << width << ": " << seen;
    // The charts take the width they are given: one column in a narrow window.
    const int chart = std::atoi(seen.substr(seen.rfind(' ') + 1).c_str());
    if (width == 420) {
      EXPECT_GT(chart, 300) << seen;
    }
    EXPECT_LE(chart, width) << seen;
  }

  auto screenshot = [&](const fs::path& html, const std::string& name) {
    const fs::path png = dir_ / (name + ".png"), log = dir_ / (name + ".log");
    const std::string cmd = browser + " --window-size=1280,900 --screenshot='" + png.string() +
                            "' 'file://" + html.string() + "' >'" + log.string() +
                            "' 2>&1 </dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << slurp(log);
    return cli_test::decode_png(slurp(png));
  };
  const cli_test::Image shot = screenshot(page, "page");
  ASSERT_EQ(shot.width, 1280u);
  const double ink = cli_test::non_background_fraction(shot);
  const std::size_t series = cli_test::pixels_near(shot, {0x4e, 0x79, 0xa7});
  const std::size_t ideal = cli_test::pixels_near(shot, {0xe1, 0x57, 0x59});
  std::printf("scaling page: %.2f%% of pixels drawn; series %zu, reference lines %zu pixels\n",
              100 * ink, series, ideal);
  EXPECT_GT(ink, 0.02);
  EXPECT_GT(series, 500u);  // three polylines and twelve points
  EXPECT_GT(ideal, 100u);   // the dashed ideal and 100% lines

  // The counters see nothing on a blank page, so the checks above can fail.
  const fs::path blank = dir_ / "blank.html";
  std::ofstream(blank) << "<!DOCTYPE html><html><body></body></html>";
  const cli_test::Image empty = screenshot(blank, "blank");
  EXPECT_LT(cli_test::non_background_fraction(empty), 0.001);
  EXPECT_EQ(cli_test::pixels_near(empty, {0x4e, 0x79, 0xa7}), 0u);
}

}  // namespace
