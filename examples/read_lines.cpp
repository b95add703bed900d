// Seed 002's readLine: a function mapped over the lines of a file, in chunks, without
// reading the file into memory first. Mirrors
//   def readLine(line): return len(line.split())
//   with open(path) as f, Pool(2) as pool:
//       counts = pool.map(readLine, f, chunksize=1000)
// The file is generated here: 100000 lines, line i holding i % 13 + 1 words (and every
// seventh line a Windows "\r\n" end, which mproc::lines removes whole).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>
#include <unistd.h>
#include <mproc/mproc.hpp>

constexpr std::size_t kLines = 100'000;

std::size_t read_line(const std::string& line) {
  std::size_t words = 0;
  bool in_word = false;
  for (char c : line) {
    const bool space = c == ' ' || c == '\t' || c == '\r';
    words += !space && !in_word;
    in_word = !space;
  }
  return words;
}

int main() {
  const auto path = std::filesystem::temp_directory_path() /
                    ("mproc_read_lines_" + std::to_string(::getpid()) + ".txt");
  std::size_t expected = 0;
  {
    std::ofstream out(path, std::ios::binary);
    for (std::size_t i = 0; i < kLines; ++i) {
      for (std::size_t w = 0; w <= i % 13; ++w) out << (w ? " word" : "word") << w;
      out << (i % 7 == 0 ? "\r\n" : "\n");
      expected += i % 13 + 1;
    }
  }

  mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
  const std::vector<std::size_t> counts =
      pool.map(read_line, mproc::lines(path), {.chunksize = 1000});
  const std::size_t total = std::accumulate(counts.begin(), counts.end(), std::size_t{0});
  std::size_t longest = 0;
  for (std::size_t n : pool.imap(read_line, mproc::lines(path), {.chunksize = 1000}))
    longest = std::max(longest, n);
  std::filesystem::remove(path);

  std::printf("%zu lines, %zu words (%s), at most %zu words on a line\n", counts.size(), total,
              total == expected ? "as written" : "NOT AS WRITTEN", longest);
  std::printf("first lines: %zu %zu %zu\n", counts[0], counts[1], counts[2]);
}
