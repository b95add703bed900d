// mproc::lines: a file's lines as a lazy range, alone and as the input of Pool calls, in
// bounded memory; missing and unreadable files; line ends (LF, CRLF, none at the end).
#include <mproc/lines.hpp>
#include <mproc/pool.hpp>

#include <gtest/gtest.h>

#include "proc_counts.hpp"
#include "sanitizers.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <ranges>
#include <set>
#include <string>
#include <system_error>
#include <tuple>
#include <vector>

namespace {

namespace fs = std::filesystem;

static_assert(std::ranges::input_range<mproc::Lines>);
static_assert(std::ranges::view<mproc::Lines>);
static_assert(!std::ranges::forward_range<mproc::Lines>);
static_assert(std::is_same_v<std::ranges::range_value_t<mproc::Lines>, std::string>);

/// A file of the test's own, removed at the end.
class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    path_ = fs::temp_directory_path() /
            ("mproc_lines_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    std::ofstream(path_, std::ios::binary) << content;
  }
  TempFile() : TempFile(std::string()) {}
  ~TempFile() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

std::vector<std::string> read_all(const fs::path& p) {
  std::vector<std::string> out;
  for (const std::string& line : mproc::lines(p)) out.push_back(line);
  return out;
}

using Lines = std::vector<std::string>;

TEST(Lines, SplitsAtNewlinesWithoutTheNewline) {
  TempFile f("alpha\nbeta\n\ngamma delta\n");
  EXPECT_EQ(read_all(f.path()), (Lines{"alpha", "beta", "", "gamma delta"}));
}

TEST(Lines, LastLineWithoutNewlineIsALine) {
  TempFile f("one\ntwo");
  EXPECT_EQ(read_all(f.path()), (Lines{"one", "two"}));
}

TEST(Lines, EmptyFileHasNoLinesAndANewlineOneEmptyLine) {
  TempFile empty;
  EXPECT_TRUE(read_all(empty.path()).empty());
  TempFile newline("\n");
  EXPECT_EQ(read_all(newline.path()), (Lines{""}));
  TempFile blanks("\n\n\n");
  EXPECT_EQ(read_all(blanks.path()), (Lines{"", "", ""}));
}

TEST(Lines, CrlfEndsAreRemovedWholeOtherCarriageReturnsStay) {
  TempFile f("dos\r\nline\r\n\r\nmid\rdle\nlast\r");
  EXPECT_EQ(read_all(f.path()), (Lines{"dos", "line", "", "mid\rdle", "last\r"}));
}

TEST(Lines, LinesAcrossBlockBoundaries) {
  // A '\r' as the last byte of a block and its '\n' first of the next; a line longer than
  // a block; a newline as the last byte of a block.
  const std::string a(mproc::kLinesBlockBytes - 1, 'a');
  const std::string b(3 * mproc::kLinesBlockBytes + 17, 'b');
  const std::string c(mproc::kLinesBlockBytes - 1 - 2, 'c');  // after "\n", ends a block
  std::string content = a + "\r\n" + b + "\n" + c + "\n" + "tail";
  TempFile f(content);
  EXPECT_EQ(read_all(f.path()), (Lines{a, b, c, "tail"}));
}

TEST(Lines, MissingFileIsASystemErrorNamingThePath) {
  const fs::path p = fs::temp_directory_path() / "mproc_lines_no_such_file.txt";
  try {
    (void)mproc::lines(p);
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOENT);
    EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
  }
}

TEST(Lines, DirectoryIsRefused) {
  try {
    (void)mproc::lines(fs::temp_directory_path());
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EISDIR);
    EXPECT_NE(std::string(e.what()).find(fs::temp_directory_path().string()), std::string::npos);
  }
}

TEST(Lines, APathThroughAFileIsRefused) {
  TempFile f("not a directory\n");
  const fs::path p = f.path() / "inside.txt";
  try {
    (void)mproc::lines(p);
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOTDIR);
    EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
  }
}

TEST(Lines, UnreadableFileIsRefused) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads files whatever their mode";
  TempFile f("secret\n");
  fs::permissions(f.path(), fs::perms::none);
  try {
    (void)mproc::lines(f.path());
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EACCES);
    EXPECT_NE(std::string(e.what()).find(f.path().string()), std::string::npos);
  }
}

TEST(Lines, ClosesTheFileWithTheRange) {
  TempFile f("a\nb\nc\n");
  const int before = proc_counts::open_fds();
  {
    auto ls = mproc::lines(f.path());
    EXPECT_EQ(proc_counts::open_fds(), before + 1);
    auto it = ls.begin();
    EXPECT_EQ(*it, "a");
  }
  EXPECT_EQ(proc_counts::open_fds(), before);
}

TEST(Lines, SinglePass) {
  TempFile f("1\n2\n3\n");
  auto ls = mproc::lines(f.path());
  auto it = ls.begin();
  EXPECT_EQ(*it, "1");
  ++it;
  // A second begin() goes on where the first iterator stands.
  EXPECT_EQ(*ls.begin(), "2");
  ++it;
  ++it;
  EXPECT_TRUE(it == ls.end());
  EXPECT_TRUE(ls.begin() == ls.end());
}

/// A file of `n` lines of about `width` bytes, line i starting with i.
std::string numbered(std::size_t n, std::size_t width) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    std::string line = std::to_string(i) + ":";
    line.resize(width, static_cast<char>('a' + i % 26));
    s += line;
    s += '\n';
  }
  return s;
}

