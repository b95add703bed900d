// The process backend of Pool: a dispatcher thread in the user's process that feeds
// chunks of items to forked workers through shared-memory rings, collects results item
// by item, and turns worker deaths and timeouts into errors of exactly the items they hit.
//
// Threads and processes:
//   user threads  --submit-->  dispatcher thread  --task rings-->    workers
//                              (this file)        <--result rings--  (pool_worker.cpp)
//                                   |  SOCK_SEQPACKET: spawn / exited
//                              fork server (pool_worker.cpp), forked once at construction
//
// Everything about workers and jobs is owned by the dispatcher thread; user threads only
// touch the `incoming_` queue and flags under `mutex_`.
#include <signal.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>

#include "ipc/segment_keep.hpp"
#include "mproc/cpu_count.hpp"
#include "mproc/detail/trace.hpp"
#include "mproc/pool.hpp"
#include "mproc/runtime.hpp"
#include "os/futex.hpp"
#include "os/platform.hpp"
#include "os/shm.hpp"
#include "pool/dispatcher.hpp"
#include "pool/pool_protocol.hpp"
#include "pool/pool_worker.hpp"
#include "pool/ring.hpp"
#include "pool/wire.hpp"

namespace mproc {
namespace detail {
namespace pool {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t ring_capacity = std::size_t{1} << 20;
/// Each worker's block for the results of a packed run (8192 eight-byte results).
constexpr std::size_t scratch_bytes = std::size_t{64} << 10;
/// After its last event the dispatcher polls this long before it sleeps: a result or a
/// submission that comes sooner costs no wake-up (an eventfd write and an epoll return on
/// each side, several microseconds each), which is most of an apply round trip.
constexpr auto spin_before_sleep = std::chrono::microseconds(50);
std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

/// Threads in this process that mproc did not start; forking while one of them holds a
/// lock leaves that lock held forever in the child.
std::atomic<int> mproc_threads{0};

void warn_if_threaded() {
  static std::once_flag once;
  std::error_code ec;
  std::size_t threads = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/task", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++threads;
  auto others = static_cast<long>(threads) - 1 - mproc_threads.load();
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer's runtime starts a thread of its own at the program's first
  // pthread_create, and keeps it; before that, no thread is counted anyway.
  --others;
#endif
  if (others <= 0 || std::getenv("MPROC_NO_FORK_WARNING") != nullptr) return;
  std::call_once(once, [&] {
    std::string line = fmt::format(
        "mproc: warning: starting a process pool while this process runs {} other thread(s); "
        "a lock one of them holds at this moment stays locked in the workers "
        "(create pools before starting threads; MPROC_NO_FORK_WARNING=1 silences this)\n",
        others);
    write_all(2, line);
  });
}

/// A contiguous run of a job's items: a chunk being sent or held by a worker, or items
/// to send again after a crash. `message` holds the serialized items at
/// [items_offset, items_offset + ends.back()).
struct Segment {
  std::uint64_t job;
  std::size_t first;
  std::size_t n;  // items
  // Where each item's bytes end, relative to the first item's start; empty for the items
  // of an indices chunk, which have no bytes.
  std::vector<std::size_t> ends;
  std::shared_ptr<const std::vector<std::byte>> message;
  std::size_t items_offset;
  std::size_t count() const { return n; }
  std::size_t bytes() const { return ends.empty() ? 0 : ends.back(); }
  std::span<const std::byte> items(std::size_t from, std::size_t to) const {
    if (ends.empty()) return {};
    const std::size_t b = from == 0 ? 0 : ends[from - 1];
    const std::size_t e = to == 0 ? 0 : ends[to - 1];
    return std::span<const std::byte>(*message).subspan(items_offset + b, e - b);
  }
  /// Items from .. to - 1 as a segment of their own, in the same message.
  Segment slice(std::size_t from, std::size_t to) const {
    if (ends.empty()) return Segment{job, first + from, to - from, {}, message, items_offset};
    const std::size_t cut = from == 0 ? 0 : ends[from - 1];
    std::vector<std::size_t> part;
    part.reserve(to - from);
    for (std::size_t k = from; k < to; ++k) part.push_back(ends[k] - cut);
    return Segment{job, first + from, to - from, std::move(part), message, items_offset + cut};
  }
};

struct JobEntry : JobBookEntry {
  std::deque<Segment> requeued{};
  std::set<unsigned> setup{};  // slots holding the job's code
  std::unordered_map<std::size_t, unsigned> crashes{};  // index -> crashes so far (retries)
  bool kill_cancelled = false;  // Future::cancel(kill_running): no item runs again
};

enum class WorkerState { empty, starting, alive, dead };

/// A chunk a worker holds, with its items, kept to send them again if it dies.
struct InFlight : ChunkRecord {
  Segment seg;
};

/// Bytes read from a result ring in bulk: one read_some takes many small messages at once,
/// which are then handled in place. Holds at most one partial message at its end.
class RxBuffer {
 public:
  /// Handles every complete message in the ring with `handle(span)`; returns whether any.
  template <class Handle>
  bool drain(SpscRing& ring, Handle&& handle) {
    bool any = false;
    for (;;) {
      while (end_ - begin_ >= 8) {
        std::uint64_t len;
        std::memcpy(&len, data_.get() + begin_, 8);
        if (end_ - begin_ - 8 < len) {
          if (len + 8 > cap_) grow(len + 8);
          break;
        }
        handle(std::span<const std::byte>(data_.get() + begin_ + 8, len));
        begin_ += 8 + len;
        any = true;
      }
      if (begin_ == end_) {
        begin_ = end_ = 0;
        if (cap_ > keep_) shrink();
      } else if (begin_ > 0 && (cap_ - end_) < cap_ / 4) {
        std::memmove(data_.get(), data_.get() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      }
      if (cap_ == 0) grow(keep_);
      const std::size_t n = ring.read_some(std::span<std::byte>(data_.get() + end_, cap_ - end_));
      if (n == 0) return any;
      end_ += n;
    }
  }
  void reset() noexcept { begin_ = end_ = 0; }

 private:
  static constexpr std::size_t keep_ = std::size_t{256} << 10;
  void grow(std::size_t need) {
    if (need <= cap_ - begin_ && begin_ > 0) {
      std::memmove(data_.get(), data_.get() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
      return;
    }
    std::unique_ptr<std::byte[]> bigger(new std::byte[need]);
    if (end_ > begin_) std::memcpy(bigger.get(), data_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
    data_ = std::move(bigger);
    cap_ = need;
  }
  void shrink() {
    data_.reset(new std::byte[keep_]);
    cap_ = keep_;
  }
  std::unique_ptr<std::byte[]> data_;
  std::size_t cap_ = 0, begin_ = 0, end_ = 0;
};

struct WorkerSlot {
  unsigned slot;
  WorkerState state = WorkerState::empty;
  pid_t pid = 0;
  UniqueFd pidfd;
  std::deque<InFlight> chunks;
  std::deque<std::shared_ptr<const std::vector<std::byte>>> outbox;
  MessageWriter writer;
  bool writing = false;
  RxBuffer rx;
  std::uint64_t budget = 0;  // items it may still be given (max_tasks_per_child)
  std::set<std::uint64_t> folded;  // reduce jobs it folded items of
  // Death bookkeeping, filled when the pidfd fires, resolved when the status arrives.
  bool killed_for_timeout = false;
  bool killed_for_cancel = false;
  bool kill_when_spawned = false;  // killed for cancel while starting: no pidfd yet
  bool crashed_accounted = false;
  std::optional<Segment> crashed;  // the item it was running when it died
  const char* crashed_method = nullptr;
  TraceCode crashed_code{};
  std::vector<std::uint64_t> lost_partials;
};

}  // namespace

class ProcessPoolCore final : public Dispatcher<ProcessPoolCore, JobEntry, WorkerSlot> {
  friend class JobBook<ProcessPoolCore, JobEntry>;
  friend class Dispatcher<ProcessPoolCore, JobEntry, WorkerSlot>;

 public:
  explicit ProcessPoolCore(const PoolOptions& options);
  ~ProcessPoolCore() override;

  unsigned workers() const noexcept override { return n_; }
  void submit(std::shared_ptr<Job> job) override;
  /// As in Python, the workers exit once the work submitted before close() is done, while
  /// the caller goes on: join() then only waits for what is left of their exit.
  void close() override {
    Dispatcher::close();
    wake();
  }
  void wake() noexcept override {
    // What changed may be nothing the loop's last look before sleeping checks (an imap
    // consumer that made room in its window): say so, or the wake-up is lost when it
    // comes before the loop arms its doorbell.
    woken_.store(true, std::memory_order_relaxed);
    ring_bell();
  }

 private:
  // Layout of the shared mapping: doorbell, one SlotControl per worker, two rings per worker.
  std::size_t ring_block() const { return round_up(SpscRing::bytes_needed(ring_capacity), 4096); }
  std::size_t rings_offset() const { return round_up(64 + n_ * sizeof(SlotControl), 4096); }
  std::size_t scratch_offset() const { return rings_offset() + 2 * n_ * ring_block(); }
  std::span<std::byte> scratch(unsigned slot) const {
    return {shm_.bytes() + scratch_offset() + slot * scratch_bytes, scratch_bytes};
  }
  /// The results a packed run had written but not sent when its worker died.
  void take_unsent_results(WorkerSlot& w);
  /// Drops what the slot held and was sending (its worker is gone, or never came): its
  /// chunks, its outbox, its partial reads and writes, its jobs' setup.
  void forget_slot_work(WorkerSlot& w);
  SlotControl& control(unsigned slot) const {
    return reinterpret_cast<SlotControl*>(shm_.bytes() + 64)[slot];
  }

  /// Wakes the dispatcher from another thread, after that thread published its change.
  void ring_bell() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    doorbell_->ring();
  }
  void start_fork_server();
  void loop();
  bool read_server_events();
  /// Queues a command for the fork server and sends what the socket takes now.
  void tell_server(ServerCommand cmd);
  /// Sends queued commands until the socket is full (then asks epoll for EPOLLOUT) or
  /// the queue is empty. Returns whether it sent any.
  bool flush_commands();
  bool drain(WorkerSlot& w);
  bool pump_writes(WorkerSlot& w);
  void send(WorkerSlot& w, std::vector<std::byte> msg);
  void on_pidfd(WorkerSlot& w);
  void on_exited(WorkerSlot& w, int status);
  void spawn(WorkerSlot& w);
  std::optional<std::chrono::milliseconds> check_timeouts();
  /// How long the dispatcher may sleep: until the next task timeout, and briefly while
  /// items are in flight.
  std::optional<std::chrono::milliseconds> sleep_limit();
  void sleep(std::optional<std::chrono::milliseconds> timeout);
  bool anything_ready();
  /// The next `want` (at least one) items of the ones `j` queues again after a crash.
  Segment take_requeued(JobEntry& j, std::size_t want);

  // What Dispatcher asks of a pool (see dispatcher.hpp).
  static constexpr double target_chunk_ns = 500'000;  // the design aims at 0.1-1 ms
  static constexpr bool can_kill = true;
  bool give_chunk(WorkerSlot& w);
  /// Sends `what` (flush or drop) for job `j` to every live worker that has its setup;
  /// returns how many were told.
  std::size_t tell_job(const JobEntry& j, ToWorker what);
  void kill_job_workers(const Job* job);
  void put_code(std::vector<std::byte>& out, const Job& job) const {
    // Every worker is a fork of this process: the vtable is at the same address there.
    put<std::uintptr_t>(out, reinterpret_cast<std::uintptr_t>(job.vtable));
  }
  bool can_take_chunk(const WorkerSlot& w) const {
    // A worker still starting has its rings already: its first chunk waits there, and it
    // starts on it without a round trip through the dispatcher.
    return (w.state == WorkerState::alive || w.state == WorkerState::starting) && w.budget > 0;
  }
  bool all_started() const {
    // A worker still starting up will want the next chunk: keep second chunks for later.
    return std::none_of(slots_.begin(), slots_.end(), [](const WorkerSlot& w) {
      return w.state == WorkerState::starting;
    });
  }
  bool one_item_chunks() const { return options_.task_timeout.count() > 0; }
  /// Whether a map over an integer range travels as indices alone: the worker runs it
  /// packed (no per-item timing, no task budget, no trace of item starts).
  bool index_chunks(const Job& job) const {
    return job.vtable->call_index != nullptr && options_.task_timeout.count() == 0 &&
           options_.max_tasks_per_child == 0 && !tracer_;
  }
  pid_t worker_pid(const WorkerSlot& w) const { return w.pid; }
  std::uint32_t trace_lane(const WorkerSlot& w) const { return w.slot; }
  std::string worker_name(const WorkerSlot& w) const { return fmt::format("worker {}", w.pid); }
  std::string worker_where(const WorkerSlot&) const { return {}; }
  void partial_arrived(WorkerSlot& w, std::uint64_t job) { w.folded.erase(job); }
  void items_arrived(WorkerSlot& w, JobEntry* j, bool ok) {
    barren_deaths_ = 0;
    if (ok && j != nullptr && j->reduce) w.folded.insert(j->id);
  }
  /// A message that breaks the protocol is ignored rather than crash the pool.
  void protocol_error(const char*) {}
  bool dispatcher_gone() const { return false; }
  bool in_own_work() const noexcept override {
    return std::this_thread::get_id() == thread_.get_id();
  }
  void stopping() {}
  void dispatcher_joined();
  /// Tells every worker which big segments this process let go of since the last look,
  /// so that those it kept between calls are unmapped (ipc/segment_keep.hpp).
  bool send_forgets();

  const unsigned n_;
  SharedMapping shm_;
  Doorbell* doorbell_ = nullptr;
  UniqueFd eventfd_;
  UniqueFd epoll_;
  std::vector<SpscRing> task_rings_;
  std::vector<SpscRing> result_rings_;
  UniqueFd socket_;  // to the fork server
  pid_t server_pid_ = -1;
  unsigned live_workers_ = 0;
  bool server_gone_ = false;
  std::atomic<bool> woken_{false};  // wake() was called since the loop last looked
  // The segments this process let go of, reported from whichever thread let go.
  struct Released {
    std::mutex mutex;
    std::vector<std::uint64_t> ids;
    std::atomic<bool> pending{false};
    ProcessPoolCore* pool = nullptr;  // null once the pool is being destroyed
  };
  std::shared_ptr<Released> released_ = std::make_shared<Released>();
  std::shared_ptr<void> release_watch_;
  // Commands the socket had no room for yet: a Pool of a few hundred workers fills a
  // socket buffer with spawn commands alone, and the fork server's events fill the other
  // way while it works through them. Neither side may block on the other.
  std::deque<ServerCommand> commands_;
  bool want_writable_ = false;  // the socket is registered for EPOLLOUT
  bool counted_thread_ = false;  // the dispatcher counts in mproc_threads
  // Worker deaths since the last item finished: a worker that dies over and over before
  // finishing anything (a broken environment, not a task) must not respawn forever.
  unsigned barren_deaths_ = 0;
  std::vector<std::size_t> ends_;  // scratch for give_chunk
};

ProcessPoolCore::ProcessPoolCore(const PoolOptions& options)
    : Dispatcher(options), n_(options.workers == 0 ? cpu_count() : options.workers) {
  if (n_ > 4096) throw std::invalid_argument("Pool: workers must be at most 4096");
  if (const std::string trace = trace_path_for(options.trace); !trace.empty())
    tracer_ = std::make_unique<Tracer>(trace, "process", n_, true);
  const std::size_t size = scratch_offset() + n_ * scratch_bytes;
  shm_ = SharedMapping(size, "pool", SharedMapping::FdPolicy::close);
  eventfd_ = Doorbell::make_eventfd();
  doorbell_ = new (shm_.data()) Doorbell(eventfd_.get());
  for (unsigned i = 0; i < n_; ++i) {
    new (&control(i)) SlotControl{};
    std::byte* base = shm_.bytes() + rings_offset() + 2 * i * ring_block();
    // The dispatcher is the event loop on both: it waits for data on result rings and for
    // space on task rings.
    task_rings_.emplace_back(base, ring_capacity, RingDoorbells{nullptr, doorbell_});
    result_rings_.emplace_back(base + ring_block(), ring_capacity,
                               RingDoorbells{doorbell_, nullptr});
    task_rings_.back().init();
    result_rings_.back().init();
  }
  slots_.resize(n_);
  for (unsigned i = 0; i < n_; ++i) slots_[i].slot = i;

  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw_system_error(errno, "epoll_create1 for Pool");
  start_fork_server();
  auto add = [&](int fd, std::uint64_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
      throw_system_error(errno, "epoll_ctl for Pool");
  };
  add(eventfd_.get(), ~std::uint64_t{0});
  add(socket_.get(), ~std::uint64_t{0} - 1);
  released_->pool = this;
  release_watch_ = watch_segment_releases([released = released_](std::uint64_t id) {
    std::lock_guard lock(released->mutex);
    if (released->pool == nullptr) return;
    released->ids.push_back(id);
    released->pending.store(true, std::memory_order_relaxed);
    released->pool->wake();
  });

  for (auto& w : slots_) spawn(w);
  ++mproc_threads;
  counted_thread_ = true;
  thread_ = std::thread([this] { loop(); });
}

ProcessPoolCore::~ProcessPoolCore() {
  {
    std::lock_guard lock(released_->mutex);
    released_->pool = nullptr;
  }
  release_watch_.reset();
  try {
    if (thread_.joinable()) terminate();
  } catch (...) {
  }
}

void ProcessPoolCore::start_fork_server() {
  warn_if_threaded();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    throw_system_error(errno, "socketpair for Pool");
  UniqueFd mine(sv[0]), theirs(sv[1]);
  const pid_t parent = ::getpid();
  const bool from_main_thread = ::gettid() == parent;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw_system_error(errno, "fork for Pool's fork server");
  if (pid == 0) {
    mine.reset();
    ForkServerEnv env{parent, theirs.get(), from_main_thread, [this, parent](unsigned slot, unsigned number) {
                        return WorkerEnv{number,
                                         &control(slot),
                                         &task_rings_[slot],
                                         &result_rings_[slot],
                                         &options_.initializer,
                                         options_.max_tasks_per_child,
                                         options_.task_timeout.count() > 0 || tracer_,
                                         scratch(slot),
                                         parent};
                      }};
    fork_server_main(env);
  }
  server_pid_ = pid;
  socket_ = std::move(mine);
  // Non-blocking so the dispatcher can drain events without waiting.
  ::fcntl(socket_.get(), F_SETFL, ::fcntl(socket_.get(), F_GETFL) | O_NONBLOCK);
}

void ProcessPoolCore::tell_server(ServerCommand cmd) {
  if (server_gone_) return;
  commands_.push_back(cmd);
  flush_commands();
}

bool ProcessPoolCore::flush_commands() {
  bool sent = false;
  while (!commands_.empty() && !server_gone_) {
    const ServerCommand& cmd = commands_.front();
    const ssize_t n = retry_eintr(
        [&] { return ::send(socket_.get(), &cmd, sizeof cmd, MSG_NOSIGNAL | MSG_DONTWAIT); });
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n != static_cast<ssize_t>(sizeof cmd)) {
      server_gone_ = true;  // EPIPE, ECONNRESET: its end is closed
      commands_.clear();
      break;
    }
    commands_.pop_front();
    sent = true;
  }
  const bool want = !commands_.empty();
  if (want != want_writable_ && epoll_) {
    epoll_event ev{};
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
    ev.data.u64 = ~std::uint64_t{0} - 1;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, socket_.get(), &ev);
    want_writable_ = want;
  }
  return sent;
}

void ProcessPoolCore::spawn(WorkerSlot& w) {
  tell_server(ServerCommand{ServerCommand::spawn, w.slot});
  if (server_gone_) return;
  w.state = WorkerState::starting;
  w.budget = options_.max_tasks_per_child == 0 ? ~std::uint64_t{0} : options_.max_tasks_per_child;
}

void ProcessPoolCore::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard lock(mutex_);
    enqueue_locked(std::move(job));
  }
  ring_bell();
}

