// The dot product of two arrays by four child processes, three ways: partial sums sent
// back through a Queue; partial sums added to a shared Value under a Lock; and the race
// that Python's tutorial warns about, v.set(v.get() + x) from several processes without a
// lock, which loses updates (how many varies from run to run). Mirrors
//   q = Queue(); ps = [Process(target=partial, args=(a, b, lo, hi, q)) ...]; sum(q.get() ...)
//   total = Value('l', 0); with lock: total.value += partial
#include <cstdio>
#include <mutex>
#include <vector>
#include <mproc/mproc.hpp>

constexpr long kN = 200'000, kProcs = 4, kChunk = kN / kProcs;

long partial(const mproc::Array<long>& a, const mproc::Array<long>& b, long lo, long hi) {
  long s = 0;
  for (long i = lo; i < hi; ++i) s += a[i] * b[i];
  return s;
}

template <class F>
void run_children(F body) {
  std::vector<mproc::Process> children;
  for (long p = 0; p < kProcs; ++p) children.emplace_back(body, p * kChunk, (p + 1) * kChunk);
  for (auto& c : children) c.start();
  for (auto& c : children) c.join();
}

int main() {
  mproc::Array<long> a(kN), b(kN, 2);
  for (long i = 0; i < kN; ++i) a[i] = i + 1;  // a . b = 2 * (1 + ... + kN) = kN * (kN + 1)
  std::printf("expected:           %ld\n", kN * (kN + 1));

  mproc::Queue<long> q;
  run_children([=](long lo, long hi) { q.put(partial(a, b, lo, hi)); });
  long via_queue = 0;
  for (long p = 0; p < kProcs; ++p) via_queue += q.get();
  std::printf("through a Queue:    %ld\n", via_queue);

  mproc::Value<long> total(0);
  mproc::Lock lock;
  run_children([=](long lo, long hi) {
    const long s = partial(a, b, lo, hi);
    std::lock_guard hold(lock);
    total.set(total.get() + s);
  });
  std::printf("Value under a Lock: %ld\n", total.get());

  mproc::Value<long> racy(0);  // one unlocked read-modify-write per element
  mproc::Barrier start_together(kProcs);
  run_children([=](long lo, long hi) {
    start_together.wait();
    for (long i = lo; i < hi; ++i) racy.set(racy.get() + a[i] * b[i]);
  });
  std::printf("without the lock:   %ld (%s)\n", racy.get(),
              racy.get() == kN * (kN + 1) ? "no update lost this time" : "updates were lost");
}
