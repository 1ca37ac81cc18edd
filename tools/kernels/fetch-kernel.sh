#!/usr/bin/env bash
# fetch-kernel.sh SUITE [PACKAGE]: prints the path of a Debian kernel image
# (vmlinuz) of SUITE, downloaded once and cached.
#
# PACKAGE defaults to the suite's linux-image-cloud-amd64 metapackage (small,
# boots under QEMU), resolved to the versioned package it depends on. The
# cache is keyed by that package name and version:
#   $CACHE/SUITE.pkg          the resolved "name version" (so later runs need
#                             no network; GOPULSE_KERNELS_REFRESH=1 resolves again)
#   $CACHE/NAME_VERSION/vmlinuz
# CACHE is $GOPULSE_KERNEL_CACHE, else $XDG_CACHE_HOME/gopulse-kernels, else
# ~/.cache/gopulse-kernels. Other suites than the machine's are read with
# apt's alternate lists on the mirror the machine already uses.
set -euo pipefail
suite=${1:?suite}
pkg=${2:-linux-image-cloud-amd64}
cache=${GOPULSE_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gopulse-kernels}
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

pointer="$cache/$suite.$pkg"
if [ -s "$pointer" ] && [ "${GOPULSE_KERNELS_REFRESH:-0}" != 1 ]; then
	read -r name version <"$pointer"
	img="$cache/${name}_${version}/vmlinuz"
	if [ -s "$img" ]; then
		echo "$img"
		exit 0
	fi
fi

mirror=${GOPULSE_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
	mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
	[ -n "$mirror" ] || mirror=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n1 || true)
	[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi
a="$cache/apt-$suite"
mkdir -p "$a/lists/partial" "$a/cache/archives/partial"
echo "deb $mirror $suite main" >"$a/sources.list"
A=(-o Dir::Etc::sourcelist="$a/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$a/lists"
	-o Dir::Cache="$a/cache" -o APT::Architecture=amd64 -o APT::Architectures=amd64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt-get "${A[@]}" -qq update >&2

name=$pkg
# A metapackage: follow its dependency on the versioned image.
dep=$(apt-cache "${A[@]}" depends "$pkg" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$dep" ] && name=$dep
version=$(apt-cache "${A[@]}" policy "$name" | awk '/Candidate:/ {print $2}')
[ -n "$version" ] && [ "$version" != "(none)" ] || { echo "no package $name in $suite" >&2; exit 1; }
dir="$cache/${name}_${version}"
if [ ! -s "$dir/vmlinuz" ]; then
	tmp=$(mktemp -d "$cache/dl.XXXXXX")
	(cd "$tmp" && apt-get "${A[@]}" -qq download "$name=$version" >&2)
	dpkg-deb -x "$tmp"/*.deb "$tmp/x"
	mkdir -p "$dir"
	cp "$tmp"/x/boot/vmlinuz-* "$dir/vmlinuz"
	cp "$tmp"/x/boot/config-* "$dir/config" 2>/dev/null || true
	rm -rf "$tmp"
fi
echo "$name $version" >"$pointer"
echo "$dir/vmlinuz"
