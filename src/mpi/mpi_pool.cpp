// The mpi pool on rank 0: hands chunks to ranks 1..N-1 and collects their results, with
// the process pool's wire protocol carried in MPI messages.
//
// Whoever waits does the work: a thread blocked on one of the pool's futures (Pool::map,
// apply, Future::get) drives the messages itself, so a call's result reaches it without a
// hand-off between threads (with one core per rank, as mpiexec binds them, that hand-off
// cost more than the message). A dispatcher thread drives when nobody waits: callbacks,
// imap, work submitted and not yet awaited. One driver at a time (drive_mutex_).
//
// Each message is a sequence of frames. Rank 0 sends a chunk (preceded, the first time a
// rank gets a call, by the call's setup, whose code travels as (module, offset)); the rank
// answers with one message holding every item's result and the chunk's end. Two chunks
// are in flight per rank, so a rank never waits for rank 0 between chunks. Rank 0 never
// blocks in MPI (Isend, Iprobe, Test), so neither side can wait for the other in a send.
//
// MPI cannot lose a rank and go on: a rank that dies ends the job (see the pidfd watch
// below and docs/distributed.md). So there is no re-queueing here, no kill and no timeout.
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "mproc/detail/trace.hpp"
#include "mproc/error.hpp"
#include "mproc/pool.hpp"
#include "mpi/mpi_world.hpp"
#include "pool/code_ref.hpp"
#include "pool/dispatcher.hpp"
#include "pool/pool_protocol.hpp"
#include "pool/wire.hpp"
#include "wait_helper.hpp"

