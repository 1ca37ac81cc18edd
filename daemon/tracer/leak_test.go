package tracer

import (
	"os"
	"testing"

	"github.com/gopulse/gopulse/internal/testenv"
)

// No goroutine or file descriptor of a loaded family outlives the tests.
func TestMain(m *testing.M) { os.Exit(testenv.RunLeakChecked(m)) }
