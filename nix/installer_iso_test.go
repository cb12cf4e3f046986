package nix_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/nixtest"
)

type isoCall struct {
	Modules []any `json:"modules"`
}

// isoModule is the installer's own module: the second, after nixpkgs'
// installation-cd-minimal.nix.
type isoModule struct {
	Nixpkgs struct {
		HostPlatform string `json:"hostPlatform"`
	} `json:"nixpkgs"`
	Services struct {
		OpenSSH struct {
			Enable   bool           `json:"enable"`
			Settings map[string]any `json:"settings"`
		} `json:"openssh"`
	} `json:"services"`
	Users struct {
		Users struct {
			Root struct {
				OpenSSH struct {
					AuthorizedKeys struct {
						Keys []string `json:"keys"`
					} `json:"authorizedKeys"`
				} `json:"openssh"`
			} `json:"root"`
		} `json:"users"`
	} `json:"users"`
}

// TestInstallerISO evaluates nix/installer-iso.nix with a nixosSystem that
// returns its arguments: the module list and the key wiring.
func TestInstallerISO(t *testing.T) {
	root := repoRoot(t)
	hosts := `{
		web1.config.users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAAweb1 me@laptop" "ssh-ed25519 AAAAshared ci" ];
		db1.config.users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAAshared ci" ];
		bare.config.users.users.root.openssh.authorizedKeys.keys = [ ];
	}`
	call := func(extra string) string {
		return fmt.Sprintf(`import %s/nix/installer-iso.nix {
			nixosSystem = args: args;
			nixpkgs = "/fake/nixpkgs";
			system = "x86_64-linux";
			hosts = %s;
			%s
		}`, root, hosts, extra)
	}
	for _, tc := range []struct {
		name, extra string
		keys        []string
	}{
		// attrValues is in name order: bare, db1, web1.
		{"the fleet's keys, each once", "", []string{"ssh-ed25519 AAAAshared ci", "ssh-ed25519 AAAAweb1 me@laptop"}},
		{"keystone iso --key", `keys = [ "ssh-ed25519 AAAAgiven x" "ssh-ed25519 AAAAgiven x" ];`, []string{"ssh-ed25519 AAAAgiven x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got isoCall
			evalJSON(t, call(tc.extra), &got)
			if len(got.Modules) != 3 || got.Modules[0] != "/fake/nixpkgs/nixos/modules/installer/cd-dvd/installation-cd-minimal.nix" ||
				!strings.HasSuffix(fmt.Sprint(got.Modules[2]), "-installer-announce.nix") {
				t.Fatalf("modules = %v", got.Modules)
			}
			var m isoModule
			evalJSON(t, "builtins.elemAt ("+call(tc.extra)+").modules 1", &m)
			if k := m.Users.Users.Root.OpenSSH.AuthorizedKeys.Keys; !reflect.DeepEqual(k, tc.keys) {
				t.Errorf("root keys = %q, want %q", k, tc.keys)
			}
			want := map[string]any{"PermitRootLogin": "prohibit-password", "PasswordAuthentication": false, "KbdInteractiveAuthentication": false}
			if !m.Services.OpenSSH.Enable || !reflect.DeepEqual(m.Services.OpenSSH.Settings, want) || m.Nixpkgs.HostPlatform != "x86_64-linux" {
				t.Errorf("module = %+v", m)
			}
		})
	}

	// A fleet without keys yet still passes nix flake check (which evaluates
	// every package); building its installer fails, saying why.
	var noKeys struct {
		Type    string   `json:"type"`
		Builder string   `json:"builder"`
		Args    []string `json:"args"`
		Message string   `json:"message"`
	}
	evalJSON(t, fmt.Sprintf(`let iso = (import %s/nix/installer-iso.nix {
		nixosSystem = args: args; nixpkgs = "/n"; system = "x86_64-linux"; hosts = { bare.config.users.users.root.openssh.authorizedKeys.keys = [ ]; };
	}).config.system.build.isoImage; in { inherit (iso) type builder args message; }`, root), &noKeys)
	if noKeys.Type != "derivation" || !strings.Contains(noKeys.Message, "no SSH keys to log in with") || !strings.Contains(noKeys.Message, "keystone iso --key KEY") {
		t.Errorf("a fleet without keys: %+v", noKeys)
	}
	build := exec.Command(noKeys.Builder, noKeys.Args...) // as Nix runs it: the attributes in the environment
	build.Env = []string{"message=" + noKeys.Message}
	out, err := build.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no SSH keys") {
		t.Errorf("building the keyless installer: %v, %s", err, out)
	}

	// Neither hosts nor keys: a mistake in the calling flake, said plainly.
	_, err = nixtest.Run(t, "--eval", "--strict", "--json", "--expr", fmt.Sprintf(`import %s/nix/installer-iso.nix {
		nixosSystem = args: args; nixpkgs = "/n"; system = "x86_64-linux";
	}`, root))
	if err == nil || !strings.Contains(err.Error(), "give hosts (your nixosConfigurations") {
		t.Errorf("no hosts and no keys: %v", err)
	}
}

