#!/usr/bin/env bash
# fetch-deb.sh SUITE ARCH PACKAGE NAME=GLOB...: downloads a Debian package of
# SUITE for ARCH (amd64, arm64) once, keeps the files of it that each GLOB
# (a path inside the package) matches as NAME in a cache directory, and
# prints that directory. Every GLOB must match; a NAME=GLOB? one may not.
#
# A kernel metapackage (linux-image-cloud-ARCH) is resolved to the versioned
# image it depends on; on arm64 that image's -unsigned build is taken (the
# same kernel without the EFI signature wrapper: issue 14 names it). The
# cache is keyed by package name, version and architecture:
#   $CACHE/SUITE.ARCH.PACKAGE     the resolved "name version" (so later runs
#                                 need no network; GOPULSE_KERNELS_REFRESH=1
#                                 resolves again)
#   $CACHE/NAME_VERSION_ARCH/     the kept files
# CACHE is $GOPULSE_KERNEL_CACHE, else $XDG_CACHE_HOME/gopulse-kernels, else
# ~/.cache/gopulse-kernels. Other suites and architectures than the
# machine's are read with apt's alternate lists on the mirror the machine
# already uses.
set -euo pipefail
suite=${1:?suite}
arch=${2:?arch}
pkg=${3:?package}
shift 3
[ $# -gt 0 ] || { echo "fetch-deb.sh: no NAME=GLOB" >&2; exit 2; }
cache=${GOPULSE_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gopulse-kernels}
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

have() { # dir: every required NAME is there
	local spec
	for spec in "$@"; do
		case ${spec%%=*} in *'?') continue ;; esac
		[ -s "$dir/${spec%%=*}" ] || return 1
	done
}

pointer="$cache/$suite.$arch.$pkg"
if [ -s "$pointer" ] && [ "${GOPULSE_KERNELS_REFRESH:-0}" != 1 ]; then
	read -r name version <"$pointer"
	dir="$cache/${name}_${version}_$arch"
	if have "$@"; then
		echo "$dir"
		exit 0
	fi
fi

mirror=${GOPULSE_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
	mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
	[ -n "$mirror" ] || mirror=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n1 || true)
	[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi
a="$cache/apt-$suite-$arch"
mkdir -p "$a/lists/partial" "$a/cache/archives/partial"
echo "deb [arch=$arch] $mirror $suite main" >"$a/sources.list"
# The list's own architecture is the native one for apt: names need no
# :ARCH suffix.
A=(-o Dir::Etc::sourcelist="$a/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$a/lists"
	-o Dir::Cache="$a/cache" -o APT::Architecture="$arch" -o APT::Architectures="$arch" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt-get "${A[@]}" -qq update >&2

candidate() { apt-cache "${A[@]}" policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
name=$pkg
# A metapackage: follow its dependency on the versioned image.
dep=$(apt-cache "${A[@]}" depends "$pkg" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$dep" ] && name=$dep
if [ -n "$dep" ] && [ "$arch" = arm64 ]; then
	v=$(candidate "$dep-unsigned")
	[ -n "$v" ] && [ "$v" != "(none)" ] && name=$dep-unsigned
fi
version=$(candidate "$name")
[ -n "$version" ] && [ "$version" != "(none)" ] || { echo "fetch-deb.sh: no package $name in $suite ($arch)" >&2; exit 1; }
dir="$cache/${name}_${version}_$arch"
if ! have "$@"; then
	tmp=$(mktemp -d "$cache/dl.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get "${A[@]}" -qq download "$name=$version" >&2)
	dpkg-deb -x "$tmp"/*.deb "$tmp/x"
	mkdir -p "$dir"
	for spec in "$@"; do
		n=${spec%%=*} glob=${spec#*=}
		mapfile -t m < <(cd "$tmp/x" && compgen -G "$glob" || true)
		case $n in *'?')
			[ ${#m[@]} -gt 0 ] && cp "$tmp/x/${m[0]}" "$dir/${n%'?'}"
			continue ;;
		esac
		[ ${#m[@]} = 1 ] || { echo "fetch-deb.sh: $name $version: $glob matches ${#m[@]} files" >&2; exit 1; }
		cp "$tmp/x/${m[0]}" "$dir/$n"
	done
fi
echo "$name $version" >"$pointer"
echo "$dir"
