// The tutorial's exercise "row-wise common items of two lists of lists", with one
// Pool.apply per pair of rows. Mirrors
//   list_a = [[1, 2, 3], [5, 6, 7, 8], [10, 11, 12], [20, 21]]
//   list_b = [[2, 3, 4, 5], [6, 9, 10], [11, 12, 13, 14], [21, 24, 25]]
//   def get_commons(l1, l2): return list(set(l1).intersection(set(l2)))
//   with Pool() as pool: print([pool.apply(get_commons, args=(l1, l2))
//                               for l1, l2 in zip(list_a, list_b)])
#include <algorithm>
#include <cstdio>
#include <iterator>
#include <vector>
#include <mproc/mproc.hpp>

using List = std::vector<int>;

List get_commons(List l1, List l2) {
  std::sort(l1.begin(), l1.end());
  std::sort(l2.begin(), l2.end());
  List common;
  std::set_intersection(l1.begin(), l1.end(), l2.begin(), l2.end(), std::back_inserter(common));
  return common;
}

int main() {
  const std::vector<List> list_a{{1, 2, 3}, {5, 6, 7, 8}, {10, 11, 12}, {20, 21}};
  const std::vector<List> list_b{{2, 3, 4, 5}, {6, 9, 10}, {11, 12, 13, 14}, {21, 24, 25}};

  mproc::Pool pool(2);
  std::printf("common items: [");
  for (std::size_t i = 0; i < list_a.size(); ++i) {
    List common = pool.apply(get_commons, list_a[i], list_b[i]);
    std::printf("%s[", i ? ", " : "");
    for (std::size_t j = 0; j < common.size(); ++j) std::printf("%s%d", j ? ", " : "", common[j]);
    std::printf("]");
  }
  std::printf("]\n");
}
