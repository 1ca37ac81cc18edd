#!/usr/bin/env bash
# run.sh: `make test-kernels`. Runs tools/kernels/suite (gopulsed with every
# family against the fixtures, figures compared with the runtime's own) on
# each kernel of the matrix, booted under QEMU with a busybox initramfs, and
# on the host's own kernel directly. Prints one line per kernel and fails
# unless every kernel passes.
#
#   GOPULSE_KERNELS   the matrix, "suite[/arch][:package] ..." (default:
#                     bullseye bookworm trixie, each its
#                     linux-image-cloud-amd64; bookworm/arm64, its
#                     linux-image-cloud-arm64's -unsigned image, booted by
#                     qemu-system-aarch64 -M virt; and "host", the host's
#                     own kernel)
#   GOPULSE_QEMU_ACCEL  auto (KVM if it boots, else TCG), kvm or tcg (amd64
#                     guests; arm64 guests are always TCG on this amd64 host)
#   GOPULSE_KERNEL_CACHE  where kernels are cached (fetch-deb.sh)
#   GOPULSE_KERNELS_OUT   keep the work directory (console logs) there
#   GOPULSE_KERNEL_APPEND more kernel command line (e.g. loglevel=7)
# Needs root (the suite loads BPF programs on the host), qemu-system-x86,
# qemu-system-arm, busybox-static, cpio, dpkg-deb, and Go 1.19 at
# /usr/lib/go-1.19/bin/go.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tools/kernels
matrix=${GOPULSE_KERNELS:-bullseye bookworm trixie bookworm/arm64 host}
accel=${GOPULSE_QEMU_ACCEL:-auto}
out=${GOPULSE_KERNELS_OUT:-$(mktemp -d /tmp/gopulse-kernels.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
t0=$(date +%s)

entry_arch() { # matrix entry -> its architecture
	local k=${1%%:*}
	case $k in */*) echo "${k#*/}" ;; host) go env GOHOSTARCH ;; *) echo amd64 ;; esac
}

# 1. One initramfs per architecture of the matrix: binaries that need no
#    library (the daemon, the CLI, the suite, and the fixtures built with
#    each toolchain the product supports; on arm64 the daemon and the CLI
#    are the package's), busybox, and an init that mounts what the daemon
#    needs, runs the suite and powers off.
build_root() { # arch: fills $out/root-ARCH, writes $out/initramfs-ARCH.gz
	local arch=$1 root="$out/root-$1" want_version=""
	rm -rf "$root"
	mkdir -p "$root"/{bin,fixtures,proc,sys,dev,tmp,run,etc}
	export CGO_ENABLED=0 GOARCH=$arch
	if [ "$arch" = arm64 ]; then
		# The package's own binaries are what runs (issue 14): make deb
		# cross-builds it; the guest prints the hashes of what it runs,
		# compared below with the package's.
		local deb
		deb=$(GOARCH= make -s --no-print-directory deb ARCH=arm64 DIST="$out/deb" | tail -n1)
		dpkg-deb -x "$deb" "$out/deb/x"
		cp "$out/deb/x/usr/sbin/gopulsed" "$out/deb/x/usr/bin/gopulse" "$root/bin/"
		want_version=$(dpkg-deb -f "$deb" Version)
		(cd "$out/deb/x" && sha256sum usr/sbin/gopulsed usr/bin/gopulse) | awk '{print $1}' >"$out/deb/sha256"
		echo "arm64: gopulsed and gopulse from $(basename "$deb")"
	else
		go build -o "$root/bin/gopulsed" ./daemon/gopulsed
		go build -o "$root/bin/gopulse" ./tools/gopulse
	fi
	go build -o "$root/bin/suite" ./$here/suite
	build_fixture() { # program toolchain go-command gotoolchain
		(cd tools/fixtures && GOTOOLCHAIN=$4 GOFLAGS=-mod=mod "$3" build -o "$root/fixtures/$1-$2" "./$1")
	}
	for p in gcload memfree pingpong heaplock; do build_fixture "$p" go1.26 go local; done
	build_fixture gcload go1.19 /usr/lib/go-1.19/bin/go local
	build_fixture gcload go1.27 go go1.27.3
	unset GOARCH
	if [ "$arch" = "$(go env GOHOSTARCH)" ]; then
		cp /bin/busybox "$root/bin/busybox"
	else
		# Debian 12's busybox-static for the guest's architecture.
		cp "$("$here/fetch-deb.sh" bookworm "$arch" busybox-static busybox=bin/busybox)/busybox" "$root/bin/busybox"
	fi
	# The package's binaries are position-independent (-buildmode=pie):
	# Go's linker gives them an ELF interpreter to relocate them, though
	# they need no library. Any Debian system has it (libc6); the
	# initramfs gets the same file from Debian 12's libc6.
	local interp
	interp=$(for b in "$root"/bin/* "$root"/fixtures/*; do readelf -l "$b" 2>/dev/null | sed -n 's/.*program interpreter: \(.*\)]/\1/p'; done | sort -u)
	for i in $interp; do
		mkdir -p "$root$(dirname "$i")"
		if [ "$arch" = "$(go env GOHOSTARCH)" ]; then
			cp -L "$i" "$root$i"
		else
			cp "$("$here/fetch-deb.sh" bookworm "$arch" libc6 "ld.so=*lib/*-linux-gnu/$(basename "$i")")/ld.so" "$root$i"
		fi
	done
	cat >"$root/init" <<INIT
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
echo "GOPULSE-BOOT \$(uname -r) \$(uname -m)"
echo "GOPULSE-BINARIES \$(sha256sum /bin/gopulsed /bin/gopulse | awk '{print \$1}' | tr '\n' ' ')"
/bin/suite -timeout 270s -want-version "$want_version"
poweroff -f
INIT
	chmod +x "$root/init"
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 >"$out/initramfs-$arch.gz")
}
arches=$(for k in $matrix; do entry_arch "$k"; done | sort -u)
for arch in $arches; do
	t=$(date +%s)
	build_root "$arch"
	echo "$arch binaries and initramfs built in $(($(date +%s) - t))s"
done

# 2. Each kernel.
boot() { # arch vmlinuz accel log -> qemu's exit status
	local cpu=max
	[ "$3" = kvm ] && cpu=host
	local q=(qemu-system-x86_64 -accel "$3" -cpu "$cpu") console=ttyS0
	if [ "$1" = arm64 ]; then
		# pauth-impdef: pointer authentication with QEMU's own cheap
		# hash instead of QARMA, which costs TCG dearly (the guest
		# kernel signs every return address).
		q=(qemu-system-aarch64 -M virt -accel tcg -cpu max,pauth-impdef=on)
		console=ttyAMA0
	fi
	timeout 420 "${q[@]}" -m 2048 -smp 2 -nographic -no-reboot \
		-kernel "$2" -initrd "$out/initramfs-$1.gz" -append "console=$console quiet panic=-1 softlockup_panic=1 ${GOPULSE_KERNEL_APPEND:-}" </dev/null >"$4" 2>&1
}
kvm_works() { # vmlinuz: does a KVM guest reach its init? (here: qemu aborts on
	# an MSR with -cpu host, nested KVM being what it is)
	[ -w /dev/kvm ] || return 1
	local log="$out/kvm-probe.log"
	# busybox as init prints its usage and exits: the kernel panics, QEMU ends.
	{ timeout 20 qemu-system-x86_64 -accel kvm -cpu host -m 512 -smp 1 -nographic -no-reboot -kernel "$1" \
		-initrd "$out/initramfs-amd64.gz" -append "console=ttyS0 quiet panic=-1 rdinit=/bin/busybox" </dev/null >"$log" 2>&1; } 2>/dev/null
	grep -q 'BusyBox' "$log"
}

results=()
fail=0
for k in $matrix; do
	t=$(date +%s)
	arch=$(entry_arch "$k")
	root="$out/root-$arch"
	if [ "$k" = host ]; then
		log="$out/host.log"
		"$root/bin/suite" -daemon "$root/bin/gopulsed" -cli "$root/bin/gopulse" -fixtures "$root/fixtures" >"$log" 2>&1 || true
		how=host
	else
		suite=${k%%:*}
		suite=${suite%/*}
		pkg=linux-image-cloud-$arch
		[ "$k" != "${k%%:*}" ] && pkg=${k#*:}
		img=$("$here/fetch-kernel.sh" "$suite" "$pkg" "$arch")
		a=tcg
		if [ "$arch" = amd64 ]; then
			if [ "$accel" = auto ]; then
				accel=tcg
				kvm_works "$img" && accel=kvm
				echo "QEMU accelerator: $accel"
			fi
			a=$accel
		fi
		log="$out/$suite.log"
		[ "$arch" = amd64 ] || log="$out/$suite-$arch.log"
		how="qemu-$a $(basename "$(dirname "$img")")"
		# A guest that gives no verdict at all (seen once in ~10 boots of
		# 6.1 under TCG on a loaded host: a soft lockup of the guest,
		# which softlockup_panic turns into a quick exit) is booted once
		# more; a FAIL verdict is final.
		for attempt in 1 2; do
			boot "$arch" "$img" "$a" "$log" || true
			grep -aq 'GOPULSE-VERDICT' "$log" && break
			cp "$log" "$log.attempt$attempt"
			echo "$k: no verdict (console log $log.attempt$attempt: $(grep -ao 'soft lockup.*\|Kernel panic.*' "$log" | head -n1)); booting again"
			how="$how, second boot"
		done
	fi
	if [ "$arch" = arm64 ]; then
		# What the guest ran is the package's binaries, byte for byte.
		ran=$(grep -ao 'GOPULSE-BINARIES.*' "$log" | tr -d '\r' | tail -n1 | cut -d' ' -f2-)
		if [ "$(echo $ran)" = "$(echo $(cat "$out/deb/sha256"))" ]; then
			echo "GOPULSE-CHECK deb-binaries PASS gopulsed and gopulse in the guest are $(basename "$out"/deb/gopulse_*.deb)'s (sha256 $(echo $ran))" >>"$log"
		else
			echo "GOPULSE-CHECK deb-binaries FAIL the guest ran sha256 [$ran], the package has [$(echo $(cat "$out/deb/sha256"))]" >>"$log"
			echo "GOPULSE-VERDICT FAIL (the guest did not run the package's binaries)" >>"$log"
		fi
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
