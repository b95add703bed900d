// PoolOptions::trace: the Chrome trace-event timeline of every chunk, on both backends.
// The checks read the file back: every item appears in exactly one chunk, byte counts are
// the encoded sizes, chunks of one worker never overlap, times fall inside the run, and
// failures (an exception, a SIGKILL, a timeout) appear as what they were. Python's json
// module checks that the file is valid JSON.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <mproc/bind.hpp>
#include <mproc/executor.hpp>
#include <mproc/pool.hpp>
#include <mproc/range.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/serialize.hpp>
#include <mproc/trace.hpp>

#include "sanitizers.hpp"

// Outside the anonymous namespace, so that -rdynamic exports it and dladdr names it.
int trace_test_triple(int x) { return 3 * x; }
int trace_test_needs_one(int x) {
  if (x != 1) throw std::invalid_argument("not one");
  return x;
}

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

/// One "X" event of a trace file, as the library writes it (one event per line).
struct Event {
  std::string name, cat, status, label, function, error, queue;
  std::int64_t exitcode = -1000, parent_pid = -1, process_pid = -1, bytes = -1;
  double blocked_us = -1;
  std::int64_t pid = 0, tid = 0, job = 0, first = 0, items = 0, errors = 0;
  std::int64_t bytes_in = -1, bytes_out = -1, failed_index = -1, worker_pid = -1;
  double ts = 0, dur = 0;
};

struct Trace {
  std::vector<Event> events;
  std::vector<std::string> pool_names;
  std::map<std::int64_t, std::string> process_names;                          // by pid
  std::map<std::pair<std::int64_t, std::int64_t>, std::string> thread_names;  // by pid, tid
  std::uint64_t origin_ns = 0;
  std::string text;
};

std::string field(const std::string& line, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  const auto at = line.find(k);
  if (at == std::string::npos) return {};
  std::size_t b = at + k.size();
  if (line[b] == '"') return line.substr(b + 1, line.find('"', b + 1) - b - 1);
  std::size_t e = line.find_first_of(",}", b);
  return line.substr(b, e - b);
}

std::int64_t number(const std::string& line, const std::string& key, std::int64_t none = 0) {
  const std::string v = field(line, key);
  return v.empty() ? none : std::stoll(v);
}

Trace read_trace(const fs::path& path) {
  std::ifstream in(path);
  Trace t;
  std::stringstream all;
  all << in.rdbuf();
  t.text = all.str();
  std::istringstream lines(t.text);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("{\"ph\":\"M\",\"name\":\"process_name\"")) {
      t.pool_names.push_back(field(line.substr(line.find("\"args\"")), "name"));
      t.process_names[number(line, "pid")] = t.pool_names.back();
    }
    if (line.starts_with("{\"ph\":\"M\",\"name\":\"thread_name\""))
      t.thread_names[{number(line, "pid"), number(line, "tid")}] =
          field(line.substr(line.find("\"args\"")), "name");
    if (line.starts_with("\"otherData\""))
      t.origin_ns = std::stoull(field(line, "origin_ns"));
    if (!line.starts_with("{\"ph\":\"X\"")) continue;
    Event e;
    e.name = field(line, "name");
    e.cat = field(line, "cat");
    const std::string args = line.substr(line.find("\"args\""));
    e.queue = field(args, "queue");
    e.exitcode = number(args, "exitcode", -1000);
    e.parent_pid = number(args, "parent_pid", -1);
    e.process_pid = number(args, "process_pid", -1);
    e.bytes = number(args, "bytes", -1);
    if (const std::string b = field(args, "blocked_us"); !b.empty()) e.blocked_us = std::stod(b);
    e.status = field(line, "status");
    e.label = field(line, "label");
    e.function = field(line, "function");
    e.error = field(line, "error");
    e.pid = number(line, "pid");
    e.tid = number(line, "tid");
    e.job = number(line, "job");
    e.first = number(line, "first");
    e.items = number(line, "items");
    e.errors = number(line, "errors");
    e.bytes_in = number(line, "bytes_in", -1);
    e.bytes_out = number(line, "bytes_out", -1);
    e.failed_index = number(line, "failed_index", -1);
    e.worker_pid = number(line, "worker_pid", -1);
    e.ts = std::stod(field(line, "ts"));
    e.dur = std::stod(field(line, "dur"));
    t.events.push_back(e);
  }
  return t;
}

bool valid_json(const fs::path& path) {
  const std::string cmd =
      "python3 -c 'import json,sys; json.load(open(sys.argv[1]))' '" + path.string() + "'";
  return std::system(cmd.c_str()) == 0;
}

class TraceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mproc-trace-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

/// Every index in [0, n) lies in exactly one event of `events`.
void expect_each_item_once(const std::vector<Event>& events, std::int64_t n) {
  std::vector<int> seen(static_cast<std::size_t>(n), 0);
  for (const Event& e : events) {
    ASSERT_GE(e.first, 0);
    ASSERT_LE(e.first + e.items, n);
    for (std::int64_t i = e.first; i < e.first + e.items; ++i) ++seen[static_cast<std::size_t>(i)];
  }
  for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[static_cast<std::size_t>(i)], 1) << i;
}

