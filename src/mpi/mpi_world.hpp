// What the MPI backend's two halves share: the job's communicator and ranks, message tags,
// framing, and polling receives. Internal to libmproc_mpi.
#pragma once

#include <mpi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace mproc::detail::mpi {

/// One rank as rank 0 sees it, for messages.
struct RankInfo {
  int pid = 0;
  std::string host;
};

/// An mpi Pool as the Runtime's end sees it: the end may come while a pool is still open
/// (leaked, or alive when std::terminate runs), and MPI must not be finalised under it.
class OpenPool {
 public:
  /// Makes the pool stop calling MPI, fails its pending calls, and returns once no thread
  /// of the pool is inside MPI (from a thread inside the pool's own work: at once).
  virtual void runtime_ending() noexcept = 0;
  /// After every rank has stopped: completes the sends the pool started, which the ranks
  /// have received by then.
  virtual void release_sends() noexcept = 0;

 protected:
  ~OpenPool() = default;
};

/// The job: set by start(), read-only afterwards.
struct World {
  MPI_Comm comm = MPI_COMM_NULL;  ///< a duplicate of MPI_COMM_WORLD, private to mproc
  int rank = 0;
  int size = 1;
  std::vector<RankInfo> ranks;  ///< every rank's pid and host
  /// rank 0: the mpi Pool that exists (one at a time). Atomic: a pool destroyed by its
  /// own done-callback clears it from the thread that joins it.
  std::atomic<OpenPool*> open_pool{nullptr};
  bool initialized = false;     ///< MPI was initialised (false: started without a launcher)
};

World& world();

/// Message tags. A message on tag_tasks or tag_results is a sequence of frames.
enum Tag : int {
  tag_tasks = 1,    ///< rank 0 -> rank: ToWorker frames
  tag_results = 2,  ///< rank -> rank 0: FromWorker frames
  tag_control = 3,  ///< rank 0 -> rank: control_stop; rank -> rank 0: the stop's ack
};
inline constexpr std::byte control_stop{1};

/// Appends one frame (u64 length, then the bytes) to `out`.
void append_frame(std::vector<std::byte>& out, std::span<const std::byte> msg);

/// Writes a frame in place: begin_frame() reserves its length and returns where the frame
/// starts; the caller appends the frame's bytes; end_frame() fills in the length.
std::size_t begin_frame(std::vector<std::byte>& out);
void end_frame(std::vector<std::byte>& out, std::size_t at);

/// Walks the frames of a message.
class Frames {
 public:
  explicit Frames(std::span<const std::byte> bytes) : bytes_(bytes) {}
  /// The next frame, or false at the end. Throws SerializationError on a bad length.
  bool next(std::span<const std::byte>& frame);

 private:
  std::span<const std::byte> bytes_;
  std::size_t pos_ = 0;
};

/// Receives the next message from `source` (or MPI_ANY_SOURCE) with `tag` (or
/// MPI_ANY_TAG) into `out` if one has arrived; returns false at once otherwise.
bool try_recv(int source, int tag, std::vector<std::byte>& out, MPI_Status& status);

/// Waits for a message as try_recv does, polling: it spins for a few tens of
/// microseconds, then sleeps in growing steps up to a millisecond, so an idle rank does not
/// burn a core (Open MPI's blocking receive spins forever).
void recv_polling(int source, int tag, std::vector<std::byte>& out, MPI_Status& status);

/// Throws std::runtime_error naming `what` if `rc` is not MPI_SUCCESS.
void check(int rc, const char* what);

/// The build-id check and identity exchange at start-up, and the worker ranks' loop.
void start(int& argc, char**& argv);

}  // namespace mproc::detail::mpi
