// mproc: Python's multiprocessing and concurrent.futures, in C++20.
// The umbrella header: includes every public mproc header.
#pragma once

#include "bind.hpp"
#include "callback_error.hpp"
#include "cpu_count.hpp"
#include "error.hpp"
#include "executor.hpp"
#include "future.hpp"
#include "lines.hpp"
#include "manager.hpp"
#include "progress.hpp"
#include "pool.hpp"
#include "process.hpp"
#include "queue.hpp"
#include "range.hpp"
#include "runtime.hpp"
#include "seed.hpp"
#include "serialize.hpp"
#include "shared.hpp"
#include "sync.hpp"
#include "version.hpp"
