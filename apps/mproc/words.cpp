#include "words.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mproc/error.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <limits>
#include <new>
#include <stdexcept>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#if defined(__x86_64__)
#define MPROC_WORDS_X86 1
#include <immintrin.h>
#else
#define MPROC_WORDS_X86 0
#endif

// xxHash's one-shot XXH3, inlined: a word is hashed in a handful of instructions.
#define XXH_INLINE_ALL
#include <xxhash.h>

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

// Byte classes for the scalar tokenizer: ASCII whitespace (str.split's set), [A-Za-z-],
// other ASCII, and non-ASCII (a lead or continuation byte: looked at more closely).
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

/// Moves `begin` to where the block's first token may start: a token already running at
/// `begin` belongs to the previous block. The result has whitespace (or the text's start)
/// right before it, or starts a whitespace character, or is >= `end`.
/// Which bytes are whitespace is a local property: a Unicode space is a lead byte and its
/// continuation bytes, so no two matches of space_at overlap and none starts on a
/// continuation byte; `begin` is looked at together with the three bytes before it. (A
/// continuation byte right after whitespace starts a token, as in a whole-text count:
/// skipping it, as this once did, lost that token when a block began there.)
std::size_t block_start(std::string_view text, std::size_t begin, std::size_t end) {
  const std::size_t p = std::min(begin, end);
  if (p == 0 || p == end) return p;
  for (std::size_t back = 1; back <= 2 && back <= p; ++back)  // inside a Unicode space
    if (const std::size_t n = space_at(text, p - back); n > back) return p - back + n;
  for (std::size_t back = 1; back <= 3 && back <= p; ++back)  // right after whitespace
    if (space_at(text, p - back) == back) return p;
  std::size_t q = p;  // inside a token
  while (q < text.size() && space_at(text, q) == 0) ++q;
  return q;
}

