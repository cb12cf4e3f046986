package switcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

// hostPackages: Debian's Nix on the test host, whose store takes the
// copies. debootstrap does not resolve virtual packages, so libdbi-perl
// stands for nix-bin's perl-dbdabi-94.
var hostPackages = []string{"nix-bin", "libdbi-perl"}

// switchToConfiguration is a stand-in for NixOS's
// switch-to-configuration on a Debian host. It takes NixOS's lock as
// nixpkgs' switch-to-configuration-ng does (open
// /run/nixos/switch-to-configuration.lock, flock LOCK_EX|LOCK_NB, "Could
// not acquire lock"), and does to the host what verify sees of a NixOS
// switch: test and switch load the system's firewall ruleset, bring its
// units to the state its hook says and point /run/current-system at it;
// boot records it as the boot default, where NixOS writes a boot loader
// entry. It exits with the system's exit-code file: 4 is NixOS's "some
// units failed".
const switchToConfiguration = `#!/bin/sh
set -e
self=$(cd "$(dirname "$0")/.." && pwd -P)
mkdir -p /run/nixos
exec 7>>/run/nixos/switch-to-configuration.lock
flock -n 7 || { echo "Could not acquire lock" >&2; exit 1; }
case "$1" in
test|switch)
	nft -f "$self/etc/nftables.conf"
	ln -sfn "$self" /run/current-system
	. "$self/hook"
	echo "activated $self"
	;;
boot)
	mkdir -p /boot
	echo "$self" >/boot/keystone-default
	[ -e "$self/boot-exit-code" ] && exit "$(cat "$self/boot-exit-code")"
	;;
*)
	echo "unknown action $1" >&2
	exit 100
	;;
esac
exit "$(cat "$self/exit-code")"
`

// systems are the test's NixOS systems: what each one's activation does.
var systems = map[string]struct {
	tcp        []int
	hook       string
	exit       int
	inhibitors string // its switch-inhibitors file, if any
	bootExit   int    // what its switch-to-configuration boot exits with
}{
	"base":  {tcp: []int{22}, hook: "systemctl start ssh.service"},
	"good":  {tcp: []int{22}, hook: "systemctl start ssh.service"},
	"good2": {tcp: []int{22}, hook: "systemctl start ssh.service"},
	"web":   {tcp: []int{22, 8080}, hook: "systemctl start ssh.service"},
	"exit4": {tcp: []int{22}, hook: "systemctl start ssh.service", exit: 4},
	// Verified, but its boot loader entry cannot be written.
	"bootfail": {tcp: []int{22}, hook: "systemctl start ssh.service", bootExit: 1},
	// A switch that takes SSH away: the listener and every session.
	"nossh": {tcp: []int{22}, hook: "systemctl stop ssh.service; pkill -KILL -x sshd || true"},
	// The fleet's other two hosts.
	"fleetb": {tcp: []int{22}, hook: "systemctl start ssh.service"},
	"fleetc": {tcp: []int{22}, hook: "systemctl start ssh.service"},
	// A live switch NixOS would refuse (another dbus implementation).
	"inhib": {tcp: []int{22}, hook: "systemctl start ssh.service", inhibitors: `{"dbus-implementation":"broker"}`},
	// Built on the host (keystone.deploy.buildOn = "remote").
	"onhost": {tcp: []int{22}, hook: "systemctl start ssh.service"},
}

// flakeNix makes every folder of systems/ a host of the same name whose
// toplevel is that folder, copied by a derivation: a local?root store
// builds inside its root, where only what is in the store exists, so the
// builder is Debian's static busybox, taken into the store with the flake.
const flakeNix = `{
  outputs = { self }: {
    nixosConfigurations = builtins.mapAttrs (name: _: {
      config = {
        keystone = builtins.fromJSON (builtins.readFile (./hosts + "/${name}.json"));
        networking.hostName = name;
        system.build.toplevel = derivation {
          name = "nixos-system-${name}";
          system = "x86_64-linux";
          builder = "${./tools}/busybox";
          args = [ "sh" "-c" "${./tools}/busybox cp -r ${./systems + "/${name}"} $out" ];
        };
      };
    }) (builtins.readDir ./systems);
  };
}
`

