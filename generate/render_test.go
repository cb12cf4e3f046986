package generate

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/nixtest"
	"github.com/keystone-nix/keystone/templates"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const (
	demoKey  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6d9Bt6FtzY8O0GiDWS2ZDMEY5LHg6xnZaRBPYgdFzK demo@keystone"
	demoKey2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEDkTVYZ/4K0zm6KmIl6M4d44RMJtC/Lfh/6SQ+tje2l ops@example"
)

// goldenCases is every layout × vm/physical × with/without target, and an
// aarch64 host.
func goldenCases() map[string]Options {
	cases := map[string]Options{}
	for _, layout := range Layouts {
		for _, vm := range []bool{true, false} {
			for _, target := range []string{"", "admin@192.0.2.10:2222"} {
				o := Options{Name: "web1", Layout: layout, VM: vm, Target: target, Keys: []string{demoKey, demoKey2}}
				name := layout + "-physical"
				if vm {
					name = layout + "-vm"
				} else {
					o.Disks = []string{"/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456"}
				}
				if target != "" {
					name += "-target"
					o.Swap = "4G"
				}
				cases[name] = o
			}
		}
	}
	cases["luks-physical-nic"] = Options{Name: "web1", Layout: "luks", Disks: []string{"/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456"}, Keys: []string{demoKey}, InitrdNIC: "igb"}
	cases["zfs-encrypted-aarch64"] = Options{Name: "arm1", System: "aarch64-linux", VM: true, Keys: []string{demoKey}, Swap: "1G"}
	// Pools over several disks: every topology, by default and asked for,
	// x86_64 (GRUB) and aarch64 (systemd-boot), with and without swap.
	disks := func(n int) []string {
		var d []string
		for i := 1; i <= n; i++ {
			d = append(d, fmt.Sprintf("/dev/disk/by-id/ata-WDC_WD40EFZX-68AWUN0_WD-WX%d2D80K1234", i))
		}
		return d
	}
	cases["zfs-encrypted-mirror"] = Options{Name: "web1", Disks: disks(2), Keys: []string{demoKey}}
	cases["zfs-encrypted-mirror-aarch64"] = Options{Name: "arm1", System: "aarch64-linux", Disks: disks(2), Keys: []string{demoKey}, Swap: "2G"}
	cases["zfs-encrypted-raidz1"] = Options{Name: "web1", Disks: disks(3), Keys: []string{demoKey}, Swap: "4G"}
	cases["zfs-encrypted-raidz2"] = Options{Name: "web1", Disks: disks(4), Topology: "raidz2", Keys: []string{demoKey}}
	cases["zfs-encrypted-stripe"] = Options{Name: "web1", Disks: disks(2), Topology: "stripe", Keys: []string{demoKey}}
	cases["zfs-encrypted-mirror-vm"] = Options{Name: "web1", VM: true, Disks: []string{"/dev/vda", "/dev/vdb"}, Topology: "mirror", Keys: []string{demoKey}}
	return cases
}

func TestGolden(t *testing.T) {
	for name, o := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			h, _, err := NewHost(o)
			if err != nil {
				t.Fatal(err)
			}
			files, err := Render(templates.FS, h)
			if err != nil {
				t.Fatal(err)
			}
			entry, err := Entry(templates.FS, h, "vms/web1/configuration.nix")
			if err != nil {
				t.Fatal(err)
			}
			// The entry is a fragment of an attribute set; parse it inside one.
			wrapped := filepath.Join(t.TempDir(), "entry.nix")
			os.WriteFile(wrapped, append(append([]byte("{ nixpkgs, disko, keystone }: {\n"), entry...), "}\n"...), 0o644)
			nixtest.Parse(t, wrapped)
			files = append(files, File{"entry.fragment", entry})
			dir := filepath.Join("testdata", "golden", name)
			for _, f := range files {
				golden := filepath.Join(dir, f.Name)
				if *update {
					if err := os.MkdirAll(dir, 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, f.Data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./generate -run TestGolden -update)", err)
				}
				if string(want) != string(f.Data) {
					t.Errorf("%s differs from %s (run with -update if intended):\n%s", f.Name, golden, f.Data)
				}
				if strings.HasSuffix(golden, ".nix") {
					nixtest.Parse(t, golden)
				}
			}
		})
	}
}

// evaluated is what a rendered host says about itself, read back by Nix.
type evaluated struct {
	Name   string   `json:"name"`
	HostID string   `json:"hostId"`
	System string   `json:"system"`
	Keys   []string `json:"keys"`
	Target *struct {
		Host string `json:"targetHost"`
		User string `json:"targetUser"`
		Port int    `json:"sshPort"`
	} `json:"target"`
	Disks []string `json:"disks"`
	// Users is every users.users entry but root's.
	Users map[string]struct {
		Keys   []string `json:"keys"`
		Normal bool     `json:"isNormalUser"`
		Groups []string `json:"extraGroups"`
	} `json:"users"`
	// SudoAsks is security.sudo.wheelNeedsPassword, null when unset (its
	// NixOS default is true).
	SudoAsks *bool `json:"sudoAsks"`
}

