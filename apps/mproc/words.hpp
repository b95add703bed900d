// Word counting as the Python reference does it: split on whitespace (Python's
// str.split() set, including the Unicode spaces), lower-case, keep the first run of
// [a-z-]. Used by `mproc wordcount`, compare_mpi and the tests.
//
// Three tokenizers compute the same counts: the scalar one, byte by byte (the reference,
// and the one for CPUs other than x86-64), and two that classify 64 bytes at a time with
// SSE2 (every x86-64) or AVX2 (chosen at run time when the CPU has it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace mproc::words {

/// Word -> count, as an open-addressing table keyed by a 64-bit hash, with the words in
/// one arena: no allocation per word, and tables merge without rehashing the words.
/// Several times faster than std::unordered_map<std::string, ...> for counting.
/// Serializable (three flat arrays), so it can be a map_reduce partial.
class Counts {
 public:
  Counts() : slots_(64) {}

  /// Adds `n` to the count of `w`, whose Counts::hash() is `hash`.
  void add_hashed(std::string_view w, std::uint64_t hash, std::uint64_t n);
  void add(std::string_view w, std::uint64_t n = 1) { add_hashed(w, hash(w), n); }
  /// Adds every count of `other`.
  void merge(const Counts& other);
  /// The count of `w` (0 if absent).
  std::uint64_t count(std::string_view w) const;
  std::size_t size() const noexcept { return used_; }
  /// Makes room for `words` distinct words without growing.
  void reserve(std::size_t words);

  /// Calls f(word, count) for every word, in no particular order.
  template <class F>
  void for_each(F&& f) const {
    for (const Slot& s : slots_)
      if (s.count != 0) f(std::string_view(arena_.data() + s.offset, s.len), s.count);
  }

  friend bool operator==(const Counts& a, const Counts& b);

  template <class A>
  void serialize(A& ar) {
    std::string words;
    std::vector<std::uint32_t> lengths;
    std::vector<std::uint64_t> counts;
    if constexpr (A::is_saving) {
      words.reserve(arena_.size());
      for_each([&](std::string_view w, std::uint64_t c) {
        words.append(w);
        lengths.push_back(static_cast<std::uint32_t>(w.size()));
        counts.push_back(c);
      });
      ar(words, lengths, counts);
    } else {
      ar(words, lengths, counts);
      load(words, lengths, counts);
    }
  }

  /// XXH3 (64-bit) of the word's bytes.
  static std::uint64_t hash(std::string_view w) noexcept;

 private:
  struct Slot {
    std::uint64_t hash = 0;
    std::uint32_t offset = 0, len = 0;
    std::uint64_t count = 0;
  };
  // Out of line: once per distinct word, and kept out of the tokenizers' hot loops.
  [[gnu::noinline]] void insert(Slot& s, std::string_view w, std::uint64_t hash, std::uint64_t n);
  void grow();
  void rehash(std::size_t slots);
  void load(const std::string& words, const std::vector<std::uint32_t>& lengths,
            const std::vector<std::uint64_t>& counts);

  std::vector<Slot> slots_;
  std::size_t mask_ = 63;  ///< slots_.size() - 1
  std::string arena_;
  std::size_t used_ = 0;
};

/// The ways of splitting a text into words; every one gives the same counts.
enum class Tokenizer { scalar, sse2, avx2 };

/// "scalar", "sse2" or "avx2".
const char* tokenizer_name(Tokenizer k) noexcept;
/// Whether this build and CPU can run `k` (scalar: always; sse2: on x86-64; avx2: on an
/// x86-64 CPU with AVX2).
bool tokenizer_available(Tokenizer k) noexcept;
/// The fastest available tokenizer, the one count_block uses.
Tokenizer fastest_tokenizer() noexcept;

/// Counts the words of the tokens that start in [begin, end) of `text` (a token may run
/// past `end`: it belongs to the block it starts in). Splitting a text into blocks at any
/// byte offsets and counting each block gives the same total as counting the whole text.
/// With fastest_tokenizer(). Thread-safe for distinct `out`s.
void count_block(std::string_view text, std::size_t begin, std::size_t end, Counts& out);
/// count_block with tokenizer `k`. Throws std::invalid_argument if !tokenizer_available(k).
void count_block(std::string_view text, std::size_t begin, std::size_t end, Counts& out,
                 Tokenizer k);

/// Counts every word of `text`.
inline void count_text(std::string_view text, Counts& out) {
  count_block(text, 0, text.size(), out);
}

/// One work item of a word count: the tokens starting in [begin, end) of a file, or of an
/// in-memory corpus when `path` is empty.
struct Block {
  std::string path;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  template <class A>
  void serialize(A& ar) {
    ar(path, begin, end);
  }
};

/// Counts block `b` of its file (read through a read-only mapping), or of `corpus` when
/// b.path is empty. Throws std::runtime_error naming the file if it cannot be read.
Counts count_block(const Block& b, std::string_view corpus);

/// Folds `from` into `into`, the smaller table into the larger: a map_reduce reduction.
void merge(Counts& into, Counts&& from);


/// A deterministic synthetic corpus of about `bytes` bytes: Zipf-distributed words from a
/// fixed vocabulary, with capitals, punctuation and line breaks, from `seed`. Calls
/// `progress(bytes made so far)` about every MiB, when given.
std::string synthetic_corpus(std::size_t bytes, std::uint64_t seed = 42,
                             const std::function<void(std::size_t)>& progress = {});

}  // namespace mproc::words
