// Must NOT compile: a callback given to map_async where Python's callback= would go. The
// error must say how callbacks are passed (mproc::Callbacks).
#include <mproc/pool.hpp>

#include <cstddef>
#include <vector>

int square(int x) { return x * x; }

int main() {
  mproc::Pool pool(1);
  std::size_t n = 0;
  auto f = pool.map_async(square, std::vector<int>{1, 2, 3},
                          [&](const std::vector<int>& r) { n = r.size(); });
  f.wait();
  return static_cast<int>(n);
}
