// `mproc trace-view FILE [-o OUT.html]`: draws a Chrome trace-event file, as `--trace`
// writes it, as one self-contained HTML page: the totals, per pool a Gantt chart of its
// worker lanes and their utilisation over time, the slowest tasks and the failures. The
// page is inline SVG and CSS and fetches nothing, so it opens offline and can be attached
// to a bug report.
//
// The input is read liberally: the Object Format ({"traceEvents": [...]}) or a bare array
// of events; complete ("X") events, and begin/end ("B"/"E") pairs on one (pid, tid),
// become spans; process_name and thread_name metadata ("M") label pools and lanes; other
// phases and unknown fields are ignored. A span whose times are unusable is skipped and
// counted. Everything taken from the file is HTML-escaped. The JSON itself is read
// strictly, by nlohmann's SAX parser (RFC 8259): a string that is not UTF-8 (a byte, or a
// lone surrogate escape) or a number beyond a double is an error, at its byte offset.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "compute.hpp"
#include "html.hpp"

namespace mproc::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

/// A trace nests three deep (file, events, args); the rest is room for producers that
/// put structures in args. Deeper is one clear error, not a tree as deep as the file: a
/// hostile file then costs neither the stack nor memory, whatever the parser does.
constexpr std::size_t max_nesting = 64;
/// A pool with more events than this is drawn as busy spans merged at pixel resolution,
/// so that the page stays a few megabytes.
constexpr std::size_t coalesce_above = 20000;
/// A time beyond 1e15 us (about 31 years) is garbage; below it, differences of times stay
/// exact enough to draw.
constexpr double max_time_us = 1e15;
constexpr std::size_t slowest_rows = 20;
constexpr std::size_t failure_rows = 100;
constexpr std::size_t legend_entries = 40;
constexpr int utilisation_bins = 300;

// Page geometry, in CSS pixels: the charts share one time axis.
constexpr double page_width = 1200;
constexpr double plot_left = 170;
constexpr double plot_width = page_width - plot_left - 20;

constexpr const char* failed_fill = "#d62728";
constexpr const char* failed_stroke = "#67000d";

/// Method colours: the Pool methods first, each with a fixed one so that a method looks the
/// same in every page; other names take the rest in order of first appearance. No red: red
/// means failed.
constexpr const char* palette[] = {"#4e79a7", "#f28e2b", "#edc948", "#59a14f", "#76b7b2",
                                   "#b07aa1", "#9c755f", "#86bcb6", "#8cd17d", "#bab0ac",
                                   "#ff9da7", "#17becf", "#bcbd22", "#8c564b", "#aec7e8",
                                   "#c5b0d5", "#f1ce63", "#499894"};
constexpr std::string_view pool_methods[] = {
    "map",        "imap",    "imap_unordered", "apply",       "submit",
    "map_reduce", "starmap", "map_async",      "apply_async", "task"};
constexpr std::size_t palette_size = std::size(palette);

constexpr std::int64_t absent = std::numeric_limits<std::int64_t>::min();

/// --max-bytes when not given: a trace --trace writes is some 80 bytes per chunk, so this
/// is over ten million chunks; more is a file that is not a trace, or a stream without end.
constexpr const char* default_max_bytes = "1G";

struct Options {
  std::string input;
  std::string output;
  std::string max_bytes = default_max_bytes;
  bool quiet = false;
};

/// Strings stored once and referred to by number (method names, statuses).
class Names {
 public:
  std::uint32_t id(const std::string& s) {
    const auto [it, added] = index_.try_emplace(s, static_cast<std::uint32_t>(names_.size()));
    if (added) names_.push_back(s);
    return it->second;
  }
  const std::string& operator[](std::uint32_t i) const { return names_[i]; }
  std::size_t size() const { return names_.size(); }

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, std::uint32_t> index_;
};

constexpr std::uint32_t no_text = std::numeric_limits<std::uint32_t>::max();

/// One task or chunk: an "X" event or a "B"/"E" pair. Integer fields are `absent` when
/// the event does not have them.
struct Span {
  double ts = 0;  // microseconds, as in the file
  double dur = 0;
  std::uint32_t name = 0;    // in Trace::names
  std::uint32_t status = 0;  // in Trace::statuses; 0 is "ok"
  std::uint32_t lane = 0;    // in Trace::lanes
  std::int64_t first = absent, items = absent, bytes_in = absent, bytes_out = absent;
  std::int64_t errors = absent, failed_index = absent;
  // In Trace::texts; no_text when the event has none.
  std::uint32_t label = no_text, function = no_text, error = no_text;

  double end() const { return ts + dur; }
  bool failed() const { return status != 0; }
};

/// A Chrome (pid, tid): one worker of one pool.
struct Lane {
  std::string tid;
  std::string label;
  std::size_t pool = 0;
  std::vector<std::uint32_t> spans;  // by start time
};

/// A Chrome pid: one Pool.
struct Pool {
  std::string pid;
  std::string label;
  std::vector<std::uint32_t> lanes;  // by tid
  std::size_t spans = 0;
  double t0 = 0, t1 = 0;  // first start, last end
};

struct Trace {
  Names names, statuses;
  Names texts;  // labels, functions and errors of spans
  std::vector<Span> spans;
  std::vector<Lane> lanes;
  std::vector<Pool> pools;
  std::string producer;
  std::int64_t dropped = 0;  // events the producer says it could not record
  std::size_t events = 0;    // every event in the file, metadata included
  std::size_t skipped = 0;   // spans with unusable times, unmatched "B" and "E" events
  double t0 = 0, t1 = 0;
};

/// The member `key` of `v`; nullptr when absent or when `v` is not an object.
const json* member(const json& v, std::string_view key) {
  if (!v.is_object()) return nullptr;
  const auto it = v.find(key);
  return it != v.end() ? &*it : nullptr;
}

/// The string `v` holds; nullptr when `v` is null or not a string.
const std::string* string_of(const json* v) {
  return v != nullptr ? v->get_ptr<const json::string_t*>() : nullptr;
}

/// "null", "a boolean", "a number", "a string", "an array" or "an object", for messages.
std::string kind_name(const json& v) {
  if (v.is_null()) return "null";
  return fmt::format("{} {}", v.is_structured() ? "an" : "a", v.type_name());
}

/// A pid or tid as text: Chrome writes numbers, some producers strings.
std::string id_text(const json* v) {
  if (v == nullptr) return "0";
  if (const std::string* s = string_of(v)) return *s;
  if (v->is_number_integer()) return v->dump();
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (std::isfinite(d) && std::abs(d) < 9e15 && d == std::floor(d))
      return fmt::format("{}", static_cast<std::int64_t>(d));
    return fmt::format("{}", d);
  }
  return "0";
}

/// Numeric ids in numeric order, then the others in byte order.
bool id_less(const std::string& a, const std::string& b) {
  auto number = [](const std::string& s) -> std::optional<std::int64_t> {
    std::int64_t v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
  };
  const auto na = number(a), nb = number(b);
  if (na && nb) return *na < *nb;
  if (na.has_value() != nb.has_value()) return na.has_value();
  return a < b;
}

/// An integer field; `absent` unless it is a number of at most 2^53 in magnitude (beyond
/// that a double does not hold integers exactly), so sums of two never overflow.
std::int64_t to_int(const json* v) {
  if (v == nullptr || !v->is_number()) return absent;
  const double d = v->get<double>();
  if (!std::isfinite(d) || std::abs(d) > 0x1p53) return absent;
  return static_cast<std::int64_t>(d);
}

/// A usable time field of an event, in microseconds.
std::optional<double> time_field(const json& event, std::string_view key) {
  const json* v = member(event, key);
  if (v == nullptr || !v->is_number()) return std::nullopt;
  const double d = v->get<double>();
  if (!std::isfinite(d) || std::abs(d) > max_time_us) return std::nullopt;
  return d;
}

/// Collects spans and labels event by event, then orders them into a Trace.
class TraceBuilder {
 public:
  explicit TraceBuilder(std::string path) : path_(std::move(path)) { trace_.statuses.id("ok"); }

  /// Takes one event, which must be an object.
  void add(const json& event);
  void other_data(const json& v);
  Trace finish();

 private:
  /// A "B" event waiting for its "E".
  struct Open {
    double ts;
    std::string name;
    json args;
  };

  std::uint32_t lane(const json& event);
  void add_span(const std::string& name, double ts, double dur, std::uint32_t lane,
                const json* args, const json* end_args);

  std::string path_;
  Trace trace_;
  std::vector<std::pair<std::string, std::string>> lane_keys_;  // (pid, tid) per lane id
  std::map<std::pair<std::string, std::string>, std::uint32_t> lane_ids_;
  std::map<std::string, std::string> process_names_;
  std::map<std::pair<std::string, std::string>, std::string> thread_names_;
  std::vector<std::vector<Open>> open_;  // per lane id
};

