// `mproc wordcount [PATH...]`: the seed exercise and the main job. Counts every word
// across text files with a process Pool (fold: each worker counts into its own table)
// and prints the most frequent words as a table, then one summary line on stderr: the
// input, the pool's time and throughput, and the speed-up over one worker measured in the
// same run. `--list` (or `--min-count N`) prints what the Python reference prints instead:
// every word used more than N times, alphabetically, as "word == count"; --json prints one
// JSON object.
// Without PATH it counts a synthetic corpus generated in memory before the pool starts,
// so the workers read it from their memory snapshot.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "commands.hpp"
#include "compute.hpp"
#include "words.hpp"
#include <mproc/cpu_count.hpp>
#include <mproc/pool.hpp>
#include <mproc/progress.hpp>

namespace mproc::cli {
namespace {

namespace fs = std::filesystem;

/// A map item: a MiB of a file (or the whole of a smaller one). 67 MB of books are still
/// over a hundred items to balance, and a block maps its file once.
constexpr std::uint64_t block_bytes = 1024 * 1024;

/// The synthetic corpus; set before the pool starts so every worker has it.
std::string_view g_corpus;

/// The distinct words a table is made ready for at once when it holds more than a few
/// blocks' worth, ready_after_words (set before the pool starts). A vocabulary that keeps
/// growing, as a shelf of books does, then moves to its final table once instead of
/// through every size on the way; a small one (the synthetic corpus) keeps a table that
/// fits the caches.
std::size_t g_expected_words = 0;
constexpr std::size_t ready_after_words = 24'576;  // 3/4 of 2^15 slots

/// Counts block `b` into a worker's table: Pool::fold, so that a worker's blocks fill one
/// table and only the workers' tables are merged.
void count_block_into(words::Counts& counts, const words::Block& b) {
  if (counts.size() > ready_after_words && counts.size() < g_expected_words) counts.reserve(g_expected_words);
  words::count_block(b, g_corpus, counts);
}

struct Options {
  ComputeOptions common;
  std::vector<std::string> paths;
  std::uint64_t min_count = 2000;
  std::uint64_t top = 0;  ///< 0: default_top, or with `listing` the --min-count list
  std::string size = "50M";
  bool skip_errors = false;
  bool serial = false;
  bool list = false;                ///< --list
  bool listing = false;             ///< --list, or --min-count given: "word == count" lines
  bool speedup = false;             ///< --speedup: measure one worker too
  bool no_speedup = false;          ///< --no-speedup (default: measure for the table only)
};

/// Rows of the table when neither --top nor the listing is asked for.
constexpr std::uint64_t default_top = 20;

/// One input: a file the workers map (`path`), or a stream read into the in-memory
/// corpus before the pool starts, at `base` (`path` empty).
struct Input {
  std::string path;
  std::uint64_t size;
  std::uint64_t base = 0;
};

/// Whether the first 64 KiB of an input, `head`, mark it as binary: a NUL byte.
bool looks_binary(std::string_view head) {
  return head.substr(0, 65536).find('\0') != std::string_view::npos;
}

/// Checks a regular file: readable, and text (see looks_binary).
std::optional<std::string> check_file(const fs::path& p, std::uint64_t& size) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fmt::format("cannot open '{}': {}", p.string(), std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  size = static_cast<std::uint64_t>(st.st_size);
  char buf[65536];
  ssize_t n = ::read(fd, buf, sizeof buf);
  const int err = errno;
  ::close(fd);
  if (n < 0) return fmt::format("cannot read '{}': {}", p.string(), std::strerror(err));
  if (looks_binary(std::string_view(buf, static_cast<std::size_t>(n))))
    return fmt::format("'{}' is a binary file, not text", p.string());
  return std::nullopt;
}

/// Expands PATH arguments (directories recursively, in sorted order) into readable text
/// files. A problem is an error, or with --skip-errors a warning.
/// Streams ("-", FIFOs, pipes, /proc files: see is_stream) are read whole into `memory`,
/// each followed by a newline so that no word runs from one input into the next.
std::vector<Input> collect(const Options& o, std::string& memory) {
  std::vector<Input> out;
  auto problem = [&](const std::string& what) {
    if (!o.skip_errors) throw UsageError(what);
    fmt::print(stderr, "mproc wordcount: warning: skipping {}\n", what);
  };
  auto add_file = [&](const fs::path& p) {
    if (is_stream(p.string())) {
      const std::size_t base = memory.size();
      const std::string err = read_input(p.string(), [&](std::string_view piece) { memory += piece; });
      const std::size_t size = memory.size() - base;
      std::string bad = err;
      if (bad.empty() && looks_binary(std::string_view(memory).substr(base)))
        bad = fmt::format("'{}' is a binary file, not text", p.string());
      if (!bad.empty()) {
        memory.resize(base);
        problem(bad);
        return;
      }
      memory += '\n';
      out.push_back({"", size, base});
      return;
    }
    std::uint64_t size = 0;
    if (auto err = check_file(p, size))
      problem(*err);
    else
      out.push_back({p.string(), size});
  };
  walk_paths(o.paths, problem, add_file);
  return out;
}

/// The words to print: the `top` most frequent (count descending, then word), or for the
/// Python listing without --top every word used more than `min_count` times,
/// alphabetically, or else the default_top most frequent.
std::vector<std::pair<std::string, std::uint64_t>> select_words(const words::Counts& counts,
                                                                const Options& o) {
  // Views into the table until the few chosen are copied out: a book's 170,000 words as
  // strings took longer than counting a tenth of them.
  using Entry = std::pair<std::string_view, std::uint64_t>;
  std::vector<Entry> chosen;
  if (o.top == 0 && o.listing) {
    counts.for_each([&](std::string_view w, std::uint64_t c) {
      if (c > o.min_count) chosen.emplace_back(w, c);
    });
    std::sort(chosen.begin(), chosen.end());
  } else {
    // The `top` most frequent, through a heap whose front is the least of those kept.
    auto before = [](const Entry& a, const Entry& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    };
    const std::uint64_t top = o.top != 0 ? o.top : default_top;
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(top, counts.size()));
    chosen.reserve(k);
    counts.for_each([&](std::string_view w, std::uint64_t c) {
      if (k == 0) return;
      const Entry e{w, c};
      if (chosen.size() < k) {
        chosen.push_back(e);
        std::push_heap(chosen.begin(), chosen.end(), before);
      } else if (before(e, chosen.front())) {
        std::pop_heap(chosen.begin(), chosen.end(), before);
        chosen.back() = e;
        std::push_heap(chosen.begin(), chosen.end(), before);
      }
    });
    std::sort_heap(chosen.begin(), chosen.end(), before);
  }
  std::vector<std::pair<std::string, std::uint64_t>> out;
  out.reserve(chosen.size());
  for (const auto& [w, c] : chosen) out.emplace_back(std::string(w), c);
  return out;
}

/// What one count of every block gave.
struct Count {
  words::Counts counts;
  double seconds;
  unsigned workers;  ///< the pool's (an mpi pool has as many as there are serving ranks)
};

/// One count of every block: in this process (no `workers`), or by a pool asked for that
/// many workers (0: cpu_count()), made in `pool` and closed once it has counted: its
/// workers exit while the caller prints, and `pool`'s end waits for what is left of that.
Count count_blocks(const Options& o, const std::vector<words::Block>& blocks,
                   std::optional<unsigned> workers, const MapOptions& map_options,
                   std::optional<Pool>& pool) {
  const auto start = std::chrono::steady_clock::now();
  Count c{{}, 0, 1};
  if (!workers) {
    for (auto& b : blocks) count_block_into(c.counts, b);  // one table, no merges
  } else {
    ComputeOptions common = o.common;
    common.workers = *workers;
    common.progress = false;  // the call's own options say whether it draws a bar
    pool.emplace(pool_options(common));
    c.workers = pool->workers();
    MapOptions call = map_options;
    // On a --trace timeline, a block's chunk is named after its file.
    call.item_label = [&blocks](std::size_t i) {
      return i < blocks.size() && !blocks[i].path.empty() ? blocks[i].path : std::string("corpus");
    };
    c.counts = pool->fold(words::Counts{}, count_block_into, words::merge, blocks, call);
    pool->close();
  }
  c.seconds = seconds_since(start);
  return c;
}

/// The table a newcomer reads: rank, word, count and share of all words.
std::string word_table(const std::vector<std::pair<std::string, std::uint64_t>>& selected,
                       std::uint64_t total_words) {
  std::size_t word_width = 4;
  std::size_t count_width = 5;
  for (auto& [w, c] : selected) {
    word_width = std::max(word_width, w.size());
    count_width = std::max(count_width, grouped(c).size());
  }
  std::string out = fmt::format("{:>4}  {:<{}}  {:>{}}  {:>6}\n", "rank", "word", word_width,
                                "count", count_width, "share");
  std::size_t rank = 0;
  for (auto& [w, c] : selected) {
    const double share = total_words != 0 ? 100.0 * static_cast<double>(c) / static_cast<double>(total_words) : 0.0;
    out += fmt::format("{:>4}  {:<{}}  {:>{}}  {:>5.2f}%\n", ++rank, w, word_width, grouped(c),
                       count_width, share);
  }
  return out;
}

int run(const Options& o) {
  check_compute_options(o.common);
  const auto job_start = std::chrono::steady_clock::now();
  std::vector<Input> inputs;
  std::string corpus;
  const bool synthetic = o.paths.empty();
  if (synthetic) {
    // The corpus is made in this process's memory, which the other ranks of an MPI job do
    // not share: they would count nothing.
    if (o.common.backend == "mpi")
      throw UsageError("--backend mpi needs PATH arguments: the built-in corpus exists on rank 0 only");
    const std::uint64_t size = parse_size("--size", o.size, std::uint64_t{64} << 30);
    std::optional<ProgressBar> bar;
    if (o.common.progress) bar.emplace("generating", "MB", static_cast<double>(size) / 1e6);
    corpus = words::synthetic_corpus(size, 42, [&](std::size_t done) {
      if (bar) bar->set(static_cast<double>(done) / 1e6);
    });
    if (bar) {
      bar->set_total(static_cast<double>(corpus.size()) / 1e6);  // a word may run past `size`
      bar->close();
    }
    g_corpus = corpus;
    inputs.push_back({"", corpus.size()});
  } else {
    inputs = collect(o, corpus);
    if (inputs.empty()) throw UsageError("no readable text files to count");
    g_corpus = corpus;  // the streams read, if any: before the pool starts
  }
  const double setup_seconds = seconds_since(job_start);
  std::vector<words::Block> blocks;
  std::uint64_t bytes = 0;
  for (auto& in : inputs) {
    bytes += in.size;
    for (std::uint64_t b = 0; b < in.size; b += block_bytes)
      blocks.push_back({in.path, in.base + b, in.base + std::min(in.size, b + block_bytes)});
  }

  // What a table that keeps growing is made ready for: a MiB block of a book holds one
  // distinct word in 64 bytes, a whole book fewer.
  const std::uint64_t tables = o.serial ? 1 : o.common.workers == 0 ? cpu_count() : o.common.workers;
  g_expected_words = static_cast<std::size_t>(std::min<std::uint64_t>(bytes / tables / 64, std::uint64_t{1} << 17));
  std::optional<Pool> pool;
  const auto [counts, seconds, workers] =
      count_blocks(o, blocks, o.serial ? std::nullopt : std::optional<unsigned>(o.common.workers),
                   o.common.map_options("counting", "blocks"), pool);

  // The speed-up over one worker, measured now on the same blocks (after the pool's count,
  // so that a cold page cache, if anything, slows the pool's count, not the baseline's).
  std::optional<double> one_worker_seconds, speedup;
  if ((o.speedup || (!o.no_speedup && !o.listing && !o.common.json)) && !o.serial && workers > 1) {
    MapOptions quiet = o.common.map_options();
    quiet.progress = {};
    std::optional<Pool> one_pool;
    const Count one = count_blocks(o, blocks, 1, quiet, one_pool);
    if (!(one.counts == counts)) throw std::runtime_error("one worker counted differently from the pool");
    one_worker_seconds = one.seconds;
    speedup = one.seconds / std::max(seconds, 1e-9);
  }
  const double job_seconds = seconds_since(job_start);

  std::uint64_t total_words = 0;
  counts.for_each([&](std::string_view, std::uint64_t c) { total_words += c; });
  const auto selected = select_words(counts, o);
  if (o.common.json) {
    std::vector<JsonObject> list;
    for (auto& [w, c] : selected) list.emplace_back().add("word", w).add("count", c);
    JsonObject j;
    j.add("command", "wordcount").add("words", std::move(list));
    j.add("files", static_cast<std::uint64_t>(synthetic ? 0 : inputs.size()));
    j.add("synthetic", synthetic).add("bytes", bytes).add("distinct", static_cast<std::uint64_t>(counts.size()));
    j.add("serial", o.serial).add_pool(o.common, workers).add("seconds", seconds);
    if (one_worker_seconds)
      j.add("one_worker_seconds", *one_worker_seconds).add("speedup", *speedup);
    j.add(synthetic ? "generate_seconds" : "check_seconds", setup_seconds).add("job_seconds", job_seconds);
    write_stdout(j.str() + "\n");
  } else if (o.listing) {
    std::string out;
    for (auto& [w, c] : selected) out += fmt::format("{} == {}\n", w, c);
    write_stdout(out);
  } else {
    write_stdout(word_table(selected, total_words));
  }
  if (!o.common.quiet) {
    const double mb = static_cast<double>(bytes) / 1e6;
    std::string line = fmt::format(
        "mproc wordcount: {}, {:.1f} MB, {} distinct words; {}: {:.3f} s, {:.0f} MB/s",
        synthetic ? std::string("synthetic corpus") : plural(inputs.size(), "file"), mb,
        grouped(counts.size()), o.serial ? std::string("serial") : plural(workers, "worker"),
        seconds, mb / std::max(seconds, 1e-9));
    if (one_worker_seconds)
      line += fmt::format(", {:.2f}x one worker ({:.3f} s)", *speedup, *one_worker_seconds);
    line += fmt::format("; {} in {:.3f} s; {:.2f} s in all\n",
                        synthetic ? "generated" : "files checked", setup_seconds, job_seconds);
    fmt::print(stderr, "{}", line);
  }
  return ok;
}

}  // namespace