/// The chunks of one worker follow one another; all lie inside [t0, t1].
void expect_sane_times(const Trace& t, std::uint64_t t0, std::uint64_t t1) {
  std::map<std::pair<std::int64_t, std::int64_t>, std::vector<std::pair<double, double>>> lanes;
  for (const Event& e : t.events) {
    EXPECT_GE(e.dur, 0.0);
    const double start_ns = static_cast<double>(t.origin_ns) + e.ts * 1e3;
    EXPECT_GE(start_ns, static_cast<double>(t0) - 1e3);
    EXPECT_LE(start_ns + e.dur * 1e3, static_cast<double>(t1) + 1e3);
    lanes[{e.pid, e.tid}].emplace_back(e.ts, e.ts + e.dur);
  }
  for (auto& [lane, spans] : lanes) {
    std::sort(spans.begin(), spans.end());
    for (std::size_t k = 1; k < spans.size(); ++k)
      EXPECT_GE(spans[k].first, spans[k - 1].second - 0.002) << "lane " << lane.second;
  }
}

std::string shout(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s + "!";
}

int pid_of(int) { return static_cast<int>(::getpid()); }

TEST_F(TraceTest, ProcessMapRecordsEveryChunkWithItsBytesAndWorker) {
  std::vector<std::string> words;
  for (int i = 0; i < 1000; ++i) words.push_back(std::string(static_cast<std::size_t>(i % 37), 'a' + i % 26));
  const fs::path file = dir_ / "map.json";
  const std::uint64_t t0 = now_ns();
  std::set<std::int64_t> worker_pids;
  {
    mproc::Pool pool({.workers = 3, .chunksize = 10, .trace = file.string()});
    auto out = pool.map(shout, words);
    ASSERT_EQ(out.size(), words.size());
    EXPECT_EQ(out[5], shout(words[5]));
    for (int p : pool.map(pid_of, mproc::range(300))) worker_pids.insert(p);
  }
  const std::uint64_t t1 = now_ns();
  ASSERT_TRUE(fs::exists(file));
  EXPECT_TRUE(valid_json(file));
  const Trace t = read_trace(file);
  ASSERT_EQ(t.pool_names.size(), 1u);
  EXPECT_EQ(t.pool_names[0], "Pool 1: process backend, 3 workers");

  std::vector<Event> first_job, second_job;
  for (const Event& e : t.events) (e.job == 1 ? first_job : second_job).push_back(e);
  ASSERT_EQ(first_job.size(), 100u);  // chunksize 10
  expect_each_item_once(first_job, 1000);
  expect_each_item_once(second_job, 300);
  std::int64_t bytes_in = 0, bytes_out = 0, expect_in = 0, expect_out = 0;
  for (const auto& w : words) {
    expect_in += static_cast<std::int64_t>(mproc::dumps(w).size());
    expect_out += static_cast<std::int64_t>(mproc::dumps(shout(w)).size());
  }
  for (const Event& e : first_job) {
    EXPECT_EQ(e.name, "map");
    EXPECT_EQ(e.status, "ok");
    EXPECT_EQ(e.items, 10);
    EXPECT_GE(e.tid, 0);
    EXPECT_LT(e.tid, 3);
    bytes_in += e.bytes_in;
    bytes_out += e.bytes_out;
  }
  EXPECT_EQ(bytes_in, expect_in);
  EXPECT_EQ(bytes_out, expect_out);
  // The pids in the trace are the workers that ran the second map.
  std::set<std::int64_t> traced_pids;
  for (const Event& e : second_job) traced_pids.insert(e.worker_pid);
  EXPECT_EQ(traced_pids, worker_pids);
  expect_sane_times(t, t0, t1);
}

int fail_some(int i) {
  if (i == 3) throw std::runtime_error("three");
  if (i == 5) ::raise(SIGKILL);
  if (i == 7) std::this_thread::sleep_for(30s);
  return i;
}

TEST_F(TraceTest, FailuresAppearAsWhatTheyWere) {
  const fs::path file = dir_ / "fail.json";
  {
    mproc::Pool pool(
        {.workers = 2, .task_timeout = 1s, .chunksize = 1, .trace = file.string()});
    std::vector<mproc::Future<int>> futures;
    for (int i = 0; i < 10; ++i) futures.push_back(pool.apply_async(fail_some, i));
    for (int i = 0; i < 10; ++i) {
      if (i == 3)
        EXPECT_THROW(futures[3].get(), mproc::RemoteError);
      else if (i == 5)
        EXPECT_THROW(futures[5].get(), mproc::WorkerCrashed);
      else if (i == 7)
        EXPECT_THROW(futures[7].get(), mproc::TaskTimeout);
      else
        EXPECT_EQ(futures[static_cast<std::size_t>(i)].get(), i);
    }
  }
  const Trace t = read_trace(file);
  EXPECT_TRUE(valid_json(file));
  // apply_async calls are jobs 1..10 in submission order, one item each.
  std::map<std::int64_t, Event> by_job;
  for (const Event& e : t.events) {
    EXPECT_EQ(e.name, "apply_async");
    EXPECT_TRUE(by_job.emplace(e.job, e).second) << "job " << e.job << " twice";
  }
  ASSERT_EQ(by_job.size(), 10u);
  EXPECT_EQ(by_job[4].status, "error");
  EXPECT_EQ(by_job[4].errors, 1);
  EXPECT_EQ(by_job[4].error, "std::runtime_error: three");
  EXPECT_EQ(by_job[6].status, "crashed");
  EXPECT_EQ(by_job[6].failed_index, 0);
  // A chunk whose worker died says how, as the item's WorkerCrashed does.
  EXPECT_EQ(by_job[6].error, "mproc::WorkerCrashed: worker killed by signal 9 (SIGKILL) (task 0, worker pid " +
                                 std::to_string(by_job[6].worker_pid) + ")");
  EXPECT_EQ(by_job[8].status, "timeout");
  EXPECT_GE(by_job[8].dur, 0.9e6);  // it ran for the timeout, 1 s
  EXPECT_EQ(by_job[8].error, "mproc::TaskTimeout: task ran past its timeout of 1000ms (task 0, worker pid " +
                                 std::to_string(by_job[8].worker_pid) + ")");
  for (std::int64_t job : {1, 2, 3, 5, 7, 9, 10}) EXPECT_EQ(by_job[job].status, "ok") << job;
}