std::uint32_t TraceBuilder::lane(const json& event) {
  auto key = std::make_pair(id_text(member(event, "pid")), id_text(member(event, "tid")));
  const auto [it, added] =
      lane_ids_.try_emplace(key, static_cast<std::uint32_t>(lane_keys_.size()));
  if (added) {
    lane_keys_.push_back(std::move(key));
    open_.emplace_back();
  }
  return it->second;
}

void TraceBuilder::add(const json& event) {
  ++trace_.events;
  const std::string* ph = string_of(member(event, "ph"));
  if (ph == nullptr) return;
  const std::string* name = string_of(member(event, "name"));
  const json* args = member(event, "args");

  if (*ph == "M") {
    const std::string* label = args != nullptr ? string_of(member(*args, "name")) : nullptr;
    if (name == nullptr || label == nullptr) return;
    const std::string pid = id_text(member(event, "pid"));
    if (*name == "process_name")
      process_names_[pid] = *label;
    else if (*name == "thread_name")
      thread_names_[{pid, id_text(member(event, "tid"))}] = *label;
    return;
  }
  if (*ph != "X" && *ph != "B" && *ph != "E") return;

  const std::uint32_t l = lane(event);
  const std::optional<double> ts = time_field(event, "ts");
  const std::string unnamed = "(unnamed)";
  if (*ph == "X") {
    const std::optional<double> dur = time_field(event, "dur");
    if (!ts || !dur || *dur < 0) {
      ++trace_.skipped;
      return;
    }
    add_span(name != nullptr ? *name : unnamed, *ts, *dur, l, args, nullptr);
  } else if (*ph == "B") {
    if (!ts) {
      ++trace_.skipped;
      return;
    }
    open_[l].push_back(
        {*ts, name != nullptr ? *name : unnamed, args != nullptr ? *args : json()});
  } else {
    // An "E" closes the innermost open "B" of its lane, whatever its own name says.
    if (open_[l].empty()) {
      ++trace_.skipped;
      return;
    }
    const Open begin = std::move(open_[l].back());
    open_[l].pop_back();
    if (!ts || *ts < begin.ts) {
      ++trace_.skipped;
      return;
    }
    add_span(begin.name, begin.ts, *ts - begin.ts, l, &begin.args, args);
  }
}

void TraceBuilder::add_span(const std::string& name, double ts, double dur, std::uint32_t lane,
                            const json* args, const json* end_args) {
  // An "E" event's args add to (and override) its "B" event's, as in Chrome.
  auto field = [&](std::string_view key) -> const json* {
    if (end_args != nullptr)
      if (const json* v = member(*end_args, key)) return v;
    return args != nullptr ? member(*args, key) : nullptr;
  };
  Span s;
  s.ts = ts;
  s.dur = dur;
  s.lane = lane;
  s.name = trace_.names.id(name);
  s.first = to_int(field("first"));
  s.items = to_int(field("items"));
  s.bytes_in = to_int(field("bytes_in"));
  s.bytes_out = to_int(field("bytes_out"));
  s.errors = to_int(field("errors"));
  s.failed_index = to_int(field("failed_index"));
  auto text = [&](std::string_view key) {
    const std::string* v = string_of(field(key));
    return v != nullptr && !v->empty() ? trace_.texts.id(*v) : no_text;
  };
  s.label = text("label");
  s.function = text("function");
  s.error = text("error");
  if (const std::string* status = string_of(field("status")))
    s.status = trace_.statuses.id(*status);
  else if (s.errors > 0)
    s.status = trace_.statuses.id("error");
  trace_.spans.push_back(s);
}

void TraceBuilder::other_data(const json& v) {
  if (const std::string* p = string_of(member(v, "producer"))) trace_.producer = *p;
  const std::int64_t dropped = to_int(member(v, "dropped_events"));
  if (dropped != absent) trace_.dropped = dropped;
}

Trace TraceBuilder::finish() {
  for (const auto& stack : open_) trace_.skipped += stack.size();
  Trace& t = trace_;
  if (t.spans.empty())
    throw UsageError(fmt::format(
        "'{}' has no spans to draw: {} event{}, none a complete (\"X\") event or a begin/end "
        "(\"B\"/\"E\") pair with usable times",
        path_, t.events, t.events == 1 ? "" : "s"));

  // Pools by pid and lanes by tid; lanes without spans are left out.
  std::vector<std::vector<std::uint32_t>> by_lane(lane_keys_.size());
  for (std::uint32_t i = 0; i < t.spans.size(); ++i) by_lane[t.spans[i].lane].push_back(i);
  std::map<std::string, std::vector<std::uint32_t>> pool_lanes;  // pid -> old lane ids
  for (std::uint32_t l = 0; l < lane_keys_.size(); ++l)
    if (!by_lane[l].empty()) pool_lanes[lane_keys_[l].first].push_back(l);
  std::vector<std::string> pids;
  for (const auto& entry : pool_lanes) pids.push_back(entry.first);
  std::sort(pids.begin(), pids.end(), id_less);

  t.t0 = std::numeric_limits<double>::infinity();
  t.t1 = -std::numeric_limits<double>::infinity();
  for (const std::string& pid : pids) {
    Pool pool;
    pool.pid = pid;
    const auto name = process_names_.find(pid);
    pool.label = name != process_names_.end() ? name->second : fmt::format("pid {}", pid);
    pool.t0 = std::numeric_limits<double>::infinity();
    pool.t1 = -std::numeric_limits<double>::infinity();
    std::vector<std::uint32_t>& old_ids = pool_lanes[pid];
    std::sort(old_ids.begin(), old_ids.end(), [&](std::uint32_t a, std::uint32_t b) {
      return id_less(lane_keys_[a].second, lane_keys_[b].second);
    });
    for (const std::uint32_t old : old_ids) {
      const auto new_id = static_cast<std::uint32_t>(t.lanes.size());
      Lane lane;
      lane.tid = lane_keys_[old].second;
      const auto thread = thread_names_.find(lane_keys_[old]);
      lane.label = thread != thread_names_.end() ? thread->second : fmt::format("tid {}", lane.tid);
      lane.pool = t.pools.size();
      lane.spans = std::move(by_lane[old]);
      std::sort(lane.spans.begin(), lane.spans.end(),
                [&](std::uint32_t a, std::uint32_t b) { return t.spans[a].ts < t.spans[b].ts; });
      for (const std::uint32_t s : lane.spans) {
        t.spans[s].lane = new_id;
        pool.t0 = std::min(pool.t0, t.spans[s].ts);
        pool.t1 = std::max(pool.t1, t.spans[s].end());
      }
      pool.spans += lane.spans.size();
      pool.lanes.push_back(new_id);
      t.lanes.push_back(std::move(lane));
    }
    t.t0 = std::min(t.t0, pool.t0);
    t.t1 = std::max(t.t1, pool.t1);
    t.pools.push_back(std::move(pool));
  }
  return std::move(trace_);
}

// ---------------------------------------------------------------------------------------
// Input and output

/// The trace file, handed to the parser a byte at a time from a buffer refilled by
/// read(2), so that the parser stops reading where the text stops being JSON: the first
/// bytes of /dev/urandom, not its end. Files, pipes and devices are read alike (st_size
/// is not trusted, only used to refuse at once a regular file already over the limit).
/// The input ends early at `max_bytes` (too_large() then says whether more followed)
/// and before a NUL byte, which JSON text never holds and nlohmann's lexer would take
/// for the end (it reads C strings too).
class Input {
 public:
  Input(const std::string& path, std::uint64_t max_bytes) : path_(path), max_bytes_(max_bytes) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw UsageError(fmt::format("cannot open '{}': {}", path, std::strerror(errno)));
    struct stat st {};
    if (::fstat(fd_, &st) == 0) {
      if (S_ISDIR(st.st_mode)) {
        ::close(fd_);
        throw UsageError(fmt::format("'{}' is a directory, not a trace file", path));
      }
      if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) > max_bytes) {
        ::close(fd_);
        throw too_large_error();
      }
    }
  }
  ~Input() { ::close(fd_); }
  Input(const Input&) = delete;
  Input& operator=(const Input&) = delete;

  /// False when the input has ended (or stopped at max_bytes or a NUL). Reads as needed;
  /// throws UsageError if read() fails.
  bool has_byte() { return next_ != end_ || fill(); }
  char byte() const { return *next_; }
  void advance() {
    ++next_;
    ++offset_;
  }

  /// The offset of the next byte: how many were handed out.
  std::uint64_t offset() const noexcept { return offset_; }
  /// True when the input went on past max_bytes.
  bool too_large() const noexcept { return too_large_; }
  /// The offset of the first NUL byte, if the input reached one.
  std::optional<std::uint64_t> nul() const noexcept { return nul_; }
  /// True when every byte so far is JSON whitespace.
  bool blank() const noexcept { return blank_; }

  UsageError too_large_error() const {
    return UsageError(fmt::format("'{}' is larger than the --max-bytes limit of {} bytes",
                                  path_, max_bytes_));
  }

 private:
  bool fill() {
    if (stopped_) return false;
    const std::uint64_t read_so_far = offset_;  // everything read was handed out
    // At the limit, one byte more tells a file of exactly max_bytes from a larger one.
    const std::size_t want = read_so_far >= max_bytes_
                                 ? 1
                                 : static_cast<std::size_t>(std::min<std::uint64_t>(
                                       buffer_.size(), max_bytes_ - read_so_far));
    ssize_t n;
    while ((n = ::read(fd_, buffer_.data(), want)) < 0) {
      if (errno != EINTR)
        throw UsageError(fmt::format("cannot read '{}': {}", path_, std::strerror(errno)));
    }
    if (n == 0) {
      stopped_ = true;
      return false;
    }
    if (read_so_far >= max_bytes_) {
      too_large_ = stopped_ = true;
      return false;
    }
    next_ = buffer_.data();
    end_ = next_ + n;
    if (const void* zero = std::memchr(next_, '\0', static_cast<std::size_t>(n))) {
      end_ = static_cast<const char*>(zero);
      nul_ = offset_ + static_cast<std::uint64_t>(end_ - next_);
      stopped_ = true;
    }
    if (blank_)
      blank_ = std::all_of(next_, end_, [](char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
      });
    return next_ != end_;
  }

  std::string path_;
  std::uint64_t max_bytes_;
  int fd_ = -1;
  std::array<char, std::size_t{1} << 16> buffer_;
  const char* next_ = nullptr;
  const char* end_ = nullptr;
  std::uint64_t offset_ = 0;
  bool stopped_ = false;  // at the end, the limit or a NUL: read no more
  bool too_large_ = false;
  bool blank_ = true;
  std::optional<std::uint64_t> nul_;
};