/// Counts the word of the token starting at p (not whitespace) and returns where the
/// token ends: the start of the next whitespace character, or the text's end. The
/// reference for every faster path: lower-case, then the first run of [a-z-].
std::size_t scan_token(std::string_view text, std::size_t p, Counts& out) {
  const auto* t = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  char word[256];
  std::string long_word;  // the rare word longer than `word`
  std::size_t len = 0;
  bool done = false;
  auto push = [&](char c) {
    if (len < sizeof word)
      word[len] = c;
    else {
      if (long_word.empty()) long_word.assign(word, len);
      long_word.push_back(c);
    }
    ++len;
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
  if (len != 0) out.add(len <= sizeof word ? std::string_view(word, len) : std::string_view(long_word));
  return p;
}

void count_block_scalar(std::string_view text, std::size_t p, std::size_t end, Counts& out) {
  while (p < end) {
    const unsigned char cls = classes[static_cast<unsigned char>(text[p])];
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
    p = scan_token(text, p, out);  // a token starts before `end`: it runs to its end
  }
}

#if MPROC_WORDS_X86

// The vector tokenizers classify 64 bytes at a time into bit masks, then walk the tokens
// with bit scans. What they compute is exactly what scan_token computes: a byte's class
// depends only on it and the two bytes after it (a Unicode space is a lead byte followed
// by continuation bytes, so matches of space_at never overlap and no continuation byte
// starts one), and a token holding U+0130 or U+212A, which lower-case to ASCII, goes to
// scan_token itself.

/// Bit i of each mask says what byte i of a 64-byte window is.
struct Window {
  std::uint64_t space = 0;    ///< part of a whitespace character (ASCII or Unicode)
  std::uint64_t letter = 0;   ///< [A-Za-z-]
  std::uint64_t special = 0;  ///< the first byte of U+0130 or U+212A
  unsigned carry = 0;         ///< bytes of a Unicode space running past the window
};

/// Adds the Unicode spaces to `w`, from the masks of their lead bytes.
inline void add_unicode_spaces(Window& w, std::uint64_t lead2, std::uint64_t lead3) {
  w.space |= lead2 | (lead2 << 1) | lead3 | (lead3 << 1) | (lead3 << 2);
  w.carry = (lead3 >> 63) != 0 ? 2u : static_cast<unsigned>(((lead3 >> 62) | (lead2 >> 63)) & 1);
}

// Bytes compare as signed in SSE2/AVX2: "x < 14" below is true for no byte >= 0x80.
inline constexpr char byte_of(unsigned v) { return static_cast<char>(static_cast<unsigned char>(v)); }

/// The window at p (p[0, 66) readable), 16 bytes at a time.
Window window_sse2(const unsigned char* p) {
  Window w;
  std::uint64_t high = 0;
  for (int k = 0; k < 4; ++k) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * k));
    const __m128i lc = _mm_or_si128(x, _mm_set1_epi8(0x20));
    const __m128i sp = _mm_or_si128(
        _mm_cmpeq_epi8(x, _mm_set1_epi8(' ')),
        _mm_or_si128(_mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8(8)), _mm_cmplt_epi8(x, _mm_set1_epi8(14))),
                     _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8(0x1b)), _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)))));
    const __m128i le = _mm_or_si128(
        _mm_and_si128(_mm_cmpgt_epi8(lc, _mm_set1_epi8(0x60)), _mm_cmplt_epi8(lc, _mm_set1_epi8(0x7b))),
        _mm_cmpeq_epi8(x, _mm_set1_epi8('-')));
    const unsigned shift = 16 * static_cast<unsigned>(k);
    w.space |= static_cast<std::uint64_t>(static_cast<unsigned>(_mm_movemask_epi8(sp))) << shift;
    w.letter |= static_cast<std::uint64_t>(static_cast<unsigned>(_mm_movemask_epi8(le))) << shift;
    high |= static_cast<std::uint64_t>(static_cast<unsigned>(_mm_movemask_epi8(x))) << shift;
  }
  if (high == 0) return w;
  std::uint64_t lead2 = 0, lead3 = 0;
  for (int k = 0; k < 4; ++k) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * k));
    const __m128i x1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * k + 1));
    const __m128i x2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * k + 2));
    auto eq = [](__m128i v, unsigned c) { return _mm_cmpeq_epi8(v, _mm_set1_epi8(byte_of(c))); };
    const __m128i two = _mm_and_si128(eq(x, 0xC2), _mm_or_si128(eq(x1, 0x85), eq(x1, 0xA0)));
    const __m128i e280 = _mm_and_si128(eq(x, 0xE2), eq(x1, 0x80));
    const __m128i tail = _mm_or_si128(_mm_cmplt_epi8(x2, _mm_set1_epi8(byte_of(0x8B))),  // 0x80-0x8A
                                      _mm_or_si128(_mm_or_si128(eq(x2, 0xA8), eq(x2, 0xA9)), eq(x2, 0xAF)));
    __m128i three = _mm_and_si128(e280, tail);
    three = _mm_or_si128(three, _mm_and_si128(_mm_and_si128(eq(x, 0xE2), eq(x1, 0x81)), eq(x2, 0x9F)));
    three = _mm_or_si128(three, _mm_and_si128(_mm_and_si128(eq(x, 0xE1), eq(x1, 0x9A)), eq(x2, 0x80)));
    three = _mm_or_si128(three, _mm_and_si128(_mm_and_si128(eq(x, 0xE3), eq(x1, 0x80)), eq(x2, 0x80)));
    const __m128i spec = _mm_or_si128(_mm_and_si128(eq(x, 0xC4), eq(x1, 0xB0)),
                                      _mm_and_si128(_mm_and_si128(eq(x, 0xE2), eq(x1, 0x84)), eq(x2, 0xAA)));
    const unsigned shift = 16 * static_cast<unsigned>(k);
    lead2 |= static_cast<std::uint64_t>(static_cast<unsigned>(_mm_movemask_epi8(two))) << shift;
    lead3 |= static_cast<std::uint64_t>(static_cast<unsigned>(_mm_movemask_epi8(three))) << shift;
    w.special |= static_cast<std::uint64_t>(static_cast<unsigned>(_mm_movemask_epi8(spec))) << shift;
  }
  add_unicode_spaces(w, lead2, lead3);
  return w;
}

