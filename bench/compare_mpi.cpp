// Side-by-side: the mpi backend against raw MPI on the same ranks in the same run, and its
// word count over several ranks against one. One MPI program, started by mpiexec:
//
//   mpiexec -n 2 compare_mpi [--repeat 5] latency                      (shared memory)
//   mpiexec -n 2 --mca btl tcp,self compare_mpi [--repeat 5] latency   (TCP)
//   mpiexec -n 3 compare_mpi [--repeat 5] [--corpus-mb 32] wordcount
//
// latency: a raw MPI_Send/MPI_Recv ping-pong between ranks 0 and 1 of exactly the bytes
// an mpi Pool with one serving rank puts on the wire per round trip or per chunk, against
// that Pool's apply round trip and its map chunks of 1, 100 and 1000 ints. The ping-pong
// runs first, on an MPI this program initialises itself, before mproc::Runtime turns
// ranks 1..N-1 into servers (they never return to main). The pool's bytes are counted on
// rank 0 through the MPI profiling interface (MPI_Isend, MPI_Send and MPI_Recv below wrap
// PMPI_*), and the run fails if they are not the bytes the ping-pong sent. The same
// wrappers, on both ranks, time the five steps of an apply round trip.
//
// wordcount: mproc's word-count core (apps/mproc/words.hpp) over a generated corpus and,
// when present, the Gutenberg books of ../shared/data, with an mpi Pool over every rank
// but 0 against one over rank 1 alone and a serial count on rank 0, interleaved in the
// same run; every pool's counts must equal the serial ones.
//
// Every figure is the median of --repeat runs.
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/core.h>
#include <mproc/cpu_count.hpp>
#include <mproc/pool.hpp>
#include <mproc/range.hpp>
#include <mproc/runtime.hpp>
#include <mproc/serialize.hpp>

#include "compare_util.hpp"
#include "words.hpp"

namespace {

using bench::check;
using bench::Clock;
using bench::median_of;
using bench::run_command;
using bench::seconds_since;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// ---- what mproc puts on the wire, seen through the MPI profiling interface -------------

/// A rank's messages while `on` is set. On rank 0 written by whichever thread drives the
/// pool (the waiting caller, or the pool's own thread), read by the main thread after the
/// call that caused them has returned (the future's completion orders them); on rank 1
/// the serving loop's one thread does both.
struct WireCounter {
  std::atomic<bool> on{false};
  std::atomic<std::uint64_t> sends{0}, send_bytes{0}, recvs{0}, recv_bytes{0};
  std::atomic<std::int64_t> last_send_ns{0}, last_recv_ns{0};
  /// The last send before the last receive: the drop frame of a finished call may be
  /// sent after its result arrived, and must not count as the call's send.
  std::atomic<std::int64_t> send_before_recv_ns{0};

  void reset() {
    sends = send_bytes = recvs = recv_bytes = 0;
    last_send_ns = last_recv_ns = send_before_recv_ns = 0;
  }
};
WireCounter g_wire;

/// Times of one MPI call while g_wire.on, appended by one thread and read by another
/// after the fact: the count is published after the entry, and the storage never moves.
class EventLog {
 public:
  EventLog() : at_(std::size_t{1} << 17) {}
  void push(std::int64_t t) {
    const std::size_t n = n_.load(std::memory_order_relaxed);
    if (n == at_.size()) return;
    at_[n] = t;
    n_.store(n + 1, std::memory_order_release);
  }
  std::vector<std::int64_t> snapshot() const {
    const std::size_t n = n_.load(std::memory_order_acquire);
    return {at_.begin(), at_.begin() + static_cast<std::ptrdiff_t>(n)};
  }
  void clear() { n_.store(0, std::memory_order_relaxed); }

 private:
  std::vector<std::int64_t> at_;
  std::atomic<std::size_t> n_{0};
};
/// Rank 0: the pool's sends and receives.
EventLog g_isends, g_recvs;
/// Rank 1: per reply, when the message it answers arrived and when the reply left.
std::vector<std::int64_t> g_replies;

std::uint64_t bytes_of(int count, MPI_Datatype type) {
  int size = 0;
  PMPI_Type_size(type, &size);
  return static_cast<std::uint64_t>(count) * static_cast<std::uint64_t>(size);
}

}  // namespace

