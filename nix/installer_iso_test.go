package nix_test

import (
	"fmt"
	"os/exec"
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
			if len(got.Modules) != 2 || got.Modules[0] != "/fake/nixpkgs/nixos/modules/installer/cd-dvd/installation-cd-minimal.nix" {
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
	if len(got.Modules) != 2 || got.Modules[0] != "/fake/nixpkgs/nixos/modules/installer/cd-dvd/installation-cd-minimal.nix" {
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
