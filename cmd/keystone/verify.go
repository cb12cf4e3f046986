package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/internal/flake"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/target"
	"github.com/keystone-nix/keystone/internal/text"
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
			o := verifyOptions{
				Names: c.Args().Slice(), All: c.Bool("all"), Flake: c.String("flake"),
				Target: c.String("target"), Expect: c.String("expect"), Identities: nonEmpty(c.StringSlice("identity")),
				KnownHosts: c.String("known-hosts"), AcceptNew: c.Bool("accept-new"), Insecure: c.Bool("insecure-ignore-host-key"),
				Wait: c.Duration("wait"), Timeout: c.Duration("timeout"), Format: c.String("format"),
				Only: c.String("only"), Skip: c.String("skip"), Ports: c.String("ports"),
			}
			return runVerify(c.Context, c.App.Writer, c.App.ErrWriter, o)
		},
	}
}

type verifyOptions struct {
	Names                     []string
	All                       bool
	Flake, Target, Expect     string
	Identities                []string
	KnownHosts                string
	AcceptNew, Insecure       bool
	Wait, Timeout             time.Duration
	Format, Only, Skip, Ports string
}

// verifyJob is one host to verify, fully resolved, or why it cannot be.
type verifyJob struct {
	name   string
	expect *verify.Expectations
	opts   verify.Options
	err    error
}

