# The benchmark of netsock against a libuv and a raw-epoll echo server, redis-server, and an
# epoll + OpenSSL TLS echo server (bench/README.md).
# Included by the top-level Makefile; not part of `make test`.
#
#   make bench                      the scenarios, 5 interleaved rounds (BENCH_ROUNDS=n to change)
#   BENCH_QUICK=1 make bench        a smoke run: 1 round, 1 s windows
#   make bench-syscalls             syscalls per request of each server (strace -c)
#   make bench-instructions         user-space instructions per request (callgrind)
#   BENCH_BASE=<rev> make bench     also netsock at git revision <rev> (exported with git archive
#                                   into build/bench/base-src, built there), as the servers
#                                   netsock-base (and netsock_w1-base in workers-pp50) beside the
#                                   others: netsock / netsock-base ratios
#
# Results: build/bench/results.md (the table), build/bench/raw.txt (one line per run).

BENCH_OUT    := $(BUILD)/bench
BENCH_PYTHON ?= python3
BENCH_CWARN  := -O2 -g -std=gnu11 -Wall -Wextra -Werror
BENCH_CFLAGS := $(BENCH_CWARN) -Iinclude
BENCH_BINS   := $(BENCH_OUT)/loadgen $(BENCH_OUT)/epoll_echo $(BENCH_OUT)/uv_echo $(BENCH_OUT)/uv_best \
                $(BENCH_OUT)/uring_echo $(BENCH_OUT)/ns_echo $(BENCH_OUT)/ns_resp $(BENCH_OUT)/ns_fetch \
                $(BENCH_OUT)/uv_timers $(BENCH_OUT)/ns_timers $(BUILD)/resp_server \
                $(BENCH_OUT)/tls_loadgen $(BENCH_OUT)/ns_tls_echo $(BENCH_OUT)/ossl_tls_echo $(BENCH_OUT)/certs/server.pem
# The workers scenarios (issue 18): netsock's blocking handlers, and the classic server in C.
BENCH_BINS   += $(BENCH_OUT)/ns_work $(BENCH_OUT)/tpc_server

# BENCH_BASE=<rev>: a second netsock, from that git revision, measured in the same run.
BENCH_BASE     ?=
BENCH_BASE_SRC := $(BENCH_OUT)/base-src
BENCH_BASE_LIB := $(BENCH_OUT)/base-lib
ifneq ($(strip $(BENCH_BASE)),)
BENCH_BINS   += $(BENCH_OUT)/ns_echo_base $(BENCH_OUT)/ns_work_base
endif

.PHONY: bench bench-build bench-deps bench-uring-deps bench-redis bench-openssl bench-syscalls bench-instructions bench-base-lib

bench: bench-build bench-redis
	BENCH_BASE='$(strip $(BENCH_BASE))' $(BENCH_PYTHON) bench/run.py $(BENCH_OUT)

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

# liburing for the io_uring reference: Debian's package (2.3, enough for multishot accept and
# recv and provided-buffer rings), installed once if pkg-config lacks it.
bench-uring-deps:
	@pkg-config --exists liburing 2>/dev/null || { \
		echo "bench: installing liburing-dev"; \
		apt-get update && apt-get install -y liburing-dev; }
	@pkg-config --exists liburing || { echo "bench: liburing (pkg-config liburing) is missing"; exit 1; }

# redis-server (the RESP scenarios' reference) and redis-benchmark (their load): Debian's
# redis-server package, which brings redis-tools, installed once if either is missing.
bench-redis:
	@command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || { \
		echo "bench: installing redis-server"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }
	@command -v redis-server >/dev/null || { echo "bench: redis-server is missing"; exit 1; }

# OpenSSL for the TLS reference server and the TLS load generator: Debian's libssl-dev (and the
# openssl CLI for the certificate), installed once if missing.
bench-openssl:
	@pkg-config --exists openssl 2>/dev/null && command -v openssl >/dev/null || { \
		echo "bench: installing libssl-dev and openssl"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y libssl-dev openssl; }

$(BENCH_OUT)/tls_loadgen: bench/tls_loadgen.c | bench-openssl
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) -pthread $< -o $@ $$(pkg-config --libs openssl)

$(BENCH_OUT)/ossl_tls_echo: bench/ossl_tls_echo.c | bench-openssl
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $< -o $@ $$(pkg-config --libs openssl)

$(BENCH_OUT)/ns_tls_echo: bench/ns_tls_echo.c lib
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' -lnetsock -lpthread

# The TLS scenarios' ECDSA P-256 certificate, the same for netsock and OpenSSL.
$(BENCH_OUT)/certs/server.pem: tests/tls/certs.sh | bench-openssl
	sh tests/tls/certs.sh $(BENCH_OUT)/certs

$(BENCH_OUT)/loadgen: bench/loadgen.c
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $< -o $@

$(BENCH_OUT)/epoll_echo: bench/epoll_echo.c
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) -pthread $< -o $@

$(BENCH_OUT)/uv_echo: bench/uv_echo.c | bench-deps
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $$(pkg-config --cflags libuv) $< -o $@ $$(pkg-config --libs libuv)

$(BENCH_OUT)/uv_best: bench/uv_best.c | bench-deps
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $$(pkg-config --cflags libuv) $< -o $@ $$(pkg-config --libs libuv)

