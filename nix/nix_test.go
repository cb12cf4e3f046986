// Package nix_test checks the flake's Nix glue offline with Debian's Nix:
// every file parses, mkHosts and the expectations function evaluate with
// fake inputs, and flake.lock matches flake.nix.
package nix_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/generate"
	"github.com/keystone-nix/keystone/internal/nixtest"
	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/lint"
	"github.com/keystone-nix/keystone/templates"
)

var update = flag.Bool("update", false, "rewrite testdata/expectations/*.json")

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "flake.nix")); err != nil {
		testhost.SkipInNixBuild(t, "the flake's Nix files are not in the package's source")
		t.Fatal(err)
	}
	return root
}

func TestEveryNixFileParses(t *testing.T) {
	root := repoRoot(t)
	n := 0
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".nix") {
			nixtest.Parse(t, p)
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("parsed only %d .nix files; the walk is broken", n)
	}
}

func evalJSON(t *testing.T, expr string, v any) {
	t.Helper()
	out, err := nixtest.Run(t, "--eval", "--strict", "--json", "--expr", expr)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

func TestMkHosts(t *testing.T) {
	vms := t.TempDir()
	for _, f := range []string{
		"web1/configuration.nix",
		"db1/configuration.nix",
		"db1/disk-config.nix",
		"db1/facter.json",
		"empty/README",                    // no configuration.nix: not a host
		".web2.new-123/configuration.nix", // new-host's half-written folder
	} {
		p := filepath.Join(vms, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("{ }"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(vms, "configuration.nix"), []byte("{ }"), 0o644) // a file, not a folder

	expr := fmt.Sprintf(`(import %s/nix/lib.nix).mkHosts {
		nixosSystem = args: {
			# a function module is shown by what it defines with and without hardware.facter
			modules = map (m: if builtins.isFunction m
				then toString (m { options.hardware.facter = { }; }).config.hardware.facter.reportPath
					+ " | " + builtins.head (m { options.hardware = { }; }).config.warnings
				else toString m) args.modules;
			special = args.specialArgs;
		};
		dir = %s;
		modules = [ "disko" "keystone" ];
		specialArgs = { x = 1; };
	}`, repoRoot(t), vms)
	var got map[string]struct {
		Modules []string       `json:"modules"`
		Special map[string]int `json:"special"`
	}
	evalJSON(t, expr, &got)
	if len(got) != 2 {
		t.Fatalf("mkHosts made %d hosts, want web1 and db1: %v", len(got), got)
	}
	facter := filepath.Join(vms, "db1", "facter.json")
	for name, extra := range map[string][]string{
		"web1": nil,
		"db1":  {facter + " | " + facter + " is not used: this nixpkgs has no hardware.facter (nixos-25.11 has)"},
	} {
		want := append([]string{"disko", "keystone", filepath.Join(vms, name, "configuration.nix")}, extra...)
		if !reflect.DeepEqual(got[name].Modules, want) || got[name].Special["x"] != 1 {
			t.Errorf("%s: modules %q special %v, want %q", name, got[name].Modules, got[name].Special, want)
		}
	}

	var none map[string]any
	evalJSON(t, fmt.Sprintf(`(import %s/nix/lib.nix).mkHosts { nixosSystem = x: x; dir = %s/nope; }`, repoRoot(t), vms), &none)
	if len(none) != 0 {
		t.Errorf("a missing vms folder gave hosts: %v", none)
	}
}

// fakeConfig is the part of a NixOS config the expectations function reads,
// with the defaults of a keystone.server host.
func fakeConfig() map[string]any {
	return map[string]any{
		"networking": map[string]any{
			"hostName": "test-server",
			"firewall": map[string]any{
				"enable":               true,
				"allowedTCPPorts":      []int{22},
				"allowedUDPPorts":      []int{5353},
				"allowedTCPPortRanges": []any{},
				"allowedUDPPortRanges": []any{},
			},
			"nftables": map[string]any{"enable": false},
		},
		"services": map[string]any{
			"openssh": map[string]any{
				"enable": true,
				"ports":  []int{22},
				"settings": map[string]any{
					"PermitRootLogin":              "prohibit-password",
					"PasswordAuthentication":       false,
					"KbdInteractiveAuthentication": false,
				},
			},
			"avahi":    map[string]any{"enable": true, "publish": map[string]any{"enable": true, "addresses": true}},
			"resolved": map[string]any{"enable": true},
		},
		"fileSystems": map[string]any{
			"/":     map[string]any{"mountPoint": "/", "device": "rpool/crypt/root", "fsType": "zfs", "options": []string{"zfsutil"}},
			"/nix":  map[string]any{"mountPoint": "/nix", "device": "rpool/crypt/nix", "fsType": "zfs", "options": []string{"zfsutil"}},
			"/boot": map[string]any{"mountPoint": "/boot", "device": "/dev/disk/by-partlabel/disk-main-ESP", "fsType": "vfat", "options": []string{"umask=0077"}},
		},
		"boot": map[string]any{"initrd": map[string]any{"luks": map[string]any{"devices": map[string]any{}}}},
		"disko": map[string]any{"devices": map[string]any{"zpool": map[string]any{
			"rpool": map[string]any{"rootFsOptions": map[string]any{"mountpoint": "none"}, "datasets": map[string]any{
				// disko v1.12.0 lib/types/zpool.nix (config.datasets."__root",
				// line 432) adds the pool's own dataset to every pool.
				"__root":     map[string]any{"_name": "rpool", "options": map[string]any{"mountpoint": "none"}},
				"crypt":      map[string]any{"options": map[string]any{"encryption": "aes-256-gcm", "mountpoint": "none"}},
				"crypt/root": map[string]any{"options": map[string]any{}},
				"crypt/nix":  map[string]any{"options": map[string]any{}},
				"plain":      map[string]any{"options": map[string]any{"encryption": "off"}},
			}},
		}}},
	}
}

// set puts v at the dotted path in m.
func set(m map[string]any, path string, v any) {
	keys := strings.Split(path, ".")
	for _, k := range keys[:len(keys)-1] {
		m = m[k].(map[string]any)
	}
	if v == nil {
		delete(m, keys[len(keys)-1])
		return
	}
	m[keys[len(keys)-1]] = v
}

func TestExpectations(t *testing.T) {
	// nixos-25.11's nixos/modules/services/networking/firewall.nix declares
	// networking.firewall.backend (enum iptables, nftables, firewalld); the
	// expectations read it only where `options` has it.
	// These cases take their boot settings, and the LUKS devices disko
	// derives (testdata/disko-config.nix), from a rendered layout.
	layouts := map[string]string{"zfs-credstore": "zfs-encrypted-vm", "luks-layout": "luks-vm", "zfs-raidz1-layout": "zfs-encrypted-raidz1", "zfs-stripe-layout": "zfs-encrypted-stripe"}
	withBackend := map[string]any{"networking": map[string]any{"firewall": map[string]any{"backend": map[string]any{}}}}
	for _, tc := range []struct {
		name    string
		changes map[string]any // dotted path -> value; nil deletes
		options map[string]any // the module system's options, for `options ? …`
	}{
		{"zfs", nil, nil},
		// The option is there and says iptables, as its default does
		// without firewalld or networking.nftables.enable.
		{"backend-option-iptables", map[string]any{"networking.firewall.backend": "iptables"}, withBackend},
		{"firewalld", map[string]any{
			"networking.firewall.backend":         "firewalld",
			"networking.firewall.allowedTCPPorts": []int{22, 443},
		}, withBackend},
		// Only networking.nftables.enable decides without the option, and
		// a stray backend value in config is not read.
		{"nftables-no-backend-option", map[string]any{"networking.nftables.enable": true, "networking.firewall.backend": "firewalld"}, nil},
		// services.openssh.startWhenNeeded: sshd.nix declares
		// systemd.sockets.sshd, so the unit to expect is sshd.socket.
		{"ssh-socket", map[string]any{"services.openssh.startWhenNeeded": true}, nil},
		// keystone.unlock.ssh (nix/modules/unlock.nix) on: the initrd's
		// port and key for the exposure and initrd checks.
		{"unlock", map[string]any{"keystone": map[string]any{"unlock": map[string]any{"ssh": map[string]any{
			"enable": true, "port": 2222, "hostKey": "/etc/ssh/initrd_ssh_host_ed25519_key"}}}}, nil},
		{"luks", map[string]any{
			"disko": map[string]any{"devices": map[string]any{"disk": map[string]any{}}},
			"fileSystems": map[string]any{
				"/":     map[string]any{"mountPoint": "/", "device": "/dev/mapper/crypted", "fsType": "ext4"},
				"/boot": map[string]any{"mountPoint": "/boot", "device": "/dev/disk/by-partlabel/disk-main-ESP", "fsType": "vfat"},
			},
			"boot.initrd.luks.devices": map[string]any{"crypted": map[string]any{"device": "/dev/disk/by-partlabel/disk-main-luks"}},
		}, nil},
		// The rendered layouts: the credstore is a LUKS volume meant for
		// the TPM2 but closed before switch-root, so not an open device.
		{"zfs-credstore", nil, nil},
		// Pools over several disks: the topology and disk count, and an
		// ESP of each disk among the mounts (disko's fileSystems entry for
		// each, nofail).
		{"zfs-raidz1-layout", map[string]any{"fileSystems./boot1": map[string]any{"mountPoint": "/boot1", "device": "/dev/disk/by-partlabel/disk-disk1-ESP", "fsType": "vfat", "options": []string{"umask=0077", "nofail"}},
			"fileSystems./boot2": map[string]any{"mountPoint": "/boot2", "device": "/dev/disk/by-partlabel/disk-disk2-ESP", "fsType": "vfat", "options": []string{"umask=0077", "nofail"}}}, nil},
		{"zfs-stripe-layout", nil, nil},
		{"luks-layout", map[string]any{
			"disko": map[string]any{"devices": map[string]any{"disk": map[string]any{}}},
			"fileSystems": map[string]any{
				"/":     map[string]any{"mountPoint": "/", "device": "/dev/mapper/crypted", "fsType": "ext4"},
				"/boot": map[string]any{"mountPoint": "/boot", "device": "/dev/disk/by-partlabel/disk-main-ESP", "fsType": "vfat"},
			},
		}, nil},
		// The same credstore under the scripted initrd: nothing closes it.
		{"credstore-scripted-initrd", map[string]any{
			"boot.initrd.luks.devices": map[string]any{"credstore": map[string]any{
				"device": "/dev/zvol/rpool/credstore", "crypttabExtraOpts": []string{"tpm2-device=auto"},
			}},
			"boot.initrd.systemd": map[string]any{"enable": false, "services": map[string]any{
				"systemd-cryptsetup@credstore": map[string]any{"conflicts": []string{"initrd-switch-root.target"}},
			}},
		}, nil},
		{"nftables", map[string]any{
			"networking.nftables.enable":                       true,
			"networking.firewall.allowedTCPPorts":              []int{22, 443},
			"networking.firewall.allowedTCPPortRanges":         []any{map[string]int{"from": 8000, "to": 8002}},
			"networking.firewall.allowedUDPPortRanges":         []any{map[string]int{"from": 5353, "to": 5354}},
			"fileSystems./nix.options":                         []string{"noauto"},
			"services.openssh.settings.PermitRootLogin":        "no",
			"services.openssh.settings.PasswordAuthentication": true,
		}, nil},
		{"avahi-off", map[string]any{
			"services.avahi.enable":               false,
			"networking.firewall.allowedUDPPorts": []int{},
		}, nil},
		{"no-publish", map[string]any{"services.avahi.publish.addresses": false}, nil},
		{"firewall-off", map[string]any{"networking.firewall.enable": false, "services.resolved.enable": false}, nil},
		{"no-sshd", map[string]any{"services.openssh.enable": false}, nil},
		// As disko evaluates them: its "__root" pseudo-dataset carries the
		// pool's rootFsOptions (lib/types/zpool.nix, line 432 at v1.12.0).
		{"zfs-pool-encrypted", map[string]any{
			"disko.devices.zpool.tank": map[string]any{
				"rootFsOptions": map[string]any{"encryption": "on", "keyformat": "passphrase"},
				"datasets": map[string]any{
					"__root": map[string]any{"_name": "tank", "options": map[string]any{"encryption": "on", "keyformat": "passphrase"}},
					"data":   map[string]any{"options": map[string]any{}},
				},
			},
			"disko.devices.zpool.scratch": map[string]any{
				"rootFsOptions": map[string]any{"encryption": "off"},
				"datasets":      map[string]any{"__root": map[string]any{"_name": "scratch", "options": map[string]any{"encryption": "off"}}},
			},
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fakeConfig()
			for path, v := range tc.changes {
				set(cfg, path, v)
			}
			if layout := layouts[tc.name]; layout != "" {
				l := evalLayout(t, filepath.Join(repoRoot(t), "generate/testdata/golden", layout, "disk-config.nix"))
				boot, _ := l.Config["boot"].(map[string]any)
				initrd, _ := boot["initrd"].(map[string]any)
				initrd["luks"] = map[string]any{"devices": l.Luks}
				cfg["boot"] = boot
				if strings.HasPrefix(layout, "zfs") {
					cfg["disko"] = l.Disko
				}
			}
			data, _ := json.Marshal(cfg)
			in := filepath.Join(t.TempDir(), "config.json")
			os.WriteFile(in, data, 0o644)
			opts, _ := json.Marshal(tc.options)
			if tc.options == nil {
				opts = []byte("{}")
			}
			optsFile := filepath.Join(t.TempDir(), "options.json")
			os.WriteFile(optsFile, opts, 0o644)
			out, err := nixtest.Run(t, "--eval", "--strict", "--json", "--expr",
				fmt.Sprintf(`import %s/nix/expectations.nix { config = builtins.fromJSON (builtins.readFile %s); options = builtins.fromJSON (builtins.readFile %s); }`, repoRoot(t), in, optsFile))
			if err != nil {
				t.Fatal(err)
			}
			var pretty any
			json.Unmarshal([]byte(out), &pretty)
			got, _ := json.MarshalIndent(pretty, "", "  ")
			got = append(got, '\n')
			golden := filepath.Join("testdata", "expectations", tc.name+".json")
			if *update {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				os.WriteFile(golden, got, 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./nix -update)", err)
			}
			if string(got) != string(want) {
				t.Errorf("expectations differ from %s:\n%s", golden, got)
			}
		})
	}
}

// nixFlake runs Debian's nix with flakes on a throwaway store, offline.
func nixFlake(t *testing.T, args ...string) (string, error) {
	t.Helper()
	store := t.TempDir()
	cmd := exec.Command("nix", append([]string{
		"--extra-experimental-features", "nix-command flakes",
		"--store", "local?root=" + store, "--offline",
	}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "NIX_CONFIG=substituters =")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestFlakeLockMatchesInputs(t *testing.T) {
	root := repoRoot(t)
	// A copy holding only flake.nix and flake.lock: the store gets only those.
	dir := t.TempDir()
	for _, f := range []string{"flake.nix", "flake.lock"} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), data, 0o644)
	}
	out, err := nixFlake(t, "flake", "metadata", "--no-update-lock-file", "path:"+dir)
	if err != nil {
		t.Fatalf("flake.lock does not match flake.nix: %v\n%s", err, out)
	}
	// disko is v1.12.0: v1.13.0 calls nixpkgs' nixos/lib/qemu-common.nix
	// with { lib, stdenv }, which nixos-25.11's file (it takes { lib, pkgs })
	// rejects, so every system.build.installTest fails (disko issue 1203).
	for _, rev := range []string{"8fd9daa3db09ced9700431c5b7ad0e8ba199b575", "ff442f5d1425feb86344c028298548024f21256d",
		"7f8d7438f5870eb167abaf2c39eea3d2302019d1", "11707dc2f618dd54ca8739b309ec4fc024de578b", "da67096a3b9bf56a91d16901293e51ba5b49a27e"} {
		if !strings.Contains(out, rev) {
			t.Errorf("flake metadata does not show pinned rev %s:\n%s", rev, out)
		}
	}

	// The same check notices a flake.nix that moved away from its lock.
	flake, _ := os.ReadFile(filepath.Join(dir, "flake.nix"))
	moved := strings.Replace(string(flake), "disko/v1.12.0", "disko/v1.13.0", 1)
	if moved == string(flake) {
		t.Fatal("flake.nix does not ask for disko/v1.12.0")
	}
	os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(moved), 0o644)
	if out, err := nixFlake(t, "flake", "metadata", "--no-update-lock-file", "path:"+dir); err == nil {
		t.Errorf("a stale flake.lock passed:\n%s", out)
	}

	// A wrong narHash fails on a user's first `nix run`, and nothing here
	// can fetch to notice: these are the NAR hash and commit time of `git
	// archive ff442f5d` of nix-community/disko (tag v1.12.0).
	var lock struct {
		Nodes map[string]struct {
			Locked struct {
				Rev          string `json:"rev"`
				NarHash      string `json:"narHash"`
				LastModified int64  `json:"lastModified"`
			} `json:"locked"`
			Original struct {
				Ref string `json:"ref"`
			} `json:"original"`
		} `json:"nodes"`
	}
	data, _ := os.ReadFile(filepath.Join(root, "flake.lock"))
	if err := json.Unmarshal(data, &lock); err != nil {
		t.Fatal(err)
	}
	d := lock.Nodes["disko"]
	if d.Original.Ref != "v1.12.0" || d.Locked.Rev != "ff442f5d1425feb86344c028298548024f21256d" ||
		d.Locked.NarHash != "sha256-eDoSOhxGEm2PykZFa/x9QG5eTH0MJdiJ9aR00VAofXE=" || d.Locked.LastModified != 1746728054 {
		t.Errorf("flake.lock's disko node is %+v, want v1.12.0 at ff442f5d", d)
	}
}

// TestFleetApplyMatchesLib keeps what `keystone check` lints from its one
// nix eval equal to lib.fleetInfo, which the flake's lint check uses.
func TestFleetApplyMatchesLib(t *testing.T) {
	host := `{ config = {
		networking = { hostName = "web1"; hostId = "1a2b3c4d"; };
		users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA x" ];
		keystone = { vm = true; deploy = { targetHost = null; targetUser = "root"; sshPort = 22; disks = [ "/dev/vda" ]; buildOn = "auto"; }; };
	}; }`
	var raw map[string]any
	evalJSON(t, fmt.Sprintf(`builtins.mapAttrs (_: (import %s/nix/lib.nix).fleetInfo) { web1 = %s; }`, repoRoot(t), host), &raw)
	data, _ := json.Marshal(raw)
	viaLib, err := lint.ReadFleet(bytes.NewReader(data))
	if err != nil || len(raw["web1"].(map[string]any)) != 8 {
		t.Fatalf("lib.fleetInfo gives %v: %v", raw, err)
	}
	var evaluated map[string]fleet.Evaluated
	evalJSON(t, fmt.Sprintf(`(%s) { web1 = %s; }`, fleet.Apply(nil), host), &evaluated)
	if evaluated["web1"].OK == nil {
		t.Fatalf("fleet.Apply gives %+v", evaluated)
	}
	viaFleet, findings := lint.FromFleet([]fleet.Host{{Name: "web1", Config: *evaluated["web1"].OK, Evaluated: true}})
	if !reflect.DeepEqual(viaLib, viaFleet) || findings != nil {
		t.Errorf("lib.fleetInfo gives %+v\nfleet.Apply gives %+v %v", viaLib, viaFleet, findings)
	}
}

// TestTestServerIsRendered keeps vms/test-server what new-host renders, so
// the committed host follows the templates.
func TestTestServerIsRendered(t *testing.T) {
	h, _, err := generate.NewHost(generate.Options{
		Name: "test-server", VM: true, Keys: []string{filepath.Join(repoRoot(t), "examples/demo/id_ed25519.pub")},
	})
	if err != nil {
		t.Fatal(err)
	}
	files, err := generate.Render(templates.FS, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		p := filepath.Join(repoRoot(t), "vms/test-server", f.Name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(f.Data) {
			t.Errorf("%s is not what new-host renders; rerun: keystone new-host test-server --vm --key examples/demo/id_ed25519.pub --force", p)
		}
	}
}

// TestFlakeOutputs evaluates flake.nix's outputs with fake inputs: the
// outputs a user runs exist for both systems and are wired as intended.
func TestFlakeOutputs(t *testing.T) {
	root := repoRoot(t)
	var got struct {
		Apps     map[string]map[string]string `json:"apps"`
		Deploy   string                       `json:"deploy"`
		Switch   string                       `json:"switch"`
		Checks   map[string][]string          `json:"checks"`
		Packages map[string][]string          `json:"packages"`
		Hosts    []string                     `json:"hosts"`
		Modules  []string                     `json:"modules"`
		Module   string                       `json:"module"`
		Lint     string                       `json:"lint"`
		Disko    map[string]diskoTest         `json:"disko"`
		Version  string                       `json:"version"`
		Shell    []string                     `json:"shell"`
		Lib      []string                     `json:"lib"`
		Fmt      map[string]string            `json:"fmt"`
	}
	evalJSON(t, fmt.Sprintf(`let o = import %[1]s/nix/testdata/fake-inputs.nix { root = %[1]s; }; in {
		apps = builtins.mapAttrs (_: builtins.mapAttrs (_: a: a.meta.description)) o.apps;
		deploy = o.apps.x86_64-linux.deploy.program;
		switch = o.apps.x86_64-linux.switch.program;
		checks = builtins.mapAttrs (_: builtins.attrNames) o.checks;
		packages = builtins.mapAttrs (_: builtins.attrNames) o.packages;
		hosts = builtins.attrNames o.nixosConfigurations;
		modules = o.nixosConfigurations.test-server.modules;
		module = toString o.nixosModules.default;
		lint = o.checks.x86_64-linux.lint;
		disko = { inherit (o.checks.x86_64-linux) test-server-disko test-server-tpm; };
		version = o.packages.x86_64-linux.keystone.version;
		shell = o.devShells.x86_64-linux.default.shell;
		lib = builtins.attrNames o.lib;
		fmt = o.formatter;
	}`, root), &got)

	for _, system := range []string{"x86_64-linux", "aarch64-linux"} {
		apps := got.Apps[system]
		for _, app := range []string{"default", "new-host", "deploy", "verify", "check", "unlock", "switch"} {
			if apps[app] == "" {
				t.Errorf("%s: apps.%s missing or without meta.description", system, app)
			}
		}
		if !reflect.DeepEqual(got.Packages[system], []string{"default", "installer-iso", "keystone"}) {
			t.Errorf("%s: packages %v", system, got.Packages[system])
		}
	}
	if !strings.Contains(got.Deploy, `/bin/keystone deploy "$@"`) {
		t.Errorf("apps.deploy runs %q, want keystone deploy", got.Deploy)
	}
	if !strings.Contains(got.Switch, `/bin/keystone switch "$@"`) {
		t.Errorf("apps.switch runs %q, want keystone switch", got.Switch)
	}
	wantChecks := []string{"eval-test-server", "keystone", "lint", "test-server-disko", "test-server-tpm", "vm-test"}
	if !reflect.DeepEqual(got.Checks["x86_64-linux"], wantChecks) {
		t.Errorf("x86_64 checks %v, want %v", got.Checks["x86_64-linux"], wantChecks)
	}
	// test-server is an x86_64 host: no eval or disko check on aarch64.
	if !reflect.DeepEqual(got.Checks["aarch64-linux"], []string{"keystone", "lint", "vm-test"}) {
		t.Errorf("aarch64 checks %v", got.Checks["aarch64-linux"])
	}
	if !reflect.DeepEqual(got.Hosts, []string{"test-server"}) {
		t.Errorf("nixosConfigurations %v, want the hosts in vms/", got.Hosts)
	}
	wantModules := []string{"disko-module", filepath.Join(root, "nix/modules"), filepath.Join(root, "vms/test-server/configuration.nix")}
	if !reflect.DeepEqual(got.Modules, wantModules) {
		t.Errorf("test-server modules %q, want %q", got.Modules, wantModules)
	}
	if !strings.Contains(got.Lint, "keystone check --fleet") || !strings.Contains(got.Lint, `"hostId":"e627eb83"`) {
		t.Errorf("lint check: %s", got.Lint)
	}
	checkDiskoTests(t, got.Disko)
	// `nix fmt` runs the formatter with no arguments: it must format the tree.
	for _, system := range []string{"x86_64-linux", "aarch64-linux"} {
		if got.Fmt[system] != "nixfmt-tree" {
			t.Errorf("%s: formatter is %q, want pkgs.nixfmt-tree", system, got.Fmt[system])
		}
	}
	if got.Version != "abc1234" || !reflect.DeepEqual(got.Lib, []string{"fleetInfo", "hostModules", "installerIso", "mkHosts"}) {
		t.Errorf("version %q, lib %v", got.Version, got.Lib)
	}
}

// TestVMTestScript: nix/vm-test.nix's script is Python, and its second
// verify runs only once the listener it judges is open (the test driver's
// wait_for_open_port, machine/__init__.py), not while it may still start.
func TestVMTestScript(t *testing.T) {
	var script string
	evalJSON(t, fmt.Sprintf(`let
		test = import %s/nix/vm-test.nix {
			pkgs = { testers.runNixOSTest = t: t; writeText = name: text: "/nix/store/fake-${name}"; python3 = "/fake/python3"; openssh = "openssh"; };
			keystone = "keystone"; hostModules = [ ];
		};
	in test.testScript { nodes.server.keystone.verify.expectations = { hostname = "server"; }; }`, repoRoot(t)), &script)
	listener := strings.Index(script, "http.server 8080")
	wait := strings.Index(script, "server.wait_for_open_port(8080)")
	verify := strings.LastIndex(script, "keystone verify")
	if listener < 0 || wait < listener || verify < wait {
		t.Errorf("the second verify does not wait for port 8080 to open (listener at %d, wait at %d, verify at %d):\n%s", listener, wait, verify, script)
	}
	py := filepath.Join(t.TempDir(), "test.py")
	os.WriteFile(py, []byte(script), 0o644)
	if out, err := exec.Command("python3", "-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())", py).CombinedOutput(); err != nil {
		t.Errorf("the test script is not Python: %v\n%s", err, out)
	}
}

// diskoTest is what flake.nix asks of disko's installTest for one check:
// disko v1.12.0 module.nix's disko.tests.{extraConfig,bootCommands,extraChecks}.
type diskoTest struct {
	InstallTest bool `json:"installTest"`
	Extra       int  `json:"extra"`
	Tests       struct {
		ExtraConfig struct {
			Boot struct {
				KernelParams any `json:"kernelParams"`
			} `json:"boot"`
		} `json:"extraConfig"`
		BootCommands string `json:"bootCommands"`
		ExtraChecks  string `json:"extraChecks"`
	} `json:"tests"`
}

// checkDiskoTests: both boots of test-server stop at the credstore's
// password prompt and type disko's test password; the TPM2 check enrolls
// and boots again without typing; the test driver's Python parses.
func checkDiskoTests(t *testing.T, tests map[string]diskoTest) {
	t.Helper()
	// lib/tests.nix writes 'secretsecret' to /tmp/secret.key before formatting.
	typed := "wait_for_console_text(\"[Pp]assphrase for disk\")\nmachine.send_console(\"secretsecret\\n\")"
	for _, name := range []string{"test-server-disko", "test-server-tpm"} {
		d, ok := tests[name]
		if !ok || !d.InstallTest || d.Extra != 1 {
			t.Errorf("%s is not test-server's installTest with one extra module: %+v", name, d)
			continue
		}
		// The prompt is on /dev/console, the last console= of the kernel
		// command line: the serial console the driver reads and types on.
		if !strings.Contains(d.Tests.BootCommands, typed) || !reflect.DeepEqual(d.Tests.ExtraConfig.Boot.KernelParams, map[string]any{"after": []any{"console=ttyS0"}}) {
			t.Errorf("%s does not type the password at the serial prompt (kernel params %v):\n%s", name, d.Tests.ExtraConfig.Boot.KernelParams, d.Tests.BootCommands)
		}
		for _, want := range []string{`wait_for_unit("multi-user.target")`, "keystatus rpool/crypt", `fail("cryptsetup status credstore")`} {
			if !strings.Contains(d.Tests.ExtraChecks, want) {
				t.Errorf("%s's checks lack %s", name, want)
			}
		}
		py := filepath.Join(t.TempDir(), "test.py")
		os.WriteFile(py, []byte(d.Tests.BootCommands+"\n"+d.Tests.ExtraChecks), 0o644)
		if out, err := exec.Command("python3", "-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())", py).CombinedOutput(); err != nil {
			t.Errorf("%s: the test script is not Python: %v\n%s", name, err, out)
		}
	}
	tpm := tests["test-server-tpm"].Tests.ExtraChecks
	enroll := "systemd-cryptenroll --tpm2-device=auto --tpm2-pcrs=7 /dev/zvol/rpool/credstore"
	i, j := strings.Index(tpm, enroll), strings.LastIndex(tpm, `boot_with_tpm("tpm_enrolled")`)
	switch {
	case !strings.Contains(tpm, "-device\", \"tpm-tis,tpmdev=tpm0") || !strings.Contains(tpm, "/fake/swtpm/bin/swtpm\", \"socket\", \"--tpm2"):
		t.Errorf("test-server-tpm boots without a swtpm TPM2:\n%s", tpm)
	case i < 0 || j < i:
		t.Errorf("test-server-tpm does not enroll before its last boot:\n%s", tpm)
	case strings.Contains(tpm[j:], "send_console"):
		t.Errorf("test-server-tpm types a password after enrolling: the boot must be unattended")
	case strings.Contains(tpm, "/fake/OVMF_CODE.fd") || !strings.Contains(tpm, "file=/fake/OVMF-tpm/OVMF_CODE.fd") || !strings.Contains(tpm, "file=/fake/OVMF-tpm/OVMF_VARS.fd"):
		t.Errorf("test-server-tpm boots a firmware without TPM support, which measures nothing into PCR 7:\n%s", tpm)
	case !strings.Contains(tpm, "/sys/class/tpm/tpm0/pcr-sha256/7") || strings.Index(tpm, "pcr-sha256/7") > i:
		t.Errorf("test-server-tpm does not check that PCR 7 is measured before it enrolls:\n%s", tpm)
	}
	if strings.Contains(tests["test-server-disko"].Tests.ExtraChecks, "tpm") {
		t.Errorf("test-server-disko must boot without a TPM2")
	}
}

// TestDeployFacts evaluates nix/modules/deploy.nix's read-only facts over
// the disk layouts new-host renders (the golden files), with a stand-in lib.
func TestDeployFacts(t *testing.T) {
	fakeLib := deployFakeLib
	for _, tc := range []struct {
		golden string
		secret bool
		sizes  []string
	}{
		{"zfs-encrypted-vm", true, []string{"1M", "1G", "100%"}},
		{"zfs-encrypted-vm-target", true, []string{"1M", "1G", "4G", "100%"}},
		{"luks-physical", true, []string{"1M", "1G", "100%"}},
		{"ext4-vm", false, []string{"1M", "1G", "100%"}},
		{"zfs-encrypted-aarch64", true, []string{"1G", "1G", "100%"}},
		{"zfs-encrypted-raidz1", true, []string{"1M", "1G", "4G", "100%"}},
	} {
		disk := filepath.Join(repoRoot(t), "generate/testdata/golden", tc.golden, "disk-config.nix")
		var got struct {
			Disks  []string            `json:"disks"`
			Sizes  map[string][]string `json:"sizes"`
			Secret bool                `json:"secret"`
		}
		evalJSON(t, fmt.Sprintf(`let
			m = import %[2]s;
			layout = if builtins.isFunction m then m `+layoutArgs+` else m;
			o = (import %[1]s/nix/modules/deploy.nix { config = { inherit (layout) disko; }; lib = %[3]s; }).options.keystone.deploy;
		in { disks = o.disks.default; sizes = o.partitionSizes.default; secret = o.diskSecret.default; }`, repoRoot(t), disk, fakeLib), &got)
		// Every disk the layout names, each with the same partitions.
		n := 1
		if tc.golden == "zfs-encrypted-raidz1" {
			n = 3
		}
		if len(got.Disks) != n || len(got.Sizes) != n || got.Secret != tc.secret {
			t.Errorf("%s: disks %v, sizes %v, diskSecret %v; want %d disks, %v", tc.golden, got.Disks, got.Sizes, got.Secret, n, tc.secret)
		}
		for _, d := range got.Disks {
			sizes := got.Sizes[d]
			sort.Strings(sizes)
			want := append([]string(nil), tc.sizes...)
			sort.Strings(want)
			if !reflect.DeepEqual(sizes, want) {
				t.Errorf("%s: %s's partition sizes %v, want %v", tc.golden, d, sizes, want)
			}
		}
	}
}

// TestDeployFactsLegacyTable: disko's legacy msdos table (v1.12.0
// lib/types/table.nix) gives partitions start and end, no size; the host
// still evaluates, its sizes unknown.
func TestDeployFactsLegacyTable(t *testing.T) {
	var got map[string][]string
	deployOptions(t, `{ devices.disk.main = { device = "/dev/sda"; content = { type = "table"; format = "msdos";
		partitions = [ { name = "boot"; start = "1M"; end = "512M"; } { name = "root"; start = "512M"; end = "100%"; } ]; }; }; }`,
		`{ }`, `o.partitionSizes.default`, &got)
	if want := []string{"unknown", "unknown"}; !reflect.DeepEqual(got["/dev/sda"], want) {
		t.Errorf("partition sizes %v, want %v", got, want)
	}
}

// deployFakeLib stands in for nixpkgs' lib in deploy.nix: mkOption returns
// its argument, so a test reads .default and .defaultText.
const deployFakeLib = `{ mkOption = x: x; literalExpression = x: { literalExpression = x; }; literalMD = x: { literalMD = x; };
	mkDefault = v: { priority = 1000; value = v; };
	types = { nullOr = x: x; str = "str"; bool = "bool"; port = "port"; listOf = x: x; attrsOf = x: x; enum = x: x; }; }`

// deployOptions evaluates deploy.nix's options over a disko layout and a
// keystone.deploy config, written as Nix.
func deployOptions(t *testing.T, disko, deploy, expr string, v any) {
	t.Helper()
	evalJSON(t, fmt.Sprintf(`let
		m = import %s/nix/modules/deploy.nix { config = { disko = %s; keystone.deploy = %s; }; lib = %s; };
		o = m.options.keystone.deploy;
	in %s`, repoRoot(t), disko, deploy, deployFakeLib, expr), v)
}

// TestSSHPorts: sshd listens where deploy connects (services.openssh.ports,
// which sshd.nix's openFirewall also opens: networking.firewall.
// allowedTCPPorts = lib.optionals cfg.openFirewall cfg.ports), except behind
// a forwarded port, where it stays on 22; and the port after kexec follows.
func TestSSHPorts(t *testing.T) {
	for _, tc := range []struct {
		deploy    string
		ports     []int
		postKexec *int
	}{
		{`{ sshPort = 22; sshPortForwarded = false; }`, []int{22}, nil},
		{`{ sshPort = 2222; sshPortForwarded = false; }`, []int{2222}, nil},
		{`{ sshPort = 2222; sshPortForwarded = true; }`, []int{22}, ptr(2222)},
	} {
		var got struct {
			Ports struct {
				Priority int   `json:"priority"`
				Value    []int `json:"value"`
			} `json:"ports"`
			PostKexec *int `json:"postKexec"`
			Text      any  `json:"text"`
		}
		deployOptions(t, `{ devices = { }; }`, tc.deploy, `{
			ports = m.config.services.openssh.ports;
			postKexec = o.postKexecSSHPort.default;
			text = o.postKexecSSHPort.defaultText;
		}`, &got)
		if got.Ports.Priority != 1000 || !reflect.DeepEqual(got.Ports.Value, tc.ports) {
			t.Errorf("%s: services.openssh.ports %+v, want mkDefault %v", tc.deploy, got.Ports, tc.ports)
		}
		if !reflect.DeepEqual(got.PostKexec, tc.postKexec) || got.Text == nil {
			t.Errorf("%s: postKexecSSHPort default %v (defaultText %v), want %v", tc.deploy, got.PostKexec, got.Text, tc.postKexec)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestDiskSecretLayouts: diskSecret finds /tmp/secret.key wherever disko
// reads it. The layouts are shaped as disko v1.12.0 takes them: the top
// level has disk, mdadm, lvm_vg and zpool (lib/default.nix, toplevel, line
// 611); an LV's content is lib/types/lvm_vg.nix's lvs.<name>.content (line
// 85), an array's is lib/types/mdadm.nix's content (line 39), a zvol's is
// lib/types/zfs_volume.nix's content; luks formats with settings.keyFile,
// else passwordFile, else the deprecated keyFile (lib/types/luks.nix, lines
// 11-26); the msdos table's partitions are a list (lib/types/table.nix,
// line 40).
func TestDiskSecretLayouts(t *testing.T) {
	luks := func(attrs string) string {
		return `{ type = "luks"; name = "crypted"; ` + attrs + ` content = { type = "filesystem"; format = "ext4"; mountpoint = "/"; }; }`
	}
	gpt := func(content string) string {
		return `{ type = "disk"; device = "/dev/vda"; content = { type = "gpt"; partitions = {
			ESP = { size = "1G"; type = "EF00"; content = { type = "filesystem"; format = "vfat"; mountpoint = "/boot"; }; };
			main = { size = "100%"; content = ` + content + `; }; }; }; }`
	}
	for _, tc := range []struct {
		name, devices string
		want          bool
	}{
		{"luks in a partition, passwordFile", `{ disk.main = ` + gpt(luks(`passwordFile = "/tmp/secret.key";`)) + `; }`, true},
		{"luks in a partition, settings.keyFile", `{ disk.main = ` + gpt(luks(`settings.keyFile = "/tmp/secret.key";`)) + `; }`, true},
		{"luks in a partition, deprecated keyFile", `{ disk.main = ` + gpt(luks(`keyFile = "/tmp/secret.key";`)) + `; }`, true},
		{"luks with another key file", `{ disk.main = ` + gpt(luks(`settings.keyFile = "/etc/disk.key";`)) + `; }`, false},
		{"luks asking for a password", `{ disk.main = ` + gpt(luks(``)) + `; }`, false},
		{"luks on LVM", `{
			disk.main = ` + gpt(`{ type = "lvm_pv"; vg = "pool"; }`) + `;
			lvm_vg.pool = { type = "lvm_vg"; lvs.root = { size = "100%"; content = ` + luks(`settings.keyFile = "/tmp/secret.key";`) + `; }; };
		}`, true},
		{"luks on mdraid", `{
			disk.main = ` + gpt(`{ type = "mdraid"; name = "md0"; }`) + `;
			mdadm.md0 = { type = "mdadm"; level = 1; content = { type = "gpt"; partitions.p = { size = "100%"; content = ` + luks(`passwordFile = "/tmp/secret.key";`) + `; }; }; };
		}`, true},
		{"luks in luks", `{ disk.main = ` + gpt(`{ type = "luks"; name = "outer"; settings.keyFile = "/etc/outer.key"; content = `+luks(`passwordFile = "/tmp/secret.key";`)+`; }`) + `; }`, true},
		{"luks on a whole disk", `{ disk.main = { type = "disk"; device = "/dev/vda"; content = ` + luks(`passwordFile = "/tmp/secret.key";`) + `; }; }`, true},
		{"luks in an msdos table", `{ disk.main = { type = "disk"; device = "/dev/vda"; content = { type = "table"; format = "msdos";
			partitions = [ { name = "root"; start = "1M"; end = "100%"; content = ` + luks(`passwordFile = "/tmp/secret.key";`) + `; } ]; }; }; }`, true},
		{"luks in a zvol", `{
			disk.main = ` + gpt(`{ type = "zfs"; pool = "tank"; }`) + `;
			zpool.tank = { type = "zpool"; datasets.vol = { type = "zfs_volume"; size = "10G"; content = ` + luks(`passwordFile = "/tmp/secret.key";`) + `; }; };
		}`, true},
		{"zfs pool keylocation", `{
			disk.main = ` + gpt(`{ type = "zfs"; pool = "tank"; }`) + `;
			zpool.tank = { type = "zpool"; rootFsOptions.keylocation = "file:///tmp/secret.key"; datasets = { }; };
		}`, true},
		{"plain ext4", `{ disk.main = ` + gpt(`{ type = "filesystem"; format = "ext4"; mountpoint = "/"; }`) + `; }`, false},
	} {
		var got bool
		deployOptions(t, `{ devices = `+tc.devices+`; }`, `{ }`, `o.diskSecret.default`, &got)
		if got != tc.want {
			t.Errorf("%s: diskSecret %v, want %v", tc.name, got, tc.want)
		}
	}

	// The manual renders defaultText instead of evaluating a default that
	// reads the disko layout.
	var texts map[string]bool
	deployOptions(t, `{ devices = { }; }`, `{ }`, `builtins.mapAttrs (_: o: o ? defaultText) { inherit (o) disks partitionSizes diskSecret; }`, &texts)
	for name, ok := range texts {
		if !ok {
			t.Errorf("keystone.deploy.%s has no defaultText", name)
		}
	}
}

// TestServerSysctls: every sysctl of the server profile sits above
// mkDefault (1000), where nixpkgs and profiles/hardened.nix put theirs: two
// definitions at one priority would not evaluate.
func TestServerSysctls(t *testing.T) {
	fakeLib := serverFakeLib
	var got map[string]struct {
		Priority int `json:"priority"`
	}
	evalJSON(t, fmt.Sprintf(`(import %s/nix/modules/server.nix {
		config.keystone.server.enable = true; options = { }; lib = %s; pkgs = { vim = 1; git = 1; htop = 1; tmux = 1; lsof = 1; };
	}).config.boot.kernel.sysctl`, repoRoot(t), fakeLib), &got)
	if len(got) == 0 {
		t.Fatal("the server profile sets no sysctl")
	}
	for key, v := range got {
		if v.Priority == 0 || v.Priority >= 1000 {
			t.Errorf("%s has priority %d, want under 1000 (mkDefault)", key, v.Priority)
		}
	}
}

// serverFakeLib stands in for nixpkgs' lib in server.nix. mkIf passes its
// content through (the tests enable the profile); mkDefault and mkOverride
// keep the priority as lib/modules.nix's do (mkDefault = mkOverride 1000);
// optionalAttrs is lib/attrsets.nix's.
const serverFakeLib = `{
	mkIf = c: v: v; mkDefault = v: { priority = 1000; value = v; }; mkOverride = p: v: { priority = p; value = v; };
	mkEnableOption = x: x; mapAttrs = builtins.mapAttrs; optionalAttrs = cond: as: if cond then as else { };
}`

// TestServerResolved: resolved's mDNS and LLMNR are off through
// services.resolved.settings where nixpkgs declares it (a newer
// resolved.nix asserts settings.Resolve.MulticastDNS == false next to
// avahi: `cfg.settings.Resolve.MulticastDNS != false ->
// !config.services.avahi.enable`), and by the drop-in where it does not
// (nixos-25.11, which has extraConfig).
func TestServerResolved(t *testing.T) {
	for _, tc := range []struct {
		name, options string
		settings      bool
	}{
		{"25.11", `{ services.resolved = { enable = { }; extraConfig = { }; }; }`, false},
		{"with settings", `{ services.resolved = { enable = { }; settings = { }; }; }`, true},
	} {
		var got struct {
			Resolved map[string]any `json:"resolved"`
			Etc      map[string]any `json:"etc"`
		}
		evalJSON(t, fmt.Sprintf(`let c = (import %s/nix/modules/server.nix {
			config.keystone.server.enable = true; options = %s; lib = %s; pkgs = { vim = 1; git = 1; htop = 1; tmux = 1; lsof = 1; };
		}).config; in { resolved = c.services.resolved; etc = c.environment.etc; }`, repoRoot(t), tc.options, serverFakeLib), &got)
		_, dropIn := got.Etc["systemd/resolved.conf.d/keystone-mdns.conf"]
		off := map[string]any{"priority": float64(1000), "value": false}
		want := map[string]any{"MulticastDNS": off, "LLMNR": off}
		settings, _ := got.Resolved["settings"].(map[string]any)
		switch {
		case tc.settings && (dropIn || !reflect.DeepEqual(settings["Resolve"], want)):
			t.Errorf("%s: resolved %v, etc %v; want settings.Resolve %v and no drop-in", tc.name, got.Resolved, got.Etc, want)
		case !tc.settings && (!dropIn || settings != nil):
			t.Errorf("%s: resolved %v, etc %v; want the drop-in and no settings", tc.name, got.Resolved, got.Etc)
		}
	}
}