// world is the test's flake, its local store and the hosts it reaches.
type world struct {
	flake  string
	key    string
	signer ssh.Signer
}

func newWorld(t testing.TB) *world {
	t.Helper()
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Fatalf("busybox is not installed (apt-get install busybox-static): %v", err)
	}
	t.Setenv("NIX_REMOTE", "local?root="+t.TempDir())
	t.Setenv("NIX_CONFIG", "build-users-group =\nsubstituters =\nexperimental-features = nix-command flakes")
	t.Setenv("HOME", t.TempDir())
	signer, key := testhost.ClientKey(t)
	w := &world{flake: t.TempDir(), key: key, signer: signer}
	mustWrite(t, filepath.Join(w.flake, "flake.nix"), flakeNix, 0o644)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(w.flake, "tools/busybox"), string(bb), 0o755)
	for name, s := range systems {
		dir := filepath.Join(w.flake, "systems", name)
		mustWrite(t, filepath.Join(dir, "bin/switch-to-configuration"), switchToConfiguration, 0o755)
		mustWrite(t, filepath.Join(dir, "nixos-version"), "25.11-"+name+"\n", 0o644)
		mustWrite(t, filepath.Join(dir, "etc/nftables.conf"), testhost.Ruleset(s.tcp), 0o644)
		mustWrite(t, filepath.Join(dir, "hook"), s.hook+"\n", 0o644)
		mustWrite(t, filepath.Join(dir, "exit-code"), fmt.Sprintln(s.exit), 0o644)
		if s.bootExit != 0 {
			mustWrite(t, filepath.Join(dir, "boot-exit-code"), fmt.Sprintln(s.bootExit), 0o644)
		}
		if s.inhibitors != "" {
			mustWrite(t, filepath.Join(dir, "switch-inhibitors"), s.inhibitors+"\n", 0o644)
		}
	}
	return w
}

