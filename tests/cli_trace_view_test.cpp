// `mproc trace-view` run as a real program on traces the test writes: the page it draws
// (one Gantt rect per event, the slowest and the failed tasks, utilisation figures worked
// out by hand), that the page is self-contained and escapes what it quotes from the file,
// the one-line errors for bad input, and a render in headless Chromium whose screenshot
// is decoded here and its pixels counted.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "browser.hpp"
#include "cli_runner.hpp"
#include "sanitizers.hpp"

namespace {

namespace fs = std::filesystem;
using cli_test::decode_png;
using cli_test::find_chromium;
using cli_test::Image;
using cli_test::non_background_fraction;
using cli_test::pixels_near;

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

std::string repeat(const std::string& s, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += s;
  return out;
}

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size()))
    ++n;
  return n;
}

/// The text between `open` and the next `close` after it ("" when `open` is missing).
std::string between(const std::string& text, const std::string& open, const std::string& close) {
  const std::size_t a = text.find(open);
  if (a == std::string::npos) return "";
  const std::size_t b = text.find(close, a + open.size());
  return text.substr(a + open.size(),
                     b == std::string::npos ? std::string::npos : b - a - open.size());
}

/// The <tr> rows of the table with this id.
std::vector<std::string> table_rows(const std::string& html, const std::string& id) {
  const std::string body = between(html, "<table id=\"" + id + "\"", "</table>");
  const std::string rows = between(body, "<tbody>", "</tbody>");
  std::vector<std::string> out;
  for (std::size_t at = rows.find("<tr>"); at != std::string::npos; at = rows.find("<tr>", at + 4))
    out.push_back(rows.substr(at, rows.find("</tr>", at) - at));
  return out;
}

// ---------------------------------------------------------------------------------------
// Trace text

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

std::string meta(const std::string& what, int pid, int tid, const std::string& name) {
  return R"({"ph":"M","name":")" + what + R"(","pid":)" + std::to_string(pid) + R"(,"tid":)" +
         std::to_string(tid) + R"(,"args":{"name":")" + name + "\"}}";
}

/// A complete event; `args` is the inside of the args object.
std::string x_event(const std::string& name, int pid, int tid, double ts, double dur,
                    const std::string& args) {
  return R"({"ph":"X","name":")" + name + R"(","cat":"chunk","pid":)" + std::to_string(pid) +
         R"(,"tid":)" + std::to_string(tid) + R"(,"ts":)" + number(ts) + R"(,"dur":)" +
         number(dur) + R"(,"args":{)" + args + "}}";
}

std::string object_trace(const std::vector<std::string>& events) {
  std::string out = "{\"traceEvents\":[\n";
  for (std::size_t i = 0; i < events.size(); ++i) out += (i ? ",\n" : "") + events[i];
  out += "\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"producer\":\"mproc test\"}}\n";
  return out;
}

/// Two pools, three lanes, six events with known times (microseconds):
///   pool 1 worker 0: map [0, 1000) ok, map [1000, 3000) ok
///   pool 1 worker 1: map [0, 1500) ok, map [1500, 2200) crashed at item 342
///   pool 2 worker 0: apply [3000, 3250) error (1 raised), submit [3300, 7500) ok
/// Utilisation: pool 1 5200 / (2 x 3000) = 86.7%, pool 2 4450 / 4500 = 98.9%,
/// overall 9650 / 10500 = 91.9%.
std::string two_pool_trace() {
  const std::string bytes = R"("bytes_in":800,"bytes_out":800,"worker_pid":4242,)";
  return object_trace({
      meta("process_name", 1, 0, "Pool 1: process backend, 2 workers"),
      meta("thread_name", 1, 0, "worker 0"),
      meta("thread_name", 1, 1, "worker 1"),
      meta("process_name", 2, 0, "Pool 2: thread backend, 1 worker"),
      meta("thread_name", 2, 0, "worker 0"),
      x_event("map", 1, 0, 0, 1000,
              R"("job":1,"first":0,"items":100,)" + bytes + R"("errors":0,"status":"ok")"),
      x_event("map", 1, 0, 1000, 2000,
              R"("job":1,"first":100,"items":100,)" + bytes + R"("errors":0,"status":"ok")"),
      x_event("map", 1, 1, 0, 1500,
              R"("job":1,"first":200,"items":100,)" + bytes + R"("errors":0,"status":"ok")"),
      x_event("map", 1, 1, 1500, 700,
              R"("job":1,"first":300,"items":100,)" + bytes +
                  R"("errors":0,"status":"crashed","failed_index":342,)"
                  R"("label":"chunk of blocks 300-399")"),
      x_event("apply", 2, 0, 3000, 250,
              R"("job":1,"first":0,"items":1,"errors":1,"status":"error")"),
      x_event("submit", 2, 0, 3300, 4200,
              R"("job":2,"first":0,"items":1,"errors":0,"status":"ok")"),
  });
}

// ---------------------------------------------------------------------------------------

