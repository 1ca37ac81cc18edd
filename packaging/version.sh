#!/bin/sh
# Prints the Debian version of the package built from this checkout:
#   tag v1.2.3 exactly             -> 1.2.3
#   3 commits after tag v1.2.3     -> 1.2.3+git3.abcdef0
#   no tag, 42 commits             -> 0.1.0~git42.abcdef0
# with +dirty appended when tracked files are modified.
set -e
cd "$(dirname "$0")/.."
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo 0.1.0~nogit
	exit 0
fi
hash=$(git rev-parse --short=7 HEAD)
if desc=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
	# v1.2.3-N-gHASH
	n=${desc%-g*}
	n=${n##*-}
	tag=${desc%-*-g*}
	v=${tag#v}
	if [ "$n" != 0 ]; then
		v="$v+git$n.$hash"
	fi
else
	n=$(git rev-list --count HEAD)
	v="0.1.0~git$n.$hash"
fi
if ! git diff --quiet HEAD -- 2>/dev/null; then
	v="$v+dirty"
fi
# Debian versions: digits first, then [A-Za-z0-9.+~] only.
echo "$v" | tr -c 'A-Za-z0-9.+~\n' '.'