// evalHost writes h's files, evaluates them with Nix and returns what they say.
func evalHost(t *testing.T, h *Host) evaluated {
	t.Helper()
	files, err := Render(templates.FS, h)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "eval") // not t.TempDir: fuzz names hold '#'
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.Name), f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Fully evaluate both files first: no undefined names, no type errors.
	whole := fmt.Sprintf(`[ (import %[1]s/configuration.nix { modulesPath = "/m"; }) (%[2]s) ]`, dir, diskModule(dir+"/disk-config.nix"))
	if _, err := nixtest.Run(t, "--eval", "--strict", "--expr", whole); err != nil {
		t.Fatalf("rendered files do not evaluate: %v\n%s\n%s", err, files[0].Data, files[1].Data)
	}
	expr := fmt.Sprintf(`let c = import %[1]s/configuration.nix { modulesPath = "/m"; }; d = %[2]s; in {
		name = c.networking.hostName; hostId = c.networking.hostId; system = c.nixpkgs.hostPlatform;
		keys = c.users.users.root.openssh.authorizedKeys.keys;
		target = c.keystone.deploy or null;
		disks = map (n: d.disko.devices.disk.${n}.device) ([ "main" ] ++ builtins.filter (n: n != "main") (builtins.attrNames d.disko.devices.disk));
		users = builtins.mapAttrs (_: u: {
			keys = u.openssh.authorizedKeys.keys; isNormalUser = u.isNormalUser or false; extraGroups = u.extraGroups or [ ];
		}) (builtins.removeAttrs c.users.users [ "root" ]);
		sudoAsks = c.security.sudo.wheelNeedsPassword or null;
	}`, dir, diskModule(dir+"/disk-config.nix"))
	out, err := nixtest.Run(t, "--eval", "--strict", "--json", "--expr", expr)
	if err != nil {
		t.Fatalf("%v\n%s", err, files[0].Data)
	}
	var e evaluated
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func checkEvaluated(t *testing.T, h *Host, e evaluated) {
	t.Helper()
	var keys []string
	for _, k := range h.Keys {
		keys = append(keys, k.Line)
	}
	if e.Name != h.Name || e.HostID != h.HostID || e.System != h.System || !reflect.DeepEqual(e.Disks, h.Disks) || !reflect.DeepEqual(e.Keys, keys) {
		t.Errorf("Nix reads back %+v\nwant name %q hostId %q system %q disks %q keys %q", e, h.Name, h.HostID, h.System, h.Disks, keys)
	}
	switch {
	case h.Target == nil && e.Target != nil:
		t.Errorf("keystone.deploy set without a target: %+v", e.Target)
	case h.Target != nil && (e.Target == nil || e.Target.Host != h.Target.Host || e.Target.User != h.Target.User || e.Target.Port != h.Target.Port):
		t.Errorf("keystone.deploy = %+v, want %+v", e.Target, h.Target)
	}
	// A non-root target user must exist after the install, log in with the
	// keys and sudo without a password, or deploy waits for it in vain and
	// verify cannot connect.
	if h.Target == nil || h.Target.User == "root" {
		if len(e.Users) != 0 || e.SudoAsks != nil {
			t.Errorf("users %v and sudo settings for a root target", e.Users)
		}
		return
	}
	u, ok := e.Users[h.Target.User]
	if !ok || len(e.Users) != 1 || !u.Normal || !reflect.DeepEqual(u.Groups, []string{"wheel"}) || !reflect.DeepEqual(u.Keys, keys) {
		t.Errorf("users %+v, want only %q, a normal user in wheel with keys %q", e.Users, h.Target.User, keys)
	}
	if e.SudoAsks == nil || *e.SudoAsks {
		t.Errorf("security.sudo.wheelNeedsPassword is %v, want false for %q", e.SudoAsks, h.Target.User)
	}
}

func TestRenderedHostEvaluates(t *testing.T) {
	k := testKeys(t)
	hostile := []string{
		`command="echo \"${HOME}\" \\ ''x''",no-pty ` + k.ed25519,
		k.ecdsa + ` quote" backslash\ dollar${x} $${y} ''${z} ünï ✓`,
		k.rsa2048 + " tab\there",
	}
	for name, o := range goldenCases() {
		o.Keys = append(o.Keys, hostile...)
		for i := range o.Disks {
			o.Disks[i] = strings.Replace(o.Disks[i], "S64ANS0T123456", `S64"${x}\`, 1)
			o.Disks[i] = strings.Replace(o.Disks[i], "1234", `1"${x}\`, 1)
		}
		t.Run(name, func(t *testing.T) {
			h, _, err := NewHost(o)
			if err != nil {
				t.Fatal(err)
			}
			checkEvaluated(t, h, evalHost(t, h))
		})
	}
}

// FuzzRender renders hosts from fuzzed key comments, disk names and target
// hosts: whatever NewHost accepts must evaluate to exactly what was given.
func FuzzRender(f *testing.F) {
	f.Add("me@laptop", "nvme-X", "192.0.2.1", false)
	f.Add(`"; x = "`, `a"${b}\c`, "[2001:db8::1]:2222", true)
	f.Add("''${x}''", "ata-$$", "web.example:22", false)
	f.Add("tab\tand\rcr", "wwn-0x5", "u@h", true)
	k := testKeys(f)
	f.Fuzz(func(t *testing.T, comment, diskName, target string, vm bool) {
		o := Options{Name: "fuzz", Keys: []string{k.ed25519 + " " + comment}, Disks: []string{"/dev/disk/by-id/" + diskName}, Target: target, VM: vm}
		h, _, err := NewHost(o)
		if err != nil {
			return // refused input: nothing to render
		}
		checkEvaluated(t, h, evalHost(t, h))
	})
}

// diskModule is a Nix expression for the attributes of a rendered layout,
// which is a module function when it needs lib (mkDefault is the identity
// here).
func diskModule(path string) string {
	return fmt.Sprintf(`(let m = import %s; in if builtins.isFunction m then m { lib = { mkDefault = v: v; mkForce = v: v; }; config.disko.rootMountPoint = "/mnt"; pkgs = { util-linux = "/fake/util-linux"; rsync = "/fake/rsync"; }; } else m)`, path)
}