/// A fresh directory per test, removed afterwards.
class TraceView : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string name = "mproc-trace-view-";
    name += std::to_string(::getpid());
    name += '-';
    name += ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = fs::temp_directory_path() / name;
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
    return dir_ / name;
  }

  /// Writes `trace`, draws it into page.html and returns the page; expects success.
  std::string draw(const std::string& trace, cli_test::Result* result = nullptr) {
    const fs::path in = write("trace.json", trace), out = dir_ / "page.html";
    const cli_test::Result r = cli_test::mproc({"trace-view", in.string(), "-o", out.string()});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(cli_test::lines(r.err), 1u) << r.err;
    if (result != nullptr) *result = r;
    return slurp(out);
  }

  /// Expects exit code 2 and one line on stderr that starts with "mproc trace-view: " and
  /// contains `what`.
  static void expect_input_error(const cli_test::Result& r, const std::string& what) {
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(cli_test::lines(r.err), 1u) << r.err;
    EXPECT_EQ(r.err.rfind("mproc trace-view: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << "expected '" << what << "' in: " << r.err;
  }

  fs::path dir_;
};

TEST_F(TraceView, DrawsOneRectPerEventAndTheTotals) {
  cli_test::Result r;
  const std::string html = draw(two_pool_trace(), &r);
  EXPECT_EQ(r.err,
            "mproc trace-view: wrote " + (dir_ / "page.html").string() + " (6 events, 3 lanes)\n");
  EXPECT_EQ(count(html, "<rect class=\"task\""), 4u);
  EXPECT_EQ(count(html, "<rect class=\"task failed\""), 2u);
  EXPECT_EQ(count(html, "<svg class=\"gantt\""), 2u);
  EXPECT_EQ(count(html, "<svg class=\"utilisation\""), 2u);
  EXPECT_NE(html.find("<h2>Pool 1: process backend, 2 workers</h2>"), std::string::npos);
  EXPECT_NE(html.find("<h2>Pool 2: thread backend, 1 worker</h2>"), std::string::npos);
  EXPECT_EQ(count(html, ">worker 0<title>"), 2u);
  EXPECT_EQ(count(html, ">worker 1<title>"), 1u);

  EXPECT_NE(html.find("id=\"sum-tasks\">6<"), std::string::npos);
  EXPECT_NE(html.find("id=\"sum-lanes\">3<"), std::string::npos);
  EXPECT_NE(html.find("id=\"sum-pools\">2<"), std::string::npos);
  EXPECT_NE(html.find("id=\"sum-span\">7.50 ms<"), std::string::npos);
  EXPECT_NE(html.find("id=\"sum-items\">402<"), std::string::npos);
  EXPECT_NE(html.find("id=\"sum-failures\">2 failed tasks (1 item raised)<"), std::string::npos);
  EXPECT_NE(html.find("id=\"sum-producer\">mproc test<"), std::string::npos);

  // The crashed chunk's tooltip.
  const std::string crashed = between(html, "<rect class=\"task failed\"", "</rect>");
  EXPECT_NE(crashed.find("fill=\"#d62728\""), std::string::npos) << crashed;
  EXPECT_NE(crashed.find("map (Pool 1: process backend, 2 workers, worker 1)"), std::string::npos)
      << crashed;
  EXPECT_NE(crashed.find("items 300..399 (100)"), std::string::npos) << crashed;
  EXPECT_NE(crashed.find("start 1.50 ms, duration 700.0 \u00b5s"), std::string::npos) << crashed;
  EXPECT_NE(crashed.find("bytes in 800 B, out 800 B"), std::string::npos) << crashed;
  EXPECT_NE(crashed.find("status crashed, failed at item 342"), std::string::npos) << crashed;
}

TEST_F(TraceView, UtilisationOfKnownLayouts) {
  const std::string html = draw(two_pool_trace());
  EXPECT_NE(html.find("id=\"util-1\">86.7%<"), std::string::npos);
  EXPECT_NE(html.find("id=\"util-2\">98.9%<"), std::string::npos);
  EXPECT_NE(html.find("id=\"sum-utilisation\">91.9% "), std::string::npos);

  // Two lanes, one busy over the whole span (two overlapping events, counted once) and one
  // for its first half: 75%, and the chart is at 100% then 50%.
  const std::string half = draw(object_trace({
      x_event("map", 1, 0, 0, 600, ""),
      x_event("map", 1, 0, 400, 600, ""),
      x_event("map", 1, 1, 0, 500, ""),
  }));
  EXPECT_NE(half.find("id=\"util-1\">75.0%<"), std::string::npos);
  EXPECT_NE(half.find("id=\"sum-utilisation\">75.0% "), std::string::npos);
  const std::string path = between(half, "<path class=\"area\" d=\"", "\"");
  ASSERT_FALSE(path.empty());
  // The chart is 80 px high with its base at y = 88: 100% is y = 8, 50% is y = 48.
  std::set<std::string> ys;
  const std::regex point(R"(([0-9.]+),([0-9.]+))");
  for (auto it = std::sregex_iterator(path.begin(), path.end(), point);
       it != std::sregex_iterator(); ++it)
    ys.insert((*it)[2]);
  EXPECT_EQ(ys, (std::set<std::string>{"8.0", "48.0", "88.0"})) << path;
}

TEST_F(TraceView, SlowestTasksLongestFirst) {
  const std::string html = draw(two_pool_trace());
  const auto rows = table_rows(html, "slowest");
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_NE(rows[0].find("submit"), std::string::npos) << rows[0];
  EXPECT_NE(rows[0].find(">4.20 ms<"), std::string::npos) << rows[0];
  EXPECT_NE(rows[0].find("Pool 2: thread backend, 1 worker"), std::string::npos) << rows[0];
  EXPECT_NE(rows[1].find(">2.00 ms<"), std::string::npos) << rows[1];
  EXPECT_NE(rows[1].find(">100..199 (100)<"), std::string::npos) << rows[1];
  EXPECT_NE(rows[1].find(">800 B<"), std::string::npos) << rows[1];
  EXPECT_NE(rows[2].find(">1.50 ms<"), std::string::npos) << rows[2];
  EXPECT_NE(rows[5].find(">250.0 \u00b5s<"), std::string::npos) << rows[5];
}

TEST_F(TraceView, FailuresTableListsTheFailedEvents) {
  const std::string html = draw(two_pool_trace());
  const auto rows = table_rows(html, "failures");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_NE(rows[0].find("crashed at item 342"), std::string::npos) << rows[0];
  EXPECT_NE(rows[0].find(">300..399 (100)<"), std::string::npos) << rows[0];
  EXPECT_NE(rows[0].find(">worker 1<"), std::string::npos) << rows[0];
  EXPECT_NE(rows[1].find(">apply<"), std::string::npos) << rows[1];
  EXPECT_NE(rows[1].find("error (1 raised)"), std::string::npos) << rows[1];
  EXPECT_EQ(html.find("id=\"no-failures\""), std::string::npos);

  const std::string clean = draw(object_trace({x_event("map", 1, 0, 0, 10, R"("status":"ok")")}));
  EXPECT_NE(clean.find("<p id=\"no-failures\">none</p>"), std::string::npos);

  // Capped at 100 rows, with a count of the rest.
  std::vector<std::string> events;
  for (int i = 0; i < 150; ++i)
    events.push_back(
        x_event("submit", 1, i % 3, i * 10.0, 5, R"("status":"cancelled","failed_index":0)"));
  const std::string many = draw(object_trace(events));
  EXPECT_EQ(table_rows(many, "failures").size(), 100u);
  EXPECT_NE(many.find("and 50 more failed tasks"), std::string::npos);
}

TEST_F(TraceView, PageIsSelfContained) {
  std::string html = draw(two_pool_trace());
  std::transform(html.begin(), html.end(), html.begin(), [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  });
  // One inline script (zoom and pan), nothing it could load.
  EXPECT_EQ(count(html, "<script"), 1u);
  EXPECT_NE(html.find("<script>"), std::string::npos);
  for (const char* banned : {"<link", "<img", "<iframe", "<object", "<embed", "<image",
                             "src=", "href=", "url(", "@import", "://"})
    EXPECT_EQ(html.find(banned), std::string::npos) << banned;
  EXPECT_NE(html.find("<style>"), std::string::npos);
  EXPECT_EQ(html.rfind("<!doctype html>", 0), 0u);
}

TEST_F(TraceView, EscapesWhatItQuotes) {
  const std::string html = draw(object_trace({
      meta("process_name", 1, 0, R"(Pool \"1\" & <b>)"),
      meta("thread_name", 1, 0, "<img src=x onerror=alert(2)>"),
      x_event("<script>alert(1)</script>", 1, 0, 0, 100, R"("status":"<i>odd</i>")"),
  }));
  EXPECT_EQ(count(html, "<script"), 1u);  // the page's own
  EXPECT_EQ(html.find("<script>alert"), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_EQ(html.find("<i>"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("&lt;img src=x onerror=alert(2)&gt;"), std::string::npos);
  EXPECT_NE(html.find("Pool &quot;1&quot; &amp; &lt;b&gt;"), std::string::npos);
  EXPECT_NE(html.find("&lt;i&gt;odd&lt;/i&gt;"), std::string::npos);
}

TEST_F(TraceView, BareArrayAndBeginEndPairs) {
  cli_test::Result r;
  const std::string html = draw(R"([
    {"ph":"M","name":"thread_name","pid":7,"tid":3,"args":{"name":"worker A"}},
    {"ph":"B","name":"imap","pid":7,"tid":3,"ts":10,"args":{"first":0,"items":5}},
    {"ph":"E","pid":7,"tid":3,"ts":2010,"args":{"status":"ok"}},
    {"ph":"B","name":"outer","pid":7,"tid":4,"ts":0},
    {"ph":"B","name":"inner","pid":7,"tid":4,"ts":100},
    {"ph":"E","pid":7,"tid":4,"ts":300},
    {"ph":"E","pid":7,"tid":4,"ts":900,"args":{"status":"timeout","failed_index":3}},
    {"ph":"X","name":"map","pid":7,"tid":3,"ts":2100,"dur":50,"unknown":[1,{"x":null}]},
    {"ph":"E","pid":7,"tid":5,"ts":5},
    {"ph":"i","name":"instant","pid":7,"tid":3,"ts":1,"s":"t"},
    {"ph":"C","name":"counter","pid":7,"ts":1,"args":{"x":1}}
  ])",
                                &r);
  EXPECT_NE(r.err.find("(4 events, 2 lanes, 1 skipped)"), std::string::npos) << r.err;
  EXPECT_EQ(count(html, "<rect class=\"task"), 4u);
  EXPECT_NE(html.find(">worker A<title>"), std::string::npos);
  EXPECT_NE(html.find(">tid 4<title>"), std::string::npos);
  EXPECT_NE(html.find("<h2>pid 7</h2>"), std::string::npos);
  const auto slow = table_rows(html, "slowest");
  ASSERT_EQ(slow.size(), 4u);
  EXPECT_NE(slow[0].find(">imap<"), std::string::npos) << slow[0];
  EXPECT_NE(slow[0].find(">2.00 ms<"), std::string::npos) << slow[0];
  EXPECT_NE(slow[0].find(">0..4 (5)<"), std::string::npos) << slow[0];
  EXPECT_NE(slow[1].find(">outer<"), std::string::npos) << slow[1];
  EXPECT_NE(slow[1].find(">900.0 \u00b5s<"), std::string::npos) << slow[1];
  EXPECT_NE(slow[2].find(">inner<"), std::string::npos) << slow[2];
  EXPECT_NE(slow[2].find(">200.0 \u00b5s<"), std::string::npos) << slow[2];
  const auto failed = table_rows(html, "failures");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_NE(failed[0].find("timeout at item 3"), std::string::npos) << failed[0];
  EXPECT_NE(html.find("id=\"sum-skipped\">1 event with"), std::string::npos);
}

TEST_F(TraceView, StringsAreDecoded) {
  // \u escapes, a surrogate pair (U+1F600), raw UTF-8, and string pids and tids. (A lone
  // surrogate and a byte that is not UTF-8 are not JSON: BadInputIsOneLineAndExitCode2.)
  const std::string html = draw(
      "[{\"ph\":\"X\",\"name\":\"caf\\u00e9 \\ud83d\\ude00 \\u0041\\/ \u00fc\","
      "\"pid\":\"main\",\"tid\":\"w1\",\"ts\":0,\"dur\":5}]");
  EXPECT_NE(html.find("caf\u00e9 \U0001F600 A/ \u00fc"), std::string::npos);
  EXPECT_NE(html.find("<h2>pid main</h2>"), std::string::npos);
  EXPECT_NE(html.find(">tid w1<title>"), std::string::npos);
}

TEST_F(TraceView, ManyEventsAreCoalescedPerLane) {
  // 24000 back-to-back events on 3 lanes of pool 1, one of them failed; pool 2 stays small.
  std::vector<std::string> events;
  for (int i = 0; i < 24000; ++i)
    events.push_back(
        x_event(i % 2 ? "map" : "imap", 1, i % 3, (i / 3) * 10.0, 8,
                i == 12000 ? R"("status":"crashed","failed_index":1)" : R"("status":"ok")"));
  events.push_back(x_event("apply", 2, 0, 0, 50000, R"("status":"ok")"));
  events.push_back(x_event("apply", 2, 0, 60000, 20000, R"("status":"ok")"));
  cli_test::Result r;
  const std::string html = draw(object_trace(events), &r);
  EXPECT_NE(r.err.find("(24002 events, 4 lanes)"), std::string::npos) << r.err;
  EXPECT_EQ(count(html, "<rect class=\"task"), 2u);  // pool 2 only
  const std::size_t busy = count(html, "<rect class=\"busy\"");
  EXPECT_GE(busy, 3u);
  EXPECT_LE(busy, 3u * 1010);
  EXPECT_GE(count(html, "<rect class=\"busy failed\""), 1u);
  EXPECT_NE(html.find("This pool has 24000 tasks, more than 20000"), std::string::npos);
  EXPECT_LT(html.size(), 1u << 20);
  EXPECT_EQ(table_rows(html, "slowest").size(), 20u);
  EXPECT_EQ(table_rows(html, "failures").size(), 1u);
}

TEST_F(TraceView, DefaultOutputAndQuiet) {
  const fs::path in = write("run.trace.json", two_pool_trace());
  cli_test::Result r = cli_test::mproc({"trace-view", in.string()});
  EXPECT_EQ(r.code, 0) << r.err;
  const fs::path out = dir_ / "run.trace.html";
  EXPECT_TRUE(fs::exists(out));
  EXPECT_NE(r.err.find("wrote " + out.string()), std::string::npos) << r.err;
  EXPECT_EQ(count(slurp(out), "<rect class=\"task"), 6u);

  r = cli_test::mproc({"trace-view", "--quiet", in.string(), "-o", (dir_ / "q.html").string()});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.err, "");
  EXPECT_TRUE(fs::exists(dir_ / "q.html"));
}

