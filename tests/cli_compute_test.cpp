// The compute subcommands of the mproc tool (pi, dot, rangecount, countlines, wordcount's
// --top and --json) and the options they share, run as a real program: output, exit
// codes, stderr. Every expected value is computed here, independently of the tool.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_runner.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using cli_test::lines;
using cli_test::mproc;
using cli_test::Result;
using Json = nlohmann::json;

/// The first capture of `pattern` in `text`, or "" if it does not match.
std::string capture(const std::string& text, const std::string& pattern) {
  std::smatch m;
  return std::regex_search(text, m, std::regex(pattern)) ? m[1].str() : std::string();
}

class ComputeFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mproc-cc-files-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  fs::path dir_;
};

// ---------------------------------------------------------------------------------- pi

std::string pi_hits(const std::vector<std::string>& extra, const std::string& seed,
                    const std::string& samples = "5000000") {
  std::vector<std::string> args{"pi", "--samples", samples, "--seed", seed};
  args.insert(args.end(), extra.begin(), extra.end());
  Result r = mproc(args);
  EXPECT_EQ(r.code, 0) << r.err;
  const std::string hits = capture(r.out, R"(\((\d+) hits of )" + samples + " samples");
  EXPECT_FALSE(hits.empty()) << r.out;
  return hits;
}

TEST(Pi, SameHitsWhateverTheWorkersBackendAndChunksize) {
  // 5 blocks of 2^20 samples, the last one short: more blocks than some worker counts,
  // fewer than others, and chunks that split them differently.
  const std::string reference = pi_hits({"-j", "1"}, "7");
  for (auto extra : std::vector<std::vector<std::string>>{
           {"-j", "2"},
           {"-j", "4"},
           {"-j", "3", "--chunksize", "1"},
           {"-j", "2", "--chunksize", "4"},
           {"--backend", "thread", "-j", "1"},
           {"--backend", "thread", "-j", "4", "--chunksize", "2"},
           {"--backend", "process", "-j", "2", "--progress"}}) {
    EXPECT_EQ(pi_hits(extra, "7"), reference) << ::testing::PrintToString(extra);
  }
  EXPECT_NE(pi_hits({"-j", "2"}, "8"), reference);  // another seed, other points
  EXPECT_NE(pi_hits({"-j", "2"}, "0"), reference);
}

