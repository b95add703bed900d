// The two programs a process pool forks: the fork server (single-threaded; forks and
// reaps the workers) and the worker loop (runs chunks of items). Both run in processes
// forked from the user's program, so they share its code and its memory snapshot.
#include "pool/pool_worker.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "ipc/segment_keep.hpp"
#include "mproc/detail/task.hpp"
#include "mproc/pool.hpp"
#include "mproc/process.hpp"
#include "os/platform.hpp"
#include "os/traceback.hpp"
#include "pool/remote_failure.hpp"
#include "pool/wire.hpp"

namespace mproc {

namespace detail::pool {
namespace {

void put_current_error(std::vector<std::byte>& out, FromWorker kind) {
  out.clear();
  put(out, kind);
  RemoteFailure::current().write(out);
}

/// Flushes this process's own output and leaves without running atexit handlers or
/// static destructors, which belong to the user's program.
[[noreturn]] void leave(int code) {
  std::fflush(nullptr);
  std::cout.flush();
  std::cerr.flush();
  ::_exit(code);
}

struct JobCode {
  const TaskVTable* vtable;
  void* fn;
  void* acc = nullptr;  // map_reduce partial
};

class Worker {
 public:
  Worker(WorkerLink& link, const WorkerLoopOptions& options) : link_(link), opt_(options) {}
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  // The jobs the dispatcher never dropped (it left without closing its pool, or this
  // worker leaves first): their code and partial folds are freed on every way out.
  ~Worker() {
    for (auto& entry : jobs_) {
      const JobCode& job = entry.second;
      if (job.acc) job.vtable->discard(job.acc);
      job.vtable->destroy(job.fn);
    }
  }

  void run() {
    set_current_process(opt_.name, true);
    // RemoteError carries the stack where the task threw, not where the worker caught.
    set_capture_throw_traces(true);
    if (opt_.initializer && *opt_.initializer) {
      try {
        (*opt_.initializer)();
      } catch (...) {
        std::vector<std::byte> msg;
        put_current_error(msg, FromWorker::init_failed);
        link_.send(msg);
        return;
      }
    }
    std::vector<std::byte> msg;
    for (;;) {
      link_.recv(msg);
      WireReader r(msg);
      switch (r.get<ToWorker>()) {
        case ToWorker::setup: setup(r); break;
        case ToWorker::chunk: chunk(r); break;
        case ToWorker::indices: indices(r); break;
        case ToWorker::flush: flush(r.get<std::uint64_t>()); break;
        case ToWorker::drop: drop(r.get<std::uint64_t>()); break;
        case ToWorker::forget: forget(r); break;
        case ToWorker::exit: return;
      }
      if (stop_ || (opt_.max_tasks != 0 && items_run_ >= opt_.max_tasks)) return;
    }
  }

 private:
  void setup(WireReader& r) {
    const auto id = r.get<std::uint64_t>();
    const auto* vt = reinterpret_cast<const TaskVTable*>(r.get<std::uintptr_t>());
    jobs_[id] = JobCode{vt, vt->create(r.rest())};
  }

  void drop(std::uint64_t id) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    if (it->second.acc) it->second.vtable->discard(it->second.acc);
    it->second.vtable->destroy(it->second.fn);
    jobs_.erase(it);
  }

  void forget(WireReader& r) {
    const auto n = r.get<std::uint64_t>();
    auto rest = r.rest();
    if (n > rest.size() / sizeof(std::uint64_t)) throw SerializationError("corrupt forget");
    std::vector<std::uint64_t> ids(n);
    std::memcpy(ids.data(), rest.data(), n * sizeof(std::uint64_t));
    forget_kept_segments(ids);
  }