void ProcessPoolCore::dispatcher_joined() {
  if (std::exchange(counted_thread_, false)) --mproc_threads;
  if (server_pid_ > 0) {
    retry_eintr([&] { return ::waitpid(server_pid_, nullptr, 0); });
    server_pid_ = -1;
  }
}

void ProcessPoolCore::kill_job_workers(const Job* job) {
  for (auto& j : jobs_) {
    if (j.job.get() != job || j.done) continue;
    j.kill_cancelled = true;
    for (auto& w : slots_) {
      if (w.state != WorkerState::alive && w.state != WorkerState::starting) continue;
      for (auto& c : w.chunks) {
        if (c.seg.job != j.id) continue;
        w.killed_for_cancel = true;
        if (w.state == WorkerState::alive)
          ::syscall(SYS_pidfd_send_signal, w.pidfd.get(), SIGKILL, nullptr, 0);
        else
          w.kill_when_spawned = true;  // it may be running the chunk already
        break;
      }
    }
    // Items queued again after an earlier crash never run now.
    for (auto& seg : j.requeued) {
      for (std::size_t k = 0; k < seg.count(); ++k) {
        ++j.accounted;
        j.job->on_error(seg.first + k, std::make_exception_ptr(Cancelled("the task was cancelled")));
      }
    }
    j.requeued.clear();
  }
}