TEST(Pi, IsCloseToPi) {
  Result r = mproc({"pi", "--samples", "4000000", "--seed", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string value = capture(r.out, R"(pi ~= ([0-9.]+))");
  ASSERT_FALSE(value.empty()) << r.out;
  EXPECT_NEAR(std::stod(value), std::numbers::pi, 0.01);
  EXPECT_THAT(r.err, HasSubstr("mproc pi: "));
}

TEST(Pi, JsonIsOneObjectWithTheResults) {
  Result r = mproc({"pi", "--samples", "3000000", "--seed", "5", "--json", "--backend", "thread",
                    "-j", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lines(r.out), 1u) << r.out;
  const Json j = Json::parse(r.out);
  EXPECT_EQ(j.at("command"), "pi");
  EXPECT_EQ(j.at("samples"), 3000000);
  EXPECT_EQ(j.at("seed"), 5);
  EXPECT_EQ(j.at("backend"), "thread");
  EXPECT_EQ(j.at("workers"), 2);
  ASSERT_TRUE(j.at("hits").is_number_unsigned()) << j;
  EXPECT_DOUBLE_EQ(j.at("pi").get<double>(), 4.0 * j.at("hits").get<double>() / 3e6);
  EXPECT_NEAR(j.at("pi").get<double>(), std::numbers::pi, 0.02);
  EXPECT_GE(j.at("seconds").get<double>(), 0.0);
  // --json changes no result.
  EXPECT_EQ(std::to_string(j.at("hits").get<std::uint64_t>()), pi_hits({"-j", "1"}, "5", "3000000"));
}

TEST(Pi, BadSampleCountsAreOneLineAndExitTwo) {
  for (std::string bad : {"abc", "0", "-5", "1.5", "", "99999999999999999999999"}) {
    Result r = mproc({"pi", "--samples", bad});
    EXPECT_EQ(r.code, 2) << bad;
    EXPECT_EQ(lines(r.err), 1u) << bad << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("--samples")) << bad;
    EXPECT_TRUE(r.out.empty()) << bad;
  }
}

// --------------------------------------------------------------------------------- dot

std::string expected_dot(std::uint64_t n) {
  std::uint64_t s = 0;
  for (std::uint64_t i = 0; i < n; ++i) s += (i % 7) * (i % 5);
  return std::to_string(s);
}

TEST(Dot, EveryMethodGivesTheExactProduct) {
  const std::string expected = expected_dot(100'003);
  Result all = mproc({"dot", "--size", "100003", "-j", "3"});
  ASSERT_EQ(all.code, 0) << all.err;
  for (std::string m : {"serial", "queue", "shared", "map"})
    EXPECT_EQ(capture(all.out, "(?:^|\n)" + m + R"( +dot = (\d+))"), expected) << m << "\n" << all.out;
  EXPECT_EQ(lines(all.out), 4u) << all.out;

  for (auto args : std::vector<std::vector<std::string>>{
           {"--method", "queue", "-j", "4"},
           {"--method", "shared", "-j", "2"},
           {"--method", "map", "-j", "2", "--chunksize", "1"},
           {"--method", "map", "--backend", "thread", "-j", "3"}}) {
    args.insert(args.begin(), {"dot", "--size", "100003"});
    Result r = mproc(args);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(capture(r.out, "(?:^|\n)" + args[4] + R"( +dot = (\d+))"), expected) << r.out;
  }

  Result tiny = mproc({"dot", "--size", "3", "-j", "8", "--json"});  // fewer elements than workers
  ASSERT_EQ(tiny.code, 0) << tiny.err;
  const Json j = Json::parse(tiny.out);
  EXPECT_EQ(j.at("expected"), std::stod(expected_dot(3)));
  ASSERT_EQ(j.at("results").size(), 4u);
  for (const Json& e : j.at("results")) {
    EXPECT_EQ(e.at("dot"), std::stod(expected_dot(3))) << e.at("method");
    EXPECT_EQ(e.at("ok"), true);
  }
}

TEST(Dot, BadSizesAreUsageErrors) {
  for (std::string bad : {"-1", "0", "abc", "1e6"}) {
    Result r = mproc({"dot", "--size", bad});
    EXPECT_EQ(r.code, 2) << bad;
    EXPECT_EQ(lines(r.err), 1u) << r.err;
  }
  Result m = mproc({"dot", "--method", "telepathy"});
  EXPECT_EQ(m.code, 2);
  EXPECT_EQ(lines(m.err), 1u) << m.err;
}

// -------------------------------------------------------------------------- rangecount

/// What the tool computes: rows of 5 numbers rng() % 10 from std::mt19937(100).
std::string expected_rangecount(std::size_t rows, int lo, int hi) {
  std::mt19937 rng(100);
  std::uint64_t total = 0;
  for (std::size_t r = 0; r < rows; ++r)
    for (int k = 0; k < 5; ++k) {
      const int v = static_cast<int>(rng() % 10);
      total += lo <= v && v <= hi;
    }
  return std::to_string(total);
}

TEST(Rangecount, EveryMethodGivesTheSameCount) {
  const std::string expected = expected_rangecount(2000, 4, 8);
  for (std::string m : {"serial", "map", "starmap", "apply", "apply_async"}) {
    Result r = mproc({"rangecount", "--rows", "2000", "--method", m, "-j", "2"});
    ASSERT_EQ(r.code, 0) << m << ": " << r.err;
    EXPECT_EQ(capture(r.out, m + R"( +count = (\d+))"), expected) << r.out;
    EXPECT_THAT(r.out, HasSubstr("us/row"));
  }
  // All at once, another range, the thread backend.
  const std::string other = expected_rangecount(2000, 2, 5);
  Result all = mproc({"rangecount", "--rows", "2000", "--min", "2", "--max", "5", "--backend",
                      "thread", "-j", "3", "--json"});
  ASSERT_EQ(all.code, 0) << all.err;
  const Json j = Json::parse(all.out);
  ASSERT_EQ(j.at("results").size(), 5u);
  for (const Json& e : j.at("results")) {
    EXPECT_EQ(std::to_string(e.at("count").get<std::uint64_t>()), other) << e.at("method");
    EXPECT_TRUE(e.contains("us_per_row"));
  }
}

TEST(Rangecount, BadInputIsUsageError) {
  for (auto args : std::vector<std::vector<std::string>>{{"--min", "6", "--max", "3"},
                                                         {"--rows", "0"},
                                                         {"--rows", "-4"},
                                                         {"--min", "x"},
                                                         {"--method", "guess"}}) {
    args.insert(args.begin(), "rangecount");
    Result r = mproc(args);
    EXPECT_EQ(r.code, 2) << args[1];
    EXPECT_EQ(lines(r.err), 1u) << r.err;
  }
}

// -------------------------------------------------------------------------- countlines

TEST_F(ComputeFiles, CountlinesCountsNewlinesPerFileAndTotal) {
  const fs::path a = write("a.txt", "one\ntwo\nthree\n");
  write("d/x.txt", "no newline at the end");
  write("d/sub/y.txt", std::string(1000, '\n'));
  write("d/empty.txt", "");
  Result r = mproc({"countlines", a.string(), (dir_ / "d").string(), "-j", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  // Argument order, then the directory's files sorted; counts right-aligned.
  std::vector<std::pair<std::string, std::string>> got;
  std::istringstream in(r.out);
  for (std::string count, path; in >> count >> path;) got.emplace_back(count, path);
  const std::vector<std::pair<std::string, std::string>> want{
      {"3", a.string()},
      {"0", (dir_ / "d/empty.txt").string()},
      {"1000", (dir_ / "d/sub/y.txt").string()},
      {"0", (dir_ / "d/x.txt").string()},
      {"1003", "total"}};
  EXPECT_EQ(got, want) << r.out;
  EXPECT_THAT(r.err, HasSubstr("4 files"));
}

TEST_F(ComputeFiles, CountlinesMissingFileIsOneLineAndExitTwo) {
  const fs::path a = write("a.txt", "1\n2\n");
  Result r = mproc({"countlines", a.string(), (dir_ / "nope.txt").string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "mproc countlines: cannot open '" + (dir_ / "nope.txt").string() +
                       "': No such file or directory\n");
  EXPECT_TRUE(r.out.empty());

  Result skipped = mproc({"countlines", "--skip-errors", "--quiet", a.string(),
                          (dir_ / "nope.txt").string()});
  EXPECT_EQ(skipped.code, 0) << skipped.err;
  EXPECT_THAT(skipped.err, HasSubstr("warning: skipping"));
  EXPECT_THAT(skipped.out, HasSubstr("2 total"));

  Result none = mproc({"countlines"});
  EXPECT_EQ(none.code, 2);
  EXPECT_EQ(lines(none.err), 1u) << none.err;
}

TEST_F(ComputeFiles, CountlinesJsonEscapesPaths) {
  const fs::path odd = write("we\"ird\\name\ttab.txt", "a\nb\nc\nd\n");
  const fs::path b = write("b.txt", "x\n");
  Result r = mproc({"countlines", "--json", "--backend", "thread", odd.string(), b.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  const Json j = Json::parse(r.out);
  EXPECT_EQ(j.at("command"), "countlines");
  ASSERT_EQ(j.at("files").size(), 2u);
  EXPECT_EQ(j.at("files").at(0).at("path"), odd.string());  // decoded back to the raw name
  EXPECT_EQ(j.at("files").at(0).at("lines"), 4);
  EXPECT_EQ(j.at("files").at(1).at("lines"), 1);
  EXPECT_EQ(j.at("total"), 5);
  EXPECT_THAT(r.out, HasSubstr(R"(we\"ird\\name\ttab.txt)"));
}

// --------------------------------------------------------------------------- wordcount

TEST_F(ComputeFiles, WordcountTopAndJson) {
  std::string text;
  for (int i = 0; i < 5; ++i) text += "Alpha ";
  for (int i = 0; i < 3; ++i) text += "gamma, beta\n";
  text += "delta\n";
  const fs::path f = write("w.txt", text);

  Result top = mproc({"wordcount", "--list", "--top", "3", f.string()});
  ASSERT_EQ(top.code, 0) << top.err;
  EXPECT_EQ(top.out, "alpha == 5\nbeta == 3\ngamma == 3\n");  // ties: by word

  Result json = mproc({"wordcount", "--json", "--min-count", "1", f.string()});
  ASSERT_EQ(json.code, 0) << json.err;
  const Json j = Json::parse(json.out);
  ASSERT_EQ(j.at("words").size(), 3u);  // more than once: alphabetical
  EXPECT_EQ(j.at("words").at(0).at("word"), "alpha");
  EXPECT_EQ(j.at("words").at(0).at("count"), 5);
  EXPECT_EQ(j.at("words").at(2).at("word"), "gamma");
  EXPECT_EQ(j.at("files"), 1);
  EXPECT_EQ(j.at("bytes"), text.size());
  EXPECT_EQ(j.at("distinct"), 4);
  EXPECT_TRUE(j.contains("seconds"));

  Result both = mproc({"wordcount", "--json", "--top", "1", "--serial", f.string()});
  ASSERT_EQ(both.code, 0) << both.err;
  const Json k = Json::parse(both.out);
  ASSERT_EQ(k.at("words").size(), 1u);
  EXPECT_EQ(k.at("words").at(0).at("word"), "alpha");

  Result zero = mproc({"wordcount", "--top", "0", f.string()});
  EXPECT_EQ(zero.code, 2);
}

// ---------------------------------------------------------------------- common options

TEST_F(ComputeFiles, CommonOptionsAreCheckedByEverySubcommand) {
  const fs::path f = write("f.txt", "some words here\n");
  const std::vector<std::vector<std::string>> commands{
      {"pi", "--samples", "1000"}, {"dot", "--size", "1000"},
      {"rangecount", "--rows", "100"}, {"countlines", f.string()},
      {"wordcount", "--min-count", "0", f.string()}};
  for (const auto& cmd : commands) {
    for (auto bad : std::vector<std::vector<std::string>>{
             {"-j", "-1"}, {"-j", "abc"}, {"--workers", "1.5"}, {"--backend", "nope"},
             {"--chunksize", "-2"}}) {
      auto args = cmd;
      args.insert(args.end(), bad.begin(), bad.end());
      Result r = mproc(args);
      EXPECT_EQ(r.code, 2) << cmd[0] << " " << bad[0] << " " << bad[1];
      EXPECT_EQ(lines(r.err), 1u) << r.err;
    }
    auto mpi = cmd;
    mpi.insert(mpi.end(), {"--backend", "mpi", "--quiet"});
    Result m = mproc(mpi);
#if defined(MPROC_TEST_MPIEXEC)
    // Started without mpirun: a job of one rank, whose tasks run in-process.
    auto process = cmd;
    process.insert(process.end(), {"--backend", "process", "--quiet"});
    EXPECT_EQ(m.code, 0) << cmd[0] << ": " << m.err;
    if (cmd[0] != "dot" && cmd[0] != "rangecount") {  // these print timings
      EXPECT_EQ(m.out, mproc(process).out) << cmd[0];
    }
#else
    EXPECT_EQ(m.code, 2) << cmd[0];
    EXPECT_EQ(m.err, "mproc: the mpi backend is not built (it comes with MPI support)\n");
#endif

    // --trace writes a timeline with at least one chunk; a file that cannot be written
    // is one line and exit 2.
    for (const char* backend : {"process", "thread"}) {
      auto trace = cmd;
      trace.insert(trace.end(), {"--quiet", "--backend", backend, "--trace",
                                 (dir_ / "t.json").string()});
      Result t = mproc(trace);
      EXPECT_EQ(t.code, 0) << cmd[0] << ": " << t.err;
      std::ifstream in(dir_ / "t.json");
      const std::string json((std::istreambuf_iterator<char>(in)), {});
      EXPECT_THAT(json, HasSubstr(std::string("backend, ")));
      EXPECT_THAT(json, HasSubstr("{\"ph\":\"X\"")) << cmd[0] << " " << backend;
      fs::remove(dir_ / "t.json");
    }
    auto bad_trace = cmd;
    bad_trace.insert(bad_trace.end(), {"--trace", (dir_ / "none" / "t.json").string()});
    Result bt = mproc(bad_trace);
    EXPECT_EQ(bt.code, 2) << cmd[0];
    EXPECT_EQ(lines(bt.err), 1u) << bt.err;
    EXPECT_THAT(bt.err, HasSubstr("cannot write the trace file")) << cmd[0];

    auto quiet = cmd;
    quiet.insert(quiet.end(), {"--quiet", "-j", "2"});
    Result q = mproc(quiet);
    EXPECT_EQ(q.code, 0) << cmd[0] << ": " << q.err;
    EXPECT_EQ(q.err, "") << cmd[0];
    EXPECT_FALSE(q.out.empty()) << cmd[0];

    auto loud = cmd;
    loud.insert(loud.end(), {"-j", "2", "--backend", "thread"});
    Result l = mproc(loud);
    EXPECT_EQ(l.code, 0) << cmd[0] << ": " << l.err;
    EXPECT_THAT(l.err, HasSubstr("mproc " + cmd[0] + ": ")) << cmd[0];
    EXPECT_EQ(lines(l.err), 1u) << l.err;

    auto help = cmd;
    help.push_back("--help");
    Result h = mproc(help);
    EXPECT_EQ(h.code, 0);
    EXPECT_THAT(h.out, HasSubstr("Exit codes: 0 success, 1 "));
    EXPECT_THAT(h.out, HasSubstr("--backend"));
  }
}

}  // namespace

// ------------------------------------------------------------------------- under mpirun

#if defined(MPROC_TEST_MPIEXEC)
/// `mpiexec -n 3 mproc args...`: rank 0 runs the subcommand, ranks 1 and 2 its tasks.
Result mproc_under_mpiexec(const std::vector<std::string>& args) {
  std::string cmd = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 '" +
                    std::string(MPROC_TEST_MPIEXEC) + "' --oversubscribe -n 3 '" +
                    MPROC_BINARY + "'";
  for (auto& a : args) cmd += " '" + a + "'";
  const fs::path out = fs::temp_directory_path() / ("mproc-mpiexec-" + std::to_string(::getpid()));
  cmd += " >'" + out.string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream in(out);
  Result r{WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
           std::string((std::istreambuf_iterator<char>(in)), {}), ""};
  fs::remove(out);
  return r;
}

TEST_F(ComputeFiles, UnderMpiexecTheMpiBackendGivesTheProcessBackendsOutput) {
  std::string text;
  for (int i = 0; i < 400; ++i) text += "word" + std::to_string(i % 37) + " and more words\n";
  std::vector<std::string> files;
  for (int k = 0; k < 6; ++k) files.push_back(write("d/f" + std::to_string(k) + ".txt", text).string());

  std::vector<std::string> wc{"wordcount", "--quiet", "--min-count", "0"};
  wc.insert(wc.end(), files.begin(), files.end());
  auto with = [](std::vector<std::string> args, const char* backend) {
    args.insert(args.begin() + 1, {"--backend", backend});
    return args;
  };
  Result process = mproc(with(wc, "process"));
  ASSERT_EQ(process.code, 0) << process.err;
  Result mpi = mproc_under_mpiexec(with(wc, "mpi"));
  EXPECT_EQ(mpi.code, 0) << mpi.out;
  EXPECT_EQ(mpi.out, process.out);

  const std::vector<std::string> pi{"pi", "--quiet", "--samples", "3000000", "--seed", "7"};
  Result pi_process = mproc(with(pi, "process"));
  Result pi_mpi = mproc_under_mpiexec(with(pi, "mpi"));
  EXPECT_EQ(pi_mpi.code, 0) << pi_mpi.out;
  EXPECT_EQ(pi_mpi.out, pi_process.out);
}

TEST(Cli, UnderMpiexecTheBuiltInCorpusIsRefusedNotCountedAsNothing) {
  // The other ranks do not have rank 0's generated corpus: counting it there gave
  // "0 distinct words" and exit 0.
  Result r = mproc_under_mpiexec({"wordcount", "--backend", "mpi", "--size", "1M"});
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--backend mpi needs PATH arguments"));
  EXPECT_THAT(r.out, Not(HasSubstr("distinct words")));
}
#endif

// ------------------------------------------------------------- --json, read by nlohmann

TEST_F(ComputeFiles, CountlinesJsonIsValidWhateverTheFileNames) {
  // A name with a byte that is not UTF-8 (0xff), and one with a quote and a newline.
  write("d/bad\xffname.txt", "1\n2\n");
  write("d/quote\"and\nnewline.txt", "x\n");
  const Result r = mproc({"countlines", "--json", "--quiet", (dir_ / "d").string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lines(r.out), 1u) << r.out;
  EXPECT_EQ(r.out.find('\xff'), std::string::npos) << r.out;
  Json j;
  ASSERT_NO_THROW(j = Json::parse(r.out)) << r.out;  // strict: bytes that are not UTF-8 throw
  ASSERT_EQ(j.at("files").size(), 2u) << j;
  EXPECT_EQ(j.at("files").at(0).at("path"), (dir_ / "d").string() + "/bad\uFFFDname.txt");
  EXPECT_EQ(j.at("files").at(0).at("lines"), 2);
  EXPECT_EQ(j.at("files").at(1).at("path"), (dir_ / "d" / "quote\"and\nnewline.txt").string());
  EXPECT_EQ(j.at("files").at(1).at("lines"), 1);
  EXPECT_EQ(j.at("total"), 3);
}

TEST_F(ComputeFiles, EveryCommandPrintsOneJsonObject) {
  const std::string text = "one two two\nthree three three\n";
  const fs::path f = write("f.txt", text);
  const std::vector<std::vector<std::string>> commands{
      {"pi", "--samples", "100000", "--seed", "3"},
      {"dot", "--size", "1000"},
      {"rangecount", "--rows", "100"},
      {"countlines", f.string()},
      {"wordcount", "--min-count", "0", f.string()}};
  for (auto args : commands) {
    const std::string name = args[0];
    SCOPED_TRACE(name);
    args.insert(args.end(), {"--json", "--quiet", "--backend", "thread", "-j", "2"});
    const Result r = mproc(args);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(lines(r.out), 1u) << r.out;
    // ordered_json keeps the members in the order the tool wrote them.
    const auto j = nlohmann::ordered_json::parse(r.out);
    ASSERT_TRUE(j.is_object()) << j;
    EXPECT_EQ(j.begin().key(), "command");
    EXPECT_EQ(j.at("command"), name);
    EXPECT_EQ(j.at("workers"), 2);
    EXPECT_EQ(j.at("backend"), "thread");
    EXPECT_EQ(j.at("chunksize"), 0);
    ASSERT_TRUE(j.at("seconds").is_number()) << j;
    EXPECT_GE(j.at("seconds").get<double>(), 0.0);
    EXPECT_LT(j.at("seconds").get<double>(), 120.0);

    if (name == "pi") {
      EXPECT_EQ(j.at("samples"), 100000);
      EXPECT_EQ(j.at("seed"), 3);
      EXPECT_EQ(j.at("blocks"), 1);
      const double hits = j.at("hits").get<double>();
      EXPECT_LE(hits, 100000);
      EXPECT_DOUBLE_EQ(j.at("pi").get<double>(), 4 * hits / 100000);
      EXPECT_NEAR(j.at("pi").get<double>(), std::numbers::pi, 0.05);
      EXPECT_NEAR(j.at("error").get<double>(), j.at("pi").get<double>() - std::numbers::pi, 1e-12);
    } else if (name == "dot") {
      EXPECT_EQ(j.at("size"), 1000);
      EXPECT_EQ(j.at("method"), "all");
      const double expected = std::stod(expected_dot(1000));
      EXPECT_EQ(j.at("expected"), expected);
      ASSERT_EQ(j.at("results").size(), 4u) << j;
      std::vector<std::string> methods;
      for (const auto& e : j.at("results")) {
        methods.push_back(e.at("method").get<std::string>());
        EXPECT_EQ(e.at("dot"), expected) << e;
        EXPECT_EQ(e.at("ok"), true) << e;
        EXPECT_GE(e.at("seconds").get<double>(), 0.0) << e;
      }
      EXPECT_EQ(methods, (std::vector<std::string>{"serial", "queue", "shared", "map"}));
    } else if (name == "rangecount") {
      EXPECT_EQ(j.at("rows"), 100);
      EXPECT_EQ(j.at("method"), "all");
      const std::string expected =
          expected_rangecount(100, j.at("min").get<int>(), j.at("max").get<int>());
      ASSERT_EQ(j.at("results").size(), 5u) << j;
      for (const auto& e : j.at("results")) {
        EXPECT_EQ(std::to_string(e.at("count").get<std::uint64_t>()), expected) << e;
        EXPECT_EQ(e.at("ok"), true) << e;
        EXPECT_GE(e.at("us_per_row").get<double>(), 0.0) << e;
      }
    } else if (name == "countlines") {
      EXPECT_EQ(j.at("files"), nlohmann::ordered_json::parse(
                                   R"([{"path":")" + f.string() + R"(","lines":2}])"));
      EXPECT_EQ(j.at("total"), 2);
    } else {
      EXPECT_EQ(j.at("words"), nlohmann::ordered_json::parse(
                                   R"([{"word":"one","count":1},{"word":"three","count":3},)"
                                   R"({"word":"two","count":2}])"));
      EXPECT_EQ(j.at("files"), 1);
      EXPECT_EQ(j.at("synthetic"), false);
      EXPECT_EQ(j.at("bytes"), text.size());
      EXPECT_EQ(j.at("distinct"), 3);
      EXPECT_EQ(j.at("serial"), false);
    }
  }
}