  void chunk(WireReader& r) {
    const auto id = r.get<std::uint64_t>();
    const auto first = r.get<std::uint64_t>();
    const auto count = r.get<std::uint64_t>();
    // The items' bytes, then `count` u64 end offsets (relative to the first item).
    auto rest = r.rest();
    if (count > rest.size() / sizeof(std::uint64_t)) throw SerializationError("corrupt chunk");
    auto items = rest.first(rest.size() - count * sizeof(std::uint64_t));
    auto ends_bytes = rest.subspan(items.size());
    JobCode& job = jobs_.at(id);
    const std::uint64_t chunk_start = begin_chunk();
    if (packable(job, count, items.size(), ends_bytes)) {
      const TaskVTable& vt = *job.vtable;
      run_packed(job, id, first, count, [&](std::uint64_t i, std::byte* out, std::uint64_t n,
                                            TaskInfo* task, std::exception_ptr& error) {
        return vt.call_packed(job.fn, items.data() + i * vt.packed_in, out, n, task, error,
                              &opt_.control->running, &opt_.control->packed_written);
      });
    } else {
      std::uint64_t begin = 0;
      for (std::uint64_t i = 0; i < count; ++i) {
        std::uint64_t end;
        std::memcpy(&end, ends_bytes.data() + i * sizeof end, sizeof end);
        if (end < begin || end > items.size()) throw SerializationError("corrupt chunk");
        run_item(job, id, first + i, items.subspan(begin, end - begin),
                 TaskInfo{first + i, first, count}, i + 1 == count);
        begin = end;
      }
    }
    chunk_end(chunk_start);
  }

  /// A chunk of a map over an integer range: item i's argument is start + i * step.
  void indices(WireReader& r) {
    const auto id = r.get<std::uint64_t>();
    const auto first = r.get<std::uint64_t>();
    const auto count = r.get<std::uint64_t>();
    const auto start = r.get<std::uint64_t>();
    const auto step = r.get<std::uint64_t>();
    JobCode& job = jobs_.at(id);
    const TaskVTable& vt = *job.vtable;
    if (vt.call_index == nullptr || !link_.packs_results())
      throw SerializationError("an indices chunk for a job that cannot run from indices");
    const std::uint64_t chunk_start = begin_chunk();
    run_packed(job, id, first, count, [&](std::uint64_t i, std::byte* out, std::uint64_t n,
                                          TaskInfo* task, std::exception_ptr& error) {
      return vt.call_index(job.fn, start + (first + i) * step, step, out, n, task, error,
                           &opt_.control->running, &opt_.control->packed_written);
    });
    chunk_end(chunk_start);
  }

  /// Marks the start of a chunk; returns its time.
  std::uint64_t begin_chunk() {
    const std::uint64_t start = monotonic_ns();
    chunk_done_ns_ = 0;
    opt_.control->chunk_started_ns.store(start, std::memory_order_relaxed);
    return start;
  }

  /// Sends chunk_end: how long the chunk's items took, and when it started.
  void chunk_end(std::uint64_t chunk_start) {
    out_.clear();
    put(out_, FromWorker::chunk_end);
    const std::uint64_t done_ns = chunk_done_ns_ != 0 ? chunk_done_ns_ : monotonic_ns();
    put<std::uint64_t>(out_, done_ns - chunk_start);
    put<std::uint64_t>(out_, chunk_start);
    link_.send(out_);
  }

  /// Whether the chunk can run packed: the link takes packed results, the job's types
  /// are their own encoding, and every item is exactly packed_in bytes.
  bool packable(const JobCode& job, std::uint64_t count, std::size_t item_bytes,
                std::span<const std::byte> ends_bytes) const {
    const TaskVTable& vt = *job.vtable;
    if (vt.call_packed == nullptr || vt.fold != nullptr || !link_.packs_results()) return false;
    if (opt_.max_tasks != 0 || opt_.timed) return false;
    if (item_bytes != count * vt.packed_in) return false;
    for (std::uint64_t i = 0; i < count; ++i) {
      std::uint64_t end;
      std::memcpy(&end, ends_bytes.data() + i * sizeof end, sizeof end);
      if (end != (i + 1) * vt.packed_in) return false;
    }
    return true;
  }