// ---- the dispatcher thread ------------------------------------------------------------

void ProcessPoolCore::loop() {
  bool stopping = false;
  auto last_progress = Clock::now();
  bool idle = false;  // a pass since last_progress found nothing to do
  bool spin = true;   // spin before sleeping (see below)
  for (;;) {
    bool progress = take_incoming();
    bool stop_now;
    {
      std::lock_guard lock(mutex_);
      if (closed_ && active_jobs_ == 0) stop_ = true;  // close() with every job done
      stop_now = stop_ && !stopping;
    }
    if (!stopping && terminate_requested()) {
      stopping = true;
      tell_server(ServerCommand{ServerCommand::kill_all, 0});
      terminate_jobs();
    } else if (stop_now) {
      // join(): every job is done; let the workers flush their output and exit.
      stopping = true;
      for (auto& w : slots_) {
        if (w.state != WorkerState::alive && w.state != WorkerState::starting) continue;
        std::vector<std::byte> msg;
        put(msg, ToWorker::exit);
        send(w, std::move(msg));
      }
      tell_server(ServerCommand{ServerCommand::shutdown, 0});
    }
    progress |= flush_commands();
    progress |= send_forgets();
    progress |= read_server_events();
    for (auto& w : slots_) progress |= drain(w);
    if (!stopping) progress |= dispatch();
    for (auto& w : slots_) progress |= pump_writes(w);
    finish_jobs();
    if (stopping && server_gone_) break;
    if (server_gone_ && !broken_) {
      broken_ = std::make_exception_ptr(BrokenPool("Pool: the fork server died"));
      fail_everything(broken_);
    }
    auto timeout = sleep_limit();
    if (progress) {
      const auto now = Clock::now();
      // Spin before the next sleep only if this event came within the spin of the last
      // one: round trips (apply) are caught spinning, while chunks a millisecond apart
      // would only have the spin take the CPU from a worker that shares it.
      if (idle) spin = now - last_progress <= spin_before_sleep;
      idle = false;
      last_progress = now;
    } else if (!spin || Clock::now() - last_progress > spin_before_sleep) {
      idle = true;
      sleep(timeout);
    } else {
      idle = true;
      cpu_relax();
    }
  }
}