TEST_F(TraceView, BadInputIsOneLineAndExitCode2) {
  const std::string good = two_pool_trace();
  struct Case {
    std::string name, text, what;
  };
  const std::vector<Case> cases = {
      {"empty", "", "is empty"},
      {"blank", " \n\t", "is empty"},
      {"brace", "{", "at byte 1 (truncated file?)"},
      {"open-array", "[1,2",
       "not valid JSON: syntax error while parsing array - unexpected end of input; expected "
       "']' at byte 4 (truncated file?)"},
      {"not-array", R"({"traceEvents": 3})", "\"traceEvents\" is a number, not an array"},
      {"no-events-member", R"({"events": []})", "no \"traceEvents\" array"},
      {"scalar", "42", "it holds a number"},
      {"not-objects", "[1, 2]", "event 0 is a number, not an object"},
      {"no-events", R"({"traceEvents": []})", "no spans to draw"},
      {"only-metadata", object_trace({meta("thread_name", 1, 0, "worker 0")}), "no spans to draw"},
      {"deep", std::string(100000, '['), "nested more than 64 deep, at byte 64"},
      {"deep-objects", repeat("{\"a\":", 100000), "nested more than 64 deep, at byte 320"},
      // A '[' inside a string opens nothing.
      {"deep-in-event", "[{\"args\":" + repeat("[\"[\",", 70),
       "nested more than 64 deep, at byte 319"},
      {"bad-escape", R"({"traceEvents":[{"ph":"X","name":"a\qb"}]})",
       "forbidden character after backslash; last read: '\"a\\q' at byte 36"},
      {"control-char", "[\"a\x01\"]", "control character U+0001 (SOH) must be escaped"},
      {"lone-surrogate", R"([{"ph":"X","name":"\udc00","ts":1,"dur":1}])",
       "surrogate U+DC00..U+DFFF must follow U+D800..U+DBFF; last read: '\"\\udc00' at byte 24"},
      {"not-utf8", "[{\"ph\":\"X\",\"name\":\"a\xff\",\"ts\":1,\"dur\":1}]",
       "ill-formed UTF-8 byte; last read: '\"a\\xff' at byte 20"},
      {"long-bad-string", "[\"" + std::string(100000, 'a'),
       "last read: '..." + std::string(40, 'a') + "' at byte 100002 (truncated file?)"},
      {"truncated", good.substr(0, good.size() / 2), "(truncated file?)"},
      {"nan", R"([{"ph":"X","name":"m","ts":NaN,"dur":1}])", "not valid JSON"},
      {"huge", R"([{"ph":"X","name":"m","ts":1e300,"dur":1},{"ph":"X","ts":-1e308,"dur":1}])",
       "no spans to draw"},
      {"overflow", R"([{"ph":"X","name":"m","ts":1e999,"dur":1}])",
       "not valid JSON: number overflow parsing '1e999' at byte 31"},
      {"negative-dur", R"([{"ph":"X","name":"m","ts":1,"dur":-5}])", "no spans to draw"},
      {"trailing-comma", R"([{"ph":"X","ts":1,"dur":1},])",
       "unexpected ']'; expected '[', '{', or a literal at byte 27"},
      {"leading-zero", R"([{"ph":"X","ts":01,"dur":1}])", "unexpected number literal"},
      {"garbage-after", good + "x", "expected end of input at byte " + std::to_string(good.size())},
      {"binary", std::string("\x00\x01\x02", 3), "unexpected byte 0x00 at byte 0"},
      {"nul-after", R"([{"ph":"X","ts":1,"dur":1}])" + std::string(1, '\0') + "x",
       "unexpected byte 0x00 at byte 27"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path in = write(c.name + ".json", c.text);
    const fs::path out = dir_ / (c.name + ".html");
    expect_input_error(cli_test::mproc({"trace-view", in.string(), "-o", out.string()}), c.what);
    EXPECT_FALSE(fs::exists(out));
  }

  const fs::path in = write("good.json", good);
  expect_input_error(cli_test::mproc({"trace-view", (dir_ / "missing.json").string()}),
                     "cannot open");
  expect_input_error(
      cli_test::mproc({"trace-view", dir_.string(), "-o", (dir_ / "d.html").string()}),
      "is a directory");
  write("file.txt", "x");
  expect_input_error(
      cli_test::mproc({"trace-view", in.string(), "-o", (dir_ / "file.txt" / "x.html").string()}),
      "cannot write");
  expect_input_error(cli_test::mproc({"trace-view", in.string(), "-o", dir_.string()}),
                     "cannot write");
  expect_input_error(cli_test::mproc({"trace-view", in.string(), "-o", in.string()}),
                     "is the input file");
  EXPECT_EQ(slurp(in), good);

  // Usage errors come from the parser.
  for (const std::vector<std::string>& args : {std::vector<std::string>{"trace-view"},
                                               {"trace-view", in.string(), "--bogus"},
                                               {"trace-view", in.string(), "-o"}}) {
    const cli_test::Result r = cli_test::mproc(args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(cli_test::lines(r.err), 1u) << r.err;
    EXPECT_EQ(r.err.rfind("mproc: ", 0), 0u) << r.err;
  }
}

/// A FIFO at `path` that a child process writes `head` to, then `tail` over and over
/// until the reader goes away (or, with `endless` false, just `head` and the end): an
/// input that is a pipe, with or without an end.
class Fifo {
 public:
  Fifo(const fs::path& path, std::string head, std::string tail = "", bool endless = false)
      : head_(std::move(head)), tail_(std::move(tail)) {
    if (::mkfifo(path.c_str(), 0600) != 0) throw std::runtime_error("mkfifo " + path.string());
    const std::string p = path.string();
    pid_ = ::fork();
    if (pid_ == 0) {
      std::signal(SIGPIPE, SIG_DFL);  // the reader leaving ends the writer
      const int fd = ::open(p.c_str(), O_WRONLY);
      if (fd < 0 || !write_all(fd, head_)) ::_exit(1);
      while (endless && !tail_.empty())
        if (!write_all(fd, tail_)) ::_exit(0);
      ::_exit(0);
    }
  }
  ~Fifo() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);  // a writer whose reader never opened the FIFO waits in open()
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Fifo(const Fifo&) = delete;
  Fifo& operator=(const Fifo&) = delete;

 private:
  static bool write_all(int fd, const std::string& s) {
    for (std::size_t done = 0; done < s.size();) {
      const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }
  std::string head_, tail_;
  pid_t pid_ = -1;
};

// Inputs without an end must fail on their first bytes that are not JSON, or at
// --max-bytes, and never be read until the reader is killed: each run has a 10 s
// watchdog, far above the fraction of a second these take.
constexpr int watchdog_seconds = 10;

TEST_F(TraceView, EndlessInputsFailWithOneLine) {
  const std::string out = (dir_ / "out.html").string();
  cli_test::Result r =
      cli_test::mproc({"trace-view", "/dev/urandom", "-o", out}, watchdog_seconds);
  expect_input_error(r, "'/dev/urandom' is not valid JSON: ");
  r = cli_test::mproc({"trace-view", "/dev/zero", "-o", out}, watchdog_seconds);
  expect_input_error(r, "'/dev/zero' is not valid JSON: unexpected byte 0x00 at byte 0");

  // An endless array of good events: valid JSON as far as it goes, so only the size
  // stops it.
  const std::string event = x_event("map", 1, 0, 0, 10, "") + ",\n";
  {
    const Fifo fifo(dir_ / "events", "{\"traceEvents\":[", event, true);
    r = cli_test::mproc({"trace-view", (dir_ / "events").string(), "-o", out, "--max-bytes", "1M"},
                        watchdog_seconds);
    expect_input_error(r, "is larger than the --max-bytes limit of 1048576 bytes");
  }
  // A good trace, then garbage without end: the first byte after the trace is the error.
  const std::string good = two_pool_trace();
  {
    const Fifo fifo(dir_ / "garbage", good + "\n x", "garbage", true);
    r = cli_test::mproc({"trace-view", (dir_ / "garbage").string(), "-o", out}, watchdog_seconds);
    expect_input_error(r, "expected end of input at byte " + std::to_string(good.size() + 2));
  }
  {
    const Fifo fifo(dir_ / "blank", good, " \n", true);
    r = cli_test::mproc({"trace-view", (dir_ / "blank").string(), "-o", out, "--max-bytes", "64K"},
                        watchdog_seconds);
    expect_input_error(r, "is larger than the --max-bytes limit of 65536 bytes");
  }
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(TraceView, PipesAreReadToTheirEnd) {
  const std::string good = two_pool_trace();
  const std::string out = (dir_ / "out.html").string();
  {
    const Fifo fifo(dir_ / "good", good);
    const cli_test::Result r =
        cli_test::mproc({"trace-view", (dir_ / "good").string(), "-o", out}, watchdog_seconds);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(count(slurp(out), "<rect class=\"task"), 6u);
  }
  fs::remove(out);
  {
    const Fifo fifo(dir_ / "truncated", good.substr(0, good.size() / 2));
    expect_input_error(
        cli_test::mproc({"trace-view", (dir_ / "truncated").string(), "-o", out}, watchdog_seconds),
        "(truncated file?)");
  }
  {
    const Fifo fifo(dir_ / "garbage", good + "]");
    expect_input_error(
        cli_test::mproc({"trace-view", (dir_ / "garbage").string(), "-o", out}, watchdog_seconds),
        "expected end of input at byte " + std::to_string(good.size()));
  }
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(TraceView, MaxBytes) {
  const std::string good = two_pool_trace();
  const fs::path in = write("good.json", good);
  const std::string out = (dir_ / "out.html").string();
  const std::string size = std::to_string(good.size());
  cli_test::Result r =
      cli_test::mproc({"trace-view", in.string(), "-o", out, "--max-bytes", size});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out));
  fs::remove(out);
  r = cli_test::mproc(
      {"trace-view", in.string(), "-o", out, "--max-bytes", std::to_string(good.size() - 1)});
  expect_input_error(r, "is larger than the --max-bytes limit of " +
                            std::to_string(good.size() - 1) + " bytes");
  EXPECT_FALSE(fs::exists(out));
  // A pipe of the same bytes, which has no size to look at.
  {
    const Fifo fifo(dir_ / "pipe", good);
    r = cli_test::mproc({"trace-view", (dir_ / "pipe").string(), "-o", out, "--max-bytes",
                         std::to_string(good.size() - 1)},
                        watchdog_seconds);
    expect_input_error(r, "is larger than the --max-bytes limit of");
  }
  // Sizes take K, M and G; other values are usage errors of the parser.
  r = cli_test::mproc({"trace-view", in.string(), "-o", out, "--max-bytes", "1K"});
  expect_input_error(r, "is larger than the --max-bytes limit of 1024 bytes");
  for (const std::string bad : {"0", "-5", "lots", "1T", ""}) {
    r = cli_test::mproc({"trace-view", in.string(), "-o", out, "--max-bytes", bad});
    EXPECT_EQ(r.code, 2) << bad << ": " << r.err;
    EXPECT_EQ(cli_test::lines(r.err), 1u) << r.err;
    EXPECT_EQ(r.err.rfind("mproc: ", 0), 0u) << r.err;
  }
  EXPECT_FALSE(fs::exists(out));
  // The help names the option and its default.
  r = cli_test::mproc({"trace-view", "--help"});
  EXPECT_NE(r.out.find("--max-bytes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("default 1G"), std::string::npos) << r.out;
}

TEST_F(TraceView, OneValidEventAmongUnusableOnes) {
  cli_test::Result r;
  const std::string html = draw(R"({"traceEvents":[
    {"ph":"X","name":"map","pid":1,"tid":0,"ts":1e300,"dur":1},
    {"ph":"X","name":"map","pid":1,"tid":0,"ts":5,"dur":1e308},
    {"ph":"X","name":"map","pid":1,"tid":0,"ts":"soon","dur":1},
    {"ph":"X","name":"map","pid":1,"tid":0,"ts":10,"dur":20,"args":{"items":1e30,"first":-1e300}}
  ]})",
                                &r);
  EXPECT_NE(r.err.find("(1 event, 1 lane, 3 skipped)"), std::string::npos) << r.err;
  EXPECT_EQ(count(html, "<rect class=\"task\""), 1u);
  EXPECT_NE(html.find("id=\"sum-span\">20.0 \u00b5s<"), std::string::npos);
}

/// The peak resident set, in KiB, of `mproc args...` run from a forked child, whose
/// RUSAGE_CHILDREN then counts that run alone; -1 when it failed or was not measured.
long peak_kib(const std::vector<std::string>& args) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    const cli_test::Result r = cli_test::mproc(args);
    struct rusage ru {};
    const long kib = r.code == 0 && ::getrusage(RUSAGE_CHILDREN, &ru) == 0 ? ru.ru_maxrss : -1;
    (void)!::write(fds[1], &kib, sizeof kib);
    ::_exit(0);
  }
  ::close(fds[1]);
  long kib = -1;
  if (pid > 0 && ::read(fds[0], &kib, sizeof kib) != static_cast<ssize_t>(sizeof kib)) kib = -1;
  ::close(fds[0]);
  if (pid > 0) ::waitpid(pid, nullptr, 0);
  return kib;
}

