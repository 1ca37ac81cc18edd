package procmeta

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	id1 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	id2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

func TestParseCgroup(t *testing.T) {
	for _, tc := range []struct {
		name, content, unit, container string
	}{
		{"system service v2", "0::/system.slice/nginx.service\n", "nginx.service", ""},
		{"service sub-cgroup", "0::/system.slice/api.service/workers\n", "api.service", ""},
		{"templated service", "0::/system.slice/system-getty.slice/getty@tty1.service\n", "getty@tty1.service", ""},
		{"user unit", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service\n", "foo.service", ""},
		{"user manager itself", "0::/user.slice/user-1000.slice/user@1000.service\n", "user@1000.service", ""},
		{"user manager init scope", "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n", "", ""},
		{"login session", "0::/user.slice/user-1000.slice/session-3.scope\n", "", ""},
		{"docker systemd driver", "0::/system.slice/docker-" + id1 + ".scope\n", "", id1},
		{"docker cgroupfs driver", "0::/docker/" + id1 + "\n", "", id1},
		{"containerd kube", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-" + id1 + ".scope\n", "", id1},
		{"cri-o", "0::/kubepods.slice/kubepods-pod1.slice/crio-" + id1 + ".scope\n", "", id1},
		{"podman", "0::/machine.slice/libpod-" + id1 + ".scope/container\n", "", id1},
		{"kubepods cgroupfs", "0::/kubepods/besteffort/pod1234/" + id2 + "\n", "", id2},
		{"cgroup v1 lines", "12:pids:/docker/" + id2 + "\n1:name=systemd:/docker/" + id2 + "\n", "", id2},
		{"v1 systemd", "5:cpu,cpuacct:/system.slice/cron.service\n1:name=systemd:/system.slice/cron.service\n0::/system.slice/cron.service\n", "cron.service", ""},
		{"not hex", "0::/docker/" + strings.Repeat("g", 64) + "\n", "", ""},
		{"short id", "0::/docker/abc123\n", "", ""},
		{"root", "0::/\n", "", ""},
		{"empty", "", "", ""},
		{"garbage", "nonsense\n", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unit, container := ParseCgroup(tc.content)
			if unit != tc.unit || container != tc.container {
				t.Errorf("ParseCgroup(%q) = %q, %q; want %q, %q", tc.content, unit, container, tc.unit, tc.container)
			}
		})
	}
}

func TestEnvValue(t *testing.T) {
	for _, tc := range []struct {
		name, env, want string
	}{
		{"present", "PATH=/bin\x00OTEL_SERVICE_NAME=checkout\x00HOME=/", "checkout"},
		{"last, no NUL", "A=1\x00OTEL_SERVICE_NAME=pay", "pay"},
		{"absent", "A=1\x00B=2\x00", ""},
		{"prefix only", "OTEL_SERVICE_NAME_X=no\x00", ""},
		{"empty value", "OTEL_SERVICE_NAME=\x00", ""},
		{"control chars escaped", "OTEL_SERVICE_NAME=a\nb\x1b[2J\x00", `a\x0ab\x1b[2J`},
		{"invalid UTF-8 replaced", "OTEL_SERVICE_NAME=a\xffb\x00", "a\uFFFDb"},
		{"capped", "OTEL_SERVICE_NAME=" + strings.Repeat("s", 1000) + "\x00", strings.Repeat("s", 253) + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := EnvValue([]byte(tc.env), "OTEL_SERVICE_NAME"); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// fakeProc lays out procRoot/PID/{environ,cgroup}; a nil value leaves the
// file out.
func fakeProc(t *testing.T, environ, cgroup *string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "42")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if environ != nil {
		if err := os.WriteFile(filepath.Join(dir, "environ"), []byte(*environ), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if cgroup != nil {
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(*cgroup), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func ptr(s string) *string { return &s }

func TestDescribe(t *testing.T) {
	huge := strings.Repeat("X=", 1) + strings.Repeat("y", maxEnviron) + "\x00OTEL_SERVICE_NAME=late\x00"
	for _, tc := range []struct {
		name            string
		environ, cgroup *string
		exe             string
		want            Info
	}{
		{"env wins", ptr("OTEL_SERVICE_NAME=checkout\x00"), ptr("0::/system.slice/api.service\n"), "/usr/bin/api",
			Info{ServiceName: "checkout", SystemdUnit: "api.service"}},
		{"resource attributes", ptr("OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod,service.name=cart\x00"), nil, "/usr/bin/api",
			Info{ServiceName: "cart"}},
		{"unit", ptr("PATH=/bin\x00"), ptr("0::/system.slice/api.service\n"), "/usr/bin/api",
			Info{ServiceName: "api", SystemdUnit: "api.service"}},
		{"templated unit", nil, ptr("0::/system.slice/system-worker.slice/worker@3.service\n"), "/usr/bin/w",
			Info{ServiceName: "worker@3", SystemdUnit: "worker@3.service"}},
		{"exe name", nil, nil, "/opt/app/bin/server", Info{ServiceName: "server"}},
		{"deleted exe", nil, nil, "/opt/app/bin/server (deleted)", Info{ServiceName: "server"}},
		{"container", ptr("OTEL_SERVICE_NAME=web\x00"), ptr("0::/system.slice/docker-" + id1 + ".scope\n"), "/app",
			Info{ServiceName: "web", ContainerID: id1}},
		{"container without name", nil, ptr("0::/docker/" + id1 + "\n"), "/app",
			Info{ServiceName: "app", ContainerID: id1}},
		{"environ past the bound", ptr(huge), nil, "/bin/big", Info{ServiceName: "big"}},
		{"nothing", nil, nil, "", Info{}},
		{"hostile exe name", nil, nil, "/tmp/x\x1b]0;owned\x07\xfe", Info{ServiceName: "x\\x1b]0;owned\\x07\uFFFD"}},
		{"hostile unit", nil, ptr("0::/user.slice/user-1000.slice/user@1000.service/a\x1b[31m\u009b.service\n"), "/bin/a",
			Info{ServiceName: `a\x1b[31m\u009b`, SystemdUnit: `a\x1b[31m\u009b.service`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeProc(t, tc.environ, tc.cgroup)
			if got := Describe(root, 42, tc.exe); got != tc.want {
				t.Errorf("Describe = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A file that cannot be read (here a directory in its place, as good as
// EACCES for the reader) falls back to what is left.
func TestDescribeUnreadable(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "42", "environ"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := Describe(root, 42, "/bin/tool"); got != (Info{ServiceName: "tool"}) {
		t.Errorf("Describe = %+v", got)
	}
	if got := Describe(root, 999999, "/bin/tool"); got != (Info{ServiceName: "tool"}) {
		t.Errorf("Describe of a missing pid = %+v", got)
	}
}

// The real thing: a child process started with OTEL_SERVICE_NAME.
func TestDescribeRealProcess(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("no sleep binary: %v", err)
	}
	cmd := exec.Command(sleep, "30")
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=procmeta-test")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var info Info
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Until exec completes the child's environ is the parent's copy.
		info = Describe("/proc", cmd.Process.Pid, sleep)
		if info.ServiceName == "procmeta-test" || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if info.ServiceName != "procmeta-test" {
		t.Errorf("ServiceName = %q, want procmeta-test", info.ServiceName)
	}
	// The child shares our cgroup: whatever we are in, it is too.
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	unit, container := ParseCgroup(string(self))
	if info.SystemdUnit != unit || info.ContainerID != container {
		t.Errorf("unit, container = %q, %q; ours are %q, %q", info.SystemdUnit, info.ContainerID, unit, container)
	}
	// Without the variable the unit or the executable names it.
	cmd2 := exec.Command(sleep, "30")
	cmd2.Env = []string{"PATH=/usr/bin:/bin"}
	if err := cmd2.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd2.Process.Kill(); _ = cmd2.Wait() })
	real, _ := filepath.EvalSymlinks(sleep)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if exe, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(cmd2.Process.Pid), "exe")); exe == real {
			break
		}
	}
	want := filepath.Base(sleep)
	if unit != "" {
		want = strings.TrimSuffix(unit, ".service")
	}
	if got := Describe("/proc", cmd2.Process.Pid, sleep).ServiceName; got != want {
		t.Errorf("ServiceName without OTEL_SERVICE_NAME = %q, want %q", got, want)
	}
}
