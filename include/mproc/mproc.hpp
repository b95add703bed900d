// mproc: Python's multiprocessing and concurrent.futures, in C++20.
// The umbrella header: includes every public mproc header.
#pragma once

#include "cpu_count.hpp"
#include "error.hpp"
#include "process.hpp"
#include "serialize.hpp"
#include "version.hpp"
