package deploy

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/target"
	"github.com/keystone-nix/keystone/internal/testhost"
)

// anywhereSSH plays the part of nixos-anywhere that decides where ssh
// and nix go, with the real ssh and nix, line for line as
// src/nixos-anywhere.sh (1.13.0; 1.12.0 is the same here) does it:
//   - sshArgs starts as line 69 makes it (with BatchMode for the test,
//     and the -i key used directly instead of its copy);
//   - parseArgs: -p appends "-p PORT", --ssh-option appends "-o OPT";
//   - main: sshHost="${sshConnection//*@/}" (line 975), ssh -G;
//   - runSsh: ssh "$sshTtyParam" "${sshArgs[@]}" "$sshConnection" (line 480);
//   - nixosInstall: nix copy --to "ssh://$sshConnection?remote-store=…" with
//     NIX_SSHOPTS="${sshArgs[*]}" (lines 861, 488; here `nix store ping`);
//   - runKexec: the value after -p becomes $postKexecSshPort and the user
//     root (lines 813-826).
//
// It runs in a mount namespace where /root is $KS_HOME, so ssh reads the
// test's ~/.ssh/config (ssh takes ~ from the passwd entry, not $HOME).
const anywhereSSH = `#!/bin/bash
set -euo pipefail
if [ -z "${KS_NS:-}" ]; then
  exec env KS_NS=1 unshare --mount --propagation private sh -c 'mount --bind "$KS_HOME" /root && exec "$0" "$@"' "$0" "$@"
fi
sshArgs=("-o" "IdentitiesOnly=yes" "-o" "UserKnownHostsFile=/dev/null" "-o" "StrictHostKeyChecking=no" "-o" "BatchMode=yes" "-o" "LogLevel=ERROR")
postKexecSshPort=22
while [[ $# -gt 0 ]]; do
  case "$1" in
  -f | --flake) shift ;;
  --target-host) sshConnection=$2; shift ;;
  -i) sshArgs+=("-i" "$2"); shift ;;
  -p | --ssh-port) sshArgs+=("-p" "$2"); shift ;;
  --ssh-option) sshArgs+=("-o" "$2"); shift ;;
  --post-kexec-ssh-port) postKexecSshPort=$2; shift ;;
  *) echo "stand-in: unexpected $1" >&2; exit 2 ;;
  esac
  shift
done
echo "### Uploading install SSH keys ###"
sshUser=$(ssh "${sshArgs[@]}" -G "${sshConnection}" | awk '/^user / { print $2 }')
sshHost="${sshConnection//*@/}"
ssh -T "${sshArgs[@]}" "$sshConnection" 'echo "before kexec: $(hostname) $SSH_CONNECTION"'
echo "### Switching system into kexec ###"
for i in "${!sshArgs[@]}"; do
  if [[ ${sshArgs[i]} == "-p" ]]; then
    sshArgs[i + 1]=$postKexecSshPort
    break
  fi
done
sshConnection="root@${sshHost}"
ssh -T "${sshArgs[@]}" "$sshConnection" 'echo "after kexec: $(hostname) $SSH_CONNECTION"'
echo "### Installing NixOS ###"
NIX_SSHOPTS="${sshArgs[*]}" nix --extra-experimental-features nix-command store ping \
  --store "ssh://$sshConnection?remote-store=local%3Froot=$KS_STORE&compress=true"
echo "### Rebooting ###"
`

// Defects 2, 11 and 14 against a real sshd: the target listens on 2222
// before kexec and on 22 after it (the kexec image's port), over IPv4
// and IPv6, while ~/.ssh/config sends every host elsewhere.
func TestArgvReachesTheCheckedHost(t *testing.T) {
	testhost.RequireRoot(t)
	for _, c := range []string{"ssh", "nix", "unshare"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is not installed (apt-get install openssh-client nix-bin util-linux): %v", c, err)
		}
	}
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, Port: 2222,
		ExtraSSHDConfig: []string{"Port 22"}, OpenTCP: []int{2222, 22}})
	v6 := addIPv6(t, h)

	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	// Loopback and a closed port: where the user's config would have sent it.
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte("Host *\n  HostName 127.0.0.2\n  Port 1\n  User nobody\n"), 0o600)
	bin := t.TempDir()
	program := filepath.Join(bin, "nixos-anywhere")
	os.WriteFile(program, []byte(anywhereSSH), 0o755)
	t.Setenv("KS_HOME", home)

	for _, host := range []string{h.Addr, v6} {
		t.Run(host, func(t *testing.T) {
			t.Setenv("KS_STORE", strings.ReplaceAll(t.TempDir(), "/", "%2F"))
			in := Install{Flake: ".", Name: "web1", Target: target.Target{User: "root", Host: host, Port: 2222}, Identity: key}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var out strings.Builder
			var p Progress
			err := RunInstall(ctx, program, in, &out, "", &p)
			t.Logf("argv %q\n%s", in.Argv(), out.String())
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{
				"before kexec: " + h.Name + " ", " " + host + " 2222\n",
				"after kexec: " + h.Name + " ", " " + host + " 22\n",
				"Store URL: ssh://root@",
			} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q", want)
				}
			}
		})
	}
}

