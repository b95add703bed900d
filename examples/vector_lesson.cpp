// The lesson of the "map overhead is VERY HIGH" tutorial, in mproc. Four jobs over
// vectors, each timed serially and on a Pool(2) that is already started:
//   vector_square  pool.map(square, v)              v: 2,000,000 doubles (16 MB: copied
//                  once into shared memory for the call)
//   map_into       pool.map_into(square, a, out)    the same with v in an Array, the
//                  results written in place: only index ranges travel
//   vector_add     pool.starmap(add, zip(a, b))     pairs of doubles
//   elem_elem_add  pool.map(bind(add_at, a, b), range(n)): the vectors as shared Arrays,
//                  sent once per worker; only indices travel
//   THICK          the same map where each item does real work (a 2000-step series)
// In Python the first three are many times slower than the loop (one pickled message per
// chunk, a result object per item). Here the cheap ones cost about what the loop costs, and
// the thick one gains from the second core. Every result is checked against the loop.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>
#include <mproc/mproc.hpp>

double square(double x) { return x * x; }
double add(double x, double y) { return x + y; }
double add_at(const mproc::Array<double>& a, const mproc::Array<double>& b, long i) {
  return a[i] + b[i];
}
double thick(double x) {
  double s = 0;
  for (int k = 1; k <= 2000; ++k) s += std::sin(x * k) / k;
  return s;
}

template <class F>
double millis(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

void report(const char* name, double serial_ms, double pool_ms, bool same) {
  std::printf("%-13s serial %8.2f ms, Pool(2) %8.2f ms: %s\n", name, serial_ms, pool_ms,
              same ? "same results" : "RESULTS DIFFER");
}

int main() {
  const long n = 2'000'000;
  std::vector<double> v(n), w(n);
  for (long i = 0; i < n; ++i) {
    v[i] = 0.5 * static_cast<double>(i);
    w[i] = 1.0 / static_cast<double>(i + 1);
  }
  mproc::Pool pool(2);
  pool.map(square, std::vector<double>(1000, 1.0));  // started, as in the tutorial's timings

  std::vector<double> serial, parallel;
  double s = millis([&] {
    serial.clear();
    for (double x : v) serial.push_back(square(x));
  });
  double p = millis([&] { parallel = pool.map(square, v); });
  report("vector_square", s, p, serial == parallel);

  const mproc::Array<double> a(v), b(w);
  const mproc::Array<double> squares(v.size());
  s = millis([&] {
    for (long i = 0; i < n; ++i) serial[i] = square(v[i]);  // into an existing output too
  });
  p = millis([&] { pool.map_into(square, a, squares); });
  report("map_into", s, p, serial == squares.to_vector());

  std::vector<std::pair<double, double>> pairs(n);
  for (long i = 0; i < n; ++i) pairs[i] = {v[i], w[i]};
  s = millis([&] {
    serial.clear();
    for (auto [x, y] : pairs) serial.push_back(add(x, y));
  });
  p = millis([&] { parallel = pool.starmap(add, pairs); });
  report("vector_add", s, p, serial == parallel);

  p = millis([&] { parallel = pool.map(mproc::bind(add_at, a, b), mproc::range(0L, n)); });
  report("elem_elem_add", s, p, serial == parallel);

  const long m = 10'000;
  s = millis([&] {
    serial.clear();
    for (long i = 0; i < m; ++i) serial.push_back(thick(v[i]));
  });
  p = millis([&] {
    parallel = pool.map(thick, std::vector<double>(v.begin(), v.begin() + m));
  });
  report("THICK", s, p, serial == parallel);
}
