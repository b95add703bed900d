// Word counting as the Python reference does it: split on whitespace (Python's
// str.split() set, including the Unicode spaces), lower-case, keep the first run of
// [a-z-]. Used by `mproc wordcount` and its tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace mproc::words {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

using Counts = std::unordered_map<std::string, std::uint64_t, StringHash, std::equal_to<>>;

/// Counts the words of the tokens that start in [begin, end) of `text` (a token may run
/// past `end`: it belongs to the block it starts in). Splitting a text into blocks at any
/// byte offsets and counting each block gives the same total as counting the whole text.
void count_block(std::string_view text, std::size_t begin, std::size_t end, Counts& out);

/// Counts every word of `text`.
inline void count_text(std::string_view text, Counts& out) {
  count_block(text, 0, text.size(), out);
}

/// Adds `from` into `into`.
void merge(Counts& into, Counts&& from);

/// A deterministic synthetic corpus of about `bytes` bytes: Zipf-distributed words from a
/// fixed vocabulary, with capitals, punctuation and line breaks, from `seed`.
std::string synthetic_corpus(std::size_t bytes, std::uint64_t seed = 42);

}  // namespace mproc::words
