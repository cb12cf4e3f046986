package main

import (
	"bufio"
	"io"
	"os"
	"slices"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/fleet"
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
			&cli.IntFlag{Name: "initrd-port", Usage: "`PORT` the initrd's sshd is reached at for the first boot's disk password (default: keystone.unlock.ssh.port; vm up prints its forward)"},
			&cli.IntFlag{Name: "post-kexec-ssh-port", Usage: "`PORT` the kexec installer's sshd is reached at (default: keystone.deploy.postKexecSSHPort, else 22)"},
			&cli.StringFlag{Name: "config", Hidden: true, Usage: "read config.keystone from JSON `FILE` instead of nix eval (tests)"},
		},
		Action: func(c *cli.Context) error {
			names, extra := c.Args().Slice(), []string(nil)
			if i := slices.Index(names, "--"); i >= 0 {
				names, extra = names[:i], names[i+1:]
			}
			hosts := fleet.Options{Flake: c.String("flake"), Names: names, All: c.Bool("all"),
				Target: c.String("target"), Config: c.String("config"), Identities: nonEmpty(c.StringSlice("identity")),
				Drift: true} // the final verify's system check
			o := deploy.Options{
				Yes: c.Bool("yes"), DryRun: c.Bool("dry-run"), Reinstall: c.Bool("reinstall"),
				PasswordFile: c.String("disk-password-file"), BuildOn: c.String("build-on"),
				HardwareConfig: c.Bool("hardware-config"), NoVerify: c.Bool("no-verify"),
				Wait: c.Duration("wait"), Timeout: c.Duration("timeout"), Parallel: c.Int("parallel"), Extra: extra,
				PostKexecPort: c.Int("post-kexec-ssh-port"), InitrdPort: c.Int("initrd-port"),
			}
			if err := o.Check(hosts); err != nil {
				return err
			}
			hs, err := loadFleet(c.Context, hosts, deploy.ExitRefused)
			if err != nil {
				return err
			}
			return deploy.Run(c.Context, hs, o, terminal{os.Stdin, c.App.Writer, c.App.ErrWriter})
		},
	}
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
