package verify

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
)

// Fleet verifies every host at once, each over its own connection, with
// o's checks and limits (o.Name and o.SSH come from each host). A host
// that could not be worked out, or whose expectations do not hold up, is
// reported as not checked; the others are still verified.
func Fleet(ctx context.Context, hosts []fleet.Host, o Options) []Report {
	reports := make([]Report, len(hosts))
	var wg sync.WaitGroup
	for i := range hosts {
		h := &hosts[i]
		if h.Err != nil {
			reports[i] = NotChecked(h.Name, h.Err)
			continue
		}
		parse := ParseExpectations
		if h.ExpectFrom != "" {
			parse = ParseExpectationsFile
		}
		e, err := parse(h.Expectations)
		if err != nil {
			if h.ExpectFrom != "" {
				err = fmt.Errorf("%s: %w", h.ExpectFrom, err)
			}
			reports[i] = NotChecked(h.Name, err)
			continue
		}
		wg.Go(func() {
			ho := o
			ho.Name, ho.SSH, ho.System = h.Name, h.SSH(), h.Config.System
			ho.InitrdPin = InitrdPin(h.PinFile)
			reports[i] = Run(ctx, e, ho)
		})
	}
	wg.Wait()
	return reports
}

// Check refuses what the command line alone shows to be wrong, before any
// evaluation or connection: hosts are the hosts it names.
func (o Options) Check(hosts fleet.Options) error {
	switch {
	case o.Timeout <= 0:
		return exit.UsageError(hint.Errorf("e.g. --timeout 30s", "--timeout %s: it must be more than 0", o.Timeout))
	case o.Wait < 0:
		return exit.UsageError(hint.Errorf("e.g. --wait 5m, or leave it out to try once", "--wait %s: it cannot be negative", o.Wait))
	case hosts.All && len(hosts.Names) > 0:
		return exit.UsageError(hint.Errorf("see keystone verify --help", "give host names or --all, not both"))
	case len(hosts.Names) > 1 && hosts.Target != "":
		return exit.UsageError(hint.Errorf("verify one host at a time with --target", "--target applies to one host, but %d were given", len(hosts.Names)))
	case !hosts.All && len(hosts.Names) == 0 && hosts.Expect == "":
		return exit.UsageError(hint.Errorf("keystone verify NAME, or --expect FILE --target HOST without a flake", "no host to verify"))
	case hosts.Expect != "" && (len(hosts.Names) > 1 || hosts.All):
		return exit.UsageError(hint.Errorf("verify one host at a time with --expect", "--expect applies to one host, but %d were given", max(len(hosts.Names), 2)))
	}
	return nil
}

// Status is the verdict of the named check, or Skip when it did not run.
func (r Report) Status(check string) Status {
	for _, res := range r.Results {
		if res.Check == check {
			return res.Status
		}
	}
	return Skip
}

// NotCheckedErr is why the host of r was not checked, naming it; nil when
// it was checked.
func (r Report) NotCheckedErr() error {
	if !r.notChecked {
		return nil
	}
	return fleet.Named(r.Host, r.Err)
}

// Writer is the report writer for --format.
func Writer(format string) (func(io.Writer, []Report) error, error) {
	switch format {
	case "table":
		return WriteTable, nil
	case "json":
		return WriteJSON, nil
	case "junit":
		return WriteJUnit, nil
	}
	return nil, exit.UsageError(hint.Errorf("--format takes table, json or junit", "--format %q is not supported", format))
}

// Select is the checks --only and --skip leave.
func Select(only, skip string) ([]Check, error) {
	valid := Names()
	parse := func(flag, s string) (map[string]bool, error) {
		set := map[string]bool{}
		for _, n := range strings.Split(s, ",") {
			if n = strings.TrimSpace(n); n == "" {
				continue
			}
			if !slices.Contains(valid, n) {
				return nil, exit.UsageError(hint.Errorf("checks are: "+strings.Join(valid, ", "), "%s: no check named %q", flag, n))
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
		return nil, exit.UsageError(hint.Errorf("--only ssh runs the ssh check alone", "--skip: the ssh check cannot be skipped: every other check runs over its connection"))
	}
	out := []Check{} // not nil: --only ssh runs no other check
	for _, c := range All() {
		if (len(onlySet) == 0 || onlySet[c.Name]) && !skipSet[c.Name] {
			out = append(out, c)
		}
	}
	return out, nil
}