bool ProcessPoolCore::read_server_events() {
  bool any = false;
  for (;;) {
    ServerEvent ev{};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    iovec iov{&ev, sizeof ev};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = retry_eintr([&] { return ::recvmsg(socket_.get(), &msg, MSG_CMSG_CLOEXEC); });
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return any;
    if (n != static_cast<ssize_t>(sizeof ev)) {
      server_gone_ = true;
      return true;
    }
    any = true;
    int passed_fd = -1;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
        std::memcpy(&passed_fd, CMSG_DATA(c), sizeof passed_fd);
    UniqueFd pidfd(passed_fd);
    if (ev.slot >= n_) continue;
    WorkerSlot& w = slots_[ev.slot];
    switch (ev.op) {
      case ServerEvent::spawned: {
        w.state = WorkerState::alive;
        w.pid = ev.pid;
        w.pidfd = std::move(pidfd);
        ++live_workers_;
        if (std::exchange(w.kill_when_spawned, false))
          ::syscall(SYS_pidfd_send_signal, w.pidfd.get(), SIGKILL, nullptr, 0);
        if (w.pidfd) {
          epoll_event pe{};
          pe.events = EPOLLIN;
          pe.data.u64 = w.slot;
          ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, w.pidfd.get(), &pe);
        }
        break;
      }
      case ServerEvent::exited:
        if (w.pid == ev.pid) on_exited(w, ev.status);
        break;
      case ServerEvent::spawn_failed:
        // Whatever was queued for it fails with the pool, below.
        w.state = WorkerState::empty;
        w.kill_when_spawned = false;
        forget_slot_work(w);
        if (!broken_) {
          broken_ = std::make_exception_ptr(std::system_error(
              ev.status, std::system_category(), "fork for a Pool worker"));
          fail_everything(broken_);
        }
        break;
    }
  }
}

