// concurrent.futures with a ProcessPoolExecutor: submit() returns a Future whose status
// can be polled (running, done), a task that has not started can be cancelled, a done
// callback runs once the result is set, and as_completed yields futures as they finish.
// Mirrors
//   with ProcessPoolExecutor(2) as ex:
//       fs = [ex.submit(slow_square, x) for x in range(1, 7)]; fs[5].cancel()
//       fs[0].add_done_callback(cb); for f in as_completed(fs[:5]): print(f.result())
#include <chrono>
#include <cstdio>
#include <future>
#include <thread>
#include <vector>
#include <mproc/mproc.hpp>

using namespace std::chrono_literals;

int slow_square(int x) {
  std::this_thread::sleep_for(300ms);
  return x * x;
}

int main() {
  mproc::ProcessPoolExecutor ex(2);
  std::vector<mproc::Future<int>> fs;
  for (int x = 1; x <= 6; ++x) fs.push_back(ex.submit(slow_square, x));

  // fs[5] has not started: the two workers hold at most two tasks each, for 0.3 s each.
  const bool cancelled = fs[5].cancel();
  std::printf("cancel(fs[5]) -> %s, cancelled() = %s\n", cancelled ? "true" : "false",
              fs[5].cancelled() ? "true" : "false");

  std::promise<int> from_callback;
  fs[0].add_done_callback([&](const mproc::Future<int>& f) { from_callback.set_value(f.get()); });
  while (!fs[0].running() && !fs[0].done()) std::this_thread::sleep_for(1ms);
  std::printf("fs[0]: running() = %s, done() = %s\n", fs[0].running() ? "true" : "false",
              fs[0].done() ? "true" : "false");
  std::printf("the done callback of fs[0] got %d\n", from_callback.get_future().get());

  int sum = 0, count = 0;
  std::vector<mproc::Future<int>> live(fs.begin(), fs.begin() + 5);
  for (const auto& f : mproc::as_completed(live)) {
    sum += f.get();
    ++count;
  }
  std::printf("as_completed: %d results, sum of squares of 1..5 = %d\n", count, sum);
  std::printf("fs[0]: running() = %s, done() = %s\n", fs[0].running() ? "true" : "false",
              fs[0].done() ? "true" : "false");
}