  /// Runs a chunk packed, `call(i, out, n, task, error)` running its items i.. i+n-1
  /// (call_packed or call_index): one items_packed frame for each run of items that
  /// succeed, an item_error frame for each item that throws. With a scratch block, each
  /// run writes its results there (as many as it holds) and they go out in one frame;
  /// a worker that dies mid-run leaves the finished ones for the pool to take.
  template <class Call>
  void run_packed(JobCode& job, std::uint64_t id, std::uint64_t first, std::uint64_t count,
                  Call&& call) {
    const TaskVTable& vt = *job.vtable;
    SlotControl& ctl = *opt_.control;
    ctl.job.store(id, std::memory_order_relaxed);
    std::optional<TaskInfo>& task = *current_task_slot();
    task = TaskInfo{first, first, count};
    const std::span<std::byte> scratch = link_.scratch();
    // A void result (packed_out 0) takes no room: the whole chunk is one run.
    const std::size_t per_run = scratch.empty() || vt.packed_out == 0
                                    ? count
                                    : std::max<std::size_t>(1, scratch.size() / vt.packed_out);
    for (std::uint64_t i = 0; i < count;) {
      const std::uint64_t n = std::min<std::uint64_t>(count - i, per_run);
      std::byte* out;
      std::size_t at = 0;
      if (scratch.empty()) {
        out_.clear();
        put(out_, FromWorker::items_packed);
        put<std::uint64_t>(out_, 0);
        at = out_.size();
        out_.resize(at + n * vt.packed_out);
        out = out_.data() + at;
      } else {
        ctl.packed_written.store(0, std::memory_order_relaxed);
        ctl.packed_first.store(first + i + 1, std::memory_order_release);
        out = scratch.data();
      }
      std::exception_ptr error;
      task->index = first + i;
      std::uint64_t done = call(i, out, n, &*task, error);
      // As in run_item: a chunk whose tasks closed the worker's descriptors fails its last
      // item instead of reporting it.
      const bool lost = !error && i + done == count && !intact();
      if (lost) --done;
      if (done > 0) {
        if (scratch.empty()) {
          out_.resize(at + done * vt.packed_out);
          std::memcpy(out_.data() + at - sizeof done, &done, sizeof done);
          link_.send_item(out_);
        } else {
          std::byte head[1 + sizeof done];
          head[0] = static_cast<std::byte>(FromWorker::items_packed);
          std::memcpy(head + 1, &done, sizeof done);
          link_.send_packed(head, scratch.first(done * vt.packed_out));
        }
      }
      i += done;
      items_run_ += done;
      if (lost) {
        transport_lost(TaskInfo{first + i, first, count});
        link_.send_item(out_);
        ++i;
        ++items_run_;
        continue;
      }
      if (!error) continue;
      out_.clear();
      try {
        std::rethrow_exception(error);
      } catch (...) {
        put_current_error(out_, FromWorker::item_error);
      }
      link_.send_item(out_);
      ++i;
      ++items_run_;
    }
    task.reset();
    ctl.packed_first.store(0, std::memory_order_release);
    ctl.running.store(0, std::memory_order_release);
  }

  /// Runs one item and sends its result. After the last item of a chunk, checks first
  /// that the link is intact (see intact()): if one of the chunk's tasks
  /// closed or replaced the worker's descriptors, that item fails with
  /// mproc::TransportLost instead, and the worker leaves after the chunk.
  void run_item(JobCode& job, std::uint64_t id, std::uint64_t index,
                std::span<const std::byte> args, const TaskInfo& info, bool last) {
    SlotControl& ctl = *opt_.control;
    if (opt_.timed) ctl.started_ns.store(monotonic_ns(), std::memory_order_relaxed);
    ctl.job.store(id, std::memory_order_relaxed);
    ctl.running.store(index + 1, std::memory_order_release);
    std::optional<TaskInfo>& task = *current_task_slot();
    task = info;
    out_.clear();
    put(out_, FromWorker::item_ok);
    try {
      InputArchive in(args);
      OutputArchive result(out_);
      if (job.vtable->fold)
        job.vtable->fold(job.fn, in, &job.acc);
      else
        job.vtable->call(job.fn, in, result);
    } catch (...) {
      put_current_error(out_, FromWorker::item_error);
    }
    task.reset();
    ++items_run_;
    if (last && !intact()) transport_lost(info);
    // The result is sent before `running` is cleared: a parent that finds the worker dead
    // with `running` still set checks whether that item's result arrived.
    link_.send_item(out_);
    ctl.running.store(0, std::memory_order_release);
  }