// (Lambdas would not inherit the target attribute.)
[[gnu::target("avx2")]] inline __m256i set1(unsigned c) { return _mm256_set1_epi8(byte_of(c)); }
[[gnu::target("avx2")]] inline __m256i eq(__m256i v, unsigned c) { return _mm256_cmpeq_epi8(v, set1(c)); }
[[gnu::target("avx2")]] inline std::uint64_t bits(__m256i v) {
  return static_cast<std::uint64_t>(static_cast<unsigned>(_mm256_movemask_epi8(v)));
}

/// window_sse2, 32 bytes at a time.
[[gnu::target("avx2")]] Window window_avx2(const unsigned char* p) {
  Window w;
  std::uint64_t high = 0;
  for (int k = 0; k < 2; ++k) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * k));
    const __m256i lc = _mm256_or_si256(x, set1(0x20));
    const __m256i sp = _mm256_or_si256(
        _mm256_cmpeq_epi8(x, set1(' ')),
        _mm256_or_si256(_mm256_and_si256(_mm256_cmpgt_epi8(x, set1(8)), _mm256_cmpgt_epi8(set1(14), x)),
                        _mm256_and_si256(_mm256_cmpgt_epi8(x, set1(0x1b)), _mm256_cmpgt_epi8(set1(0x20), x))));
    const __m256i le = _mm256_or_si256(
        _mm256_and_si256(_mm256_cmpgt_epi8(lc, set1(0x60)), _mm256_cmpgt_epi8(set1(0x7b), lc)),
        _mm256_cmpeq_epi8(x, set1('-')));
    const unsigned shift = 32 * static_cast<unsigned>(k);
    w.space |= bits(sp) << shift;
    w.letter |= bits(le) << shift;
    high |= bits(x) << shift;
  }
  if (high == 0) return w;
  std::uint64_t lead2 = 0, lead3 = 0;
  for (int k = 0; k < 2; ++k) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * k));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * k + 1));
    const __m256i x2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * k + 2));
    const __m256i two = _mm256_and_si256(eq(x, 0xC2), _mm256_or_si256(eq(x1, 0x85), eq(x1, 0xA0)));
    const __m256i e280 = _mm256_and_si256(eq(x, 0xE2), eq(x1, 0x80));
    const __m256i tail = _mm256_or_si256(_mm256_cmpgt_epi8(set1(0x8B), x2),  // 0x80-0x8A
                                         _mm256_or_si256(_mm256_or_si256(eq(x2, 0xA8), eq(x2, 0xA9)), eq(x2, 0xAF)));
    __m256i three = _mm256_and_si256(e280, tail);
    three = _mm256_or_si256(three, _mm256_and_si256(_mm256_and_si256(eq(x, 0xE2), eq(x1, 0x81)), eq(x2, 0x9F)));
    three = _mm256_or_si256(three, _mm256_and_si256(_mm256_and_si256(eq(x, 0xE1), eq(x1, 0x9A)), eq(x2, 0x80)));
    three = _mm256_or_si256(three, _mm256_and_si256(_mm256_and_si256(eq(x, 0xE3), eq(x1, 0x80)), eq(x2, 0x80)));
    const __m256i spec = _mm256_or_si256(_mm256_and_si256(eq(x, 0xC4), eq(x1, 0xB0)),
                                         _mm256_and_si256(_mm256_and_si256(eq(x, 0xE2), eq(x1, 0x84)), eq(x2, 0xAA)));
    const unsigned shift = 32 * static_cast<unsigned>(k);
    lead2 |= bits(two) << shift;
    lead3 |= bits(three) << shift;
    w.special |= bits(spec) << shift;
  }
  add_unicode_spaces(w, lead2, lead3);
  return w;
}

/// Lower-cases the word of `len` bytes of [A-Za-z-] at src (src[0, 64) readable) into
/// `dst` (64 bytes): '-' already has the bit that makes a capital lower-case.
inline void lower_word(const unsigned char* src, std::size_t len, char* dst) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                   _mm_or_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)), _mm_set1_epi8(0x20)));
  for (std::size_t k = 16; k < len; k += 16) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k), _mm_or_si128(x, _mm_set1_epi8(0x20)));
  }
}