TEST_F(TraceView, ReadsOneEventAtATime) {
  // Two spans around 300000 counter events, which draw nothing: about 22 MB of JSON, which
  // as one nlohmann tree would take more than ten times that.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  const int counters = 30000;  // the bound below is skipped, and 300000 take minutes
#else
  const int counters = 300000;
#endif
  std::string trace = "{\"traceEvents\":[" + x_event("map", 1, 0, 0, 10, "") + ",\n";
  for (int i = 0; i < counters; ++i)
    trace += R"({"ph":"C","name":"queue","pid":1,"tid":0,"ts":)" + std::to_string(i) +
             R"(,"args":{"depth":)" + std::to_string(i % 7) + "}},\n";
  trace += x_event("map", 1, 0, 20, 10, "") + "]}";
  const fs::path in = write("big.json", trace), out = dir_ / "big.html";
  // Freed here, or the shell that runs mproc, forked from this process, would count it.
  const std::size_t trace_bytes = trace.size();
  std::string().swap(trace);
  const long kib = peak_kib({"trace-view", "--quiet", in.string(), "-o", out.string()});
  ASSERT_GT(kib, 0);
  EXPECT_EQ(count(slurp(out), "<rect class=\"task\""), 2u);
  std::printf("%zu bytes of trace, peak resident set %ld KiB\n", trace_bytes, kib);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizers' shadow memory counts in the peak";
#else
  // The text is parsed as it is read, never held whole; the events add next to nothing.
  EXPECT_LT(static_cast<double>(kib) * 1024, 0.5 * static_cast<double>(trace_bytes));
#endif
}