bool ProcessPoolCore::drain(WorkerSlot& w) {
  if (w.state != WorkerState::alive && w.state != WorkerState::dead) return false;
  return w.rx.drain(result_rings_[w.slot],
                    [&](std::span<const std::byte> msg) { handle_message(w, msg); });
}

Segment ProcessPoolCore::take_requeued(JobEntry& j, std::size_t want) {
  Segment& r = j.requeued.front();
  const std::size_t take = std::min<std::size_t>(r.count(), std::max<std::size_t>(want, 1));
  Segment seg;
  if (take == r.count()) {
    seg = std::move(r);
    j.requeued.pop_front();
  } else {
    // Split: the first `take` items go now, the rest stay queued.
    seg = r.slice(0, take);
    r = r.slice(take, r.count());
  }
  // Frame the items again as a chunk message of their own.
  auto msg = std::make_shared<std::vector<std::byte>>();
  if (const auto form = index_form(j)) {
    put_indices(*msg, j.id, seg.first, seg.count(), *form);
    seg.message = std::move(msg);
    seg.items_offset = seg.message->size();
    return seg;
  }
  auto items = seg.items(0, seg.count());
  put(*msg, ToWorker::chunk);
  put<std::uint64_t>(*msg, j.id);
  put<std::uint64_t>(*msg, seg.first);
  put<std::uint64_t>(*msg, seg.count());
  const std::size_t off = msg->size();
  msg->insert(msg->end(), items.begin(), items.end());
  append_ends(*msg, seg.ends);
  seg.message = std::move(msg);
  seg.items_offset = off;
  return seg;
}

