package goinspect

import "testing"

func TestParseVersion(t *testing.T) {
	cases := []struct {
		in   string
		want Version
		err  bool
	}{
		{"go1.26.8", Version{1, 26, 8}, false},
		{"go1.19.8", Version{1, 19, 8}, false},
		{"go1.27.3", Version{1, 27, 3}, false},
		{"go1.22rc1", Version{1, 22, 0}, false},
		{"go1.21beta2", Version{1, 21, 0}, false},
		{"go1.20", Version{1, 20, 0}, false},
		{"go1.26.8 X:nodwarf5", Version{1, 26, 8}, false},
		{"devel go1.27-a1b2c3d4 Tue Jan 6 10:00:00 2026 +0000", Version{1, 27, 0}, false},
		{"devel +abcdef", Version{}, true},
		{"", Version{}, true},
		{"1.26.8", Version{}, true},
		{"go1", Version{}, true},
		{"go1.x", Version{}, true},
		{"go1.26.x", Version{}, true},
		{"go1.26.8rc1", Version{}, true},
		{"go1.22rc1.3", Version{}, true},
		{"go1.99999999999999999999.1", Version{}, true},
	}
	for _, c := range cases {
		got, err := ParseVersion(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v, error %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestAtLeast(t *testing.T) {
	v := Version{1, 26, 8}
	for _, c := range []struct {
		major, minor int
		want         bool
	}{
		{1, 26, true}, {1, 25, true}, {1, 27, false}, {0, 99, true}, {2, 0, false},
	} {
		if got := v.AtLeast(c.major, c.minor); got != c.want {
			t.Errorf("%v.AtLeast(%d, %d) = %v", v, c.major, c.minor, got)
		}
	}
}
