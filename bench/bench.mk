# The benchmark of netsock against a libuv and a raw-epoll echo server (bench/README.md).
# Included by the top-level Makefile; not part of `make test`.
#
#   make bench                      the scenarios, 5 interleaved rounds (BENCH_ROUNDS=n to change)
#   BENCH_QUICK=1 make bench        a smoke run: 1 round, 1 s windows
#   make bench-syscalls             syscalls per request of each server (strace -c)
#   make bench-instructions         user-space instructions per request (callgrind)
#
# Results: build/bench/results.md (the table), build/bench/raw.txt (one line per run).

BENCH_OUT    := $(BUILD)/bench
BENCH_PYTHON ?= python3
BENCH_CFLAGS := -O2 -g -std=gnu11 -Wall -Wextra -Werror -Iinclude
BENCH_BINS   := $(BENCH_OUT)/loadgen $(BENCH_OUT)/epoll_echo $(BENCH_OUT)/uv_echo $(BENCH_OUT)/ns_echo \
                $(BENCH_OUT)/uv_timers $(BENCH_OUT)/ns_timers

.PHONY: bench bench-build bench-deps bench-syscalls bench-instructions

bench: bench-build
	$(BENCH_PYTHON) bench/run.py $(BENCH_OUT)

bench-syscalls: bench-build
	sh bench/syscalls.sh $(BENCH_OUT)

bench-instructions: bench-build
	sh bench/instructions.sh $(BENCH_OUT)

bench-build: $(BENCH_BINS)

# libuv for the reference server: Debian's package, installed once if pkg-config lacks it.
bench-deps:
	@pkg-config --exists libuv 2>/dev/null || { \
		echo "bench: installing libuv1-dev"; \
		apt-get update && apt-get install -y libuv1-dev; }
	@pkg-config --exists libuv || { echo "bench: libuv (pkg-config libuv) is missing"; exit 1; }

$(BENCH_OUT)/loadgen: bench/loadgen.c
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $< -o $@

$(BENCH_OUT)/epoll_echo: bench/epoll_echo.c
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) -pthread $< -o $@

$(BENCH_OUT)/uv_echo: bench/uv_echo.c | bench-deps
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $$(pkg-config --cflags libuv) $< -o $@ $$(pkg-config --libs libuv)

$(BENCH_OUT)/uv_timers: bench/uv_timers.c bench/timers_common.h | bench-deps
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $$(pkg-config --cflags libuv) $< -o $@ $$(pkg-config --libs libuv)

# `lib` is phony, so these relink every time: cheap, and always against the current library.
$(BENCH_OUT)/ns_echo: bench/ns_echo.c lib
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' -lnetsock -lpthread

$(BENCH_OUT)/ns_timers: bench/ns_timers.c bench/timers_common.h lib
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' -lnetsock -lpthread
