# The two commands: `make run` and `make test`. Both install missing Debian packages
# (scripts/install-deps.sh), configure a Release build in build/, and build it.

MAKEFLAGS += --no-print-directory

BUILD ?= build
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps configure build run test bench clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
	    -DMPROC_WERROR=ON $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: word count over the built-in synthetic corpus, with a process Pool.
run: build
	@$(BUILD)/apps/mproc/mproc wordcount

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 300

bench: build
	@cmake --build $(BUILD) --target bench

clean:
	@rm -rf $(BUILD)
