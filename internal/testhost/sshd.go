package testhost

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHDOptions configures SSHD.
type SSHDOptions struct {
	Hostname       string          // default "ks-" plus random hex
	AuthorizedKeys []ssh.PublicKey // may log in as root
	Port           int             // default 22
	// ExtraSSHDConfig lines go before the defaults, because sshd keeps the
	// first value it reads for a keyword; from the first Match line on they
	// go after them.
	ExtraSSHDConfig []string
	IPv6            bool  // give the host a unique-local IPv6 address too (Addr6)
	OpenTCP         []int // ports the firewall lets in; default {Port}
}

// SSHD starts Debian's sshd as root in a fresh network and UTS namespace,
// with its own hostname, host key and firewall. It shares the machine's
// filesystem and users: it is a stand-in for a remote host's SSH endpoint,
// not an isolated system.
func SSHD(t testing.TB, o SSHDOptions) *Host {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		t.Fatalf("sshd is not installed (apt-get install openssh-server): %v", err)
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
	start0 := time.Now()
	h := newHost(t, o.Hostname, o.Port, o.OpenTCP, o.IPv6)
	h.logPath = filepath.Join(h.dir, "sshd.log")

	// The holder owns the UTS namespace, so the hostname outlives sshd
	// restarts and Run sees the same hostname sshd does, and a mount
	// namespace where root's home is an empty folder: sessions would
	// otherwise run the machine's ~/.bashrc (bash does over ssh), which can
	// be slow or block on locks shared with the machine.
	home := filepath.Join(h.dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("nsenter", "--net=/run/netns/"+h.NS, "unshare", "--uts", "--mount", "--propagation", "private",
		"sh", "-c", `mount --bind "$2" /root && hostname "$1" && echo ready && exec sleep infinity`, "sh", o.Hostname, home)
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := start(holder, h.logPath)
	if err != nil {
		t.Fatalf("start namespace holder: %v", err)
	}
	h.holder = p
	h.onClose(func() { p.stop(syscall.SIGKILL, 5*time.Second) })
	buf := make([]byte, 6)
	if n, _ := out.Read(buf); string(buf[:n]) != "ready\n" {
		t.Fatalf("setting hostname %q failed: %s", o.Hostname, h.Log())
	}

	// Debian's sshd wants its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	h.HostKeyPath = filepath.Join(h.dir, "ssh_host_ed25519_key")
	_, hostKey := GenerateKey(t)
	writeFile(t, h.HostKeyPath, string(hostKey), 0o600)
	authKeys := filepath.Join(h.dir, "authorized_keys")
	writeFile(t, authKeys, authorizedKeys(o.AuthorizedKeys), 0o600)
	h.sshdCfg = filepath.Join(h.dir, "sshd_config")
	writeFile(t, h.sshdCfg, sshdConfig(o, h.HostKeyPath, authKeys), 0o600)

	h.onClose(func() { h.KillSSHD(t) })
	h.startSSHD(t)
	t.Logf("testhost: sshd host %s at %s up in %v", h.Name, h.Address(), time.Since(start0).Round(time.Millisecond))
	return h
}

func sshdConfig(o SSHDOptions, hostKey, authKeys string) string {
	first, last := o.ExtraSSHDConfig, []string(nil)
	for i, l := range o.ExtraSSHDConfig {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], "Match") {
			first, last = o.ExtraSSHDConfig[:i], o.ExtraSSHDConfig[i:]
			break
		}
	}
	lines := append([]string{}, first...)
	lines = append(lines,
		"Port "+strconv.Itoa(o.Port),
		"HostKey "+hostKey,
		"AuthorizedKeysFile "+authKeys,
		"PidFile none",
		// The key files live in the test's temporary directory, whose
		// parents sshd would otherwise check for ownership and modes.
		"StrictModes no",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		// PAM would add the machine's session setup (and its logs) to
		// every login.
		"UsePAM no",
		"Subsystem sftp /usr/lib/openssh/sftp-server",
	)
	lines = append(lines, last...)
	return strings.Join(lines, "\n") + "\n"
}