/// An input iterator over an Input, for nlohmann's iterator input adapter (which compares
/// it with the default-constructed end before each byte).
class InputIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = char;

  InputIterator() = default;
  explicit InputIterator(Input& in) : in_(&in) {}
  char operator*() const { return in_->byte(); }
  InputIterator& operator++() {
    in_->advance();
    return *this;
  }
  InputIterator operator++(int) {
    InputIterator before = *this;
    in_->advance();
    return before;
  }
  bool operator==(const InputIterator& other) const { return at_end() == other.at_end(); }

 private:
  bool at_end() const { return in_ == nullptr || !in_->has_byte(); }
  Input* in_ = nullptr;
};

/// `s` with every byte that is not part of well-formed UTF-8, and DEL, written as \xNN:
/// a message that quotes the input stays one printable line, whatever the input holds.
/// (nlohmann writes control characters as <U+00NN> already.)
std::string printable(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    // The length of the UTF-8 sequence starting here, 0 if none is well-formed
    // (Unicode 15, table 3-7: no overlong forms, no surrogates, nothing past U+10FFFF).
    std::size_t len = 0;
    if (b < 0x7f) {
      len = 1;
    } else if (b >= 0xc2 && b <= 0xf4) {
      const std::size_t need = b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
      const unsigned lo = b == 0xe0 ? 0xa0 : b == 0xf0 ? 0x90 : 0x80;
      const unsigned hi = b == 0xed ? 0x9f : b == 0xf4 ? 0x8f : 0xbf;
      bool ok = i + need <= s.size();
      for (std::size_t k = 1; ok && k < need; ++k) {
        const auto c = static_cast<unsigned char>(s[i + k]);
        ok = k == 1 ? c >= lo && c <= hi : c >= 0x80 && c <= 0xbf;
      }
      if (ok) len = need;
    }
    if (len == 0) {
      out += fmt::format("\\x{:02x}", b);
      ++i;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  return out;
}

/// Hands a trace to a TraceBuilder as nlohmann's SAX parser reads it (json::sax_parse
/// calls the members from null() to parse_error(), as nlohmann::json_sax declares them).
/// Each event is built as a json value of its own, added and dropped, and members other
/// than "traceEvents" and "otherData" are not built at all, so that a trace of a million
/// events is never one tree. nlohmann's parser is iterative (one bit per open container,
/// on the heap), and begin() stops at more than max_nesting open containers.
class TraceReader {
 public:
  TraceReader(std::string path, TraceBuilder& builder, const Input& input)
      : path_(std::move(path)), builder_(builder), input_(input) {}

  bool null() { return begin(nullptr); }
  bool boolean(bool v) { return begin(v); }
  bool number_integer(json::number_integer_t v) { return begin(v); }
  bool number_unsigned(json::number_unsigned_t v) { return begin(v); }
  bool number_float(json::number_float_t v, const json::string_t&) { return begin(v); }
  bool string(json::string_t& v) { return begin(std::move(v)); }
  bool binary(json::binary_t&) { return true; }  // only binary formats (CBOR, ...) have them
  bool start_object(std::size_t) { return begin(json::object()); }
  bool start_array(std::size_t) { return begin(json::array()); }
  bool key(json::string_t& k) {
    if (depth_ == 1) member_ = k;  // a member of the top-level object
    key_ = std::move(k);
    return true;
  }
  bool end_object() { return end(); }
  bool end_array() { return end(); }
  bool parse_error(std::size_t position, const std::string& token, const json::exception& e) {
    // `position` counts the bytes read, the offending one (or the end) included. what() is
    // "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error
    // while parsing array - ...": the tag and the line and column are left out, the
    // caller gives the byte offset.
    error_at = position > 0 ? position - 1 : 0;
    std::string_view what = e.what();
    if (const auto tag = what.find("] "); tag != std::string_view::npos) what.remove_prefix(tag + 2);
    if (what.starts_with("parse error"))
      if (const auto colon = what.find(": "); colon != std::string_view::npos)
        what.remove_prefix(colon + 2);
    error = what;
    // The message quotes the token read so far, which for a bad string is the whole
    // string: a long one is cut to its end, where the problem is, to keep one short line.
    constexpr std::size_t keep = 40;
    if (token.size() > keep)
      if (const auto at = error.find(token); at != std::string::npos)
        error.replace(at, token.size(), "..." + token.substr(token.size() - keep));
    error = printable(error);
    return false;
  }

  /// The first way the text is not a trace; "" when it is one.
  std::string problem() const {
    if (problem_.empty() && top_object_ && !found_events_)
      return fmt::format("'{}' is not a trace: it has no \"traceEvents\" array", path_);
    return problem_;
  }

  std::string error;  ///< nlohmann's message when the text is not JSON, else ""
  std::size_t error_at = 0;
  bool too_deep = false;  ///< stopped at a container nested more than max_nesting deep
  std::uint64_t too_deep_at = 0;  ///< the offset of the container that opened one too many

 private:
  static constexpr std::size_t none = std::numeric_limits<std::size_t>::max();

  void not_a_trace(std::string_view what) {
    if (problem_.empty()) problem_ = fmt::format("'{}' is not a trace: {}", path_, what);
  }

  /// A value starts at depth_: it joins the value being built, starts one, or says what
  /// the file holds.
  bool begin(json v) {
    const bool container = v.is_structured();
    if (container && depth_ == max_nesting) {
      too_deep = true;
      // The parser reports a container as soon as it has read its '[' or '{' (no
      // lookahead), so that is the last byte handed out.
      too_deep_at = input_.offset() - 1;
      return false;
    }
    json* built = nullptr;
    if (!building_.empty()) {
      json& parent = *building_.back();
      built = parent.is_object() ? &(parent[key_] = std::move(v)) : &parent.emplace_back(std::move(v));
    } else if (depth_ == events_depth_) {
      if (v.is_object()) {
        value_ = std::move(v);
        built = &value_;
        value_is_event_ = true;
      } else {
        not_a_trace(fmt::format("event {} is {}, not an object", events_, kind_name(v)));
      }
      ++events_;
    } else if (depth_ == 0) {
      top_object_ = v.is_object();
      if (v.is_array())
        events_depth_ = 1;
      else if (!top_object_)
        not_a_trace(fmt::format(
            "it holds {}, not an object with \"traceEvents\" or an array", kind_name(v)));
    } else if (depth_ == 1 && member_ == "traceEvents") {
      if (v.is_array()) {
        events_depth_ = 2;
        found_events_ = true;
      } else {
        not_a_trace(fmt::format("\"traceEvents\" is {}, not an array", kind_name(v)));
      }
    } else if (depth_ == 1 && member_ == "otherData" && v.is_object()) {
      value_ = std::move(v);
      built = &value_;
      value_is_event_ = false;
    }
    if (container) {
      ++depth_;
      // Inside a value being built every container is built; outside, none is pushed.
      if (built != nullptr) building_.push_back(built);
    }
    return true;
  }

  bool end() {
    --depth_;
    if (!building_.empty()) {
      building_.pop_back();
      if (building_.empty()) {
        if (!value_is_event_)
          builder_.other_data(value_);
        else if (problem_.empty())
          builder_.add(value_);
        value_ = nullptr;
      }
    } else if (depth_ + 1 == events_depth_) {
      events_depth_ = none;  // the events array ended
    }
    return true;
  }

  std::string path_;
  TraceBuilder& builder_;
  const Input& input_;
  std::size_t depth_ = 0;              // open containers
  std::size_t events_depth_ = none;    // the depth of the events, while in their array
  std::size_t events_ = 0;             // events seen
  std::string member_;                 // the current member of the top-level object
  std::string key_;                    // the key of the next member of what is built
  json value_;                         // the event or otherData being built
  bool value_is_event_ = false;
  std::vector<json*> building_;        // its open containers, innermost last
  bool top_object_ = false;
  bool found_events_ = false;
  std::string problem_;
};

/// Reads and checks the trace at `path` as it parses it, one event at a time.
Trace read_trace(const std::string& path, std::uint64_t max_bytes) {
  Input input(path, max_bytes);
  TraceBuilder builder(path);
  TraceReader reader(path, builder, input);
  json::sax_parse(InputIterator(input), InputIterator(), &reader);
  // Past the limit, whatever the parser made of the cut is beside the point.
  if (input.too_large()) throw input.too_large_error();
  const std::uint64_t nul = input.nul().value_or(std::numeric_limits<std::uint64_t>::max());
  if (input.blank() && !input.nul()) throw UsageError(fmt::format("'{}' is empty", path));
  // A JSON error anywhere outranks a structure that is not a trace, so that a truncated
  // file is called truncated: the problem waits until the end. The input ends before a
  // NUL, so an error there is the NUL's.
  if (!reader.error.empty() && reader.error_at < nul)
    throw UsageError(fmt::format("'{}' is not valid JSON: {} at byte {}{}", path, reader.error,
                                 reader.error_at,
                                 reader.error_at >= input.offset() ? " (truncated file?)" : ""));
  if (reader.too_deep)
    throw UsageError(fmt::format("'{}' has arrays and objects nested more than {} deep, at byte {}",
                                 path, max_nesting, reader.too_deep_at));
  if (input.nul())
    throw UsageError(
        fmt::format("'{}' is not valid JSON: unexpected byte 0x00 at byte {}", path, nul));
  if (const std::string problem = reader.problem(); !problem.empty()) throw UsageError(problem);
  return builder.finish();
}

/// FILE with its extension replaced by .html (FILE.html when it already is one).
std::string default_output(const std::string& input) {
  fs::path p(input);
  p.replace_extension(".html");
  if (p == fs::path(input)) p += ".html";
  return p.string();
}

// ---------------------------------------------------------------------------------------
// Text

/// At most `max` code points of the UTF-8 text `s`, with "…" when shortened.
std::string shorten(const std::string& s, std::size_t max) {
  std::size_t points = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
    if (points++ == max) return s.substr(0, i) + "\u2026";
  }
  return s;
}