bool ProcessPoolCore::give_chunk(WorkerSlot& w) {
  for (auto& j : jobs_) {
    if (!has_items(j)) continue;
    const std::size_t want = chunk_size(j, w.budget);
    Segment seg;
    if (!j.requeued.empty()) {
      seg = take_requeued(j, want);
    } else {
      auto msg = std::make_shared<std::vector<std::byte>>();
      const PulledChunk c = pull_chunk(j, want, *msg, ends_);
      if (c.record.count == 0) continue;
      seg = Segment{j.id, c.record.first, c.record.count, ends_, std::move(msg), c.items_at};
    }
    if (j.setup.insert(w.slot).second) {
      std::vector<std::byte> setup;
      put_setup(setup, j);
      send(w, std::move(setup));
    }
    j.in_flight += seg.count();
    w.budget -= std::min<std::uint64_t>(w.budget, seg.count());
    w.outbox.push_back(seg.message);
    InFlight c;
    c.job = j.id;
    c.first = seg.first;
    c.count = seg.count();
    c.bytes_in = seg.bytes();
    c.method = j.job->method;
    c.code = j.job->code;
    if (tracer_ && j.job->item_label) c.code.label = item_trace_label(j.job->item_label, seg.first);
    c.seg = std::move(seg);
    w.chunks.push_back(std::move(c));
    return true;
  }
  return false;
}

void ProcessPoolCore::send(WorkerSlot& w, std::vector<std::byte> msg) {
  w.outbox.push_back(std::make_shared<const std::vector<std::byte>>(std::move(msg)));
}

bool ProcessPoolCore::pump_writes(WorkerSlot& w) {
  if (w.state != WorkerState::alive && w.state != WorkerState::starting) return false;
  bool any = false;
  for (;;) {
    if (!w.writing) {
      if (w.outbox.empty()) return any;
      w.writer.start_borrowed(*w.outbox.front());
      w.writing = true;
    }
    if (!w.writer.poll(task_rings_[w.slot])) return any;
    w.writing = false;
    w.outbox.pop_front();
    any = true;
  }
}

void ProcessPoolCore::on_pidfd(WorkerSlot& w) {
  if (w.state != WorkerState::alive) return;
  // Results written before the death are complete messages in the ring, or whole
  // results of an unsent packed run in the scratch block: keep them.
  drain(w);
  take_unsent_results(w);
  w.state = WorkerState::dead;
  --live_workers_;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, w.pidfd.get(), nullptr);
  w.pidfd.reset();
  const std::uint64_t running = control(w.slot).running.load(std::memory_order_acquire);
  if (tracer_ && !w.chunks.empty() && w.chunks.front().done > 0) {
    // The items of the cut chunk that finished before the death.
    const InFlight& c = w.chunks.front();
    TraceEvent e = trace_event(w, c);
    e.items = c.done;
    e.start_ns = control(w.slot).chunk_started_ns.load(std::memory_order_relaxed);
    e.end_ns = running != 0 ? control(w.slot).started_ns.load(std::memory_order_relaxed)
                            : monotonic_ns();
    e.status = c.errors == 0 ? TraceStatus::ok : TraceStatus::error;
    tracer_->record(e);
  }
  bool first = true;
  for (auto& c : w.chunks) {
    JobEntry* j = find_job(c.seg.job);
    std::size_t from = c.done;
    if (j != nullptr) j->in_flight -= std::min(j->in_flight, c.seg.count() - c.done);
    if (first && running != 0 && running - 1 == c.seg.first + c.done) {
      // The item it was running when it died: resolved once the exit status is known.
      w.crashed = c.seg.slice(from, from + 1);
      w.crashed_method = c.method;
      w.crashed_code = c.code;
      if (j != nullptr) ++j->in_flight;
      ++from;
    }
    first = false;
    if (j == nullptr || from >= c.seg.count()) continue;
    if (j->kill_cancelled) {
      for (std::size_t k = from; k < c.seg.count(); ++k) {
        ++j->accounted;
        j->job->on_error(c.seg.first + k,
                         std::make_exception_ptr(Cancelled("the task was cancelled")));
      }
      continue;
    }
    // Items it held but had not started run elsewhere.
    j->requeued.push_back(c.seg.slice(from, c.seg.count()));
  }
  forget_slot_work(w);
  for (auto id : w.folded) w.lost_partials.push_back(id);
  w.folded.clear();
}

