package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/unlock"
)

func unlockCommand() *cli.Command {
	return &cli.Command{
		Name:      "unlock",
		Usage:     "give a booting host its disk password over the initrd's SSH",
		ArgsUsage: "NAME... | --all",
		Description: `For a host whose TPM2 does not open its disk (none enrolled, or the PCRs
moved after a firmware or Secure Boot change): waits for the initrd's sshd
(keystone.unlock.ssh.port, the key pinned in vms/NAME/ssh_initrd_host_ed25519_key.pub),
answers its password request with systemd-tty-ask-password-agent, the password
on stdin, and waits for the system (the pinned main key, the same boot).

Exit status: 0 unlocked or already up, 2 cannot connect (no answer, a host key
refused), 3 refused (no initrd SSH, nothing asked), 4 wrong password, 5 the
system did not come up, 64 bad usage.

Examples:
   keystone unlock web1
   keystone unlock web1 --disk-password-file ~/secrets/web1
   keystone unlock --all --disk-password-file pw --wait 20m`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "flake", Value: ".", Usage: "`FLAKE` holding nixosConfigurations.NAME"},
			&cli.StringFlag{Name: "target", Usage: "reach the host at `[USER@]HOST[:PORT]` instead of keystone.deploy.*"},
			&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "private key `FILE` to log in with (repeatable; ssh-agent is used too)"},
			&cli.StringFlag{Name: "disk-password-file", Usage: "the disk password `FILE` (no trailing newline); without it, asked on the terminal"},
			&cli.IntFlag{Name: "initrd-port", Usage: "reach the initrd's sshd at `PORT` instead of keystone.unlock.ssh.port (a VM's forward: vm up prints it)"},
			&cli.BoolFlag{Name: "all", Usage: "unlock every host of the flake, one after the other"},
			&cli.StringFlag{Name: "config", Hidden: true, Usage: "read config.keystone from JSON `FILE` instead of nix eval (tests)"},
			&cli.DurationFlag{Name: "wait", Value: unlock.DefaultWait, Usage: "limit for each host: its initrd, its request and its system"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 && !c.Bool("all") || c.NArg() > 0 && c.Bool("all") {
				return usageError{hint.Errorf("keystone unlock NAME... or keystone unlock --all", "unlock takes host names or --all")}
			}
			o := unlock.Options{Wait: c.Duration("wait"), InitrdPort: c.Int("initrd-port")}
			if o.InitrdPort < 0 || o.InitrdPort > 65535 {
				return usageError{hint.Errorf("give a TCP port from 1 to 65535", "--initrd-port %d is not a port", o.InitrdPort)}
			}
			var err error
			if f := c.String("disk-password-file"); f != "" {
				o.Password, err = unlock.FilePassword(f)
			} else {
				o.Password, err = unlock.TerminalPassword(os.Stdin, c.App.ErrWriter)
			}
			if err != nil {
				return usageError{err}
			}
			hosts, err := loadFleet(c.Context, fleet.Options{Flake: c.String("flake"), Names: c.Args().Slice(), All: c.Bool("all"),
				Target: c.String("target"), Config: c.String("config"), Identities: nonEmpty(c.StringSlice("identity"))}, unlock.ExitRefused)
			if err != nil {
				return err
			}
			return unlock.Fleet(c.Context, hosts, o, c.App.Writer)
		},
	}
}
