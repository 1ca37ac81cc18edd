package catalog

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseFamilies(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "default", want: []string{"gc", "madvise", "sched"}},
		{in: "all", want: []string{"gc", "madvise", "mheaplock", "sched"}},
		{in: "gc, gc", want: []string{"gc"}},
		{in: "gc,default", want: []string{"gc", "madvise", "sched"}},
		{in: "mheaplock", want: []string{"mheaplock"}},
		{in: "gcc", err: `unknown probe family "gcc"`},
		{in: "", err: `unknown probe family ""`},
	} {
		got, err := Parse(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Parse(%q) error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestHelp(t *testing.T) {
	if got, want := Help(), "gc*, madvise*, sched*, mheaplock (* in default)"; got != want {
		t.Errorf("Help() = %q, want %q", got, want)
	}
}
