// The MPI side of mproc::Runtime: start-up (MPI, the same-program check, who is where),
// the loop of ranks 1..N-1, which run pool chunks sent by rank 0, and the stop.
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "mproc/error.hpp"
#include "mproc/pool.hpp"
#include "mproc/runtime.hpp"
#include "mpi/mpi_world.hpp"
#include "pool/code_ref.hpp"
#include "pool/pool_protocol.hpp"
#include "pool/pool_worker.hpp"
#include "pool/wire.hpp"

namespace mproc::detail::mpi {

World& world() {
  static World w;
  return w;
}

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw std::runtime_error(fmt::format("mproc: {} failed: {}", what, std::string(text, len)));
}

std::size_t begin_frame(std::vector<std::byte>& out) {
  const std::size_t at = out.size();
  put<std::uint64_t>(out, 0);
  return at;
}

void end_frame(std::vector<std::byte>& out, std::size_t at) {
  const std::uint64_t n = out.size() - at - sizeof(std::uint64_t);
  std::memcpy(out.data() + at, &n, sizeof n);
}

void append_frame(std::vector<std::byte>& out, std::span<const std::byte> msg) {
  const std::size_t at = begin_frame(out);
  out.insert(out.end(), msg.begin(), msg.end());
  end_frame(out, at);
}

bool Frames::next(std::span<const std::byte>& frame) {
  if (pos_ == bytes_.size()) return false;
  if (bytes_.size() - pos_ < sizeof(std::uint64_t)) throw SerializationError("corrupt MPI frame");
  std::uint64_t n;
  std::memcpy(&n, bytes_.data() + pos_, sizeof n);
  pos_ += sizeof n;
  if (n > bytes_.size() - pos_) throw SerializationError("corrupt MPI frame");
  frame = bytes_.subspan(pos_, n);
  pos_ += n;
  return true;
}

bool try_recv(int source, int tag, std::vector<std::byte>& out, MPI_Status& status) {
  int flag = 0;
  check(MPI_Iprobe(source, tag, world().comm, &flag, &status), "MPI_Iprobe");
  if (!flag) return false;
  int count = 0;
  check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
  out.resize(static_cast<std::size_t>(count));
  check(MPI_Recv(out.data(), count, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG, world().comm,
                 MPI_STATUS_IGNORE),
        "MPI_Recv");
  return true;
}