// addIPv6 gives the host and the machine addresses in a /64 of their own
// on the host's veth pair, and returns the host's. The /64 is in
// fd00:254::/32, which a blackhole route keeps on this machine should the
// veth be gone (the machine has an IPv6 default route).
func addIPv6(t *testing.T, h *testhost.Host) string {
	t.Helper()
	if out, err := exec.Command("ip", "-6", "route", "replace", "blackhole", "fd00:254::/32").CombinedOutput(); err != nil {
		t.Fatalf("blackhole route: %v: %s", err, out)
	}
	b := make([]byte, 4)
	rand.Read(b)
	// %x, not hex: the canonical form has no leading zeros, and the
	// host reports its addresses in it.
	prefix := fmt.Sprintf("fd00:254:%x:%x::", int(b[0])<<8|int(b[1]), int(b[2])<<8|int(b[3]))
	veth := h.NS + "-h" // testhost names the machine's end after the namespace
	for _, args := range [][]string{
		{"addr", "add", prefix + "1/64", "dev", veth, "nodad"},
		{"-n", h.NS, "addr", "add", prefix + "2/64", "dev", "eth0", "nodad"},
		// The test host's firewall drops neighbour discovery, which IPv6
		// needs to reach it at all (NixOS's firewall lets it in).
		{"netns", "exec", h.NS, "nft", "insert", "rule", "inet", "nixos-fw", "input",
			"icmpv6", "type", "{", "nd-neighbor-solicit,", "nd-neighbor-advert", "}", "accept"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	// The addresses go with the namespace and the veth pair.
	return prefix + "2"
}

// Gather and ListDisks against the test hosts, which are what a kexec
// install must refuse: containers (Docker for the sshd host, which shares
// this machine's filesystem; systemd-nspawn for Debian) on a kernel without
// kexec, Debian without cpio. Their one disk is this machine's virtio disk
// without a serial, holding /.
func TestGatherOnTestHosts(t *testing.T) {
	testhost.RequireRoot(t)
	signer, _ := testhost.ClientKey(t)
	keys := []ssh.PublicKey{signer.PublicKey()}
	vdaSize := localDiskSize(t, "vda")
	for _, tc := range []struct {
		name      string
		host      func() *testhost.Host
		container string
		missing   []string
		rootDisk  string // the container's / is an overlay
	}{
		{"sshd", func() *testhost.Host { return testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: keys}) }, "docker", []string{"cpio"}, "/dev/vda"},
		{"debian", func() *testhost.Host { return testhost.Debian(t, testhost.DebianOptions{AuthorizedKeys: keys}) }, "systemd-nspawn", []string{"cpio"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := os.Stat("/.dockerenv"); tc.container == "docker" && err != nil {
				t.Fatalf("this test expects the Docker container it was written in: %v", err)
			}
			h := tc.host()
			r := remote.New(h.Dial(t, signer), false, 30*time.Second)
			ctx := context.Background()
			// A 20 GiB loop device, under a name of its own in the target.
			layout, loop := attachDisk(t, h, 20<<30)
			f, err := Gather(ctx, r, []string{layout, "/dev/disk/by-id/nvme-missing"})
			if err != nil {
				t.Fatal(err)
			}
			if !f.Root || f.Via != "" || f.Container != tc.container || strings.Join(f.MissingTools, ",") != strings.Join(tc.missing, ",") ||
				f.KexecLoadDisabled != "" || f.Arch != "x86_64" || f.MemTotal == 0 || strings.Count(f.BootID, "/") != 1 {
				t.Errorf("facts %+v", f)
			}
			if len(f.Disks) != 2 || f.Disks[0].Path != layout || f.Disks[0].Resolved != loop || f.Disks[0].Size != 20<<30 ||
				f.Disks[0].Type != "loop" || f.Disks[0].System || !f.Disks[1].Missing || strings.Join(f.RootDisks, " ") != tc.rootDisk {
				t.Errorf("layout disks %+v, root disks %v, inventory %+v", f.Disks, f.RootDisks, f.Inventory)
			}
			var what []string
			for _, r := range Judge(f, Policy{}) {
				what = append(what, r.What)
			}
			all := strings.Join(what, "\n")
			for _, want := range []string{tc.container + " container, which cannot kexec", "has no kexec", "nvme-missing does not exist"} {
				if !strings.Contains(all, want) {
					t.Errorf("refusals %q lack %q", what, want)
				}
			}
			if strings.Contains(all, "holds the running system") {
				t.Errorf("a kexec target's own disk refused: %q", what)
			}

			// The same disk under a second name, as two by-id links to one
			// kernel disk would be: refused, naming both.
			alias := layout + "-alias"
			if _, err := h.Run(t, "ln", "-s", layout, alias); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { h.Run(t, "rm", "-f", alias) })
			twice, err := Gather(ctx, r, []string{layout, alias})
			if err != nil {
				t.Fatal(err)
			}
			refusals := Judge(twice, Policy{Redundant: true})
			same := fmt.Sprintf("disks %s and %s are the same disk (%s)", layout, alias, loop)
			if len(twice.Disks) != 2 || twice.Disks[1].Resolved != loop || !slices.ContainsFunc(refusals, func(r Refusal) bool { return r.What == same }) {
				t.Errorf("the same disk named twice: disks %+v, refusals %+v; want %q", twice.Disks, refusals, same)
			}

			disks, err := ListDisks(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if len(disks) != 1 || disks[0].Path != "/dev/vda" || disks[0].Stable || disks[0].Size != vdaSize || disks[0].Removable || disks[0].BootMedium ||
				disks[0].System != (tc.rootDisk != "") {
				t.Errorf("disks %+v", disks)
			}
			var b strings.Builder
			WriteDisks(&b, disks)
			if !strings.Contains(b.String(), "(no stable name)  /dev/vda") {
				t.Errorf("table:\n%s", b.String())
			}
			if d, err := ChooseDisk(disks, 5<<30); err != nil || d.Resolved != "/dev/vda" {
				t.Errorf("ChooseDisk: %+v, %v", d, err)
			}
		})
	}
}

