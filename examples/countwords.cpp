// The Pool exercise: count every word across several texts, each text counted by a worker
// with the counts merged inside the workers (map_reduce), then print alphabetically the
// words used more than a threshold. The texts are generated from a fixed seed, so the
// counts are the same on every run. Mirrors
//   def count(text): return Counter(text.split())
//   with Pool() as pool: total = sum(pool.map(count, texts), Counter())
//   for w in sorted(w for w, n in total.items() if n > 4500): print(w, total[w])
#include <cstdio>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>
#include <mproc/mproc.hpp>

using Counts = std::map<std::string, long>;

Counts count_words(const std::string& text) {
  Counts counts;
  std::istringstream in(text);
  for (std::string word; in >> word;) ++counts[word];
  return counts;
}

int main() {
  // 8 texts of 10000 words; min of two draws makes early words of the vocabulary common.
  const std::vector<std::string> vocabulary{
      "the",  "and", "to", "of", "a",  "i",   "you",  "my",   "in",  "that", "is",   "not",
      "with", "me",  "it", "for", "be", "his", "your", "this", "but", "he",   "have", "as"};
  std::mt19937 rng(2024);
  std::vector<std::string> texts(8);
  for (auto& text : texts)
    for (int i = 0; i < 10000; ++i) {
      auto a = rng() % vocabulary.size(), b = rng() % vocabulary.size();
      text += vocabulary[std::min(a, b)] + (i % 12 == 11 ? "\n" : " ");
    }

  mproc::Pool pool(2);
  Counts total = pool.map_reduce(
      count_words,
      [](Counts& acc, Counts&& more) {
        for (auto& [word, n] : more) acc[word] += n;
      },
      texts);
  long words = 0;
  for (auto& [word, n] : total) words += n;
  std::printf("%ld words, %zu distinct. Used more than 4500 times:\n", words, total.size());
  for (auto& [word, n] : total)  // a std::map iterates in alphabetical order
    if (n > 4500) std::printf("%s %ld\n", word.c_str(), n);
}
