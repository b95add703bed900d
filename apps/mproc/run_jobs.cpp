// `mproc run`'s command line, input sources and replacement strings (see run_jobs.hpp).
// The meanings are GNU parallel's (man parallel), checked against its output; none of its
// code is used.
#include "run_jobs.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <functional>
#include <regex>
#include <string>
#include <utility>

#include <fmt/core.h>

namespace mproc::cli::run_detail {
namespace {

// ---------------------------------------------------------------------------------------
// Values

double parse_number(const std::string& s, const char* flag) {
  double v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end || !std::isfinite(v) || v < 0)
    throw UsageError(fmt::format("{}: not a non-negative number: '{}'", flag, s));
  return v;
}

long long parse_count(const std::string& s, const char* flag, long long max) {
  long long v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end || v < 0)
    throw UsageError(fmt::format("{}: not a non-negative integer: '{}'", flag, s));
  if (v > max) throw UsageError(fmt::format("{}: at most {}: '{}'", flag, max, s));
  return v;
}

/// Seconds, with GNU parallel's optional unit suffix (s, m, h, d).
double parse_seconds(std::string s, const char* flag) {
  if (!s.empty() && s.back() == '%')
    throw UsageError(fmt::format("{}: a percentage of the median runtime is not supported: '{}'",
                                 flag, s));
  double unit = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 's': unit = 1; break;
      case 'm': unit = 60; break;
      case 'h': unit = 3600; break;
      case 'd': unit = 86400; break;
      default: unit = 0;
    }
    if (unit != 0) s.pop_back();
    else unit = 1;
  }
  const double v = parse_number(s, flag) * unit;
  if (v > 1e9) throw UsageError(fmt::format("{}: at most 1e9 seconds: '{}'", flag, s));
  return v;
}

Halt parse_halt(const std::string& s) {
  Halt h;
  auto bad = [&] {
    return UsageError(fmt::format(
        "--halt: expected never, now|soon,fail|success|done=N[%] or 0, 1, 2, -1, -2: '{}'", s));
  };
  if (s == "never" || s == "0") return h;
  if (s == "1" || s == "2" || s == "-1" || s == "-2") {
    h.when = (s == "2" || s == "-2") ? Halt::When::now : Halt::When::soon;
    h.why = s[0] == '-' ? Halt::Why::success : Halt::Why::fail;
    h.count = 1;
    return h;
  }
  const auto comma = s.find(',');
  std::string why;
  if (comma == std::string::npos) {  // "1-99%": soon,fail=N%
    if (s.empty() || s.back() != '%') throw bad();
    h.when = Halt::When::soon;
    why = "fail=" + s;
  } else {
    const std::string when = s.substr(0, comma);
    if (when == "now") h.when = Halt::When::now;
    else if (when == "soon") h.when = Halt::When::soon;
    else throw bad();
    why = s.substr(comma + 1);
  }
  const auto eq = why.find('=');
  if (eq == std::string::npos) throw bad();
  const std::string kind = why.substr(0, eq);
  std::string n = why.substr(eq + 1);
  if (kind == "fail") h.why = Halt::Why::fail;
  else if (kind == "success") h.why = Halt::Why::success;
  else if (kind == "done") h.why = Halt::Why::done;
  else throw bad();
  if (!n.empty() && n.back() == '%') {
    h.percent = true;
    n.pop_back();
  }
  h.count = parse_number(n, "--halt");
  if (h.count <= 0 || (h.percent && h.count > 100)) throw bad();
  return h;
}

/// The items of `text`: separated by newlines (NULs with -0), empty ones skipped.
std::vector<std::string> split_items(const std::string& text, char sep) {
  std::vector<std::string> items;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find(sep, pos);
    if (end == std::string::npos) end = text.size();
    if (end > pos) items.emplace_back(text, pos, end - pos);
    pos = end + 1;
  }
  return items;
}

