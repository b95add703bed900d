#include "words.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mproc/error.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <utility>
#include <limits>
#include <stdexcept>
#include <cmath>
#include <functional>
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

namespace {

// Byte classes for the fast path: ASCII whitespace (str.split's set), [A-Za-z-], other
// ASCII, and non-ASCII (a lead or continuation byte: looked at by the slow path).
enum : unsigned char { other = 0, space = 1, letter = 2, high = 3 };

constexpr std::array<unsigned char, 256> byte_classes() {
  std::array<unsigned char, 256> t{};
  for (int c = 0; c < 256; ++c) {
    if (c >= 0x80)
      t[c] = high;
    else if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f))
      t[c] = space;
    else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-')
      t[c] = letter;
  }
  return t;
}
constexpr auto classes = byte_classes();

inline std::uint64_t mix(std::uint64_t h, unsigned char c) {
  return (h ^ c) * 0x100000001b3ull;  // FNV-1a step
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
  const auto* t = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  char word[256];
  std::string long_word;  // the rare word longer than `word`
  while (p < end) {
    const unsigned char cls = classes[t[p]];
    if (cls == space) {
      ++p;
      continue;
    }
    if (cls == high) {
      if (std::size_t s = space_at(text, p)) {
        p += s;
        continue;
      }
    }
    // A token starts at p (< end): it runs to the next whitespace, wherever that is.
    std::size_t len = 0;
    std::uint64_t h = 0xcbf29ce484222325ull;
    bool done = false;
    long_word.clear();
    auto push = [&](char c) {
      if (len < sizeof word)
        word[len] = c;
      else {
        if (long_word.empty()) long_word.assign(word, len);
        long_word.push_back(c);
      }
      ++len;
      h = mix(h, static_cast<unsigned char>(c));
    };
    while (p < n) {
      const unsigned char c = t[p];
      const unsigned char k = classes[c];
      if (k == space) break;
      if (k == high && space_at(text, p) != 0) break;
      if (!done) {
        if (k == letter) {
          push(c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : static_cast<char>(c));
        } else if (c == 0xC4 && p + 1 < n && t[p + 1] == 0xB0) {
          push('i');  // U+0130 lower-cases to "i" + U+0307: an "i" that ends the match
          done = true;
        } else if (c == 0xE2 && p + 2 < n && t[p + 1] == 0x84 && t[p + 2] == 0xAA) {
          push('k');  // U+212A KELVIN SIGN lower-cases to "k"
          p += 2;
        } else if (len != 0) {
          done = true;  // the first match ended
        }
      }
      ++p;
    }
    if (len != 0) out.add_hashed(len <= sizeof word ? std::string_view(word, len) : long_word, h, 1);
  }
}

std::uint64_t Counts::hash(std::string_view w) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : w) h = mix(h, static_cast<unsigned char>(c));
  return h;
}

void Counts::add_hashed(std::string_view w, std::uint64_t h, std::uint64_t n) {
  std::size_t i = h & (slots_.size() - 1);
  for (;;) {
    Slot& s = slots_[i];
    if (s.count == 0) {
      // Offsets are 32-bit: 4 GiB of distinct words in one table is far beyond any text.
      if (arena_.size() + w.size() > std::numeric_limits<std::uint32_t>::max())
        throw std::length_error("word counts: more than 4 GiB of distinct words");
      s = {h, static_cast<std::uint32_t>(arena_.size()), static_cast<std::uint32_t>(w.size()), n};
      arena_.append(w);
      if (++used_ * 2 > slots_.size()) grow();
      return;
    }
    if (s.hash == h && s.len == w.size() && arena_.compare(s.offset, s.len, w) == 0) {
      s.count += n;
      return;
    }
    i = (i + 1) & (slots_.size() - 1);
  }
}

void Counts::merge(const Counts& other) {
  for (const Slot& s : other.slots_)
    if (s.count != 0)
      add_hashed(std::string_view(other.arena_.data() + s.offset, s.len), s.hash, s.count);
}

std::uint64_t Counts::count(std::string_view w) const {
  const std::uint64_t h = hash(w);
  for (std::size_t i = h & (slots_.size() - 1);; i = (i + 1) & (slots_.size() - 1)) {
    const Slot& s = slots_[i];
    if (s.count == 0) return 0;
    if (s.hash == h && s.len == w.size() && arena_.compare(s.offset, s.len, w) == 0) return s.count;
  }
}