// startSSHD starts sshd and waits until it listens.
func (h *Host) startSSHD(t testing.TB) {
	t.Helper()
	key, err := readHostKey(h.HostKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	h.HostKey = key
	offset := fileSize(h.logPath)
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(h.holder.cmd.Process.Pid), "-n", "-u", "-m",
		"/usr/sbin/sshd", "-D", "-e", "-f", h.sshdCfg)
	p, err := start(cmd, h.logPath)
	if err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	h.mu.Lock()
	h.sshd = p
	h.mu.Unlock()
	if err := waitLog(p, h.logPath, offset, "Server listening on", 10*time.Second); err != nil {
		t.Fatalf("sshd on %s: %v\n%s", h.Name, err, h.Log())
	}
}

// StopSSHD stops sshd gracefully (SIGTERM), as systemctl stop ssh would:
// established sessions live on, new connections are refused. On a Debian
// host it runs systemctl stop ssh.
func (h *Host) StopSSHD(t testing.TB) {
	t.Helper()
	if h.debian() {
		h.systemctl(t, "stop", "ssh.service")
		return
	}
	h.sshdProc().stop(syscall.SIGTERM, 10*time.Second)
}

// KillSSHD kills sshd and every session it started with SIGKILL, so
// connections drop mid-command. On a Debian host it runs systemctl kill.
func (h *Host) KillSSHD(t testing.TB) {
	t.Helper()
	if h.debian() {
		h.systemctl(t, "kill", "--signal=KILL", "ssh.service")
		return
	}
	// Sessions of an earlier sshd (see RestartSSHD) are no longer its
	// children, so look for every sshd in the namespace, and the commands
	// they run.
	var pids []int
	for _, pid := range nsPIDs(h.NS) {
		if exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); exe == "/usr/sbin/sshd" {
			pids = append(pids, pid)
			pids = append(pids, descendants(pid)...)
		}
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if p := h.sshdProc(); p != nil {
		<-p.done
	}
}

// RestartSSHD stops sshd (sessions survive, as with systemctl restart) and
// starts it again with whatever key is now at HostKeyPath, updating HostKey.
func (h *Host) RestartSSHD(t testing.TB) {
	t.Helper()
	if h.debian() {
		h.systemctl(t, "restart", "ssh.service")
		h.reloadHostKey(t)
		return
	}
	if p := h.sshdProc(); p != nil {
		p.stop(syscall.SIGTERM, 10*time.Second)
	}
	h.startSSHD(t)
}

// SetHostKey installs privateKey (an OpenSSH private key file's contents, see
// GenerateKey) as sshd's host key and restarts sshd, as a deploy that
// changes the host key would.
func (h *Host) SetHostKey(t testing.TB, privateKey []byte) {
	t.Helper()
	s, err := ssh.ParsePrivateKey(privateKey)
	if err != nil {
		t.Fatalf("SetHostKey: %v", err)
	}
	writeFile(t, h.HostKeyPath, string(privateKey), 0o600)
	// Debian's sshd refuses a key whose .pub next to it differs.
	writeFile(t, h.HostKeyPath+".pub", string(ssh.MarshalAuthorizedKey(s.PublicKey())), 0o644)
	h.RestartSSHD(t)
}

func (h *Host) reloadHostKey(t testing.TB) {
	t.Helper()
	key, err := readHostKey(h.HostKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	h.HostKey = key
}

func (h *Host) sshdProc() *proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sshd
}

func (h *Host) systemctl(t testing.TB, args ...string) {
	t.Helper()
	if _, err := h.Run(t, append([]string{"systemctl"}, args...)...); err != nil {
		t.Fatal(fmt.Errorf("%w\n%s", err, h.journal(t, "ssh.service")))
	}
}

// Silent is a TCP server on loopback that accepts every connection and
// never says anything (no SSH banner), until the test ends. It returns
// its address.
func Silent(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return l.Addr().String()
}
