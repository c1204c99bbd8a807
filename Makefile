# netsock: `make` builds the library, the header and the C examples into build/;
# `make demo` runs the classic programs against each other; `make test` runs every test.

CARGO   ?= cargo
CC      ?= cc
PYTHON  ?= python3
PREFIX  ?= /usr/local
DESTDIR ?=

BUILD   := build
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -Iinclude
LDLIBS  := -lnetsock -lpthread

EXAMPLES := $(patsubst examples-c/%.c,$(BUILD)/%,$(wildcard examples-c/*.c))
CTESTS   := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(wildcard tests/c/test_*.c))
VERSION  := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

.PHONY: all lib demo test test-rust test-c test-python test-readme check-header install uninstall clean

all: lib $(EXAMPLES)

# Cargo decides what is stale; it also regenerates include/netsock.h (build.rs).
lib:
	$(CARGO) build --release
	@mkdir -p $(BUILD)
	cp target/release/libnetsock.so target/release/libnetsock.a $(BUILD)/

$(BUILD)/%: examples-c/%.c lib
	$(CC) $(CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN' $(LDLIBS)

$(BUILD)/tests/%: tests/c/%.c tests/c/check.h lib
	@mkdir -p $(BUILD)/tests
	$(CC) $(CFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,'$$ORIGIN/..' $(LDLIBS)

demo: all
	sh examples-c/demo.sh $(BUILD)

test: check-header test-rust test-python test-readme test-c

test-rust:
	$(CARGO) test

test-c: $(CTESTS)
	sh tests/c/run.sh $(BUILD)/tests

test-python: lib
	NETSOCK_LIB=$(BUILD)/libnetsock.so $(PYTHON) tests/python/test_ffi.py

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

install: lib
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 644 $(BUILD)/libnetsock.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libnetsock.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/netsock.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' netsock.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/netsock.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libnetsock.a $(DESTDIR)$(PREFIX)/lib/libnetsock.so \
	      $(DESTDIR)$(PREFIX)/include/netsock.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/netsock.pc

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
