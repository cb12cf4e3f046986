package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/verify"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check live hosts over SSH against what their configuration says",
		ArgsUsage: "[NAME...]",
		Description: `Connects once to each host and checks, concurrently: ssh, installer, hostname,
boot, services, sshd, firewall, exposure (a TCP scan from here), zfs, luks,
mounts, mdns. Expectations and targets come from one nix eval of
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
			&cli.StringFlag{Name: "ports", Value: "1-1024", Usage: "TCP `RANGE` the exposure check scans, plus the expected ports"},
		},
		Action: func(c *cli.Context) error {
			hosts := fleet.Options{
				Flake: c.String("flake"), Names: c.Args().Slice(), All: c.Bool("all"),
				Target: c.String("target"), Expect: c.String("expect"), Identities: nonEmpty(c.StringSlice("identity")),
				KnownHosts: c.String("known-hosts"), AcceptNew: c.Bool("accept-new"), Insecure: c.Bool("insecure-ignore-host-key"),
			}
			o := verify.Options{Wait: c.Duration("wait"), Timeout: c.Duration("timeout")}
			write, err := reportWriter(c.String("format"))
			if err != nil {
				return err
			}
			if o.Checks, err = selectChecks(c.String("only"), c.String("skip")); err != nil {
				return err
			}
			if o.ScanPorts, err = verify.ParsePorts(c.String("ports")); err != nil {
				return usageError{hint.Errorf("e.g. --ports 1-1024,8080", "--ports: %v", err)}
			}
			if err := checkVerifyOptions(hosts, o); err != nil {
				return err
			}
			return runVerify(c, hosts, o, write)
		},
	}
}

// checkVerifyOptions refuses what the command line alone shows to be wrong.
func checkVerifyOptions(hosts fleet.Options, o verify.Options) error {
	switch {
	case o.Timeout <= 0:
		return usageError{hint.Errorf("e.g. --timeout 30s", "--timeout %s: it must be more than 0", o.Timeout)}
	case o.Wait < 0:
		return usageError{hint.Errorf("e.g. --wait 5m, or leave it out to try once", "--wait %s: it cannot be negative", o.Wait)}
	case hosts.All && len(hosts.Names) > 0:
		return usageError{hint.Errorf("see keystone verify --help", "give host names or --all, not both")}
	case len(hosts.Names) > 1 && hosts.Target != "":
		return usageError{hint.Errorf("verify one host at a time with --target", "--target applies to one host, but %d were given", len(hosts.Names))}
	case !hosts.All && len(hosts.Names) == 0 && hosts.Expect == "":
		return usageError{hint.Errorf("keystone verify NAME, or --expect FILE --target HOST without a flake", "no host to verify")}
	case hosts.Expect != "" && (len(hosts.Names) > 1 || hosts.All):
		return usageError{hint.Errorf("verify one host at a time with --expect", "--expect applies to one host, but %d were given", max(len(hosts.Names), 2))}
	}
	return nil
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

func reportWriter(format string) (func(io.Writer, []verify.Report) error, error) {
	switch format {
	case "table":
		return verify.WriteTable, nil
	case "json":
		return verify.WriteJSON, nil
	case "junit":
		return verify.WriteJUnit, nil
	}
	return nil, usageError{hint.Errorf("--format takes table, json or junit", "--format %q is not supported", format)}
}

func selectChecks(only, skip string) ([]verify.Check, error) {
	valid := verify.Names()
	parse := func(flag, s string) (map[string]bool, error) {
		set := map[string]bool{}
		for _, n := range strings.Split(s, ",") {
			if n = strings.TrimSpace(n); n == "" {
				continue
			}
			if !slices.Contains(valid, n) {
				return nil, usageError{hint.Errorf("checks are: "+strings.Join(valid, ", "), "%s: no check named %q", flag, n)}
			}
			set[n] = true
		}
		return set, nil
	}
	onlySet, err := parse("--only", only)
	if err != nil {
		return nil, err
	}
	skipSet, err := parse("--skip", skip)
	if err != nil {
		return nil, err
	}
	if skipSet["ssh"] {
		return nil, usageError{hint.Errorf("--only ssh runs the ssh check alone", "--skip: the ssh check cannot be skipped: every other check runs over its connection")}
	}
	out := []verify.Check{} // not nil: --only ssh runs no other check
	for _, c := range verify.All() {
		if (len(onlySet) == 0 || onlySet[c.Name]) && !skipSet[c.Name] {
			out = append(out, c)
		}
	}
	return out, nil
}
