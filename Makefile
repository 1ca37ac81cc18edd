# gopulse — see README.md. Go 1.26 builds everything; the committed BPF
# objects (*_bpfel.o) mean clang is needed only for `make generate`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/gopulse/gopulse/daemon/tracer.Version=$(VERSION)

.PHONY: all build generate check-clang check-generate test test-kernels test-hostile fuzz bench vet clean deb

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/gopulsed ./daemon/gopulsed
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/gopulse ./tools/gopulse

# The committed BPF objects are built by this clang, pinned so that a
# regeneration is byte for byte what is committed (check-generate): Debian
# 12's clang-14 (apt-get install clang-14 llvm-14 libbpf-dev).
CLANG         ?= clang-14
STRIP         ?= llvm-strip-14
CLANG_VERSION := 14.0.6

# Regenerates bpf/vmlinux.h from this kernel's BTF only when asked
# (VMLINUX=1): the committed header is what CO-RE builds against.
generate: check-clang
	@if [ "$(VMLINUX)" = 1 ]; then bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h; fi
	BPF2GO_CC=$(CLANG) BPF2GO_STRIP=$(STRIP) $(GO) generate ./probes/... ./daemon/...

check-clang:
	@$(CLANG) --version | grep -q 'clang version $(CLANG_VERSION)' || \
		{ echo "make generate: want clang $(CLANG_VERSION) as $(CLANG), have: $$($(CLANG) --version 2>&1 | head -1)" >&2; exit 1; }

# Regenerates every BPF object and its Go bindings and fails when they
# differ from what is committed (a source changed without `make generate`,
# or a hand edit of generated code). Part of make test.
check-generate: generate
	@if [ -n "$$(git status --porcelain -- bpf probes daemon)" ]; then \
		git status --short -- bpf probes daemon >&2; \
		echo "check-generate: generated BPF objects differ from the sources: run make generate and commit" >&2; exit 1; fi

# The whole suite: the committed BPF objects are what their sources build
# to, then real BPF programs against real Go processes, then the same
# daemon on every kernel of the matrix. Needs root (CAP_BPF, CAP_PERFMON);
# with CI=true a test that lacks them fails instead of skipping.
test: check-generate
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout 40m ./...
	$(MAKE) fuzz
	$(MAKE) test-kernels

# The hostile-host part of the suite alone (real daemon, forged binaries,
# swapped files, hostile names...); `go test ./...` above runs it too.
test-hostile:
	$(GO) test -count=1 -p 1 -timeout 15m ./internal/hostile/

# Every parser's and locator's fuzz target for a fixed time each (their
# seeds, real and forged binaries, also run in plain go test). Each also
# asserts goinspect's parse budget: ≤ 64 MiB allocated, ≤ 1 s of CPU.
# The fuzzing time includes the baseline run of the seeds; minimization
# of a new input is capped (10 tries) so that the time is spent fuzzing:
# with the 60 s default, each new input of the slower targets took seconds.
FUZZTIME ?= 20s
FUZZ_TARGETS := \
	./probes/goinspect:FuzzOpen ./probes/goinspect:FuzzPclntab \
	./probes/goinspect:FuzzDecode ./probes/goinspect:FuzzVersion \
	./probes/rtstate:FuzzDecodeBooks ./probes/rtstate:FuzzSiteFinders
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -count=1 -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10x $$pkg; \
	done

# The suite of tools/kernels/suite on every kernel of the matrix (Debian
# 11's 5.10, 12's 6.1, 13's 6.12 under QEMU, Debian 12's arm64 6.1 under
# qemu-system-aarch64 running the binaries of make deb ARCH=arm64, and the
# host's own); see tools/kernels/run.sh. Needs root, qemu-system-x86,
# qemu-system-arm, busybox-static, cpio, binutils.
test-kernels:
	tools/kernels/run.sh

# The Debian package, dist/gopulse_$(DEB_VERSION)_$(ARCH).deb
# (packaging/README.md); ARCH=arm64 cross-compiles from this amd64 machine.
DEB_VERSION ?= $(shell packaging/version.sh)
DIST        ?= dist
ARCH        ?= amd64
deb:
	GO=$(GO) ARCH=$(ARCH) packaging/build-deb.sh "$(DEB_VERSION)" "$(DIST)"

bench:
	$(GO) run ./tools/bench

clean:
	rm -rf bin dist
