# The two commands: `make run` and `make test`. Both install missing Debian packages
# (scripts/install-deps.sh; `make test` adds the browser and GNU parallel the tests use)
# and configure a Release build in build/. `make run` builds only the mproc tool and its
# libraries; `make test` builds everything.

MAKEFLAGS += --no-print-directory

BUILD ?= build
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps configure build run test asan tsan bench clean

all: build

DEPS_FLAGS ?=

deps:
	@scripts/install-deps.sh $(DEPS_FLAGS)

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
	    -DMPROC_WERROR=ON $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: word count over the built-in synthetic corpus, with a process Pool.
run: configure
	@cmake --build $(BUILD) -j $(JOBS) --target mproc_cli
	@$(BUILD)/apps/mproc/mproc wordcount --progress

test: DEPS_FLAGS = --test
test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 300

# The whole suite under the sanitizers (docs/testing.md), each in its own build directory.
SANITIZED = -DCMAKE_BUILD_TYPE=Debug -DMPROC_BUILD_BENCH=OFF $(CMAKE_FLAGS)

asan:
	@$(MAKE) test BUILD=build-asan CMAKE_FLAGS="$(SANITIZED) -DMPROC_SANITIZE=address,undefined"

tsan:
	@$(MAKE) test BUILD=build-tsan CMAKE_FLAGS="$(SANITIZED) -DMPROC_SANITIZE=thread"

bench: build
	@cmake --build $(BUILD) --target bench

clean:
	@rm -rf $(BUILD)
