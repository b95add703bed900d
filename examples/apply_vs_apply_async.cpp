// Four different functions run in a Pool(4): with apply one after the other (each call
// waits for its result), then all submitted with apply_async before the first get().
// Each also sleeps 0.2 s, standing for real work: apply takes the sum of the four,
// apply_async about the longest one. The results are the same. Mirrors
//   results = [pool.apply(f, args) for f, args in jobs]
//   futures = [pool.apply_async(f, args) for f, args in jobs]; [r.get() for r in futures]
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>
#include <mproc/mproc.hpp>

using namespace std::chrono_literals;

long square(long x) {
  std::this_thread::sleep_for(200ms);
  return x * x;
}
long factorial(int n) {
  std::this_thread::sleep_for(200ms);
  long r = 1;
  for (int i = 2; i <= n; ++i) r *= i;
  return r;
}
long fibonacci(int n) {
  std::this_thread::sleep_for(200ms);
  long a = 0, b = 1;
  for (int i = 0; i < n; ++i) b = std::exchange(a, b) + b;
  return a;
}
std::string repeat(std::string s, int times) {
  std::this_thread::sleep_for(200ms);
  std::string r;
  for (int i = 0; i < times; ++i) r += s;
  return r;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int main() {
  mproc::Pool pool(4);
  auto start = std::chrono::steady_clock::now();
  const long s = pool.apply(square, 12L);
  const long f = pool.apply(factorial, 10);
  const long fib = pool.apply(fibonacci, 30);
  const std::string r = pool.apply(repeat, std::string("ab"), 3);
  const double one_by_one = seconds_since(start);
  std::printf("apply:       %ld %ld %ld %s\n", s, f, fib, r.c_str());

  start = std::chrono::steady_clock::now();
  mproc::Future<long> fs = pool.apply_async(square, 12L);
  mproc::Future<long> ff = pool.apply_async(factorial, 10);
  mproc::Future<long> ffib = pool.apply_async(fibonacci, 30);
  mproc::Future<std::string> fr = pool.apply_async(repeat, std::string("ab"), 3);
  std::printf("apply_async: %ld %ld %ld %s\n", fs.get(), ff.get(), ffib.get(), fr.get().c_str());
  const double together = seconds_since(start);
  std::printf("apply one by one took %.2f s, apply_async %.2f s\n", one_by_one, together);
}