void ProcessPoolCore::forget_slot_work(WorkerSlot& w) {
  w.chunks.clear();
  w.outbox.clear();
  w.writing = false;
  w.rx.reset();
  w.writer.reset();
  for (auto& j : jobs_) j.setup.erase(w.slot);
}

void ProcessPoolCore::take_unsent_results(WorkerSlot& w) {
  SlotControl& ctl = control(w.slot);
  const std::uint64_t packed_first = ctl.packed_first.load(std::memory_order_acquire);
  if (packed_first == 0 || w.chunks.empty()) return;
  InFlight& c = w.chunks.front();
  JobEntry* j = find_job(c.seg.job);
  if (j == nullptr || ctl.job.load(std::memory_order_relaxed) != c.seg.job) return;
  const std::uint32_t size = j->job->vtable->packed_out;
  const std::uint64_t base = packed_first - 1;
  // A run that ended says how many results it wrote; one cut short has whole results
  // for the items before the one it was running. A void map (size 0) writes no results,
  // only their count.
  std::uint64_t written = ctl.packed_written.load(std::memory_order_acquire);
  if (written == 0) {
    const std::uint64_t running = ctl.running.load(std::memory_order_acquire);
    written = running > base ? running - 1 - base : 0;
  }
  written = std::min<std::uint64_t>(written, size == 0 ? c.count : scratch_bytes / size);
  const std::uint64_t next = c.seg.first + c.done;  // the first item with no result yet
  const std::uint64_t end = std::min<std::uint64_t>(base + written, c.seg.first + c.count);
  if (next < base || next >= end) return;
  // The same bytes an items_packed frame would have carried.
  std::vector<std::byte> frame;
  put(frame, FromWorker::items_packed);
  put<std::uint64_t>(frame, end - next);
  const auto results = scratch(w.slot).subspan((next - base) * size, (end - next) * size);
  frame.insert(frame.end(), results.begin(), results.end());
  handle_message(w, frame);
}

void ProcessPoolCore::on_exited(WorkerSlot& w, int status) {
  if (w.state == WorkerState::alive) on_pidfd(w);
  const pid_t pid = w.pid;
  if (w.crashed) {
    w.crashed_accounted = true;  // a crash inside a task is the task's failure, not barren
    const std::size_t index = w.crashed->first;
    JobEntry* j = find_job(w.crashed->job);
    const bool cancelled = (j != nullptr && j->kill_cancelled) || w.killed_for_cancel;
    const bool retry = !cancelled && !w.killed_for_timeout && j != nullptr &&
                       j->crashes[index] < options_.retries;
    // What the item fails with, also the chunk's error on the timeline.
    std::exception_ptr error;
    if (cancelled)
      error = std::make_exception_ptr(Cancelled("the task was cancelled: its worker was killed"));
    else if (w.killed_for_timeout)
      error = std::make_exception_ptr(TaskTimeout(options_.task_timeout, index, pid));
    else
      error = std::make_exception_ptr(WorkerCrashed(status, index, pid));
    if (tracer_) {
      TraceEvent e;
      e.method = w.crashed_method;
      e.code = w.crashed_code;
      e.job = w.crashed->job;
      e.first = index;
      e.items = 1;
      e.start_ns = control(w.slot).started_ns.load(std::memory_order_relaxed);
      e.end_ns = monotonic_ns();
      e.bytes_in = w.crashed->bytes();
      e.failed_index = index;
      e.lane = w.slot;
      e.worker_pid = pid;
      e.status = w.killed_for_cancel    ? TraceStatus::cancelled
                 : w.killed_for_timeout ? TraceStatus::timeout
                                        : TraceStatus::crashed;
      try {
        std::rethrow_exception(error);
      } catch (...) {
        e.error = current_error_label();
      }
      if (retry) e.error += " (retried)";
      tracer_->record(e);
    }
    if (j != nullptr) {
      --j->in_flight;
      if (retry) {
        ++j->crashes[index];  // run it again, first, on another worker
        j->requeued.push_front(std::move(*w.crashed));
      } else {
        ++j->accounted;
        j->job->on_error(index, error);
      }
    }
  }
  for (auto id : w.lost_partials) {
    if (JobEntry* j = find_job(id)) {
      j->job->on_error(std::nullopt,
                       std::make_exception_ptr(WorkerCrashed(status, std::nullopt, pid)));
      if (j->flushing && j->awaiting_partials > 0) --j->awaiting_partials;
    }
  }
  w.lost_partials.clear();
  w.crashed.reset();
  w.killed_for_timeout = false;
  w.killed_for_cancel = false;
  w.kill_when_spawned = false;
  w.state = WorkerState::empty;
  w.pid = 0;
  control(w.slot).running.store(0, std::memory_order_relaxed);
  control(w.slot).packed_first.store(0, std::memory_order_relaxed);
  task_rings_[w.slot].init();
  result_rings_[w.slot].init();
  bool stopping;
  {
    std::lock_guard lock(mutex_);
    stopping = stop_ || terminate_;
  }
  if (!w.crashed_accounted && ++barren_deaths_ > 3 * n_ + 8 && !broken_) {
    broken_ = std::make_exception_ptr(BrokenPool(fmt::format(
        "Pool: workers keep dying before finishing any task (last one: {})",
        status < 0 ? fmt::format("signal {}", -status) : fmt::format("exit code {}", status))));
    fail_everything(broken_);
  }
  w.crashed_accounted = false;
  if (!stopping && !broken_) spawn(w);
}

