package deploy

import (
	"reflect"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/target"
)

func TestArgv(t *testing.T) {
	base := Install{Flake: ".", Name: "web1", Target: target.Target{User: "root", Host: "192.0.2.10", Port: 22}}
	for _, tc := range []struct {
		name string
		edit func(*Install)
		want string
	}{
		{"minimal", func(*Install) {}, ". --flake .#web1 --target-host root@192.0.2.10"},
		{"port", func(i *Install) { i.Target.Port = 2222 },
			"--flake .#web1 --target-host root@192.0.2.10 -p 2222 --post-kexec-ssh-port 2222"},
		{"ipv6 user", func(i *Install) { i.Target = target.Target{User: "nixos", Host: "2001:db8::1", Port: 22} },
			"--flake .#web1 --target-host nixos@2001:db8::1"},
		{"identity", func(i *Install) { i.Identity = "/home/me/.ssh/id_ed25519" },
			"--flake .#web1 --target-host root@192.0.2.10 -i /home/me/.ssh/id_ed25519"},
		{"build on", func(i *Install) { i.BuildOn = "remote" },
			"--flake .#web1 --target-host root@192.0.2.10 --build-on remote"},
		{"extra files", func(i *Install) { i.ExtraFiles = "/tmp/ks-1/root" },
			"--flake .#web1 --target-host root@192.0.2.10 --extra-files /tmp/ks-1/root"},
		{"secret", func(i *Install) { i.DiskSecret = "/run/user/1000/pw" },
			"--flake .#web1 --target-host root@192.0.2.10 --disk-encryption-keys /tmp/secret.key /run/user/1000/pw"},
		{"hardware", func(i *Install) { i.HardwareConfig = "vms/web1/facter.json" },
			"--flake .#web1 --target-host root@192.0.2.10 --generate-hardware-config nixos-facter vms/web1/facter.json"},
		{"extra args last", func(i *Install) { i.Extra = []string{"--debug", "--phases", "kexec,disko"}; i.BuildOn = "local" },
			"--flake .#web1 --target-host root@192.0.2.10 --build-on local --debug --phases kexec,disko"},
		{"everything", func(i *Install) {
			*i = Install{Flake: "github:me/fleet", Name: "db1", Target: target.Target{User: "root", Host: "db1.example", Port: 22022},
				Identity: "k", BuildOn: "auto", ExtraFiles: "x", DiskSecret: "pw", HardwareConfig: "f.json", Extra: []string{"--vm-test"}}
		}, "--flake github:me/fleet#db1 --target-host root@db1.example -p 22022 --post-kexec-ssh-port 22022 -i k --build-on auto " +
			"--extra-files x --disk-encryption-keys /tmp/secret.key pw --generate-hardware-config nixos-facter f.json --vm-test"},
	} {
		in := base
		tc.edit(&in)
		got := strings.Join(in.Argv(), " ")
		want := strings.TrimPrefix(tc.want, ". ")
		if got != want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, want)
		}
	}
}

func TestArgvKeepsArgumentsWhole(t *testing.T) {
	in := Install{Flake: "/home/me/my fleet", Name: "web1", Target: target.Target{User: "root", Host: "h", Port: 22},
		DiskSecret: "/tmp/pw with spaces; rm -rf /"}
	got := in.Argv()
	want := []string{"--flake", "/home/me/my fleet#web1", "--target-host", "root@h",
		"--disk-encryption-keys", "/tmp/secret.key", "/tmp/pw with spaces; rm -rf /"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q", got)
	}
}
