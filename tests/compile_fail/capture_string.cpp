// Must NOT compile: a lambda capturing a std::string by value cannot be shipped to a
// worker process. The test checks that the error names the fix (mproc::bind).
#include <mproc/pool.hpp>

#include <string>

int main() {
  mproc::Pool pool(1);
  std::string prefix = "x";
  auto f = [prefix](int i) { return prefix.size() + static_cast<std::size_t>(i); };
  return static_cast<int>(pool.map(f, mproc::range(0, 3)).size());
}
