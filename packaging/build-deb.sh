#!/bin/sh
# Builds dist/gopulse_VERSION_ARCH.deb with dpkg-deb from a staged tree:
#   [ARCH=amd64|arm64] packaging/build-deb.sh VERSION OUTDIR
# Needs go, dpkg-deb, gzip. See packaging/README.md. ARCH (default amd64)
# is a Debian architecture, the same word as GOARCH for these two; arm64 is
# cross-compiled (CGO_ENABLED=0 needs no cross toolchain).
set -eu

version=$1
out=${2:-dist}
GO=${GO:-go}
arch=${ARCH:-amd64}
top=$(cd "$(dirname "$0")/.." && pwd)
pkg=$top/packaging

case $arch in
amd64 | arm64) ;;
*) echo "build-deb: ARCH=$arch: want amd64 or arm64" >&2; exit 1 ;;
esac

case $version in
[0-9]*) ;;
*) echo "build-deb: version $version must start with a digit" >&2; exit 1 ;;
esac

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
root=$stage/gopulse
mkdir -p "$root/DEBIAN"

# Reproducible: file dates and the changelog date come from the commit.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# Binaries: static, position-independent (ASLR), stripped. Lintian calls a
# plain static binary an error (statically-linked-binary) unless it sees a
# source package built with golang-go; a static-pie one only gets the
# warning shared-library-lacks-prerequisites (see README.md).
ldflags="-s -w -X github.com/gopulse/gopulse/daemon/tracer.Version=$version"
(
	cd "$top"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -buildmode=pie -ldflags "$ldflags" \
		-o "$root/usr/sbin/gopulsed" ./daemon/gopulsed
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -buildmode=pie -ldflags "$ldflags" \
		-o "$root/usr/bin/gopulse" ./tools/gopulse
	"$GO" run ./packaging/genconfig >"$stage/gopulse.yaml"
)
if ! cmp -s "$stage/gopulse.yaml" "$pkg/gopulse.yaml"; then
	echo "build-deb: packaging/gopulse.yaml is not config.Template(); regenerate it: go run ./packaging/genconfig > packaging/gopulse.yaml" >&2
	exit 1
fi

install -D -m 0644 "$pkg/gopulse.yaml" "$root/etc/gopulse/gopulse.yaml"
install -D -m 0644 "$top/systemd/gopulsed.service" "$root/lib/systemd/system/gopulsed.service"
install -D -m 0644 "$top/systemd/gopulsed.socket" "$root/lib/systemd/system/gopulsed.socket"
install -D -m 0644 "$pkg/completion/gopulse.bash" "$root/usr/share/bash-completion/completions/gopulse"
install -D -m 0644 "$pkg/completion/_gopulse" "$root/usr/share/zsh/vendor-completions/_gopulse"
install -D -m 0644 "$pkg/man/gopulsed.8" "$root/usr/share/man/man8/gopulsed.8"
install -D -m 0644 "$pkg/man/gopulse.1" "$root/usr/share/man/man1/gopulse.1"
gzip -9n "$root/usr/share/man/man8/gopulsed.8" "$root/usr/share/man/man1/gopulse.1"
install -D -m 0644 "$pkg/debian/copyright" "$root/usr/share/doc/gopulse/copyright"
# Fleet views: Grafana dashboard and Prometheus alerting rules.
install -D -m 0644 "$pkg/fleet/gopulse-dashboard.json" "$root/usr/share/gopulse/gopulse-dashboard.json"
install -D -m 0644 "$pkg/fleet/gopulse-alerts.yml" "$root/usr/share/gopulse/gopulse-alerts.yml"

# Native package: its changelog is changelog.gz.
maint="gopulse maintainers <gopulse@lists.gopulse.dev>"
commit=$(git -C "$top" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
{
	echo "gopulse ($version) unstable; urgency=medium"
	echo
	echo "  * Build of commit $commit."
	echo
	echo " -- $maint  $date"
} >"$root/usr/share/doc/gopulse/changelog"
gzip -9n "$root/usr/share/doc/gopulse/changelog"

install -m 0755 "$pkg/debian/postinst" "$pkg/debian/prerm" "$pkg/debian/postrm" "$root/DEBIAN/"
echo /etc/gopulse/gopulse.yaml >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: gopulse
Version: $version
Architecture: $arch
Maintainer: $maint
Installed-Size: $size
Depends: passwd
Section: admin
Priority: optional
Homepage: https://github.com/gopulse/gopulse
Description: GC tracer for every Go process on the host (eBPF)
 gopulsed attaches eBPF uprobes to the Go runtime of every Go executable
 that runs on the host, whatever its Go version or build mode, and records
 each process's garbage collection cycles: phases, stop-the-world pauses,
 mark assists and heap sizes, without restarting or instrumenting it.
 .
 The gopulse command lists the traced processes and their GC history; the
 daemon also exports the figures over OTLP and to Prometheus. Members of
 the group gopulse may query it.
 .
 Requires Linux 5.8 or later with BTF (Debian 11 and later); gopulsed
 --check-kernel tells which probe families this kernel runs.
CONTROL

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
chmod -R u+rwX,go+rX,go-w "$root"
deb=$out/gopulse_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
