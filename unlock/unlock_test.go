package unlock

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/newboot"
	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/testhost"
)

const (
	right = "correct-horse-battery"
	wrong = "wrong-staple"
)

// initrdSSHDConfig is the sshd_config nixos-25.11's initrd-ssh.nix writes
// (sshdConfig, NixOS/nixpkgs@001dade9), for port 2222 and keystone's key.
const initrdSSHDConfig = `UsePAM no
Port 2222

PasswordAuthentication no
AuthorizedKeysFile %h/.ssh/authorized_keys %h/.ssh/authorized_keys2 /etc/ssh/authorized_keys.d/%u
ChallengeResponseAuthentication no

HostKey /etc/ssh/initrd_ssh_host_ed25519_key

LogLevel INFO
UseDNS no
`

// units of the initrd root. sshd is initrd-ssh.nix's systemd unit
// (services.sshd: wantedBy initrd.target, after network.target, before and
// conflicts shutdown.target, DefaultDependencies = false, Type simple,
// KillMode process, Restart on-failure); RuntimeDirectory is Debian's sshd's
// need (/run/sshd), which NixOS's build does not have. The asker stands in
// for systemd-cryptsetup@: it asks through systemd's password agent
// protocol (systemd-ask-password, as cryptsetup's ask_password_auto does)
// before the root can be mounted, and again after a wrong password
// (crypttab tries=0), once /standin/go exists (a request that comes late).
var initrdUnits = map[string]string{
	"sshd-initrd.service": `[Unit]
Description=SSH Daemon (initrd-ssh.nix stand-in)
DefaultDependencies=false
After=network.target
Before=shutdown.target
Conflicts=shutdown.target
[Service]
Type=simple
KillMode=process
Restart=on-failure
RuntimeDirectory=sshd
ExecStart=/usr/sbin/sshd -D -f /etc/ssh/initrd_sshd_config
`,
	"initrd.target.wants/sshd-initrd.service": "@../sshd-initrd.service",
	"standin-cryptsetup.service": `[Unit]
Description=Cryptography Setup for standin (stand-in)
DefaultDependencies=no
Before=sysroot.mount
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/standin/ask
`,
	"sysroot.mount": `[Unit]
DefaultDependencies=no
Requires=standin-cryptsetup.service
After=standin-cryptsetup.service
Before=initrd-root-fs.target
[Mount]
What=/newroot
Where=/sysroot
Options=bind
`,
	"initrd-root-fs.target.requires/sysroot.mount": "@../sysroot.mount",
	// The console agent would answer from nspawn's read-only console;
	// NixOS's initrd has it too, and whichever agent answers first wins.
	"systemd-ask-password-console.path": "@/dev/null",
	"systemd-ask-password-wall.path":    "@/dev/null",
}

const askScript = `#!/bin/sh
while [ ! -e /standin/go ]; do sleep 0.2; done
# An enrolled TPM2 that unseals: no request at all.
if [ -e /standin/tpm2 ]; then echo "unlocked by the TPM2" >> /log/events; exit 0; fi
echo "asking" >> /log/events
while :; do
  pw=$(systemd-ask-password --timeout=0 --id=cryptsetup:/dev/standin "Please enter passphrase for disk standin:") || exit 1
  if [ "$pw" = "$(cat /standin/password)" ]; then echo "unlocked" >> /log/events; exit 0; fi
  echo "wrong password" >> /log/events
done
`

type rig struct {
	initrd             string // the initrd root, as this machine sees it
	logDir             string
	addr               string
	client             string // the client key file
	initrdKey, mainKey ssh.PublicKey
	console            chan string
	stop               chan struct{}
}