void Counts::grow() {
  std::vector<Slot> old(slots_.size() * 2);
  old.swap(slots_);
  for (const Slot& s : old) {
    if (s.count == 0) continue;
    std::size_t i = s.hash & (slots_.size() - 1);
    while (slots_[i].count != 0) i = (i + 1) & (slots_.size() - 1);
    slots_[i] = s;
  }
}

void Counts::load(const std::string& words, const std::vector<std::uint32_t>& lengths,
                  const std::vector<std::uint64_t>& counts) {
  if (lengths.size() != counts.size())
    throw SerializationError("word counts: lengths and counts differ in size");
  *this = Counts();
  std::size_t at = 0;
  for (std::size_t k = 0; k < lengths.size(); ++k) {
    if (lengths[k] > words.size() - at || counts[k] == 0)
      throw SerializationError("word counts: corrupt partial");
    add(std::string_view(words).substr(at, lengths[k]), counts[k]);
    at += lengths[k];
  }
}

bool operator==(const Counts& a, const Counts& b) {
  if (a.size() != b.size()) return false;
  bool same = true;
  a.for_each([&](std::string_view w, std::uint64_t c) { same = same && b.count(w) == c; });
  return same;
}

std::string synthetic_corpus(std::size_t bytes, std::uint64_t seed,
                             const std::function<void(std::size_t)>& progress) {
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
  // A guide table narrows each binary search to the ranks whose cumulative weight falls in
  // one of `guides` equal slices of [0, sum) (and the slices beside it, against rounding),
  // so the lookup finds exactly what a search of the whole table finds, in fewer steps.
  constexpr std::size_t guides = 4096;
  std::vector<std::size_t> guide(guides + 1);
  for (std::size_t g = 0; g <= guides; ++g)
    guide[g] = static_cast<std::size_t>(
        std::lower_bound(cdf.begin(), cdf.end(), sum * static_cast<double>(g) / guides) - cdf.begin());
  std::uniform_real_distribution<double> u(0, sum);
  std::string out;
  out.reserve(bytes + 64);
  std::size_t line = 0;
  std::size_t next_report = std::size_t{1} << 20;
  while (out.size() < bytes) {
    const double x_u = u(rng);
    const auto g = std::min(guides - 1, static_cast<std::size_t>(x_u / sum * guides));
    const auto lo = cdf.begin() + static_cast<std::ptrdiff_t>(guide[g == 0 ? 0 : g - 1]);
    const auto hi = cdf.begin() + static_cast<std::ptrdiff_t>(std::min(cdf.size(), guide[std::min(guides, g + 2)] + 1));
    const std::size_t r = static_cast<std::size_t>(std::lower_bound(lo, hi, x_u) - cdf.begin());
    const std::string& w = vocab[std::min(r, vocab.size() - 1)];
    const std::size_t at = out.size();
    out += w;
    const auto x = rng() % 100;
    if (x < 8) out[at] = static_cast<char>(out[at] - 32);  // Capitalised
    if (x >= 95) out += (x % 2 ? ',' : '.');
    line += out.size() - at + 1;
    if (line > 70) {
      out += '\n';
      line = 0;
    } else {
      out += ' ';
    }
    if (progress && out.size() >= next_report) {
      progress(out.size());
      next_report = out.size() + (std::size_t{1} << 20);
    }
  }
  if (progress) progress(out.size());
  return out;
}

namespace {

/// A read-only mapping of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      throw std::runtime_error("cannot stat '" + path + "': " + std::strerror(e));
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (data_ == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        throw std::runtime_error("cannot map '" + path + "': " + std::strerror(e));
      }
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_ != nullptr && data_ != MAP_FAILED) ::munmap(data_, size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::string_view text() const { return {static_cast<const char*>(data_), size_}; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace

Counts count_block(const Block& b, std::string_view corpus) {
  Counts counts;
  if (b.path.empty()) {
    count_block(corpus, b.begin, b.end, counts);
  } else {
    MappedFile f(b.path);
    count_block(f.text(), b.begin, b.end, counts);
  }
  return counts;
}

void merge(Counts& into, Counts&& from) {
  if (into.size() < from.size()) std::swap(into, from);
  into.merge(from);
}

}  // namespace mproc::words