int crash_at_7(int i) {
  if (i == 7) ::raise(SIGKILL);
  return i;
}

TEST_F(TraceTest, AChunkCutByACrashKeepsItsFinishedItems) {
  const fs::path file = dir_ / "cut.json";
  {
    mproc::Pool pool({.workers = 1, .chunksize = 10, .trace = file.string()});
    EXPECT_THROW(pool.map(crash_at_7, mproc::range(20)), mproc::WorkerCrashed);
  }
  const Trace t = read_trace(file);
  // Items 0..6 finished, 7 crashed, 8..9 ran again on the replacement, then 10..19.
  std::vector<Event> ok;
  int crashed = 0;
  for (const Event& e : t.events) {
    if (e.status == "crashed") {
      ++crashed;
      EXPECT_EQ(e.failed_index, 7);
      EXPECT_EQ(e.first, 7);
    } else {
      EXPECT_EQ(e.status, "ok");
      ok.push_back(e);
    }
  }
  EXPECT_EQ(crashed, 1);
  std::set<std::int64_t> items;
  for (const Event& e : ok)
    for (std::int64_t i = e.first; i < e.first + e.items; ++i) EXPECT_TRUE(items.insert(i).second);
  EXPECT_EQ(items.size(), 19u);
  EXPECT_EQ(items.count(7), 0u);
}

int hidden_triple(int x) { return 3 * x; }  // internal linkage: no dynamic symbol

TEST_F(TraceTest, ChunksAreLabelled) {
  for (const mproc::Backend backend : {mproc::Backend::process, mproc::Backend::thread}) {
    SCOPED_TRACE(backend == mproc::Backend::process ? "process" : "thread");
    const fs::path file = dir_ / (backend == mproc::Backend::process ? "p.json" : "t.json");
    {
      mproc::Pool pool({.workers = 2, .backend = backend, .chunksize = 10, .trace = file.string()});
      EXPECT_EQ(pool.map(trace_test_triple, mproc::range(30))[29], 87);       // job 1
      EXPECT_EQ(pool.map(hidden_triple, mproc::range(30))[29], 87);           // job 2
      EXPECT_EQ(pool.map(hidden_triple, mproc::range(30), {.label = "triples"})[1], 3);  // 3
      mproc::MapOptions per_item;
      per_item.item_label = [](std::size_t i) { return "from " + std::to_string(i); };
      EXPECT_EQ(pool.map(hidden_triple, mproc::range(30), per_item)[2], 6);  // job 4
      EXPECT_THROW(pool.map(fail_some, mproc::range(5)), std::exception);    // job 5
    }
    EXPECT_TRUE(valid_json(file));
    const Trace t = read_trace(file);
    std::map<std::int64_t, std::vector<Event>> by_job;
    for (const Event& e : t.events) by_job[e.job].push_back(e);
    if (backend == mproc::Backend::thread) {
      // The thread backend does not number calls: tell them apart by what they ran.
      by_job.clear();
      for (const Event& e : t.events) {
        if (e.label == "triples") by_job[3].push_back(e);
        else if (e.label.starts_with("from ")) by_job[4].push_back(e);
        else if (e.function.find("trace_test_triple") != std::string::npos) by_job[1].push_back(e);
        else if (e.function.find("fail_some") != std::string::npos || e.function.find("trace_test+0x") == 0)
          by_job[e.items == 10 ? 2 : 5].push_back(e);
      }
    }
    ASSERT_FALSE(by_job[1].empty());
    for (const Event& e : by_job[1]) {
      EXPECT_EQ(e.function, "trace_test_triple(int)");
      EXPECT_EQ(e.label, e.function);
    }
    ASSERT_FALSE(by_job[2].empty());
    for (const Event& e : by_job[2]) EXPECT_THAT(e.function, ::testing::StartsWith("trace_test+0x"));
    ASSERT_EQ(by_job[3].size(), 3u);
    for (const Event& e : by_job[3]) EXPECT_EQ(e.label, "triples");
    ASSERT_EQ(by_job[4].size(), 3u);
    for (const Event& e : by_job[4]) EXPECT_EQ(e.label, "from " + std::to_string(e.first));
    bool raised = false;
    for (const Event& e : by_job[5])
      if (e.errors > 0) {
        raised = true;
        EXPECT_EQ(e.error, "std::runtime_error: three");
      }
    EXPECT_TRUE(raised);
  }
}

