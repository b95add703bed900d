// Bag of words in a Manager dict shared by pool workers, two ways: each word a get/set
// pair under an mproc::Lock (exact, but one lock round per word), and each document
// counted locally and merged in one call (atomic, no Lock needed). Mirrors
//   counts = Manager().dict(); lock = Lock()
//   def count(doc): for w in doc.split(): with lock: counts[w] = counts.get(w, 0) + 1
#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <vector>
#include <mproc/mproc.hpp>

using Dict = mproc::SharedDict<std::string, long>;

void count_locked(const Dict& counts, const mproc::Lock& lock, const std::string& doc) {
  std::istringstream in(doc);
  for (std::string w; in >> w;) {
    std::lock_guard hold(lock);  // get + set are two operations: without it, updates are lost
    counts.set(w, counts.get(w, 0) + 1);
  }
}

void count_merged(const Dict& counts, const std::string& doc) {
  std::map<std::string, long> local;
  std::istringstream in(doc);
  for (std::string w; in >> w;) ++local[w];
  counts.merge(local);  // counts[w] += n for every w, in one atomic operation
}

void print_top(const char* how, const Dict& counts) {
  auto items = counts.items();
  std::sort(items.begin(), items.end(), [](auto& x, auto& y) {
    return x.second != y.second ? x.second > y.second : x.first < y.first;
  });
  std::printf("%s: %zu distinct words, top", how, items.size());
  for (std::size_t i = 0; i < 5; ++i)
    std::printf(" %s=%ld", items[i].first.c_str(), items[i].second);
  std::printf("\n");
}

int main() {
  const std::vector<std::string> vocab{"cat", "dog", "bird", "fish", "mouse", "horse", "ox"};
  std::mt19937 rng(7);  // 12 documents of 500 words; the first words are the most frequent
  std::vector<std::string> docs(12);
  for (auto& doc : docs)
    for (int i = 0; i < 500; ++i) doc += vocab[std::min(rng() % 7, rng() % 7)] + " ";

  mproc::Manager manager;
  mproc::Pool pool(2);
  auto locked = manager.dict<std::string, long>();
  pool.map(mproc::bind(count_locked, locked, mproc::Lock()), docs);
  print_top("get/set under a Lock ", locked);
  auto merged = manager.dict<std::string, long>();
  pool.map(mproc::bind(count_merged, merged), docs);
  print_top("merge of local counts", merged);
}