// TestFlakeInstallerISO: the flake's packages.<system>.installer-iso
// carries its own fleet's keys; its lib.installerIso has no fleet of its
// own, so a consumer that gives neither hosts nor keys is told, instead of
// getting an ISO for keystone's demo key, whose private half nobody has.
func TestFlakeInstallerISO(t *testing.T) {
	root := repoRoot(t)
	var got isoCall
	evalJSON(t, fmt.Sprintf(`let o = import %[1]s/nix/testdata/fake-inputs.nix { root = %[1]s; }; in
		o.packages.aarch64-linux.installer-iso`, root), &got)
	if len(got.Modules) != 3 || got.Modules[0] != "/fake/nixpkgs/nixos/modules/installer/cd-dvd/installation-cd-minimal.nix" {
		t.Fatalf("modules = %v", got.Modules)
	}
	var m isoModule
	evalJSON(t, fmt.Sprintf(`let o = import %[1]s/nix/testdata/fake-inputs.nix { root = %[1]s; }; in
		builtins.elemAt o.packages.aarch64-linux.installer-iso.modules 1`, root), &m)
	if k := m.Users.Users.Root.OpenSSH.AuthorizedKeys.Keys; !reflect.DeepEqual(k, []string{"ssh-ed25519 AAAA demo"}) || m.Nixpkgs.HostPlatform != "aarch64-linux" {
		t.Errorf("flake installer: keys %q, platform %q", k, m.Nixpkgs.HostPlatform)
	}
	_, err := nixtest.Run(t, "--eval", "--strict", "--json", "--expr", fmt.Sprintf(`let o = import %[1]s/nix/testdata/fake-inputs.nix { root = %[1]s; }; in
		o.lib.installerIso { system = "aarch64-linux"; nixosSystem = args: args; }`, root))
	if err == nil || !strings.Contains(err.Error(), "give hosts") {
		t.Errorf("lib.installerIso without hosts or keys: %v", err)
	}
}

// announceModule is what nix/installer-announce.nix sets, evaluated with
// fake pkgs: avahi options (avahi-daemon.nix) and the boot-time unit.
type announceModule struct {
	Services struct {
		Avahi struct {
			Enable       bool `json:"enable"`
			OpenFirewall bool `json:"openFirewall"`
			Publish      struct {
				Enable    bool `json:"enable"`
				Addresses bool `json:"addresses"`
			} `json:"publish"`
		} `json:"avahi"`
		Getty struct {
			HelpLine string `json:"helpLine"`
		} `json:"getty"`
	} `json:"services"`
	Systemd struct {
		Services map[string]struct {
			WantedBy      []string          `json:"wantedBy"`
			Wants         []string          `json:"wants"`
			After         []string          `json:"after"`
			Before        []string          `json:"before"`
			Path          []string          `json:"path"`
			ServiceConfig map[string]any    `json:"serviceConfig"`
			Script        string            `json:"script"`
			Environment   map[string]string `json:"environment"`
		} `json:"services"`
	} `json:"systemd"`
}