// bootRig boots an initrd-mode Debian root (systemd 252 with
// /etc/initrd-release) in a network namespace: its sshd on 2222, the
// asker, and a second root with the main sshd on 22 that it switches to.
func bootRig(t *testing.T, tpm2 bool) *rig {
	lower := testhost.DebianRoot(t)
	ns, addr := testhost.Network(t, 22, 2222)
	initrd, _ := testhost.Overlay(t, lower)
	next, _ := testhost.Overlay(t, lower)
	r := &rig{initrd: initrd, logDir: t.TempDir(), addr: addr, console: make(chan string, 1), stop: make(chan struct{})}
	write := func(root, p, data string, mode os.FileMode) {
		t.Helper()
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(data, "@") {
			os.Remove(full)
			if err := os.Symlink(data[1:], full); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := os.WriteFile(full, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	signer, clientFile := testhost.ClientKey(t)
	r.client = clientFile
	authorized := string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
	initrdSigner, initrdPriv := testhost.GenerateKey(t)
	mainSigner, mainPriv := testhost.GenerateKey(t)
	r.initrdKey, r.mainKey = initrdSigner.PublicKey(), mainSigner.PublicKey()

	osRelease, err := os.ReadFile(filepath.Join(lower, "usr/lib/os-release"))
	if err != nil {
		t.Fatal(err)
	}
	write(initrd, "etc/initrd-release", string(osRelease), 0o644)
	write(initrd, "etc/ssh/initrd_sshd_config", initrdSSHDConfig, 0o644)
	write(initrd, "etc/ssh/initrd_ssh_host_ed25519_key", string(initrdPriv), 0o600)
	write(initrd, "etc/ssh/authorized_keys.d/root", authorized, 0o644)
	for p, data := range initrdUnits {
		write(initrd, "etc/systemd/system/"+p, data, 0o644)
	}
	write(initrd, "standin/ask", askScript, 0o755)
	write(initrd, "standin/password", right+"\n", 0o600)
	if tpm2 {
		write(initrd, "standin/tpm2", "", 0o644)
	}
	os.MkdirAll(filepath.Join(initrd, "sysroot"), 0o755)
	os.MkdirAll(filepath.Join(initrd, "log"), 0o755)

	write(next, "etc/ssh/ssh_host_ed25519_key", string(mainPriv), 0o600)
	write(next, "etc/ssh/sshd_config.d/test.conf", "Port 22\nHostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n", 0o644)
	write(next, "root/.ssh/authorized_keys", authorized, 0o600)
	for _, root := range []string{initrd, next} {
		write(root, "etc/hostname", "web1\n", 0o644)
		for _, s := range []string{"avahi-daemon.service", "avahi-daemon.socket", "nftables.service", "systemd-resolved.service"} {
			write(root, "etc/systemd/system/"+s, "@/dev/null", 0)
		}
	}
	// Debian's own sshd (port 22) belongs to the second root only.
	write(initrd, "etc/systemd/system/ssh.service", "@/dev/null", 0)
	os.MkdirAll(filepath.Join(next, "log"), 0o755)

	go func() {
		console, _ := testhost.BootOnce(t, testhost.BootOptions{
			Root:  initrd,
			NetNS: ns,
			Args: []string{
				"--bind=" + next + ":/newroot",
				"--bind=" + r.logDir + ":/log",
				"--hostname=web1",
				"--setenv=SYSTEMD_PROC_CMDLINE=systemd.show_status=1",
			},
			Timeout: 3 * time.Minute,
			Done: func() bool {
				select {
				case <-r.stop:
					return true
				default:
					return false
				}
			},
		})
		r.console <- console
	}()
	t.Cleanup(func() {
		select {
		case <-r.stop:
		default:
			close(r.stop)
		}
		<-r.console
	})
	return r
}

// finish stops the container and returns its console. Before the test
// ends: BootOnce's own cleanups (registered after the rig's) run first.
func (r *rig) finish() string {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	console := <-r.console
	r.console <- console
	return console
}

func (r *rig) events() string {
	data, _ := os.ReadFile(filepath.Join(r.logDir, "events"))
	return string(data)
}

func (r *rig) target(initrdKey ssh.PublicKey) Target {
	return Target{
		Name: "web1", Hostname: "web1",
		Initrd: sshx.Options{Addr: r.addr + ":2222", User: "root", Identities: []string{r.client},
			HostKeys: sshx.HostKeys{Pinned: initrdKey, PinnedFrom: "vms/web1/" + PinName}},
		System: sshx.Options{Addr: r.addr + ":22", User: "root", Identities: []string{r.client},
			HostKeys: sshx.HostKeys{Pinned: r.mainKey, PinnedFrom: "vms/web1/ssh_host_ed25519_key.pub"}},
	}
}

func once(pw string) func(int) ([]byte, error) {
	return func(attempt int) ([]byte, error) {
		if attempt > 0 {
			return nil, ErrNoPassword
		}
		return []byte(pw), nil
	}
}

// TestUnlockInitrd unlocks an initrd that systemd (Debian's 252, in initrd
// mode) runs: its sshd is initrd-ssh.nix's, its request is made through
// systemd's password agent protocol and answered by the real
// systemd-tty-ask-password-agent over SSH; one boot carries every case in
// turn.
func TestUnlockInitrd(t *testing.T) {
	testhost.RequireRoot(t)
	r := bootRig(t, false)
	ctx := context.Background()
	var out bytes.Buffer
	run := func(name string, tg Target, o Options) (Result, error) {
		t.Helper()
		start := time.Now()
		res, err := Run(ctx, tg, o, &out)
		t.Logf("%s: %v in %v", name, err, time.Since(start).Round(time.Millisecond))
		return res, err
	}

	// A changed initrd key is refused with both fingerprints, and the
	// refusal is the first answer once the initrd's sshd is up.
	other, _ := testhost.GenerateKey(t)
	_, err := run("changed key", r.target(other.PublicKey()), Options{Password: once(right), Wait: time.Minute})
	if exit.Code(err) != ExitCannotConnect || !strings.Contains(errText(err), ssh.FingerprintSHA256(r.initrdKey)) || !strings.Contains(errText(err), ssh.FingerprintSHA256(other.PublicKey())) {
		t.Fatalf("changed initrd key: exit %d, %v; want %d naming both fingerprints", exit.Code(err), err, ExitCannotConnect)
	}

	// Nothing asks yet: one clear refusal after AskWait.
	_, err = run("no request", r.target(r.initrdKey), Options{Password: once(right), Wait: time.Minute, AskWait: 2 * time.Second})
	if exit.Code(err) != ExitRefused || !strings.Contains(err.Error(), "the initrd asks for no password") {
		t.Fatalf("no request pending: exit %d, %v; want %d", exit.Code(err), err, ExitRefused)
	}

	// The request comes late, the password is wrong: the host asks again.
	go func() {
		time.Sleep(3 * time.Second)
		os.WriteFile(filepath.Join(r.initrd, "standin/go"), nil, 0o644)
	}()
	_, err = run("wrong password", r.target(r.initrdKey), Options{Password: once(wrong), Wait: time.Minute})
	if exit.Code(err) != ExitWrongPassword || !strings.Contains(err.Error(), "the password is wrong") {
		t.Fatalf("wrong password: exit %d, %v; want %d\nevents:\n%s", exit.Code(err), err, ExitWrongPassword, r.events())
	}
	if !strings.Contains(r.events(), "asking\nwrong password\n") {
		t.Fatalf("the asker did not get the wrong password:\n%s", r.events())
	}

	// The right one: the boot goes on to the second root.
	res, err := run("right password", r.target(r.initrdKey), Options{Password: once(right), Wait: 2 * time.Minute})
	if err != nil || res.AlreadyUp || res.BootID == "" {
		t.Fatalf("right password: %+v, %v\noutput:\n%s\nevents:\n%s", res, err, out.String(), r.events())
	}
	if !strings.HasSuffix(r.events(), "wrong password\nunlocked\n") {
		t.Errorf("events:\n%s", r.events())
	}

	// Again: the system is up.
	res, err = run("already unlocked", r.target(r.initrdKey), Options{Password: once(right), Wait: time.Minute})
	if err != nil || !res.AlreadyUp {
		t.Errorf("second unlock: %+v, %v; want already unlocked", res, err)
	}
	// After a reboot (switch --boot), the boot rebooted is not the one
	// waited for: its system answering does not end the wait.
	tg := r.target(r.initrdKey)
	c, err := sshx.Dial(context.Background(), tg.System)
	if err != nil {
		t.Fatal(err)
	}
	before, _, err := newboot.Identity(context.Background(), remote.New(c.Client, false, 10*time.Second))
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = run("the old boot still up", tg, Options{Password: once(right), Wait: 5 * time.Second, Before: before})
	if exit.Code(err) != ExitCannotConnect || !strings.Contains(errText(err), "the system still runs the boot before the reboot") {
		t.Errorf("with the boot before the reboot still up: %v (exit %d)", err, exit.Code(err))
	}
	if res, err := run("a new boot up", tg, Options{Password: once(right), Wait: time.Minute, Before: "another/1"}); err != nil || !res.AlreadyUp {
		t.Errorf("a boot other than Before up: %+v, %v; want already unlocked", res, err)
	}

	console := r.finish()
	for _, pw := range []string{right, wrong} {
		if strings.Contains(out.String(), pw) || strings.Contains(console, pw) {
			t.Errorf("the password %q is in keystone's output or the console", pw)
		}
	}
	for _, want := range []string{"web1: in its initrd at", "the password is wrong: the host asks again", "web1: unlocked: the system answers on", "web1: already unlocked"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	t.Logf("output:\n%s", out.String())
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestUnlockUnreachable: nothing answers on either port: one line, exit 2,
// once the wait runs out.
func TestUnlockUnreachable(t *testing.T) {
	signer, client := testhost.ClientKey(t)
	tg := Target{Name: "web1", Hostname: "web1",
		Initrd: sshx.Options{Addr: "127.0.0.1:1", User: "root", Identities: []string{client}, HostKeys: sshx.HostKeys{Pinned: signer.PublicKey()}},
		System: sshx.Options{Addr: "127.0.0.1:2", User: "root", Identities: []string{client}, HostKeys: sshx.HostKeys{Pinned: signer.PublicKey()}},
	}
	_, err := Run(context.Background(), tg, Options{Password: once(right), Wait: 2 * time.Second}, &bytes.Buffer{})
	if exit.Code(err) != ExitCannotConnect || !strings.Contains(err.Error(), "neither its initrd nor its system answered within 2s") {
		t.Errorf("exit %d, %v", exit.Code(err), err)
	}
}

// TestUnlockInitrdGoesOn: the initrd switches root while unlock waits for
// a request (its TPM2 unsealed the key, or somebody typed at the console):
// unlock says so and waits for the system as after an answer.
func TestUnlockInitrdGoesOn(t *testing.T) {
	testhost.RequireRoot(t)
	r := bootRig(t, true)
	go func() {
		time.Sleep(3 * time.Second)
		os.WriteFile(filepath.Join(r.initrd, "standin/go"), nil, 0o644)
	}()
	var out bytes.Buffer
	res, err := Run(context.Background(), r.target(r.initrdKey), Options{Password: once(right), Wait: time.Minute}, &out)
	if err != nil || res.AlreadyUp || !strings.Contains(out.String(), "web1: its initrd went on without this password (a TPM2, or the console)") ||
		!strings.Contains(out.String(), "web1: unlocked: the system answers on") || !strings.Contains(r.events(), "unlocked by the TPM2") {
		t.Errorf("%+v, %v\noutput:\n%s\nevents:\n%s", res, err, out.String(), r.events())
	}
	r.finish()
}