TEST_F(TraceView, RendersInHeadlessChromium) {
  const std::string chromium = find_chromium();
  if (chromium.empty())
    GTEST_SKIP() << "no chromium-headless-shell or chromium on PATH and MPROC_CHROMIUM unset";

  auto render = [&](const fs::path& html, const std::string& name) {
    const fs::path png = dir_ / (name + ".png"), log = dir_ / (name + ".log");
    std::string cmd = "timeout 60 '" + chromium + "'";
    cmd += " --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking";
    cmd += " --disable-dev-shm-usage --hide-scrollbars --virtual-time-budget=2000";
    cmd += " --window-size=1280,1400 --user-data-dir='" + (dir_ / "profile").string() + "'";
    cmd += " --screenshot='" + png.string() + "' 'file://" + fs::absolute(html).string() + "'";
    cmd += " >'" + log.string() + "' 2>&1 </dev/null";
    const int status = std::system(cmd.c_str());
    EXPECT_EQ(status, 0) << slurp(log);
    EXPECT_TRUE(fs::exists(png)) << slurp(log);
    return decode_png(slurp(png));
  };

  draw(two_pool_trace());
  const Image page = render(dir_ / "page.html", "page");
  ASSERT_EQ(page.width, 1280u);
  ASSERT_EQ(page.height, 1400u);
  const double ink = non_background_fraction(page);
  const std::size_t map_pixels = pixels_near(page, {0x4e, 0x79, 0xa7});
  const std::size_t submit_pixels = pixels_near(page, {0x76, 0xb7, 0xb2});
  const std::size_t failed_pixels = pixels_near(page, {0xd6, 0x27, 0x28});
  std::printf("timeline page: %.2f%% of pixels drawn; map %zu, submit %zu, failed %zu pixels\n",
              100 * ink, map_pixels, submit_pixels, failed_pixels);
  EXPECT_EQ(page.rgb(0, 0), (std::array<int, 3>{255, 255, 255}));
  EXPECT_GT(ink, 0.02);
  // map: 4500 us of 7500 on a 1010 px axis, bars 16 px high, about 9700 pixels; submit
  // about 9000; the crashed chunk about 1500, less its outline.
  EXPECT_GT(map_pixels, 5000u);
  EXPECT_GT(submit_pixels, 5000u);
  EXPECT_GT(failed_pixels, 500u);

  // Zoomed by the page's script through the URL fragment onto [1500, 2200) us, the crashed
  // chunk fills the plot's width: the picture changes, and red is most of a lane.
  fs::path zoomed = dir_ / "zoomed.html";
  fs::copy_file(dir_ / "page.html", zoomed);
  const std::string zoom_url = "'file://" + fs::absolute(zoomed).string() + "#zoom=1500,2200'";
  const Image zoom = [&] {
    const fs::path png = dir_ / "zoom.png", log = dir_ / "zoom.log";
    std::string cmd = "timeout 60 '" + chromium + "'";
    cmd += " --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking";
    cmd += " --disable-dev-shm-usage --hide-scrollbars --virtual-time-budget=2000";
    cmd += " --window-size=1280,1400 --user-data-dir='" + (dir_ / "profile").string() + "'";
    cmd += " --screenshot='" + png.string() + "' " + zoom_url + " >'" + log.string() + "' 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << slurp(log);
    return decode_png(slurp(png));
  }();
  ASSERT_EQ(zoom.width, page.width);
  const std::size_t zoom_failed = pixels_near(zoom, {0xd6, 0x27, 0x28});
  std::printf("zoomed page: failed %zu pixels (was %zu)\n", zoom_failed, failed_pixels);
  EXPECT_GT(zoom_failed, 5 * failed_pixels);
  // submit runs later, off the view: only its legend and table swatches are left.
  EXPECT_LT(pixels_near(zoom, {0x76, 0xb7, 0xb2}), submit_pixels / 10);

  // The DOM after the script ran: the view it took from the fragment, and a label in a
  // bar's hover text.
  const fs::path dom = dir_ / "dom.html";
  std::string cmd = "timeout 60 '" + chromium + "'";
  cmd += " --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking";
  cmd += " --disable-dev-shm-usage --virtual-time-budget=2000";
  cmd += " --user-data-dir='" + (dir_ / "profile").string() + "' --dump-dom " + zoom_url;
  cmd += " >'" + dom.string() + "' 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const std::string dumped = slurp(dom);
  EXPECT_NE(dumped.find("data-view=\"1500.000,2200.000\""), std::string::npos);
  EXPECT_NE(dumped.find("showing 1.50 ms to 2.20 ms of 7.50 ms"), std::string::npos);
  EXPECT_NE(dumped.find("<title>chunk of blocks 300-399\nmap ("), std::string::npos);

  // The counters see nothing on a blank page, so the checks above can fail.
  const Image blank =
      render(write("blank.html", "<!DOCTYPE html><html><body></body></html>"), "blank");
  const double blank_ink = non_background_fraction(blank);
  std::printf("blank page: %.4f%% of pixels drawn\n", 100 * blank_ink);
  EXPECT_LT(blank_ink, 0.001);
  EXPECT_EQ(pixels_near(blank, {0x4e, 0x79, 0xa7}), 0u);
}

}  // namespace

