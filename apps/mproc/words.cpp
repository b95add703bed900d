#include "words.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace mproc::words {
namespace {

/// Length of the whitespace character starting at p (0 if none), by Python's
/// str.isspace: ASCII \t\n\v\f\r, space, \x1c-\x1f, and the Unicode spaces in UTF-8.
std::size_t space_at(std::string_view t, std::size_t p) {
  const auto c = static_cast<unsigned char>(t[p]);
  if (c < 0x80) return (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) ? 1 : 0;
  auto at = [&](std::size_t k) {
    return p + k < t.size() ? static_cast<unsigned char>(t[p + k]) : 0u;
  };
  if (c == 0xC2) return (at(1) == 0x85 || at(1) == 0xA0) ? 2 : 0;  // U+0085, U+00A0
  if (c == 0xE1) return (at(1) == 0x9A && at(2) == 0x80) ? 3 : 0;  // U+1680
  if (c == 0xE2) {
    if (at(1) == 0x80) {
      const unsigned d = at(2);  // U+2000-200A, U+2028, U+2029, U+202F
      return ((d >= 0x80 && d <= 0x8A) || d == 0xA8 || d == 0xA9 || d == 0xAF) ? 3 : 0;
    }
    return (at(1) == 0x81 && at(2) == 0x9F) ? 3 : 0;  // U+205F
  }
  if (c == 0xE3) return (at(1) == 0x80 && at(2) == 0x80) ? 3 : 0;  // U+3000
  return 0;
}

bool continuation(std::string_view t, std::size_t p) {
  return (static_cast<unsigned char>(t[p]) & 0xC0) == 0x80;
}

/// Whether a whitespace character ends right before p (p > 0, p on a character boundary).
bool space_before(std::string_view t, std::size_t p) {
  std::size_t q = p - 1;
  for (int k = 0; k < 3 && q > 0 && continuation(t, q); ++k) --q;
  const std::size_t n = space_at(t, q);
  return n != 0 && q + n == p;
}

/// Lower-cased ASCII letter or '-', as [a-z-] matches after str.lower(); 0 otherwise.
inline char word_char(unsigned char c) {
  if (c >= 'a' && c <= 'z') return static_cast<char>(c);
  if (c >= 'A' && c <= 'Z') return static_cast<char>(c + 32);
  return c == '-' ? '-' : 0;
}

}  // namespace

void count_block(std::string_view text, std::size_t begin, std::size_t end, Counts& out) {
  end = std::min(end, text.size());
  std::size_t p = std::min(begin, end);
  // Start on a character boundary; a token already running at `begin` belongs to the
  // previous block.
  while (p < end && continuation(text, p)) ++p;
  if (p > 0 && p < end && !space_before(text, p)) {
    while (p < text.size() && space_at(text, p) == 0) ++p;
  }
  std::string word;
  while (p < end) {
    if (std::size_t s = space_at(text, p)) {
      p += s;
      continue;
    }
    // A token starts at p (< end): it runs to the next whitespace, wherever that is.
    word.clear();
    bool done = false;
    while (p < text.size() && space_at(text, p) == 0) {
      const auto c = static_cast<unsigned char>(text[p]);
      if (!done) {
        if (char w = word_char(c)) {
          word.push_back(w);
        } else if (c == 0xC4 && p + 1 < text.size() &&
                   static_cast<unsigned char>(text[p + 1]) == 0xB0) {
          // U+0130 lower-cases to "i" + U+0307: an "i" that ends the match.
          word.push_back('i');
          done = true;
        } else if (c == 0xE2 && p + 2 < text.size() &&
                   static_cast<unsigned char>(text[p + 1]) == 0x84 &&
                   static_cast<unsigned char>(text[p + 2]) == 0xAA) {
          word.push_back('k');  // U+212A KELVIN SIGN lower-cases to "k"
          p += 2;
        } else if (!word.empty()) {
          done = true;  // the first match ended
        }
      }
      ++p;
    }
    if (!word.empty()) {
      auto it = out.find(std::string_view(word));
      if (it != out.end())
        ++it->second;
      else
        out.emplace(word, 1);
    }
  }
}

void merge(Counts& into, Counts&& from) {
  if (into.empty()) {
    into = std::move(from);
    return;
  }
  for (auto& [w, c] : from) into[w] += c;
}

std::string synthetic_corpus(std::size_t bytes, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  // A fixed vocabulary of pronounceable words.
  const char* syllables[] = {"ta", "ne", "ri", "so", "lu", "ka", "me", "do", "vi", "pe",
                             "ro", "sa", "ti", "mo", "la", "ge", "fu", "ha", "ba", "ze"};
  std::vector<std::string> vocab;
  for (int i = 0; i < 20000; ++i) {
    std::string w;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n; ++k) w += syllables[rng() % 20];
    vocab.push_back(std::move(w));
  }
  // Zipf(1) over ranks: P(rank r) ~ 1/r, sampled with a cumulative table.
  std::vector<double> cdf(vocab.size());
  double sum = 0;
  for (std::size_t r = 0; r < vocab.size(); ++r) cdf[r] = (sum += 1.0 / static_cast<double>(r + 1));
  std::uniform_real_distribution<double> u(0, sum);
  std::string out;
  out.reserve(bytes + 64);
  std::size_t line = 0;
  while (out.size() < bytes) {
    const std::size_t r =
        static_cast<std::size_t>(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin());
    std::string w = vocab[std::min(r, vocab.size() - 1)];
    const auto x = rng() % 100;
    if (x < 8) w[0] = static_cast<char>(w[0] - 32);  // Capitalised
    if (x >= 95) w += (x % 2 ? "," : ".");
    out += w;
    line += w.size() + 1;
    if (line > 70) {
      out += '\n';
      line = 0;
    } else {
      out += ' ';
    }
  }
  return out;
}

}  // namespace mproc::words
