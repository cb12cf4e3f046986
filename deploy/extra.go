package deploy

import (
	"cmp"
	"strings"

	"github.com/keystone-nix/keystone/internal/hint"
)

// anywhereArity is how many values each nixos-anywhere option takes, as
// parseArgs in src/nixos-anywhere.sh reads them (the same in 1.12.0 and
// 1.13.0). Whatever else it meets it takes for the target host.
var anywhereArity = map[string]int{
	"-f": 1, "--flake": 1, "--target-host": 1, "-i": 1, "-p": 1, "--ssh-port": 1, "--ssh-option": 1,
	"-L": 0, "--print-build-logs": 0, "--env-password": 0, "-s": 2, "--store-paths": 2,
	"--generate-hardware-config": 2, "-t": 0, "--tty": 0, "--help": 0, "--kexec": 1, "--kexec-extra-flags": 1,
	"--ssh-store-setting": 2, "--post-kexec-ssh-port": 1, "--copy-host-keys": 0, "--show-trace": 0,
	"--debug": 0, "--disko-mode": 1, "--no-disko-deps": 0, "--build-on": 1, "--extra-files": 1, "--chown": 2,
	"--disk-encryption-keys": 2, "--phases": 1, "--stop-after-disko": 0, "--no-reboot": 0, "--from": 1,
	"--option": 2, "--no-substitute-on-destination": 0, "--no-use-machine-substituters": 0,
	"--build-on-remote": 0, "--vm-test": 0,
}

const (
	phasesHint = "keystone runs every phase, so it can pin the new host key and wait for the new boot; to stop early, run nixos-anywhere yourself"
	targetHint = "give the target with --target [USER@]HOST[:PORT] or keystone.deploy.targetHost"
	portHint   = "give the port with --target HOST:PORT or keystone.deploy.sshPort"
)

// keystoneOwns are the options keystone sets itself or depends on: given
// again after --, nixos-anywhere would take the later value and install
// something pre-flight never checked, or skip what keystone waits for.
var keystoneOwns = map[string]string{
	"-f":                         "name the flake with keystone deploy --flake FLAKE NAME",
	"--flake":                    "name the flake with keystone deploy --flake FLAKE NAME",
	"--target-host":              targetHint,
	"-i":                         "give the key with keystone deploy -i FILE",
	"-p":                         portHint,
	"--ssh-port":                 portHint,
	"--post-kexec-ssh-port":      "use keystone deploy --post-kexec-ssh-port PORT, or set keystone.deploy.postKexecSSHPort in the host's configuration",
	"--extra-files":              "keystone passes the new host key with --extra-files; put other files in the configuration (environment.etc)",
	"--build-on":                 "use keystone deploy --build-on auto|local|remote",
	"--build-on-remote":          "use keystone deploy --build-on remote",
	"--generate-hardware-config": "use keystone deploy --hardware-config",
	"--phases":                   phasesHint,
	"--stop-after-disko":         phasesHint,
	"--no-reboot":                phasesHint,
	"--vm-test":                  "test the layout in a VM with nix build .#nixosConfigurations.NAME.config.system.build.installTest",
	"-s":                         "keystone installs what --flake builds; to install store paths, run nixos-anywhere yourself",
	"--store-paths":              "keystone installs what --flake builds; to install store paths, run nixos-anywhere yourself",
	"--help":                     "run nixos-anywhere --help",
}

// sshOwns are ssh options that would send ssh elsewhere than --target
// (ssh keeps the first value, but the user's intent is clear).
var sshOwns = map[string]string{"hostname": targetHint, "port": portHint, "user": targetHint}

// CheckExtra refuses, in the arguments given after --, every option
// keystone sets or depends on, a second target host, an option
// nixos-anywhere does not know (it would take it for the target host),
// and --opt=value, which it does not read.
func CheckExtra(args []string) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if name, _, ok := strings.Cut(a, "="); ok && strings.HasPrefix(a, "-") {
			if _, known := anywhereArity[name]; known {
				h := cmp.Or(keystoneOwns[name], "write it as "+name+" VALUE")
				return hint.Errorf(h, "after --: nixos-anywhere does not read %s, it would take it for the target host", a)
			}
		}
		n, known := anywhereArity[a]
		if !known {
			return hint.Errorf(targetHint+"; nixos-anywhere's own options go after --",
				"after --: nixos-anywhere would take %q for the target host, which keystone passes itself", a)
		}
		if h, ok := keystoneOwns[a]; ok {
			return hint.Errorf(h, "after --: %s is keystone's to set", a)
		}
		if i+n >= len(args) {
			return hint.Errorf("see nixos-anywhere --help", "after --: %s takes %d value(s)", a, n)
		}
		switch a {
		case "--disk-encryption-keys":
			if args[i+1] == SecretPath {
				return hint.Errorf("give the disk password with keystone deploy --disk-password-file FILE",
					"after --: --disk-encryption-keys %s is keystone's to set", SecretPath)
			}
		case "--ssh-option":
			key, _, _ := strings.Cut(args[i+1], "=")
			if h, ok := sshOwns[strings.ToLower(strings.TrimSpace(key))]; ok {
				return hint.Errorf(h, "after --: --ssh-option %s would send nixos-anywhere elsewhere than pre-flight checked", args[i+1])
			}
		}
		i += n
	}
	return nil
}
