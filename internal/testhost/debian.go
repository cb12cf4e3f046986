package testhost

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// DebianOptions configures Debian.
type DebianOptions struct {
	Hostname       string          // default "ks-" plus random hex
	AuthorizedKeys []ssh.PublicKey // may log in as root
	Port           int             // sshd's port, default 22
	// ExtraSSHDConfig lines go in /etc/ssh/sshd_config.d, which Debian's
	// sshd_config reads first, so they override its defaults.
	ExtraSSHDConfig []string
	IPv6            bool          // give the host a unique-local IPv6 address too (Addr6)
	OpenTCP         []int         // ports the firewall lets in; default {Port}
	ExtraPackages   []string      // installed in the cached root, on top of BasePackages
	BootTimeout     time.Duration // until sshd answers; default 90s
}

// BasePackages are debootstrapped (minbase) into every Debian root.
var BasePackages = []string{
	"systemd", "systemd-sysv", "dbus", "openssh-server", "avahi-daemon", "avahi-utils",
	"nftables", "systemd-resolved", "iproute2", "libnss-mdns", "procps",
}

// Suite is the Debian release the roots are built from.
const Suite = "bookworm"

// rootRecipe names how cachedRoot prepares a root; change it whenever that
// changes, so old caches are not reused.
const rootRecipe = "v1"

