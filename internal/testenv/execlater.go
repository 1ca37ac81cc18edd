package testenv

import (
	"io"
	"os/exec"
	"strings"
	"testing"
)

// Later is a process that runs a shell until Exec, then execs a program in
// place: its PID stays, its program changes (what a family must see as a
// new program, with nothing carried over).
type Later struct {
	PID    int
	Stdout io.Reader // the program's, once exec'd
	cmd    *exec.Cmd
	stdin  io.WriteCloser
}

// ExecLater starts a shell that waits for Exec, then becomes bin with args
// (words without spaces or quotes). The process is killed when the test ends.
func ExecLater(t testing.TB, bin string, args ...string) *Later {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "read x; exec "+bin+" "+strings.Join(args, " "))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return &Later{PID: cmd.Process.Pid, Stdout: stdout, cmd: cmd, stdin: stdin}
}

// Exec lets the shell exec the program.
func (l *Later) Exec() { _, _ = io.WriteString(l.stdin, "\n") }

// Wait waits for the program to exit, its output read to the end.
func (l *Later) Wait() error {
	_, _ = io.Copy(io.Discard, l.Stdout)
	return l.cmd.Wait()
}