  /// Whether the link's descriptors survived the current chunk. The thorough check is a
  /// system call (fstat: 0.1-0.5 us); a chunk whose items took less than a microsecond
  /// did not close them (closefrom(3) alone takes several), and pays only the cheap check.
  bool intact() {
    chunk_done_ns_ = monotonic_ns();  // chunk_end's time too
    const std::uint64_t spent =
        chunk_done_ns_ - opt_.control->chunk_started_ns.load(std::memory_order_relaxed);
    return link_.intact(spent >= 1000);
  }

  void transport_lost(const TaskInfo& info) {
    // The item ran, but its worker can no longer be woken, nor wake the pool, through
    // descriptors it does not own: fail it, stop using them, and leave.
    link_.detach();
    stop_ = true;
    out_.clear();
    put(out_, FromWorker::item_error);
    RemoteFailure f;
    f.type = "mproc::TransportLost";
    const std::string items =
        info.chunk_size == 1
            ? fmt::format("item {}", info.index)
            : fmt::format("one of items {}..{}", info.chunk_first,
                          info.chunk_first + info.chunk_size - 1);
    f.what = fmt::format("{} closed or replaced the file descriptors its pool worker "
                         "inherited (closefrom(3), close_range, or a library doing so); the "
                         "worker was replaced",
                         items);
    f.write(out_);
  }

  void flush(std::uint64_t id) {
    out_.clear();
    put(out_, FromWorker::partial);
    put(out_, id);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.acc == nullptr) {
      put<std::uint8_t>(out_, 2);  // no partial: this worker folded no item of the job
    } else {
      try {
        put<std::uint8_t>(out_, 1);
        OutputArchive ar(out_);
        void* acc = std::exchange(it->second.acc, nullptr);
        it->second.vtable->finish(acc, ar);
      } catch (...) {
        out_.clear();
        put(out_, FromWorker::partial);
        put(out_, id);
        put<std::uint8_t>(out_, 0);
        RemoteFailure::current().write(out_);
      }
    }
    link_.send(out_);
  }

  WorkerLink& link_;
  const WorkerLoopOptions& opt_;
  std::unordered_map<std::uint64_t, JobCode> jobs_;
  std::vector<std::byte> out_;
  std::uint64_t items_run_ = 0;
  bool stop_ = false;  // the link is lost: leave after this chunk
  std::uint64_t chunk_done_ns_ = 0;  // when the chunk's last item ended (0: not yet)
};

/// The process backend's link: a pair of rings in memory shared with the parent.
class RingLink final : public WorkerLink {
 public:
  explicit RingLink(const WorkerEnv& env) : env_(env) {}
  void recv(std::vector<std::byte>& msg) override {
    while (!env_.tasks->recv(msg)) {
    }
  }
  void send(std::span<const std::byte> msg) override { env_.results->send(msg); }
  void send_item(std::span<const std::byte> msg) override {
    // The relaxed send skips a fence per item; the chunk_end message after the last item
    // is a full send().
    if (!env_.results->try_send_relaxed(std::span(&msg, 1))) env_.results->send(msg);
  }
  bool packs_results() const override { return !env_.scratch.empty(); }
  std::span<std::byte> scratch() override { return env_.scratch; }
  void send_packed(std::span<const std::byte> head, std::span<const std::byte> body) override {
    const std::span<const std::byte> parts[2] = {head, body};
    if (!env_.results->try_send_relaxed(parts)) env_.results->send(parts);
  }
  // The only descriptor a worker uses is the pool's doorbell eventfd (the rings are
  // memory, the waits futexes); ring() refuses a doorbell that is no longer intact.
  bool intact(bool thorough) const override {
    const Doorbell* bell = env_.results->doorbells().data;
    return !Doorbell::lost() && (!thorough || bell == nullptr || bell->intact());
  }
  void detach() override {
    env_.results->set_doorbells({});
    env_.tasks->set_doorbells({});
  }

 private:
  const WorkerEnv& env_;
};

}  // namespace

WorkerLink::~WorkerLink() = default;

void run_worker_loop(WorkerLink& link, const WorkerLoopOptions& options) {
  Worker(link, options).run();
}

