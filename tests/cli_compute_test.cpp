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
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "cli_runner.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using cli_test::lines;
using cli_test::mproc;
using cli_test::Result;

/// The first capture of `pattern` in `text`, or "" if it does not match.
std::string capture(const std::string& text, const std::string& pattern) {
  std::smatch m;
  return std::regex_search(text, m, std::regex(pattern)) ? m[1].str() : std::string();
}

/// A JSON value, as a strict little parser reads it: enough to check that the tool's
/// output is valid JSON (escapes included) and to look at its fields.
struct Json {
  enum Kind { null, boolean, number, string, array, object } kind = null;
  bool b = false;
  double num = 0;
  std::string text;  ///< a string's decoded value, or a number's literal
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> fields;

  const Json& operator[](std::string_view key) const {
    for (auto& [k, v] : fields)
      if (k == key) return v;
    throw std::out_of_range("no key " + std::string(key));
  }
  bool has(std::string_view key) const {
    return std::any_of(fields.begin(), fields.end(), [&](auto& f) { return f.first == key; });
  }
  const Json& operator[](std::size_t i) const { return items.at(i); }

  static Json parse(std::string_view s) {
    std::size_t i = 0;
    Json v = value(s, i);
    ws(s, i);
    if (i != s.size()) throw std::runtime_error("trailing text after JSON");
    return v;
  }