void add_wordcount(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("wordcount", "Count words in text files (the main job)");
  cmd->add_option("paths", o->paths, "Files or directories to count")->option_text("PATH...");
  CLI::Option* min_count =
      cmd->add_option("--min-count", o->min_count, "List words used more than N times (2000)")
          ->option_text("N")
          ->check(integer_in(0, UINT64_MAX))
          ->capture_default_str();
  cmd->add_option("--top", o->top, "Show the K most frequent words (default 20)")
      ->option_text("K")
      ->check(integer_in(1, UINT64_MAX));
  cmd->add_flag("--list", o->list, "Print \"word == count\" lines, as Python does");
  cmd->add_option("--size", o->size, "Size of the synthetic corpus (e.g. 50M, 1G)")
      ->option_text("SIZE")
      ->capture_default_str();
  cmd->add_flag("--speedup", o->speedup, "Also count with one worker (default for the table)");
  cmd->add_flag("--no-speedup", o->no_speedup, "Do not count with one worker");
  cmd->add_flag("--skip-errors", o->skip_errors, "Warn about and skip unreadable files");
  cmd->add_flag("--serial", o->serial, "Count in this process, without a pool");
  add_compute_options(*cmd, o->common);
  cmd->footer(
      "Counts every word across text files (directories are walked) and prints the most\n"
      "frequent as a table, or with --list every word used more than --min-count times,\n"
      "alphabetically, as the Python reference prints them. Without PATH, counts a\n"
      "synthetic corpus generated in memory.\n\n"
      "Exit codes: 0 success, 1 some tasks failed, 2 usage or input error.");
  cmd->callback([o, exit_code, min_count] {
    o->listing = o->list || min_count->count() > 0;
    run_command("wordcount", exit_code, [&] { return run(*o); });
  });
}

}  // namespace mproc::cli