TEST(Lines, BuffersAtMostOneBlock) {
  TempFile f(numbered(20000, 200));  // 4 MB
  auto ls = mproc::lines(f.path());
  std::size_t n = 0, most = 0;
  for (auto it = ls.begin(); it != ls.end(); ++it, ++n) most = std::max(most, ls.buffered());
  EXPECT_EQ(n, 20000u);
  EXPECT_GT(most, 0u);
  EXPECT_LE(most, mproc::kLinesBlockBytes);
}

std::size_t key(const std::string& line) {
  // The number before ':' times 7, plus the line's length: wrong if a line is cut,
  // merged or given to the wrong item.
  return std::stoul(line.substr(0, line.find(':'))) * 7 + line.size();
}

std::vector<std::size_t> serial_keys(const fs::path& p) {
  std::vector<std::size_t> out;
  for (const std::string& line : mproc::lines(p)) out.push_back(key(line));
  return out;
}

using Case = std::tuple<mproc::Backend, unsigned>;
class LinesPool : public ::testing::TestWithParam<Case> {
 protected:
  mproc::Pool make_pool() const {
    return mproc::Pool({.workers = std::get<1>(GetParam()), .backend = std::get<0>(GetParam())});
  }
};

TEST_P(LinesPool, MapImapAndImapUnorderedOverLines) {
  TempFile f(numbered(3000, 40) + "2999999:last line without newline");
  const auto want = serial_keys(f.path());
  ASSERT_EQ(want.size(), 3001u);
  mproc::Pool pool = make_pool();
  for (std::size_t chunksize : {1, 16, 500}) {
    SCOPED_TRACE("chunksize " + std::to_string(chunksize));
    EXPECT_EQ(pool.map(key, mproc::lines(f.path()), {.chunksize = chunksize}), want);
    std::vector<std::size_t> ordered;
    for (std::size_t k : pool.imap(key, mproc::lines(f.path()), {.chunksize = chunksize}))
      ordered.push_back(k);
    EXPECT_EQ(ordered, want);
    std::multiset<std::size_t> unordered;
    for (std::size_t k : pool.imap_unordered(key, mproc::lines(f.path()), {.chunksize = chunksize}))
      unordered.insert(k);
    EXPECT_EQ(unordered, std::multiset<std::size_t>(want.begin(), want.end()));
  }
}

TEST_P(LinesPool, EmptyFileGivesNoResults) {
  TempFile f;
  mproc::Pool pool = make_pool();
  EXPECT_TRUE(pool.map(key, mproc::lines(f.path()), {.chunksize = 4}).empty());
  std::size_t n = 0;
  for (std::size_t k : pool.imap(key, mproc::lines(f.path()))) n += k + 1;
  EXPECT_EQ(n, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    BackendsAndWorkers, LinesPool,
    ::testing::Combine(::testing::Values(mproc::Backend::thread, mproc::Backend::process),
                       ::testing::Values(1u, 2u, 4u)),
    [](const auto& p) {
      return std::string(std::get<0>(p.param) == mproc::Backend::thread ? "thread"
                                                                            : "process") +
             "_" + std::to_string(std::get<1>(p.param));
    });

/// This process's peak resident set since the last reset_peak_rss(), in bytes.
std::size_t peak_rss() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoul(line.substr(6)) * 1024;
  return 0;
}
/// Resets VmHWM to the current RSS (proc(5), /proc/pid/clear_refs, value 5).
bool reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

/// Streams a big file through a pool and checks that this process's peak memory grows by
/// far less than the file's size: the lines are read as the pool sends them, never all
/// at once.
void check_bounded(mproc::Backend backend, bool use_map) {
  if (kSanitized) GTEST_SKIP() << "the sanitizers' allocator makes RSS bounds meaningless";
  constexpr std::size_t lines = 64 * 1024, width = 1023;  // 64 MiB
  TempFile f;
  {
    std::ofstream out(f.path(), std::ios::binary);
    std::string line;
    for (std::size_t i = 0; i < lines; ++i) {
      line = std::to_string(i) + ":";
      line.resize(width, 'x');
      out << line << '\n';
    }
  }
  ASSERT_EQ(fs::file_size(f.path()), lines * (width + 1));
  mproc::Pool pool({.workers = 2, .backend = backend});
  if (!reset_peak_rss()) GTEST_SKIP() << "/proc/self/clear_refs is not writable here";
  const std::size_t before = peak_rss();
  std::size_t total = 0, n = 0;
  if (use_map) {
    const auto keys = pool.map(key, mproc::lines(f.path()), {.chunksize = 64});
    n = keys.size();
    total = std::accumulate(keys.begin(), keys.end(), std::size_t{0});
  } else {
    for (std::size_t k : pool.imap_unordered(key, mproc::lines(f.path()), {.chunksize = 64})) {
      total += k;
      ++n;
    }
  }
  const std::size_t growth = peak_rss() - before;
  EXPECT_EQ(n, lines);
  EXPECT_EQ(total, 7 * (lines * (lines - 1) / 2) + lines * width);
  EXPECT_LT(growth, std::size_t{24} << 20) << "peak RSS grew by " << growth << " bytes for a "
                                           << fs::file_size(f.path()) << "-byte file";
}

TEST(LinesMemory, ProcessMapOverABigFileStaysBounded) { check_bounded(mproc::Backend::process, true); }
TEST(LinesMemory, ProcessImapOverABigFileStaysBounded) {
  check_bounded(mproc::Backend::process, false);
}
TEST(LinesMemory, ThreadMapOverABigFileStaysBounded) { check_bounded(mproc::Backend::thread, true); }
TEST(LinesMemory, ThreadImapOverABigFileStaysBounded) {
  check_bounded(mproc::Backend::thread, false);
}

}  // namespace