// The pool on rank 0 sends with MPI_Isend, a serving rank answers with
// MPI_Send, and both receive with MPI_Iprobe + MPI_Recv into a buffer of exactly the
// probed size. These definitions in the executable take the place of libmpi's for
// libmproc_mpi (the standard PMPI interposition).
extern "C" int MPI_Isend(const void* buf, int count, MPI_Datatype type, int dest, int tag,
                         MPI_Comm comm, MPI_Request* request) {
  if (g_wire.on.load(std::memory_order_relaxed)) {
    g_wire.sends.fetch_add(1, std::memory_order_relaxed);
    g_wire.send_bytes.fetch_add(bytes_of(count, type), std::memory_order_relaxed);
    const std::int64_t t = now_ns();
    g_wire.last_send_ns.store(t, std::memory_order_relaxed);
    g_isends.push(t);
  }
  return PMPI_Isend(buf, count, type, dest, tag, comm, request);
}

extern "C" int MPI_Send(const void* buf, int count, MPI_Datatype type, int dest, int tag,
                        MPI_Comm comm) {
  if (g_wire.on.load(std::memory_order_relaxed)) {
    g_replies.push_back(g_wire.last_recv_ns.load(std::memory_order_relaxed));
    g_replies.push_back(now_ns());
  }
  return PMPI_Send(buf, count, type, dest, tag, comm);
}

extern "C" int MPI_Recv(void* buf, int count, MPI_Datatype type, int source, int tag,
                        MPI_Comm comm, MPI_Status* status) {
  const int rc = PMPI_Recv(buf, count, type, source, tag, comm, status);
  if (g_wire.on.load(std::memory_order_relaxed)) {
    const std::int64_t t = now_ns();
    g_wire.last_recv_ns.store(t, std::memory_order_relaxed);
    g_recvs.push(t);
    g_wire.send_before_recv_ns.store(g_wire.last_send_ns.load(std::memory_order_relaxed),
                                     std::memory_order_relaxed);
    g_wire.recvs.fetch_add(1, std::memory_order_relaxed);
    g_wire.recv_bytes.fetch_add(bytes_of(count, type), std::memory_order_relaxed);
  }
  return rc;
}