func mustWrite(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// aim makes system the flake's host of that name, reached at h with its
// key pinned, as deploy leaves a host.
func (w *world) aim(t testing.TB, system string, h *testhost.Host) {
	t.Helper()
	w.write(t, system, w.config(system, h.Name, h.Addr, h.Port, "sshd.service", "nftables.service"), h.HostKey)
}

// config is the keystone config of system reached at addr:port, whose
// hostname is hostname and whose expectations name services.
func (w *world) config(system, hostname, addr string, port int, services ...string) map[string]any {
	buildOn := "local"
	if system == "onhost" {
		buildOn = "remote"
	}
	return map[string]any{"deploy": map[string]any{"targetHost": addr, "targetUser": "root", "sshPort": port, "buildOn": buildOn},
		"verify": map[string]any{"expectations": map[string]any{
			"hostname": hostname,
			"services": services,
			"firewall": map[string]any{"enable": true, "backend": "nftables", "tcp": []int{22}, "udp": []int{5353}},
			"sshd":     map[string]any{"ports": []int{22}, "permitRootLogin": "prohibit-password"},
		}}}
}

// write makes k system's keystone config, and key its pinned host key.
func (w *world) write(t testing.TB, system string, k map[string]any, key ssh.PublicKey) {
	t.Helper()
	data, _ := json.Marshal(k)
	mustWrite(t, filepath.Join(w.flake, "hosts", system+".json"), string(data), 0o644)
	mustWrite(t, filepath.Join(w.flake, "vms", system, fleet.PinnedKeyFile), string(ssh.MarshalAuthorizedKey(key)), 0o644)
}

func (w *world) hosts(t testing.TB, names ...string) []fleet.Host {
	t.Helper()
	hs, err := fleet.Load(context.Background(), fleet.Options{Flake: w.flake, Names: names, Identities: []string{w.key}, Drift: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h.Err != nil {
			t.Fatalf("%s: %v", h.Name, h.Err)
		}
	}
	return hs
}

// install puts system on h as a deploy would leave it: in the store, the
// profile's first generation, activated.
func (w *world) install(t testing.TB, h *testhost.Host, system string) string {
	t.Helper()
	w.aim(t, system, h)
	return w.installWith(t, system, "", func(cmd string) (string, error) { return h.Run(t, "sh", "-c", cmd) })
}

// installWith copies system, already aimed at its host, there and makes
// it the profile's generation, activated; run runs a shell command there.
// then runs after the activation.
func (w *world) installWith(t testing.TB, system, then string, run func(string) (string, error)) string {
	t.Helper()
	host := w.hosts(t, system)[0]
	p, err := buildLocal(context.Background(), &host, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := copyClosure(context.Background(), &host, p, nil); err != nil {
		t.Fatal(err)
	}
	if out, err := run("mkdir -p /etc/nix && printf 'build-users-group =\\nsandbox = false\\n' >/etc/nix/nix.conf && nix-env -p /nix/var/nix/profiles/system --set " + p + " && " + p + "/bin/switch-to-configuration test" + then); err != nil {
		t.Fatalf("install %s: %v\n%s", system, err, out)
	}
	return p
}

// state is what a switch may change on h, to compare before and after.
func state(t *testing.T, h *testhost.Host) string {
	t.Helper()
	out, err := h.Run(t, "sh", "-c", `readlink /run/current-system; ls -l /nix/var/nix/profiles | grep -o 'system.*'; cat /boot/keystone-default 2>/dev/null;
nft list ruleset | grep dport; ls /nix/store; systemctl is-active ssh.service; ls -R /run/keystone 2>/dev/null; true`)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func current(t *testing.T, h *testhost.Host) string {
	t.Helper()
	out, err := h.Run(t, "readlink", "/run/current-system")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// ui is the test's person at the terminal: it says yes.
type ui struct {
	t      *testing.T
	mu     sync.Mutex
	b      bytes.Buffer
	onLine func(string) // sees each write
}

func (u *ui) Write(p []byte) (int, error) {
	if u.onLine != nil {
		u.onLine(string(p))
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.b.Write(p)
}
func (u *ui) Warn(msg string)              { fmt.Fprintln(u, "warning: "+msg) }
func (u *ui) Ask(q string) (string, error) { fmt.Fprintln(u, q+"yes"); return "yes\n", nil }
func (u *ui) String() string               { u.mu.Lock(); defer u.mu.Unlock(); return u.b.String() }
func newUI(t *testing.T) *ui               { return &ui{t: t} }
func opts(confirm time.Duration) Options {
	return Options{Confirm: confirm, Parallel: 1, Timeout: 20 * time.Second, ScanPorts: []int{22, 8080}}
}

func run(t *testing.T, w *world, o Options, names ...string) ([]Result, *ui) {
	t.Helper()
	u := newUI(t)
	start := time.Now()
	results, err := Run(context.Background(), w.hosts(t, names...), o, u)
	var b strings.Builder
	WriteTable(&b, results)
	t.Logf("switch %s in %v: err %v\n%s\n%s", strings.Join(names, " "), time.Since(start).Round(time.Millisecond), err, u, b.String())
	// The CLI exits with the worst status of the errors (cmd's report).
	got := exit.Code(err)
	if errs, ok := err.(interface{ Unwrap() []error }); ok {
		got = exit.Worst(errs.Unwrap())
	}
	if want := Status(results); got != want {
		t.Errorf("the errors say exit %d, the results %d", got, want)
	}
	return results, u
}

// stderrUI is the helper's terminal: its output goes to the test.
type stderrUI struct{}

func (stderrUI) Write(p []byte) (int, error) { return os.Stderr.Write(p) }
func (stderrUI) Warn(msg string)             { fmt.Fprintln(os.Stderr, "warning: "+msg) }
func (stderrUI) Ask(string) (string, error)  { return "", errors.New("no terminal") }

// helperEnv makes the test binary a keystone switch of one host (see
// TestMain), so that a test can SIGKILL it.
const helperEnv = "KEYSTONE_SWITCH_HELPER"

// realHome is HOME before a test set its own.
var realHome = os.Getenv("HOME")

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		var h struct {
			Flake, Key, Name string
			Confirm          time.Duration
		}
		json.Unmarshal([]byte(spec), &h)
		hs, err := fleet.Load(context.Background(), fleet.Options{Flake: h.Flake, Names: []string{h.Name}, Identities: []string{h.Key}, Drift: true})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		results, _ := Run(context.Background(), hs, opts(h.Confirm), stderrUI{})
		os.Exit(results[0].ExitCode)
	}
	os.Exit(m.Run())
}

// TestSwitch runs the cases on one Debian host with Debian's Nix, each
// starting from what the one before left: real builds, a real nix copy
// over SSH into the host's store, the supervisor under the host's systemd.
func TestSwitch(t *testing.T) {
	testhost.RequireRoot(t)
	w := newWorld(t)
	h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-switch", AuthorizedKeys: []ssh.PublicKey{w.signer.PublicKey()}, ExtraPackages: hostPackages})
	for name := range systems {
		w.aim(t, name, h)
	}
	base := w.install(t, h, "base")
	sys := func(name string) string { return w.hosts(t, name)[0].Config.System }

	t.Run("nix copy trusts only the pin", func(t *testing.T) {
		host := w.hosts(t, "good")[0]
		other, _ := testhost.GenerateKey(t)
		host.HostKeys.Pinned = other.PublicKey()
		err := copyClosure(context.Background(), &host, base, nil)
		if err == nil || !strings.Contains(err.Error(), "Host key verification failed") {
			t.Errorf("nix copy to a host whose key is not the pin: %v", err)
		}
	})

	t.Run("bad input: one line, nothing changed", func(t *testing.T) {
		before := state(t, h)
		pin := filepath.Join(w.flake, "vms", "good", fleet.PinnedKeyFile)
		saved, _ := os.ReadFile(pin)
		os.Remove(pin)
		defer os.WriteFile(pin, saved, 0o644)
		hs, err := fleet.Load(context.Background(), fleet.Options{Flake: w.flake, Names: []string{"mail", "good"}, Identities: []string{w.key}, Drift: true,
			KnownHosts: filepath.Join(t.TempDir(), "known_hosts")})
		if err != nil {
			t.Fatal(err)
		}
		o := opts(time.Minute)
		o.Yes = true
		for i, want := range []string{"does not provide attribute 'nixosConfigurations.mail'", "no pinned host key in " + pin} {
			results, err := Run(context.Background(), hs[i:i+1], o, newUI(t))
			if r := results[0]; r.Outcome != Refused || r.ExitCode != ExitRefused || !strings.Contains(r.Reason, want) || exit.Code(err) != ExitRefused {
				t.Errorf("%s: %+v, want refused with %q", hs[i].Name, r, want)
			}
		}
		if after := state(t, h); after != before {
			t.Errorf("the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("dry-run changes nothing", func(t *testing.T) {
		before := state(t, h)
		results, u := run(t, w, Options{DryRun: true, Confirm: time.Minute, Parallel: 1, Timeout: 20 * time.Second}, "good")
		if r := results[0]; r.Outcome != Planned || r.ExitCode != 0 || r.Err != nil {
			t.Fatalf("dry run: %+v", r)
		}
		if !strings.Contains(u.String(), base+" -> "+sys("good")) || !strings.Contains(u.String(), "copy 1 of 1 paths") {
			t.Errorf("the plan does not show the change:\n%s", u)
		}
		if after := state(t, h); after != before {
			t.Errorf("the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("good switch", func(t *testing.T) {
		results, _ := run(t, w, opts(time.Minute), "good")
		r := results[0]
		if r.Outcome != Switched || r.ExitCode != 0 || r.Err != nil || r.Verify == nil || r.Verify.ExitCode() != 0 {
			t.Fatalf("good: %+v", r)
		}
		if r.Verify.Status("system") != verify.Pass {
			t.Errorf("verify did not check the new system is running: %+v", r.Verify.Results)
		}
		out, _ := h.Run(t, "sh", "-c", "readlink /run/current-system; readlink -f /nix/var/nix/profiles/system; cat /boot/keystone-default")
		want := strings.Repeat(sys("good")+"\n", 3)
		if out != want {
			t.Errorf("after a good switch the running, profile and boot systems are\n%s, want\n%s", out, want)
		}
	})
	good := sys("good")

	t.Run("verify fails: port 8080", func(t *testing.T) {
		results, _ := run(t, w, opts(time.Minute), "web")
		r := results[0]
		if r.Outcome != RolledBack || r.ExitCode != ExitVerifyFailed || !strings.Contains(r.Reason, "firewall") {
			t.Fatalf("web: %+v", r)
		}
		if r.Verify == nil || r.Verify.Status("firewall") != verify.Fail {
			t.Errorf("the firewall check did not fail: %+v", r.Verify)
		}
		checkBackOn(t, w, h, good)
	})

	t.Run("activation exits 4", func(t *testing.T) {
		results, _ := run(t, w, opts(time.Minute), "exit4")
		r := results[0]
		if r.Outcome != RolledBack || r.ExitCode != ExitActivation || !strings.Contains(r.Reason, "exited 4") || r.Verify != nil {
			t.Fatalf("exit4: %+v", r)
		}
		if !strings.Contains(strings.Join(r.Journal, "\n"), "rolled back to "+good) {
			t.Errorf("the journal does not show the rollback: %q", r.Journal)
		}
		checkBackOn(t, w, h, good)
	})

	t.Run("boot entry fails after a PASS: rolled back, profile restored", func(t *testing.T) {
		results, _ := run(t, w, opts(time.Minute), "bootfail")
		r := results[0]
		if r.Outcome != RolledBack || r.ExitCode != ExitActivation || !strings.Contains(r.Reason, "switch-to-configuration boot exited 1") ||
			r.Verify == nil || r.Verify.ExitCode() != 0 {
			t.Fatalf("bootfail: %+v", r)
		}
		checkBackOn(t, w, h, good)
	})

	t.Run("sshd stopped: the host rolls back alone", func(t *testing.T) {
		confirm := 8 * time.Second
		start := time.Now()
		results, _ := run(t, w, opts(confirm), "nossh")
		r := results[0]
		if r.Outcome != RolledBack || r.ExitCode != ExitVerifyFailed || !strings.Contains(r.Reason, "no verdict within 8s") {
			t.Fatalf("nossh: %+v", r)
		}
		if took := time.Since(start); took > confirm+40*time.Second {
			t.Errorf("the rollback took %v", took)
		}
		checkBackOn(t, w, h, good)
	})

	t.Run("stale NixOS switch lock", func(t *testing.T) {
		if out, err := h.Run(t, "systemd-run", "--unit=stale-stc", "flock", "/run/nixos/switch-to-configuration.lock", "sleep", "600"); err != nil {
			t.Fatal(err, out)
		}
		defer h.Run(t, "systemctl", "stop", "stale-stc")
		waitFor(t, func() bool {
			out, _ := h.Run(t, "sh", "-c", "flock -n /run/nixos/switch-to-configuration.lock true || echo held")
			return strings.Contains(out, "held")
		})
		before := state(t, h)
		results, _ := run(t, w, opts(time.Minute), "good2")
		r := results[0]
		if r.Outcome != Refused || r.ExitCode != ExitRefused || !strings.Contains(r.Reason, "switch-to-configuration.lock is held by pid") {
			t.Fatalf("good2 with the lock held: %+v", r)
		}
		if after := state(t, h); after != before {
			t.Errorf("the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("keystone killed after activation; a second switch refused", func(t *testing.T) {
		confirm := 10 * time.Second
		spec, _ := json.Marshal(map[string]any{"Flake": w.flake, "Key": w.key, "Name": "good2", "Confirm": confirm})
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+string(spec))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Frozen once the supervisor started, keystone cannot give a
		// verdict before the activation is done; then it is killed.
		grep := func(states string) func() bool {
			return func() bool {
				o, _ := h.Run(t, "sh", "-c", "cat /run/keystone/switch/*/state 2>/dev/null | grep -E '"+states+"'")
				return strings.TrimSpace(o) != ""
			}
		}
		waitFor(t, grep("activating|waiting"))
		cmd.Process.Signal(syscall.SIGSTOP)
		waitFor(t, grep("waiting"))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if strings.Contains(out.String(), "activated; verifying") {
			t.Fatalf("keystone got to verify before it was stopped:\n%s", out.String())
		}

		results, _ := run(t, w, opts(time.Minute), "good")
		if r := results[0]; r.Outcome != Refused || r.ExitCode != ExitRefused || !strings.Contains(r.Reason, "another keystone switch is running") {
			t.Errorf("a second switch: %+v", r)
		}
		waitFor(t, func() bool {
			o, _ := h.Run(t, "sh", "-c", "cat /run/keystone/switch/*/state | sort | uniq -c")
			return !strings.Contains(o, "waiting") && !strings.Contains(o, "activating") && !strings.Contains(o, "rolling-back")
		})
		o, _ := h.Run(t, "sh", "-c", "grep -h . /run/keystone/switch/*/reason")
		if !strings.Contains(o, "no verdict within 10s") {
			t.Errorf("the supervisor's reasons: %q", o)
		}
		checkBackOn(t, w, h, good)
	})

	t.Run("interrupted while verifying: rolled back at once", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		u := newUI(t)
		u.onLine = func(l string) {
			if strings.Contains(l, "activated; verifying") {
				cancel()
			}
		}
		start := time.Now()
		results, err := Run(ctx, w.hosts(t, "good2"), opts(time.Minute), u)
		t.Logf("%v\n%s", err, u)
		r := results[0]
		if r.Outcome != RolledBack || r.ExitCode != ExitVerifyFailed || r.Reason != "keystone was interrupted" {
			t.Fatalf("good2 interrupted: %+v", r)
		}
		if took := time.Since(start); took > 30*time.Second {
			t.Errorf("took %v: the host waited for its deadline", took)
		}
		checkBackOn(t, w, h, good)
	})

	t.Run("built on the host", func(t *testing.T) {
		results, _ := run(t, w, opts(time.Minute), "onhost")
		if r := results[0]; r.Outcome != Switched || r.ExitCode != 0 {
			t.Fatalf("onhost: %+v", r)
		}
		if out, _ := h.Run(t, "readlink", "/run/current-system"); strings.TrimSpace(out) != sys("onhost") {
			t.Errorf("the host runs %s, want %s", out, sys("onhost"))
		}
		// What the host built is not in this machine's store.
		if _, err := nixCmd(context.Background(), nil, nil, "path-info", sys("onhost")); err == nil {
			t.Errorf("%s was built here", sys("onhost"))
		}
	})

	t.Run("fleet of 3, the canary fails", func(t *testing.T) { fleetCanary(t, w, h) })

	t.Run("inhibitors differ: refused live", func(t *testing.T) {
		before := state(t, h)
		results, _ := run(t, w, opts(time.Minute), "inhib")
		if r := results[0]; r.Outcome != Refused || r.ExitCode != ExitRefused || !strings.Contains(r.Reason, "switch inhibitors differ") ||
			!strings.Contains(hint.Of(r.Err), "--boot") {
			t.Fatalf("inhib: %+v", r)
		}
		if after := state(t, h); after != before {
			t.Errorf("the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	// The boot path, with real reboots of the container: a unit stands in
	// for NixOS's stage 2, activating the boot default at every boot.
	if _, err := h.Run(t, "sh", "-c", stage2); err != nil {
		t.Fatal(err)
	}
	bootOpts := opts(time.Minute)
	bootOpts.Boot, bootOpts.RebootWait = true, 2*time.Minute
	t.Run("boot path: verified after a reboot", func(t *testing.T) {
		before := h.BootIdentity(t)
		// A host without keystone.unlock.ssh: the password is not used.
		o := bootOpts
		o.DiskPassword = func(int) ([]byte, error) { return nil, errors.New("the password was asked for") }
		results, u := run(t, w, o, "good2")
		if r := results[0]; r.Outcome != Switched || r.ExitCode != 0 {
			t.Fatalf("good2 --boot: %+v", r)
		}
		if !strings.Contains(u.String(), "its initrd runs no SSH server (keystone.unlock.ssh.enable is false): --disk-password-file is not used") {
			t.Errorf("the plan does not say the password is not used:\n%s", u)
		}
		if h.BootIdentity(t) == before {
			t.Errorf("the host did not reboot")
		}
		checkBackOn(t, w, h, sys("good2"))
	})
	t.Run("boot path: verify fails, rebooted back", func(t *testing.T) {
		before := h.BootIdentity(t)
		results, _ := run(t, w, bootOpts, "web")
		if r := results[0]; r.Outcome != RolledBack || r.ExitCode != ExitVerifyFailed || !strings.Contains(r.Reason, "firewall") {
			t.Fatalf("web --boot: %+v", r)
		}
		if h.BootIdentity(t) == before {
			t.Errorf("the host did not reboot")
		}
		checkBackOn(t, w, h, sys("good2"))
	})

	t.Run("the CLI", func(t *testing.T) { cli(t, w, h, sys("good")) })
}

// cli runs the keystone binary: its exit statuses and its JSON.
func cli(t *testing.T, w *world, h *testhost.Host, good string) {
	bin := filepath.Join(t.TempDir(), "keystone")
	build := exec.Command("go", "build", "-o", bin, "../cmd/keystone")
	build.Env = append(os.Environ(), "HOME="+realHome) // Go's caches are under the real one
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name    string
		code    int
		outcome string
	}{{"good", 0, Switched}, {"web", 1, RolledBack}} {
		cmd := exec.Command(bin, "switch", tc.name, "--flake", w.flake, "-i", w.key, "--ports", "22,8080", "--format", "json")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Run()
		var doc struct {
			ExitCode int `json:"exitCode"`
			Hosts    []struct {
				Host, Outcome string
				ExitCode      int `json:"exitCode"`
			} `json:"hosts"`
		}
		err := json.Unmarshal(stdout.Bytes(), &doc)
		if code := cmd.ProcessState.ExitCode(); code != tc.code || err != nil || doc.ExitCode != tc.code || len(doc.Hosts) != 1 || doc.Hosts[0].Outcome != tc.outcome {
			t.Errorf("keystone switch %s: exit %d, want %d; %v\n%s\n%s", tc.name, code, tc.code, err, stdout.String(), stderr.String())
		}
		if tc.code != 0 && !strings.Contains(stderr.String(), "keystone: error: "+tc.name+": rolled back to "+good) {
			t.Errorf("keystone switch %s: stderr\n%s", tc.name, stderr.String())
		}
	}
	checkBackOn(t, w, h, good)
}

// stage2 installs the stand-in for NixOS's stage 2: at every boot, the
// boot default is activated.
const stage2 = `cat >/etc/systemd/system/keystone-stage2.service <<'EOF'
[Unit]
Description=stand-in for NixOS stage 2: activate the boot default
After=nftables.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'exec "$(cat /boot/keystone-default)/bin/switch-to-configuration" test'
[Install]
WantedBy=multi-user.target
EOF
systemctl enable keystone-stage2.service`

// TestSwitch's last case: a fleet whose canary fails; the other hosts
// are sshd test hosts that a switch, or even its pre-flight, would log in
// to.
func fleetCanary(t *testing.T, w *world, h *testhost.Host) {
	running := current(t, h)
	others := []*testhost.Host{
		testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{w.signer.PublicKey()}}),
		testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{w.signer.PublicKey()}}),
	}
	w.aim(t, "fleetb", others[0])
	w.aim(t, "fleetc", others[1])
	o := opts(time.Minute)
	o.Parallel = 2
	results, _ := run(t, w, o, "web", "fleetb", "fleetc")
	if r := results[0]; r.Outcome != RolledBack || r.ExitCode != ExitVerifyFailed {
		t.Errorf("the canary: %+v", r)
	}
	if Status(results) != ExitVerifyFailed {
		t.Errorf("the fleet's status is %d, want the canary's 1", Status(results))
	}
	for i, r := range results[1:] {
		if r.Outcome != NotStarted || r.ExitCode != ExitRefused {
			t.Errorf("%s after a failed canary: %+v", r.Host, r)
		}
		if log := others[i].Log(); strings.Contains(log, "Accepted publickey") {
			t.Errorf("%s was logged in to:\n%s", r.Host, log)
		}
	}
	checkBackOn(t, w, h, running)
}

// checkBackOn checks h runs old again, as the boot default too, with its
// firewall, and SSH works (Run does not use it).
func checkBackOn(t *testing.T, w *world, h *testhost.Host, old string) {
	t.Helper()
	out, err := h.Run(t, "sh", "-c", "readlink /run/current-system; readlink -f /nix/var/nix/profiles/system; cat /boot/keystone-default; nft list ruleset | grep -c 8080; systemctl is-active ssh.service")
	if want := strings.Repeat(old+"\n", 3) + "0\nactive\n"; out != want {
		t.Errorf("after the rollback:\n%s(%v)\nwant\n%s", out, err, want)
	}
	h.Dial(t, w.signer).Close()
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("gave up waiting")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
