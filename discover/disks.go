package discover

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/target"
)

// ReadDisks lists each installer's disks as keystone disks does, over SSH
// as root with identities (and ssh-agent), read-only. It accepts only the
// host key whose fingerprint the machine announced: that keeps the
// connection on the machine that answered, but anyone on the link can
// announce anything, so it is no proof of which machine that is. A machine
// without a fingerprint is not connected to. The error, if any, says how
// many could not be read; each one's reason is in its DiskError.
func ReadDisks(ctx context.Context, found []Installer, identities []string) error {
	var wg sync.WaitGroup
	for i := range found {
		m := &found[i]
		t, ok := m.Target()
		if m.Fingerprint == "" || !ok {
			m.DiskError = "not connected: no address and fingerprint to check its host key against"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &fleet.Host{Name: m.Name, Target: t, Identities: identities, HostKeys: sshx.HostKeys{Announced: m.Fingerprint}}
			disks, err := deploy.TargetDisks(ctx, h)
			if err != nil {
				m.DiskError = strings.TrimSpace(err.Error())
				return
			}
			m.DiskList = disks
		}()
	}
	wg.Wait()
	failed := 0
	for _, m := range found {
		if m.DiskError != "" {
			failed++
		}
	}
	if failed > 0 {
		return exit.With(ExitCannot, fmt.Errorf("could not read the disks of %d of %d installers", failed, len(found)))
	}
	return nil
}

// Target is where to reach the installer over SSH: its first IPv4
// address, else its first IPv6 one (a link-local one with its zone).
func (m Installer) Target() (target.Target, bool) {
	var best netip.Addr
	for _, s := range m.Addresses {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		if !best.IsValid() || (a.Is4() && !best.Is4()) {
			best = a
		}
	}
	if !best.IsValid() || m.Port == 0 {
		return target.Target{}, false
	}
	return target.Target{User: "root", Host: best.String(), Port: m.Port}, true
}
