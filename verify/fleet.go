package verify

import (
	"context"
	"fmt"
	"sync"

	"github.com/keystone-nix/keystone/fleet"
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
		e, err := ParseExpectations(h.Expectations)
		if err != nil {
			if h.ExpectFrom != "" {
				err = fmt.Errorf("%s: %w", h.ExpectFrom, err)
			}
			reports[i] = NotChecked(h.Name, err)
			continue
		}
		wg.Go(func() {
			ho := o
			ho.Name, ho.SSH = h.Name, h.SSH()
			reports[i] = Run(ctx, e, ho)
		})
	}
	wg.Wait()
	return reports
}

// NotCheckedErr is why the host of r was not checked, naming it; nil when
// it was checked.
func (r Report) NotCheckedErr() error {
	if !r.notChecked {
		return nil
	}
	return fleet.Named(r.Host, r.Err)
}