/// The short words of the last windows, waiting to be counted: each one's slot is
/// prefetched when it is found and counted a window or more later, so that the table's
/// cache misses overlap instead of stalling the scan one by one. Whoever fills it
/// flushes it (counting is commutative: words counted directly meanwhile are no matter).
class WordBatch {
 public:
  explicit WordBatch(Counts& out) : out_(out) {}
  WordBatch(const WordBatch&) = delete;
  WordBatch& operator=(const WordBatch&) = delete;

  /// Counts the word of `len` bytes of [A-Za-z-] at src (src[0, 64) readable),
  /// lower-cased: a word of up to 16 bytes is taken as two 64-bit halves straight from a
  /// register, masked to its length.
  void add(const unsigned char* src, unsigned len) {
    if (len > 16) {
      char word[64];
      lower_word(src, len, word);
      out_.add(std::string_view(word, len));
      return;
    }
    const __m128i iota = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m128i x = _mm_or_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)), _mm_set1_epi8(0x20));
    const __m128i v = _mm_and_si128(x, _mm_cmpgt_epi8(_mm_set1_epi8(static_cast<char>(len)), iota));
    Word& w = words_[n_++];
    w.lo = static_cast<std::uint64_t>(_mm_cvtsi128_si64(v));
    w.hi = static_cast<std::uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v)));
    w.len = len;
    w.hash = Counts::short_hash(w.lo, w.hi);
    out_.prefetch(w.hash);
  }
  /// Called after each window: counts the words waiting once there are `batch` of them.
  void window_done() {
    if (n_ >= batch) flush();
  }
  void flush() {
    for (unsigned k = 0; k < n_; ++k) out_.add_short(words_[k].lo, words_[k].hi, words_[k].len, 1, words_[k].hash);
    n_ = 0;
  }

 private:
  struct Word {
    std::uint64_t lo, hi, hash;
    unsigned len;
  };
  static constexpr unsigned batch = 32;
  Counts& out_;
  // A window holds at most 32 tokens (each has a byte of whitespace after it).
  Word words_[batch + 32];
  unsigned n_ = 0;
};

/// Bytes a window needs readable past its start: 64 + 2 looked at after the last, and a
/// word lower-cased 16 bytes at a time from any of its 64 bytes.
constexpr std::size_t window_reach = 128;

/// Counts the tokens starting in [p, end) of t[0, n) window by window while the window
/// at p lies within t[0, limit) (limit >= n; bytes from n on are spaces), and returns
/// where it stopped. p is where a token may start (see block_start).
template <Window (*classify)(const unsigned char*)>
std::size_t scan_windows(const unsigned char* t, std::size_t n, std::size_t p, std::size_t end,
                         std::size_t limit, Counts& out) {
  const std::string_view text(reinterpret_cast<const char*>(t), n);
  WordBatch batch(out);
  while (p < end && p + window_reach <= limit) {
    const Window w = classify(t + p);
    const std::size_t room = end - p;  // tokens from bit `room` on belong to the next block
    std::size_t next = p + 64 + w.carry;  // past the window, if its tokens all end in it
    if (w.special == 0) {
      // The whole window at once. A token starts where a non-space follows a space (or at
      // bit 0: p is where a token may start); its word is its first run of letters, which
      // starts at the token's first byte, or right after the token's prefix of other
      // bytes: adding each such token's start bit to the mask of those bytes carries it
      // to the end of the prefix.
      std::uint64_t starts = ~w.space & ((w.space << 1) | 1);
      if (room < 64) starts &= (std::uint64_t{1} << room) - 1;
      if (starts != 0) {
        const unsigned last = 63 - static_cast<unsigned>(__builtin_clzll(starts));
        if ((w.space >> last) == 0) {  // the last token runs past the window
          starts &= ~(std::uint64_t{1} << last);
          next = last != 0 ? p + last : scan_token(text, p, out);
        }
      }
      const std::uint64_t other = ~(w.space | w.letter);
      std::uint64_t first = (starts & w.letter) | ((other + (starts & other)) & ~other & w.letter);
      while (first != 0) {
        const unsigned a = static_cast<unsigned>(__builtin_ctzll(first));
        // The run of letters ends inside the window: its token does.
        const unsigned len = static_cast<unsigned>(__builtin_ctzll(~(w.letter >> a)));
        batch.add(t + p + a, len);
        first &= first - 1;
      }
      batch.window_done();
      p = next;
      continue;
    }
    // A window with U+0130 or U+212A: token by token, those tokens through scan_token.
    std::uint64_t todo = ~w.space;
    while (todo != 0) {
      const unsigned s = static_cast<unsigned>(__builtin_ctzll(todo));  // a token starts
      if (s >= room) {
        batch.flush();
        return end;
      }
      const std::uint64_t after = w.space & (~std::uint64_t{0} << s);
      if (after == 0) {  // the token runs past the window: start the next one with it
        next = s != 0 ? p + s : scan_token(text, p, out);
        break;
      }
      const unsigned e = static_cast<unsigned>(__builtin_ctzll(after));
      const std::uint64_t span = ((after & (0 - after)) - 1) & (~std::uint64_t{0} << s);
      if ((w.special & span) != 0) {
        next = scan_token(text, p + s, out);
        break;
      }
      if (const std::uint64_t letters = w.letter & span) {
        const unsigned a = static_cast<unsigned>(__builtin_ctzll(letters));
        // The run of letters ends by bit e at the latest: whitespace is no letter.
        const unsigned len = static_cast<unsigned>(__builtin_ctzll(~(w.letter >> a)));
        batch.add(t + p + a, len);
      }
      todo &= ~std::uint64_t{0} << e;
    }
    batch.window_done();
    p = next;
  }
  batch.flush();
  return p;
}