func runVerify(ctx context.Context, stdout, stderr io.Writer, o verifyOptions) error {
	write, err := reportWriter(o.Format)
	if err != nil {
		return err
	}
	checks, err := selectChecks(o.Only, o.Skip)
	if err != nil {
		return err
	}
	if o.Timeout <= 0 {
		return usageError{hint.Errorf("e.g. --timeout 30s", "--timeout %s: it must be more than 0", o.Timeout)}
	}
	if o.Wait < 0 {
		return usageError{hint.Errorf("e.g. --wait 5m, or leave it out to try once", "--wait %s: it cannot be negative", o.Wait)}
	}
	ports, err := verify.ParsePorts(o.Ports)
	if err != nil {
		return usageError{hint.Errorf("e.g. --ports 1-1024,8080", "--ports: %v", err)}
	}
	jobs, err := verifyJobs(ctx, o)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return err
		}
		// Nothing was checked: not a FAIL (1), nor a host out of reach (2).
		return codeError{err, verify.ExitNotChecked}
	}
	if o.Insecure {
		fmt.Fprintln(stderr, "keystone: warning: --insecure-ignore-host-key: any machine answering at the target address passes the ssh check")
	}
	reports := make([]verify.Report, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		j.opts.Checks = checks
		j.opts.Wait, j.opts.Timeout = o.Wait, o.Timeout
		j.opts.ScanPorts = ports
		if j.err != nil {
			reports[i] = verify.NotChecked(j.name, j.err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			reports[i] = verify.Run(ctx, j.expect, j.opts)
		}()
	}
	wg.Wait()
	if err := write(stdout, reports); err != nil {
		return err
	}
	for _, r := range reports {
		if r.Err != nil {
			msg := r.Err.Error()
			if !strings.HasPrefix(msg, r.Host+":") && !strings.HasPrefix(msg, r.Host+" ") {
				msg = r.Host + ": " + msg
			}
			fmt.Fprintf(stderr, "keystone: error: %s\n", text.OneLine(msg))
			if h := hint.Of(r.Err); h != "" {
				fmt.Fprintf(stderr, "keystone: hint: %s\n", text.OneLine(h))
			}
		}
	}
	if code := verify.ExitCode(reports); code != 0 {
		return codeError{errReported, code}
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

// verifyJobs resolves the hosts to verify: expectations, address, user,
// and which host key to trust.
func verifyJobs(ctx context.Context, o verifyOptions) ([]verifyJob, error) {
	var override *target.Target
	if o.Target != "" {
		t, err := target.Parse(o.Target)
		if err != nil {
			return nil, usageError{err}
		}
		override = t
	}
	names := o.Names
	if o.All {
		if len(names) > 0 {
			return nil, usageError{hint.Errorf("see keystone verify --help", "give host names or --all, not both")}
		}
		all, err := flake.Names(ctx, o.Flake)
		if err != nil {
			return nil, err
		}
		names = all
	}
	switch {
	case override != nil && len(names) > 1:
		return nil, usageError{hint.Errorf("verify one host at a time with --target", "--target applies to one host, but %d were given", len(names))}
	case len(names) == 0 && o.Expect == "":
		return nil, usageError{hint.Errorf("keystone verify NAME, or --expect FILE --target HOST without a flake", "no host to verify")}
	case o.Expect != "" && len(names) > 1:
		return nil, usageError{hint.Errorf("verify one host at a time with --expect", "--expect applies to one host, but %d were given", len(names))}
	}

	var fileExpect *verify.Expectations
	if o.Expect != "" {
		data, err := os.ReadFile(o.Expect)
		if err != nil {
			return nil, hint.Wrap(fmt.Errorf("--expect: %w", err),
				"give the JSON that nix eval --json .#nixosConfigurations.NAME.config.keystone.verify.expectations prints")
		}
		if fileExpect, err = verify.ParseExpectations(data); err != nil {
			return nil, fmt.Errorf("--expect %s: %w", o.Expect, err)
		}
		if len(names) == 0 {
			if override == nil {
				return nil, usageError{hint.Errorf("keystone verify --expect FILE --target [USER@]HOST[:PORT]", "--expect without a host name needs --target")}
			}
			names = []string{fileExpect.Hostname}
		}
	}

	var jobs []verifyJob
	for _, name := range names {
		j, err := resolveJob(ctx, o, name, fileExpect, override)
		if err != nil {
			if len(names) == 1 {
				return nil, err
			}
			// One host's broken config must not hide the fleet's state.
			j = verifyJob{name: name, err: err}
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// resolveJob works out one host's expectations, address and host key.
func resolveJob(ctx context.Context, o verifyOptions, name string, expect *verify.Expectations, t *target.Target) (verifyJob, error) {
	j := verifyJob{name: name, expect: expect}
	if expect == nil || t == nil {
		k, err := flake.Host(ctx, o.Flake, name)
		if err != nil {
			return j, err
		}
		if j.expect == nil {
			if j.expect, err = verify.ParseExpectations(k.Verify.Expectations); err != nil {
				return j, fmt.Errorf("%s: %w", name, err)
			}
		}
		if t == nil {
			if t, err = configTarget(name, k); err != nil {
				return j, err
			}
		}
	}
	keys, err := hostKeys(o, name)
	if err != nil {
		return j, err
	}
	j.opts = verify.Options{Name: name, SSH: sshx.Options{
		Addr: t.Addr(), User: t.User, Identities: o.Identities, HostKeys: keys,
	}}
	return j, nil
}

func hostKeys(o verifyOptions, name string) (sshx.HostKeys, error) {
	if o.Insecure {
		return sshx.HostKeys{Insecure: true}, nil
	}
	// The pin deploy wrote wins over any known_hosts: it is the key the
	// install put there.
	if p := flake.PinnedKey(o.Flake, name); p != "" {
		key, err := sshx.ReadPinned(p)
		if err != nil {
			return sshx.HostKeys{}, err
		}
		return sshx.HostKeys{Pinned: key, PinnedFrom: p}, nil
	}
	kh := o.KnownHosts
	if kh == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return sshx.HostKeys{}, err
		}
		kh = filepath.Join(home, ".ssh", "known_hosts")
	}
	return sshx.HostKeys{KnownHosts: kh, AcceptNew: o.AcceptNew}, nil
}

// configTarget is where keystone.deploy says the host is.
func configTarget(name string, k *flake.Keystone) (*target.Target, error) {
	fix := "set keystone.deploy.targetHost in vms/" + name + "/configuration.nix, or pass --target [USER@]HOST[:PORT]"
	if k.Deploy.TargetHost == nil || *k.Deploy.TargetHost == "" {
		return nil, hint.Errorf(fix, "%s has no target: keystone.deploy.targetHost is not set", name)
	}
	t, err := target.FromConfig(*k.Deploy.TargetHost, k.Deploy.TargetUser, k.Deploy.SSHPort)
	if err != nil {
		return nil, hint.Wrap(fmt.Errorf("%s: %w", name, err), "fix keystone.deploy in vms/"+name+"/configuration.nix, or pass --target [USER@]HOST[:PORT]")
	}
	return t, nil
}
