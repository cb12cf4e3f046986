package testhost

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Overlay mounts a writable overlay of lower (a cached root, never written)
// on a new directory and returns it; it is unmounted when the test ends.
// Upper returns the overlay's upper directory, where what the container
// wrote shows up.
func Overlay(t testing.TB, lower string) (merged, upper string) {
	t.Helper()
	RequireRoot(t)
	dir := t.TempDir()
	merged, upper, work := filepath.Join(dir, "root"), filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{merged, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
		t.Fatalf("mount overlay on %s: %v", merged, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			logErr(t, unix.Unmount(merged, unix.MNT_DETACH))
		}
	})
	return merged, upper
}

// BootOptions configures BootOnce.
type BootOptions struct {
	Root    string        // the container's root directory
	Args    []string      // more systemd-nspawn arguments (--bind=…, --setenv=…)
	Timeout time.Duration // until the container is stopped, booted or not
	// Done is polled while the container runs; once it reports true the
	// container is stopped (it need not power off by itself).
	Done func() bool
	// NetNS, when set, is the network namespace (from Network) the
	// container runs in instead of a private one with no network.
	NetNS string
}

// Network makes a network namespace with an address the test reaches
// (eth0, a /30 with this machine) and a firewall that lets in openTCP, for
// BootOptions.NetNS; it is removed when the test ends.
func Network(t testing.TB, openTCP ...int) (ns, addr string) {
	t.Helper()
	h := newHost(t, "net", 0, openTCP, false)
	return h.NS, h.Addr
}

// BootOnce boots o.Root with systemd as PID 1 under systemd-nspawn, with no
// network, once: no reboot. It returns the console's output and whether
// the container exited by itself (powered off, or switched root and
// powered off) rather than being stopped by Done or the timeout.
func BootOnce(t testing.TB, o BootOptions) (console string, exited bool) {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Fatalf("systemd-nspawn is not installed (apt-get install systemd-container): %v", err)
	}
	if os.Geteuid() != 0 {
		t.Fatal("testhost needs root (systemd-nspawn)")
	}
	// A Host only for its record (sweepStale) and cgroups; its cleanups run
	// without Close, which would print the whole console on failure.
	h := &Host{t: t, Name: "boot", dir: t.TempDir(), NS: "ks-" + randomID()}
	t.Cleanup(func() {
		for i := len(h.cleanups) - 1; i >= 0; i-- {
			h.cleanups[i]()
		}
	})
	sweepStale(t)
	h.record(t, "owner "+strconv.Itoa(os.Getpid())+" "+startTime(os.Getpid())+"\n")
	h.onClose(func() { os.Remove(filepath.Join(recordDir, h.NS)) })
	network := "--private-network"
	if o.NetNS != "" {
		network = "--network-namespace-path=/run/netns/" + o.NetNS
	}
	args := append([]string{
		"--quiet", "--boot", "--register=no", network,
		"--directory=" + o.Root,
		"--machine=" + h.NS,
		"--console=read-only",
	}, o.Args...)
	argv := append([]string{"systemd-nspawn"}, args...)
	// As in Debian: without systemd on this machine nspawn keeps the
	// cgroups it starts in, which must be the container's own.
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		cgs := h.cgroups(t)
		script := `n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ >"$1/cgroup.procs" || exit 1; shift; n=$((n-1)); done
exec "$@"`
		sh := append([]string{"sh", "-c", script, "sh", strconv.Itoa(len(cgs))}, cgs...)
		argv = append(append(sh, "systemd-nspawn", "--keep-unit"), args...)
	}
	log := filepath.Join(h.dir, "console.log")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = nil
	p, err := start(cmd, log)
	if err != nil {
		t.Fatalf("start systemd-nspawn: %v", err)
	}
	deadline := time.Now().Add(o.Timeout)
	for !p.exited() && time.Now().Before(deadline) && (o.Done == nil || !o.Done()) {
		time.Sleep(50 * time.Millisecond)
	}
	exited = p.exited()
	if !exited {
		// Killing the container's PID 1 takes all of it along; nspawn
		// exits once it is gone.
		if leader := containerLeader(p.cmd.Process.Pid); leader != 0 {
			syscall.Kill(leader, syscall.SIGKILL)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	out, _ := os.ReadFile(log)
	return string(out), exited
}