/// A duration given in microseconds, in the unit that suits it.
std::string duration_text(double us) {
  if (us < 1e3) return fmt::format("{:.1f} \u00b5s", us);
  if (us < 1e6) return fmt::format("{:.2f} ms", us / 1e3);
  return fmt::format("{:.3f} s", us / 1e6);
}

std::string bytes_text(std::int64_t n) {
  if (n == absent) return "";
  const double v = static_cast<double>(n);
  if (std::abs(v) < 1024) return fmt::format("{} B", n);
  if (std::abs(v) < 1024.0 * 1024) return fmt::format("{:.1f} KiB", v / 1024);
  if (std::abs(v) < 1024.0 * 1024 * 1024) return fmt::format("{:.1f} MiB", v / 1024 / 1024);
  return fmt::format("{:.1f} GiB", v / 1024 / 1024 / 1024);
}

/// "first..last (count)", or what the span has of it.
std::string items_text(const Span& s) {
  if (s.items == absent) return s.first != absent ? fmt::format("from {}", s.first) : "";
  if (s.first == absent) return fmt::format("{}", s.items);
  if (s.items <= 1) return fmt::format("{} ({})", s.first, s.items);
  return fmt::format("{}..{} ({})", s.first, s.first + (s.items - 1), s.items);
}

/// "1 event", "2 events".
std::string counted(std::size_t n, std::string_view noun) {
  return fmt::format("{} {}{}", n, noun, n == 1 ? "" : "s");
}

std::string percent(double fraction) { return fmt::format("{:.1f}%", 100 * fraction); }

// ---------------------------------------------------------------------------------------
// Page

/// Per bin, the busy fraction of a pool's lanes; and the pool's busy lane-time (overlaps
/// within a lane counted once).
struct Utilisation {
  std::vector<double> bins;
  double busy = 0;
};

Utilisation utilisation(const Trace& t, const Pool& pool, double span) {
  Utilisation u;
  u.bins.assign(utilisation_bins, 0.0);
  const double width = span / utilisation_bins;
  auto add = [&](double a, double b) {
    u.busy += b - a;
    const auto first =
        static_cast<int>(std::clamp((a - t.t0) / width, 0.0, utilisation_bins - 1.0));
    const auto last = static_cast<int>(std::clamp((b - t.t0) / width, 0.0, utilisation_bins - 1.0));
    for (int k = first; k <= last; ++k) {
      const double lo = t.t0 + k * width, hi = lo + width;
      u.bins[static_cast<std::size_t>(k)] += std::max(0.0, std::min(b, hi) - std::max(a, lo));
    }
  };
  for (const std::uint32_t l : pool.lanes) {
    // Spans are sorted by start: merge overlapping ones into busy intervals.
    bool open = false;
    double a = 0, b = 0;
    for (const std::uint32_t i : t.lanes[l].spans) {
      const Span& s = t.spans[i];
      if (open && s.ts <= b) {
        b = std::max(b, s.end());
        continue;
      }
      if (open) add(a, b);
      a = s.ts;
      b = s.end();
      open = true;
    }
    if (open) add(a, b);
  }
  const double capacity = static_cast<double>(pool.lanes.size()) * width;
  for (double& bin : u.bins) bin = std::min(1.0, bin / capacity);
  return u;
}

class Page {
 public:
  Page(const Trace& t, std::string file_name);
  std::string render();

 private:
  template <class... A>
  void put(fmt::format_string<A...> f, A&&... a) {
    fmt::format_to(std::back_inserter(out_), f, std::forward<A>(a)...);
  }
  double x_of(double ts) const { return plot_left + (ts - t_.t0) / span_ * plot_width; }
  const char* colour(const Span& s) const {
    return s.failed() ? failed_fill : palette[colours_[s.name]];
  }
  std::string tooltip(const Span& s) const;
  void axis(double top, double bottom, bool labels);
  void header();
  void legend();
  void pool_section(const Pool& pool);
  void gantt(const Pool& pool);
  void coalesced_lane(const Lane& lane, double y, double h);
  void utilisation_chart(const std::vector<double>& bins);
  void span_row(const Span& s, std::size_t rank);
  void slowest();
  void failures();

  const Trace& t_;
  std::string file_name_;
  double span_;                           // microseconds the axis covers, > 0
  std::vector<std::uint8_t> colours_;     // per name: its index in the palette
  std::vector<Utilisation> utilisation_;  // per pool
  std::vector<double> capacity_;          // per pool: lanes x its active span, microseconds
  std::string out_;
};

Page::Page(const Trace& t, std::string file_name) : t_(t), file_name_(std::move(file_name)) {
  span_ = std::max(t.t1 - t.t0, 1e-3);
  std::size_t spare = std::size(pool_methods);
  for (std::uint32_t i = 0; i < t.names.size(); ++i) {
    const auto known = std::find(std::begin(pool_methods), std::end(pool_methods), t.names[i]);
    std::size_t c = static_cast<std::size_t>(known - std::begin(pool_methods));
    if (known == std::end(pool_methods)) {
      c = spare++;
      if (spare == palette_size) spare = std::size(pool_methods);
    }
    colours_.push_back(static_cast<std::uint8_t>(c));
  }
}

std::string Page::tooltip(const Span& s) const {
  const Lane& lane = t_.lanes[s.lane];
  std::string text;
  if (s.label != no_text) text = t_.texts[s.label] + "\n";
  text += fmt::format("{} ({}, {})", t_.names[s.name], t_.pools[lane.pool].label, lane.label);
  if (s.function != no_text && s.function != s.label)
    text += fmt::format("\nfunction {}", t_.texts[s.function]);
  if (const std::string items = items_text(s); !items.empty())
    text += fmt::format("\nitems {}", items);
  text += fmt::format("\nstart {}, duration {}", duration_text(s.ts - t_.t0), duration_text(s.dur));
  if (s.bytes_in != absent || s.bytes_out != absent)
    text +=
        fmt::format("\nbytes in {}, out {}", s.bytes_in != absent ? bytes_text(s.bytes_in) : "-",
                    s.bytes_out != absent ? bytes_text(s.bytes_out) : "-");
  text += fmt::format("\nstatus {}", t_.statuses[s.status]);
  if (s.errors > 0) text += fmt::format(", {} raised", s.errors);
  if (s.failed_index != absent) text += fmt::format(", failed at item {}", s.failed_index);
  if (s.error != no_text) text += fmt::format("\n{}", t_.texts[s.error]);
  return html_escape(text);
}