template <Window (*classify)(const unsigned char*)>
void count_block_vector(std::string_view text, std::size_t p, std::size_t end, Counts& out) {
  const auto* t = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  p = scan_windows<classify>(t, n, p, end, n, out);
  if (p >= end) return;
  // The last bytes, fewer than a window's reach: copied, with spaces after them (which
  // space_at's look-ahead past a text's end also sees as no part of a Unicode space).
  unsigned char tail[2 * window_reach];
  std::memset(tail, ' ', sizeof tail);
  std::memcpy(tail, t + p, n - p);
  scan_windows<classify>(tail, n - p, 0, end - p, sizeof tail, out);
}

// flatten: the window and word helpers inline here, under AVX2.
[[gnu::target("avx2"), gnu::flatten]] void count_block_avx2(std::string_view text, std::size_t p,
                                                           std::size_t end, Counts& out) {
  count_block_vector<window_avx2>(text, p, end, out);
}

#endif  // MPROC_WORDS_X86

}  // namespace

const char* tokenizer_name(Tokenizer k) noexcept {
  switch (k) {
    case Tokenizer::scalar: return "scalar";
    case Tokenizer::sse2: return "sse2";
    case Tokenizer::avx2: return "avx2";
  }
  return "?";
}

bool tokenizer_available(Tokenizer k) noexcept {
#if MPROC_WORDS_X86
  if (k == Tokenizer::avx2) return __builtin_cpu_supports("avx2") != 0;
  return true;
#else
  return k == Tokenizer::scalar;
#endif
}

Tokenizer fastest_tokenizer() noexcept {
  static const Tokenizer best = tokenizer_available(Tokenizer::avx2)   ? Tokenizer::avx2
                                : tokenizer_available(Tokenizer::sse2) ? Tokenizer::sse2
                                                                       : Tokenizer::scalar;
  return best;
}

void count_block(std::string_view text, std::size_t begin, std::size_t end, Counts& out,
                 Tokenizer k) {
  if (!tokenizer_available(k))
    throw std::invalid_argument(std::string("word count: this CPU has no ") + tokenizer_name(k));
  end = std::min(end, text.size());
  const std::size_t p = block_start(text, begin, end);
  switch (k) {
#if MPROC_WORDS_X86
    case Tokenizer::avx2: return count_block_avx2(text, p, end, out);
    case Tokenizer::sse2: return count_block_vector<window_sse2>(text, p, end, out);
#endif
    default: return count_block_scalar(text, p, end, out);
  }
}

void count_block(std::string_view text, std::size_t begin, std::size_t end, Counts& out) {
  count_block(text, begin, end, out, fastest_tokenizer());
}