// attachDisk makes a sparse loop device and a node for it inside the
// target, and returns the node and the loop device's name.
func attachDisk(t *testing.T, h *testhost.Host, size int64) (node, loop string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop = strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		t.Fatal(err)
	}
	node = fmt.Sprintf("/dev/kstest%d", unix.Minor(st.Rdev))
	if _, err := h.Run(t, "mknod", node, "b", fmt.Sprint(unix.Major(st.Rdev)), fmt.Sprint(unix.Minor(st.Rdev))); err != nil {
		t.Fatal(err)
	}
	// The sshd host shares this machine's /dev.
	t.Cleanup(func() { h.Run(t, "rm", "-f", node) })
	return node, loop
}

// localDiskSize reads a disk's size from this machine's sysfs, which the
// test hosts share.
func localDiskSize(t *testing.T, name string) int64 {
	t.Helper()
	data, err := os.ReadFile("/sys/block/" + name + "/size")
	if err != nil {
		t.Fatalf("this test expects the machine's disk %s: %v", name, err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n * 512
}

// Defect 9 over SSH: a login that is not root (a stand-in id says 1000
// unless doas or sudo ran it) on a host with doas and no sudo gets root
// through `doas -n`, as nixos-anywhere's importFacts picks it; with a sudo
// that wants a password, it does not, even though doas would work.
func TestGatherThroughDoas(t *testing.T) {
	signer, _ := testhost.ClientKey(t)
	for _, tc := range []struct {
		name, via, noRoot string
		sudo              bool
	}{
		{"doas", "doas", "", false},
		{"sudo wants a password", "", "cannot sudo without a password (nixos-anywhere uses sudo where it is installed)", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := exec.LookPath("sudo"); err == nil {
				t.Fatal("this test needs a machine without sudo: the test host shares its filesystem")
			}
			bin := t.TempDir()
			scripts := map[string]string{
				"id":   "#!/bin/sh\nif [ \"$1\" = -u ] && [ -z \"${KS_ROOT:-}\" ]; then echo 1000; else exec /usr/bin/id \"$@\"; fi\n",
				"doas": "#!/bin/sh\n[ \"$1\" = -n ] || exit 1\nshift\nKS_ROOT=1 exec \"$@\"\n",
			}
			if tc.sudo {
				scripts["sudo"] = "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n"
			}
			for name, body := range scripts {
				os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755)
			}
			h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
				ExtraSSHDConfig: []string{"SetEnv PATH=" + bin + ":/usr/sbin:/usr/bin:/sbin:/bin"}})
			// What the flow makes for a user other than root.
			r := remote.New(h.Dial(t, signer), true, 30*time.Second)
			f, err := Gather(context.Background(), r, nil)
			if err != nil {
				t.Fatal(err)
			}
			if f.Via != tc.via || f.Root != (tc.noRoot == "") || !strings.Contains(f.NoRoot, tc.noRoot) {
				t.Errorf("via %q, root %v, %q", f.Via, f.Root, f.NoRoot)
			}
			if tc.noRoot == "" && (f.Arch != "x86_64" || f.OS["ID"] == "" || len(f.Inventory) == 0) {
				t.Errorf("facts under doas: %+v", f)
			}
		})
	}
}
