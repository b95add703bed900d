// Must NOT compile: Python's `pool.apply_async(square, (7,), callback=cb)` written as an
// extra argument. square takes one int, so the callable is not one of its arguments; the
// error must say how callbacks are passed (mproc::Callbacks).
#include <mproc/pool.hpp>

int square(int x) { return x * x; }

int main() {
  mproc::Pool pool(1);
  int seen = 0;
  auto f = pool.apply_async(square, 7, [&](int r) { seen = r; });
  f.wait();
  return seen;
}