namespace {
constexpr std::size_t huge_page = std::size_t{2} << 20;
}  // namespace

void* allocate_zeroed(std::size_t bytes, std::size_t align) {
  if (bytes < huge_page) {
    void* p = ::operator new(bytes, std::align_val_t{align});
    std::memset(p, 0, bytes);
    return p;
  }
  // A mapping of whole huge pages, trimmed to start on one (a fresh mapping reads as zero).
  const std::size_t size = (bytes + huge_page - 1) & ~(huge_page - 1);
  void* m = ::mmap(nullptr, size + huge_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  const auto base = reinterpret_cast<std::uintptr_t>(m);
  const std::uintptr_t start = (base + huge_page - 1) & ~(huge_page - 1);
  if (start != base) ::munmap(m, start - base);
  if (const std::size_t tail = base + huge_page - start; tail != 0)
    ::munmap(reinterpret_cast<void*>(start + size), tail);
  ::madvise(reinterpret_cast<void*>(start), size, MADV_HUGEPAGE);  // a hint: fails harmlessly
  return reinterpret_cast<void*>(start);
}

void free_zeroed(void* p, std::size_t bytes, std::size_t align) noexcept {
  if (bytes < huge_page) return ::operator delete(p, std::align_val_t{align});
  ::munmap(p, (bytes + huge_page - 1) & ~(huge_page - 1));
}

std::uint64_t Counts::hash(std::string_view w) noexcept {
  if (w.size() > 16) return XXH3_64bits(w.data(), w.size());
  std::uint64_t half[2] = {0, 0};
  if (!w.empty()) std::memcpy(half, w.data(), w.size());
  return short_hash(half[0], half[1]);
}

void Counts::add(std::string_view w, std::uint64_t n) {
  if (w.size() > 16) return add_long(w, n);
  std::uint64_t half[2] = {0, 0};
  if (!w.empty()) std::memcpy(half, w.data(), w.size());
  add_short(half[0], half[1], static_cast<std::uint32_t>(w.size()), n);
}

void Counts::add_long(std::string_view w, std::uint64_t n) {
  std::uint64_t half[2];
  std::memcpy(half, w.data(), 16);
  const std::uint64_t h = hash(w);
  for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.count == 0) {
      // Offsets are 32-bit: 4 GiB of long distinct words in one table is beyond any text.
      if (arena_.size() + w.size() > std::numeric_limits<std::uint32_t>::max())
        throw std::length_error("word counts: more than 4 GiB of distinct words");
      s = {half[0], half[1], n, static_cast<std::uint32_t>(w.size()),
           static_cast<std::uint32_t>(arena_.size())};
      arena_.append(w);
      if (++used_ > max_used(slots_.size())) grow();
      return;
    }
    if (s.lo == half[0] && s.hi == half[1] && s.len == w.size() &&
        std::memcmp(arena_.data() + s.offset + 16, w.data() + 16, w.size() - 16) == 0) {
      s.count += n;
      return;
    }
  }
}

void Counts::insert_short(Slot& s, std::uint64_t lo, std::uint64_t hi, std::uint32_t len,
                          std::uint64_t n) {
  s = {lo, hi, n, len, 0};
  if (++used_ > max_used(slots_.size())) grow();
}

void Counts::reserve(std::size_t words) {
  std::size_t slots = slots_.size();
  while (max_used(slots) < words) slots *= 2;
  if (slots != slots_.size()) rehash(slots);
}

void Counts::merge(const Counts& other) {
  reserve(used_ + other.used_ / 2);  // most of a block's words are already here
  // The words land at random places of a table that outgrows the caches: prefetch each
  // slot `ahead` words early.
  constexpr std::size_t ahead = 16;
  const Slot* from = other.slots_.data();
  const std::size_t m = other.slots_.size();
  for (std::size_t k = 0; k < m; ++k) {
    if (k + ahead < m && from[k + ahead].count != 0 && from[k + ahead].len <= 16)
      __builtin_prefetch(&slots_[short_hash(from[k + ahead].lo, from[k + ahead].hi) & mask_]);
    const Slot& s = from[k];
    if (s.count == 0) continue;
    if (s.len <= 16)
      add_short(s.lo, s.hi, s.len, s.count);
    else
      add_long(other.word(s), s.count);
  }
}