// Debian boots a Debian container with systemd, sshd, avahi-daemon,
// systemd-resolved and an nftables firewall, in its own network namespace.
// The root is debootstrapped once into a cache (see CacheDir) and each host
// runs on an overlay of it, thrown away by Close.
func Debian(t testing.TB, o DebianOptions) *Host {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Fatalf("systemd-nspawn is not installed (apt-get install systemd-container): %v", err)
	}
	if o.Hostname == "" {
		o.Hostname = "ks-" + randomID()
	}
	if o.Port == 0 {
		o.Port = 22
	}
	if o.OpenTCP == nil {
		o.OpenTCP = []int{o.Port}
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 90 * time.Second
	}
	lower := cachedRoot(t, append(slices.Clone(BasePackages), o.ExtraPackages...))

	start0 := time.Now()
	h := newHost(t, o.Hostname, o.Port, o.OpenTCP, o.IPv6)
	h.logPath = filepath.Join(h.dir, "console.log")
	h.Root = filepath.Join(h.dir, "root")
	upper, work := filepath.Join(h.dir, "upper"), filepath.Join(h.dir, "work")
	for _, d := range []string{h.Root, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h.record(t, "mount "+h.Root+"\n")
	if err := unix.Mount("overlay", h.Root, "overlay", 0,
		"lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
		t.Fatalf("mount overlay on %s: %v", h.Root, err)
	}
	h.onClose(func() {
		if err := unix.Unmount(h.Root, 0); err != nil {
			// Something still has it open; detach it so the directory
			// can go.
			logErr(t, unix.Unmount(h.Root, unix.MNT_DETACH))
		}
	})

	r := func(p string) string { return filepath.Join(h.Root, p) }
	writeFile(t, r("etc/hostname"), o.Hostname+"\n", 0o644)
	writeFile(t, r("etc/hosts"), "127.0.0.1 localhost\n127.0.1.1 "+o.Hostname+"\n", 0o644)
	writeFile(t, r("etc/nftables.conf"), "#!/usr/sbin/nft -f\n"+Ruleset(o.OpenTCP), 0o755)
	h.HostKeyPath = r("etc/ssh/ssh_host_ed25519_key")
	signer, hostKey := GenerateKey(t)
	writeFile(t, h.HostKeyPath, string(hostKey), 0o600)
	writeFile(t, h.HostKeyPath+".pub", string(ssh.MarshalAuthorizedKey(signer.PublicKey())), 0o644)
	h.HostKey = signer.PublicKey()
	sshdConf := append(slices.Clone(o.ExtraSSHDConfig),
		"Port "+strconv.Itoa(o.Port),
		"HostKey /etc/ssh/ssh_host_ed25519_key",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
	)
	writeFile(t, r("etc/ssh/sshd_config.d/testhost.conf"), strings.Join(sshdConf, "\n")+"\n", 0o644)
	if err := os.MkdirAll(r("root/.ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, r("root/.ssh/authorized_keys"), authorizedKeys(o.AuthorizedKeys), 0o600)

	args := []string{
		"--quiet", "--boot", "--register=no",
		"--directory=" + h.Root,
		"--machine=" + h.NS, // unique, unlike the hostname
		"--hostname=" + o.Hostname,
		"--network-namespace-path=/run/netns/" + h.NS,
		"--console=read-only",
		// nspawn grants this only with networks it makes itself; the
		// namespace is the host's own, and nftables.service needs it.
		"--capability=CAP_NET_ADMIN",
	}
	h.nspawnArgv = append([]string{"systemd-nspawn"}, args...)
	// With systemd as PID 1, nspawn asks it for a scope of its own, which
	// also gives the container's systemd a delegated cgroup. Without it
	// there is no bus to ask, so nspawn must stay in the cgroup it starts
	// in (--keep-unit), and that must be the host's own: containers that
	// share one see each other's units' processes.
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		cgs := h.cgroups(t)
		h.cgroupDirs = cgs
		script := `n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ >"$1/cgroup.procs" || exit 1; shift; n=$((n-1)); done
exec "$@"`
		sh := append([]string{"sh", "-c", script, "sh", strconv.Itoa(len(cgs))}, cgs...)
		sh = append(sh, "systemd-nspawn", "--keep-unit")
		h.nspawnArgv = append(sh, args...)
	}
	p, err := start(exec.Command(h.nspawnArgv[0], h.nspawnArgv[1:]...), h.logPath)
	if err != nil {
		t.Fatalf("start systemd-nspawn: %v", err)
	}
	h.nspawn = p
	h.stopped = make(chan struct{})
	go h.supervise(p)
	h.onClose(func() {
		os.RemoveAll("/run/systemd/nspawn/propagate/" + h.NS)
		// Close has set closed, so the supervisor starts no new boot
		// and this is the last nspawn.
		h.mu.Lock()
		p := h.nspawn
		h.mu.Unlock()
		h.powerOff(t, p)
		<-h.stopped
	})

	if err := h.waitBooted(nil, o.BootTimeout); err != nil {
		t.Fatalf("%s: %v\n%s", h.Name, err, h.Log())
	}
	t.Logf("testhost: Debian host %s at %s up in %v", h.Name, h.Address(), time.Since(start0).Round(time.Millisecond))
	return h
}

// supervise waits for each nspawn to find its container's PID 1 and to
// exit. Like systemd-nspawn@.service (RestartForceExitStatus=133) it starts
// nspawn again when the container rebooted, with the same namespace, root
// and cgroups, so whatever rebooted it finds the host back on its address.
// It returns, closing stopped, when the host is closed or the container
// exits for good.
func (h *Host) supervise(p *proc) {
	defer close(h.stopped)
	for {
		for !p.exited() {
			if leader := containerLeader(p.cmd.Process.Pid); leader != 0 {
				h.mu.Lock()
				h.leader = leader
				h.mu.Unlock()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		<-p.done
		h.mu.Lock()
		h.leader = 0
		// Deciding under the lock Close takes to set closed means Close
		// either sees the new nspawn or none is started.
		if code := p.cmd.ProcessState.ExitCode(); h.closed || code != 133 {
			h.exitErr = fmt.Errorf("systemd-nspawn exited with status %d", code)
			h.mu.Unlock()
			return
		}
		// nspawn made cgroups below the host's and may have enabled
		// controllers in it, after which it takes no process of its own:
		// give the new boot empty ones, like the first.
		var err error
		for _, d := range h.cgroupDirs {
			if err = removeCgroup(d); err == nil {
				err = os.Mkdir(d, 0o755)
			}
			if err != nil {
				break
			}
		}
		var next *proc
		if err == nil {
			next, err = start(exec.Command(h.nspawnArgv[0], h.nspawnArgv[1:]...), h.logPath)
		}
		if err != nil {
			h.exitErr = fmt.Errorf("start systemd-nspawn after a reboot: %w", err)
			h.mu.Unlock()
			return
		}
		h.nspawn = next
		h.mu.Unlock()
		p = next
	}
}

// waitBooted waits until a boot of the container run by an nspawn other
// than prev (nil: any) has a PID 1 and sshd answers.
func (h *Host) waitBooted(prev *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		h.mu.Lock()
		p, leader, exitErr := h.nspawn, h.leader, h.exitErr
		h.mu.Unlock()
		err := errors.New("no container PID 1")
		if p != prev && leader != 0 {
			if err = h.sshBanner(); err == nil {
				return nil
			}
			err = fmt.Errorf("sshd does not answer: %w", err)
		}
		if exitErr != nil {
			return exitErr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not booted after %v: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// powerOff stops the container run by p. SIGTERM makes nspawn ask the
// container's systemd to halt, but the kernel drops that signal until
// systemd blocks it to read it from a signalfd, so a container still
// booting (after a reboot, say) gets a moment to get there first.
func (h *Host) powerOff(t testing.TB, p *proc) {
	deadline := time.Now().Add(30 * time.Second)
	for !p.exited() && time.Now().Before(deadline) && !catchesHalt(h.LeaderPID()) {
		time.Sleep(20 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(time.Until(deadline)):
		t.Errorf("testhost: %s did not power off in 30s; killing it", h.Name)
	}
	if leader := h.LeaderPID(); leader != 0 {
		// Killing PID 1 of the container kills all of it, and nspawn
		// exits once all of it is gone, so its cgroups can go too.
		syscall.Kill(leader, syscall.SIGKILL)
		select {
		case <-p.done:
			return
		case <-time.After(5 * time.Second):
		}
	}
	p.cmd.Process.Kill()
	<-p.done
}

// catchesHalt reports whether pid blocks or handles SIGRTMIN+3, the signal
// nspawn sends to halt a booted container: 37, as glibc reserves two
// real-time signals.
func catchesHalt(pid int) bool {
	if pid == 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		if k == "SigBlk" || k == "SigCgt" {
			mask, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if mask&(1<<(37-1)) != 0 {
				return true
			}
		}
	}
	return false
}

// LeaderPID is the container's PID 1 as seen from the root namespace, for
// nsenter; 0 for an SSHD host and while a Debian host reboots. It changes
// with every reboot.
func (h *Host) LeaderPID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.leader
}

// Reboot reboots a Debian host with systemctl reboot and waits until it has
// booted again and sshd answers. Files written inside survive; sessions do
// not.
func (h *Host) Reboot(t testing.TB) {
	t.Helper()
	if !h.debian() {
		t.Fatal("Reboot: only Debian hosts reboot")
	}
	start := time.Now()
	h.mu.Lock()
	prev := h.nspawn
	h.mu.Unlock()
	// systemctl may die with the container before it reports success, so
	// its error only explains a failure to come back.
	_, runErr := h.Run(t, "systemctl", "reboot")
	if err := h.waitBooted(prev, 60*time.Second); err != nil {
		t.Fatalf("Reboot %s: %v (systemctl reboot: %v)\n%s", h.Name, err, runErr, h.Log())
	}
	t.Logf("testhost: %s rebooted in %v", h.Name, time.Since(start).Round(time.Millisecond))
}

// BootIdentity names the host's current boot as a client could tell it:
// the boot ID and the start time of PID 1, as seen inside. nspawn happens to
// give each container boot a boot ID of its own, but other container
// managers pass the kernel's through, so the start time of PID 1 is what
// tells container boots apart. An SSHD host shows the machine's.
func (h *Host) BootIdentity(t testing.TB) string {
	t.Helper()
	out, err := h.Run(t, "cat", "/proc/sys/kernel/random/boot_id", "/proc/1/stat")
	if err != nil {
		t.Fatalf("BootIdentity: %v", err)
	}
	bootID, stat, _ := strings.Cut(out, "\n")
	// Fields after the parenthesized command name start at field 3.
	f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
	if len(f) < 20 {
		t.Fatalf("BootIdentity: short /proc/1/stat on %s: %q", h.Name, stat)
	}
	return bootID + "/" + f[19]
}

// sshBanner reads sshd's greeting from inside the host's namespace, so it
// works whatever the firewall lets in.
func (h *Host) sshBanner() error {
	var c net.Conn
	err := inNetNS(h.NS, func() (err error) {
		c, err = net.DialTimeout("tcp4", h.Address(), time.Second)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	return greets(c, 2*time.Second)
}

// greets reads the first line from c and wants an SSH greeting.
func greets(c net.Conn, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-") {
		return fmt.Errorf("not an SSH greeting: %q", line)
	}
	return nil
}

// containerLeader finds the container's PID 1: the child of nspawn in
// another PID namespace. It returns 0 until there is one.
func containerLeader(nspawn int) int {
	self, _ := os.Readlink("/proc/self/ns/pid")
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(nspawn) {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && ns != self {
			return pid
		}
	}
	return 0
}

// cgroups makes an empty cgroup for the container under this process's own,
// in the hierarchy systemd uses and, if the kernel has it, in cgroup v2,
// which the container's systemd also uses. They are removed on Close.
func (h *Host) cgroups(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		switch {
		case len(f) != 3:
		case f[1] == "name=systemd":
			dirs = append(dirs, filepath.Join("/sys/fs/cgroup/systemd", f[2], h.NS))
		case f[0] == "0" && f[1] == "":
			dirs = append(dirs, filepath.Join(h.cgroup2(t), f[2], h.NS))
		}
	}
	if len(dirs) == 0 {
		t.Fatalf("no cgroups in /proc/self/cgroup:\n%s", b)
	}
	for _, d := range dirs {
		h.record(t, "cgroup "+d+"\n")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("cgroup for the container: %v", err)
		}
		h.onClose(func() { logErr(t, removeCgroup(d)) })
	}
	return dirs
}

// cgroup2 returns where cgroup v2 is mounted, mounting it for the host's
// lifetime if nothing has: without systemd nobody may have, and then every
// container's systemd would share its root.
func (h *Host) cgroup2(t testing.TB) string {
	t.Helper()
	for _, d := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(d, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return d
		}
	}
	d := filepath.Join(h.dir, "cgroup2")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	h.record(t, "mount "+d+"\n")
	if err := unix.Mount("cgroup2", d, "cgroup2", 0, ""); err != nil {
		t.Fatalf("mount cgroup2: %v", err)
	}
	h.onClose(func() { logErr(t, unix.Unmount(d, 0)) })
	return d
}

// removeCgroup removes dir and the cgroups the container's systemd left
// below it, deepest first; cgroup directories only go with rmdir.
func removeCgroup(dir string) error {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(filepath.Join(dir, e.Name()))
		}
	}
	err := syscall.Rmdir(dir)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}

