// `queue_pairs [N] [--trace FILE]`: N (default 100000) put/get pairs of an int through one
// mproc::Queue in one thread, the loop alone in run_pairs() so that
//   valgrind --tool=callgrind --toggle-collect=run_pairs build/bench/queue_pairs
// counts the instructions of the pairs and nothing else: the cost of tracing's hook on
// put and get (docs/benchmarks.md), off and (with --trace) on.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <mproc/queue.hpp>
// Also builds against an mproc from before trace_to, to compare with.
#if __has_include(<mproc/trace.hpp>)
#include <mproc/trace.hpp>
#define MPROC_HAS_TRACE_TO 1
#endif

extern "C" [[gnu::noinline]] long run_pairs(const mproc::Queue<int>& q, long n) {
  long sum = 0;
  for (long i = 0; i < n; ++i) {
    q.put(static_cast<int>(i));
    sum += q.get();
  }
  return sum;
}

int main(int argc, char** argv) {
  long n = 100000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--trace") == 0 && i + 1 < argc) {
#if defined(MPROC_HAS_TRACE_TO)
      mproc::trace_to(argv[++i]);
#else
      std::fprintf(stderr, "queue_pairs: this mproc has no trace_to\n");
      return 2;
#endif
    } else {
      n = std::atol(argv[i]);
    }
  }
  mproc::Queue<int> q;
  const long sum = run_pairs(q, n);
  const bool ok = sum == n * (n - 1) / 2;
  std::printf("%ld pairs, %s\n", n, ok ? "sum ok" : "WRONG SUM");
  return ok ? 0 : 1;
}