void Page::axis(double top, double bottom, bool labels) {
  double unit = 1;
  const char* unit_name = "\u00b5s";
  if (span_ >= 2e6) {
    unit = 1e6;
    unit_name = "s";
  } else if (span_ >= 2e3) {
    unit = 1e3;
    unit_name = "ms";
  }
  // About 8 ticks, 1, 2 or 5 times a power of ten apart.
  const double raw = span_ / unit / 8;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * magnitude;
  for (const double m : {1.0, 2.0, 5.0})
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
  put("<g class=\"axis\" data-top=\"{:.1f}\" data-bottom=\"{:.1f}\" data-labels=\"{}\">", top,
      bottom, labels ? 1 : 0);
  for (int k = 0; k * step * unit <= span_ * (1 + 1e-9); ++k) {
    const double x = plot_left + k * step * unit / span_ * plot_width;
    put("<line class=\"grid\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1:.1f}\" y2=\"{2:.1f}\"/>", x,
        top, bottom);
    if (labels)
      put("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:.{}f} {}</text>", x,
          bottom + 14, k * step, decimals, unit_name);
  }
  put("</g>");
}

void Page::header() {
  std::size_t failed = 0;
  std::int64_t items = 0, raised = 0;
  bool have_items = false;
  // Saturating sums: a file may claim 2^53 items per chunk.
  auto add = [](std::int64_t& sum, std::int64_t v) {
    if (__builtin_add_overflow(sum, v, &sum)) sum = std::numeric_limits<std::int64_t>::max();
  };
  for (const Span& s : t_.spans) {
    failed += s.failed() ? 1 : 0;
    if (s.items != absent) {
      add(items, s.items);
      have_items = true;
    }
    if (s.errors > 0) add(raised, s.errors);
  }
  double busy = 0, capacity = 0;
  for (std::size_t p = 0; p < t_.pools.size(); ++p) {
    busy += utilisation_[p].busy;
    capacity += capacity_[p];
  }
  put("<h1>Trace timeline: {}</h1>\n<table class=\"summary\">\n", html_escape(file_name_));
  auto row = [&](std::string_view key, const std::string& value, std::string_view id) {
    put("<tr><th>{}</th><td id=\"{}\">{}</td></tr>\n", key, id, value);
  };
  row("File", html_escape(file_name_), "sum-file");
  if (!t_.producer.empty()) row("Producer", html_escape(t_.producer), "sum-producer");
  row("Tasks (chunks)", fmt::format("{}", t_.spans.size()), "sum-tasks");
  row("Time span", duration_text(t_.t1 - t_.t0), "sum-span");
  row("Pools", fmt::format("{}", t_.pools.size()), "sum-pools");
  row("Worker lanes", fmt::format("{}", t_.lanes.size()), "sum-lanes");
  row("Items", have_items ? fmt::format("{}", items) : std::string("-"), "sum-items");
  row("Failures",
      fmt::format(
          "{} failed task{}{}", failed, failed == 1 ? "" : "s",
          raised > 0 ? fmt::format(" ({} item{} raised)", raised, raised == 1 ? "" : "s") : ""),
      "sum-failures");
  row("Utilisation",
      fmt::format("{} <span class=\"dim\">(busy lane time / lanes &times; each pool&#39;s "
                  "active span)</span>",
                  percent(capacity > 0 ? busy / capacity : 0)),
      "sum-utilisation");
  if (t_.skipped > 0)
    row("Skipped",
        fmt::format("{} with unusable times or an unmatched begin/end",
                    counted(t_.skipped, "event")),
        "sum-skipped");
  if (t_.dropped > 0)
    row("Dropped",
        fmt::format("{} the producer could not record",
                    counted(static_cast<std::size_t>(t_.dropped), "event")),
        "sum-dropped");
  put("</table>\n");
}

void Page::legend() {
  std::vector<std::size_t> count(t_.names.size());
  std::vector<double> time(t_.names.size());
  std::size_t failed = 0;
  for (const Span& s : t_.spans) {
    ++count[s.name];
    time[s.name] += s.dur;
    failed += s.failed() ? 1 : 0;
  }
  put("<div class=\"legend\">");
  const auto shown = static_cast<std::uint32_t>(std::min(legend_entries, t_.names.size()));
  for (std::uint32_t i = 0; i < shown; ++i)
    put("<span class=\"item\"><span class=\"sw\" style=\"background:{}\"></span>{} "
        "<span class=\"dim\">({} &times;, {})</span></span>",
        palette[colours_[i]], html_escape(t_.names[i]), count[i], duration_text(time[i]));
  if (failed > 0)
    put("<span class=\"item\"><span class=\"sw\" style=\"background:{};outline:1px solid "
        "{}\"></span>failed <span class=\"dim\">({})</span></span>",
        failed_fill, failed_stroke, failed);
  if (shown < t_.names.size())
    put("<span class=\"item dim\">and {} more names</span>", t_.names.size() - shown);
  put("</div>\n");
}

void Page::pool_section(const Pool& pool) {
  const std::size_t p = static_cast<std::size_t>(&pool - t_.pools.data());
  put("<h2>{}</h2>\n", html_escape(pool.label));
  put("<p>{} task{} on {} lane{}, from {} to {}. Utilisation: <b class=\"util\" "
      "id=\"util-{}\">{}</b></p>\n",
      pool.spans, pool.spans == 1 ? "" : "s", pool.lanes.size(), pool.lanes.size() == 1 ? "" : "s",
      duration_text(pool.t0 - t_.t0), duration_text(pool.t1 - t_.t0), p + 1,
      percent(capacity_[p] > 0 ? utilisation_[p].busy / capacity_[p] : 0));
  if (pool.spans > coalesce_above)
    put("<p class=\"note\">This pool has {} tasks, more than {}: each lane is drawn at pixel "
        "resolution, its busy pixel columns merged into spans coloured by the method with "
        "most time in them, paler where less of a pixel is busy, red where a failed task ran; "
        "a span&#39;s tooltip gives its task count. The tables below list single tasks.</p>\n",
        pool.spans, coalesce_above);
  put("<div class=\"pool\">\n");
  gantt(pool);
  utilisation_chart(utilisation_[p].bins);
  put("</div>\n");
}

void Page::gantt(const Pool& pool) {
  const std::size_t lanes = pool.lanes.size();
  const double row = lanes <= 32 ? 20 : lanes <= 128 ? 10 : 5;
  const double bar = row >= 10 ? row - 4 : row - 1;
  const double top = 6, plot_h = row * static_cast<double>(lanes), height = top + plot_h + 22;
  // Labels 11 px high need a row each of at least 12 px.
  const std::size_t label_every = static_cast<std::size_t>(std::ceil(12 / row));
  put("<svg class=\"gantt\" width=\"{0:.0f}\" height=\"{1:.0f}\" viewBox=\"0 0 {0:.0f} "
      "{1:.0f}\">\n",
      page_width, height);
  put("<rect class=\"plot\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\"/>\n",
      plot_left, top, plot_width, plot_h);
  axis(top, top + plot_h, true);
  put("\n");
  for (std::size_t i = 0; i < lanes; ++i) {
    const Lane& lane = t_.lanes[pool.lanes[i]];
    const double y = top + row * static_cast<double>(i);
    if (i % label_every == 0)
      put("<text class=\"lane\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}<title>{}</title>"
          "</text>\n",
          plot_left - 6, y + row / 2 + 4, html_escape(shorten(lane.label, 24)), html_escape(lane.label));
    // The page's script redraws the lane from the times in data-t and data-d (or, for a
    // coalesced lane, in data-spans) at every zoom and window width.
    put("<g class=\"lane\" data-y=\"{:.1f}\" data-h=\"{:.1f}\"", y + (row - bar) / 2, bar);
    if (pool.spans > coalesce_above) {
      put(" data-spans=\"");
      for (const std::uint32_t si : lane.spans) {
        const Span& s = t_.spans[si];
        put("{:.3f} {:.3f} {} {} ", s.ts - t_.t0, s.dur, colours_[s.name], s.failed() ? 1 : 0);
      }
      put("\">\n");
      coalesced_lane(lane, y + (row - bar) / 2, bar);
      put("</g>\n");
      continue;
    }
    put(">\n");
    // Failures last, so that they are drawn on top. A bar is as wide as its time, however
    // thin: the script draws sub-pixel work as shaded density instead.
    for (const bool failed : {false, true})
      for (const std::uint32_t si : lane.spans) {
        const Span& s = t_.spans[si];
        if (s.failed() != failed) continue;
        put("<rect class=\"{}\" x=\"{:.2f}\" y=\"{:.1f}\" width=\"{:.3f}\" height=\"{:.1f}\" "
            "fill=\"{}\"{} data-t=\"{:.3f}\" data-d=\"{:.3f}\"><title>{}</title></rect>\n",
            failed ? "task failed" : "task", x_of(s.ts), y + (row - bar) / 2,
            s.dur / span_ * plot_width, bar, colour(s),
            failed ? fmt::format(" stroke=\"{}\"", failed_stroke) : "", s.ts - t_.t0, s.dur,
            tooltip(s));
      }
    put("</g>\n");
  }
  put("</svg>\n");
}