// journal returns the tail of a unit's journal (Debian) or sshd's log
// (SSHD), for error messages.
func (h *Host) journal(t testing.TB, unit string) string {
	t.Helper()
	if !h.debian() {
		return h.Log()
	}
	out, err := h.Run(t, "journalctl", "--no-pager", "-n", "50", "-u", unit)
	if err != nil {
		return err.Error()
	}
	return out
}

// CacheDir holds the pristine Debian roots, one per package list. Set
// KEYSTONE_TESTHOST_CACHE to move it.
func CacheDir() string {
	if d := os.Getenv("KEYSTONE_TESTHOST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/keystone-testhost"
}

// DebianRoot returns the cached debootstrapped root Debian hosts boot from
// (BasePackages and extra), building it the first time. It is shared:
// callers mount an overlay on it and never write to it.
func DebianRoot(t testing.TB, extra ...string) string {
	t.Helper()
	RequireRoot(t)
	return cachedRoot(t, append(slices.Clone(BasePackages), extra...))
}

// cachedRoot returns a debootstrapped root with pkgs, building it the first
// time. Concurrent test binaries wait on a lock instead of building twice.
func cachedRoot(t testing.TB, pkgs []string) string {
	t.Helper()
	slices.Sort(pkgs)
	pkgs = slices.Compact(pkgs)
	sum := sha256.Sum256([]byte(rootRecipe + " " + Suite + " " + strings.Join(pkgs, ",")))
	root := filepath.Join(CacheDir(), Suite+"-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(root); err == nil {
		return root
	}
	unlock := lockFile(t, root+".lock")
	defer unlock()
	if _, err := os.Stat(root); err == nil {
		return root
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Fatalf("debootstrap is not installed (apt-get install debootstrap): %v", err)
	}
	start := time.Now()
	tmp := root + ".tmp-" + randomID()
	defer os.RemoveAll(tmp)
	mirror := Mirror()
	t.Logf("testhost: building %s root in %s from %s (once; about a minute)", Suite, root, mirror)
	log := tmp + ".log"
	defer os.Remove(log)
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(pkgs, ","), Suite, tmp, mirror)
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	f.Close()
	if err != nil {
		out, _ := os.ReadFile(log)
		t.Fatalf("debootstrap %s from %s failed (is the mirror reachable?): %v\n%s", Suite, mirror, err, tail(string(out), 40))
	}
	// Each host gets its own host key and machine ID; the root must not
	// bring any. nftables is not enabled by its package.
	keys, _ := filepath.Glob(filepath.Join(tmp, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		os.Remove(k)
	}
	os.WriteFile(filepath.Join(tmp, "etc/machine-id"), nil, 0o444)
	os.Remove(filepath.Join(tmp, "var/lib/dbus/machine-id"))
	debs, _ := filepath.Glob(filepath.Join(tmp, "var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		os.Remove(d)
	}
	if err := cmdRun("systemctl", "--root="+tmp, "enable", "ssh.service", "avahi-daemon.service",
		"systemd-resolved.service", "nftables.service"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	t.Logf("testhost: built %s in %v", root, time.Since(start).Round(time.Second))
	return root
}

// Mirror is the Debian mirror apt uses on this machine, from
// KEYSTONE_TESTHOST_MIRROR or the first sources entry for Suite, falling back
// to deb.debian.org.
func Mirror() string {
	if m := os.Getenv("KEYSTONE_TESTHOST_MIRROR"); m != "" {
		return m
	}
	// deb822 .sources files: a stanza whose Suites include Suite.
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, stanza := range strings.Split(string(b), "\n\n") {
			var uris, suites []string
			for _, l := range strings.Split(stanza, "\n") {
				k, v, _ := strings.Cut(l, ":")
				switch strings.TrimSpace(k) {
				case "URIs":
					uris = strings.Fields(v)
				case "Suites":
					suites = strings.Fields(v)
				}
			}
			if len(uris) > 0 && slices.Contains(suites, Suite) {
				return uris[0]
			}
		}
	}
	// One-line format: deb [options] URI suite components...
	files, _ = filepath.Glob("/etc/apt/sources.list.d/*.list")
	for _, file := range append([]string{"/etc/apt/sources.list"}, files...) {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "deb" {
				continue
			}
			f = f[1:]
			if strings.HasPrefix(f[0], "[") {
				for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
					f = f[1:]
				}
				if len(f) > 0 {
					f = f[1:]
				}
			}
			if len(f) >= 2 && f[1] == Suite {
				return f[0]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