// TestInstallerAnnounce evaluates the installer's announcement module, as
// the flake's installer-iso gives it (the fakes' version "abc1234"), with
// stand-ins for pkgs: avahi publishes, and a unit runs
// installer-announce.sh before avahi-daemon with keystone's version, the
// system and sshd's port.
func TestInstallerAnnounce(t *testing.T) {
	root := repoRoot(t)
	var m announceModule
	evalJSON(t, fmt.Sprintf(`let
		o = import %[1]s/nix/testdata/fake-inputs.nix { root = %[1]s; };
		iso = o.packages.aarch64-linux.installer-iso;
		args = (builtins.elemAt iso.modules 1)._module.args;
		pkgs = { openssh = "/fake/openssh"; util-linux = "/fake/util-linux"; gawk = "/fake/gawk"; gnused = "/fake/gnused";
			coreutils = "/fake/coreutils"; runtimeShell = "/fake/bash"; stdenv.hostPlatform.system = "aarch64-linux"; };
	in import (builtins.elemAt iso.modules 2) (args // { inherit pkgs; config.services.openssh.ports = [ 2222 22 ]; })`, root), &m)
	a := m.Services.Avahi
	if !strings.Contains(m.Services.Getty.HelpLine, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub") {
		t.Errorf("the console does not say how to see the fingerprint: %q", m.Services.Getty.HelpLine)
	}
	if !a.Enable || !a.Publish.Enable || !a.Publish.Addresses || !a.OpenFirewall {
		t.Errorf("avahi: %+v", a)
	}
	u, ok := m.Systemd.Services["keystone-installer-announce"]
	if !ok {
		t.Fatalf("no keystone-installer-announce unit: %+v", m.Systemd.Services)
	}
	script := fmt.Sprintf("/fake/bash %s 'abc1234' 'aarch64-linux' '2222'", storePath(t, filepath.Join(root, "nix/installer-announce.sh")))
	if u.Script != script {
		t.Errorf("script = %q, want %q", u.Script, script)
	}
	if !reflect.DeepEqual(u.Before, []string{"avahi-daemon.service"}) || !reflect.DeepEqual(u.After, []string{"sshd-keygen.service", "sshd.service"}) ||
		!reflect.DeepEqual(u.WantedBy, []string{"multi-user.target"}) || u.ServiceConfig["Type"] != "oneshot" ||
		u.ServiceConfig["StandardOutput"] != "journal+console" {
		t.Errorf("unit: %+v", u)
	}
	for _, p := range []string{"/fake/openssh", "/fake/util-linux", "/fake/gawk", "/fake/gnused", "/fake/coreutils"} {
		if !strings.Contains(strings.Join(u.Path, " "), p) {
			t.Errorf("path %v lacks %s", u.Path, p)
		}
	}
}

// storePath is where Nix puts file when a string names it.
func storePath(t *testing.T, file string) string {
	var p string
	evalJSON(t, fmt.Sprintf(`"${%s}"`, file), &p)
	return p
}

// TestInstallerAnnounceService runs installer-announce.sh as the unit does,
// with a fixed host key, a fake lsblk and either firmware: the service
// file it writes is the golden one (go test ./nix -run Announce -update).
func TestInstallerAnnounceService(t *testing.T) {
	root := repoRoot(t)
	bin := t.TempDir()
	// What lsblk -d -n -b -o TYPE,SIZE,NAME prints on a machine with two
	// NVMe disks, the installer's CD-ROM, an empty card reader and zram.
	lsblk := "#!/bin/sh\ncat <<'EOF'\ndisk 512110190592 nvme0n1\ndisk 1000204886016 nvme1n1\nrom 1073741824 sr0\ndisk 0 sdb\ndisk 4294967296 zram0\nEOF\n"
	if err := os.WriteFile(filepath.Join(bin, "lsblk"), []byte(lsblk), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, firmware := range []string{"uefi", "bios"} {
		t.Run(firmware, func(t *testing.T) {
			dir := t.TempDir()
			efi := filepath.Join(dir, "efi")
			if firmware == "uefi" {
				os.Mkdir(efi, 0o755)
			}
			out := filepath.Join(dir, "etc/avahi/services/keystone-installer.service")
			cmd := exec.Command("bash", filepath.Join(root, "nix/installer-announce.sh"), "0.4.0", "x86_64-linux", "22", out)
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "KEYSTONE_EFI_DIR="+efi,
				"KEYSTONE_HOST_KEY="+filepath.Join(root, "nix/testdata/installer-host-key.pub"))
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("installer-announce.sh: %v\n%s", err, b)
			}
			if want := "keystone installer installer-a05081b0: SSH host key SHA256:NAY6t3t668yXJ/RF2Mm4eJ5yexX0r+mJe2U54EbEd6w (ED25519)\n"; string(b) != want {
				t.Errorf("on the console: %q, want %q", b, want)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join(root, "nix/testdata/installer-announce-"+firmware+".service")
			if *update {
				os.WriteFile(golden, got, 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil || string(got) != string(want) {
				t.Errorf("service file (go test ./nix -run Announce -update):\n%s\nwant:\n%s (%v)", got, want, err)
			}
		})
	}

	// Without the host key there is nothing to announce, and no file.
	dir := t.TempDir()
	out := filepath.Join(dir, "keystone-installer.service")
	cmd := exec.Command("bash", filepath.Join(root, "nix/installer-announce.sh"), "0.4.0", "x86_64-linux", "22", out)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "KEYSTONE_HOST_KEY="+filepath.Join(dir, "missing.pub"))
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "no ed25519 host key fingerprint") {
		t.Errorf("no host key: %v, %s", err, b)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a service file without a fingerprint")
	}
}