/// Runs pool_helper's traced mode; once it says "ready", sends `sig` (0: none, it ends
/// itself). Returns its wait status.
int run_traced_helper(const fs::path& file, const char* mode, int sig) {
  int out[2];
  if (::pipe(out) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    ::execl(MPROC_POOL_HELPER, MPROC_POOL_HELPER, "trace", file.c_str(), mode, nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  std::string said;
  char c;
  while (said.find("ready\n") == std::string::npos && ::read(out[0], &c, 1) == 1) said += c;
  ::close(out[0]);
  if (sig != 0) ::kill(pid, sig);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

TEST_F(TraceTest, AProgramThatEndsAbnormallyStillWritesItsTrace) {
  for (const auto& [mode, sig, dies_of] :
       {std::tuple{"terminate", 0, SIGABRT}, {"wait", SIGTERM, SIGTERM}, {"wait", SIGINT, SIGINT}}) {
    SCOPED_TRACE(std::string(mode) + " " + std::to_string(sig));
    const fs::path file = dir_ / ("crash-" + std::to_string(sig) + ".json");
    const int status = run_traced_helper(file, mode, sig);
    // It still dies of what it would have died of without the handlers.
    ASSERT_TRUE(WIFSIGNALED(status)) << status;
    EXPECT_EQ(WTERMSIG(status), dies_of);
    ASSERT_TRUE(fs::exists(file));
    EXPECT_TRUE(valid_json(file));
    const Trace t = read_trace(file);
    std::set<std::int64_t> naps;
    int raised = 0;
    for (const Event& e : t.events) {
      if (e.label == "naps") naps.insert(e.first);
      if (e.errors > 0) {
        ++raised;
        EXPECT_EQ(e.first, 3);
        EXPECT_EQ(e.error, "std::invalid_argument: item three");
      }
    }
    EXPECT_EQ(naps.size(), 8u);  // every item of the first map
    EXPECT_EQ(raised, 1);
    // No file is left beside it.
    std::size_t files = 0;
    for (const auto& entry : fs::directory_iterator(dir_)) files += entry.path().filename().string().starts_with("crash-" + std::to_string(sig));
    EXPECT_EQ(files, 1u);
  }
}

/// Checks `path` against the rules of the Chrome trace-event format (the JSON Object
/// Format) that Perfetto's importer applies; "" when it follows them, else the first
/// breach.
std::string trace_format_breach(const fs::path& path) {
  const fs::path script = path.string() + ".check.py";
  std::ofstream(script) << R"py(
import json, sys
doc = json.load(open(sys.argv[1]))
def fail(why, e=None):
    print(why, json.dumps(e) if e is not None else ""); sys.exit(1)
if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list): fail("no traceEvents")
if doc.get("displayTimeUnit") not in (None, "ms", "ns"): fail("displayTimeUnit")
meta = {"process_name": "name", "thread_name": "name", "process_sort_index": "sort_index",
        "thread_sort_index": "sort_index", "process_labels": "labels"}
names = set()
for e in doc["traceEvents"]:
    if not isinstance(e, dict): fail("an event is not an object", e)
    ph = e.get("ph")
    if not isinstance(ph, str) or len(ph) != 1: fail("ph", e)
    for k in ("pid", "tid"):
        if not isinstance(e.get(k), int) or isinstance(e.get(k), bool): fail(k + " is not an integer", e)
    if not isinstance(e.get("name"), str) or not e["name"]: fail("name", e)
    if "args" in e and not isinstance(e["args"], dict): fail("args", e)
    if ph == "M":
        key = meta.get(e["name"])
        if key is None or key not in e.get("args", {}): fail("metadata", e)
        if e["name"] in ("process_name", "thread_name"):
            if not isinstance(e["args"]["name"], str): fail("metadata name", e)
            names.add((e["name"], e["pid"], e["tid"] if e["name"] == "thread_name" else 0))
    elif ph == "X":
        for k in ("ts", "dur"):
            if not isinstance(e.get(k), (int, float)) or isinstance(e.get(k), bool): fail(k, e)
        if e["dur"] < 0: fail("negative dur", e)
        if "cat" in e and not isinstance(e["cat"], str): fail("cat", e)
        if ("process_name", e["pid"], 0) not in names: fail("a pid without a process_name first", e)
        if ("thread_name", e["pid"], e["tid"]) not in names: fail("a tid without a thread_name first", e)
    else:
        fail("a phase mproc does not write", e)
)py";
  const fs::path out = path.string() + ".check.out";
  const std::string cmd =
      "python3 '" + script.string() + "' '" + path.string() + "' >'" + out.string() + "' 2>&1";
  if (std::system(cmd.c_str()) == 0) return {};
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  return text.str().empty() ? "the check failed" : text.str();
}

TEST_F(TraceTest, EventsFollowTheTraceEventFormat) {
  const fs::path file = dir_ / "format.json";
  {
    mproc::Pool pool({.workers = 2, .task_timeout = 1s, .chunksize = 3, .trace = file.string()});
    EXPECT_EQ(pool.map(trace_test_triple, mproc::range(20))[19], 57);
    std::vector<mproc::Future<int>> futures;
    for (int i = 2; i < 6; ++i) futures.push_back(pool.apply_async(fail_some, i));
    for (auto& f : futures) f.wait();
    mproc::Pool threads({.workers = 2, .backend = mproc::Backend::thread, .trace = file.string()});
    EXPECT_EQ(threads.map([](int x) { return x; }, mproc::range(50))[49], 49);
    EXPECT_EQ(threads.apply([](int a) { return a + 1; }, 6), 7);
  }
  EXPECT_EQ(trace_format_breach(file), "");
  // The checker catches what it checks.
  const fs::path bad = dir_ / "bad.json";
  std::ofstream(bad) << R"({"traceEvents":[{"ph":"X","name":"map","pid":1,"tid":"0","ts":1,"dur":2}]})";
  EXPECT_THAT(trace_format_breach(bad), HasSubstr("tid is not an integer"));
}

TEST_F(TraceTest, ThreadBackendRecordsChunksWithoutBytes) {
  const fs::path file = dir_ / "threads.json";
  const std::uint64_t t0 = now_ns();
  {
    mproc::Pool pool({.workers = 2, .backend = mproc::Backend::thread, .chunksize = 25,
                      .trace = file.string()});
    auto r = pool.map([](int x) { return x * 2; }, mproc::range(1000));
    EXPECT_EQ(r[999], 1998);
    EXPECT_THROW(pool.map([](int x) { return x == 13 ? throw std::runtime_error("13") : x; },
                          mproc::range(50)),
                 std::runtime_error);
    EXPECT_EQ(pool.apply([](int a, int b) { return a + b; }, 2, 3), 5);
    int n = 0;
    for (int v : pool.imap([](int x) { return x + 1; }, mproc::range(100))) n += v > 0;
    EXPECT_EQ(n, 100);
  }
  const std::uint64_t t1 = now_ns();
  EXPECT_TRUE(valid_json(file));
  const Trace t = read_trace(file);
  ASSERT_EQ(t.pool_names.size(), 1u);
  EXPECT_EQ(t.pool_names[0], "Pool 1: thread backend, 2 workers");
  std::map<std::string, std::vector<Event>> by_name;
  for (const Event& e : t.events) {
    EXPECT_EQ(e.bytes_in, -1);
    EXPECT_EQ(e.worker_pid, -1);
    EXPECT_GE(e.tid, 0);
    EXPECT_LE(e.tid, 2);  // 2: the calling thread's lane
    by_name[e.name].push_back(e);
  }
  ASSERT_EQ(by_name["map"].size(), 40u + 2u);  // 1000/25 chunks, then 50/25
  std::vector<Event> first_map(by_name["map"].begin(), by_name["map"].begin() + 40);
  std::sort(first_map.begin(), first_map.end(),
            [](const Event& a, const Event& b) { return a.first < b.first; });
  expect_each_item_once(std::vector<Event>(first_map), 1000);
  int errors = 0;
  for (const Event& e : by_name["map"]) errors += static_cast<int>(e.errors);
  EXPECT_EQ(errors, 1);
  ASSERT_EQ(by_name["call"].size(), 1u);
  std::int64_t imap_items = 0;
  for (const Event& e : by_name["imap"]) imap_items += e.items;
  EXPECT_EQ(imap_items, 100);
  expect_sane_times(t, t0, t1);
}

TEST_F(TraceTest, PoolsNamingOneFileShareItsTimeline) {
  const fs::path file = dir_ / "two.json";
  {
    mproc::Pool a({.workers = 2, .trace = file.string()});
    EXPECT_EQ(a.map([](int x) { return x; }, mproc::range(100)).size(), 100u);
  }
  {
    mproc::ProcessPoolExecutor ex(mproc::PoolOptions{.workers = 1, .trace = file.string()});
    EXPECT_EQ(ex.submit([](int x) { return x + 1; }, 41).get(), 42);
  }
  const Trace t = read_trace(file);
  EXPECT_TRUE(valid_json(file));
  ASSERT_EQ(t.pool_names.size(), 3u);
  EXPECT_EQ(t.pool_names[1], "Pool 2: process backend, 1 worker");
  EXPECT_EQ(t.pool_names[2], "Executor 1: process backend, submits");
  std::int64_t items1 = 0, events2 = 0, submits = 0;
  for (const Event& e : t.events) {
    if (e.pid == 1) items1 += e.items;
    if (e.pid == 2) ++events2;
    if (e.pid == 3 && e.name == "submit" && e.status == "ok") ++submits;
  }
  EXPECT_EQ(items1, 100);
  EXPECT_EQ(events2, 1);
  EXPECT_EQ(submits, 1);
}

TEST_F(TraceTest, ADeletedFileStartsANewTimeline) {
  const fs::path file = dir_ / "again.json";
  for (int round = 0; round < 2; ++round) {
    {
      mproc::Pool pool({.workers = 1, .trace = file.string()});
      EXPECT_EQ(pool.map([](int x) { return x; }, mproc::range(round == 0 ? 7 : 5)).size(),
                round == 0 ? 7u : 5u);
    }
    const Trace t = read_trace(file);
    ASSERT_EQ(t.pool_names.size(), 1u) << round;
    std::int64_t items = 0;
    for (const Event& e : t.events) items += e.items;
    EXPECT_EQ(items, round == 0 ? 7 : 5);
    fs::remove(file);
  }
}

TEST_F(TraceTest, APlantedSymlinkNeverRedirectsTheWrite) {
  // The name the temporary file had before it was made unguessable, planted as a link to
  // a file that must not change.
  const fs::path file = dir_ / "planted.json";
  const fs::path victim = dir_ / "victim.txt";
  std::ofstream(victim) << "keep me\n";
  fs::create_symlink(victim, file.string() + "." + std::to_string(::getpid()) + ".tmp");
  {
    mproc::Pool pool({.workers = 1, .trace = file.string()});
    EXPECT_EQ(pool.map([](int x) { return x + 1; }, mproc::range(9)).size(), 9u);
  }
  std::ifstream in(victim);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), {}), "keep me\n");
  EXPECT_FALSE(fs::is_symlink(file));
  const Trace t = read_trace(file);
  std::int64_t items = 0;
  for (const Event& e : t.events) items += e.items;
  EXPECT_EQ(items, 9);
  // Nothing of the write is left beside the trace but the planted link.
  std::size_t entries = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 3u);  // planted.json, victim.txt, the link
}

