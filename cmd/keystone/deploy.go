package main

import (
	"bufio"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/target"
)

func deployCommand() *cli.Command {
	return &cli.Command{
		Name:      "deploy",
		Usage:     "install a host with nixos-anywhere after read-only pre-flight checks",
		ArgsUsage: "NAME [-- NIXOS-ANYWHERE-ARGS...]",
		Description: `Reads the host's target and disks from one nix eval of
nixosConfigurations.NAME.config.keystone, checks the target over SSH without
changing it (a live installer or a Linux nixos-anywhere can kexec; every disk
present, big enough and not the running system), prints the plan, and asks
you to type the host name. Then it makes the host's SSH key, installs with
nixos-anywhere, pins the key in vms/NAME/ssh_host_ed25519_key.pub, waits for
the new system to boot, and verifies it.

Exit status: 0 verified, 1 verify failed, 2 cannot connect, 3 pre-flight
refused (nothing changed), 4 nixos-anywhere failed, 5 the host did not come
back in time, 64 bad usage.

Examples:
   keystone deploy web1
   keystone deploy web1 --target root@192.0.2.10 --disk-password-file ~/secrets/web1.pw
   keystone deploy web1 --dry-run
   keystone deploy --all --parallel 4 --yes --disk-password-file pw
   keystone deploy web1 -- --print-build-logs`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "flake", Value: ".", Usage: "`FLAKE` holding nixosConfigurations.NAME"},
			&cli.StringFlag{Name: "target", Usage: "install at `[USER@]HOST[:PORT]` instead of keystone.deploy.*"},
			&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "private key `FILE` to log in with (once: nixos-anywhere takes one; ssh-agent is used too)"},
			&cli.BoolFlag{Name: "yes", Usage: "do not ask for the host name before wiping"},
			&cli.BoolFlag{Name: "dry-run", Usage: "check and print the plan and the nixos-anywhere command; change nothing"},
			&cli.BoolFlag{Name: "reinstall", Usage: "allow wiping a host that is already installed"},
			&cli.StringFlag{Name: "disk-password-file", Usage: "disk encryption password `FILE` (no trailing newline)"},
			&cli.StringFlag{Name: "build-on", Usage: "where to build: auto, local or remote (default: keystone.deploy.buildOn)"},
			&cli.BoolFlag{Name: "hardware-config", Usage: "write vms/NAME/facter.json with nixos-facter during the install"},
			&cli.BoolFlag{Name: "no-verify", Usage: "do not verify the host after it comes back"},
			&cli.DurationFlag{Name: "wait", Value: 10 * time.Minute, Usage: "how long to wait for the new system to boot"},
			&cli.DurationFlag{Name: "timeout", Value: 60 * time.Minute, Usage: "limit for the whole nixos-anywhere run"},
			&cli.BoolFlag{Name: "all", Usage: "install every host of the flake"},
			&cli.IntFlag{Name: "parallel", Value: 1, Usage: "with --all, install `N` hosts at a time"},
			&cli.IntFlag{Name: "post-kexec-ssh-port", Usage: "`PORT` the kexec installer's sshd is reached at (default: keystone.deploy.postKexecSSHPort, else 22)"},
			&cli.StringFlag{Name: "config", Hidden: true, Usage: "read config.keystone from JSON `FILE` instead of nix eval (tests)"},
		},
		Action: func(c *cli.Context) error {
			names, extra := c.Args().Slice(), []string(nil)
			if i := slices.Index(names, "--"); i >= 0 {
				names, extra = names[:i], names[i+1:]
			}
			hosts := fleet.Options{Flake: c.String("flake"), Names: names, All: c.Bool("all"),
				Target: c.String("target"), Config: c.String("config"), Identities: nonEmpty(c.StringSlice("identity"))}
			o := deploy.Options{
				Yes: c.Bool("yes"), DryRun: c.Bool("dry-run"), Reinstall: c.Bool("reinstall"),
				PasswordFile: c.String("disk-password-file"), BuildOn: c.String("build-on"),
				HardwareConfig: c.Bool("hardware-config"), NoVerify: c.Bool("no-verify"),
				Wait: c.Duration("wait"), Timeout: c.Duration("timeout"), Parallel: c.Int("parallel"), Extra: extra,
				PostKexecPort: c.Int("post-kexec-ssh-port"),
			}
			if err := checkDeployOptions(hosts, o); err != nil {
				return err
			}
			hs, err := fleet.Load(c.Context, hosts)
			if err != nil {
				if exit.Code(err) == exit.Usage {
					return err
				}
				return exit.With(deploy.ExitRefused, err)
			}
			return deploy.Run(c.Context, hs, o, terminal{os.Stdin, c.App.Writer, c.App.ErrWriter})
		},
	}
}

