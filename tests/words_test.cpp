// The word-count core (apps/mproc/words.hpp): every tokenizer (scalar, SSE2, AVX2) gives
// the scalar tokenizer's counts, which are the Python reference's, on the real corpora
// when they are on this machine and on generated text made to break a vector tokenizer:
// random bytes, UTF-8 of every kind, words and Unicode spaces across 16/32/64-byte
// boundaries, very long words, whitespace only, empty input, and blocks cut at every offset.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <mproc/serialize.hpp>

#include "words.hpp"

namespace {

namespace fs = std::filesystem;
using mproc::words::Counts;
using mproc::words::Tokenizer;

/// A table as a sorted map, so that a failure prints the words that differ.
std::map<std::string, std::uint64_t> as_map(const Counts& c) {
  std::map<std::string, std::uint64_t> m;
  c.for_each([&](std::string_view w, std::uint64_t n) { m.emplace(std::string(w), n); });
  return m;
}

Counts count(std::string_view text, Tokenizer k, std::size_t begin = 0,
             std::size_t end = static_cast<std::size_t>(-1)) {
  Counts c;
  mproc::words::count_block(text, begin, end, c, k);
  return c;
}

/// The tokenizers this machine runs, besides the scalar reference.
std::vector<Tokenizer> vector_tokenizers() {
  std::vector<Tokenizer> out;
  for (Tokenizer k : {Tokenizer::sse2, Tokenizer::avx2})
    if (mproc::words::tokenizer_available(k)) out.push_back(k);
  return out;
}

/// Every tokenizer counts `text` (and its blocks cut at `cuts`) as the scalar one does.
void expect_all_agree(std::string_view text, const std::string& what,
                      const std::vector<std::size_t>& cuts = {}) {
  const Counts ref = count(text, Tokenizer::scalar);
  std::vector<Tokenizer> all = vector_tokenizers();
  all.insert(all.begin(), Tokenizer::scalar);
  for (Tokenizer k : all) {
    const Counts got = count(text, k);
    if (!(got == ref)) {
      ADD_FAILURE() << mproc::words::tokenizer_name(k) << " differs from scalar on " << what;
      EXPECT_EQ(as_map(got), as_map(ref));
      return;
    }
    if (cuts.empty()) continue;
    Counts parts;
    std::size_t at = 0;
    for (std::size_t c : cuts) {
      mproc::words::count_block(text, at, c, parts, k);
      at = c;
    }
    mproc::words::count_block(text, at, text.size(), parts, k);
    if (!(parts == ref)) {
      ADD_FAILURE() << mproc::words::tokenizer_name(k) << " in blocks differs on " << what;
      EXPECT_EQ(as_map(parts), as_map(ref));
      return;
    }
  }
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Fragments that matter to a tokenizer: every whitespace character of str.split (ASCII
// and UTF-8), the two characters that lower-case to ASCII (U+0130, U+212A), near misses
// of the Unicode spaces (U+2010, U+200B, U+2030, U+1681), other UTF-8 of 2-4 bytes, and
// stray lead and continuation bytes.
const std::vector<std::string> fragments = {
    " ", "\t", "\n", "\v", "\f", "\r", "\x1c", "\x1d", "\x1e", "\x1f", "\xc2\x85", "\xc2\xa0",
    "\xe1\x9a\x80", "\xe2\x80\x80", "\xe2\x80\x85", "\xe2\x80\x8a", "\xe2\x80\xa8",
    "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80",
    "\xc4\xb0", "\xe2\x84\xaa",
    "\xe2\x80\x90", "\xe2\x80\x8b", "\xe2\x80\xb0", "\xe1\x9a\x81", "\xc2\xa1", "\xe3\x80\x81",
    "\xc3\xa9", "\xc3\x89", "\xe2\x80\x9c", "\xe2\x80\x94", "\xf0\x9f\x98\x80", "\xce\xa3",
    "\xc2", "\xe2", "\xe2\x80", "\xe2\x84", "\xc4", "\x80", "\xa0", "\xaa", "\xb0", "\xff",
    "a", "z", "A", "Z", "-", "--", "'", ".", ",", "0", "@", "[", "`", "{", "_", "\x7f", "\x01",
    "the", "The", "THE", "lord", "Lord-Chamberlain", "x-", "-y"};

/// Text of fragments, mostly words and spaces so that tokens have a realistic shape.
std::string fragment_text(std::mt19937_64& rng, std::size_t bytes) {
  std::string t;
  std::uniform_int_distribution<std::size_t> pick(0, fragments.size() - 1);
  while (t.size() < bytes) {
    const auto r = rng() % 8;
    if (r < 3) {
      t += fragments[pick(rng)];
    } else if (r < 6) {
      for (auto n = 1 + rng() % 12; n > 0; --n) t += static_cast<char>((rng() % 2 ? 'a' : 'A') + rng() % 26);
    } else {
      t += ' ';
    }
  }
  return t;
}

TEST(Words, KnownCountsWithEveryTokenizer) {
  // What bench/python/countwords.py counts for this text (checked with Python 3.11).
  const std::string text =
      "The the THE the-end, (the) 'the' x\nLord lord\xc2\xa0lord\xe3\x80\x80Lord "
      "caf\xc3\xa9 \xc4\xb0stanbul \xe2\x84\xaa" "elvin x\xe2\x84\xaay 12abc-def! \xe2\x80\x9cquoted\xe2\x80\x9d "
      "a\xe2\x80\x8b" "b --- \xe2\x80\x83spaced\xe1\x9a\x80out";
  const std::map<std::string, std::uint64_t> expected = {
      {"the", 5}, {"the-end", 1}, {"x", 1}, {"lord", 4}, {"caf", 1}, {"i", 1}, {"kelvin", 1},
      {"xky", 1}, {"abc-def", 1}, {"quoted", 1}, {"a", 1}, {"---", 1}, {"spaced", 1}, {"out", 1}};
  for (Tokenizer k : {Tokenizer::scalar, Tokenizer::sse2, Tokenizer::avx2}) {
    if (!mproc::words::tokenizer_available(k)) continue;
    EXPECT_EQ(as_map(count(text, k)), expected) << mproc::words::tokenizer_name(k);
  }
  EXPECT_EQ(mproc::words::tokenizer_name(mproc::words::fastest_tokenizer()),
            std::string(mproc::words::tokenizer_available(Tokenizer::avx2) ? "avx2"
                        : mproc::words::tokenizer_available(Tokenizer::sse2) ? "sse2"
                                                                             : "scalar"));
}

TEST(Words, EmptyAndWhitespaceOnlyInputCountNothing) {
  std::string spaces;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 4000; ++i) spaces += fragments[rng() % 21];  // the whitespace ones
  for (Tokenizer k : {Tokenizer::scalar, Tokenizer::sse2, Tokenizer::avx2}) {
    if (!mproc::words::tokenizer_available(k)) continue;
    EXPECT_EQ(count("", k).size(), 0u);
    EXPECT_EQ(count(spaces, k).size(), 0u) << mproc::words::tokenizer_name(k);
    EXPECT_EQ(count(spaces + "word", k).count("word"), 1u);
    EXPECT_EQ(count("abc def", k, 3, 3).size(), 0u);   // an empty block
    EXPECT_EQ(count("abc def", k, 9, 20).size(), 0u);  // a block past the end
    EXPECT_EQ(count("abc def", k, 5, 2).size(), 0u);   // begin after end
  }
}

TEST(Words, RandomBytesCountAsTheScalarTokenizerCounts) {
  std::mt19937_64 rng(11);
  for (std::size_t size : {1u, 2u, 3u, 15u, 16u, 17u, 63u, 64u, 65u, 127u, 128u, 129u, 200u, 1000u, 5000u, 100000u}) {
    for (int round = 0; round < 8; ++round) {
      std::string t(size, '\0');
      for (auto& c : t) c = static_cast<char>(rng());
      expect_all_agree(t, "random bytes, size " + std::to_string(size), {size / 3, size / 2});
      // Mostly ASCII with high bytes: closer to the text a vector path skips fastest.
      for (auto& c : t)
        if (rng() % 4 != 0) c = static_cast<char>(" aZ-e.\nq"[rng() % 8]);
      expect_all_agree(t, "mostly ASCII random bytes, size " + std::to_string(size));
    }
  }
}

TEST(Words, GeneratedUtf8CountsAsTheScalarTokenizerCounts) {
  std::mt19937_64 rng(5);
  for (int round = 0; round < 300; ++round) {
    const std::string t = fragment_text(rng, 1 + rng() % 3000);
    std::vector<std::size_t> cuts;
    for (int k = 0; k < 6; ++k) cuts.push_back(rng() % t.size());
    std::sort(cuts.begin(), cuts.end());
    expect_all_agree(t, "generated text, round " + std::to_string(round), cuts);
  }
}

TEST(Words, WordsAndSpacesAcrossVectorBoundaries) {
  // Each pattern at every offset 0..200 in a field of spaces, and after letters (so that
  // a token starts before the pattern): the token or the Unicode space crosses a 16-, 32-
  // or 64-byte boundary at some offset, and the text's end at the last ones.
  std::vector<std::string> patterns = {
      "ab\xe3\x80\x80" "cd", "Word\xc2\xa0" "x", "\xc2\x85q", "x\xc4\xb0y", "K\xe2\x84\xaaz", "zz\xe2\x80\xaf-",
      "\xe2\x80\x9c" "Hello\xe2\x80\x9d", "\xe1\x9a\x80" "a\xe2\x81\x9f" "b", "end\xc2", "end\xe2\x80"};
  for (std::size_t len : {1u, 15u, 16u, 17u, 31u, 32u, 33u, 62u, 63u, 64u, 65u, 66u, 127u, 128u, 129u, 255u, 256u, 257u}) {
    std::string w;
    for (std::size_t i = 0; i < len; ++i) w += "aBc-Z"[i % 5];
    patterns.push_back(w);
    patterns.push_back("'" + w + ".");
    patterns.push_back(w + "\xc3\xa9" + w);
  }
  for (const std::string& pat : patterns) {
    for (std::size_t off = 0; off <= 200; ++off) {
      for (const char* before : {" ", "x"}) {
        std::string t(off, ' ');
        if (off > 0) t[off - 1] = before[0];
        t += pat;
        expect_all_agree(t, "pattern at offset " + std::to_string(off) + " (end)");
        t += std::string(150, ' ') + "tail words";
        expect_all_agree(t, "pattern at offset " + std::to_string(off));
      }
    }
  }
}

TEST(Words, VeryLongWordsAndTokens) {
  std::string t = "short ";
  t += std::string(300, 'A') + " ";                          // past the scalar buffer
  t += std::string(70000, 'q') + " mid ";                    // many windows long
  t += std::string(5000, '.') + "after-dots" + std::string(5000, '!') + " ";
  t += std::string(4999, 'k') + "\xe2\x84\xaa" + std::string(4999, 'K') + " ";  // U+212A inside
  t += std::string(3000, 'i') + "\xc4\xb0" + "tail ";       // U+0130 ends the match
  t += std::string(100000, '-');                             // to the text's end
  const Counts ref = count(t, Tokenizer::scalar);
  EXPECT_EQ(ref.count(std::string(300, 'a')), 1u);
  EXPECT_EQ(ref.count(std::string(70000, 'q')), 1u);
  EXPECT_EQ(ref.count("after-dots"), 1u);
  EXPECT_EQ(ref.count(std::string(9999, 'k')), 1u);
  EXPECT_EQ(ref.count(std::string(3001, 'i')), 1u);
  EXPECT_EQ(ref.count(std::string(100000, '-')), 1u);
  EXPECT_EQ(ref.size(), 8u);
  std::vector<std::size_t> cuts;
  for (std::size_t c = 1; c < t.size(); c += 997) cuts.push_back(c);
  expect_all_agree(t, "long words", cuts);
}

TEST(Words, BlocksCutAtEveryOffsetCountLikeTheWhole) {
  std::mt19937_64 rng(9);
  // Stray continuation bytes right after whitespace start tokens of their own.
  const std::string small = fragment_text(rng, 400) + " \x80stray \xb0x\xe2\x80\x80\xaa" "y \xc2\xa0\xa0z";
  const std::string tiny = fragment_text(rng, 90);
  for (Tokenizer k : {Tokenizer::scalar, Tokenizer::sse2, Tokenizer::avx2}) {
    if (!mproc::words::tokenizer_available(k)) continue;
    const char* name = mproc::words::tokenizer_name(k);
    const Counts whole = count(small, Tokenizer::scalar);
    for (std::size_t c = 0; c <= small.size(); ++c) {
      Counts parts;
      mproc::words::count_block(small, 0, c, parts, k);
      mproc::words::count_block(small, c, small.size(), parts, k);
      ASSERT_EQ(as_map(parts), as_map(whole)) << name << ", cut at " << c;
    }
    const Counts whole_tiny = count(tiny, Tokenizer::scalar);
    for (std::size_t a = 0; a <= tiny.size(); ++a)
      for (std::size_t b = a; b <= tiny.size(); ++b) {
        Counts parts;
        mproc::words::count_block(tiny, 0, a, parts, k);
        mproc::words::count_block(tiny, a, b, parts, k);
        mproc::words::count_block(tiny, b, tiny.size(), parts, k);
        ASSERT_TRUE(parts == whole_tiny) << name << ", cuts at " << a << " and " << b;
      }
  }
}

TEST(Words, RealCorporaCountAsTheScalarTokenizerCounts) {
  const fs::path data = fs::path(MPROC_SOURCE_DIR) / "../shared/data";
  std::vector<fs::path> files;
#if defined(__SANITIZE_THREAD__)
  // The tokenizers start no threads, so ThreadSanitizer has nothing to check here, and its
  // instrumentation makes the 67 MB of books take minutes: the plays only.
  for (const char* dir : {"shakespeare"}) {
#else
  for (const char* dir : {"shakespeare", "gutenberg/books"}) {
#endif
    std::error_code ec;
    if (!fs::is_directory(data / dir, ec)) continue;
    for (auto& e : fs::recursive_directory_iterator(data / dir))
      if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
  }
  if (files.empty()) GTEST_SKIP() << "the Shakespeare and Gutenberg corpora are not on this machine";
  std::sort(files.begin(), files.end());
  std::mt19937_64 rng(2);
  for (const fs::path& f : files) {
    const std::string t = read_file(f);
    std::vector<std::size_t> cuts;  // the tool's 1 MiB blocks, and a few cut anywhere
    for (std::size_t c = 1024 * 1024; c < t.size(); c += 1024 * 1024) cuts.push_back(c);
    for (int k = 0; k < 5 && !t.empty(); ++k) cuts.push_back(rng() % t.size());
    std::sort(cuts.begin(), cuts.end());
    expect_all_agree(t, f.filename().string(), cuts);
  }
}

TEST(Words, UnavailableTokenizerIsRefused) {
  for (Tokenizer k : {Tokenizer::sse2, Tokenizer::avx2}) {
    if (mproc::words::tokenizer_available(k)) continue;
    Counts c;
    EXPECT_THROW(mproc::words::count_block("a b", 0, 3, c, k), std::invalid_argument);
  }
  SUCCEED();
}

}  // namespace

// The table against std::map. A word of up to 16 bytes is kept in its slot and one longer
// in the arena, so the words here crowd that edge: lengths 1-40 over three letters, most
// sharing long prefixes (a 16-byte word and the 17-byte words that extend it differ only
// in length and the arena), added with counts of 1-5, the table grown from its smallest
// size. Then merges both ways, count() of absent words, and a round trip as bytes.
TEST(WordCounts, AgreeWithAMapForWordsOfEveryLengthAroundSixteen) {
  std::mt19937_64 rng(16);
  std::vector<std::string> vocabulary;
  const std::string stem = "ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab";  // 41 bytes
  for (std::size_t len = 1; len <= 40; ++len) {
    vocabulary.push_back(stem.substr(0, len));
    for (int k = 0; k < 30; ++k) {
      std::string w = stem.substr(0, len);
      w[rng() % len] = "ab-"[rng() % 3];
      w[len - 1] = "ab-"[rng() % 3];
      vocabulary.push_back(std::move(w));
    }
  }
  std::map<std::string, std::uint64_t> expected, expected_a;
  Counts all, a, b;
  for (int k = 0; k < 40'000; ++k) {
    const std::string& w = vocabulary[rng() % vocabulary.size()];
    const std::uint64_t n = 1 + rng() % 5;
    all.add(w, n);
    expected[w] += n;
    if (k % 3 == 0) {
      a.add(w, n);
      expected_a[w] += n;
    } else {
      b.add(w, n);
    }
  }
  ASSERT_EQ(as_map(all), expected);
  EXPECT_EQ(all.size(), expected.size());
  EXPECT_EQ(as_map(a), expected_a);
  for (const auto& [w, n] : expected) ASSERT_EQ(all.count(w), n) << w;
  for (const std::string absent : {"", "c", "ab-ab-ab-ab-ab-abx", "ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-abc"}) {
    ASSERT_EQ(expected.count(absent), 0u);
    EXPECT_EQ(all.count(absent), 0u) << absent;
  }

  Counts into_a = a, into_b = b;
  into_a.merge(b);
  into_b.merge(a);
  EXPECT_EQ(as_map(into_a), expected);
  EXPECT_EQ(as_map(into_b), expected);
  EXPECT_EQ(into_a, all);

  auto bytes = mproc::dumps(all);
  const Counts back = mproc::loads<Counts>(bytes);
  EXPECT_EQ(as_map(back), expected);
}

// A table travels as its word count, one 28-byte record per word (halves, count, length)
// and the long words' bytes. Bytes that do not decode to a table are refused with a
// SerializationError saying what is wrong, whichever field is broken.
TEST(WordCounts, ACorruptPartialIsRefused) {
  Counts c;
  c.add("to", 3);
  c.add("be", 2);
  c.add("incomprehensibilities", 1);  // 21 bytes: kept in the arena
  const std::vector<std::byte> good = mproc::dumps(c);
  ASSERT_EQ(mproc::loads<Counts>(good), c);

  constexpr std::size_t n_at = 0, first = 8, record = 28;
  std::uint64_t n;
  std::memcpy(&n, good.data() + n_at, 8);
  ASSERT_EQ(n, 3u);
  // The record of the word of length `len`, and the field at `offset` in it.
  auto field = [&](std::vector<std::byte>& bytes, std::uint32_t len, std::size_t offset) {
    for (std::size_t k = 0; k < n; ++k) {
      std::uint32_t l;
      std::memcpy(&l, bytes.data() + first + record * k + 24, 4);
      if (l == len) return bytes.data() + first + record * k + offset;
    }
    ADD_FAILURE() << "no record of a word of " << len << " bytes";
    return bytes.data();
  };
  auto refused = [&](std::vector<std::byte> bytes, const std::string& says) {
    try {
      (void)mproc::loads<Counts>(bytes);
      ADD_FAILURE() << "decoded, expected an error saying " << says;
    } catch (const mproc::SerializationError& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };

  auto zero_count = good;
  std::memset(field(zero_count, 2, 16), 0, 8);
  refused(zero_count, "a count of 0");

  auto padding = good;  // a byte after "to": "to\x01" would be a second key for a word
  *field(padding, 2, 2) = std::byte{1};
  refused(padding, "padding");

  auto too_many = good;
  const std::uint64_t huge = std::uint64_t{1} << 60;
  std::memcpy(too_many.data() + n_at, &huge, 8);
  refused(too_many, "more words than bytes");

  auto past = good;
  const std::uint32_t longer = 22;
  std::memcpy(field(past, 21, 24), &longer, 4);
  refused(past, "a word past the bytes");

  auto short_of = good;
  const std::uint32_t shorter = 17;
  std::memcpy(field(short_of, 21, 24), &shorter, 4);
  refused(short_of, "bytes past the last word");

  for (std::size_t cut = 0; cut < good.size(); ++cut)
    EXPECT_THROW((void)mproc::loads<Counts>(std::span(good).first(cut)), mproc::SerializationError) << cut;
}

// The hash a short word is filed under depends on its bytes alone, wherever they come
// from: a tokenizer's register or a string. Words that differ in one byte, anywhere in
// their 16, land apart almost always (two of 2,000 pairs may share a slot of 1,024).
TEST(WordCounts, ShortWordsHashByTheirBytes) {
  std::mt19937_64 rng(3);
  int same_slot = 0;
  for (int k = 0; k < 2000; ++k) {
    std::string w;
    for (auto n = 1 + rng() % 16; n > 0; --n) w += static_cast<char>('a' + rng() % 26);
    std::string v = w;
    v[rng() % v.size()] = v[rng() % v.size()] == 'z' ? 'y' : 'z';
    if (v == w) continue;
    EXPECT_EQ(Counts::hash(w), Counts::hash(std::string(w)));
    EXPECT_NE(Counts::hash(w), Counts::hash(v)) << w << " " << v;
    same_slot += (Counts::hash(w) & 1023) == (Counts::hash(v) & 1023);
  }
  EXPECT_LE(same_slot, 12);
}