void Page::coalesced_lane(const Lane& lane, double y, double h) {
  // One plot pixel column at a time: a column is busy if a task overlaps it, takes the
  // colour with most busy time in it, and an opacity of the quarter of it that is busy
  // (rounded up), so that a pixel holding one short task does not look like solid work.
  // Runs of busy columns of one colour and opacity become one rect. Columns that a failed
  // task overlaps are then drawn red on top.
  const auto columns = static_cast<std::size_t>(plot_width);
  const double column_us = span_ / static_cast<double>(columns);
  std::vector<std::array<double, palette_size>> time(columns);
  std::vector<std::uint32_t> started(columns), failed_started(columns);
  std::vector<bool> busy(columns), failed(columns);
  auto column = [&](double ts) {
    return static_cast<std::size_t>(
        std::clamp((ts - t_.t0) / column_us, 0.0, static_cast<double>(columns - 1)));
  };
  for (const std::uint32_t si : lane.spans) {
    const Span& s = t_.spans[si];
    const std::size_t c0 = column(s.ts), c1 = column(s.end());
    ++started[c0];
    if (s.failed()) ++failed_started[c0];
    for (std::size_t c = c0; c <= c1; ++c) {
      const double lo = t_.t0 + static_cast<double>(c) * column_us, hi = lo + column_us;
      time[c][colours_[s.name]] += std::max(0.0, std::min(s.end(), hi) - std::max(s.ts, lo));
      busy[c] = true;
      if (s.failed()) failed[c] = true;
    }
  }
  std::vector<std::size_t> dominant(columns);
  std::vector<int> quarters(columns);
  for (std::size_t c = 0; c < columns; ++c) {
    dominant[c] = static_cast<std::size_t>(std::max_element(time[c].begin(), time[c].end()) -
                                           time[c].begin());
    double sum = 0;
    for (const double v : time[c]) sum += v;
    quarters[c] = std::clamp(static_cast<int>(std::ceil(4 * sum / column_us)), 1, 4);
  }
  auto rect = [&](std::size_t from, std::size_t to, const char* cls, const char* fill,
                  double opacity, std::string_view what, std::uint32_t tasks) {
    double busy_us = 0;
    for (std::size_t c = from; c < to; ++c)
      for (const double v : time[c]) busy_us += v;
    put("<rect class=\"{}\" x=\"{:.0f}\" y=\"{:.1f}\" width=\"{}\" height=\"{:.1f}\" "
        "fill=\"{}\" fill-opacity=\"{}\"><title>{} {}{} started from {} to {}, busy {}</title>"
        "</rect>\n",
        cls, plot_left + static_cast<double>(from), y, to - from, h, fill, opacity, tasks, what,
        tasks == 1 ? "" : "s", duration_text(static_cast<double>(from) * column_us),
        duration_text(static_cast<double>(to) * column_us), duration_text(busy_us));
  };
  for (std::size_t c = 0; c < columns;) {
    if (!busy[c]) {
      ++c;
      continue;
    }
    const std::size_t from = c;
    std::uint32_t tasks = 0;
    for (; c < columns && busy[c] && dominant[c] == dominant[from] && quarters[c] == quarters[from];
         ++c)
      tasks += started[c];
    rect(from, c, "busy", palette[dominant[from]], quarters[from] / 4.0, "task", tasks);
  }
  for (std::size_t c = 0; c < columns;) {
    if (!failed[c]) {
      ++c;
      continue;
    }
    const std::size_t from = c;
    std::uint32_t tasks = 0;
    for (; c < columns && failed[c]; ++c) tasks += failed_started[c];
    rect(from, c, "busy failed", failed_fill, 1.0, "failed task", tasks);
  }
}

void Page::utilisation_chart(const std::vector<double>& bins) {
  const double top = 8, plot_h = 80, height = top + plot_h + 22, base = top + plot_h;
  put("<svg class=\"utilisation\" width=\"{0:.0f}\" height=\"{1:.0f}\" viewBox=\"0 0 {0:.0f} "
      "{1:.0f}\">\n",
      page_width, height);
  put("<rect class=\"plot\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\"/>\n",
      plot_left, top, plot_width, plot_h);
  axis(top, base, true);
  for (const int pct : {0, 50, 100}) {
    const double y = base - plot_h * pct / 100;
    put("<line class=\"grid pct\" x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\"/>"
        "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}%</text>\n",
        plot_left, plot_left + plot_width, y, y, plot_left - 6, y + 4, pct);
  }
  put("<text x=\"8\" y=\"{:.1f}\">busy lanes</text>\n", top + plot_h / 2 + 4);
  const double w = plot_width / static_cast<double>(bins.size());
  put("<path class=\"area\" d=\"M{:.1f},{:.1f}", plot_left, base);
  for (std::size_t k = 0; k < bins.size(); ++k) {
    const double y = base - bins[k] * plot_h;
    put("L{:.1f},{:.1f}L{:.1f},{:.1f}", plot_left + w * static_cast<double>(k), y,
        plot_left + w * static_cast<double>(k + 1), y);
  }
  put("L{:.1f},{:.1f}Z\" data-base=\"{:.1f}\" data-h=\"{:.1f}\"/>\n</svg>\n", plot_left + plot_width,
      base, base, plot_h);
}

void Page::span_row(const Span& s, std::size_t rank) {
  const Lane& lane = t_.lanes[s.lane];
  const std::string label = s.label != no_text ? t_.texts[s.label] : "";
  const std::string function = s.function != no_text ? t_.texts[s.function] : "";
  put("<tr><td class=\"num\">{}</td><td><span class=\"sw\" style=\"background:{}\"></span>{}</td>"
      "<td class=\"label\" title=\"{}\">{}</td>"
      "<td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td>"
      "<td class=\"num\">{}</td><td class=\"num\">{}</td><td{}>{}{}{}{}</td></tr>\n",
      rank, palette[colours_[s.name]], html_escape(t_.names[s.name]),
      html_escape(function.empty() ? label : function), html_escape(shorten(label, 60)),
      html_escape(t_.pools[lane.pool].label),
      html_escape(lane.label), duration_text(s.ts - t_.t0), duration_text(s.dur), items_text(s),
      bytes_text(s.bytes_in), bytes_text(s.bytes_out), s.failed() ? " class=\"bad\"" : "",
      html_escape(t_.statuses[s.status]), s.errors > 0 ? fmt::format(" ({} raised)", s.errors) : "",
      s.failed_index != absent ? fmt::format(" at item {}", s.failed_index) : "",
      s.error != no_text ? "<br><span class=\"error\">" + html_escape(t_.texts[s.error]) + "</span>"
                         : "");
}

constexpr std::string_view table_head =
    "<thead><tr><th>#</th><th>method</th><th>label</th><th>pool</th><th>lane</th><th>start</th>"
    "<th>duration</th><th>items</th><th>bytes in</th><th>bytes out</th><th>status</th></tr>"
    "</thead>\n";

void Page::slowest() {
  std::vector<std::uint32_t> order(t_.spans.size());
  for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  const std::size_t n = std::min(slowest_rows, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                    [&](std::uint32_t a, std::uint32_t b) {
                      const Span &x = t_.spans[a], &y = t_.spans[b];
                      return x.dur != y.dur ? x.dur > y.dur : x.ts < y.ts;
                    });
  put("<h2>Slowest tasks</h2>\n<table id=\"slowest\" class=\"list\">\n{}<tbody>\n", table_head);
  for (std::size_t i = 0; i < n; ++i) span_row(t_.spans[order[i]], i + 1);
  put("</tbody></table>\n");
}

void Page::failures() {
  std::vector<std::uint32_t> failed;
  for (std::uint32_t i = 0; i < t_.spans.size(); ++i)
    if (t_.spans[i].failed()) failed.push_back(i);
  put("<h2>Failures</h2>\n");
  if (failed.empty()) {
    put("<p id=\"no-failures\">none</p>\n");
    return;
  }
  std::sort(failed.begin(), failed.end(),
            [&](std::uint32_t a, std::uint32_t b) { return t_.spans[a].ts < t_.spans[b].ts; });
  put("<table id=\"failures\" class=\"list\">\n{}<tbody>\n", table_head);
  for (std::size_t i = 0; i < std::min(failure_rows, failed.size()); ++i)
    span_row(t_.spans[failed[i]], i + 1);
  put("</tbody></table>\n");
  if (failed.size() > failure_rows)
    put("<p id=\"more-failures\">and {} more failed tasks, not listed</p>\n",
        failed.size() - failure_rows);
}

constexpr std::string_view style = R"(
body { margin: 16px; min-width: 600px; background: #fff; color: #222;
       font: 13px/1.4 system-ui, sans-serif; }
