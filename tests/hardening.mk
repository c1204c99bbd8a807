# Hardening checks of the C test programs (included by the top-level Makefile, whose CC,
# CFLAGS, BUILD, LDLIBS, CTESTS and `lib` it uses). Every tests/c/test_*.c is picked up.
#
#   make test-asan          the C tests built with -fsanitize=address,undefined into
#                           build/asan/ (the Rust library as it is, uninstrumented: ASan's
#                           malloc and LeakSanitizer still cover its heap) and run with every
#                           report fatal; first checks the sanitizers are linked in and that a
#                           canary leak inside netsock and a canary overflow are caught
#   make test-valgrind      the C tests under valgrind memcheck: no error, no definitely or
#                           indirectly lost byte; all but VALGRIND_SLOW (the quick run)
#   make test-valgrind-all  the same for every program
#   make test-hardening     test-asan, then test-valgrind (for make test)
#   make helgrind           the thread-heavy tests once under helgrind, its reports grouped;
#                           not part of any test run (see tests/valgrind/helgrind_summary.py)
#   make soak, make fuzz    tests/soak/soak.c for SOAK_SECONDS, fuzz/run.sh for FUZZ_SECONDS,
#                           each skipped while its file does not exist
#   make check-all          test, test-asan, test-valgrind-all, soak, fuzz: one after another
#
# Logs: build/asan/run.log, build/valgrind/NAME.log, build/helgrind/NAME.log.

SAN_DIR        := $(BUILD)/asan
SAN_TESTS      := $(patsubst $(BUILD)/tests/%,$(SAN_DIR)/%,$(CTESTS))
SAN_CFLAGS     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g
VALGRIND_LOGS  := $(BUILD)/valgrind
HELGRIND_LOGS  := $(BUILD)/helgrind
# Programs left out of the quick valgrind run: none yet (each takes 1-13 s under valgrind on
# 2 cores; make test-valgrind prints every program's time). Name any that grows past ~30 s.
VALGRIND_SLOW  ?=
VALGRIND_LIMIT ?= 120
# Programs whose own checks cannot hold under valgrind, run for memory errors only: valgrind
# must find nothing in them, their verdict is shown but not counted (a crash or a hang still
# fails). Each for a reason seen here:
#  test_concurrency  counts throughput and deadlines: under valgrind, which runs one thread at
#                    a time, its 60-odd threads make 90-370 connections in ~9 s instead of
#                    ~2500 in 4 s, and with 8 threads flooding the loops' inboxes a connection's
#                    on_open can come more than 3 s after the client connected: the client has
#                    given up on the greeting ("missing greetings" 6-22 per run) and reset, so
#                    on_open's send fails with NS_ERR_CLOSED. 0 failures in 15 runs without it.
# (test_exhaustion needs no entry: it notices valgrind, whose RLIMIT_NOFILE is emulated, and
# checks the refusal counts loosely then.)
VALGRIND_MEMCHECK_ONLY ?= test_concurrency
HELGRIND_TESTS ?= test_threads test_mt test_concurrency test_workers
SOAK_SECONDS   ?= 60
FUZZ_SECONDS   ?= 60

.PHONY: test-asan test-valgrind test-valgrind-all test-hardening helgrind soak fuzz check-all

# The sanitized tests. `lib` is phony, so they relink every time, like build/tests/.
$(SAN_DIR)/%: tests/c/%.c tests/c/check.h lib
	@mkdir -p $(SAN_DIR)
	$(CC) $(CFLAGS) $(SAN_CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' $(LDLIBS)

$(SAN_DIR)/canary: tests/sanitize/canary.c lib
	@mkdir -p $(SAN_DIR)
	$(CC) $(CFLAGS) $(SAN_CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' $(LDLIBS)

# The plain canary, for valgrind (not a test_* program: tests/c/run.sh skips it).
$(BUILD)/tests/canary: tests/sanitize/canary.c lib
	@mkdir -p $(BUILD)/tests
	$(CC) $(CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' $(LDLIBS)

test-asan: $(SAN_TESTS) $(SAN_DIR)/canary
	sh tests/sanitize/run.sh $(SAN_DIR)

test-valgrind: $(CTESTS) $(BUILD)/tests/canary
	sh tests/valgrind/run.sh -t $(VALGRIND_LIMIT) -s "$(VALGRIND_SLOW)" -m "$(VALGRIND_MEMCHECK_ONLY)" \
		$(BUILD)/tests $(VALGRIND_LOGS)

test-valgrind-all: $(CTESTS) $(BUILD)/tests/canary
	sh tests/valgrind/run.sh -t 600 -m "$(VALGRIND_MEMCHECK_ONLY)" $(BUILD)/tests $(VALGRIND_LOGS)

# One after the other even under make -j: the tests measure time, and two runs at once on
# two cores would make them flaky.
test-hardening:
	$(MAKE) --no-print-directory test-asan
	$(MAKE) --no-print-directory test-valgrind

helgrind: $(CTESTS)
	PYTHON=$(PYTHON) sh tests/valgrind/helgrind.sh $(BUILD)/tests $(HELGRIND_LOGS) $(HELGRIND_TESTS)

ifneq ($(wildcard tests/soak/soak.c),)
$(BUILD)/soak: tests/soak/soak.c tests/c/check.h lib
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) -Itests/c $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN' $(LDLIBS)

soak: $(BUILD)/soak
	$(BUILD)/soak $(SOAK_SECONDS)
else
soak:
	@echo "soak: tests/soak/soak.c does not exist: skipped"
endif

fuzz:
	@if [ -f fuzz/run.sh ]; then sh fuzz/run.sh $(FUZZ_SECONDS); \
	else echo "fuzz: fuzz/run.sh does not exist: skipped"; fi

check-all:
	$(MAKE) --no-print-directory test
	$(MAKE) --no-print-directory test-asan
	$(MAKE) --no-print-directory test-valgrind-all
	$(MAKE) --no-print-directory soak
	$(MAKE) --no-print-directory fuzz