namespace {

/// The pool's frames (src/pool_protocol.hpp; src/mpi frames them): each is a u64 length,
/// a kind byte and its fields.
namespace wire {
constexpr std::uint64_t frame = 8 + 1;
constexpr std::uint64_t setup = frame + 3 * 8;       // job, module, offset, then the state:
constexpr std::uint64_t fn_state = 1 + 2 * 8;        // a plain function's: marker, module, offset
constexpr std::uint64_t chunk = frame + 3 * 8;       // job, first, count
constexpr std::uint64_t chunk_item = 8;              // + the item's bytes: its end offset
constexpr std::uint64_t drop = frame + 8;            // job
constexpr std::uint64_t item_ok = frame;             // + the result's bytes
constexpr std::uint64_t items_packed = frame + 8;    // count, + the results back to back
constexpr std::uint64_t chunk_end = frame + 2 * 8;   // ns, start
}  // namespace wire

int plus_one(int x) { return x + 1; }

const std::uint64_t item_bytes = mproc::dumps(std::tuple<int>(7)).size();
const std::uint64_t result_bytes = mproc::dumps(plus_one(7)).size();

/// Bytes rank 0 sends and receives for one chunk of k items of a call in progress. An
/// apply's one result is a record of its own; a map of int -> int, whose types are their
/// own encoding, comes back as one packed array per chunk.
std::uint64_t chunk_bytes_in(std::uint64_t k) {
  return wire::chunk + k * (item_bytes + wire::chunk_item);
}
std::uint64_t apply_bytes_out() { return wire::item_ok + result_bytes + wire::chunk_end; }
std::uint64_t chunk_bytes_out(std::uint64_t k) {
  return wire::items_packed + k * result_bytes + wire::chunk_end;
}

/// Rank 1: starts (true) or stops recording when each reply's request arrived and when
/// the reply left.
bool record_replies(bool on) {
  g_wire.on = false;
  g_wire.reset();
  g_replies.clear();
  g_replies.reserve(1 << 17);
  g_wire.on = on;
  return on;
}

/// Rank 1: stops recording and returns what it recorded.
std::vector<std::int64_t> take_replies(int) {
  g_wire.on = false;
  return std::move(g_replies);
}

/// One figure of the latency section: what goes each way per round trip.
struct Shape {
  std::string figure;
  std::uint64_t chunk_items;  // 0: apply
  std::uint64_t bytes_in, bytes_out;
  std::uint64_t units;  // round trips, or chunks of one map call
};

std::vector<Shape> latency_shapes() {
  // An apply is a call of its own: a setup frame, its one chunk, and the drop of the
  // previous call.
  std::vector<Shape> s;
  s.push_back({"apply round trip", 0, wire::drop + wire::setup + wire::fn_state + chunk_bytes_in(1),
               apply_bytes_out(), 2000});
  for (auto [k, chunks] : {std::pair<std::uint64_t, std::uint64_t>{1, 4000}, {100, 1000}, {1000, 200}})
    s.push_back({fmt::format("map chunksize={}, per chunk", k), k, chunk_bytes_in(k),
                 chunk_bytes_out(k), chunks});
  return s;
}

/// Mean round trip of `rounds` raw ping-pongs between ranks 0 and 1 (rank 0 sends `in`
/// bytes, rank 1 answers with `out`), seconds; on rank 1 it returns 0.
double raw_round_trip(int rank, std::uint64_t in, std::uint64_t out, int rounds) {
  std::vector<std::byte> a(in), b(out);
  const int n_in = static_cast<int>(in), n_out = static_cast<int>(out);
  auto t = Clock::now();
  for (int i = 0; i < rounds; ++i) {
    if (rank == 0) {
      MPI_Send(a.data(), n_in, MPI_BYTE, 1, 7, MPI_COMM_WORLD);
      MPI_Recv(b.data(), n_out, MPI_BYTE, 1, 8, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else {
      MPI_Recv(a.data(), n_in, MPI_BYTE, 0, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(b.data(), n_out, MPI_BYTE, 0, 8, MPI_COMM_WORLD);
    }
  }
  return rank == 0 ? seconds_since(t) / rounds : 0.0;
}

/// A barrier that sleeps while it waits: Open MPI's MPI_Barrier spins, and a rank spinning
/// there would take a CPU from the ping-pong on a small machine.
void sleeping_barrier() {
  MPI_Request r;
  MPI_Ibarrier(MPI_COMM_WORLD, &r);
  for (int done = 0;;) {
    MPI_Test(&r, &done, MPI_STATUS_IGNORE);
    if (done) return;
    ::usleep(1000);
  }
}

// ---- word count -----------------------------------------------------------------------

constexpr std::uint64_t block_bytes = 1024 * 1024;  // as mproc wordcount

/// The generated corpus; made before the Runtime, so every rank holds the same one.
std::string g_corpus;

using mproc::words::Block;

/// What `mproc wordcount` does per block; the serial count runs the same function.
mproc::words::Counts count_item(Block b) { return mproc::words::count_block(b, g_corpus); }

struct Corpus {
  std::string name;
  std::uint64_t bytes = 0;
  std::vector<Block> blocks;
};

Corpus generated_corpus() {
  Corpus c{fmt::format("generated corpus, {} MB", g_corpus.size() >> 20), g_corpus.size(), {}};
  for (std::uint64_t b = 0; b < g_corpus.size(); b += block_bytes)
    c.blocks.push_back({"", b, std::min<std::uint64_t>(g_corpus.size(), b + block_bytes)});
  return c;
}

/// Every file under `dir`, in blocks; empty if `dir` is absent.
Corpus files_corpus(const std::string& dir, const std::string& name) {
  namespace fs = std::filesystem;
  Corpus c;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return c;
  std::vector<std::string> paths;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) paths.push_back(fs::absolute(e.path()).string());
  std::sort(paths.begin(), paths.end());
  for (auto& p : paths) {
    const std::uint64_t size = fs::file_size(p);
    c.bytes += size;
    for (std::uint64_t b = 0; b < size; b += block_bytes)
      c.blocks.push_back({p, b, std::min(size, b + block_bytes)});
  }
  c.name = fmt::format("{}, {} files, {} MB", name, paths.size(), c.bytes >> 20);
  return c;
}

// ---- the table ------------------------------------------------------------------------

struct Row {
  std::string figure;
  double mproc;
  std::string anchor_name;
  double anchor;
  std::string ratio;
  std::string target;
};

std::string fmt_time(double s) {
  if (s < 1e-6) return fmt::format("{:.0f} ns", s * 1e9);
  if (s < 1e-3) return fmt::format("{:.1f} us", s * 1e6);
  if (s < 1) return fmt::format("{:.2f} ms", s * 1e3);
  return fmt::format("{:.2f} s", s);
}

std::string speed_up(double anchor, double mproc) {
  return anchor >= mproc ? fmt::format("{:.2f}x faster", anchor / mproc)
                         : fmt::format("{:.2f}x slower", mproc / anchor);
}

/// The CPU, how many CPUs rank 0 may run on (Open MPI binds each of 2 ranks to one core),
/// the load when the figures were taken, the MPI library and the job.
std::string machine_line() {
  std::string model = run_command("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
  model.erase(0, model.find_first_not_of(' '));
  if (!model.empty() && model.back() == '\n') model.pop_back();
  std::string load = run_command("cut -d' ' -f1-3 /proc/loadavg");
  if (!load.empty() && load.back() == '\n') load.pop_back();
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(version, &len);
  std::string lib(version, static_cast<std::size_t>(len));
  lib = lib.substr(0, lib.find_first_of(",\n"));
  return fmt::format("machine: {}, {} online CPUs, rank 0 may use {}; load average {}; {}; {} ranks",
                     model, ::sysconf(_SC_NPROCESSORS_ONLN), mproc::cpu_count(), load, lib,
                     mproc::Runtime::size());
}

void print_rows(const std::vector<Row>& rows) {
  fmt::print("| figure | mproc | anchor | anchor time | ratio | target |\n");
  fmt::print("|---|---|---|---|---|---|\n");
  for (auto& r : rows)
    fmt::print("| {} | {} | {} | {} | {} | {} |\n", r.figure, fmt_time(r.mproc), r.anchor_name,
               fmt_time(r.anchor), r.ratio, r.target);
}

// ---- the two sections on rank 0 -------------------------------------------------------

/// Splits one map call's time (`seconds`, of s.units chunks) between rank 0's pool
/// (from a result message's MPI_Recv to its next MPI_Isend), rank 1 (from a message's
/// MPI_Recv to its answer's MPI_Send) and the rest. Rank 1's first reply answers
/// record_replies.
void split_map_time(const Shape& s, double seconds, const std::vector<std::int64_t>& replies,
                    std::vector<std::string>& out) {
  double rank1 = 0;
  for (std::size_t j = 2; j + 1 < replies.size(); j += 2)
    rank1 += static_cast<double>(replies[j + 1] - replies[j]) * 1e-9;
  const std::vector<std::int64_t> sends = g_isends.snapshot(), recvs = g_recvs.snapshot();
  double rank0 = 0;
  for (std::size_t k = 0; k + 1 < recvs.size(); ++k) {
    auto next = std::lower_bound(sends.begin(), sends.end(), recvs[k]);
    if (next != sends.end() && *next < recvs[k + 1])
      rank0 += static_cast<double>(*next - recvs[k]) * 1e-9;
  }
  const double units = static_cast<double>(s.units);
  out.push_back(fmt::format("| {} | {} | {} | {} | {} |", s.figure, fmt_time(seconds / units),
                            fmt_time(rank0 / units), fmt_time(rank1 / units),
                            fmt_time((seconds - rank0 - rank1) / units)));
}

void latency_section(int repeat, const std::vector<Shape>& shapes, const std::vector<double>& raw) {
  const std::string transport =
      std::getenv("OMPI_MCA_btl") ? fmt::format("btl {}", std::getenv("OMPI_MCA_btl"))
                                  : std::string("default btl (shared memory)");
  mproc::Pool pool({.workers = 1, .backend = mproc::Backend::mpi});
  check(pool.workers() == 1, "one serving rank");
  pool.map(plus_one, mproc::range(0, 10'000), {.chunksize = 100});

  // s.units apply round trips, or one map call of s.units chunks; every result checked.
  auto run = [&](const Shape& s) {
    if (s.chunk_items == 0) {
      for (int i = 0; i < static_cast<int>(s.units); ++i)
        check(pool.apply(plus_one, i) == i + 1, "apply");
      return;
    }
    const int n = static_cast<int>(s.chunk_items * s.units);
    auto r = pool.map(plus_one, mproc::range(0, n), {.chunksize = s.chunk_items});
    check(r.size() == static_cast<std::size_t>(n), "map: result count");
    for (int i = 0; i < n; ++i) check(r[static_cast<std::size_t>(i)] == i + 1, "map");
  };

  std::vector<Row> rows;
  std::vector<std::string> notes, splits;
  for (std::size_t f = 0; f < shapes.size(); ++f) {
    const Shape& s = shapes[f];
    const double per = median_of(repeat, [&] {
      auto t = Clock::now();
      run(s);
      return seconds_since(t) / static_cast<double>(s.units);
    });

    // The same work once more with the wrappers on. The bytes the ping-pong sent must be
    // the bytes mproc sent; each call adds its setup and drop frames, and where a window
    // starts and ends may move one drop in or out: hence the slack. Both ranks log when
    // messages come and go, to split the time between them.
    check(pool.apply(record_replies, true), "rank 1 records");
    g_wire.reset();
    g_isends.clear();
    g_recvs.clear();
    g_wire.on = true;
    const auto t_start = Clock::now();
    run(s);
    const double t_run = seconds_since(t_start);
    g_wire.on = false;
    const std::vector<std::int64_t> replies = pool.apply(take_replies, 0);
    if (s.chunk_items != 0) split_map_time(s, t_run, replies, splits);
    check(g_wire.sends > 0 && g_wire.recvs > 0,
          "the MPI profiling wrappers see the pool's messages");
    const double units = static_cast<double>(s.units);
    const double in = static_cast<double>(g_wire.send_bytes) / units;
    const double out = static_cast<double>(g_wire.recv_bytes) / units;
    const double slack = 128.0 / units;
    const char* unit = s.chunk_items == 0 ? "round trip" : "chunk";
    if (std::abs(in - static_cast<double>(s.bytes_in)) > slack ||
        std::abs(out - static_cast<double>(s.bytes_out)) > slack)
      throw std::runtime_error(fmt::format(
          "{}: mproc sent {:.2f} bytes and received {:.2f} per {}; the ping-pong used {} "
          "and {} (the wire constants need updating)",
          s.figure, in, out, unit, s.bytes_in, s.bytes_out));
    notes.push_back(fmt::format(
        "{}: {} B to the rank, {} B back (mproc measured: {:.2f}, {:.2f}); mproc's MPI "
        "messages per {}: {:.2f} sent, {:.2f} received",
        s.figure, s.bytes_in, s.bytes_out, in, out, unit,
        static_cast<double>(g_wire.sends) / units, static_cast<double>(g_wire.recvs) / units));

    rows.push_back({s.figure, per,
                    fmt::format("raw MPI_Send/MPI_Recv ping-pong, {} B + {} B", s.bytes_in,
                                s.bytes_out),
                    raw[f], fmt::format("{:.2f}x the anchor", per / raw[f]), "<= 2x"});
  }

  // Where an apply round trip goes: the calling thread encodes the call and sends it
  // (MPI_Isend); rank 1 receives it, runs it and answers; the calling thread, waiting on
  // the future, polls for the answer, receives it and completes the future.
  // Rank 1 records its side itself (both ranks read CLOCK_MONOTONIC of one machine).
  constexpr int phases = 5;
  std::vector<double> phase[phases], total;
  const int calls = static_cast<int>(shapes[0].units);
  std::vector<std::int64_t> t0(static_cast<std::size_t>(calls * repeat)), t1(t0.size()),
      t2(t0.size()), t3(t0.size());
  check(pool.apply(record_replies, true), "rank 1 records");
  g_wire.reset();
  g_wire.on = true;
  for (std::size_t i = 0; i < t0.size(); ++i) {
    t0[i] = now_ns();
    check(pool.apply(plus_one, static_cast<int>(i)) == static_cast<int>(i) + 1, "apply");
    t3[i] = now_ns();
    t1[i] = g_wire.send_before_recv_ns.load();
    t2[i] = g_wire.last_recv_ns.load();
  }
  g_wire.on = false;
  const std::vector<std::int64_t> replies = pool.apply(take_replies, 0);
  // Rank 1's first reply answers record_replies itself.
  check(replies.size() == 2 * (t0.size() + 1), "one reply per apply on rank 1");
  for (std::size_t i = 0; i < t0.size(); ++i) {
    const std::int64_t r_in = replies[2 * i + 2], r_out = replies[2 * i + 3];
    const std::int64_t at[] = {t0[i], t1[i], r_in, r_out, t2[i], t3[i]};
    for (int p = 0; p < phases; ++p)
      phase[p].push_back(static_cast<double>(at[p + 1] - at[p]) * 1e-9);
    total.push_back(static_cast<double>(t3[i] - t0[i]) * 1e-9);
  }
  auto quantile = [](std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
  };
  auto mean = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return sum / static_cast<double>(v.size());
  };
  auto spread = [&](const std::vector<double>& v) {
    return fmt::format("{} | {} | {} | {}", fmt_time(quantile(v, 0.1)), fmt_time(quantile(v, 0.5)),
                       fmt_time(quantile(v, 0.9)), fmt_time(mean(v)));
  };
  const char* phase_names[phases] = {
      "rank 0: apply() called -> MPI_Isend",
      "MPI_Isend -> rank 1's MPI_Recv returns",
      "rank 1: MPI_Recv -> MPI_Send of the result (decode, run, encode)",
      "rank 1's MPI_Send -> rank 0's MPI_Recv returns",
      "rank 0: MPI_Recv -> apply() returns",
  };

  fmt::print("{}; {}; one serving rank; median of {} runs\n\n", machine_line(), transport,
             repeat);
  print_rows(rows);
  fmt::print("\n");
  for (auto& n : notes) fmt::print("- {}\n", n);
  fmt::print("\nWhere a map chunk's time goes (one more map call per figure, the wrappers on):\n\n");
  fmt::print("| figure | per chunk | rank 0: results in -> next chunks out | rank 1: chunks in -> "
             "results out | the rest: MPI, polling, the calling thread |\n|---|---|---|---|---|\n");
  for (auto& line : splits) fmt::print("{}\n", line);
  fmt::print("\nWhere an apply round trip goes ({} calls):\n\n", total.size());
  fmt::print("| phase | p10 | median | p90 | mean |\n|---|---|---|---|---|\n");
  for (int p = 0; p < phases; ++p) fmt::print("| {} | {} |\n", phase_names[p], spread(phase[p]));
  fmt::print("| the whole round trip | {} |\n", spread(total));
  fmt::print("| raw MPI_Send/MPI_Recv round trip, same bytes (mean) | | | | {} |\n",
             fmt_time(raw[0]));
}

void wordcount_section(int repeat) {
  const int ranks = mproc::Runtime::size();
  std::vector<Corpus> corpora{generated_corpus()};
  const std::string books = std::string(MPROC_BENCH_DATA_DIR) + "/gutenberg/books";
  Corpus g = files_corpus(books, "Gutenberg books");
  if (g.blocks.empty())
    fmt::print(stderr, "compare_mpi: {} not found: its word count row is skipped\n", books);
  else
    corpora.push_back(std::move(g));

  std::vector<Row> rows;
  for (const Corpus& c : corpora) {
    mproc::words::Counts serial;
    auto run_serial = [&] {
      auto t = Clock::now();
      mproc::words::Counts counts;
      for (const Block& b : c.blocks) mproc::words::merge(counts, count_item(b));
      const double s = seconds_since(t);
      serial = std::move(counts);
      return s;
    };
    auto run = [&](unsigned workers) {
      mproc::Pool pool({.workers = workers, .backend = mproc::Backend::mpi});
      auto t = Clock::now();
      auto counts = pool.map_reduce(count_item, mproc::words::merge, c.blocks);
      const double s = seconds_since(t);
      check(counts == serial, "word counts differ from the serial count");
      return s;
    };
    run_serial();
    run(0);
    // Interleaved, so that a slow minute of the machine hits all three alike.
    std::vector<double> all, one, alone;
    for (int k = 0; k < repeat; ++k) {
      alone.push_back(run_serial());
      all.push_back(run(0));
      one.push_back(run(1));
    }
    for (auto* v : {&all, &one, &alone}) std::sort(v->begin(), v->end());
    const double t_all = all[all.size() / 2], t_one = one[one.size() / 2];
    const double serial_s = alone[alone.size() / 2];
    rows.push_back({fmt::format("wordcount, {}, {} serving ranks", c.name, ranks - 1), t_all,
                    "the same, 1 serving rank", t_one,
                    speed_up(t_one, t_all), "> 1x"});
    rows.push_back({fmt::format("wordcount, {}, {} serving ranks", c.name, ranks - 1), t_all,
                    "serial count on rank 0", serial_s,
                    speed_up(serial_s, t_all), ""});
    fmt::print(stderr,
               "compare_mpi: {}: {} distinct words, counts identical to the serial count; "
               "{} serving ranks {:.3f}..{:.3f} s, 1 serving rank {:.3f}..{:.3f} s, serial "
               "{:.3f}..{:.3f} s\n",
               c.name, serial.size(), ranks - 1, all.front(), all.back(), one.front(),
               one.back(), alone.front(), alone.back());
  }
  fmt::print("{}; median of {} runs\n\n", machine_line(), repeat);
  print_rows(rows);
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 5;
  bool latency = false, wordcount = false;
  std::string corpus_size = "32";
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--repeat" && i + 1 < argc) repeat = std::atoi(argv[++i]);
    else if (a == "--corpus-mb" && i + 1 < argc) corpus_size = argv[++i];
    else if (a == "latency") latency = true;
    else if (a == "wordcount") wordcount = true;
    else {
      std::fprintf(stderr,
                   "usage: mpiexec -n N compare_mpi [--repeat N] [--corpus-mb MB] [latency] "
                   "[wordcount]\n");
      return 2;
    }
  }
  if (!latency && !wordcount) latency = wordcount = true;
  if (repeat < 1) repeat = 1;

  // MPI first, as mproc::Runtime would initialise it, so that every rank can take part in
  // the raw ping-pong before ranks 1..N-1 start serving.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size < 2) {
    if (rank == 0) std::fprintf(stderr, "compare_mpi: run it under mpiexec -n 2 or more\n");
    MPI_Finalize();
    return 2;
  }

  const std::vector<Shape> shapes = latency_shapes();
  std::vector<double> raw;
  if (latency && rank <= 1) {
    for (const Shape& s : shapes) {
      raw_round_trip(rank, s.bytes_in, s.bytes_out, 200);
      raw.push_back(median_of(
          repeat, [&] { return raw_round_trip(rank, s.bytes_in, s.bytes_out, 2000); }));
    }
  }
  if (wordcount) g_corpus = mproc::words::synthetic_corpus(std::stoull(corpus_size) << 20);
  sleeping_barrier();

  mproc::Runtime runtime(argc, argv);
  try {
    if (latency) latency_section(repeat, shapes, raw);
    if (wordcount) {
      if (size < 3)
        fmt::print(stderr, "compare_mpi: the word count needs 3 ranks or more: skipped\n");
      else
        wordcount_section(repeat);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compare_mpi: %s\n", e.what());
    return 1;
  }
  return 0;
}