std::string read_fd(int fd, const std::string& what) {
  std::string text;
  char buf[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) text.append(buf, static_cast<std::size_t>(n));
    else if (n == 0) break;
    else if (errno != EINTR)
      throw UsageError(fmt::format("cannot read {}: {}", what, std::strerror(errno)));
  }
  return text;
}

/// The items of an input file ("-": stdin).
std::vector<std::string> read_items(const std::string& path, char sep) {
  if (path == "-") {
    if (::isatty(STDIN_FILENO) == 1)
      fmt::print(stderr,
                 "mproc run: warning: reading arguments from the terminal; did you forget "
                 ":::, :::: or a pipe? (end with CTRL-D)\n");
    return split_items(read_fd(STDIN_FILENO, "arguments from stdin"), sep);
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw UsageError(fmt::format("cannot open input file '{}': {}", path, std::strerror(errno)));
  std::string text;
  try {
    text = read_fd(fd, fmt::format("input file '{}'", path));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return split_items(text, sep);
}

bool is_separator(std::string_view w) {
  return w == ":::" || w == ":::+" || w == "::::" || w == "::::+";
}

// ---------------------------------------------------------------------------------------
// Replacement strings

enum class Kind { text, all, positional, seq, slot, total };
enum class Mod { none, ext, base, dir, base_ext };  // {.} {/} {//} {/.}

struct Piece {
  Kind kind = Kind::text;
  std::string text;
  long index = 0;  // positional: 1-based, negative counts from the end
  Mod mod = Mod::none;
};

std::optional<Mod> parse_mod(std::string_view m) {
  if (m.empty()) return Mod::none;
  if (m == ".") return Mod::ext;
  if (m == "/") return Mod::base;
  if (m == "//") return Mod::dir;
  if (m == "/.") return Mod::base_ext;
  return std::nullopt;
}

/// `inner` (what is between { and }) as a replacement string, or nothing (literal text).
std::optional<Piece> parse_replacement(std::string_view inner) {
  Piece p;
  if (inner == "#") p.kind = Kind::seq;
  else if (inner == "%") p.kind = Kind::slot;
  else if (inner == "##") p.kind = Kind::total;
  else if (auto all = parse_mod(inner)) {
    p.kind = Kind::all;
    p.mod = *all;
  } else {
    std::size_t i = inner.size() > 0 && inner[0] == '-' ? 1 : 0;
    const std::size_t digits = i;
    while (i < inner.size() && inner[i] >= '0' && inner[i] <= '9') ++i;
    if (i == digits) return std::nullopt;
    auto m = parse_mod(inner.substr(i));
    if (!m) return std::nullopt;
    long n = 0;
    std::from_chars(inner.data() + digits, inner.data() + i, n);
    if (n == 0) return std::nullopt;
    p.kind = Kind::positional;
    p.index = digits == 1 ? -n : n;
    p.mod = *m;
  }
  return p;
}

std::vector<Piece> parse_word(const std::string& w) {
  std::vector<Piece> out;
  std::string text;
  for (std::size_t pos = 0; pos < w.size();) {
    const std::size_t open = w.find('{', pos);
    if (open == std::string::npos) {
      text.append(w, pos);
      break;
    }
    text.append(w, pos, open - pos);
    const std::size_t close = w.find('}', open + 1);
    if (w.compare(open, 2, "{=") == 0)
      throw UsageError(fmt::format("perl expressions in replacement strings ({{= ... =}}) are "
                                   "not supported: '{}'", w));
    if (close == std::string::npos) {
      text.append(w, open);
      break;
    }
    if (auto p = parse_replacement(std::string_view(w).substr(open + 1, close - open - 1))) {
      if (!text.empty()) out.push_back({Kind::text, std::move(text), 0, Mod::none});
      text.clear();
      out.push_back(std::move(*p));
      pos = close + 1;
    } else {
      text += '{';
      pos = open + 1;
    }
  }
  if (!text.empty() || out.empty()) out.push_back({Kind::text, std::move(text), 0, Mod::none});
  return out;
}

using Word = std::vector<Piece>;

/// The template: one Word per command word, with " {}" appended when it has no
/// replacement string at all (GNU parallel's rule).
std::vector<Word> parse_template(const std::vector<std::string>& command) {
  std::vector<Word> words;
  bool any = false;
  for (const auto& w : command) {
    words.push_back(parse_word(w));
    for (const auto& p : words.back()) any = any || p.kind != Kind::text;
  }
  if (!any) words.push_back({Piece{Kind::all, {}, 0, Mod::none}});
  return words;
}

std::string_view basename_of(std::string_view s) {
  const auto slash = s.rfind('/');
  return slash == std::string_view::npos ? s : s.substr(slash + 1);
}

/// Removes the extension: the last '.' of the last path component and what follows it.
std::string_view strip_ext(std::string_view s) {
  const auto dot = s.rfind('.');
  if (dot == std::string_view::npos) return s;
  if (s.find('/', dot) != std::string_view::npos) return s;
  return s.substr(0, dot);
}

/// POSIX dirname(1).
std::string dirname_of(std::string_view s) {
  while (s.size() > 1 && s.back() == '/') s.remove_suffix(1);
  if (s.empty()) return ".";
  if (s == "/") return "/";
  const auto slash = s.rfind('/');
  if (slash == std::string_view::npos) return ".";
  s = s.substr(0, slash);
  while (s.size() > 1 && s.back() == '/') s.remove_suffix(1);
  return s.empty() ? "/" : std::string(s);
}

std::string apply_mod(std::string_view v, Mod m) {
  switch (m) {
    case Mod::none: return std::string(v);
    case Mod::ext: return std::string(strip_ext(v));
    case Mod::base: return std::string(basename_of(v));
    case Mod::dir: return dirname_of(v);
    case Mod::base_ext: return std::string(strip_ext(basename_of(v)));
  }
  return std::string(v);
}

struct Context {
  const std::vector<std::string>* args;
  std::size_t seq, slot, total;
};

/// The values a piece stands for: one, or (for {} and its variants) one per argument.
std::vector<std::string> values_of(const Piece& p, const Context& c) {
  switch (p.kind) {
    case Kind::text: return {p.text};
    case Kind::seq: return {std::to_string(c.seq)};
    case Kind::slot: return {std::to_string(c.slot)};
    case Kind::total: return {std::to_string(c.total)};
    case Kind::positional: {
      const long n = static_cast<long>(c.args->size());
      const long i = p.index > 0 ? p.index - 1 : n + p.index;
      if (i < 0 || i >= n) return {};  // nothing, not an empty word (GNU parallel's)
      return {apply_mod((*c.args)[static_cast<std::size_t>(i)], p.mod)};
    }
    case Kind::all: {
      std::vector<std::string> v;
      for (const auto& a : *c.args) v.push_back(apply_mod(a, p.mod));
      return v;
    }
  }
  return {};
}

bool has_all(const Word& w) {
  return std::any_of(w.begin(), w.end(), [](const Piece& p) { return p.kind == Kind::all; });
}

/// A word made argv words: a value list ({} of several arguments) breaks the word between
/// its values, as the shell splits GNU parallel's quoted values joined with spaces.
/// A word made of nothing but missing values ({3} of two arguments) is no word at all.
void expand_word(const Word& w, const Context& c, std::vector<std::string>& out) {
  std::string cur;
  bool any = false;
  for (const auto& p : w) {
    if (p.kind == Kind::text) {
      cur += p.text;
      any = any || !p.text.empty();
      continue;
    }
    const auto v = values_of(p, c);
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i > 0) out.push_back(std::exchange(cur, {}));
      cur += v[i];
      any = true;
    }
  }
  if (any) out.push_back(std::move(cur));
}