$(BENCH_OUT)/uring_echo: bench/uring_echo.c | bench-uring-deps
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $$(pkg-config --cflags liburing) $< -o $@ $$(pkg-config --libs liburing)

$(BENCH_OUT)/uv_timers: bench/uv_timers.c bench/timers_common.h | bench-deps
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $$(pkg-config --cflags libuv) $< -o $@ $$(pkg-config --libs libuv)

# `lib` is phony, so these relink every time: cheap, and always against the current library.
$(BENCH_OUT)/ns_echo: bench/ns_echo.c lib
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' -lnetsock -lpthread

$(BENCH_OUT)/ns_work: bench/ns_work.c lib
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' -lnetsock -lpthread

$(BENCH_OUT)/tpc_server: bench/tpc_server.c
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) -pthread $< -o $@

$(BENCH_OUT)/ns_resp: bench/ns_resp.c lib
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' -lnetsock -lpthread

$(BENCH_OUT)/ns_fetch: bench/ns_fetch.c lib
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' -lnetsock -lpthread

$(BENCH_OUT)/ns_timers: bench/ns_timers.c bench/timers_common.h lib
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' -lnetsock -lpthread

# The base revision: its tree exported with git archive (no worktree to leave behind; -m gives
# the files the time of extraction, so cargo, with a target dir of its own that another
# revision may have used, sees them as new), re-exported when BENCH_BASE names another commit,
# and built by cargo there. Its library is laid out in base-lib/ under its soname.
bench-base-lib:
	@set -e; \
	rev=$$(git rev-parse --verify --quiet '$(strip $(BENCH_BASE))^{commit}') || { \
		echo "bench: BENCH_BASE=$(BENCH_BASE) is not a commit of this repository"; exit 1; }; \
	if [ "$$(cat $(BENCH_OUT)/base.rev 2>/dev/null)" != "$$rev" ]; then \
		echo "bench: exporting netsock at $$rev into $(BENCH_BASE_SRC)"; \
		rm -rf $(BENCH_BASE_SRC) $(BENCH_OUT)/base.rev; mkdir -p $(BENCH_BASE_SRC); \
		git archive "$$rev" | tar -x -m -C $(BENCH_BASE_SRC); \
		echo "$$rev" > $(BENCH_OUT)/base.rev; \
	fi
	cd $(BENCH_BASE_SRC) && CARGO_TARGET_DIR=$(abspath $(BENCH_OUT)/base-target) $(CARGO) build --release
	@set -e; mkdir -p $(BENCH_BASE_LIB); \
	so=$(BENCH_OUT)/base-target/release/libnetsock.so; \
	cp $$so $(BENCH_BASE_LIB)/.so.$$$$ && mv -f $(BENCH_BASE_LIB)/.so.$$$$ $(BENCH_BASE_LIB)/libnetsock.so; \
	soname=$$(readelf -d $$so | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p'); \
	if [ -n "$$soname" ] && [ "$$soname" != libnetsock.so ]; then ln -sf libnetsock.so $(BENCH_BASE_LIB)/$$soname; fi

# This tree's bench/ns_echo.c against the base's header and library (it uses long-standing API);
# should it not build against an older header, the base revision's own bench/ns_echo.c is used,
# and base-echo.txt says so (run.py prints it).
$(BENCH_OUT)/ns_echo_base: bench/ns_echo.c bench-base-lib
	@set -e; \
	if $(CC) $(BENCH_CWARN) -I$(BENCH_BASE_SRC)/include $< -o $@ -L$(BENCH_BASE_LIB) \
			-Wl,-rpath,'$$ORIGIN/base-lib' -lnetsock -lpthread; then \
		echo "bench/ns_echo.c of this tree" > $(BENCH_OUT)/base-echo.txt; \
	else \
		echo "bench: bench/ns_echo.c does not build against $(BENCH_BASE)'s header: using its own"; \
		$(CC) $(BENCH_CWARN) -I$(BENCH_BASE_SRC)/include $(BENCH_BASE_SRC)/bench/ns_echo.c -o $@ \
			-L$(BENCH_BASE_LIB) -Wl,-rpath,'$$ORIGIN/base-lib' -lnetsock -lpthread; \
		echo "bench/ns_echo.c of $$(cat $(BENCH_OUT)/base.rev)" > $(BENCH_OUT)/base-echo.txt; \
	fi

# The same for the workers scenario's server (workers-pp50: netsock_w1-base).
$(BENCH_OUT)/ns_work_base: bench/ns_work.c bench-base-lib
	@set -e; \
	if ! $(CC) $(BENCH_CWARN) -I$(BENCH_BASE_SRC)/include $< -o $@ -L$(BENCH_BASE_LIB) \
			-Wl,-rpath,'$$ORIGIN/base-lib' -lnetsock -lpthread; then \
		echo "bench: bench/ns_work.c does not build against $(BENCH_BASE)'s header: using its own"; \
		if [ -f $(BENCH_BASE_SRC)/bench/ns_work.c ]; then \
			$(CC) $(BENCH_CWARN) -I$(BENCH_BASE_SRC)/include $(BENCH_BASE_SRC)/bench/ns_work.c -o $@ \
				-L$(BENCH_BASE_LIB) -Wl,-rpath,'$$ORIGIN/base-lib' -lnetsock -lpthread; \
		else \
			echo "bench: $(BENCH_BASE) has no workers: netsock_w1-base is left out"; \
		fi; \
	fi
