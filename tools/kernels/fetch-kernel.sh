#!/usr/bin/env bash
# fetch-kernel.sh SUITE [PACKAGE [ARCH]]: prints the path of a Debian kernel
# image (vmlinuz) of SUITE for ARCH (default amd64), downloaded once and
# cached by fetch-deb.sh (which see: the cache, the mirror).
#
# PACKAGE defaults to the suite's linux-image-cloud-ARCH metapackage (small,
# boots under QEMU), resolved to the versioned package it depends on (its
# -unsigned build on arm64).
set -euo pipefail
suite=${1:?suite}
arch=${3:-amd64}
pkg=${2:-linux-image-cloud-$arch}
dir=$("$(dirname "$0")/fetch-deb.sh" "$suite" "$arch" "$pkg" 'vmlinuz=boot/vmlinuz-*' 'config?=boot/config-*')
echo "$dir/vmlinuz"
