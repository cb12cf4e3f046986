package main

import (
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/fleet"
	switcher "github.com/keystone-nix/keystone/switch"
	"github.com/keystone-nix/keystone/unlock"
)

func switchCommand() *cli.Command {
	return &cli.Command{
		Name:      "switch",
		Usage:     "update an installed host; it becomes the boot default only after verify passes",
		ArgsUsage: "NAME... | --all",
		Description: `Builds the host's system from one nix eval, checks the host without changing
it (pinned host key, an installed NixOS, no switch running, room in /nix),
prints the plan, copies the closure with nix copy over the pinned key, and
activates it with switch-to-configuration test under a supervisor that
systemd-run starts on the host. keystone then verifies the host over a new
connection against the new system's expectations; only a PASS makes the
supervisor set the system profile and the boot default. A failed verify,
a failed activation, or no verdict within --confirm-timeout (a lockout,
keystone killed) makes the host activate the old system again on its own.
With --boot (a new kernel, or inhibitors that forbid a live switch) the
new system becomes the boot default, the host reboots into it and is
verified; on FAIL the old generation is made the default again and the
host reboots into it. An encrypted host's initrd asks for its disk
password at each of those reboots: --disk-password-file answers it over
the initrd's SSH (keystone.unlock.ssh, its key pinned), after the
pre-flight saw the password open the host's LUKS volumes; without it,
answer with keystone unlock NAME.

Exit status: 0 switched and verified, 1 verify failed (rolled back),
2 cannot connect, 3 pre-flight refused (nothing changed), 4 activation
failed (rolled back), 5 the rollback failed or the outcome is unknown,
64 bad usage.

Examples:
   keystone switch web1
   keystone switch web1 --dry-run
   keystone switch web1 --boot
   keystone switch web1 --boot --disk-password-file ./web1.pw
   keystone switch --all --parallel 4 --yes --format json`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "flake", Value: ".", Usage: "`FLAKE` holding nixosConfigurations.NAME"},
			&cli.StringFlag{Name: "target", Usage: "reach the host at `[USER@]HOST[:PORT]` instead of keystone.deploy.*"},
			&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "private key `FILE` to log in with (repeatable; ssh-agent is used too)"},
			&cli.BoolFlag{Name: "all", Usage: "switch every host of the flake, the first alone (the canary)"},
			&cli.IntFlag{Name: "parallel", Value: 1, Usage: "after the canary, switch `N` hosts at a time"},
			&cli.BoolFlag{Name: "yes", Usage: "do not ask before switching several hosts"},
			&cli.BoolFlag{Name: "dry-run", Usage: "build, check and print the plan; change nothing"},
			&cli.DurationFlag{Name: "confirm-timeout", Value: 2 * time.Minute, Usage: "how long the host waits for verify's verdict before it rolls back"},
			&cli.StringFlag{Name: "build-on", Usage: "where to build: auto, local or remote (default: keystone.deploy.buildOn)"},
			&cli.BoolFlag{Name: "boot", Usage: "switch through a reboot: boot default, reboot, verify; on FAIL reboot back"},
			&cli.DurationFlag{Name: "reboot-timeout", Value: 10 * time.Minute, Usage: "with --boot, how long to wait for each reboot"},
			&cli.StringFlag{Name: "disk-password-file", Usage: "with --boot, answer the initrd's disk password request at each reboot with the password in `FILE`"},
			&cli.IntFlag{Name: "initrd-port", Usage: "with --boot, reach the initrd's sshd at `PORT` instead of keystone.unlock.ssh.port"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "limit for each remote command"},
			&cli.StringFlag{Name: "only", Usage: "verify only these `CHECKS` (comma-separated)"},
			&cli.StringFlag{Name: "skip", Usage: "skip these `CHECKS` (comma-separated)"},
			&cli.StringFlag{Name: "ports", Value: "1-1024", Usage: "TCP `RANGE` the exposure check scans, plus the expected ports"},
			&cli.StringFlag{Name: "format", Value: "table", Usage: "output: table or json"},
		},
		Action: func(c *cli.Context) error {
			hosts := fleet.Options{Flake: c.String("flake"), Names: c.Args().Slice(), All: c.Bool("all"),
				Target: c.String("target"), Identities: nonEmpty(c.StringSlice("identity")),
				Drift: true} // the new system's out path, from the same evaluation
			o := switcher.Options{DryRun: c.Bool("dry-run"), Yes: c.Bool("yes"), Confirm: c.Duration("confirm-timeout"),
				Parallel: c.Int("parallel"), BuildOn: c.String("build-on"), Boot: c.Bool("boot"), RebootWait: c.Duration("reboot-timeout"), Timeout: c.Duration("timeout"),
				InitrdPort: c.Int("initrd-port")}
			write, err := switcher.Writer(c.String("format"))
			if err != nil {
				return err
			}
			if f := c.String("disk-password-file"); f != "" {
				if o.DiskPassword, err = unlock.FilePassword(f); err != nil {
					return usageError{err}
				}
			}
			if o.Checks, o.ScanPorts, err = checkOptions(c); err != nil {
				return err
			}
			if err := o.Check(hosts); err != nil {
				return err
			}
			hs, err := loadFleet(c.Context, hosts, switcher.ExitRefused)
			if err != nil {
				return err
			}
			results, err := switcher.Run(c.Context, hs, o, terminal{os.Stdin, c.App.ErrWriter, c.App.ErrWriter})
			if werr := write(c.App.Writer, results); werr != nil {
				return werr
			}
			return err
		},
	}
}
