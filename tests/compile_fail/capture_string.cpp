// Must NOT compile: a lambda capturing a std::string by value cannot be shipped to a
// worker process. A ProcessPoolExecutor knows its backend at compile time, so it refuses
// the call there; the test checks that the error names the fix (mproc::bind).
#include <mproc/executor.hpp>

#include <string>

int main() {
  mproc::ProcessPoolExecutor ex(1);
  std::string prefix = "x";
  auto f = [prefix](int i) { return prefix.size() + static_cast<std::size_t>(i); };
  return static_cast<int>(ex.submit(f, 3).get());
}
