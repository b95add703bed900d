// 100 processes share a job counter: each takes the Value's lock, adds one, and writes
// the number it drew into its own slot of an Array. Under the lock every process draws a
// different number, so the slots hold 1..100 once each and the count ends at 100.
// Mirrors
//   counter = Value('i', 0); slots = Array('i', 100)
//   def job(i):
//       with counter.get_lock(): counter.value += 1; slots[i] = counter.value
//   ps = [Process(target=job, args=(i,)) for i in range(100)]
#include <algorithm>
#include <cstdio>
#include <mutex>
#include <numeric>
#include <vector>
#include <mproc/mproc.hpp>

constexpr int kProcs = 100;

int main() {
  mproc::Value<int> counter(0);
  mproc::Array<int> slots(kProcs, 0);
  std::vector<mproc::Process> ps;
  for (int i = 0; i < kProcs; ++i)
    ps.emplace_back(
        [=](int slot) {
          std::lock_guard hold(counter.get_lock());
          counter.set(counter.get() + 1);
          slots[slot] = counter.get();
        },
        i);
  for (auto& p : ps) p.start();
  int failed = 0;
  for (auto& p : ps) {
    p.join();
    failed += *p.exitcode() != 0;
  }

  std::vector<int> drawn = slots.to_vector();
  std::sort(drawn.begin(), drawn.end());
  std::vector<int> expected(kProcs);
  std::iota(expected.begin(), expected.end(), 1);
  std::printf("%d processes, %d failed, final count %d\n", kProcs, failed, counter.get());
  std::printf("slots sum to %d and hold 1..%d once each: %s\n",
              std::accumulate(drawn.begin(), drawn.end(), 0), kProcs,
              drawn == expected ? "yes" : "no");
}