TEST_F(TraceTest, AnUnwritableFileIsRefusedAtConstruction) {
  const std::string bad = (dir_ / "no" / "such" / "t.json").string();
  for (auto backend : {mproc::Backend::process, mproc::Backend::thread}) {
    try {
      mproc::Pool pool({.workers = 1, .backend = backend, .trace = bad});
      ADD_FAILURE() << "no error";
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), HasSubstr("cannot write the trace file " + bad));
      EXPECT_THAT(e.what(), HasSubstr("No such file or directory"));
    }
  }
  EXPECT_FALSE(fs::exists(dir_ / "no"));
}

// ---- mproc::trace_to: Processes, Queues and executor submits -------------------------

/// Runs `body` in a forked child, which then writes its timeline and exits (0, or 1 if
/// `body` threw); returns the wait status. trace_to() lasts as long as the program, so
/// each test that calls it does so in a process of its own.
template <class F>
int in_child(F body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 0;
    try {
      body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      code = 1;
    }
    mproc::trace_flush();
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

void exit_3() { std::exit(3); }
void sleep_long() { std::this_thread::sleep_for(60s); }
// Puts 0..4 into `q`, then waits for one value in `back` and puts it into `q`.
void produce(mproc::Queue<int> q, mproc::Queue<int> back) {
  for (int i = 0; i < 5; ++i) q.put(i);
  q.put(100 + back.get());
}

// A pool task that puts into a queue; returns its worker's pid.
int put_from_worker(mproc::Queue<int> q, int x) {
  q.put(x);
  return static_cast<int>(::getpid());
}

/// The pid of the section named `name`, or -1.
std::int64_t section(const Trace& t, const std::string& name) {
  for (const auto& [pid, n] : t.process_names)
    if (n == name) return pid;
  return -1;
}

TEST_F(TraceTest, TraceToRecordsProcessesQueuesAndSubmitsOnTheirOwnTracks) {
  const fs::path file = dir_ / "program.json";
  const fs::path pids = dir_ / "pids.txt";
  const std::uint64_t t0 = now_ns();
  const int status = in_child([&] {
    mproc::trace_to(file.string());
    if (mproc::trace_path() != file.string()) throw std::runtime_error("trace_path");
    mproc::trace_to(file.string());  // again: nothing changes
    mproc::Process three(exit_3);
    three.set_name("exits-3");
    three.start();
    three.join();
    mproc::Process killed(sleep_long);
    killed.set_name("killed");
    killed.start();
    killed.kill();
    killed.join();
    mproc::Queue<int> q, back;
    mproc::Process producer(produce, q, back);
    producer.set_name("producer");
    producer.start();
    int sum = 0;
    for (int i = 0; i < 5; ++i) sum += q.get();
    // The producer waits in back.get() meanwhile: that get is blocked this long at least.
    std::this_thread::sleep_for(100ms);
    back.put(7);
    sum += q.get();
    producer.join();
    if (sum != 10 + 107) throw std::runtime_error("wrong sum " + std::to_string(sum));
    std::set<int> workers;
    {
      // Pool workers record too (the pool traces to the same file: Pool 1).
      mproc::Pool pool({.workers = 2, .chunksize = 1});
      for (int w : pool.map(mproc::bind(put_from_worker, q), mproc::range(10))) workers.insert(w);
      int got = 0;
      for (int i = 0; i < 10; ++i) got += q.get();
      if (got != 45) throw std::runtime_error("wrong pool sum");
    }
    {
      mproc::ProcessPoolExecutor ex(2);
      if (ex.submit(trace_test_triple, 4).get() != 12) throw std::runtime_error("triple");
      auto bad = ex.submit(trace_test_needs_one, 2);
      if (bad.exception() == nullptr) throw std::runtime_error("no error");
    }
    mproc::ThreadPoolExecutor threads(2);
    std::vector<mproc::Future<int>> fs;
    for (int i = 0; i < 4; ++i) fs.push_back(threads.submit(trace_test_triple, i));
    for (auto& f : fs) f.get();
    threads.shutdown();
    std::ofstream out(pids);
    out << ::getpid() << ' ' << three.pid() << ' ' << killed.pid() << ' ' << producer.pid();
    for (int w : workers) out << ' ' << w;
  });
  const std::uint64_t t1 = now_ns();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::int64_t main_pid = 0, three_pid = 0, killed_pid = 0, producer_pid = 0;
  std::set<std::int64_t> worker_pids;
  {
    std::ifstream in(pids);
    in >> main_pid >> three_pid >> killed_pid >> producer_pid;
    for (std::int64_t w; in >> w;) worker_pids.insert(w);
  }
  ASSERT_GT(producer_pid, 0);
  ASSERT_FALSE(worker_pids.empty());
  EXPECT_TRUE(valid_json(file));
  EXPECT_EQ(trace_format_breach(file), "");
  const Trace t = read_trace(file);
  const std::int64_t processes = section(t, "Processes"), queues = section(t, "Queues");
  const std::int64_t process_submits = section(t, "Executor 1: process backend, submits");
  const std::int64_t thread_submits = section(t, "Executor 2: thread backend, submits");
  ASSERT_GT(processes, 0);
  ASSERT_GT(queues, 0);
  ASSERT_GT(process_submits, 0);
  ASSERT_GT(thread_submits, 0);
  // The pools, the executors' too, are sections of their own, numbered as pools.
  EXPECT_GT(section(t, "Pool 1: process backend, 2 workers"), 0);
  EXPECT_GT(section(t, "Pool 2: process backend, 2 workers"), 0);
  EXPECT_GT(section(t, "Pool 3: thread backend, 2 workers"), 0);

  // One track per Process, named after it, with how it ended.
  std::map<std::int64_t, Event> by_process;
  for (const Event& e : t.events)
    if (e.pid == processes) {
      EXPECT_EQ(e.cat, "process");
      EXPECT_TRUE(by_process.emplace(e.tid, e).second) << "process " << e.tid << " twice";
    }
  ASSERT_EQ(by_process.size(), 3u);
  const Event& three = by_process[three_pid];
  EXPECT_EQ(three.name, "process");
  EXPECT_EQ(three.label, "exits-3");
  EXPECT_EQ(three.status, "error");
  EXPECT_EQ(three.exitcode, 3);
  EXPECT_EQ(three.error, "exited with code 3");
  EXPECT_EQ(three.parent_pid, main_pid);
  EXPECT_EQ(t.thread_names.at({processes, three_pid}), "exits-3 (pid " + std::to_string(three_pid) + ")");
  const Event& killed = by_process[killed_pid];
  EXPECT_EQ(killed.status, "crashed");
  EXPECT_EQ(killed.exitcode, -9);
  EXPECT_EQ(killed.error, "killed by signal 9 (SIGKILL)");
  EXPECT_LT(killed.dur, 30e6);  // killed, not slept out
  EXPECT_EQ(by_process[producer_pid].status, "ok");
  EXPECT_EQ(by_process[producer_pid].exitcode, 0);
  EXPECT_EQ(by_process[producer_pid].error, "");
  // The producer ran while the queue traffic happened: its span holds its puts.
  const Event& producer = by_process[producer_pid];

  // Queue operations on the track of the thread that made them, in the child or here.
  std::map<std::pair<std::int64_t, std::string>, std::vector<Event>> ops;  // (process, op)
  std::set<std::string> queue_names;
  for (const Event& e : t.events)
    if (e.pid == queues) {
      EXPECT_EQ(e.cat, "queue");
      EXPECT_EQ(e.status, "ok");
      EXPECT_EQ(e.tid, e.process_pid);  // single-threaded processes: the thread is the process
      ops[{e.process_pid, e.name}].push_back(e);
      queue_names.insert(e.queue);
    }
  const auto& child_puts = ops[{producer_pid, "put"}];
  const auto& child_gets = ops[{producer_pid, "get"}];
  const auto& main_gets = ops[{main_pid, "get"}];
  const auto& main_puts = ops[{main_pid, "put"}];
  ASSERT_EQ(child_puts.size(), 6u);
  ASSERT_EQ(child_gets.size(), 1u);
  ASSERT_EQ(main_gets.size(), 6u + 10u);
  ASSERT_EQ(main_puts.size(), 1u);
  // The pool workers' puts, each on the track of the worker that made it.
  std::size_t worker_puts = 0;
  for (const std::int64_t w : worker_pids) {
    for (const Event& e : ops[{w, "put"}]) {
      ++worker_puts;
      EXPECT_EQ(e.queue, child_puts[0].queue);
    }
    EXPECT_THAT(t.thread_names.at({queues, w}), ::testing::StartsWith("PoolWorker-"));
    EXPECT_THAT(t.thread_names.at({queues, w}), HasSubstr("(pid " + std::to_string(w) + ")"));
  }
  EXPECT_EQ(worker_puts, 10u);
  EXPECT_EQ(queue_names.size(), 2u);  // q and back
  const std::string q_name = child_puts[0].queue, back_name = child_gets[0].queue;
  EXPECT_NE(q_name, back_name);
  EXPECT_THAT(q_name, ::testing::StartsWith("Queue " + std::to_string(main_pid) + "."));
  for (const Event& e : child_puts) {
    EXPECT_EQ(e.queue, q_name);
    EXPECT_EQ(e.bytes, static_cast<std::int64_t>(mproc::dumps(0).size()));
    EXPECT_EQ(e.label, "put " + q_name);
    EXPECT_GE(e.ts, producer.ts - 1);
    EXPECT_LE(e.ts + e.dur, producer.ts + producer.dur + 1);
  }
  for (const Event& e : main_gets) EXPECT_EQ(e.queue, q_name);
  EXPECT_EQ(main_puts[0].queue, back_name);
  // The producer's get waited for the parent's 100 ms sleep, and says so.
  EXPECT_GE(child_gets[0].blocked_us, 50e3);
  EXPECT_GE(child_gets[0].dur, child_gets[0].blocked_us);
  EXPECT_EQ(t.thread_names.at({queues, producer_pid}),
            "producer (pid " + std::to_string(producer_pid) + ")");
  EXPECT_EQ(t.thread_names.at({queues, main_pid}), "MainProcess (pid " + std::to_string(main_pid) + ")");

  // Submits: from submit() to the future's end, labelled by the function.
  std::vector<Event> psubmits, tsubmits;
  for (const Event& e : t.events) {
    if (e.pid == process_submits) psubmits.push_back(e);
    if (e.pid == thread_submits) tsubmits.push_back(e);
  }
  ASSERT_EQ(psubmits.size(), 2u);
  std::sort(psubmits.begin(), psubmits.end(), [](const Event& a, const Event& b) { return a.job < b.job; });
  EXPECT_EQ(psubmits[0].name, "submit");
  EXPECT_EQ(psubmits[0].cat, "submit");
  EXPECT_EQ(psubmits[0].status, "ok");
  EXPECT_EQ(psubmits[0].label, "trace_test_triple(int)");
  EXPECT_EQ(psubmits[1].status, "error");
  EXPECT_EQ(psubmits[1].function, "trace_test_needs_one(int)");
  EXPECT_EQ(psubmits[1].error, "std::invalid_argument: not one");
  ASSERT_EQ(tsubmits.size(), 4u);
  for (const Event& e : tsubmits) {
    EXPECT_EQ(e.status, "ok");
    EXPECT_EQ(e.function, "trace_test_triple(int)");
    EXPECT_TRUE(t.thread_names.contains({thread_submits, e.tid}));
  }
  // Every track's events follow one another (submits in flight take different lanes).
  expect_sane_times(t, t0, t1);
}

void segfault_at_17(int i) {
  if (i == 17) {
    // A real invalid access: a page the process may not touch.
    void* page = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *static_cast<volatile int*>(page) = 1;
  }
}

TEST_F(TraceTest, AChunkWhoseWorkerSegfaultsCarriesItsError) {
  const fs::path file = dir_ / "segv.json";
  {
    mproc::Pool pool({.workers = 2, .chunksize = 5, .trace = file.string()});
    try {
      pool.map(segfault_at_17, mproc::range(40));
      ADD_FAILURE() << "no error";
    } catch (const mproc::WorkerCrashed& e) {
      ASSERT_TRUE(e.task_index().has_value());
      EXPECT_EQ(*e.task_index(), 17u);
    }
  }
  EXPECT_EQ(trace_format_breach(file), "");
  const Trace t = read_trace(file);
  std::vector<Event> crashed;
  for (const Event& e : t.events)
    if (e.status != "ok") crashed.push_back(e);
  ASSERT_EQ(crashed.size(), 1u);
  EXPECT_EQ(crashed[0].status, "crashed");
  EXPECT_EQ(crashed[0].first, 17);
  EXPECT_EQ(crashed[0].failed_index, 17);
  // Under AddressSanitizer the worker's segfault ends as exit code 1 (sanitizers.hpp).
  const std::string how = kSanitizerCatchesSegv ? "worker exited with code 1"
                                                : "worker killed by signal 11 (SIGSEGV)";
  EXPECT_EQ(crashed[0].error, "mproc::WorkerCrashed: " + how + " (task 17, worker pid " +
                                  std::to_string(crashed[0].worker_pid) + ")");
}

TEST_F(TraceTest, AProgramDyingOfAnUncaughtExceptionKeepsItsProcessAndQueueEvents) {
  const fs::path file = dir_ / "dies.json";
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    ::execl(MPROC_POOL_HELPER, MPROC_POOL_HELPER, "trace", file.c_str(), "program", nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  std::string said;
  char c;
  while (::read(out[0], &c, 1) == 1) said += c;
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << status << " " << said;
  EXPECT_EQ(WTERMSIG(status), SIGABRT);
  std::int64_t three = 0, producer = 0, sleeper = 0;
  ASSERT_EQ(std::sscanf(said.c_str(), "pids %ld %ld %ld", &three, &producer, &sleeper), 3) << said;
  EXPECT_TRUE(valid_json(file));
  EXPECT_EQ(trace_format_breach(file), "");
  const Trace t = read_trace(file);
  const std::int64_t processes = section(t, "Processes"), queues = section(t, "Queues");
  std::map<std::int64_t, Event> by_process;
  int child_puts = 0, parent_gets = 0;
  for (const Event& e : t.events) {
    if (e.pid == processes) by_process[e.tid] = e;
    if (e.pid == queues && e.name == "put" && e.process_pid == producer) ++child_puts;
    if (e.pid == queues && e.name == "get" && e.process_pid == static_cast<std::int64_t>(pid)) ++parent_gets;
  }
  ASSERT_EQ(by_process.size(), 3u);
  EXPECT_EQ(by_process[three].exitcode, 3);
  EXPECT_EQ(by_process[producer].status, "ok");
  // Still running when the program died: written as such, up to the moment of the write.
  EXPECT_EQ(by_process[sleeper].status, "running");
  EXPECT_EQ(by_process[sleeper].exitcode, -1000);
  EXPECT_EQ(child_puts, 3);
  EXPECT_EQ(parent_gets, 3);
}

TEST_F(TraceTest, TraceToRefusesASecondFileAndAnUnwritableOne) {
  const int status = in_child([&] {
    try {
      mproc::trace_to((dir_ / "no" / "such" / "t.json").string());
      std::_Exit(10);
    } catch (const std::invalid_argument& e) {
      if (std::string(e.what()).find("mproc::trace_to: cannot write the trace file") == std::string::npos)
        std::_Exit(11);
    }
    if (!mproc::trace_path().empty()) std::_Exit(12);
    mproc::trace_to((dir_ / "first.json").string());
    try {
      mproc::trace_to((dir_ / "second.json").string());
      std::_Exit(13);
    } catch (const std::logic_error& e) {
      if (std::string(e.what()).find("already traces to") == std::string::npos) std::_Exit(14);
    }
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(fs::exists(dir_ / "first.json"));
  EXPECT_FALSE(fs::exists(dir_ / "second.json"));
  EXPECT_EQ(trace_format_breach(dir_ / "first.json"), "");
}

}  // namespace
