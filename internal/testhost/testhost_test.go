package testhost

import (
	"bufio"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func sshRun(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	return strings.TrimSpace(string(out))
}

// filtered reports whether a connection to addr from the root namespace
// times out, which is what the firewall's drop policy looks like.
func filtered(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err == nil {
		c.Close()
		return false
	}
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err != nil
}

func ksLinks(t *testing.T) map[string]bool {
	t.Helper()
	RequireRoot(t)
	out, err := exec.Command("sh", "-c", "ip netns list; ip -o link show").Output()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, f := range strings.Fields(string(out)) {
		f = strings.TrimSuffix(strings.Split(f, "@")[0], ":")
		if strings.HasPrefix(f, "ks-") {
			m[f] = true
		}
	}
	return m
}

// checkGone fails t if h's namespace or veth outlived Close. Only h's own
// names count: other test binaries may be making hosts meanwhile.
func checkGone(t *testing.T, before map[string]bool, h *Host) {
	t.Helper()
	if before[h.NS] || before[h.veth] {
		t.Fatalf("%s or %s existed before the host", h.NS, h.veth)
	}
	after := ksLinks(t)
	for _, n := range []string{h.NS, h.veth} {
		if after[n] {
			t.Errorf("%s left behind after Close", n)
		}
	}
}

func TestSSHD(t *testing.T) {
	before := ksLinks(t)
	signer, keyPath := ClientKey(t)
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client key %s: %v %v", keyPath, fi, err)
	}
	start := time.Now()
	h := SSHD(t, SSHDOptions{Hostname: "web-1", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, OpenTCP: []int{22, 8080}})
	t.Logf("SSHD up in %v", time.Since(start))

	c := h.Dial(t, signer)
	if got := sshRun(t, c, "hostname"); got != "web-1" {
		t.Errorf("hostname over ssh = %q, want web-1", got)
	}
	if got, err := h.Run(t, "hostname"); err != nil || strings.TrimSpace(got) != "web-1" {
		t.Errorf("Run hostname = %q, %v", got, err)
	}
	if got, _ := os.Hostname(); got == "web-1" {
		t.Errorf("the machine's own hostname changed")
	}

	// 9090 listens but is not in OpenTCP: the firewall must hide it. 8080
	// is open.
	h.Listen(t, 8080)
	h.Listen(t, 9090)
	if !filtered(t, net.JoinHostPort(h.Addr, "9090")) {
		t.Errorf("port 9090 is reachable through the firewall")
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(h.Addr, "8080"), 2*time.Second)
	if err != nil {
		t.Fatalf("port 8080: %v", err)
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if line != "testhost web-1 8080\n" {
		t.Errorf("8080 said %q", line)
	}
	if out, err := h.Run(t, "nft", "list", "ruleset"); err != nil || !strings.Contains(out, "policy drop") {
		t.Errorf("ruleset in namespace: %q, %v", out, err)
	}

	// A new host key takes effect on restart; the old pin must fail.
	old := h.HostKey
	newSigner, newKey := GenerateKey(t)
	h.SetHostKey(t, newKey)
	if string(h.HostKey.Marshal()) != string(newSigner.PublicKey().Marshal()) {
		t.Fatal("HostKey not updated")
	}
	_, err = ssh.Dial("tcp", h.Address(), &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(old), Timeout: 5 * time.Second,
	})
	if err == nil {
		t.Error("old host key still accepted after SetHostKey")
	}
	c2 := h.Dial(t, signer)

	// Killing sshd drops the running session and refuses new ones.
	s, err := c2.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run("sleep 30") }()
	time.Sleep(200 * time.Millisecond)
	h.KillSSHD(t)
	select {
	case err := <-done:
		if err == nil {
			t.Error("session survived KillSSHD")
		}
	case <-time.After(5 * time.Second):
		t.Error("session still running 5s after KillSSHD")
	}
	if !refused(h.Address()) {
		t.Error("port 22 still accepts after KillSSHD")
	}
	h.RestartSSHD(t)
	h.Dial(t, signer)

	if id := h.BootIdentity(t); !strings.Contains(id, "/") {
		t.Errorf("BootIdentity = %q", id)
	}

	holder := h.holder.cmd.Process.Pid
	sshd := h.sshd.cmd.Process.Pid
	start = time.Now()
	h.Close()
	t.Logf("SSHD closed in %v", time.Since(start))
	checkGone(t, before, h)
	for _, pid := range []int{holder, sshd} {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("process %d still running after Close", pid)
		}
	}
}

func TestSSHDParallel(t *testing.T) {
	signer, _ := ClientKey(t)
	for i := range 3 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			h := SSHD(t, SSHDOptions{Hostname: "p" + strconv.Itoa(i), AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
				Port: 2222, ExtraSSHDConfig: []string{"LogLevel VERBOSE"}})
			if got := sshRun(t, h.Dial(t, signer), "hostname"); got != "p"+strconv.Itoa(i) {
				t.Errorf("hostname = %q", got)
			}
			if !strings.Contains(h.Log(), "Server listening") {
				t.Errorf("no sshd log: %q", h.Log())
			}
		})
	}
}