/// A word as shell text: literal text verbatim, each value quoted (unless `quote` is
/// false), values of a list joined with spaces.
std::string shell_word(const Word& w, const Context& c, bool quote) {
  std::string out;
  for (const auto& p : w) {
    if (p.kind == Kind::text) {
      out += p.text;
      continue;
    }
    const auto v = values_of(p, c);
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i > 0) out += ' ';
      out += quote ? shell_quote(v[i]) : v[i];
    }
  }
  return out;
}

/// -X: a word holding {} is repeated once per argument, each copy with one argument.
template <class F>
void per_context(const Word& w, const Context& c, bool context, F&& emit) {
  if (!context || !has_all(w) || c.args->size() <= 1) {
    emit(c);
    return;
  }
  for (const auto& a : *c.args) {
    const std::vector<std::string> one{a};
    emit(Context{&one, c.seq, c.slot, c.total});
  }
}

/// The template as one line of shell words: the command words joined with spaces, then
/// split at the spaces inside them, so that -X's context is a shell word as in GNU
/// parallel.
std::vector<Word> shell_words(const std::vector<Word>& words) {
  std::vector<Word> out(1);
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out.emplace_back();
    for (const auto& p : words[i]) {
      if (p.kind != Kind::text) {
        out.back().push_back(p);
        continue;
      }
      std::size_t pos = 0;
      for (std::size_t sp; (sp = p.text.find(' ', pos)) != std::string::npos; pos = sp + 1) {
        if (sp > pos) out.back().push_back({Kind::text, p.text.substr(pos, sp - pos), 0, Mod::none});
        out.emplace_back();
      }
      if (pos < p.text.size()) out.back().push_back({Kind::text, p.text.substr(pos), 0, Mod::none});
    }
  }
  return out;
}