void recv_polling(int source, int tag, std::vector<std::byte>& out, MPI_Status& status) {
  long sleep_ns = 0;
  for (int spins = 0;; ++spins) {
    if (try_recv(source, tag, out, status)) return;
    if (spins < 2000) continue;  // about 50-100 us of polling
    sleep_ns = std::min<long>(sleep_ns == 0 ? 20'000 : sleep_ns * 2, 1'000'000);
    timespec ts{0, sleep_ns};
    ::nanosleep(&ts, nullptr);
  }
}

namespace {

using pool::FromWorker;
using pool::ToWorker;

/// Rank 0's Runtime ended while this rank was inside a pool's loop.
struct StopRequested {};

/// The worker loop's link on ranks 1..N-1: frames in MPI messages from rank 0. A chunk's
/// results are collected and leave as one message at the chunk's end, so rank 0 can refill
/// the rank while it runs its next chunk, and knows which chunks finished if the rank
/// dies; anything else leaves when the loop asks for more work.
class MpiLink final : public pool::WorkerLink {
 public:
  explicit MpiLink(std::vector<std::byte> first) : in_(std::move(first)), frames_(in_) {}

  void recv(std::vector<std::byte>& msg) override {
    std::span<const std::byte> frame;
    while (!frames_.next(frame)) {
      flush();
      MPI_Status st;
      recv_polling(0, MPI_ANY_TAG, in_, st);
      if (st.MPI_TAG == tag_control) throw StopRequested{};
      frames_ = Frames(in_);
    }
    msg.assign(frame.begin(), frame.end());
    if (!msg.empty() && msg[0] == static_cast<std::byte>(ToWorker::setup)) local_setup(msg);
  }
  bool packs_results() const override { return true; }
  void send(std::span<const std::byte> msg) override {
    append_frame(out_, msg);
    if (!msg.empty() && msg[0] == static_cast<std::byte>(FromWorker::chunk_end)) flush();
  }

  /// Sends what the loop produced since the last flush.
  void flush() {
    if (out_.empty()) return;
    if (out_.size() > static_cast<std::size_t>(INT_MAX))
      throw SerializationError("a chunk's results exceed 2 GiB, the limit of one MPI message");
    check(MPI_Send(out_.data(), static_cast<int>(out_.size()), MPI_BYTE, 0, tag_results,
                   world().comm),
          "MPI_Send");
    out_.clear();
  }

 private:
  /// A setup frame names its task's code as (module, offset); the loop wants an address.
  static void local_setup(std::vector<std::byte>& msg) {
    WireReader r(msg);
    r.get<ToWorker>();
    const auto job = r.get<std::uint64_t>();
    CodeRef ref;
    ref.module = r.get<std::uint64_t>();
    ref.offset = r.get<std::uint64_t>();
    const void* address = code_address(ref);  // SerializationError if not loaded here
    std::vector<std::byte> local;
    put(local, ToWorker::setup);
    put<std::uint64_t>(local, job);
    put<std::uintptr_t>(local, reinterpret_cast<std::uintptr_t>(address));
    auto state = r.rest();
    local.insert(local.end(), state.begin(), state.end());
    msg.swap(local);
  }

  std::vector<std::byte> in_;
  Frames frames_;
  std::vector<std::byte> out_;
};

/// Whether a message holds an `exit` frame (the end of a pool).
bool has_exit(std::span<const std::byte> message) {
  Frames frames(message);
  std::span<const std::byte> f;
  while (frames.next(f))
    if (!f.empty() && f[0] == static_cast<std::byte>(ToWorker::exit)) return true;
  return false;
}

/// Ranks 1..N-1: one worker loop per pool of rank 0, until rank 0 stops the runtime.
void serve() {
  World& w = world();
  pool::SlotControl control{};
  const pool::WorkerLoopOptions options{fmt::format("MpiRank-{}", w.rank), &control};
  std::vector<std::byte> msg;
  for (;;) {
    MPI_Status st;
    recv_polling(0, MPI_ANY_TAG, msg, st);
    if (st.MPI_TAG == tag_control) return;
    if (st.MPI_TAG != tag_tasks) continue;
    MpiLink link(std::move(msg));
    try {
      pool::run_worker_loop(link, options);
      link.flush();
    } catch (const StopRequested&) {
      return;
    } catch (const SerializationError& e) {
      // A task whose code is not in this rank's program: the pool is broken. Say so, then
      // wait for the pool's end.
      std::vector<std::byte> report, frames;
      put(report, FromWorker::init_failed);
      put_string(report, "mproc::SerializationError");
      put_string(report, fmt::format("rank {}: {}", w.rank, e.what()));
      append_frame(frames, report);
      check(MPI_Send(frames.data(), static_cast<int>(frames.size()), MPI_BYTE, 0, tag_results,
                     w.comm),
            "MPI_Send");
      for (;;) {
        recv_polling(0, MPI_ANY_TAG, msg, st);
        if (st.MPI_TAG == tag_control) return;
        if (has_exit(msg)) break;
      }
    }
  }
}

/// What every rank tells every other at start-up.
struct Identity {
  std::uint64_t key;
  std::int32_t pid;
  char host[64];
  char program[512];
};

void copy_text(char* dst, std::size_t n, const std::string& s) {
  const std::size_t k = std::min(n - 1, s.size());
  std::memcpy(dst, s.data(), k);
  dst[k] = '\0';
}

[[noreturn]] void die(const std::string& line, int code) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  MPI_Finalize();
  std::exit(code);
}

std::atomic<bool> g_stopped{false};

/// Whether an MPI launcher (mpirun/mpiexec of Open MPI or MPICH, srun with PMI or PMIx)
/// started this process, or MPROC_MPI=1 asks for MPI anyway. A program started on its
/// own skips MPI_Init, which costs tens of milliseconds and may print warnings: it is a
/// job of one rank either way.
bool launched_by_mpi() {
  if (const char* force = std::getenv("MPROC_MPI")) return std::strcmp(force, "0") != 0;
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
                          "MPI_LOCALNRANKS"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}

void hook_start(int& argc, char**& argv) {
  World& w = world();
  int initialized = 0, provided = 0;
  MPI_Initialized(&initialized);
  if (!initialized && !launched_by_mpi()) {
    w.ranks.push_back(RankInfo{static_cast<int>(::getpid()), ""});
    return;  // rank 0 of 1, no MPI
  }
  w.initialized = true;
  if (!initialized)
    check(MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
  else
    MPI_Query_thread(&provided);
  check(MPI_Comm_dup(MPI_COMM_WORLD, &w.comm), "MPI_Comm_dup");
  MPI_Comm_rank(w.comm, &w.rank);
  MPI_Comm_size(w.comm, &w.size);

  Identity me{};
  me.key = executable_key();
  me.pid = static_cast<std::int32_t>(::getpid());
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  copy_text(me.host, sizeof me.host, host);
  copy_text(me.program, sizeof me.program, executable_identity());
  std::vector<Identity> all(static_cast<std::size_t>(w.size));
  check(MPI_Allgather(&me, sizeof me, MPI_BYTE, all.data(), sizeof me, MPI_BYTE, w.comm),
        "MPI_Allgather");
  for (const Identity& id : all) w.ranks.push_back(RankInfo{id.pid, id.host});

  // Every rank sees the whole table, so every rank reaches the same verdict: all go on,
  // or all stop with the same message. Nobody is left waiting.
  for (int r = 1; r < w.size; ++r) {
    const Identity& other = all[static_cast<std::size_t>(r)];
    if (other.key == all[0].key) continue;
    die(fmt::format("mproc: rank {}: the ranks of this MPI job run different programs: rank 0 "
                    "runs {} on {}, rank {} runs {} on {}; mproc ships code as addresses in "
                    "the program, so every rank must run the same build",
                    w.rank, all[0].program, all[0].host, r, other.program, other.host),
        1);
  }
  if (provided < MPI_THREAD_SERIALIZED)
    die(fmt::format("mproc: rank {}: this MPI library gives thread level {}; mproc needs "
                    "MPI_THREAD_SERIALIZED or better",
                    w.rank, provided),
        1);
  if (w.rank == 0) return;

  try {
    serve();
    // Rank 0 waits for this before it finalises (see hook_stop).
    const std::byte ack = control_stop;
    check(MPI_Send(&ack, 1, MPI_BYTE, 0, tag_control, w.comm), "MPI_Send");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc: rank %d: %s\n", w.rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 70);
  }
  std::fflush(nullptr);
  MPI_Comm_free(&w.comm);
  MPI_Finalize();
  std::exit(0);
}

void hook_stop() noexcept {
  if (g_stopped.exchange(true)) return;
  World& w = world();
  if (!w.initialized) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  // A pool still open (leaked, or alive at std::terminate) stops calling MPI first.
  OpenPool* pool = w.open_pool.load();
  if (pool != nullptr) pool->runtime_ending();
  const std::byte stop = control_stop;
  for (int r = 1; r < w.size; ++r) MPI_Send(&stop, 1, MPI_BYTE, r, tag_control, w.comm);
  // Each rank acks once it has left its loop. Until then, take whatever the ranks still
  // send a pool that is gone: a rank blocked sending a large result would otherwise
  // never reach the stop, and MPI_Finalize would wait for it forever.
  std::vector<std::byte> msg;
  for (int acks = 0; acks < w.size - 1;) {
    MPI_Status st;
    try {
      recv_polling(MPI_ANY_SOURCE, MPI_ANY_TAG, msg, st);
    } catch (const std::exception&) {
      break;
    }
    if (st.MPI_TAG == tag_control) ++acks;
  }
  if (pool != nullptr) pool->release_sends();
  MPI_Comm_free(&w.comm);
  MPI_Finalize();
}

int hook_rank() noexcept { return world().rank; }
bool hook_initialized() noexcept { return world().initialized; }
int hook_size() noexcept { return world().size; }

}  // namespace

std::unique_ptr<PoolCore> make_mpi_pool(const PoolOptions& options);

}  // namespace mproc::detail::mpi

extern "C" const mproc::detail::MpiHooks* mproc_mpi_hooks() noexcept {
  using namespace mproc::detail::mpi;
  static const mproc::detail::MpiHooks hooks{hook_start, hook_stop, hook_rank, hook_size,
                                             hook_initialized, make_mpi_pool};
  return &hooks;
}