func TestDebian(t *testing.T) {
	before := ksLinks(t)
	signer, _ := ClientKey(t)
	start := time.Now()
	h := Debian(t, DebianOptions{Hostname: "deb-1", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	t.Logf("Debian up in %v (including any root build)", time.Since(start))

	c := h.Dial(t, signer)
	if got := sshRun(t, c, "hostname"); got != "deb-1" {
		t.Errorf("hostname = %q, want deb-1", got)
	}
	state := sshRun(t, c, "timeout 60 systemctl is-system-running --wait || true")
	if state != "running" {
		failed, _ := h.Run(t, "systemctl", "--failed", "--no-pager")
		errs, _ := h.Run(t, "journalctl", "-b", "--no-pager", "-p", "err")
		t.Errorf("system state %q\n%s\n%s", state, failed, errs)
	}
	if got := sshRun(t, c, "systemctl is-active ssh avahi-daemon systemd-resolved nftables"); got != "active\nactive\nactive\nactive" {
		t.Errorf("services: %q", got)
	}
	if got, err := h.Run(t, "cat", "/etc/hostname"); err != nil || got != "deb-1\n" {
		t.Errorf("Run cat /etc/hostname = %q, %v", got, err)
	}
	h.Listen(t, 9090)
	if !filtered(t, net.JoinHostPort(h.Addr, "9090")) {
		t.Errorf("port 9090 is reachable through the container's firewall")
	}

	newSigner, newKey := GenerateKey(t)
	h.SetHostKey(t, newKey)
	if string(h.HostKey.Marshal()) != string(newSigner.PublicKey().Marshal()) {
		t.Fatal("HostKey not updated")
	}
	c = h.Dial(t, signer)

	// Killing sshd drops sessions; systemd then restarts it, as on a
	// real host (Restart=on-failure).
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run("sleep 30") }()
	time.Sleep(200 * time.Millisecond)
	h.KillSSHD(t)
	select {
	case err := <-done:
		if err == nil {
			t.Error("session survived KillSSHD")
		}
	case <-time.After(5 * time.Second):
		t.Error("session still running 5s after KillSSHD")
	}
	h.StopSSHD(t)
	if !refused(h.Address()) {
		t.Error("port 22 still accepts after StopSSHD")
	}
	h.RestartSSHD(t)
	h.Dial(t, signer)

	start = time.Now()
	closeDebian(t, before, h)
	t.Logf("Debian closed in %v", time.Since(start))
}

// closeDebian closes h and checks that nothing of it is left: namespace,
// veth, overlay, cgroups, or a process of any of its boots.
func closeDebian(t *testing.T, before map[string]bool, h *Host) {
	t.Helper()
	h.mu.Lock()
	nspawn := h.nspawn.cmd.Process.Pid
	h.mu.Unlock()
	h.Close()
	checkGone(t, before, h)
	if out, _ := exec.Command("findmnt", h.Root).Output(); len(out) > 0 {
		t.Errorf("%s still mounted", h.Root)
	}
	if syscall.Kill(nspawn, 0) == nil {
		t.Errorf("systemd-nspawn %d still running after Close", nspawn)
	}
	if h.LeaderPID() != 0 {
		t.Errorf("LeaderPID = %d after Close", h.LeaderPID())
	}
	if out, _ := exec.Command("find", "/sys/fs/cgroup", "-maxdepth", "4", "-name", h.NS).Output(); len(out) > 0 {
		t.Errorf("cgroups left after Close:\n%s", out)
	}
}

// containerProcs lists the processes in the PID namespace of pid, each
// named by PID and start time. Namespace inode numbers are reused, so
// only the list says later which of them outlived their container.
func containerProcs(t *testing.T, pid int) map[int]string {
	t.Helper()
	ns, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	procs := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, _ := os.Readlink("/proc/" + e.Name() + "/ns/pid"); l == ns {
			procs[p] = startTime(p)
		}
	}
	return procs
}

// survivors lists the processes of procs still running.
func survivors(procs map[int]string) []int {
	var out []int
	for p, st := range procs {
		if startTime(p) == st {
			out = append(out, p)
		}
	}
	return out
}