// checkDeployOptions refuses what the command line alone shows to be wrong.
func checkDeployOptions(hosts fleet.Options, o deploy.Options) error {
	names := hosts.Names
	switch {
	case hosts.All && hosts.Target != "":
		return usageError{hint.Errorf("set keystone.deploy.targetHost per host", "--target applies to one host, not --all")}
	case len(hosts.Identities) > 1:
		return usageError{hint.Errorf("pass the one key the target accepts; ssh-agent offers the rest",
			"deploy takes one -i, got %d: nixos-anywhere logs in with a single key file", len(hosts.Identities))}
	case hosts.All && len(names) > 0:
		return usageError{hint.Errorf("keystone deploy --all [-- NIXOS-ANYWHERE-ARGS...]", "give a host name or --all, not both")}
	case !hosts.All && len(names) == 0:
		return usageError{hint.Errorf("keystone deploy NAME [-- NIXOS-ANYWHERE-ARGS...]", "deploy needs a host name, or --all")}
	case len(names) > 1:
		return usageError{hint.Errorf("deploy one host by name, or every host with --all; nixos-anywhere's own flags go after --",
			"deploy takes one host name, got %d: %s", len(names), strings.Join(names, " "))}
	case !slices.Contains([]string{"", "auto", "local", "remote"}, o.BuildOn):
		return usageError{hint.Errorf("--build-on takes auto, local or remote", "--build-on %q is not supported", o.BuildOn)}
	case o.Timeout <= 0 || o.Wait <= 0:
		return usageError{hint.Errorf("e.g. --timeout 60m --wait 10m", "--timeout and --wait must be more than 0")}
	case o.Parallel < 1:
		return usageError{hint.Errorf("--parallel 4 installs four hosts at a time", "--parallel must be 1 or more, got %d", o.Parallel)}
	case o.PostKexecPort < 0 || o.PostKexecPort > 65535:
		return usageError{hint.Errorf("e.g. --post-kexec-ssh-port 2222 for a port forwarded to the host's 22", "--post-kexec-ssh-port %d is not a port", o.PostKexecPort)}
	}
	if err := deploy.CheckExtra(o.Extra); err != nil {
		return usageError{err}
	}
	if hosts.Target != "" {
		if _, err := target.Parse(hosts.Target); err != nil {
			return usageError{err}
		}
	}
	return nil
}

// terminal is deploy's UI on the command line.
type terminal struct {
	stdin       *os.File
	out, errOut io.Writer
}

func (t terminal) Write(p []byte) (int, error) { return t.out.Write(p) }

func (t terminal) Warn(msg string) { io.WriteString(t.errOut, "keystone: warning: "+msg+"\n") }

func (t terminal) Ask(question string) (string, error) {
	// isatty(3): /dev/null is a character device too.
	if _, err := unix.IoctlGetTermios(int(t.stdin.Fd()), unix.TCGETS); err != nil {
		return "", deploy.ErrNoTerminal
	}
	io.WriteString(t.out, question)
	return bufio.NewReader(t.stdin).ReadString('\n')
}
