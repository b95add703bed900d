// The same two jobs on a ThreadPoolExecutor and a ProcessPoolExecutor of 2 workers: a
// CPU-bound one (counting the primes below 200000 in 8 ranges) and a sleep-bound one
// (8 tasks that each wait 0.1 s, as for I/O). In Python threads do not speed up the
// CPU-bound job (one thread at a time runs Python code, under the GIL), only the waiting;
// C++ threads run at once, so both executors speed up both. Mirrors
//   for Executor in (ThreadPoolExecutor, ProcessPoolExecutor):
//       with Executor(2) as ex: start = time.time(); list(ex.map(count_primes, ranges))
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <utility>
#include <vector>
#include <mproc/mproc.hpp>

using Range = std::pair<long, long>;

long count_primes(Range r) {
  long count = 0;
  for (long n = std::max(r.first, 2L); n < r.second; ++n) {
    bool prime = true;
    for (long d = 2; d * d <= n && prime; ++d) prime = n % d != 0;
    count += prime;
  }
  return count;
}

long wait_then_double(Range r) {
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return 2 * r.first;
}

template <class Executor>
std::pair<std::vector<long>, double> timed(Executor& ex, long (*f)(Range),
                                           const std::vector<Range>& ranges) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<long> out;
  for (long r : ex.map(f, ranges, {.chunksize = 1})) out.push_back(r);
  return {out, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                   .count()};
}

long sum(const std::vector<long>& v) {
  long s = 0;
  for (long x : v) s += x;
  return s;
}

int main() {
  std::vector<Range> ranges;
  for (long lo = 0; lo < 200'000; lo += 25'000) ranges.emplace_back(lo, lo + 25'000);
  mproc::ProcessPoolExecutor processes(2);  // forked before this process has other threads
  mproc::ThreadPoolExecutor threads(2);
  const struct {
    const char* what;
    long (*f)(Range);
  } jobs[] = {{"cpu-bound:  ", count_primes}, {"sleep-bound:", wait_then_double}};
  for (const auto& job : jobs) {
    const auto [by_threads, thread_ms] = timed(threads, job.f, ranges);
    const auto [by_processes, process_ms] = timed(processes, job.f, ranges);
    std::printf("%s threads %7.1f ms, processes %7.1f ms, sum %ld, %s\n", job.what, thread_ms,
                process_ms, sum(by_threads),
                by_threads == by_processes ? "same results" : "DIFFERENT");
  }
}