h1 { font-size: 20px; margin: 0 0 8px; }
h2 { font-size: 16px; margin: 22px 0 4px; }
p { margin: 4px 0; }
table { border-collapse: collapse; }
th, td { padding: 2px 8px; border-bottom: 1px solid #e3e3e3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary th { font-weight: 600; color: #555; }
.dim { color: #777; }
.note { color: #7a4d00; }
td.bad { color: #b00; font-weight: 600; }
td.bad .error { font-weight: 400; }
td.label { max-width: 360px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.legend { margin: 10px 0; }
.legend .item { margin-right: 16px; white-space: nowrap; }
.sw { display: inline-block; width: 11px; height: 11px; margin-right: 5px; vertical-align: -1px; }
svg { display: block; }
svg text { font-size: 11px; fill: #444; }
svg .plot { fill: #fafafa; stroke: #ccc; }
svg .grid { stroke: #e4e4e4; }
svg .area { fill: #9ecae1; stroke: #3182bd; }
svg.gantt, svg.utilisation { cursor: grab; user-select: none; }
svg .selection { fill: #3182bd; fill-opacity: 0.15; stroke: #3182bd; }
#zoombar { position: sticky; top: 0; z-index: 1; background: #fff; padding: 6px 0;
           border-bottom: 1px solid #e3e3e3; }
#zoombar button { font: inherit; min-width: 28px; margin-right: 4px; }
#zoom-range { margin-left: 10px; color: #555; }
)";

/// Zoom, pan and redraw at the window's width. No network, no libraries: it only moves
/// and adds SVG elements of the page.
constexpr std::string_view script = R"js((function () {
  'use strict';
  // Zoom and pan. The view is a time range [a, b] in microseconds from the first start.
  // Every draw maps it onto the plot's width in CSS pixels: a bar at least a pixel wide
  // is drawn at its true width; work narrower than a pixel is summed per pixel column and
  // shown as shading whose opacity is the busy fraction of that column, so a lane looks
  // as busy as it was. Failed work under a pixel wide gets a red mark above its column.
  const root = document.getElementById('timeline');
  if (!root) return;
  const SPAN = Number(root.dataset.span);
  const PALETTE = root.dataset.palette.split(' ');
  const FAILED = root.dataset.failed;
  const LEFT = 170, RIGHT = 20, MIN_VIEW = Math.max(SPAN * 1e-9, 1e-3);
  const svgNs = document.querySelector('svg').namespaceURI;
  const bar = document.getElementById('zoombar');
  const rangeText = document.getElementById('zoom-range');
  let view = [0, SPAN];
  let plotW = 0;

  function make(tag, attrs, parent) {
    const e = document.createElementNS(svgNs, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function duration(us) {
    if (Math.abs(us) < 1e3) return us.toFixed(1) + ' \u00b5s';
    if (Math.abs(us) < 1e6) return (us / 1e3).toFixed(2) + ' ms';
    return (us / 1e6).toFixed(3) + ' s';
  }

  const pools = [];
  for (const div of document.querySelectorAll('div.pool')) {
    const gantt = div.querySelector('svg.gantt'), util = div.querySelector('svg.utilisation');
    const pool = {gantt, util, lanes: [], path: util.querySelector('path.area'),
                  axes: Array.from(div.querySelectorAll('g.axis')),
                  plots: Array.from(div.querySelectorAll('rect.plot'))};
    for (const g of gantt.querySelectorAll('g.lane')) {
      const lane = {y: Number(g.dataset.y), h: Number(g.dataset.h), g, spans: [], own: null};
      if (g.dataset.spans !== undefined) {
        const v = g.dataset.spans.trim().split(' ').map(Number);
        for (let i = 0; i + 3 < v.length; i += 4)
          lane.spans.push({t: v[i], d: v[i + 1], failed: v[i + 3] === 1,
                           fill: v[i + 3] === 1 ? FAILED : PALETTE[v[i + 2]], el: null});
        for (const r of Array.from(g.querySelectorAll('rect'))) r.remove();
        lane.own = make('g', {'class': 'bars'}, g);
      } else {
        for (const r of g.querySelectorAll('rect.task'))
          lane.spans.push({t: Number(r.dataset.t), d: Number(r.dataset.d), el: r,
                           failed: r.classList.contains('failed'), fill: r.getAttribute('fill')});
      }
      lane.density = make('g', {'class': 'density'}, g);
      pool.lanes.push(lane);
    }
    pools.push(pool);
  }

  function drawAxis(g, a, b) {
    const top = Number(g.dataset.top), bottom = Number(g.dataset.bottom);
    const len = b - a;
    let unit = 1, name = '\u00b5s';
    if (len >= 2e6) { unit = 1e6; name = 's'; } else if (len >= 2e3) { unit = 1e3; name = 'ms'; }
    const raw = len / unit / 8, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = 10 * mag;
    for (const m of [1, 2, 5]) if (m * mag >= raw) { step = m * mag; break; }
    const decimals = Math.min(9, Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
    g.textContent = '';
    for (let k = Math.ceil(a / unit / step - 1e-9); k * step * unit <= b * (1 + 1e-12); ++k) {
      const x = LEFT + (k * step * unit - a) / len * plotW;
      make('line', {'class': 'grid', x1: x, x2: x, y1: top, y2: bottom}, g);
      if (g.dataset.labels === '1') {
        const t = make('text', {x, y: bottom + 14, 'text-anchor': 'middle'}, g);
        t.textContent = (k * step).toFixed(decimals) + ' ' + name;
      }
    }
  }

  // Draws one lane and adds its busy fraction per column to `busy`.
  function drawLane(lane, a, k, cols, busy) {
    const frac = new Float64Array(cols), sub = new Float64Array(cols);
    const subFill = new Array(cols), subBest = new Float64Array(cols);
    const subCount = new Uint32Array(cols), subFailed = new Uint8Array(cols);
    lane.density.textContent = '';
    if (lane.own) lane.own.textContent = '';
    let own = 0;
    for (const s of lane.spans) {
      const x0 = (s.t - a) * k, x1 = (s.t + s.d - a) * k;
      const visible = x1 >= 0 && x0 <= plotW;
      const wide = x1 - x0 >= 1;
      if (s.el) s.el.style.display = visible && wide ? '' : 'none';
      if (!visible) continue;
      const l = Math.max(x0, 0), r = Math.min(x1, plotW);
      for (let c = Math.floor(l); c <= Math.min(cols - 1, Math.floor(r)); ++c) {
        const part = Math.max(0, Math.min(r, c + 1) - Math.max(l, c));
        frac[c] += part;
        if (!wide) {
          sub[c] += part;
          if (c === Math.floor(l)) ++subCount[c];
          if (s.failed) subFailed[c] = 1;
          if (part > subBest[c]) { subBest[c] = part; subFill[c] = s.fill; }
        }
      }
      if (!wide) continue;
      if (s.el) {
        s.el.setAttribute('x', LEFT + l);
        s.el.setAttribute('width', r - l);
      } else if (own++ < 20000) {
        const e = make('rect', {'class': s.failed ? 'task failed' : 'task', x: LEFT + l, y: lane.y,
                                width: r - l, height: lane.h, fill: s.fill}, lane.own);
        make('title', {}, e).textContent =
            (s.failed ? 'failed, ' : '') + 'start ' + duration(s.t) + ', duration ' + duration(s.d);
      }
    }
    for (let c = 0; c < cols; ++c) busy[c] += Math.min(1, frac[c]);
    // Runs of columns of one colour and about one opacity become one rect, drawn at the
    // run's mean busy fraction, so the ink is the work's.
    for (let c = 0; c < cols;) {
      if (sub[c] <= 0) { ++c; continue; }
      const from = c, fill = subFill[c], level = Math.round(Math.min(1, sub[c]) * 32);
      let sum = 0, tasks = 0;
      for (; c < cols && sub[c] > 0 && subFill[c] === fill &&
             Math.round(Math.min(1, sub[c]) * 32) === level; ++c) {
        sum += Math.min(1, sub[c]);
        tasks += subCount[c];
      }
      const e = make('rect', {'class': 'density', x: LEFT + from, y: lane.y, width: c - from,
                              height: lane.h, fill, 'fill-opacity': (sum / (c - from)).toFixed(4)},
                     lane.density);
      make('title', {}, e).textContent = tasks + ' task' + (tasks === 1 ? '' : 's') +
          ' under a pixel wide, busy ' + (100 * sum / (c - from)).toFixed(1) + '% of ' +
          duration((c - from) / k);
    }
    for (let c = 0; c < cols;) {
      if (!subFailed[c]) { ++c; continue; }
      const from = c;
      while (c < cols && subFailed[c]) ++c;
      make('rect', {'class': 'density failed', x: LEFT + from, y: lane.y - 2, width: c - from,
                    height: 2, fill: FAILED}, lane.density);
    }
  }

  function draw() {
    const width = Math.max(600, Math.floor(root.clientWidth));
    plotW = width - LEFT - RIGHT;
    const [a, b] = view;
    const k = plotW / (b - a);
    const cols = Math.ceil(plotW);
    for (const p of pools) {
      for (const svg of [p.gantt, p.util]) {
        svg.setAttribute('width', width);
        svg.setAttribute('viewBox', '0 0 ' + width + ' ' + svg.getAttribute('height'));
      }
      for (const r of p.plots) r.setAttribute('width', plotW);
      for (const g of p.axes) drawAxis(g, a, b);
      const busy = new Float64Array(cols);
      for (const lane of p.lanes) drawLane(lane, a, k, cols, busy);
      const base = Number(p.path.dataset.base), h = Number(p.path.dataset.h);
      const n = Math.max(1, p.lanes.length);
      let d = 'M' + LEFT + ',' + base;
      for (let c = 0; c < cols; ++c) {
        const y = (base - Math.min(1, busy[c] / n) * h).toFixed(1);
        d += 'L' + (LEFT + c) + ',' + y + 'L' + (LEFT + Math.min(c + 1, plotW)) + ',' + y;
      }
      p.path.setAttribute('d', d + 'L' + (LEFT + plotW) + ',' + base + 'Z');
      for (const line of p.util.querySelectorAll('line.pct')) line.setAttribute('x2', LEFT + plotW);
    }
    const zoomed = a > 0 || b < SPAN;
    root.dataset.view = a.toFixed(3) + ',' + b.toFixed(3);
    rangeText.textContent = zoomed
        ? 'showing ' + duration(a) + ' to ' + duration(b) + ' of ' + duration(SPAN) + ' (' +
          (SPAN / (b - a)).toFixed(1) + '\u00d7)'
        : 'showing all ' + duration(SPAN);
  }

  function setView(a, b, remember) {
    let len = Math.min(SPAN, Math.max(MIN_VIEW, b - a));
    a = Math.min(Math.max(0, a), SPAN - len);
    view = [a, a + len];
    if (remember) {
      try {
        const whole = view[0] <= 0 && view[1] >= SPAN;
        history.replaceState(null, '', whole ? location.pathname + location.search
                                             : '#zoom=' + view[0].toFixed(3) + ',' + view[1].toFixed(3));
      } catch (e) { /* a page opened from a file may refuse; the view still changes */ }
    }
    draw();
  }
  function zoomBy(factor, centre) {
    const [a, b] = view;
    if (centre === undefined) centre = (a + b) / 2;
    setView(centre - (centre - a) * factor, centre + (b - centre) * factor, true);
  }
  function panBy(fraction) {
    const len = view[1] - view[0];
    setView(view[0] + fraction * len, view[1] + fraction * len, true);
  }
  function fromHash() {
    const m = /zoom=([-+0-9.eE]+),([-+0-9.eE]+)/.exec(location.hash);
    if (m && Number(m[2]) > Number(m[1])) setView(Number(m[1]), Number(m[2]), false);
    else setView(0, SPAN, false);
  }
  function timeAt(svg, clientX) {
    const x = clientX - svg.getBoundingClientRect().left - LEFT;
    return view[0] + Math.min(Math.max(x, 0), plotW) / plotW * (view[1] - view[0]);
  }

  for (const [id, f] of [['zoom-in', () => zoomBy(0.5)], ['zoom-out', () => zoomBy(2)],
                         ['pan-left', () => panBy(-0.25)], ['pan-right', () => panBy(0.25)],
                         ['zoom-reset', () => setView(0, SPAN, true)]])
    document.getElementById(id).addEventListener('click', f);
  bar.hidden = false;

  // Wheel: zoom about the pointer. Drag: pan. Shift-drag: zoom to the range dragged over.
  let drag = null;
  for (const p of pools)
    for (const svg of [p.gantt, p.util]) {
      svg.addEventListener('wheel', (e) => {
        e.preventDefault();
        zoomBy(Math.exp(Math.max(-1, Math.min(1, e.deltaY * 0.002))), timeAt(svg, e.clientX));
      }, {passive: false});
      svg.addEventListener('mousedown', (e) => {
        if (e.button !== 0) return;
        e.preventDefault();
        drag = {svg, x: e.clientX, view: view.slice(), select: e.shiftKey, box: null};
        if (drag.select) {
          drag.box = make('rect', {'class': 'selection', y: 0, height: svg.getAttribute('height'),
                                   x: e.clientX - svg.getBoundingClientRect().left, width: 0}, svg);
        }
      });
    }
  window.addEventListener('mousemove', (e) => {
    if (!drag) return;
    if (drag.select) {
      const left = drag.svg.getBoundingClientRect().left;
      drag.box.setAttribute('x', Math.min(drag.x, e.clientX) - left);
      drag.box.setAttribute('width', Math.abs(e.clientX - drag.x));
      return;
    }
    const dt = (e.clientX - drag.x) / plotW * (drag.view[1] - drag.view[0]);
    setView(drag.view[0] - dt, drag.view[1] - dt, true);
  });
  window.addEventListener('mouseup', (e) => {
    if (!drag) return;
    if (drag.select) {
      drag.box.remove();
      if (Math.abs(e.clientX - drag.x) > 3) {
        const t0 = timeAt(drag.svg, drag.x), t1 = timeAt(drag.svg, e.clientX);
        setView(Math.min(t0, t1), Math.max(t0, t1), true);
      }
    }
    drag = null;
  });
  let pending = false;
  window.addEventListener('resize', () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  });
  window.addEventListener('hashchange', fromHash);
  fromHash();
})();
)js";

std::string Page::render() {
  out_.clear();
  for (const Pool& pool : t_.pools) {
    utilisation_.push_back(utilisation(t_, pool, span_));
    capacity_.push_back(static_cast<double>(pool.lanes.size()) * (pool.t1 - pool.t0));
  }
  put("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<title>{} - mproc trace-view</title>\n<style>{}</style>\n</head>\n<body>\n",
      html_escape(file_name_), style);
  header();
  legend();
  std::string palette_list;
  for (const char* c : palette) palette_list += fmt::format("{}{}", palette_list.empty() ? "" : " ", c);
  put("<div id=\"timeline\" data-span=\"{:.3f}\" data-palette=\"{}\" data-failed=\"{}\">\n",
      span_, palette_list, failed_fill);
  put("<div id=\"zoombar\" hidden><button id=\"zoom-in\" title=\"Zoom in\">+</button>"
      "<button id=\"zoom-out\" title=\"Zoom out\">&minus;</button>"
      "<button id=\"pan-left\" title=\"Earlier\">&larr;</button>"
      "<button id=\"pan-right\" title=\"Later\">&rarr;</button>"
      "<button id=\"zoom-reset\" title=\"Show everything\">Reset</button>"
      "<span id=\"zoom-range\"></span> <span class=\"dim\">wheel: zoom, drag: pan, "
      "shift-drag: zoom to a range</span></div>\n");
  for (const Pool& pool : t_.pools) pool_section(pool);
  put("</div>\n");
  slowest();
  failures();
  put("<script>{}</script>\n</body>\n</html>\n", script);
  return std::move(out_);
}

int run(const Options& o) {
  const std::string output = o.output.empty() ? default_output(o.input) : o.output;
  std::error_code ec;
  if (fs::equivalent(o.input, output, ec))
    throw UsageError(fmt::format("the output '{}' is the input file", output));
  const std::uint64_t max_bytes = parse_size("--max-bytes", o.max_bytes, std::uint64_t{1} << 40);
  const Trace trace = read_trace(o.input, max_bytes);
  Page page(trace, fs::path(o.input).filename().string());
  write_file(output, page.render());
  if (!o.quiet)
    fmt::print(stderr, "mproc trace-view: wrote {} ({}, {}{})\n", output,
               counted(trace.spans.size(), "event"), counted(trace.lanes.size(), "lane"),
               trace.skipped > 0 ? fmt::format(", {} skipped", trace.skipped) : "");
  return ok;
}

}  // namespace

void add_trace_view(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("trace-view", "Draw a --trace file as an HTML timeline");
  cmd->add_option("file", o->input, "The trace: {\"traceEvents\": [...]} or a bare array")
      ->type_name("FILE")
      ->required();
  cmd->add_option("-o,--output", o->output,
                  "Where to write the page (default: FILE.html)")
      ->type_name("OUT.html");
  cmd->add_option("--max-bytes", o->max_bytes,
                  fmt::format("Refuse a trace over N bytes (default {}; K, M, G)", default_max_bytes))
      ->option_text("N");
  cmd->add_flag("--quiet", o->quiet, "No summary line on stderr");
  cmd->footer(
      "Draws a Chrome trace-event file (as --trace writes it) as one self-contained\n"
      "HTML page: a Gantt chart of each pool's workers, utilisation over time, the\n"
      "slowest tasks and the failures. The page loads nothing from the network.\n"
      "Wheel, drag and the buttons zoom and pan; OUT.html#zoom=START,END (in\n"
      "microseconds from the first start) opens a zoomed view.\n"
      "The default output is FILE with its extension replaced by .html.\n"
      "\n"
      "The input may be a pipe or a device: it is read as it is parsed, and reading\n"
      "stops at the first byte that cannot be JSON, or past --max-bytes.\n"
      "\n"
      "Exit codes: 0 success, 2 usage or input error (a file that cannot be read, is\n"
      "not JSON, is not a trace or is larger than --max-bytes, or an output that\n"
      "cannot be written).");
  cmd->callback([o, exit_code] { run_command("trace-view", exit_code, [&] { return run(*o); }); });
}

}  // namespace mproc::cli