bool ProcessPoolCore::send_forgets() {
  if (!released_->pending.load(std::memory_order_relaxed)) return false;
  std::vector<std::uint64_t> ids;
  {
    std::lock_guard lock(released_->mutex);
    ids.swap(released_->ids);
    released_->pending.store(false, std::memory_order_relaxed);
  }
  if (ids.empty()) return false;
  // One message, shared by every worker's outbox (as a chunk's bytes are when requeued).
  auto msg = std::make_shared<std::vector<std::byte>>();
  put(*msg, ToWorker::forget);
  put<std::uint64_t>(*msg, ids.size());
  for (std::uint64_t id : ids) put(*msg, id);
  for (auto& w : slots_)
    if (w.state == WorkerState::alive || w.state == WorkerState::starting) w.outbox.push_back(msg);
  return true;
}

std::size_t ProcessPoolCore::tell_job(const JobEntry& j, ToWorker what) {
  std::size_t told = 0;
  for (unsigned s : j.setup) {
    WorkerSlot& w = slots_[s];
    if (w.state != WorkerState::alive) continue;
    std::vector<std::byte> msg;
    put(msg, what);
    put<std::uint64_t>(msg, j.id);
    send(w, std::move(msg));
    ++told;
  }
  return told;
}

std::optional<std::chrono::milliseconds> ProcessPoolCore::check_timeouts() {
  if (options_.task_timeout.count() <= 0) return std::nullopt;
  const std::uint64_t now = monotonic_ns();
  const auto limit = static_cast<std::uint64_t>(options_.task_timeout.count());
  std::uint64_t soonest = ~std::uint64_t{0};
  for (auto& w : slots_) {
    if (w.state != WorkerState::alive || w.killed_for_timeout) continue;
    SlotControl& ctl = control(w.slot);
    if (ctl.running.load(std::memory_order_acquire) == 0) continue;
    const std::uint64_t started = ctl.started_ns.load(std::memory_order_relaxed);
    if (now >= started + limit) {
      w.killed_for_timeout = true;
      ::syscall(SYS_pidfd_send_signal, w.pidfd.get(), SIGKILL, nullptr, 0);
    } else {
      soonest = std::min(soonest, started + limit - now);
    }
  }
  if (soonest == ~std::uint64_t{0}) return std::chrono::milliseconds(50);
  return std::chrono::milliseconds(soonest / 1'000'000 + 1);
}

std::optional<std::chrono::milliseconds> ProcessPoolCore::sleep_limit() {
  auto limit = check_timeouts();
  // Workers send item results with try_send_relaxed, whose wake-up can be missed while we
  // arm the doorbell; the chunk_end that follows always wakes us. With items in flight,
  // sleep in slices so that a result is never late by more than one slice.
  // A job that is not finished waits for something outside the workers (an imap
  // consumer making room in its window, an exit status): its wake-up comes through
  // wake(), and should one ever be missed the call is late by one slice, never stuck.
  const bool in_flight = std::any_of(slots_.begin(), slots_.end(),
                                     [](const WorkerSlot& w) { return !w.chunks.empty(); });
  if (!in_flight && jobs_.empty()) return limit;
  const std::chrono::milliseconds slice(in_flight ? 5 : 100);
  return limit ? std::min(*limit, slice) : slice;
}

bool ProcessPoolCore::anything_ready() {
  // Read after arm()'s fence, as ring() reads `sleeping` after wake()'s: one of the two
  // sees the other.
  if (woken_.exchange(false, std::memory_order_relaxed)) return true;
  for (auto& w : slots_) {
    if (w.state != WorkerState::alive) continue;
    if (result_rings_[w.slot].readable()) return true;
    if (w.writing && task_rings_[w.slot].writable()) return true;
  }
  std::lock_guard lock(mutex_);
  return !incoming_.empty() || stop_ || terminate_;
}

void ProcessPoolCore::sleep(std::optional<std::chrono::milliseconds> timeout) {
  // Announce that we are about to sleep, then look once more: a producer that published
  // before seeing `sleeping` is caught by this check, one that publishes after it rings.
  doorbell_->arm();
  if (anything_ready()) {
    doorbell_->disarm();
    return;
  }
  epoll_event events[16];
  const int ms = timeout ? static_cast<int>(timeout->count()) : -1;
  const int n = ::epoll_wait(epoll_.get(), events, 16, ms);
  doorbell_->disarm();
  for (int i = 0; i < n; ++i) {
    const std::uint64_t tag = events[i].data.u64;
    if (tag == ~std::uint64_t{0}) {
      doorbell_->drain();
    } else if (tag < n_) {
      on_pidfd(slots_[tag]);
    }
  }
}

}  // namespace pool

std::unique_ptr<PoolCore> make_process_pool(const PoolOptions& options) {
  return std::make_unique<pool::ProcessPoolCore>(options);
}

}  // namespace detail

}  // namespace mproc