/// The command line. GNU parallel's exception: when the command starts with a replacement
/// string, no value is quoted (`{} ::: "echo a"` runs echo).
std::string render_line(const std::vector<Word>& words, const Context& c, bool context) {
  const bool quote = words.empty() || words[0].empty() || words[0][0].kind == Kind::text;
  std::string line;
  for (const auto& w : shell_words(words))
    per_context(w, c, context, [&](const Context& one) {
      if (!line.empty()) line += ' ';
      line += shell_word(w, one, quote);
    });
  return line;
}

struct Spec {
  std::vector<std::string_view> names;
  bool value;
  std::function<void(Options&, const std::string&)> set;
};

const std::vector<Spec>& option_specs() {
  using O = Options;
  static const std::vector<Spec> specs{
      {{"-j", "-P", "--jobs", "--max-procs", "--workers"}, true,
       [](O& o, const std::string& v) { o.jobs = v; }},
      {{"--timeout"}, true, [](O& o, const std::string& v) { o.timeout = parse_seconds(v, "--timeout"); }},
      {{"--delay"}, true, [](O& o, const std::string& v) { o.delay = parse_seconds(v, "--delay"); }},
      {{"--retries"}, true,
       [](O& o, const std::string& v) { o.retries = static_cast<int>(parse_count(v, "--retries", 1'000'000)); }},
      {{"--joblog"}, true,
       [](O& o, const std::string& v) {
         o.joblog_append = v.size() > 1 && v[0] == '+';
         o.joblog = o.joblog_append ? v.substr(1) : v;
       }},
      {{"--trace"}, true, [](O& o, const std::string& v) { o.trace = v; }},
      {{"--results", "--res"}, true, [](O& o, const std::string& v) { o.results = v; }},
      {{"-k", "--keep-order"}, false, [](O& o, const std::string&) { o.keep_order = true; }},
      {{"--shell"}, false, [](O& o, const std::string&) { o.shell = true; }},
      {{"--dry-run", "--dryrun"}, false, [](O& o, const std::string&) { o.dry_run = true; }},
      {{"--halt", "--halt-on-error"}, true, [](O& o, const std::string& v) { o.halt = parse_halt(v); }},
      {{"--tag"}, false, [](O& o, const std::string&) { o.tag = true; }},
      {{"-N", "-n", "--max-args"}, true,
       [](O& o, const std::string& v) {
         o.max_args = static_cast<std::size_t>(parse_count(v, "-N", 1'000'000));
         if (o.max_args == 0) throw UsageError("-N 0 (no arguments per job) is not supported");
       }},
      {{"-X"}, false, [](O& o, const std::string&) { o.multi = Options::Multi::context; }},
      {{"-m"}, false, [](O& o, const std::string&) { o.multi = Options::Multi::plain; }},
      {{"--colsep", "-C"}, true, [](O& o, const std::string& v) { o.colsep = v; }},
      {{"--line-buffer", "--lb"}, false, [](O& o, const std::string&) { o.output = OutputMode::line_buffer; }},
      {{"--group"}, false, [](O& o, const std::string&) { o.output = OutputMode::group; }},
      {{"-u", "--ungroup"}, false, [](O& o, const std::string&) { o.output = OutputMode::ungroup; }},
      {{"-0", "--null"}, false, [](O& o, const std::string&) { o.null_sep = true; }},
      {{"--bar"}, false, [](O& o, const std::string&) { o.progress = Progress::bar; }},
      {{"--eta"}, false, [](O& o, const std::string&) { o.progress = Progress::eta; }},
      {{"--progress"}, false, [](O& o, const std::string&) { o.progress = Progress::progress; }},
      {{"-a", "--arg-file"}, true,
       [](O& o, const std::string& v) { o.arg_files.push_back(v); }},
      {{"--will-cite", "--no-notice"}, false, [](O&, const std::string&) {}},
      {{"-h", "--help"}, false, [](O& o, const std::string&) { o.help = true; }},
  };
  return specs;
}

