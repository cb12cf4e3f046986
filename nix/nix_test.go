// Package nix_test checks the flake's Nix glue offline with Debian's Nix:
// every file parses, mkHosts and the expectations function evaluate with
// fake inputs, and flake.lock matches flake.nix.
package nix_test

import (
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

	"github.com/keystone-nix/keystone/generate"
	"github.com/keystone-nix/keystone/internal/check"
	"github.com/keystone-nix/keystone/internal/nixtest"
	"github.com/keystone-nix/keystone/templates"
)

var update = flag.Bool("update", false, "rewrite testdata/expectations/*.json")

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
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
			"rpool": map[string]any{"datasets": map[string]any{
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
	for _, tc := range []struct {
		name    string
		changes map[string]any // dotted path -> value; nil deletes
	}{
		{"zfs", nil},
		{"luks", map[string]any{
			"disko": map[string]any{"devices": map[string]any{"disk": map[string]any{}}},
			"fileSystems": map[string]any{
				"/":     map[string]any{"mountPoint": "/", "device": "/dev/mapper/crypted", "fsType": "ext4"},
				"/boot": map[string]any{"mountPoint": "/boot", "device": "/dev/disk/by-partlabel/disk-main-ESP", "fsType": "vfat"},
			},
			"boot.initrd.luks.devices": map[string]any{"crypted": map[string]any{"device": "/dev/disk/by-partlabel/disk-main-luks"}},
		}},
		{"nftables", map[string]any{
			"networking.nftables.enable":                       true,
			"networking.firewall.allowedTCPPorts":              []int{22, 443},
			"networking.firewall.allowedTCPPortRanges":         []any{map[string]int{"from": 8000, "to": 8002}},
			"networking.firewall.allowedUDPPortRanges":         []any{map[string]int{"from": 5353, "to": 5354}},
			"fileSystems./nix.options":                         []string{"noauto"},
			"services.openssh.settings.PermitRootLogin":        "no",
			"services.openssh.settings.PasswordAuthentication": true,
		}},
		{"avahi-off", map[string]any{
			"services.avahi.enable":               false,
			"networking.firewall.allowedUDPPorts": []int{},
		}},
		{"no-publish", map[string]any{"services.avahi.publish.addresses": false}},
		{"firewall-off", map[string]any{"networking.firewall.enable": false, "services.resolved.enable": false}},
		{"no-sshd", map[string]any{"services.openssh.enable": false}},
		{"zfs-pool-encrypted", map[string]any{
			"disko.devices.zpool.tank": map[string]any{
				"rootFsOptions": map[string]any{"encryption": "on", "keyformat": "passphrase"},
				"datasets":      map[string]any{"data": map[string]any{"options": map[string]any{}}},
			},
			"disko.devices.zpool.scratch": map[string]any{"rootFsOptions": map[string]any{"encryption": "off"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fakeConfig()
			for path, v := range tc.changes {
				set(cfg, path, v)
			}
			data, _ := json.Marshal(cfg)
			in := filepath.Join(t.TempDir(), "config.json")
			os.WriteFile(in, data, 0o644)
			out, err := nixtest.Run(t, "--eval", "--strict", "--json", "--expr",
				fmt.Sprintf(`import %s/nix/expectations.nix { config = builtins.fromJSON (builtins.readFile %s); }`, repoRoot(t), in))
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
	for _, rev := range []string{"8fd9daa3db09ced9700431c5b7ad0e8ba199b575", "de5708739256238fb912c62f03988815db89ec9a",
		"7f8d7438f5870eb167abaf2c39eea3d2302019d1", "11707dc2f618dd54ca8739b309ec4fc024de578b", "da67096a3b9bf56a91d16901293e51ba5b49a27e"} {
		if !strings.Contains(out, rev) {
			t.Errorf("flake metadata does not show pinned rev %s:\n%s", rev, out)
		}
	}

	// The same check notices a flake.nix that moved away from its lock.
	flake, _ := os.ReadFile(filepath.Join(dir, "flake.nix"))
	moved := strings.Replace(string(flake), "disko/v1.13.0", "disko/v1.12.0", 1)
	os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(moved), 0o644)
	if out, err := nixFlake(t, "flake", "metadata", "--no-update-lock-file", "path:"+dir); err == nil {
		t.Errorf("a stale flake.lock passed:\n%s", out)
	}
}

// TestFleetApplyMatchesLib keeps the fleet expression `keystone check` runs
// through nix eval equal to lib.fleetInfo, which the flake's lint check uses.
func TestFleetApplyMatchesLib(t *testing.T) {
	host := `{ config = {
		networking = { hostName = "web1"; hostId = "1a2b3c4d"; };
		users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA x" ];
		keystone = { vm = true; deploy = { targetHost = null; targetUser = "root"; sshPort = 22; disks = [ "/dev/vda" ]; buildOn = "auto"; }; };
	}; }`
	var viaLib, viaApply map[string]any
	evalJSON(t, fmt.Sprintf(`builtins.mapAttrs (_: (import %s/nix/lib.nix).fleetInfo) { web1 = %s; }`, repoRoot(t), host), &viaLib)
	evalJSON(t, fmt.Sprintf(`(%s) { web1 = %s; }`, check.FleetApply, host), &viaApply)
	if !reflect.DeepEqual(viaLib, viaApply) || len(viaLib["web1"].(map[string]any)) != 8 {
		t.Errorf("lib.fleetInfo gives %v\ncheck.FleetApply gives %v", viaLib, viaApply)
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
		Checks   map[string][]string          `json:"checks"`
		Packages map[string][]string          `json:"packages"`
		Hosts    []string                     `json:"hosts"`
		Modules  []string                     `json:"modules"`
		Module   string                       `json:"module"`
		Lint     string                       `json:"lint"`
		Disko    map[string]any               `json:"disko"`
		Version  string                       `json:"version"`
		Shell    []string                     `json:"shell"`
		Lib      []string                     `json:"lib"`
	}
	evalJSON(t, fmt.Sprintf(`let o = import %[1]s/nix/testdata/fake-inputs.nix { root = %[1]s; }; in {
		apps = builtins.mapAttrs (_: builtins.mapAttrs (_: a: a.meta.description)) o.apps;
		deploy = o.apps.x86_64-linux.deploy.program;
		checks = builtins.mapAttrs (_: builtins.attrNames) o.checks;
		packages = builtins.mapAttrs (_: builtins.attrNames) o.packages;
		hosts = builtins.attrNames o.nixosConfigurations;
		modules = o.nixosConfigurations.test-server.modules;
		module = toString o.nixosModules.default;
		lint = o.checks.x86_64-linux.lint;
		disko = o.checks.x86_64-linux.test-server-disko;
		version = o.packages.x86_64-linux.keystone.version;
		shell = o.devShells.x86_64-linux.default.shell;
		lib = builtins.attrNames o.lib;
	}`, root), &got)

	for _, system := range []string{"x86_64-linux", "aarch64-linux"} {
		apps := got.Apps[system]
		for _, app := range []string{"default", "new-host", "deploy", "verify", "check"} {
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
	wantChecks := []string{"eval-test-server", "keystone", "lint", "test-server-disko", "vm-test"}
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
	// The override names the dataset whose hook the template writes.
	layout, _ := os.ReadFile(filepath.Join(root, "vms/test-server/disk-config.nix"))
	if !strings.Contains(string(layout), "crypt = {") || !strings.Contains(string(layout), `zfs set keylocation="prompt" rpool/crypt`) {
		t.Errorf("vms/test-server/disk-config.nix has no rpool/crypt postCreateHook for test-server-disko to clear")
	}
	if got.Disko["installTest"] != true || got.Disko["extra"] != float64(1) || !reflect.DeepEqual(got.Disko["hook"], map[string]any{"forced": ""}) {
		t.Errorf("test-server-disko: %v", got.Disko)
	}
	if got.Version != "abc1234" || !reflect.DeepEqual(got.Lib, []string{"fleetInfo", "hostModules", "installerIso", "mkHosts"}) {
		t.Errorf("version %q, lib %v", got.Version, got.Lib)
	}
}

// TestDeployFacts evaluates nix/modules/deploy.nix's read-only facts over
// the disk layouts new-host renders (the golden files), with a stand-in lib.
func TestDeployFacts(t *testing.T) {
	fakeLib := `{ mkOption = x: x; literalExpression = x: x; types = { nullOr = x: x; str = "str"; bool = "bool"; port = "port"; listOf = x: x; attrsOf = x: x; enum = x: x; }; }`
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
	} {
		disk := filepath.Join(repoRoot(t), "generate/testdata/golden", tc.golden, "disk-config.nix")
		var got struct {
			Disks  []string            `json:"disks"`
			Sizes  map[string][]string `json:"sizes"`
			Secret bool                `json:"secret"`
		}
		evalJSON(t, fmt.Sprintf(`let
			m = import %[2]s;
			layout = if builtins.isFunction m then m { lib.mkDefault = v: v; } else m;
			o = (import %[1]s/nix/modules/deploy.nix { config = { inherit (layout) disko; }; lib = %[3]s; }).options.keystone.deploy;
		in { disks = o.disks.default; sizes = o.partitionSizes.default; secret = o.diskSecret.default; }`, repoRoot(t), disk, fakeLib), &got)
		if len(got.Disks) != 1 || got.Secret != tc.secret {
			t.Errorf("%s: disks %v, diskSecret %v; want one disk, %v", tc.golden, got.Disks, got.Secret, tc.secret)
		}
		sizes := got.Sizes[got.Disks[0]]
		sort.Strings(sizes)
		want := append([]string(nil), tc.sizes...)
		sort.Strings(want)
		if !reflect.DeepEqual(sizes, want) {
			t.Errorf("%s: partition sizes %v, want %v", tc.golden, sizes, want)
		}
	}
}

// TestServerSysctls: every sysctl of the server profile sits above
// mkDefault (1000), where nixpkgs and profiles/hardened.nix put theirs: two
// definitions at one priority would not evaluate.
func TestServerSysctls(t *testing.T) {
	fakeLib := `{
		mkIf = c: v: v; mkDefault = v: { priority = 1000; value = v; }; mkOverride = p: v: { priority = p; value = v; };
		mkEnableOption = x: x; mapAttrs = builtins.mapAttrs;
	}`
	var got map[string]struct {
		Priority int `json:"priority"`
	}
	evalJSON(t, fmt.Sprintf(`(import %s/nix/modules/server.nix {
		config.keystone.server.enable = true; lib = %s; pkgs = { vim = 1; git = 1; htop = 1; tmux = 1; lsof = 1; };
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
