// Package testhost starts throwaway SSH hosts for tests: a bare sshd in its
// own network and UTS namespace (SSHD), or a booted Debian container
// (Debian). Each host sits behind its own veth pair, so tests talk to it over
// a real address, through a real nftables firewall, without leaving the
// machine. It needs root, iproute2, nftables, openssh-server and, for Debian,
// debootstrap and systemd-container.
package testhost

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// Host is a running test host.
type Host struct {
	Name        string        // hostname inside the host
	NS          string        // network namespace, as listed by ip netns
	Addr        string        // the host's IPv4 address, reachable from the root namespace
	Addr6       string        // with IPv6: the host's unique-local IPv6 address, reachable too
	Port        int           // sshd's port
	HostKey     ssh.PublicKey // sshd's current ed25519 host key
	HostKeyPath string        // sshd's private host key file, as seen from the root namespace
	Root        string        // Debian only: the container's root directory

	t       testing.TB
	dir     string // scratch directory for config, keys and logs
	veth    string // root-namespace end of the veth pair
	logPath string

	// SSHD only.
	holder  *proc // keeps the UTS namespace (and its hostname) alive across sshd restarts
	sshd    *proc
	sshdCfg string

	// Debian only.
	nspawnArgv []string      // the command that boots the container, again on reboot
	cgroupDirs []string      // the cgroups nspawn starts in, if it makes none itself
	nspawn     *proc         // the current boot's; guarded by mu
	leader     int           // the current boot's PID 1 in the root namespace, 0 while booting; guarded by mu
	stopped    chan struct{} // closed when the container is down for good
	exitErr    error         // why; guarded by mu

	mu       sync.Mutex
	cleanups []func() // run in reverse by Close
	closed   bool
}

// Address is Addr:Port, ready for net.Dial or ssh.Dial.
func (h *Host) Address() string { return net.JoinHostPort(h.Addr, strconv.Itoa(h.Port)) }

// debian tells a Debian host from an SSHD one, also while it reboots.
func (h *Host) debian() bool { return h.Root != "" }

// Log returns sshd's output (SSHD) or the container's console (Debian).
func (h *Host) Log() string {
	b, _ := os.ReadFile(h.logPath)
	return string(b)
}

// Run runs a command inside the host: in its network, UTS and mount
// namespaces (SSHD, which otherwise shares the machine's filesystem), or in all of the
// container's namespaces (Debian), which fails while it reboots. It returns
// stdout; a failure carries stderr.
func (h *Host) Run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	var ns []string
	if h.debian() {
		leader := h.LeaderPID()
		if leader == 0 {
			return "", fmt.Errorf("%s on %s: the container is not running (rebooting?)", strings.Join(args, " "), h.Name)
		}
		ns = []string{"-t", strconv.Itoa(leader), "-a"}
	} else {
		ns = []string{"-t", strconv.Itoa(h.holder.cmd.Process.Pid), "-n", "-u", "-m"}
	}
	cmd := exec.Command("nsenter", append(append(ns, "--"), args...)...)
	// The container's tools should not see the test's environment.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s on %s: %w: %s", strings.Join(args, " "), h.Name, err, stderr.String())
	}
	return stdout.String(), nil
}

