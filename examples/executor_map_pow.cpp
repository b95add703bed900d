// An executor's map over several iterables calls f with one item of each, as zip() pairs
// them, and stops at the shortest. Mirrors
//   with ProcessPoolExecutor() as executor:
//       print(list(executor.map(pow, [2, 3, 4], [5, 6, 7])))
//       print(list(executor.map(pow, [2, 3, 4], [5, 6])))
//       print(list(executor.map(lambda a, b, c: a * b + c, [1, 2], [3, 4], [5, 6])))
#include <cstdio>
#include <vector>
#include <mproc/mproc.hpp>

long ipow(long base, long exponent) {
  long r = 1;
  for (long i = 0; i < exponent; ++i) r *= base;
  return r;
}

template <class Results>
void print(const char* what, Results&& results) {
  std::printf("%s [", what);
  const char* sep = "";
  for (long r : results) {
    std::printf("%s%ld", sep, r);
    sep = ", ";
  }
  std::printf("]\n");
}

int main() {
  mproc::ProcessPoolExecutor executor(2);
  const std::vector<long> bases{2, 3, 4};
  print("pow over [2, 3, 4], [5, 6, 7]:", executor.map(ipow, bases, std::vector<long>{5, 6, 7}));
  print("pow over [2, 3, 4], [5, 6]:   ", executor.map(ipow, bases, std::vector<long>{5, 6}));
  print("a * b + c over three lists:   ",
        executor.map([](long a, long b, long c) { return a * b + c; }, std::vector<long>{1, 2},
                     std::vector<long>{3, 4}, std::vector<long>{5, 6}));
}