void Counts::absorb(Counts&& other) {
  if (&other == this) return;
  merge(other);
  if (other.slots_.size() <= kept_slots_max) {
    // merge() read every slot; clearing them now touches only cached lines.
    std::fill(other.slots_.begin(), other.slots_.end(), Slot{});
    kept_slots().swap(other.slots_);
  }
  other = Counts();
}

Counts::SlotVector Counts::cleared_slots(std::size_t slots) {
  SlotVector& kept = kept_slots();
  if (kept.size() != slots) return SlotVector(slots);
  return std::exchange(kept, {});
}

std::uint64_t Counts::count(std::string_view w) const {
  std::uint64_t half[2] = {0, 0};
  if (!w.empty()) std::memcpy(half, w.data(), std::min<std::size_t>(w.size(), 16));
  for (std::size_t i = hash(w) & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.count == 0) return 0;
    if (s.lo == half[0] && s.hi == half[1] && s.len == w.size() && word(s) == w) return s.count;
  }
}

void Counts::grow() { rehash(slots_.size() * 2); }

void Counts::rehash(std::size_t slots) {
  SlotVector old = cleared_slots(slots);
  old.swap(slots_);
  mask_ = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.count == 0) continue;
    std::size_t i = slot_hash(s) & mask_;
    while (slots_[i].count != 0) i = (i + 1) & mask_;
    slots_[i] = s;
  }
}

void Counts::throw_corrupt(const char* what) {
  throw SerializationError(std::string("word counts: corrupt partial (") + what + ")");
}

void Counts::load(std::span<const std::byte> records, std::string_view long_words) {
  const std::size_t n = records.size() / record_bytes;
  *this = Counts();
  reserve(n);  // sized once: the words are distinct
  std::size_t at = 0;
  const std::byte* r = records.data();
  constexpr std::size_t ahead = 16;  // slots prefetched this many words early, as in merge()
  for (std::size_t k = 0; k < n; ++k, r += record_bytes) {
    std::uint64_t lo, hi, count;
    std::uint32_t len;
    std::memcpy(&lo, r + offsetof(Slot, lo), 8);
    std::memcpy(&hi, r + offsetof(Slot, hi), 8);
    std::memcpy(&count, r + offsetof(Slot, count), 8);
    std::memcpy(&len, r + offsetof(Slot, len), 4);
    if (k + ahead < n) {
      std::uint64_t next[2];
      std::memcpy(next, r + ahead * record_bytes, sizeof next);
      prefetch(short_hash(next[0], next[1]));
    }
    if (count == 0) throw_corrupt("a count of 0");
    if (len > 16) {
      if (len > long_words.size() - at) throw_corrupt("a word past the bytes");
      add_long(long_words.substr(at, len), count);
      at += len;
      continue;
    }
    // A short word's halves are zero past its length, or two keys could name one word.
    const auto* bytes = reinterpret_cast<const unsigned char*>(r);
    for (std::uint32_t i = len; i < 16; ++i)
      if (bytes[i] != 0) throw_corrupt("a short word's padding");
    add_short(lo, hi, len, count);
  }
  if (at != long_words.size()) throw_corrupt("bytes past the last word");
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

void count_block(const Block& b, std::string_view corpus, Counts& into) {
  if (b.path.empty()) {
    count_block(corpus, b.begin, b.end, into);
  } else {
    MappedFile f(b.path);
    count_block(f.text(), b.begin, b.end, into);
  }
}

Counts count_block(const Block& b, std::string_view corpus) {
  Counts counts;
  // A MiB of a book holds about 7,500 distinct words (at most 22,000 in the Gutenberg
  // books): sized once for one in 64 bytes, grown once for the rare richer block.
  counts.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(b.end - std::min(b.begin, b.end), 1u << 26) / 64));
  count_block(b, corpus, counts);
  return counts;
}

void merge(Counts& into, Counts&& from) {
  if (into.size() < from.size()) std::swap(into, from);
  into.absorb(std::move(from));
}

}  // namespace mproc::words