const Spec* find_spec(std::string_view name) {
  for (const auto& s : option_specs())
    if (std::find(s.names.begin(), s.names.end(), name) != s.names.end()) return &s;
  return nullptr;
}

}  // namespace

std::string shell_quote(std::string_view s) {
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '+' || c == '-' || c == '/' || c == '.';
  });
  if (plain) return std::string(s);
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\"'\"'") : std::string(1, c);
  out += '\'';
  // A leading or trailing quote leaves an empty '' behind: drop it, as GNU parallel does.
  if (out.size() > 2 && out.compare(0, 2, "''") == 0) out.erase(0, 2);
  if (out.size() > 2 && out.compare(out.size() - 2, 2, "''") == 0) out.resize(out.size() - 2);
  return out;
}

Options parse_options(const std::vector<std::string>& args) {
  Options o;
  std::size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;
    auto take_value = [&](const std::string& name) -> std::string {
      if (i + 1 >= args.size()) throw UsageError(fmt::format("option '{}' needs a value", name));
      return args[++i];
    };
    auto apply = [&](const Spec& s, const std::string& v) { s.set(o, v); };
    if (a.compare(0, 2, "--") == 0) {
      const auto eq = a.find('=');
      const std::string name = a.substr(0, eq);
      const Spec* s = find_spec(name);
      if (s == nullptr)
        throw UsageError(fmt::format("unknown or unsupported option '{}' (see mproc run --help)", name));
      if (!s->value && eq != std::string::npos)
        throw UsageError(fmt::format("option '{}' takes no value", name));
      apply(*s, s->value ? (eq != std::string::npos ? a.substr(eq + 1) : take_value(name)) : "");
      continue;
    }
    for (std::size_t k = 1; k < a.size(); ++k) {  // -kX, -j4, -j 4
      const std::string name = std::string("-") + a[k];
      const Spec* s = find_spec(name);
      if (s == nullptr)
        throw UsageError(fmt::format("unknown or unsupported option '{}' (see mproc run --help)", name));
      if (s->value) {
        apply(*s, k + 1 < a.size() ? a.substr(k + 1) : take_value(name));
        break;
      }
      apply(*s, "");
    }
  }
  if (o.help) return o;
  const char sep = o.null_sep ? '\0' : '\n';
  for (const auto& f : o.arg_files) o.sources.push_back({read_items(f, sep), false});
  for (; i < args.size() && !is_separator(args[i]); ++i) o.command.push_back(args[i]);
  while (i < args.size()) {
    const std::string kind = args[i++];
    const bool files = kind.size() >= 4 && kind.compare(0, 4, "::::") == 0;
    bool linked = kind.back() == '+';
    if (linked && o.sources.empty())
      throw UsageError(fmt::format("'{}' links to an input source before it, and there is none", kind));
    if (!files) o.sources.push_back({{}, linked});
    for (; i < args.size() && !is_separator(args[i]); ++i) {
      if (files) {
        o.sources.push_back({read_items(args[i], sep), linked});
        linked = false;  // ::::+ a b: a links to the source before, b is a new one
      } else {
        o.sources.back().values.push_back(args[i]);
      }
    }
  }
  if (o.command.empty())
    throw UsageError("no command given (usage: mproc run [OPTIONS] [--] CMD [ARGS...] ::: ARG...)");
  // The template is checked now, so that a bad one fails before anything runs.
  (void)parse_template(o.command);
  if (o.colsep) {
    try {
      (void)std::regex(*o.colsep);
    } catch (const std::regex_error& e) {
      throw UsageError(fmt::format("--colsep: not a regular expression: '{}': {}", *o.colsep, e.what()));
    }
  }
  return o;
}

