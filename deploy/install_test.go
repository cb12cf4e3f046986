package deploy

import (
	"reflect"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/target"
)

func TestArgv(t *testing.T) {
	base := Install{Flake: ".", Name: "web1", Target: target.Target{User: "root", Host: "192.0.2.10", Port: 22}}
	const head = "--flake .#web1 --target-host root@192.0.2.10 -p 22 --post-kexec-ssh-port 22 --ssh-option HostName=192.0.2.10"
	for _, tc := range []struct {
		name string
		edit func(*Install)
		want string
	}{
		// Defect 11: -p and HostName always, whatever ~/.ssh/config says.
		{"minimal", func(*Install) {}, head},
		// Defect 2: the kexec image's sshd listens on 22, not on -p.
		{"port", func(i *Install) { i.Target.Port = 2222 },
			"--flake .#web1 --target-host root@192.0.2.10 -p 2222 --post-kexec-ssh-port 22 --ssh-option HostName=192.0.2.10"},
		{"post-kexec port forwarded", func(i *Install) { i.Target.Port = 2222; i.PostKexecPort = 2022 },
			"--flake .#web1 --target-host root@192.0.2.10 -p 2222 --post-kexec-ssh-port 2022 --ssh-option HostName=192.0.2.10"},
		// Defect 14: brackets for the ssh:// store URIs, HostName for ssh.
		{"ipv6 user", func(i *Install) { i.Target = target.Target{User: "nixos", Host: "2001:db8::1", Port: 22} },
			"--flake .#web1 --target-host nixos@[2001:db8::1] -p 22 --post-kexec-ssh-port 22 --ssh-option HostName=2001:db8::1"},
		{"ipv6 zone", func(i *Install) { i.Target.Host = "fe80::1%eth0" },
			"--flake .#web1 --target-host root@[fe80::1%eth0] -p 22 --post-kexec-ssh-port 22 --ssh-option HostName=fe80::1%%eth0"},
		{"resolved address", func(i *Install) { i.Target.Host = "web1.example"; i.HostAddr = "203.0.113.7" },
			"--flake .#web1 --target-host root@203.0.113.7 -p 22 --post-kexec-ssh-port 22 --ssh-option HostName=203.0.113.7"},
		{"name without an address", func(i *Install) { i.Target.Host = "web1.example" },
			"--flake .#web1 --target-host root@web1.example -p 22 --post-kexec-ssh-port 22 --ssh-option HostName=web1.example"},
		{"identity", func(i *Install) { i.Identity = "/home/me/.ssh/id_ed25519" }, head + " -i /home/me/.ssh/id_ed25519"},
		{"build on", func(i *Install) { i.BuildOn = "remote" }, head + " --build-on remote"},
		{"extra files", func(i *Install) { i.ExtraFiles = "/tmp/ks-1/root" }, head + " --extra-files /tmp/ks-1/root"},
		{"secret", func(i *Install) { i.DiskSecret = "/run/user/1000/pw" }, head + " --disk-encryption-keys /tmp/secret.key /run/user/1000/pw"},
		{"hardware", func(i *Install) { i.HardwareConfig = "vms/web1/facter.json" },
			head + " --generate-hardware-config nixos-facter vms/web1/facter.json"},
		{"extra args last", func(i *Install) { i.Extra = []string{"--debug", "--no-disko-deps"}; i.BuildOn = "local" },
			head + " --build-on local --debug --no-disko-deps"},
		{"everything", func(i *Install) {
			*i = Install{Flake: "github:me/fleet", Name: "db1", Target: target.Target{User: "root", Host: "db1.example", Port: 22022},
				Identity: "k", BuildOn: "auto", ExtraFiles: "x", DiskSecret: "pw", HardwareConfig: "f.json", Extra: []string{"--debug"},
				PostKexecPort: 22, HostAddr: "198.51.100.3"}
		}, "--flake github:me/fleet#db1 --target-host root@198.51.100.3 -p 22022 --post-kexec-ssh-port 22 --ssh-option HostName=198.51.100.3 " +
			"-i k --build-on auto --extra-files x --disk-encryption-keys /tmp/secret.key pw --generate-hardware-config nixos-facter f.json --debug"},
	} {
		in := base
		tc.edit(&in)
		if got := strings.Join(in.Argv(), " "); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
		// Whatever keystone passes itself, CheckExtra would refuse after --.
		for _, a := range in.Argv() {
			if strings.HasPrefix(a, "-") && a != "--ssh-option" && a != "--disk-encryption-keys" && a != "--debug" && a != "--no-disko-deps" {
				if _, owned := keystoneOwns[a]; !owned {
					t.Errorf("%s: keystone passes %s, which CheckExtra lets through", tc.name, a)
				}
			}
		}
	}
}

func TestArgvKeepsArgumentsWhole(t *testing.T) {
	in := Install{Flake: "/home/me/my fleet", Name: "web1", Target: target.Target{User: "root", Host: "h", Port: 22},
		DiskSecret: "/tmp/pw with spaces; rm -rf /"}
	got := in.Argv()
	want := []string{"--flake", "/home/me/my fleet#web1", "--target-host", "root@h", "-p", "22", "--post-kexec-ssh-port", "22",
		"--ssh-option", "HostName=h", "--disk-encryption-keys", "/tmp/secret.key", "/tmp/pw with spaces; rm -rf /"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q", got)
	}
}
