# gopulse — see README.md. Go 1.26 builds everything; the committed BPF
# objects (*_bpfel.o) mean clang is needed only for `make generate`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/gopulse/gopulse/daemon/tracer.Version=$(VERSION)

.PHONY: all build generate test test-kernels bench vet clean deb

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/gopulsed ./daemon/gopulsed
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/gopulse ./tools/gopulse

# Regenerates bpf/vmlinux.h from this kernel's BTF only when asked
# (VMLINUX=1): the committed header is what CO-RE builds against.
generate:
	@if [ "$(VMLINUX)" = 1 ]; then bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h; fi
	$(GO) generate ./probes/... ./daemon/...

# The whole suite: real BPF programs against real Go processes. Needs root
# (CAP_BPF, CAP_PERFMON); with CI=true a test that lacks them fails
# instead of skipping.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout 25m ./...

# The suite of tools/kernels/suite on every kernel of the matrix (Debian
# 11's 5.10, 12's 6.1, 13's 6.12 under QEMU, and the host's own); see
# tools/kernels/run.sh. Needs root, qemu-system-x86, busybox-static, cpio.
test-kernels:
	tools/kernels/run.sh

# The Debian package, dist/gopulse_$(DEB_VERSION)_amd64.deb (packaging/README.md).
DEB_VERSION ?= $(shell packaging/version.sh)
DIST        ?= dist
deb:
	GO=$(GO) packaging/build-deb.sh "$(DEB_VERSION)" "$(DIST)"

bench:
	$(GO) run ./tools/bench

clean:
	rm -rf bin dist