// waitFor calls f until it returns nil, failing t after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestDebianReboot(t *testing.T) {
	before := ksLinks(t)
	signer, _ := ClientKey(t)
	h := Debian(t, DebianOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	if _, err := h.Run(t, "sh", "-c", "echo kept >/root/kept"); err != nil {
		t.Fatal(err)
	}
	id, leader, hostKey := h.BootIdentity(t), h.LeaderPID(), h.HostKey
	if id != h.BootIdentity(t) {
		t.Fatal("BootIdentity changes without a reboot")
	}
	first := containerProcs(t, leader)

	// A session open across the reboot ends with it.
	s, err := h.Dial(t, signer).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run("sleep 300") }()

	start := time.Now()
	h.Reboot(t)
	t.Logf("Reboot took %v", time.Since(start))
	select {
	case err := <-done:
		if err == nil {
			t.Error("session survived the reboot")
		}
	case <-time.After(5 * time.Second):
		t.Error("session still running 5s after the reboot")
	}
	if pids := survivors(first); len(pids) > 0 {
		t.Errorf("processes of the first boot left: %v", pids)
	}

	if got, err := h.Run(t, "cat", "/root/kept"); err != nil || got != "kept\n" {
		t.Errorf("file written before the reboot: %q, %v", got, err)
	}
	if got := h.BootIdentity(t); got == id {
		t.Errorf("BootIdentity %q unchanged by the reboot", got)
	} else {
		t.Logf("BootIdentity %s -> %s", id, got)
	}
	if l := h.LeaderPID(); l == leader || l == 0 {
		t.Errorf("LeaderPID %d after the reboot, %d before", l, leader)
	}
	if string(h.HostKey.Marshal()) != string(hostKey.Marshal()) {
		t.Error("HostKey changed")
	}
	c := h.Dial(t, signer) // pins the host key from before the reboot
	state := sshRun(t, c, "timeout 60 systemctl is-system-running --wait || true")
	if state != "running" {
		failed, _ := h.Run(t, "systemctl", "--failed", "--no-pager")
		t.Errorf("system state after the reboot %q\n%s", state, failed)
	}

	// And once more, to see the second restart is like the first.
	h.Reboot(t)
	if got, err := h.Run(t, "cat", "/root/kept"); err != nil || got != "kept\n" {
		t.Errorf("file after the second reboot: %q, %v", got, err)
	}
	last := containerProcs(t, h.LeaderPID())
	closeDebian(t, before, h)
	if pids := survivors(last); len(pids) > 0 {
		t.Errorf("processes left after Close: %v", pids)
	}
}

func TestDebianRebootOverSSH(t *testing.T) {
	before := ksLinks(t)
	signer, _ := ClientKey(t)
	h := Debian(t, DebianOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	id, leader := h.BootIdentity(t), h.LeaderPID()

	start := time.Now()
	s, err := h.Dial(t, signer).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	// The connection may drop before systemctl reports back; either way
	// the host must come back by itself.
	out, err := s.CombinedOutput("systemctl reboot")
	t.Logf("systemctl reboot over ssh: %v %q", err, out)
	waitFor(t, 60*time.Second, "new boot", func() error {
		if l := h.LeaderPID(); l == 0 || l == leader {
			return fmt.Errorf("LeaderPID %d", l)
		}
		if _, err := h.Run(t, "true"); err != nil {
			return err
		}
		c, err := ssh.Dial("tcp", h.Address(), &ssh.ClientConfig{
			User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.FixedHostKey(h.HostKey), Timeout: 2 * time.Second,
		})
		if err != nil {
			return err
		}
		return c.Close()
	})
	t.Logf("back after %v", time.Since(start))
	if got := h.BootIdentity(t); got == id {
		t.Errorf("BootIdentity %q unchanged by the reboot", got)
	}
	if got := sshRun(t, h.Dial(t, signer), "hostname"); got != h.Name {
		t.Errorf("hostname = %q, want %s", got, h.Name)
	}
	closeDebian(t, before, h)
}

// A stand-in program reboots the container through nsenter, and the test
// closes the host while the container shuts down or boots again: the last
// nspawn must go, and no new one start.
func TestDebianCloseWhileRebooting(t *testing.T) {
	for _, when := range []string{"shutting-down", "booting"} {
		t.Run(when, func(t *testing.T) {
			before := ksLinks(t)
			h := Debian(t, DebianOptions{})
			leader := h.LeaderPID()
			procs := containerProcs(t, leader)
			if err := exec.Command("nsenter", "-t", strconv.Itoa(leader), "-a", "systemctl", "reboot").Run(); err != nil {
				t.Fatal(err)
			}
			if when == "booting" {
				// Catch the new PID 1 early, before systemd can take
				// nspawn's signal to halt.
				deadline := time.Now().Add(30 * time.Second)
				for l := h.LeaderPID(); l == 0 || l == leader; l = h.LeaderPID() {
					if time.Now().After(deadline) {
						t.Fatal("no new boot after 30s")
					}
					time.Sleep(time.Millisecond)
				}
				maps.Copy(procs, containerProcs(t, h.LeaderPID()))
			}
			start := time.Now()
			closeDebian(t, before, h)
			t.Logf("closed in %v", time.Since(start))
			if pids := survivors(procs); len(pids) > 0 {
				t.Errorf("processes left after Close: %v", pids)
			}
		})
	}
}
