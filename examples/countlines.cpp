// Count the lines of several files in parallel: one pool task per path, then the total.
// The files are generated first (file k has 1234 * k lines) in a fresh directory under
// the system's temporary directory, and removed at the end. Mirrors
//   def count_lines(path): return sum(1 for _ in open(path))
//   with Pool(2) as pool: counts = pool.map(count_lines, paths); print(sum(counts))
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>
#include <unistd.h>
#include <mproc/mproc.hpp>

namespace fs = std::filesystem;

long count_lines(const std::string& path) {
  std::ifstream in(path);
  long lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  return lines;
}

int main() {
  const fs::path dir = fs::temp_directory_path() / ("mproc_countlines_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::vector<std::string> paths;
  for (int k = 1; k <= 5; ++k) {
    paths.push_back((dir / ("file" + std::to_string(k) + ".txt")).string());
    std::ofstream out(paths.back());
    for (int i = 0; i < 1234 * k; ++i) out << "line " << i << " of file " << k << '\n';
  }

  mproc::Pool pool(2);
  std::vector<long> counts = pool.map(count_lines, paths);
  for (std::size_t i = 0; i < paths.size(); ++i)
    std::printf("%s: %ld lines\n", fs::path(paths[i]).filename().c_str(), counts[i]);
  std::printf("total: %ld lines\n", std::accumulate(counts.begin(), counts.end(), 0L));
  fs::remove_all(dir);
}
