package deploy

import (
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/hint"
)

// Defect 3: after --, nixos-anywhere takes the last --flake or
// --target-host (parseArgs assigns, it does not append), so what
// pre-flight checked would not be what gets formatted.
func TestCheckExtra(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		msg, hint string // "" msg: accepted
	}{
		{nil, "", ""},
		{[]string{"--print-build-logs", "--debug", "--show-trace", "--no-disko-deps"}, "", ""},
		{[]string{"--option", "substituters", "https://cache.example", "--kexec", "./kexec.tar.gz", "--copy-host-keys"}, "", ""},
		{[]string{"--ssh-option", "ProxyJump=bastion", "--chown", "/home/me", "1000:100", "--from", "https://c"}, "", ""},
		{[]string{"--disk-encryption-keys", "/tmp/data.key", "./data.key"}, "", ""},
		{[]string{"--flake", ".#other"}, "--flake is keystone's to set", "keystone deploy --flake FLAKE NAME"},
		{[]string{"-f", ".#other"}, "-f is keystone's to set", "--flake FLAKE NAME"},
		{[]string{"--target-host", "root@192.0.2.99"}, "--target-host is keystone's", "--target [USER@]HOST[:PORT]"},
		{[]string{"--debug", "root@192.0.2.99"}, `would take "root@192.0.2.99" for the target host`, "--target"},
		{[]string{"--pritn-build-logs"}, `would take "--pritn-build-logs" for the target host`, "--target"},
		{[]string{"-i", "k"}, "-i is keystone's", "keystone deploy -i FILE"},
		{[]string{"-p", "2222"}, "-p is keystone's", "keystone.deploy.sshPort"},
		{[]string{"--ssh-port", "2222"}, "--ssh-port is keystone's", "keystone.deploy.sshPort"},
		{[]string{"--post-kexec-ssh-port", "2222"}, "--post-kexec-ssh-port is keystone's", "keystone.deploy.postKexecSSHPort"},
		{[]string{"--extra-files", "x"}, "--extra-files is keystone's", "environment.etc"},
		{[]string{"--build-on", "remote"}, "--build-on is keystone's", "keystone deploy --build-on"},
		{[]string{"--build-on-remote"}, "--build-on-remote is keystone's", "keystone deploy --build-on remote"},
		{[]string{"--generate-hardware-config", "nixos-facter", "f.json"}, "--generate-hardware-config is keystone's", "--hardware-config"},
		{[]string{"--phases", "kexec,disko"}, "--phases is keystone's", "pin the new host key"},
		{[]string{"--stop-after-disko"}, "--stop-after-disko is keystone's", "pin the new host key"},
		{[]string{"--no-reboot"}, "--no-reboot is keystone's", "pin the new host key"},
		{[]string{"--vm-test"}, "--vm-test is keystone's", "installTest"},
		{[]string{"--store-paths", "/nix/store/a", "/nix/store/b"}, "--store-paths is keystone's", "--flake"},
		{[]string{"-s", "/nix/store/a", "/nix/store/b"}, "-s is keystone's", "--flake"},
		{[]string{"--disk-encryption-keys", "/tmp/secret.key", "other"}, "--disk-encryption-keys /tmp/secret.key is keystone's", "--disk-password-file"},
		{[]string{"--ssh-option", "HostName=192.0.2.99"}, "--ssh-option HostName=192.0.2.99 would send", "--target"},
		{[]string{"--ssh-option", "Port=2222"}, "--ssh-option Port=2222 would send", "sshPort"},
		{[]string{"--flake=.#other"}, "does not read --flake=.#other", "keystone deploy --flake"},
		{[]string{"--kexec=./k.tar.gz"}, "does not read --kexec=./k.tar.gz", "write it as --kexec VALUE"},
		{[]string{"--option", "x"}, "--option takes 2 value(s)", "nixos-anywhere --help"},
		// A value that looks like an option is still a value, as parseArgs reads it.
		{[]string{"--option", "--flake", "x"}, "", ""},
	} {
		err := CheckExtra(tc.args)
		switch {
		case tc.msg == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.msg != "" && (err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(hint.Of(err), tc.hint)):
			t.Errorf("%q: %v (hint %q), want %q and hint %q", tc.args, err, hint.Of(err), tc.msg, tc.hint)
		}
	}
}

// Any argument list is judged without a panic, and what keystone owns is
// never let through first.
func FuzzCheckExtra(f *testing.F) {
	f.Add("--flake\x00.#x")
	f.Add("--option\x00a")
	f.Add("--debug\x00--ssh-option\x00HostName=x")
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		if CheckExtra(args) == nil {
			if _, owned := keystoneOwns[args[0]]; owned {
				t.Errorf("%q accepted", args)
			}
		}
	})
}