unsigned parse_jobs(const std::string& s, unsigned cpus, unsigned unlimited) {
  const auto bad = [&] {
    return UsageError(fmt::format("--jobs: expected N, N%, +N, -N or 0: '{}'", s));
  };
  if (s.empty()) throw bad();
  double n = 0;
  if (s.back() == '%') {
    const std::string num = s.substr(0, s.size() - 1);
    try {
      n = std::floor(cpus * parse_number(num, "--jobs") / 100.0);
    } catch (const UsageError&) {
      throw bad();
    }
    return static_cast<unsigned>(std::clamp(n, 1.0, 1e6));
  }
  if (s[0] == '+' || s[0] == '-') {
    long long d = 0;
    try {
      d = parse_count(s.substr(1), "--jobs", 1'000'000);
    } catch (const UsageError&) {
      throw bad();
    }
    const long long v = s[0] == '+' ? cpus + d : static_cast<long long>(cpus) - d;
    return static_cast<unsigned>(std::max(v, 1LL));
  }
  long long v = 0;
  try {
    v = parse_count(s, "--jobs", 1'000'000);
  } catch (const UsageError&) {
    throw bad();
  }
  return v == 0 ? unlimited : static_cast<unsigned>(v);
}

std::vector<JobInput> make_inputs(Options& o, unsigned slots) {
  if (o.sources.empty()) o.sources.push_back({read_items("-", o.null_sep ? '\0' : '\n'), false});
  std::optional<std::regex> colsep;
  if (o.colsep) colsep.emplace(*o.colsep);
  auto columns = [&](const std::string& v) {
    if (!colsep) return std::vector<std::string>{v};
    std::vector<std::string> cols(std::sregex_token_iterator(v.begin(), v.end(), *colsep, -1),
                                  std::sregex_token_iterator());
    if (cols.empty()) cols.emplace_back();
    return cols;
  };
  // Linked sources (:::+) form one group, item i of each side by side, as long as the
  // shortest; the groups combine in every way, the first group varying slowest.
  using Record = std::vector<std::string>;
  std::vector<std::vector<Record>> groups;
  for (const auto& s : o.sources) {
    if (!s.linked) {
      std::vector<Record> g;
      for (const auto& v : s.values) g.push_back(columns(v));
      groups.push_back(std::move(g));
      continue;
    }
    auto& g = groups.back();
    g.resize(std::min(g.size(), s.values.size()));
    for (std::size_t k = 0; k < g.size(); ++k) {
      auto cols = columns(s.values[k]);
      g[k].insert(g[k].end(), cols.begin(), cols.end());
    }
  }
  std::vector<Record> records;
  if (std::none_of(groups.begin(), groups.end(), [](const auto& g) { return g.empty(); })) {
    std::vector<std::size_t> at(groups.size(), 0);
    for (;;) {
      Record r;
      for (std::size_t g = 0; g < groups.size(); ++g)
        r.insert(r.end(), groups[g][at[g]].begin(), groups[g][at[g]].end());
      records.push_back(std::move(r));
      std::size_t g = groups.size();
      while (g > 0 && ++at[g - 1] == groups[g - 1].size()) at[--g] = 0;
      if (g == 0) break;
    }
  }
  if (records.empty()) throw UsageError("no arguments (give them after ::: or on stdin)");

  // Records per job: -N, or for -X / -m as many as spread the records evenly over the job
  // slots and keep the command line under the kernel's limit for one argument (128 KiB).
  std::vector<std::size_t> sizes;
  if (o.max_args > 0) {
    for (std::size_t left = records.size(); left > 0; left -= std::min(left, o.max_args))
      sizes.push_back(std::min(left, o.max_args));
  } else if (o.multi != Options::Multi::none) {
    const std::size_t limit = 128 * 1024 - 4096;
    std::size_t base = 0;
    for (const auto& w : o.command) base += w.size() + 1;
    const std::size_t per = (records.size() + slots - 1) / std::max(slots, 1u);
    for (std::size_t at = 0; at < records.size();) {
      std::size_t n = 0, bytes = base;
      while (at + n < records.size() && n < per) {
        std::size_t b = 0;
        for (const auto& c : records[at + n]) b += c.size() * 2 + 3;  // quoted, worst case
        if (n > 0 && bytes + b > limit) break;
        bytes += b;
        ++n;
      }
      sizes.push_back(n);
      at += n;
    }
  } else {
    sizes.assign(records.size(), 1);
  }
  std::vector<JobInput> jobs;
  jobs.reserve(sizes.size());
  std::size_t at = 0;
  for (std::size_t n : sizes) {
    JobInput in;
    in.seq = jobs.size() + 1;
    for (std::size_t k = 0; k < n; ++k, ++at)
      in.args.insert(in.args.end(), std::make_move_iterator(records[at].begin()),
                     std::make_move_iterator(records[at].end()));
    jobs.push_back(std::move(in));
  }
  return jobs;
}

Rendered render(const Options& o, const JobInput& in, std::size_t slot, std::size_t total) {
  const auto words = parse_template(o.command);
  const Context c{&in.args, in.seq, slot, total};
  const bool context = o.multi == Options::Multi::context;
  Rendered r;
  r.line = render_line(words, c, context);
  if (o.shell) {
    r.argv = {"/bin/sh", "-c", r.line};
    return r;
  }
  for (const auto& w : words)
    per_context(w, c, context, [&](const Context& one) { expand_word(w, one, r.argv); });
  return r;
}

std::string tag_of(const JobInput& in) {
  std::string t;
  for (std::size_t i = 0; i < in.args.size(); ++i) {
    if (i > 0) t += ' ';
    t += in.args[i];
  }
  return t;
}

std::string results_dir(const std::string& base, const JobInput& in) {
  std::string dir = base;
  for (std::size_t i = 0; i < in.args.size(); ++i) {
    std::string v;
    for (char c : in.args[i]) {
      if (c == '/') v += "\\_";
      else if (c == '\\') v += "\\\\";
      else v += c;
    }
    dir += fmt::format("/{}/{}", i + 1, v);
  }
  return dir;
}

}  // namespace mproc::cli::run_detail
