package main

import (
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/verify"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check live hosts over SSH against what their configuration says",
		ArgsUsage: "[NAME...]",
		Description: `Connects once to each host and checks, concurrently: ssh, installer, system
(with --drift), hostname, boot, services, sshd, firewall, ipv6, exposure (a TCP
scan from here), zfs, luks, tpm, initrd, mounts, mdns. Expectations and targets come from one nix eval of
nixosConfigurations.NAME.config.keystone; without Nix, from --expect and
--target. The host key must match vms/NAME/ssh_host_ed25519_key.pub (pinned
by deploy) or --known-hosts.

Exit status: 0 all pass (WARN and SKIP allowed), 1 a check failed, 2 cannot
connect, authenticate, trust the host key or become root, 3 nothing was
checked, or some host was not (its config or expectations could not be
read; the others are still checked), 64 bad usage.

Examples:
   keystone verify test-server
   keystone verify --all --format junit > verify.xml
   keystone verify web1 --target root@192.0.2.10:2222 --wait 5m
   keystone verify --expect expect.json --target 192.0.2.10 --known-hosts ./known_hosts --accept-new`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "verify every host in the flake"},
			&cli.StringFlag{Name: "flake", Value: ".", Usage: "`FLAKE` holding nixosConfigurations.NAME"},
			&cli.StringFlag{Name: "target", Usage: "reach the host at `[USER@]HOST[:PORT]` instead of keystone.deploy.*"},
			&cli.StringFlag{Name: "expect", Usage: "read the expectations from JSON `FILE` instead of the flake"},
			&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "private key `FILE` to log in with (repeatable; ssh-agent is used too)"},
			&cli.StringFlag{Name: "known-hosts", Usage: "known_hosts `FILE` for hosts without a pinned key vms/NAME/ssh_host_ed25519_key.pub (default ~/.ssh/known_hosts)"},
			&cli.BoolFlag{Name: "accept-new", Usage: "record an unknown host key in known_hosts (never a changed one)"},
			&cli.BoolFlag{Name: "insecure-ignore-host-key", Usage: "trust any host key (prints a warning)"},
			&cli.DurationFlag{Name: "wait", Usage: "keep trying to connect, and wait while the host boots, for up to `DURATION`"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "limit for each remote command"},
			&cli.StringFlag{Name: "format", Value: "table", Usage: "output: table, json or junit"},
			&cli.StringFlag{Name: "only", Usage: "run only these `CHECKS` (comma-separated)"},
			&cli.StringFlag{Name: "skip", Usage: "skip these `CHECKS` (comma-separated)"},
			&cli.BoolFlag{Name: "drift", Usage: "also check the host runs what the flake builds (evaluates each host's whole system)"},
			&cli.StringFlag{Name: "ports", Value: "1-1024", Usage: "TCP `RANGE` the exposure check scans, plus the expected ports"},
		},
		Action: func(c *cli.Context) error {
			hosts := fleet.Options{
				Flake: c.String("flake"), Names: c.Args().Slice(), All: c.Bool("all"),
				Target: c.String("target"), Expect: c.String("expect"), Identities: nonEmpty(c.StringSlice("identity")),
				KnownHosts: c.String("known-hosts"), AcceptNew: c.Bool("accept-new"), Insecure: c.Bool("insecure-ignore-host-key"),
				Drift: c.Bool("drift"),
			}
			o := verify.Options{Wait: c.Duration("wait"), Timeout: c.Duration("timeout")}
			write, err := verify.Writer(c.String("format"))
			if err != nil {
				return err
			}
			if o.Checks, o.ScanPorts, err = checkOptions(c); err != nil {
				return err
			}
			if err := o.Check(hosts); err != nil {
				return err
			}
			return runVerify(c, hosts, o, write)
		},
	}
}

func runVerify(c *cli.Context, ho fleet.Options, o verify.Options, write func(io.Writer, []verify.Report) error) error {
	hosts, err := fleet.Load(c.Context, ho)
	if err != nil {
		if exit.Code(err) == exit.Usage {
			return err
		}
		// Nothing was checked: not a FAIL (1), nor a host out of reach (2).
		return exit.With(verify.ExitNotChecked, err)
	}
	if ho.Insecure {
		fmt.Fprintln(c.App.ErrWriter, "keystone: warning: --insecure-ignore-host-key: any machine answering at the target address passes the ssh check")
	}
	reports := verify.Fleet(c.Context, hosts, o)
	if len(reports) == 1 && reports[0].NotCheckedErr() != nil {
		return exit.With(verify.ExitNotChecked, reports[0].NotCheckedErr())
	}
	if err := write(c.App.Writer, reports); err != nil {
		return err
	}
	for _, r := range reports {
		if r.Err != nil {
			report(c.App.ErrWriter, fleet.Named(r.Host, r.Err))
		}
	}
	if code := verify.ExitCode(reports); code != 0 {
		return exit.With(code, exit.Reported)
	}
	return nil
}
