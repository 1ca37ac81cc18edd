#!/usr/bin/env bash
# run.sh: `make test-kernels`. Runs tools/kernels/suite (gopulsed with every
# family against the fixtures, figures compared with the runtime's own) on
# each kernel of the matrix, booted under QEMU with a busybox initramfs, and
# on the host's own kernel directly. Prints one line per kernel and fails
# unless every kernel passes.
#
#   GOPULSE_KERNELS   the matrix, "suite[:package] ..." (default: bullseye
#                     bookworm trixie, each its linux-image-cloud-amd64);
#                     "host" is the host's kernel (in the default matrix)
#   GOPULSE_QEMU_ACCEL  auto (KVM if it boots, else TCG), kvm or tcg
#   GOPULSE_KERNEL_CACHE  where kernels are cached (fetch-kernel.sh)
#   GOPULSE_KERNELS_OUT   keep the work directory (console logs) there
#   GOPULSE_KERNEL_APPEND more kernel command line (e.g. loglevel=7)
# Needs root (the suite loads BPF programs on the host), qemu-system-x86,
# busybox-static, cpio, and Go 1.19 at /usr/lib/go-1.19/bin/go.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tools/kernels
matrix=${GOPULSE_KERNELS:-bullseye bookworm trixie host}
accel=${GOPULSE_QEMU_ACCEL:-auto}
out=${GOPULSE_KERNELS_OUT:-$(mktemp -d /tmp/gopulse-kernels.XXXXXX)}
mkdir -p "$out"
t0=$(date +%s)

# 1. Static binaries: the daemon, the CLI, the suite, and the fixtures
#    built with each toolchain the product supports.
root="$out/root"
rm -rf "$root"
mkdir -p "$root"/{bin,fixtures,proc,sys,dev,tmp,run,etc}
export CGO_ENABLED=0
go build -o "$root/bin/gopulsed" ./daemon/gopulsed
go build -o "$root/bin/gopulse" ./tools/gopulse
go build -o "$root/bin/suite" ./$here/suite
build_fixture() { # program toolchain go-command gotoolchain
	(cd tools/fixtures && GOTOOLCHAIN=$4 GOFLAGS=-mod=mod "$3" build -o "$root/fixtures/$1-$2" "./$1")
}
for p in gcload memfree pingpong heaplock; do build_fixture "$p" go1.26 go local; done
build_fixture gcload go1.19 /usr/lib/go-1.19/bin/go local
build_fixture gcload go1.27 go go1.27.3
echo "binaries built in $(($(date +%s) - t0))s"

# 2. The initramfs: busybox, an init that mounts what the daemon needs,
#    runs the suite and powers off.
cp /bin/busybox "$root/bin/busybox"
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
echo "GOPULSE-BOOT $(uname -r)"
/bin/suite -timeout 200s
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 >"$out/initramfs.gz")

# 3. Each kernel.
boot() { # vmlinuz accel log -> qemu's exit status
	local cpu=max
	[ "$2" = kvm ] && cpu=host
	timeout 300 qemu-system-x86_64 -accel "$2" -cpu "$cpu" -m 2048 -smp 2 -nographic -no-reboot \
		-kernel "$1" -initrd "$out/initramfs.gz" -append "console=ttyS0 quiet panic=-1 softlockup_panic=1 ${GOPULSE_KERNEL_APPEND:-}" </dev/null >"$3" 2>&1
}
kvm_works() { # vmlinuz: does a KVM guest reach its init? (here: qemu aborts on
	# an MSR with -cpu host, nested KVM being what it is)
	[ -w /dev/kvm ] || return 1
	local log="$out/kvm-probe.log"
	# busybox as init prints its usage and exits: the kernel panics, QEMU ends.
	{ timeout 20 qemu-system-x86_64 -accel kvm -cpu host -m 512 -smp 1 -nographic -no-reboot -kernel "$1" \
		-initrd "$out/initramfs.gz" -append "console=ttyS0 quiet panic=-1 rdinit=/bin/busybox" </dev/null >"$log" 2>&1; } 2>/dev/null
	grep -q 'BusyBox' "$log"
}

results=()
fail=0
for k in $matrix; do
	t=$(date +%s)
	if [ "$k" = host ]; then
		log="$out/host.log"
		"$root/bin/suite" -daemon "$root/bin/gopulsed" -cli "$root/bin/gopulse" -fixtures "$root/fixtures" >"$log" 2>&1 || true
		how=host
	else
		suite=${k%%:*}
		pkg=linux-image-cloud-amd64
		[ "$k" != "$suite" ] && pkg=${k#*:}
		img=$("$here/fetch-kernel.sh" "$suite" "$pkg")
		if [ "$accel" = auto ]; then
			accel=tcg
			kvm_works "$img" && accel=kvm
			echo "QEMU accelerator: $accel"
		fi
		log="$out/$suite.log"
		how="qemu-$accel $(basename "$(dirname "$img")")"
		# A guest that gives no verdict at all (seen once in ~10 boots of
		# 6.1 under TCG on a loaded host: a soft lockup of the guest,
		# which softlockup_panic turns into a quick exit) is booted once
		# more; a FAIL verdict is final.
		for attempt in 1 2; do
			boot "$img" "$accel" "$log" || true
			grep -aq 'GOPULSE-VERDICT' "$log" && break
			cp "$log" "$log.attempt$attempt"
			echo "$k: no verdict (console log $log.attempt$attempt: $(grep -ao 'soft lockup.*\|Kernel panic.*' "$log" | head -n1)); booting again"
			how="$how, second boot"
		done
	fi
	# The console may prefix a line with terminal control sequences.
	grep -ao 'GOPULSE-CHECK.*\|check-kernel:.*' "$log" | tr -d '\r' | sed 's/^/    /' || true
	verdict=$(grep -ao 'GOPULSE-VERDICT.*' "$log" | tr -d '\r' | tail -n1 || true)
	[ -n "$verdict" ] || verdict="GOPULSE-VERDICT FAIL (no verdict; console log $log)"
	line="$k ($how): ${verdict#GOPULSE-VERDICT } wall=$(($(date +%s) - t))s"
	echo "$line"
	results+=("$line")
	case $verdict in "GOPULSE-VERDICT PASS"*) ;; *)
		fail=1
		tail -n 60 "$log" | sed 's/^/    | /'
	;; esac
done
echo "== test-kernels: $(($(date +%s) - t0))s"
printf '  %s\n' "${results[@]}"
[ -n "${GOPULSE_KERNELS_OUT:-}" ] || [ $fail = 1 ] || rm -rf "$out"
exit $fail
