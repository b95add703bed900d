// Pool.map_async returns at once; the AsyncResult (an mproc::Future) says whether it is
// ready(), wait() blocks until it is, and get() gives the results (rethrowing a failed
// item's error). Each of the 8 items sleeps 100 ms, so on 2 workers the map takes 0.4 s
// and is not ready right after the call. Mirrors
//   result = pool.map_async(slow_square, range(8)); print(result.ready())
//   result.wait(); print(result.ready(), result.successful(), result.get())
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>
#include <mproc/mproc.hpp>

int slow_square(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return x * x;
}

int main() {
  mproc::Pool pool(2);
  mproc::Future<std::vector<int>> result = pool.map_async(slow_square, mproc::range(0, 8));
  std::printf("ready() right after map_async: %s\n", result.ready() ? "true" : "false");
  const bool early = result.wait_for(std::chrono::milliseconds(10));
  std::printf("wait_for(10 ms) -> %s\n", early ? "true" : "false");
  result.wait();
  std::printf("after wait(): ready() = %s, successful() = %s\n", result.ready() ? "true" : "false",
              result.successful() ? "true" : "false");
  std::printf("get():");
  for (int r : result.get()) std::printf(" %d", r);
  std::printf("\n");
}
