// Making a forked child die with its parent process, even when the parent is SIGKILLed.
// Internal to libmproc; used by daemon Processes and by the pool's fork server.
//
// Two mechanisms, because neither is enough alone:
//  - prctl(PR_SET_PDEATHSIG, SIGKILL) fires when the parent *thread* that forked exits,
//    not when the parent process does (prctl(2)). It is only right for children forked
//    from the parent's main thread, and even then the parent may be gone before the
//    prctl call, so getppid() is checked afterwards.
//  - The life pipe: one process-wide pipe whose write end only the parent holds (it is
//    O_CLOEXEC, and a pthread_atfork child handler closes the inherited copy in every
//    child forked through fork(3)). A watching child polls the read end in a small thread;
//    when the parent process ends, however it ends, the kernel closes the write end,
//    the poll reports POLLHUP and the watcher SIGKILLs its own process.
#pragma once

#include <sys/types.h>

namespace mproc::detail::parent_watch {

/// Parent side, before fork(): makes sure this process's life pipe exists (created on
/// first use, kept until the process ends). Thread-safe. Throws std::system_error
/// ("pipe2 for the life pipe") when the pipe cannot be created.
void ensure_life_pipe();

/// Child side, right after fork(), while the child is still single-threaded: arranges for
/// this process to be SIGKILLed when the parent process ends. `parent` is the parent's
/// getpid() taken before fork(); `forked_from_main_thread` says whether the forking
/// thread was the parent's main thread (gettid() == getpid()), the only case in which
/// PR_SET_PDEATHSIG is used. The parent must have called ensure_life_pipe() before
/// fork(); otherwise only the PDEATHSIG and getppid() checks apply.
/// Returns false if the watcher thread could not be started (the process then relies on
/// PDEATHSIG alone). Never throws; kills this process at once if the parent is already gone.
bool die_with_parent(pid_t parent, bool forked_from_main_thread) noexcept;

/// Child side, when the child does not watch its parent: closes the inherited read end
/// of the parent's life pipe. Never throws.
void ignore_parent() noexcept;

/// What the pthread_atfork child handler does: closes this (child) process's copy of the
/// parent's write end, keeps the parent's read end for die_with_parent(), and forgets the
/// parent's pipe so that this process creates its own on demand. Idempotent. Call it
/// yourself only after creating a child without fork(3) (raw clone).
void after_fork_in_child() noexcept;

}  // namespace mproc::detail::parent_watch