void worker_main(const WorkerEnv& env) {
  try {
    keep_attached_segments(env.owner);
    RingLink link(env);
    const WorkerLoopOptions options{fmt::format("PoolWorker-{}", env.number), env.control,
                                    env.initializer, env.max_tasks, env.timed};
    run_worker_loop(link, options);
    leave(0);
  } catch (...) {
    // Only a broken protocol gets here (the task's own errors are caught per item).
    std::string line = fmt::format("mproc: pool worker {}: {}: {}\n", ::getpid(),
                                   current_exception_type_name(), current_exception_message());
    write_all(2, line);
    leave(70);
  }
}

namespace {

/// Sends one event to the parent; with `fd` >= 0 also passes that descriptor (a pidfd).
bool send_event(int sock, const ServerEvent& ev, int fd) {
  iovec iov{const_cast<ServerEvent*>(&ev), sizeof ev};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  return retry_eintr([&] { return ::sendmsg(sock, &msg, MSG_NOSIGNAL); }) ==
         static_cast<ssize_t>(sizeof ev);
}

}  // namespace

void fork_server_main(const ForkServerEnv& env) {
  // Orphan protection: socket EOF when every copy of the parent's end is closed; a
  // getppid() check (every poll timeout) for when a copy of that end leaked into another
  // process; and PR_SET_PDEATHSIG when the Pool was made on the main thread (see
  // ForkServerEnv::from_main_thread).
  if (env.from_main_thread) ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != env.parent_pid) ::_exit(0);
  const pid_t server_pid = ::getpid();

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, nullptr);
  const int sigfd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);

  std::unordered_map<pid_t, std::uint32_t> children;
  unsigned spawned = 0;
  bool shutting_down = false;

  auto reap = [&] {
    for (;;) {
      int ws = 0;
      pid_t pid = ::waitpid(-1, &ws, WNOHANG);
      if (pid <= 0) break;
      auto it = children.find(pid);
      if (it == children.end()) continue;
      ServerEvent ev{ServerEvent::exited, it->second, pid, status_code(ws)};
      children.erase(it);
      send_event(env.socket, ev, -1);
    }
  };
  auto kill_all = [&] {
    for (auto& [pid, slot] : children) ::kill(pid, SIGKILL);
  };

  for (;;) {
    if (shutting_down && children.empty()) ::_exit(0);
    pollfd fds[2] = {{env.socket, POLLIN, 0}, {sigfd, POLLIN, 0}};
    int n = ::poll(fds, 2, 200);
    if (::getppid() != env.parent_pid) {
      kill_all();
      ::_exit(0);
    }
    if (n <= 0) continue;
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo si;
      while (::read(sigfd, &si, sizeof si) == sizeof si) {
      }
      reap();
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ServerCommand cmd{};
      ssize_t got = retry_eintr([&] { return ::recv(env.socket, &cmd, sizeof cmd, 0); });
      if (got != static_cast<ssize_t>(sizeof cmd)) {
        // The parent is gone (EOF) or the channel is broken: nobody will read results.
        kill_all();
        ::_exit(0);
      }
      if (cmd.op == ServerCommand::spawn) {
        pid_t pid = ::fork();
        if (pid == 0) {
          ::sigprocmask(SIG_UNBLOCK, &chld, nullptr);
          ::close(sigfd);
          ::close(env.socket);
          ::prctl(PR_SET_PDEATHSIG, SIGKILL);
          if (::getppid() != server_pid) ::_exit(0);
          worker_main(env.worker(cmd.slot, spawned + 1));
        }
        if (pid < 0) {
          send_event(env.socket, ServerEvent{ServerEvent::spawn_failed, cmd.slot, 0, errno}, -1);
          continue;
        }
        ++spawned;
        children.emplace(pid, cmd.slot);
        // The pidfd is taken before we could reap the child, so it cannot name a reused pid.
        int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        send_event(env.socket, ServerEvent{ServerEvent::spawned, cmd.slot, pid, 0}, pidfd);
        if (pidfd >= 0) ::close(pidfd);
      } else if (cmd.op == ServerCommand::kill_all) {
        kill_all();
        shutting_down = true;
      } else if (cmd.op == ServerCommand::shutdown) {
        shutting_down = true;
      }
    }
  }
}

}  // namespace detail::pool
}  // namespace mproc
