// The mproc command-line tool, run as a real program: output, exit codes, stderr.
// And the word-count core it uses.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <mproc/serialize.hpp>

#include "words.hpp"

#include "cli_runner.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

using cli_test::lines;
using cli_test::mproc;
using cli_test::Result;

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mproc-wc-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    ::chmod(dir_.c_str(), 0700);
    for (auto& e : fs::recursive_directory_iterator(dir_)) ::chmod(e.path().c_str(), 0700);
    fs::remove_all(dir_);
  }
  fs::path write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  fs::path dir_;
};

TEST(Cli, InfoShowsCpuCountAndHowItWasDerived) {
  Result r = mproc({"info"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("cpu_count: "));
  EXPECT_THAT(r.out, HasSubstr("affinity mask:"));
  EXPECT_THAT(r.out, HasSubstr("backends:"));
}

TEST(Cli, UnknownFlagsAndSubcommandsAreUsageErrors) {
  for (auto args : std::vector<std::vector<std::string>>{
           {"wordcount", "--no-such-flag"}, {"frobnicate"}, {}, {"wordcount", "-j", "abc"},
           {"wordcount", "--size", "-1"}, {"wordcount", "--size", "lots"}, {"wordcount", "--size", "0"}}) {
    Result r = mproc(args);
    EXPECT_EQ(r.code, 2) << args.size();
    EXPECT_FALSE(r.err.empty());
    EXPECT_LE(lines(r.err), 3u) << r.err;  // a clear line, not a dump
  }
}

TEST_F(TempDir, WordcountCountsLikeThePythonReference) {
  write("a.txt", "The the THE the-end, (the) 'the' x\nLord lord\n");
  write("sub/b.txt", "the\tlord\xc2\xa0the\n");  // U+00A0 splits words, as str.split() does
  Result r = mproc({"wordcount", "--min-count", "1", dir_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "lord == 3\nthe == 7\n");  // what bench/python/countwords.py prints
  EXPECT_THAT(r.err, HasSubstr("2 files"));
}

TEST_F(TempDir, WordcountBadInputIsOneClearLineAndExitTwo) {
  Result missing = mproc({"wordcount", (dir_ / "nope").string()});
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.err, HasSubstr("nope"));
  EXPECT_EQ(lines(missing.err), 1u) << missing.err;

  write("bin/x.dat", std::string("ab\0cd", 5));
  Result binary = mproc({"wordcount", (dir_ / "bin").string()});
  EXPECT_EQ(binary.code, 2);
  EXPECT_THAT(binary.err, HasSubstr("binary"));

  write("ok/a.txt", "alpha alpha\n");
  write("ok/b.dat", std::string("\0\0", 2));
  Result skipped = mproc({"wordcount", "--skip-errors", "--min-count", "1", (dir_ / "ok").string()});
  EXPECT_EQ(skipped.code, 0) << skipped.err;
  EXPECT_EQ(skipped.out, "alpha == 2\n");
  EXPECT_THAT(skipped.err, HasSubstr("warning: skipping"));

  if (::geteuid() != 0) {  // root reads anything: a permission test cannot fail for root
    write("locked/c.txt", "beta\n");
    ::chmod((dir_ / "locked").c_str(), 0);
    Result locked = mproc({"wordcount", (dir_ / "locked").string()});
    EXPECT_EQ(locked.code, 2);
    EXPECT_THAT(locked.err, HasSubstr("locked"));
  }

  fs::create_directories(dir_ / "empty");
  Result empty = mproc({"wordcount", (dir_ / "empty").string()});
  EXPECT_EQ(empty.code, 2);
  EXPECT_THAT(empty.err, HasSubstr("no readable text files"));
}

TEST(Cli, WordcountOnThePlaysMatchesPython) {
  const fs::path plays = fs::path(MPROC_SOURCE_DIR) / "../shared/data/shakespeare/plays";
  if (!fs::exists(plays)) GTEST_SKIP() << "the Shakespeare corpus is not on this machine";
  if (std::system("python3 -c 'import re' >/dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  Result mine = mproc({"wordcount", "--list", plays.string()});
  ASSERT_EQ(mine.code, 0) << mine.err;
  const std::string py = std::string("python3 '") + MPROC_SOURCE_DIR +
                         "/bench/python/countwords.py' '" + plays.string() + "' 2>/dev/null";
  FILE* f = ::popen(py.c_str(), "r");
  std::string ref;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) ref.append(buf, n);
  ASSERT_EQ(::pclose(f), 0);
  EXPECT_EQ(mine.out, ref);
  EXPECT_EQ(lines(mine.out), 46u);
}

// Every word of the 92 books, not only the frequent ones: the tokenizer's whole output.
TEST(Cli, WordcountOnTheBooksMatchesPythonWordForWord) {
  const fs::path books = fs::path(MPROC_SOURCE_DIR) / "../shared/data/gutenberg/books";
  if (!fs::exists(books)) GTEST_SKIP() << "the Gutenberg corpus is not on this machine";
  if (std::system("python3 -c 'import re' >/dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  Result mine = mproc({"wordcount", "--list", "--min-count", "0", books.string()});
  ASSERT_EQ(mine.code, 0) << mine.err;
  const std::string py = std::string("python3 '") + MPROC_SOURCE_DIR +
                         "/bench/python/countwords.py' -j 2 --min-count 0 '" + books.string() +
                         "' 2>/dev/null";
  FILE* f = ::popen(py.c_str(), "r");
  std::string ref;
  char buf[65536];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) ref.append(buf, n);
  ASSERT_EQ(::pclose(f), 0);
  EXPECT_EQ(mine.out, ref);
  EXPECT_GT(lines(mine.out), 100000u);
}

TEST(Cli, WordcountSyntheticCorpusIsDeterministic) {
  Result a = mproc({"wordcount", "--size", "2M", "-j", "2"});
  Result b = mproc({"wordcount", "--size", "2M", "--serial"});
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);  // the pool and the serial count agree
}

TEST_F(TempDir, WordcountShowsATableOfTheMostFrequentAndOneSummaryLine) {
  // 25 distinct words; word k is used 100 + k times, so the order is known.
  std::string text;
  for (int k = 0; k < 25; ++k)
    for (int i = 0; i < 100 + k; ++i) {
      text += 'w';
      text += static_cast<char>('a' + k);
      text += ' ';
    }
  const fs::path f = write("t.txt", text);
  Result r = mproc({"wordcount", "-j", "2", f.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream out(r.out);
  std::string line;
  std::getline(out, line);
  EXPECT_THAT(line, ::testing::MatchesRegex(" *rank +word +count +share"));
  std::vector<std::string> rows;
  while (std::getline(out, line)) rows.push_back(line);
  ASSERT_EQ(rows.size(), 20u) << r.out;  // the 20 most frequent by default
  // The first row: wy, 124 of the 2800 words in all.
  EXPECT_THAT(rows[0], ::testing::MatchesRegex(" *1 +wy +124 +4\\.43%"));
  EXPECT_THAT(rows[19], ::testing::MatchesRegex(" *20 +wf +105 +3\\.75%"));
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_THAT(r.err, HasSubstr("1 file, "));
  EXPECT_THAT(r.err, HasSubstr("25 distinct words"));
  EXPECT_THAT(r.err, ::testing::ContainsRegex("; 2 workers: [0-9.]+ s, [0-9]+ MB/s"));
  EXPECT_THAT(r.err, ::testing::ContainsRegex("[0-9.]+x one worker \\([0-9.]+ s\\)"));
  EXPECT_THAT(r.err, ::testing::ContainsRegex("files checked in [0-9.]+ s; [0-9.]+ s in all"));

  Result top = mproc({"wordcount", "--top", "3", "--no-speedup", f.string()});
  ASSERT_EQ(top.code, 0) << top.err;
  EXPECT_EQ(lines(top.out), 4u) << top.out;
  EXPECT_THAT(top.err, Not(HasSubstr("one worker")));

  Result listing = mproc({"wordcount", "--list", "--min-count", "123", f.string()});
  ASSERT_EQ(listing.code, 0) << listing.err;
  EXPECT_EQ(listing.out, "wy == 124\n");
  EXPECT_THAT(listing.err, Not(HasSubstr("one worker")));  // the listing skips the baseline
}

TEST(Cli, WordcountOfTheBuiltInCorpusStatesTheGenerationApart) {
  Result r = mproc({"wordcount", "--size", "2M", "-j", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lines(r.out), 21u) << r.out;
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_THAT(r.err, HasSubstr("synthetic corpus, 2.1 MB"));
  EXPECT_THAT(r.err, ::testing::ContainsRegex("generated in [0-9.]+ s; [0-9.]+ s in all"));
}

TEST(Cli, AMistypedSubcommandGetsASuggestion) {
  Result r = mproc({"wordcunt"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "mproc: unknown subcommand 'wordcunt'; did you mean 'wordcount'?\n");
  Result tv = mproc({"trace-veiw", "x.json"});
  EXPECT_EQ(tv.code, 2);
  EXPECT_EQ(tv.err, "mproc: unknown subcommand 'trace-veiw'; did you mean 'trace-view'?\n");
  Result far = mproc({"frobnicate"});
  EXPECT_EQ(far.code, 2);
  EXPECT_EQ(far.err, "mproc: unknown subcommand 'frobnicate' (see mproc --help)\n");
  EXPECT_TRUE(r.out.empty() && far.out.empty());
}

TEST(Cli, HelpFitsEightyColumns) {
  const std::vector<std::string> subcommands{"info", "wordcount", "countlines", "pi", "dot",
                                             "rangecount", "run", "trace-view", "scaling"};
  Result top = mproc({"--help"});
  ASSERT_EQ(top.code, 0) << top.err;
  for (const auto& sub : subcommands) {
    // One line per subcommand: its name, then its one-line description.
    std::size_t found = 0;
    std::istringstream in(top.out);
    for (std::string line; std::getline(in, line);)
      if (line.rfind("  " + sub + " ", 0) == 0) ++found;
    EXPECT_EQ(found, 1u) << sub << " in\n" << top.out;
  }
  std::vector<std::vector<std::string>> helps{{"--help"}};
  for (const auto& sub : subcommands) helps.push_back({sub, "--help"});
  for (const auto& args : helps) {
    Result r = mproc(args);
    ASSERT_EQ(r.code, 0) << args[0];
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);)
      EXPECT_LE(line.size(), 80u) << args[0] << ": " << line;
  }
}

TEST_F(TempDir, EverySubcommandTakesJobsWithWorkersAsAnAlias) {
  const fs::path f = write("f.txt", "some words here\n");
  const std::vector<std::vector<std::string>> commands{
      {"pi", "--samples", "1000", "--json"}, {"dot", "--size", "1000", "--json"},
      {"rangecount", "--rows", "100", "--json"}, {"countlines", "--json", f.string()},
      {"wordcount", "--json", f.string()}};
  for (const auto& cmd : commands)
    for (const std::string flag : {"-j", "--jobs", "--workers"}) {
      auto args = cmd;
      args.insert(args.end(), {flag, "3"});
      Result r = mproc(args);
      ASSERT_EQ(r.code, 0) << cmd[0] << " " << flag << ": " << r.err;
      EXPECT_THAT(r.out, HasSubstr("\"workers\":3")) << cmd[0] << " " << flag;
    }
  for (const std::string flag : {"-j", "--jobs", "--workers"}) {
    Result r = mproc({"run", flag, "2", "echo", ":::", "a", "b"});
    EXPECT_EQ(r.code, 0) << flag << ": " << r.err;
    EXPECT_EQ(lines(r.out), 2u) << flag;
  }
}

TEST_F(TempDir, SummariesSayOneFileAndOneWorker) {
  const fs::path f = write("one.txt", "a line\n");
  Result c = mproc({"countlines", "-j", "1", f.string()});
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_THAT(c.err, HasSubstr("1 file, 1 line, 1 worker "));
  Result w = mproc({"wordcount", "-j", "1", f.string()});
  ASSERT_EQ(w.code, 0) << w.err;
  EXPECT_THAT(w.err, HasSubstr("1 file, "));
  EXPECT_THAT(w.err, HasSubstr("2 distinct words; 1 worker: "));
  Result p = mproc({"pi", "--samples", "1000", "-j", "1"});
  ASSERT_EQ(p.code, 0) << p.err;
  EXPECT_THAT(p.err, HasSubstr("1000 samples in 1 block, "));
}

/// Runs `script` with bash, "$MPROC" standing for the mproc binary; stdout and exit code.
Result shell(const std::string& script, const fs::path& dir) {
  const fs::path out = dir / "shell.out", sh = dir / "shell.sh";
  std::ofstream(sh) << "MPROC='" << MPROC_BINARY << "'\n" << script << "\n";
  const int status = std::system(("bash '" + sh.string() + "' >'" + out.string() + "' 2>/dev/null").c_str());
  std::ifstream f(out);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
          std::string((std::istreambuf_iterator<char>(f)), {}), ""};
}

TEST_F(TempDir, StreamsCountLikeARegularFileOfTheSameBytes) {
  // Over 1 MiB, so that a stream is split into several blocks like a file.
  const fs::path f = write("text.txt", mproc::words::synthetic_corpus(2'500'000, 3));
  const std::string file = "'" + f.string() + "'";
  Result regular = mproc({"wordcount", "--list", "--min-count", "0", f.string()});
  ASSERT_EQ(regular.code, 0) << regular.err;
  ASSERT_GT(lines(regular.out), 1000u);
  const std::string wc = "\"$MPROC\" wordcount --quiet --list --min-count 0 ";
  for (const std::string& script :
       {"cat " + file + " | " + wc + "-",                          // standard input
        "cat " + file + " | " + wc + "/dev/stdin",                 // /dev/stdin on a pipe
        wc + "<(cat " + file + ")",                                // process substitution
        "mkfifo '" + (dir_ / "fifo").string() + "' && (cat " + file + " > '" +
            (dir_ / "fifo").string() + "' &) && " + wc + "'" + (dir_ / "fifo").string() + "'"}) {
    Result r = shell(script, dir_);
    EXPECT_EQ(r.code, 0) << script;
    EXPECT_EQ(r.out, regular.out) << script;
  }
  // A stream and a file together: every count doubles, no word joins across them.
  Result both = shell("cat " + file + " | " + wc + "- " + file, dir_);
  ASSERT_EQ(both.code, 0);
  Result twice = mproc({"wordcount", "--list", "--min-count", "0", f.string(), f.string()});
  EXPECT_EQ(both.out, twice.out);

  // /proc files say st_size 0, yet have words.
  Result proc = mproc({"wordcount", "--list", "--min-count", "0", "/proc/self/status"});
  ASSERT_EQ(proc.code, 0) << proc.err;
  EXPECT_THAT(proc.out, HasSubstr("kb == "));

  Result lines_file = mproc({"countlines", f.string()});
  Result lines_stdin = shell("cat " + file + " | \"$MPROC\" countlines --quiet -", dir_);
  ASSERT_EQ(lines_stdin.code, 0);
  const std::string n = lines_file.out.substr(0, lines_file.out.find(' ', lines_file.out.find_first_not_of(' ')));
  EXPECT_THAT(lines_stdin.out, HasSubstr(n + " -\n"));
}

TEST(Words, AnySplitIntoBlocksCountsLikeTheWhole) {
  std::string text = mproc::words::synthetic_corpus(200'000, 7);
  text += " caf\xc3\xa9 na\xc3\xafve \xe2\x80\x83spaced\xe3\x80\x80out \xc4\xb0stanbul";
  mproc::words::Counts whole;
  mproc::words::count_text(text, whole);
  std::mt19937 rng(1);
  for (int round = 0; round < 20; ++round) {
    std::vector<std::size_t> cuts{0, text.size()};
    for (int k = 0; k < 30; ++k) cuts.push_back(rng() % text.size());
    std::sort(cuts.begin(), cuts.end());
    mproc::words::Counts parts;
    for (std::size_t i = 0; i + 1 < cuts.size(); ++i)
      mproc::words::count_block(text, cuts[i], cuts[i + 1], parts);
    ASSERT_EQ(parts, whole) << "round " << round;
  }
  EXPECT_EQ(whole.count("spaced"), 1u);  // U+2003 EM SPACE and U+3000 split words
  EXPECT_EQ(whole.count("out"), 1u);
  EXPECT_EQ(whole.count("caf"), 1u);     // [a-z-]+ stops at the first non-ASCII letter
  EXPECT_EQ(whole.count("i"), 1u);       // U+0130 lower-cases to "i" + a combining dot

  // The partial a worker sends back survives the trip, and corrupt bytes are refused.
  auto bytes = mproc::dumps(whole);
  EXPECT_EQ(mproc::loads<mproc::words::Counts>(bytes), whole);
  bytes.pop_back();  // each broken field: WordCounts.ACorruptPartialIsRefused
  EXPECT_THROW((void)mproc::loads<mproc::words::Counts>(bytes), mproc::SerializationError);
}

// The mpi line of `mproc info` against the build: mpi is built exactly when this test
// build has mproc::mpi (MPROC_TEST_MPI_VERSION, the MPI standard version CMake found), and
// the Open MPI version printed is the one `mpiexec --version` reports.
TEST(Cli, InfoSaysWhetherTheMpiBackendIsBuiltAndWhichMpi) {
  Result r = mproc({"info"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::string line;
  for (std::size_t at = 0, end; at < r.out.size(); at = end + 1) {
    end = r.out.find('\n', at);
    if (end == std::string::npos) end = r.out.size();
    if (r.out.compare(at, 9, "  mpi    ") == 0) line = r.out.substr(at, end - at);
  }
#if defined(MPROC_TEST_MPI_VERSION)
  const std::string tail = std::string(", MPI ") + MPROC_TEST_MPI_VERSION +
                           "; run under mpirun: --backend mpi)";
  FILE* f = ::popen("'" MPROC_TEST_MPIEXEC "' --version 2>&1", "r");
  ASSERT_NE(f, nullptr);
  std::string version;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) version.append(buf, n);
  ::pclose(f);
  // "mpiexec (OpenRTE) 4.1.4" (Open MPI 4), "mpiexec (Open MPI) 5.0.3" (Open MPI 5).
  std::size_t at = version.find("(OpenRTE) ");
  if (at == std::string::npos) at = version.find("(Open MPI) ");
  if (at != std::string::npos) {
    at = version.find(") ", at) + 2;
    const std::string number =
        version.substr(at, version.find_first_not_of("0123456789.", at) - at);
    EXPECT_EQ(line, "  mpi      built (Open MPI " + number + tail) << version;
  } else {
    EXPECT_THAT(line, ::testing::StartsWith("  mpi      built (")) << version;
    EXPECT_THAT(line, ::testing::EndsWith(tail));
  }
#else
  EXPECT_EQ(line, "  mpi      not built (configure with Open MPI's dev files installed)");
#endif
}

}  // namespace
