# netsock: `make` builds the library, the header and the C examples into build/;
# `make demo` runs the classic programs against each other; `make test` runs every test.

CARGO   ?= cargo
CC      ?= cc
CXX     ?= c++
PYTHON  ?= python3
PREFIX  ?= /usr/local
DESTDIR ?=
LIBDIR  ?= $(PREFIX)/lib

BUILD   := build
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -Iinclude
LDLIBS  := -lnetsock -lpthread

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
MAJOR   := $(firstword $(subst ., ,$(VERSION)))
SONAME  := libnetsock.so.$(MAJOR)

EXAMPLES := $(patsubst examples-c/%.c,$(BUILD)/%,$(wildcard examples-c/*.c))
CTESTS   := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(wildcard tests/c/test_*.c))

.PHONY: all lib demo test test-rust test-c test-python test-readme test-header test-install test-soak \
        test-peers check-header install uninstall clean openssl-cli

all: lib $(EXAMPLES)

# Cargo decides what is stale; it also regenerates include/netsock.h (build.rs). The shared
# library is laid out as installed: the real file, the soname link, the link-time name. Files
# are replaced by rename, never rewritten in place: a running program has them mapped.
lib:
	$(CARGO) build --release
	@mkdir -p $(BUILD)
	cp target/release/libnetsock.a $(BUILD)/.a.$$$$ && mv -f $(BUILD)/.a.$$$$ $(BUILD)/libnetsock.a
	cp target/release/libnetsock.so $(BUILD)/.so.$$$$ && mv -f $(BUILD)/.so.$$$$ $(BUILD)/libnetsock.so.$(VERSION)
	ln -sf libnetsock.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libnetsock.so

$(BUILD)/%: examples-c/%.c lib
	$(CC) $(CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN' $(LDLIBS)

$(BUILD)/tests/%: tests/c/%.c tests/c/check.h lib
	@mkdir -p $(BUILD)/tests
	$(CC) $(CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' $(LDLIBS)

demo: all
	sh examples-c/demo.sh $(BUILD)

# The C suite runs last so that its "C: N passed, N failed" line closes the run. The C tests
# also run built with ASan/UBSan and under valgrind (tests/hardening.mk), and a short soak.
test: check-header test-header test-rust test-python test-readme test-install test-soak test-peers test-hardening test-c

# The TLS tests make their certificates with the openssl CLI (tests/tls/certs.sh) and talk to
# openssl s_client / s_server: Debian's openssl, installed here if missing.
openssl-cli:
	@command -v openssl >/dev/null || { echo "installing openssl"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl) >/dev/null; }

test-c test-python test-peers test-asan test-valgrind test-valgrind-all: openssl-cli

test-soak: $(BUILD)/soak
	$(BUILD)/soak 5

test-rust:
	$(CARGO) test

test-c: $(CTESTS)
	sh tests/c/run.sh $(BUILD)/tests

# The RESP and DNS examples against clients nobody here wrote: redis-cli and redis-benchmark
# (Debian's redis-tools), dig (bind9-dnsutils); the listener and PROXY examples against
# systemd-socket-activate (systemd) and HAProxy (haproxy); the TLS examples against openssl
# s_client/s_server and Python's ssl; each package installed only if its tools are missing
# (PEERS_VALGRIND=1: the servers under valgrind).
test-peers: $(BUILD)/resp_server $(BUILD)/dns_server $(BUILD)/echo_server $(BUILD)/udp_server \
		$(BUILD)/prefork_server $(BUILD)/proxied_server $(BUILD)/restart_server \
		$(BUILD)/tls_echo_server $(BUILD)/tls_client
	@command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null || { \
		echo "test-peers: installing redis-tools"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools) >/dev/null; }
	@command -v dig >/dev/null || { \
		echo "test-peers: installing bind9-dnsutils"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bind9-dnsutils) >/dev/null; }
	@command -v haproxy >/dev/null || { \
		echo "test-peers: installing haproxy"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy) >/dev/null; }
	@command -v systemd-socket-activate >/dev/null || { \
		echo "test-peers: installing systemd"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd) >/dev/null; }
	sh tests/peers/run.sh $(BUILD)

# The Python package as a user gets it: a fresh virtual environment, `pip install
# bindings/python` (its build backend, pytest and mypy come from PyPI), then the tests against
# the installed package (never the source tree's) and mypy --strict on the examples.
PYVENV := $(BUILD)/pyvenv
test-python: lib
	rm -rf $(PYVENV)
	$(PYTHON) -m venv $(PYVENV)
	$(PYVENV)/bin/python -m pip install --quiet --disable-pip-version-check ./bindings/python pytest mypy
	NETSOCK_LIBRARY=$(CURDIR)/$(BUILD)/libnetsock.so NETSOCK_TEST_INSTALLED=1 \
		$(PYVENV)/bin/python -m pytest -q -p no:cacheprovider tests/python
	$(PYVENV)/bin/mypy --strict --cache-dir $(BUILD)/mypy-cache bindings/python/examples
	$(PYVENV)/bin/mypy --strict --cache-dir $(BUILD)/mypy-cache bindings/python/netsock

# The README's C example must build and run as printed.
test-readme: lib
	@mkdir -p $(BUILD)/tests
	awk '/^```c$$/{on=1;next} /^```$$/{if(on)exit} on' README.md > $(BUILD)/tests/readme_example.c
	$(CC) $(CFLAGS) $(BUILD)/tests/readme_example.c -o $(BUILD)/tests/readme_example -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' $(LDLIBS)
	$(BUILD)/tests/readme_example | grep -qx 'NS_OK: success -> hello'
	@echo "README example: builds and answers"

# The committed header must be the one the sources generate: build, then compare.
check-header: lib
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git diff --exit-code -- include/netsock.h || { \
			echo "include/netsock.h is stale: commit the regenerated header"; exit 1; }; \
		echo "include/netsock.h matches the sources"; \
	else echo "not a git checkout: header staleness not checked"; fi

# The header: stands alone in strict C99 and in C++, its version matches Cargo.toml, every
# exported symbol is ns_* and declared (and documented) in it.
test-header: lib
	sh tests/header/check.sh $(BUILD) $(VERSION)

# Install into a temporary prefix, then build and run an example through pkg-config and through
# CMake, shared and static. cmake is Debian's package, installed here if missing (CI starts from a
# clean machine).
test-install: lib
	@command -v cmake >/dev/null || { echo "test-install: installing cmake"; mkdir -p $(BUILD); \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake; } \
			>$(BUILD)/apt-cmake.log 2>&1 || { cat $(BUILD)/apt-cmake.log; exit 1; }; }
	sh tests/install/check.sh

# The .pc file names the prefix, so it is written at every install. The CMake files name paths
# relative to their own directory instead (a staged or moved install still works): the header's
# is computed here, since LIBDIR need not be PREFIX/lib; the libraries' is always ../..
CMAKEDIR := $(LIBDIR)/cmake/netsock

install: lib $(BUILD)/native-static-libs
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e "s|@LIBS_PRIVATE@|$$(cat $(BUILD)/native-static-libs)|" netsock.pc.in > $(BUILD)/netsock.pc
	for f in netsockConfig netsockConfigVersion; do \
		sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@MAJOR@|$(MAJOR)|g' \
		    -e "s|@INCLUDEDIR_REL@|$$(realpath -ms --relative-to='$(CMAKEDIR)' '$(PREFIX)/include')|" \
		    -e "s|@LIBS_PRIVATE@|$$(tr ' ' ';' < $(BUILD)/native-static-libs)|" \
		    cmake/$$f.cmake.in > $(BUILD)/$$f.cmake || exit 1; \
	done
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(CMAKEDIR) $(DESTDIR)$(PREFIX)/include
	install -m 644 $(BUILD)/libnetsock.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(BUILD)/libnetsock.so.$(VERSION) $(DESTDIR)$(LIBDIR)/
	ln -sf libnetsock.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libnetsock.so
	install -m 644 include/netsock.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(BUILD)/netsock.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	install -m 644 $(BUILD)/netsockConfig.cmake $(BUILD)/netsockConfigVersion.cmake $(DESTDIR)$(CMAKEDIR)/

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libnetsock.a $(DESTDIR)$(LIBDIR)/libnetsock.so.$(VERSION) \
	      $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libnetsock.so \
	      $(DESTDIR)$(PREFIX)/include/netsock.h $(DESTDIR)$(LIBDIR)/pkgconfig/netsock.pc \
	      $(DESTDIR)$(CMAKEDIR)/netsockConfig.cmake $(DESTDIR)$(CMAKEDIR)/netsockConfigVersion.cmake
	rmdir $(DESTDIR)$(CMAKEDIR) 2>/dev/null || true

# Libs.private lists what the static library needs, as rustc reports it for this crate (asked
# once per dependency change: it costs a build of its own).
$(BUILD)/native-static-libs: Cargo.toml Cargo.lock
	@mkdir -p $(BUILD)
	$(CARGO) rustc -q --release --lib --crate-type staticlib -- --print=native-static-libs 2>&1 \
		| sed -n 's/.*native-static-libs: //p' | tail -n 1 > $@.tmp
	test -s $@.tmp || { echo "rustc did not report the native libraries"; exit 1; }
	mv $@.tmp $@


clean:
	$(CARGO) clean
	rm -rf $(BUILD)

# Longer checks (sanitizers, valgrind, fuzzing, soak) and the benchmark live in their own files.
-include tests/hardening.mk bench/bench.mk
