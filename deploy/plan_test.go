package deploy

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/target"
	"github.com/keystone-nix/keystone/verify"
)

// TestPlanSaysThePoolSize: a pool over several disks is said in the plan,
// with the smallest disk, which sets each disk's share.
func TestPlanSaysThePoolSize(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		vdev string
		want string
	}{
		{"mirror", "  pool       rpool: mirror of 2 disks; the smallest disk, /dev/disk/by-id/ata-A (3725.3 GiB), sets each disk's share\n"},
		{"stripe", "  pool       rpool: stripe of 2 disks; no redundancy: one failed disk loses the pool\n"},
	} {
		f := installer()
		twoDisks(4000, 4001)(f)
		p := &plan{
			host:    &fleet.Host{Name: "web1", Target: target.Target{Host: "192.0.2.10", User: "root", Port: 22}},
			expect:  &verify.Expectations{Hostname: "web1", ZFS: &verify.ZFS{Pools: []string{"rpool"}, Topology: map[string]verify.Topology{"rpool": {Vdev: tc.vdev, Disks: 2}}}},
			facts:   f,
			hostKey: signer.PublicKey(),
		}
		var b strings.Builder
		printPlan(&b, p, Options{})
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%s: plan\n%s\nwant the line %q", tc.vdev, b.String(), tc.want)
		}
	}
}