namespace {

TEST_F(TraceView, LabelsShowOnHoverAndInTheTables) {
  const std::string html = draw(object_trace({
      x_event("map", 1, 0, 0, 100,
              R"x("first":0,"items":1,"status":"ok","label":"books/a.txt","function":"count(int)")x"),
      x_event("map", 1, 0, 200, 50,
              R"x("first":1,"items":1,"errors":1,"status":"error","label":"books/b.txt",)x"
              R"x("function":"count(int)","error":"std::runtime_error: no <such> word")x"),
  }));
  const std::string ok = between(html, "<rect class=\"task\"", "</rect>");
  EXPECT_NE(ok.find("<title>books/a.txt\nmap ("), std::string::npos) << ok;
  EXPECT_NE(ok.find("function count(int)"), std::string::npos) << ok;
  const std::string failed = between(html, "<rect class=\"task failed\"", "</rect>");
  EXPECT_NE(failed.find("std::runtime_error: no &lt;such&gt; word"), std::string::npos) << failed;
  const auto slow = table_rows(html, "slowest");
  ASSERT_EQ(slow.size(), 2u);
  EXPECT_NE(slow[0].find(">books/a.txt<"), std::string::npos) << slow[0];
  const auto fails = table_rows(html, "failures");
  ASSERT_EQ(fails.size(), 1u);
  EXPECT_NE(fails[0].find(">books/b.txt<"), std::string::npos) << fails[0];
  EXPECT_NE(fails[0].find("std::runtime_error: no &lt;such&gt; word"), std::string::npos)
      << fails[0];
}

}  // namespace