// Dial connects as root with signer, pinning the host's current host key.
// The client is closed when the test ends.
func (h *Host) Dial(t testing.TB, signer ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", h.Address(), &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(h.HostKey),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatalf("ssh to %s (%s): %v\n%s", h.Name, h.Address(), err, h.Log())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Listen accepts TCP connections on port inside the host's network
// namespace until the test ends, so a test can have a service "running"
// there. Each connection gets one line, "testhost <name> <port>", and is
// closed.
func (h *Host) Listen(t testing.TB, port int) {
	t.Helper()
	h.listen(t, "tcp4", port)
}

func (h *Host) listen(t testing.TB, network string, port int) {
	t.Helper()
	var l net.Listener
	err := inNetNS(h.NS, func() (err error) {
		l, err = net.Listen(network, ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s:%d: %v", h.Name, port, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "testhost %s %d\n", h.Name, port)
			c.Close()
		}
	}()
}

// Close stops the host and removes everything it made. It is registered with
// t.Cleanup, so tests only call it to check what happens when a host goes
// away.
func (h *Host) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	cleanups := h.cleanups
	h.mu.Unlock()
	if h.t.Failed() {
		h.t.Logf("%s log:\n%s", h.Name, h.Log())
	}
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
}

func (h *Host) onClose(f func()) {
	h.mu.Lock()
	h.cleanups = append(h.cleanups, f)
	h.mu.Unlock()
}

// newHost makes the network namespace and its veth pair, with the given
// firewall, and registers Close.
func newHost(t testing.TB, name string, port int, openTCP []int, ipv6 bool) *Host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("testhost needs root (network namespaces, nftables, sshd)")
	}
	for _, c := range []string{"ip", "nft", "nsenter", "unshare"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is not installed (apt-get install iproute2 nftables util-linux): %v", c, err)
		}
	}
	h := &Host{t: t, Name: name, Port: port, dir: t.TempDir()}
	t.Cleanup(h.Close)

	sweepStale(t)
	id := randomID()
	h.NS = "ks-" + id
	h.veth = "ks-" + id + "-h"
	h.record(t, fmt.Sprintf("owner %d %s\n", os.Getpid(), startTime(os.Getpid())))
	h.onClose(func() { os.Remove(filepath.Join(recordDir, h.NS)) })
	if err := cmdRun("ip", "netns", "add", h.NS); err != nil {
		t.Fatal(err)
	}
	h.onClose(func() {
		// Whatever is still in the namespace (orphaned sessions,
		// commands started with Run) would keep it alive.
		for _, pid := range nsPIDs(h.NS) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		logErr(t, cmdRun("ip", "netns", "del", h.NS))
	})

	subnetMu.Lock()
	defer subnetMu.Unlock()
	unlock := lockFile(t, "/run/keystone-testhost.lock")
	defer unlock()
	hostIP, nsIP := freeSubnet(t)
	h.Addr = nsIP
	// The peer is created straight inside the namespace, so no other test
	// ever sees a stray eth0 in the root namespace.
	if err := cmdRun("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.NS); err != nil {
		t.Fatal(err)
	}
	h.onClose(func() {
		// Deleting the namespace deletes the pair too; this is for when a
		// process still holds the namespace open.
		if cmdRun("ip", "link", "show", h.veth) == nil {
			logErr(t, cmdRun("ip", "link", "del", h.veth))
		}
	})
	steps := [][]string{
		{"ip", "addr", "add", hostIP + "/30", "dev", h.veth},
		{"ip", "link", "set", h.veth, "up"},
		{"ip", "-n", h.NS, "addr", "add", nsIP + "/30", "dev", "eth0"},
		{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		{"ip", "-n", h.NS, "route", "add", "default", "via", hostIP},
	}
	for _, s := range steps {
		if err := cmdRun(s[0], s[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	if ipv6 {
		h.addIPv6(t)
	}
	nft := filepath.Join(h.dir, "nftables.conf")
	writeFile(t, nft, Ruleset(openTCP), 0o644)
	if err := cmdRun("ip", "netns", "exec", h.NS, "nft", "-f", nft); err != nil {
		t.Fatal(err)
	}
	return h
}

// recordDir holds a file per live host naming the test process that owns it
// and what to undo, so that hosts left behind by a test binary that was
// killed are removed by the next one.
const recordDir = "/run/keystone-testhost"

// record appends line to the host's record.
func (h *Host) record(t testing.TB, line string) {
	t.Helper()
	if err := os.MkdirAll(recordDir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(recordDir, h.NS), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line); err != nil {
		t.Fatal(err)
	}
}

// sweepStale removes the hosts of test processes that are gone.
func sweepStale(t testing.TB) {
	entries, _ := os.ReadDir(recordDir)
	for _, e := range entries {
		path := filepath.Join(recordDir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var mounts, cgroups []string
		alive, owned := false, false
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			switch {
			case len(f) == 3 && f[0] == "owner":
				pid, _ := strconv.Atoi(f[1])
				alive, owned = startTime(pid) == f[2], true
			case len(f) == 2 && f[0] == "mount":
				mounts = append(mounts, f[1])
			case len(f) == 2 && f[0] == "cgroup":
				cgroups = append(cgroups, f[1])
			}
		}
		// A record without its owner line is being written by a host
		// starting right now, unless it is old.
		if fi, err := e.Info(); !owned && err == nil && time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		if alive {
			continue
		}
		ns := e.Name()
		t.Logf("testhost: removing %s, left behind by a killed test", ns)
		// Killing the container's PID 1 takes the rest of it along.
		for _, pid := range nsPIDs(ns) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
		for _, c := range cgroups {
			removeCgroup(c)
		}
		for _, m := range mounts {
			unix.Unmount(m, unix.MNT_DETACH)
		}
		os.RemoveAll("/run/systemd/nspawn/propagate/" + ns)
		cmdRun("ip", "netns", "del", ns)
		cmdRun("ip", "link", "del", ns+"-h")
		os.Remove(path)
	}
}

// startTime is field 22 of /proc/pid/stat, which with the PID names a
// process uniquely; "" if there is no such process.
func startTime(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// Ruleset is the host firewall: established traffic, loopback, the given
// TCP ports and mDNS (UDP 5353, as avahi's openFirewall) are accepted,
// everything else coming in is dropped, so a closed port looks filtered
// from outside.
func Ruleset(openTCP []int) string {
	var ports []string
	for _, p := range openTCP {
		ports = append(ports, strconv.Itoa(p))
	}
	accept := ""
	if len(ports) > 0 {
		accept = "\t\ttcp dport { " + strings.Join(ports, ", ") + " } accept\n"
	}
	// The shape of NixOS's nftables firewall (firewall-nftables.nix), so
	// verify's firewall check reads a test host as it reads a NixOS host.
	return "flush ruleset\n" +
		"table inet nixos-fw {\n" +
		"\tchain input {\n" +
		"\t\ttype filter hook input priority filter; policy drop;\n" +
		"\t\tiifname \"lo\" accept\n" +
		"\t\tct state vmap { invalid : drop, established : accept, related : accept, new : jump input-allow, untracked : jump input-allow }\n" +
		"\t}\n" +
		"\tchain input-allow {\n" +
		accept +
		"\t\tudp dport 5353 accept\n" +
		"\t\ticmp type echo-request accept\n" +
		// NixOS's rule: IPv6 needs neighbour discovery to work at all.
		"\t\ticmpv6 type != { nd-redirect, 139 } accept\n" +
		"\t}\n" +
		"}\n"
}

// subnetMu and the lock file together keep concurrent hosts, in this process
// and in other test binaries, from picking the same subnet.
var subnetMu sync.Mutex

// freeSubnet picks a /30 in 10.213.0.0/16 that no root-namespace interface
// uses yet. The caller holds the lock until the address is assigned.
func freeSubnet(t testing.TB) (hostIP, nsIP string) {
	out, err := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	if err != nil {
		t.Fatalf("ip addr show: %v", err)
	}
	for range 100 {
		n, _ := rand.Int(rand.Reader, big.NewInt(1<<14))
		base := int(n.Int64()) * 4
		hostIP = fmt.Sprintf("10.213.%d.%d", base>>8, base&0xff+1)
		if !bytes.Contains(out, []byte(" "+hostIP+"/")) {
			return hostIP, fmt.Sprintf("10.213.%d.%d", base>>8, base&0xff+2)
		}
	}
	t.Fatal("no free subnet in 10.213.0.0/16")
	return "", ""
}

// lockFile takes an exclusive flock on path, waiting for other processes.
func lockFile(t testing.TB, path string) (unlock func()) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("lock %s: %v", path, err)
	}
	return func() { f.Close() }
}

// inNetNS runs f on a thread that has joined the namespace ns. Sockets made
// by f stay in ns after the thread goes back.
func inNetNS(ns string, f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", ns, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime then ends it with the
		// goroutine instead of reusing it in the wrong namespace.
		return fmt.Errorf("setns back from %s: %w", ns, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// GenerateKey makes an ed25519 key and returns it as a signer and as an
// OpenSSH private key file's contents.
func GenerateKey(t testing.TB) (ssh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer, pem.EncodeToMemory(block)
}

// ClientKey makes an ed25519 client key and writes it, mode 0600, as an
// OpenSSH private key file in a fresh temporary directory, for ssh -i.
func ClientKey(t testing.TB) (ssh.Signer, string) {
	t.Helper()
	signer, pemBytes := GenerateKey(t)
	path := filepath.Join(t.TempDir(), "id_ed25519")
	writeFile(t, path, string(pemBytes), 0o600)
	writeFile(t, path+".pub", string(ssh.MarshalAuthorizedKey(signer.PublicKey())), 0o644)
	return signer, path
}

// readHostKey reads the public half of a private key file.
func readHostKey(path string) (ssh.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s.PublicKey(), nil
}

func authorizedKeys(keys []ssh.PublicKey) string {
	var b strings.Builder
	for _, k := range keys {
		b.Write(ssh.MarshalAuthorizedKey(k))
	}
	return b.String()
}

// proc is a started process and a channel closed when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// start starts cmd with its output appended to log. The process is killed if
// the test binary dies, so a crashed test does not leave hosts running.
func start(cmd *exec.Cmd, log string) (*proc, error) {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if cmd.Stdout == nil {
		cmd.Stdout = f
	}
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits up to timeout for the process to exit, then kills
// it.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) {
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// nsPIDs lists the processes in network namespace ns, except this one.
func nsPIDs(ns string) []int {
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+ns, &st); err != nil {
		return nil
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if l, _ := os.Readlink("/proc/" + e.Name() + "/ns/net"); l == want {
			out = append(out, pid)
		}
	}
	return out
}

// descendants lists pid's children, grandchildren and so on.
func descendants(pid int) []int {
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name in parentheses may hold spaces; fields after it
		// are state, then ppid.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 {
			parent[p], _ = strconv.Atoi(f[1])
		}
	}
	var out []int
	want := map[int]bool{pid: true}
	for changed := true; changed; {
		changed = false
		for p, pp := range parent {
			if want[pp] && !want[p] {
				want[p], changed = true, true
				out = append(out, p)
			}
		}
	}
	return out
}

// waitLog waits until log has line after offset, or p exits.
func waitLog(p *proc, log string, offset int64, line string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if f, err := os.Open(log); err == nil {
			f.Seek(offset, io.SeekStart)
			found := false
			for s := bufio.NewScanner(f); s.Scan(); {
				if strings.Contains(s.Text(), line) {
					found = true
					break
				}
			}
			f.Close()
			if found {
				return nil
			}
		}
		if p.exited() {
			return errors.New("exited before " + strconv.Quote(line))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q after %v", line, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func randomID() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func cmdRun(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile keeps the mode of an existing file; sshd insists on 0600.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func logErr(t testing.TB, err error) {
	if err != nil {
		t.Errorf("testhost cleanup: %v", err)
	}
}