 private:
  static void ws(std::string_view s, std::size_t& i) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) ++i;
  }
  static void expect(std::string_view s, std::size_t& i, char c) {
    ws(s, i);
    if (i >= s.size() || s[i] != c) throw std::runtime_error(std::string("expected ") + c);
    ++i;
  }
  static std::string str(std::string_view s, std::size_t& i) {
    expect(s, i, '"');
    std::string out;
    for (;;) {
      if (i >= s.size()) throw std::runtime_error("unterminated string");
      const char c = s[i++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) throw std::runtime_error("raw control char");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) throw std::runtime_error("bad escape");
      const char e = s[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (i + 4 > s.size()) throw std::runtime_error("bad \\u");
          const unsigned long cp = std::stoul(std::string(s.substr(i, 4)), nullptr, 16);
          if (cp >= 0x80) throw std::runtime_error("test parser: \\u above 0x7f");
          out += static_cast<char>(cp);
          i += 4;
          break;
        }
        default: throw std::runtime_error("bad escape");
      }
    }
  }
  static Json value(std::string_view s, std::size_t& i) {
    ws(s, i);
    if (i >= s.size()) throw std::runtime_error("missing value");
    Json v;
    const char c = s[i];
    if (c == '{') {
      v.kind = object;
      ++i;
      ws(s, i);
      if (i < s.size() && s[i] == '}') {
        ++i;
        return v;
      }
      for (;;) {
        std::string k = str(s, i);
        expect(s, i, ':');
        v.fields.emplace_back(std::move(k), value(s, i));
        ws(s, i);
        if (i < s.size() && s[i] == ',') { ++i; continue; }
        expect(s, i, '}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = array;
      ++i;
      ws(s, i);
      if (i < s.size() && s[i] == ']') {
        ++i;
        return v;
      }
      for (;;) {
        v.items.push_back(value(s, i));
        ws(s, i);
        if (i < s.size() && s[i] == ',') { ++i; continue; }
        expect(s, i, ']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = string;
      v.text = str(s, i);
      return v;
    }
    for (auto [word, k, truth] : {std::tuple{std::string_view("true"), boolean, true},
                                  std::tuple{std::string_view("false"), boolean, false},
                                  std::tuple{std::string_view("null"), null, false}}) {
      if (s.substr(i, word.size()) == word) {
        i += word.size();
        v.kind = k;
        v.b = truth;
        return v;
      }
    }
    static const std::regex number_re(R"(^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?)");
    std::match_results<std::string_view::const_iterator> m;
    if (!std::regex_search(s.begin() + static_cast<std::ptrdiff_t>(i), s.end(), m, number_re))
      throw std::runtime_error("bad value at " + std::to_string(i));
    v.kind = number;
    v.text = m.str();
    v.num = std::stod(v.text);
    i += v.text.size();
    return v;
  }
};

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
  EXPECT_EQ(j["command"].text, "pi");
  EXPECT_EQ(j["samples"].text, "3000000");
  EXPECT_EQ(j["seed"].text, "5");
  EXPECT_EQ(j["backend"].text, "thread");
  EXPECT_EQ(j["workers"].text, "2");
  EXPECT_EQ(j["hits"].kind, Json::number);
  EXPECT_DOUBLE_EQ(j["pi"].num, 4.0 * j["hits"].num / 3e6);
  EXPECT_NEAR(j["pi"].num, std::numbers::pi, 0.02);
  EXPECT_GE(j["seconds"].num, 0.0);
  EXPECT_EQ(j["hits"].text, pi_hits({"-j", "1"}, "5", "3000000"));  // --json changes no result
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
  EXPECT_EQ(j["expected"].text, expected_dot(3));
  ASSERT_EQ(j["results"].items.size(), 4u);
  for (const Json& e : j["results"].items) {
    EXPECT_EQ(e["dot"].text, expected_dot(3)) << e["method"].text;
    EXPECT_TRUE(e["ok"].b);
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
  ASSERT_EQ(j["results"].items.size(), 5u);
  for (const Json& e : j["results"].items) {
    EXPECT_EQ(e["count"].text, other) << e["method"].text;
    EXPECT_TRUE(e.has("us_per_row"));
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
  EXPECT_EQ(j["command"].text, "countlines");
  ASSERT_EQ(j["files"].items.size(), 2u);
  EXPECT_EQ(j["files"][0]["path"].text, odd.string());  // decoded back to the raw name
  EXPECT_EQ(j["files"][0]["lines"].text, "4");
  EXPECT_EQ(j["files"][1]["lines"].text, "1");
  EXPECT_EQ(j["total"].text, "5");
  EXPECT_THAT(r.out, HasSubstr(R"(we\"ird\\name\ttab.txt)"));
}

// --------------------------------------------------------------------------- wordcount

TEST_F(ComputeFiles, WordcountTopAndJson) {
  std::string text;
  for (int i = 0; i < 5; ++i) text += "Alpha ";
  for (int i = 0; i < 3; ++i) text += "gamma, beta\n";
  text += "delta\n";
  const fs::path f = write("w.txt", text);

  Result top = mproc({"wordcount", "--top", "3", f.string()});
  ASSERT_EQ(top.code, 0) << top.err;
  EXPECT_EQ(top.out, "alpha == 5\nbeta == 3\ngamma == 3\n");  // ties: by word

  Result json = mproc({"wordcount", "--json", "--min-count", "1", f.string()});
  ASSERT_EQ(json.code, 0) << json.err;
  const Json j = Json::parse(json.out);
  ASSERT_EQ(j["words"].items.size(), 3u);  // more than once: alphabetical
  EXPECT_EQ(j["words"][0]["word"].text, "alpha");
  EXPECT_EQ(j["words"][0]["count"].text, "5");
  EXPECT_EQ(j["words"][2]["word"].text, "gamma");
  EXPECT_EQ(j["files"].text, "1");
  EXPECT_EQ(j["bytes"].text, std::to_string(text.size()));
  EXPECT_EQ(j["distinct"].text, "4");
  EXPECT_TRUE(j.has("seconds"));

  Result both = mproc({"wordcount", "--json", "--top", "1", "--serial", f.string()});
  ASSERT_EQ(both.code, 0) << both.err;
  const Json k = Json::parse(both.out);
  ASSERT_EQ(k["words"].items.size(), 1u);
  EXPECT_EQ(k["words"][0]["word"].text, "alpha");

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
#endif