namespace mproc::detail::mpi {
namespace {

using pool::FromWorker;
using pool::ToWorker;
using Clock = std::chrono::steady_clock;

/// After its last event a driver polls this long before it sleeps.
constexpr auto spin_before_sleep = std::chrono::microseconds(100);
/// How often an idle driver looks for ranks that died.
constexpr auto death_check_interval = std::chrono::milliseconds(2);
/// The pool's thread naps at most this long while the pool is in use (a call submitted
/// within `recent_use`), so that a call nobody waits for is answered promptly without a
/// wake-up per call; after that it sleeps up to `idle_nap` and a submission wakes it.
constexpr auto busy_nap = std::chrono::milliseconds(1);
constexpr auto idle_nap = std::chrono::milliseconds(20);
constexpr auto recent_use = std::chrono::seconds(1);

struct JobEntry : JobBookEntry {
  std::set<int> setup{};  // ranks holding the job's code
};

struct RankSlot {
  int rank;
  std::deque<ChunkRecord> chunks;
  std::size_t flushes = 0;          // flush frames sent and not yet answered
  std::vector<std::byte> pending;   // frames to send in the next message
  int pidfd = -1;                   // a rank on this host: its death is seen at once
};

struct Send {
  MPI_Request request = MPI_REQUEST_NULL;
  std::vector<std::byte> bytes;
};

class MpiPoolCore;
/// The pool this thread is driving right now (inside step()), if any.
thread_local MpiPoolCore* t_driving = nullptr;

/// Set by the SIGTERM handler an open pool installs; the next driver round reports.
std::atomic<bool> g_sigterm{false};
extern "C" void note_sigterm(int) { g_sigterm.store(true); }

/// SIGTERM's default action again (the pool is closing, or rank 0 is to die of it).
void restore_default_sigterm() {
  struct sigaction sa {};
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
}

/// What a rank is running, for messages: "item 7 of map (call 1)". A rank sends a chunk's
/// results at its end, so within a chunk of several items rank 0 knows only the chunk.
std::string describe_running(const RankSlot& s) {
  if (s.chunks.empty()) return "nothing";
  const ChunkRecord& c = s.chunks.front();
  const std::size_t from = c.first + c.done, to = c.first + c.count - 1;
  return from == to ? fmt::format("item {} of {} (call {})", from, c.method, c.job)
                    : fmt::format("one of items {}..{} of {} (call {})", from, to, c.method,
                                  c.job);
}

class MpiPoolCore final : public Dispatcher<MpiPoolCore, JobEntry, RankSlot>,
                          public WaitHelper,
                          public OpenPool {
  friend class JobBook<MpiPoolCore, JobEntry>;
  friend class Dispatcher<MpiPoolCore, JobEntry, RankSlot>;

 public:
  explicit MpiPoolCore(const PoolOptions& options);
  ~MpiPoolCore() override;

  unsigned workers() const noexcept override { return static_cast<unsigned>(slots_.size()); }
  void submit(std::shared_ptr<Job> job) override;
  void wake() noexcept override { cv_.notify_one(); }

  bool help_until(const FutureStateBase& state,
                  const std::chrono::steady_clock::time_point* deadline) override;
  void runtime_ending() noexcept override;
  void release_sends() noexcept override;

 private:
  /// Marks this thread as the driver for a scope (t_driving).
  struct Driving {
    explicit Driving(MpiPoolCore* p) { t_driving = p; }
    ~Driving() { t_driving = nullptr; }
  };
  void loop();
  void run_loop();
  bool step(bool send_only = false);
  bool safe_step(bool send_only = false);
  bool try_send();
  /// How long the pool's thread may nap now; under mutex_.
  Clock::duration nap_limit() const {
    return Clock::now() - last_submit_ < recent_use ? busy_nap : idle_nap;
  }
  bool may_drive() const noexcept { return !runtime_ended_.load() && !failed_.load(); }
  bool poll_results();
  void flush_pending();
  bool test_sends();
  void check_rank_deaths();
  void report_sigterm();
  void take_late_results();
  bool anything_in_flight() const;
  bool awaiting_replies() const;
  RankSlot* slot_of(int rank);
  std::string rank_name(int rank) const;

  // What Dispatcher asks of a pool (see dispatcher.hpp).
  /// A message between ranks costs microseconds, more over a network: aim adaptive chunks
  /// at the top of the design's 0.1-1 ms.
  static constexpr double target_chunk_ns = 1'000'000;
  static constexpr bool can_kill = false;  // MPI cannot stop a rank and go on
  bool give_chunk(RankSlot& s);
  std::size_t tell_job(const JobEntry& j, ToWorker what);
  void kill_job_workers(const Job*) {}
  void put_code(std::vector<std::byte>& out, const Job& job) const {
    // Another rank may have loaded the code at another address: (module, offset).
    const CodeRef ref = code_ref(job.vtable);
    put<std::uint64_t>(out, ref.module);
    put<std::uint64_t>(out, ref.offset);
  }
  bool can_take_chunk(const RankSlot&) const { return true; }
  bool all_started() const { return true; }
  bool one_item_chunks() const { return false; }
  /// Ranks get every chunk's items as bytes (an `indices` chunk is a process pool's).
  bool index_chunks(const Job&) const { return false; }
  pid_t worker_pid(const RankSlot& s) const {
    return ranks_[static_cast<std::size_t>(s.rank)].pid;
  }
  std::uint32_t trace_lane(const RankSlot& s) const {
    return static_cast<std::uint32_t>(s.rank - 1);
  }
  std::string worker_name(const RankSlot& s) const { return rank_name(s.rank); }
  std::string worker_where(const RankSlot& s) const {
    return fmt::format("on {}", rank_name(s.rank));
  }
  void partial_arrived(RankSlot& s, std::uint64_t) {
    if (s.flushes > 0) --s.flushes;
  }
  void items_arrived(RankSlot&, JobEntry*, bool) {}
  /// A broken message: nothing more from the ranks can be trusted (see safe_step).
  [[noreturn]] void protocol_error(const char* what) {
    throw SerializationError(fmt::format("MPI pool: {}", what));
  }
  bool dispatcher_gone() const { return finished_; }
  bool in_own_work() const noexcept override { return t_driving == this; }
  void stopping() { leaving_ = true; }
  void dispatcher_joined();

  const std::vector<RankInfo>& ranks_ = world().ranks;

  // The driver only (drive_mutex_).
  std::mutex drive_mutex_;
  Clock::time_point last_death_check_{};
  std::list<Send> sends_;
  std::list<Send> spare_sends_;      // finished sends, kept with their buffers for reuse
  std::vector<std::byte> received_;  // the last message received
  std::vector<std::size_t> ends_;    // scratch for give_chunk

  // Shared with user threads.
  std::condition_variable cv_;       // wakes the dispatcher
  bool finished_ = false;  // the dispatcher has released the ranks
  bool long_nap_ = false;  // the pool's thread sleeps up to idle_nap: wake it to submit
  Clock::time_point last_submit_{};
  std::atomic<unsigned> helpers_{0};          // threads waiting in help_until
  std::atomic<bool> runtime_ended_{false};    // the Runtime ended: no MPI calls any more
  std::atomic<bool> failed_{false};           // a driver failed: no MPI calls any more
  std::atomic<bool> leaving_{false};          // join(): waiters stop helping

  bool sigterm_handler_ = false;  // this pool installed note_sigterm
};

MpiPoolCore::MpiPoolCore(const PoolOptions& options) : Dispatcher(options) {
  World& w = world();
  if (w.rank != 0) throw std::invalid_argument("Pool: an mpi Pool can only be made on rank 0");
  if (options.task_timeout.count() > 0)
    throw std::invalid_argument(
        "Pool: task_timeout needs Backend::process (MPI cannot stop a rank and go on)");
  if (options.initializer)
    throw std::invalid_argument(
        "Pool: Backend::mpi has no initializer (a std::function cannot be sent to other "
        "ranks); initialise in main before the Runtime, which every rank runs");
  if (options.max_tasks_per_child != 0)
    throw std::invalid_argument("Pool: max_tasks_per_child needs Backend::process");
  if (w.open_pool.load() != nullptr)
    throw std::invalid_argument(
        "Pool: only one mpi Pool (or MpiPoolExecutor) may exist at a time");
  const unsigned available = static_cast<unsigned>(w.size - 1);
  const unsigned n = options.workers == 0 ? available : std::min(options.workers, available);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  for (unsigned k = 0; k < n; ++k) {
    RankSlot s;
    s.rank = static_cast<int>(k + 1);
    const RankInfo& info = w.ranks[k + 1];
    if (info.host == host)
      s.pidfd = static_cast<int>(::syscall(SYS_pidfd_open, info.pid, 0));
    slots_.push_back(std::move(s));
  }
  if (const std::string trace = trace_path_for(options.trace); !trace.empty())
    tracer_ = std::make_unique<Tracer>(trace, "mpi", n, true);
  // When a rank on another machine dies, Open MPI's launcher ends the job by sending
  // SIGTERM (and a few seconds later SIGKILL) to every other rank: catch it, so that rank
  // 0 can say what each rank was running first. Only if nobody else handles SIGTERM.
  struct sigaction old {};
  if (::sigaction(SIGTERM, nullptr, &old) == 0 && old.sa_handler == SIG_DFL &&
      (old.sa_flags & SA_SIGINFO) == 0) {
    struct sigaction sa {};
    sa.sa_handler = note_sigterm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    g_sigterm.store(false);
    sigterm_handler_ = ::sigaction(SIGTERM, &sa, nullptr) == 0;
  }
  w.open_pool.store(this);
  thread_ = std::thread([this] { loop(); });
  set_process_wait_helper(this);
}

MpiPoolCore::~MpiPoolCore() {
  try {
    join();
  } catch (...) {
  }
  for (auto& s : slots_)
    if (s.pidfd >= 0) ::close(s.pidfd);
}

void MpiPoolCore::submit(std::shared_ptr<Job> job) {
  bool wake;
  {
    std::lock_guard lock(mutex_);
    if (runtime_ended_.load())
      throw BrokenPool("Pool: the mproc::Runtime has ended; the ranks are gone");
    enqueue_locked(std::move(job));
    last_submit_ = Clock::now();
    wake = long_nap_;
  }
  // Send the first chunks from this thread if no one else is driving. Waking the pool's
  // thread instead would cost a switch between threads on the core mpiexec gives rank 0;
  // it naps briefly while the pool is in use, and comes for the answers unless a waiting
  // caller takes them first.
  if (!try_send() || wake) cv_.notify_one();
}

bool MpiPoolCore::try_send() {
  if (t_driving != nullptr) return false;
  std::unique_lock drive(drive_mutex_, std::try_to_lock);
  if (!drive.owns_lock() || !may_drive()) return false;
  Driving scope(this);
  safe_step(true);
  return true;
}

bool MpiPoolCore::help_until(const FutureStateBase& state,
                             const std::chrono::steady_clock::time_point* deadline) {
  // A callback the driver runs, waiting for the pool: nobody else can drive meanwhile.
  if (t_driving != nullptr) return false;
  {
    std::lock_guard lock(mutex_);
    ++helpers_;
  }
  auto idle_since = Clock::now();
  bool busy = true;  // the pool has work for its own thread once this one leaves
  for (unsigned idle_rounds = 0; !state.done() && may_drive() && !leaving_.load();) {
    bool progress = false;
    {
      std::unique_lock drive(drive_mutex_, std::try_to_lock);
      if (drive.owns_lock() && may_drive()) {
        Driving scope(this);
        progress = safe_step();
        busy = awaiting_replies();
      }
    }
    if (progress) {
      idle_rounds = 0;
      continue;
    }
    // Nothing arrived: poll on for a while (a short task's answer is microseconds away),
    // then sleep in steps that grow with the wait, at most 1/16 of it, so a long task is
    // not delayed by more than a few percent and an idle wait costs little CPU. The clock
    // is read every few rounds only.
    if (idle_rounds++ % 16 != 0) continue;
    const auto now = Clock::now();
    if (idle_rounds == 1) idle_since = now;
    if (deadline != nullptr && now >= *deadline) break;
    const auto waited = now - idle_since;
    if (waited < spin_before_sleep) continue;
    auto nap = std::clamp<Clock::duration>(waited / 16, std::chrono::microseconds(20),
                                           std::chrono::milliseconds(1));
    auto until = now + nap;
    if (deadline != nullptr && *deadline < until) until = *deadline;
    state.block_until(&until);
  }
  {
    std::lock_guard lock(mutex_);
    --helpers_;
  }
  // Waking the pool's thread when it has nothing to do would only take the core from
  // this one (mpiexec binds a rank to one core).
  if (busy) cv_.notify_one();
  return state.done();
}

void MpiPoolCore::runtime_ending() noexcept {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  if (t_driving == this) {
    // std::terminate inside the pool's own work (a callback): the rest of the pool waits
    // for this thread's drive_mutex_, so it makes no MPI call; just end.
    runtime_ended_ = true;
    return;
  }
  try {
    {
      std::lock_guard drive(drive_mutex_);
      runtime_ended_ = true;
      Driving scope(this);
      fail_everything(std::make_exception_ptr(
          BrokenPool("Pool: the mproc::Runtime ended while the mpi Pool still had work")));
      finish_jobs();
    }
    cv_.notify_one();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  } catch (...) {
  }
}

void MpiPoolCore::release_sends() noexcept {
  for (auto& send : sends_) MPI_Wait(&send.request, MPI_STATUS_IGNORE);
  sends_.clear();
}

void MpiPoolCore::dispatcher_joined() {
  set_process_wait_helper(nullptr);
  if (sigterm_handler_) {
    sigterm_handler_ = false;
    restore_default_sigterm();
    if (g_sigterm.exchange(false)) ::kill(::getpid(), SIGTERM);  // came as the pool closed
  }
  OpenPool* self = this;
  world().open_pool.compare_exchange_strong(self, nullptr);
}

RankSlot* MpiPoolCore::slot_of(int rank) {
  if (rank < 1 || static_cast<std::size_t>(rank) > slots_.size()) return nullptr;
  return &slots_[static_cast<std::size_t>(rank - 1)];
}

std::string MpiPoolCore::rank_name(int rank) const {
  const RankInfo& info = ranks_[static_cast<std::size_t>(rank)];
  return fmt::format("rank {} (pid {} on {})", rank, info.pid, info.host);
}

// ---- driving ---------------------------------------------------------------------------

void MpiPoolCore::loop() {
  run_loop();
  {
    std::lock_guard lock(mutex_);
    finished_ = true;
  }
  idle_cv_.notify_all();
}

void MpiPoolCore::run_loop() {
  auto last_progress = Clock::now();
  for (;;) {
    if (helpers_.load() > 0) {
      // Waiting callers drive; stay out of their way until they leave.
      std::unique_lock lock(mutex_);
      cv_.wait_for(lock, nap_limit(),
                   [&] { return helpers_.load() == 0 || stop_ || terminate_ || !may_drive(); });
      if (helpers_.load() > 0 && !stop_ && !terminate_) continue;
    }
    bool progress, stop_now, awaiting, terminated = false;
    std::uint64_t generation_seen = 0;
    {
      std::lock_guard drive(drive_mutex_);
      if (!may_drive()) return;
      Driving scope(this);
      {
        std::lock_guard lock(mutex_);
        stop_now = stop_;
      }
      progress = safe_step();
      awaiting = awaiting_replies() || !sends_.empty();
      // What the dispatcher has applied, read while driving: a caller that drives
      // (submit's try_send) may change it as soon as drive_mutex_ is released.
      terminated = terminated_;
      generation_seen = cancel_generation_seen_;
      if (stop_now && jobs_.empty() && !anything_in_flight()) {
        // Every reply is in: end each rank's loop for this pool.
        std::vector<std::byte> exit_frame;
        put(exit_frame, ToWorker::exit);
        for (auto& s : slots_) append_frame(s.pending, exit_frame);
        flush_pending();
        for (auto& send : sends_) MPI_Wait(&send.request, MPI_STATUS_IGNORE);
        sends_.clear();
        return;
      }
    }
    if (progress) {
      last_progress = Clock::now();
      continue;
    }
    // Poll on for a while only while replies are due: with none due, polling would only
    // take the core from a thread about to make the next call.
    if (awaiting && Clock::now() - last_progress < spin_before_sleep) continue;
    // Idle: sleep until a submission, or briefly while replies are due.
    std::unique_lock lock(mutex_);
    if (!incoming_.empty() || stop_ != stop_now || terminate_ != terminated ||
        cancel_generation_ != generation_seen)
      continue;
    const Clock::duration nap = awaiting ? std::chrono::microseconds(200) : nap_limit();
    long_nap_ = nap > busy_nap;
    cv_.wait_for(lock, nap);
    long_nap_ = false;
  }
}

bool MpiPoolCore::safe_step(bool send_only) {
  try {
    return step(send_only);
  } catch (const std::exception& e) {
    // A broken message or an MPI error: nothing more can be trusted. Fail what is pending
    // so no caller waits, and make no more MPI calls; the Runtime's end still releases the
    // ranks.
    std::fprintf(stderr, "mproc: the mpi pool's dispatcher failed: %s\n", e.what());
    failed_ = true;
    if (!broken_)
      broken_ = std::make_exception_ptr(
          BrokenPool(fmt::format("Pool: the mpi dispatcher failed: {}", e.what())));
    fail_everything(broken_);
    finish_jobs();
    cv_.notify_one();
    return true;
  }
}

/// One round: take in submissions, apply terminate, take in the ranks' answers, hand out
/// chunks, send, finish jobs. `send_only` (from submit) stops after sending, so that the
/// submitting thread completes no other call and runs no callback.
bool MpiPoolCore::step(bool send_only) {
  bool progress = take_incoming();
  if (send_only) {
    if (!terminated_) progress |= dispatch();
    flush_pending();
    return progress;
  }
  // Ranks cannot be killed; on terminate() their running chunks finish and are thrown away.
  if (terminate_requested()) terminate_jobs();
  progress |= poll_results();
  // After the results that had arrived, so the report names what still ran.
  if (g_sigterm.load(std::memory_order_relaxed)) report_sigterm();
  if (!terminated_) progress |= dispatch();
  flush_pending();
  progress |= test_sends();
  finish_jobs();
  if (!progress) {
    const auto now = Clock::now();
    if (now - last_death_check_ >= death_check_interval) {
      last_death_check_ = now;
      check_rank_deaths();
    }
  }
  return progress;
}

bool MpiPoolCore::awaiting_replies() const {
  // Unsent drop frames and unfinished small sends can wait for the next round; answers
  // from ranks, and jobs that still have work, cannot.
  for (const auto& s : slots_)
    if (!s.chunks.empty() || s.flushes != 0) return true;
  for (const auto& j : jobs_)
    if (!j.done) return true;
  return false;
}

bool MpiPoolCore::anything_in_flight() const {
  for (const auto& s : slots_)
    if (!s.chunks.empty() || s.flushes != 0 || !s.pending.empty()) return true;
  return !sends_.empty();
}

bool MpiPoolCore::poll_results() {
  bool any = false;
  std::vector<std::byte>& msg = received_;
  for (int k = 0; k < 64; ++k) {
    MPI_Status st;
    if (!try_recv(MPI_ANY_SOURCE, tag_results, msg, st)) break;
    any = true;
    RankSlot* s = slot_of(st.MPI_SOURCE);
    if (s == nullptr) continue;
    Frames frames(msg);
    std::span<const std::byte> frame;
    while (frames.next(frame)) handle_message(*s, frame);
  }
  return any;
}

bool MpiPoolCore::give_chunk(RankSlot& s) {
  for (auto& j : jobs_) {
    if (!has_items(j)) continue;
    // The frames are built in place at the end of the rank's pending bytes: the call's
    // setup, the first time the rank gets the call, then the chunk. Anything that fails
    // cuts them off again at frame_at.
    const bool needs_setup = j.setup.count(s.rank) == 0;
    std::vector<std::byte>& out = s.pending;
    const std::size_t frame_at = out.size();
    if (needs_setup) {
      const std::size_t setup_at = begin_frame(out);
      put_setup(out, j);
      end_frame(out, setup_at);
    }
    const std::size_t chunk_at = begin_frame(out);
    const PulledChunk c = pull_chunk(j, chunk_size(j), out, ends_, frame_at);
    if (c.record.count == 0) continue;
    if (out.size() + 1024 > static_cast<std::size_t>(INT_MAX)) {
      // One MPI message counts its bytes in an int.
      const std::size_t bytes = out.size() - chunk_at;
      out.resize(frame_at);
      j.job->on_error(std::nullopt, std::make_exception_ptr(SerializationError(fmt::format(
                                        "Pool: a chunk of {} items is {} bytes, more than "
                                        "one MPI message carries (2 GiB); use a smaller "
                                        "chunksize",
                                        c.record.count, bytes))));
      complete(j);
      continue;
    }
    end_frame(out, chunk_at);
    if (needs_setup) j.setup.insert(s.rank);
    j.in_flight += c.record.count;
    s.chunks.push_back(c.record);
    return true;
  }
  return false;
}

void MpiPoolCore::flush_pending() {
  for (auto& s : slots_) {
    if (s.pending.empty()) continue;
    if (s.pending.size() > static_cast<std::size_t>(INT_MAX))
      throw SerializationError("MPI pool: a chunk exceeds 2 GiB, the limit of one MPI message");
    if (spare_sends_.empty()) spare_sends_.emplace_back();
    sends_.splice(sends_.end(), spare_sends_, spare_sends_.begin());
    Send& send = sends_.back();
    send.bytes.swap(s.pending);
    s.pending.clear();
    check(MPI_Isend(send.bytes.data(), static_cast<int>(send.bytes.size()), MPI_BYTE, s.rank,
                    tag_tasks, world().comm, &send.request),
          "MPI_Isend");
  }
}

bool MpiPoolCore::test_sends() {
  bool any = false;
  for (auto it = sends_.begin(); it != sends_.end();) {
    int done = 0;
    MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
    if (!done) {
      ++it;
      continue;
    }
    auto done_send = it++;
    // Keep the buffer for the next message to a rank, unless it is a big one.
    if (done_send->bytes.capacity() > (std::size_t{1} << 20))
      std::vector<std::byte>().swap(done_send->bytes);
    spare_sends_.splice(spare_sends_.end(), sends_, done_send);
    any = true;
  }
  return any;
}

std::size_t MpiPoolCore::tell_job(const JobEntry& j, ToWorker what) {
  for (int rank : j.setup) {
    RankSlot* s = slot_of(rank);
    std::vector<std::byte> msg;
    put(msg, what);
    put<std::uint64_t>(msg, j.id);
    append_frame(s->pending, msg);
    if (what == ToWorker::flush) ++s->flushes;
  }
  return j.setup.size();
}

void MpiPoolCore::check_rank_deaths() {
  // MPI has no way to go on without a rank, and Open MPI's launcher ends the job when one
  // dies. A rank on this host is watched through a pidfd, so the message can say which
  // rank died and what it was running before the launcher tears everything down.
  for (auto& s : slots_) {
    if (s.pidfd < 0) continue;
    pollfd p{s.pidfd, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) continue;
    take_late_results();
    std::string line = fmt::format(
        "mproc: {} died while running {}; MPI cannot go on without a rank, so the job ends\n",
        rank_name(s.rank), describe_running(s));
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

void MpiPoolCore::report_sigterm() {
  // Open MPI's launcher sends SIGTERM when a rank on another machine died (it names the
  // rank, not the task), or when the job is cancelled. Say what each rank was running,
  // then die of the signal as if it had not been caught.
  take_late_results();
  std::string text = "mproc: rank 0 got SIGTERM (the launcher ends the job: a rank died, "
                     "or the job was cancelled); the ranks were running:\n";
  bool any = false;
  for (const auto& s : slots_) {
    if (s.chunks.empty()) continue;
    any = true;
    text += fmt::format("mproc:   {}: {}\n", rank_name(s.rank), describe_running(s));
  }
  if (any) {
    std::fputs(text.c_str(), stderr);
    std::fflush(stderr);
  }
  restore_default_sigterm();
  ::kill(::getpid(), SIGTERM);
}

void MpiPoolCore::take_late_results() {
  // Before saying what a rank was running: results it sent before it died (or before the
  // signal came) may have arrived since this round polled. An MPI_Iprobe that finds
  // nothing still runs MPI's progress, which may only then take in a message: probe a few
  // times.
  try {
    for (int k = 0; k < 8; ++k) poll_results();
  } catch (...) {
  }
}

}  // namespace

std::unique_ptr<PoolCore> make_mpi_pool(const PoolOptions& options) {
  return std::make_unique<MpiPoolCore>(options);
}

}  // namespace mproc::detail::mpi
