package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/discover"
	"github.com/keystone-nix/keystone/internal/testhost"
)

// announce makes h announce itself as the installer ISO does: it runs the
// ISO's own nix/installer-announce.sh in h (its real host key, lsblk and
// /sys), then starts avahi-daemon again, which on the ISO starts after it.
func announce(t *testing.T, h *testhost.Host) {
	t.Helper()
	script, err := os.ReadFile("../../nix/installer-announce.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.Root, "usr/local/sbin/installer-announce.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := h.Run(t, "sh", "/usr/local/sbin/installer-announce.sh", "0.4.0", "x86_64-linux", "22"); err != nil {
		t.Fatalf("installer-announce.sh on %s: %v %s", h.Name, err, out)
	}
	restartAvahi(t, h)
}

func restartAvahi(t *testing.T, h *testhost.Host) {
	t.Helper()
	if out, err := h.Run(t, "systemctl", "restart", "avahi-daemon.service"); err != nil {
		t.Fatalf("restart avahi on %s: %v %s", h.Name, err, out)
	}
}

// discoverIn runs keystone discover in the segment's client namespace
// until want machines answer (avahi probes its names for a few seconds
// after a start), and returns its exit status, stdout and stderr.
func discoverIn(t *testing.T, seg *testhost.Segment, want int, args ...string) (int, string, string) {
	t.Helper()
	bin, err := exec.LookPath("keystone") // the test binary, as testscript put it on PATH
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cmd := seg.Command(bin, append([]string{"discover", "--format", "json"}, args...)...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := cmd.ProcessState.ExitCode()
		if err != nil && code < 0 {
			t.Fatal(err)
		}
		var found []discover.Installer
		json.Unmarshal([]byte(stdout.String()), &found)
		if len(found) >= want || time.Now().After(deadline) {
			return code, stdout.String(), stderr.String()
		}
		time.Sleep(time.Second)
	}
}

// TestDiscoverOnALink: two Debian hosts announce themselves with the
// installer ISO's service file, a third announces only _ssh._tcp; on one
// Ethernet segment with them, discover finds exactly the two, with their
// host keys' fingerprints, and --disks lists their disks over SSH,
// accepting only the announced key. All traffic stays on the segment.
func TestDiscoverOnALink(t *testing.T) {
	testhost.RequireRoot(t)
	signer, keyFile := testhost.ClientKey(t)
	keys := []ssh.PublicKey{signer.PublicKey()}
	seg := testhost.NewSegment(t)
	var hosts []*testhost.Host
	addrs := map[string]string{}
	for _, name := range []string{"ks-inst-a", "ks-inst-b", "ks-ssh-only"} {
		h := testhost.Debian(t, testhost.DebianOptions{Hostname: name, AuthorizedKeys: keys})
		addrs[name] = seg.Join(t, h)
		hosts = append(hosts, h)
	}
	announce(t, hosts[0])
	announce(t, hosts[1])
	sshService := `<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group><name replace-wildcards="yes">%h</name>
<service><type>_ssh._tcp</type><port>22</port></service></service-group>
`
	if err := os.WriteFile(filepath.Join(hosts[2].Root, "etc/avahi/services/ssh.service"), []byte(sshService), 0o644); err != nil {
		t.Fatal(err)
	}
	restartAvahi(t, hosts[2])

	code, stdout, stderr := discoverIn(t, seg, 2)
	var found []discover.Installer
	if err := json.Unmarshal([]byte(stdout), &found); code != 0 || err != nil {
		t.Fatalf("discover: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	byFP := map[string]discover.Installer{}
	for _, m := range found {
		byFP[m.Fingerprint] = m
	}
	if len(found) != 2 || len(byFP) != 2 {
		t.Fatalf("found %d installers, want 2:\n%s", len(found), stdout)
	}
	firmware := "bios"
	if _, err := os.Stat("/sys/firmware/efi"); err == nil {
		firmware = "uefi" // the containers see this machine's /sys
	}
	for _, h := range hosts[:2] {
		m, ok := byFP[ssh.FingerprintSHA256(h.HostKey)]
		if !ok {
			t.Errorf("%s (%s) not found:\n%s", h.Name, ssh.FingerprintSHA256(h.HostKey), stdout)
			continue
		}
		if !strings.HasPrefix(m.Name, "installer-") || m.Host != h.Name+".local" || m.Port != 22 ||
			!contains(m.Addresses, addrs[h.Name]) || m.Firmware != firmware || m.System != "x86_64-linux" ||
			m.Version != "0.4.0" || m.Disks == nil || len(m.Problems) != 0 || strings.Join(m.Links, ",") != "eth0" {
			t.Errorf("%s: %+v", h.Name, m)
		}
	}
	if strings.Contains(stdout, "ks-ssh-only") {
		t.Errorf("the host announcing only _ssh._tcp was listed:\n%s", stdout)
	}

	// --disks: read-only, over SSH, with the announced key only.
	code, stdout, stderr = discoverIn(t, seg, 2, "--disks", "-i", keyFile)
	found = nil
	if err := json.Unmarshal([]byte(stdout), &found); code != 0 || err != nil || len(found) != 2 {
		t.Fatalf("discover --disks: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	for _, m := range found {
		if m.DiskError != "" || len(m.DiskList) == 0 {
			t.Errorf("%s: disks %v, error %q", m.Name, m.DiskList, m.DiskError)
		}
	}

	// The table says what to run next, and that the fingerprint is for
	// comparing with the console.
	bin, _ := exec.LookPath("keystone")
	out, _ := seg.Command(bin, "discover", "--timeout", "3s").Output()
	t.Logf("keystone discover:\n%s", out)
	for _, want := range []string{"FINGERPRINT (compare with the console)", ssh.FingerprintSHA256(hosts[0].HostKey),
		"keystone new-host NAME --target root@" + addrs["ks-inst-a"] + " --disk auto", "keystone deploy NAME"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	// A machine that announces another's fingerprint: discover says so,
	// and --disks does not take the key its sshd shows.
	fp := ssh.FingerprintSHA256(hosts[0].HostKey)
	file := filepath.Join(hosts[1].Root, "etc/avahi/services/keystone-installer.service")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lied := strings.Replace(string(b), ssh.FingerprintSHA256(hosts[1].HostKey), fp, 1)
	if err := os.WriteFile(file, []byte(lied), 0o644); err != nil {
		t.Fatal(err)
	}
	restartAvahi(t, hosts[1])
	time.Sleep(2 * time.Second) // the old TXT record's goodbye, and the new one's probe
	code, stdout, stderr = discoverIn(t, seg, 2, "--disks", "-i", keyFile)
	found = nil
	json.Unmarshal([]byte(stdout), &found)
	t.Logf("discover --disks with a copied fingerprint: exit %d\n%s", code, stderr)
	if code != discover.ExitCannot || !strings.Contains(stderr, "announce one host key ("+fp+")") {
		t.Errorf("a copied fingerprint: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, m := range found {
		if m.Host == hosts[1].Name+".local" && !strings.Contains(m.DiskError, "host key not trusted") {
			t.Errorf("%s, announcing %s's key: disk error %q", m.Name, hosts[0].Name, m.DiskError)
		}
	}
}

// pinned is the fingerprint of the key deploy pinned for web1.
func pinned(t *testing.T, flake string) string {
	b, err := os.ReadFile(filepath.Join(flake, "vms/web1/ssh_host_ed25519_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.FingerprintSHA256(k)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestDiscoverWithoutALink: in a network namespace with loopback only,
// discover says in one line that it has nowhere to ask, and exits 2.
func TestDiscoverWithoutALink(t *testing.T) {
	testhost.RequireRoot(t)
	bin, err := exec.LookPath("keystone")
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	cmd := exec.Command("unshare", "--net", bin, "discover")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 2 || stdout.Len() != 0 ||
		stderr.String() != "keystone: error: no network interface to ask for installers on: lo is loopback\n"+
			"keystone: hint: connect this machine to the installers' network (discover asks only on the local link)\n" {
		t.Errorf("exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
}

// TestDiscoverNewHostDeployVerify is the loop a physical machine goes
// through, each step run as the user runs it, from a client on the
// machine's link: discover finds the installer; new-host renders it with
// the address discover printed; deploy installs it there (the stand-in
// nixos-anywhere; config.keystone as nix eval would print it for the
// rendered host, as --config) and verifies it; verify passes, mdns too.
func TestDiscoverNewHostDeployVerify(t *testing.T) {
	testhost.RequireRoot(t)
	signer, key := testhost.ClientKey(t)
	seg := testhost.NewSegment(t)
	h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-loop", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	testhost.AsInstaller(t, h)
	disk := testhost.AttachDisk(t, h, 20<<30)
	seg.Join(t, h)
	announce(t, h)

	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "nixos-anywhere"), []byte(testhost.NixosAnywhere), 0o755); err != nil {
		t.Fatal(err)
	}
	argv := filepath.Join(t.TempDir(), "argv")
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv("STANDIN_ARGV", argv)
	t.Setenv("HOME", t.TempDir()) // known_hosts and ~/.ssh are the test's
	keystoneBin, err := exec.LookPath("keystone")
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string) {
		t.Helper()
		cmd := seg.Command(keystoneBin, args...)
		out, _ := cmd.CombinedOutput()
		t.Logf("keystone %s: exit %d\n%s", strings.Join(args, " "), cmd.ProcessState.ExitCode(), out)
		return cmd.ProcessState.ExitCode(), string(out)
	}

	// 1. discover
	code, stdout, stderr := discoverIn(t, seg, 1)
	var found []discover.Installer
	if err := json.Unmarshal([]byte(stdout), &found); code != 0 || err != nil || len(found) != 1 {
		t.Fatalf("discover: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	if found[0].Fingerprint != ssh.FingerprintSHA256(h.HostKey) {
		t.Fatalf("announced %s, the host's key is %s", found[0].Fingerprint, ssh.FingerprintSHA256(h.HostKey))
	}
	target, ok := found[0].Target()
	if !ok {
		t.Fatalf("no target in %+v", found[0])
	}

	// 2. new-host, at the address discover found.
	flake := t.TempDir()
	pub := filepath.Join(t.TempDir(), "me.pub")
	os.WriteFile(pub, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644)
	if code, out := run("new-host", "web1", "--vm", "--key", pub, "--target", target.String(), "--dir", filepath.Join(flake, "vms")); code != 0 {
		t.Fatalf("new-host: exit %d\n%s", code, out)
	}
	rendered, err := os.ReadFile(filepath.Join(flake, "vms/web1/configuration.nix"))
	if err != nil || !strings.Contains(string(rendered), `"`+target.Host+`"`) {
		t.Fatalf("configuration.nix does not name %s: %v\n%s", target.Host, err, rendered)
	}

	// 3. deploy: config.keystone as nix eval prints it for that host,
	// with the stand-in's disk, and the verify at its end.
	expect := map[string]any{
		"hostname": h.Name,
		"services": []string{"sshd.service", "avahi-daemon.service", "nftables.service"},
		"firewall": map[string]any{"enable": true, "backend": "nftables", "tcp": []int{22}, "udp": []int{5353}},
		"sshd":     map[string]any{"ports": []int{22}, "permitRootLogin": "prohibit-password"},
		"mounts":   []string{"/"},
		"mdns":     map[string]any{"publish": true},
	}
	cfg, _ := json.Marshal(map[string]any{"vm": true, "deploy": map[string]any{
		"targetHost": target.Host, "targetUser": "root", "sshPort": target.Port, "buildOn": "auto",
		"disks": []string{disk}, "partitionSizes": map[string][]string{disk: {"1M", "1G", "100%"}}, "diskSecret": true,
	}, "verify": map[string]any{"expectations": expect}})
	cfgFile := filepath.Join(t.TempDir(), "keystone.json")
	os.WriteFile(cfgFile, cfg, 0o644)
	expectJSON, _ := json.Marshal(expect)
	expectFile := filepath.Join(t.TempDir(), "expect.json")
	os.WriteFile(expectFile, expectJSON, 0o644)
	mdnsPass := regexp.MustCompile(`mdns\W+PASS`)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("correct horse battery"), 0o600)
	code, out := run("deploy", "web1", "--config", cfgFile, "--flake", flake, "-i", key, "--disk-password-file", pw, "--yes", "--wait", "60s")
	if code != 0 || !strings.Contains(out, "is up with its new system") || !mdnsPass.MatchString(out) {
		t.Fatalf("deploy: exit %d", code)
	}
	args, _ := os.ReadFile(argv)
	if !strings.Contains(string(args), "root@"+target.Host) {
		t.Errorf("nixos-anywhere was not pointed at the discovered address: %s", args)
	}

	// 4. verify, with the key deploy pinned (the expectations and the
	// target given, as nix eval would give them).
	code, out = run("verify", "web1", "--expect", expectFile, "--target", target.String(), "--flake", flake, "-i", key)
	if code != 0 || !mdnsPass.MatchString(out) || !strings.Contains(out, "host key "+pinned(t, flake)) {
		t.Errorf("verify: exit %d", code)
	}
}