namespace {

TEST_F(TraceView, RunTraceHasOneEventPerJobNamedByItsCommand) {
  const fs::path trace = dir_ / "run.json", page = dir_ / "run.html";
  const cli_test::Result r = cli_test::mproc(
      {"run", "-j", "2", "--trace", trace.string(), "sh", "-c", "exit {}", ":::", "0", "3", "0"});
  EXPECT_EQ(r.code, 1) << r.err;  // one job failed
  const std::string text = slurp(trace);
  EXPECT_EQ(count(text, "{\"ph\":\"X\",\"name\":\"job\""), 3u) << text;
  const cli_test::Result v = cli_test::mproc({"trace-view", trace.string(), "-o", page.string()});
  ASSERT_EQ(v.code, 0) << v.err;
  const std::string html = slurp(page);
  const auto failed = table_rows(html, "failures");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_NE(failed[0].find(">sh -c exit 3<"), std::string::npos) << failed[0];
  EXPECT_NE(failed[0].find("exit code 3"), std::string::npos) << failed[0];
  EXPECT_EQ(count(html, "<rect class=\"task\""), 2u);
}

}  // namespace

namespace {

/// The text of the element that starts at `open` in `html`, up to the first `close`.
std::string element(const std::string& html, const std::string& open, const std::string& close) {
  const auto at = html.find(open);
  if (at == std::string::npos) return {};
  const auto end = html.find(close, at);
  return html.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

/// The numbers of attribute `name` in every tag of `html` that starts with `tag`.
std::vector<double> attributes(const std::string& html, const std::string& tag,
                               const std::string& name) {
  std::vector<double> out;
  for (auto at = html.find(tag); at != std::string::npos; at = html.find(tag, at + 1)) {
    const auto end = html.find('>', at);
    const std::string t = html.substr(at, end - at);
    const auto a = t.find(" " + name + "=\"");
    if (a != std::string::npos) out.push_back(std::stod(t.substr(a + name.size() + 3)));
  }
  return out;
}

/// The first failed bar in `html` whose hover text holds `text`, or "".
std::string failed_bar(const std::string& html, const std::string& text) {
  const std::string open = "<rect class=\"task failed\"";
  for (auto at = html.find(open); at != std::string::npos; at = html.find(open, at + 1)) {
    const std::string bar = html.substr(at, html.find("</rect>", at) - at);
    if (bar.find(text) != std::string::npos) return bar;
  }
  return {};
}

#if defined(MPROC_POOL_HELPER)
TEST_F(TraceView, DrawsTheTracksOfATracedProgramInHeadlessChromium) {
  // A real program traced with mproc::trace_to: a Process that exits 3, Queue traffic with
  // a child, executor submits, a pool chunk whose worker segfaults, a Process still
  // running, and an uncaught exception at the end.
  const fs::path trace = dir_ / "program.json", page = dir_ / "program.html";
  const std::string run = std::string("'") + MPROC_POOL_HELPER + "' trace '" + trace.string() +
                          "' program >/dev/null 2>&1";
  (void)std::system(run.c_str());  // dies of SIGABRT, having written the trace
  const cli_test::Result r = cli_test::mproc({"trace-view", trace.string(), "-o", page.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string html = slurp(page);
  // Each kind of track is a labelled section of its own.
  auto section = [&](const std::string& title, const std::string& kind) {
    const auto at = html.find("<h2>" + title + "</h2>");
    return at == std::string::npos ? std::string::npos
                                   : html.find("<div class=\"pool\" data-kind=\"" + kind + "\">", at);
  };
  const auto processes = section("Processes", "processes"), queues_at = section("Queues", "queues");
  const auto submits = section("Executor 1: process backend, submits", "submits");
  ASSERT_NE(processes, std::string::npos);
  ASSERT_NE(queues_at, std::string::npos);
  ASSERT_NE(submits, std::string::npos);
  EXPECT_LT(processes, queues_at);  // in the order of the file's sections
  EXPECT_NE(html.find("<div class=\"pool\" data-kind=\"pool\">"), std::string::npos);
  // Lanes named after the Processes and the threads that used the queues.
  EXPECT_NE(html.find(">MainProcess (pid "), std::string::npos);
  EXPECT_NE(html.find(">Process-2 (pid "), std::string::npos);
  EXPECT_NE(html.find("<td id=\"sum-processes\">3, 1 failed</td>"), std::string::npos);
  EXPECT_NE(html.find("<td id=\"sum-submits\">2, 0 failed</td>"), std::string::npos);
  EXPECT_NE(html.find("<td id=\"sum-queue-ops\">6, waited"), std::string::npos);
  // The Process that exited 3 and the crashed chunk, with their errors, in the bars' hover
  // text and in the failures table; the Process still running is no failure.
  const auto fails = table_rows(html, "failures");
  ASSERT_EQ(fails.size(), 2u);
  // Under AddressSanitizer the segfault ends as exit code 1, after its report (sanitizers.hpp).
  const std::string crash_text =
      std::string("mproc::WorkerCrashed: worker ") +
      (kSanitizerCatchesSegv ? "exited with code 1" : "killed by signal 11 (SIGSEGV)") + " (task 5";
  EXPECT_NE(fails[0].find("exited with code 3"), std::string::npos) << fails[0];
  EXPECT_NE(fails[1].find(">segfaults at 5<"), std::string::npos) << fails[1];
  EXPECT_NE(fails[1].find(crash_text), std::string::npos) << fails[1];
  const std::string crashed_bar = failed_bar(html, "segfaults at 5");
  ASSERT_FALSE(crashed_bar.empty());
  EXPECT_NE(crashed_bar.find("<title>segfaults at 5\nmap ("), std::string::npos) << crashed_bar;
  EXPECT_NE(crashed_bar.find(crash_text), std::string::npos) << crashed_bar;
  const double t = attributes(crashed_bar, "<rect", "data-t").at(0);
  const double d = attributes(crashed_bar, "<rect", "data-d").at(0);

  const std::string chromium = find_chromium();
  if (chromium.empty())
    GTEST_SKIP() << "no chromium-headless-shell or chromium on PATH and MPROC_CHROMIUM unset";
  auto dump = [&](const std::string& fragment, int width) {
    const fs::path dom = dir_ / "program-dom.html";
    std::string cmd = "timeout 60 '" + chromium + "'";
    cmd += " --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking";
    cmd += " --disable-dev-shm-usage --virtual-time-budget=2000 --window-size=" +
           std::to_string(width) + ",1400";
    cmd += " --user-data-dir='" + (dir_ / "profile").string() + "' --dump-dom 'file://" +
           fs::absolute(page).string() + fragment + "'";
    cmd += " >'" + dom.string() + "' 2>/dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    return slurp(dom);
  };
  // In a window narrower than the page was written for, every chart of every section is
  // redrawn to the window's width.
  const std::string narrow = dump("", 900);
  const std::vector<double> widths = attributes(narrow, "<svg class=\"gantt\"", "width");
  ASSERT_GE(widths.size(), 5u);  // Processes, Queues, two pools, the submits
  for (const double w : widths) {
    EXPECT_LE(w, 900);
    EXPECT_GE(w, 600);
    EXPECT_EQ(w, widths[0]);
  }
  // The Queue operations last microseconds of a run of tens of milliseconds: drawn as
  // per-pixel density in their section.
  const std::string queues = element(narrow, "<div class=\"pool\" data-kind=\"queues\">", "</svg>");
  ASSERT_FALSE(queues.empty());
  EXPECT_NE(element(queues, "<g class=\"density\">", "</g>").find("<rect"), std::string::npos)
      << queues;
  // Zoomed onto the crashed chunk, its bar fills the plot, with its error still on it.
  const std::string zoomed =
      dump("#zoom=" + std::to_string(t) + "," + std::to_string(t + d), 1280);
  const std::string zoomed_bar = failed_bar(zoomed, "segfaults at 5");
  ASSERT_FALSE(zoomed_bar.empty());
  EXPECT_NE(zoomed_bar.find(crash_text), std::string::npos);
  EXPECT_GT(attributes(zoomed_bar, "<rect", "width").at(0), 900);
  // At the full view the bar is under a few pixels wide (not under AddressSanitizer, whose
  // report on the segfault takes a good part of the run).
  if (!kSanitizerCatchesSegv) {
    EXPECT_LT(attributes(failed_bar(narrow, "segfaults at 5"), "<rect", "width").at(0), 100);
  }
}
#endif

}  // namespace
