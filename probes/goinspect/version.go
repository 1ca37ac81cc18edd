package goinspect

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a Go release number. Pre-releases (rc, beta) count as patch 0 of
// their minor release because runtime internals are frozen by then.
type Version struct{ Major, Minor, Patch int }

func (v Version) String() string {
	return fmt.Sprintf("go%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// AtLeast reports whether v is major.minor or newer, the granularity at which
// runtime internals (and so probe layouts) change.
func (v Version) AtLeast(major, minor int) bool {
	if v.Major != major {
		return v.Major > major
	}
	return v.Minor >= minor
}

// ParseVersion parses the version string that debug/buildinfo reports, e.g.
// "go1.26.8", "go1.22rc1", "go1.20" or "go1.26.8 X:nodwarf5". Development
// toolchains ("devel go1.27-abcdef ...") are parsed best effort from the first
// "goX.Y" token, since that is the release they branch towards.
func ParseVersion(s string) (Version, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return Version{}, fmt.Errorf("parse Go version %q: empty", s)
	}
	tok := fields[0]
	if tok == "devel" {
		tok = ""
		for _, f := range fields[1:] {
			if strings.HasPrefix(f, "go1.") {
				tok = f
				break
			}
		}
		if tok == "" {
			return Version{}, fmt.Errorf("parse Go version %q: development toolchain without a release number", s)
		}
		// "go1.27-abcdef": the suffix is a commit, not a patch number.
		tok, _, _ = strings.Cut(tok, "-")
	}
	rest, ok := strings.CutPrefix(tok, "go")
	if !ok {
		return Version{}, fmt.Errorf("parse Go version %q: no \"go\" prefix", s)
	}
	var v Version
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) < 2 {
		return Version{}, fmt.Errorf("parse Go version %q: want goMAJOR.MINOR[.PATCH]", s)
	}
	var err error
	if v.Major, err = strconv.Atoi(parts[0]); err != nil || v.Major < 0 {
		return Version{}, fmt.Errorf("parse Go version %q: bad major number", s)
	}
	minor, pre := splitDigits(parts[1])
	if minor == "" {
		return Version{}, fmt.Errorf("parse Go version %q: bad minor number", s)
	}
	v.Minor, _ = strconv.Atoi(minor)
	if pre != "" {
		// "1.22rc1": a pre-release, so there is no patch component.
		if !strings.HasPrefix(pre, "rc") && !strings.HasPrefix(pre, "beta") || len(parts) == 3 {
			return Version{}, fmt.Errorf("parse Go version %q: bad minor number", s)
		}
		return v, nil
	}
	if len(parts) == 3 {
		patch, tail := splitDigits(parts[2])
		if patch == "" || tail != "" {
			return Version{}, fmt.Errorf("parse Go version %q: bad patch number", s)
		}
		v.Patch, _ = strconv.Atoi(patch)
	}
	return v, nil
}

func splitDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	// Reject absurd lengths so Atoi cannot overflow silently.
	if i > 9 {
		return "", s
	}
	return s[:i], s[i:]
}
