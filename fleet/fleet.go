// Package fleet knows a host: it turns a flake reference and host names,
// plus the command line's overrides, into the hosts deploy, verify and
// check work on: where each is reached, what its configuration says about
// its install and its checks, and which host key to trust. A whole fleet
// costs one `nix eval`.
package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/target"
)

// Options are where the hosts come from and the command line's overrides.
type Options struct {
	Flake string   // a flake reference; "." by default
	Names []string // the hosts; with All, none
	All   bool     // every nixosConfigurations of the flake

	Target string // [USER@]HOST[:PORT] of the one host, instead of keystone.deploy.*
	Expect string // a JSON file of expectations, instead of the flake's
	Config string // a JSON file of config.keystone, instead of nix eval (tests)
	Drift  bool   // also evaluate each host's system.build.toplevel: a whole evaluation of it

	Identities []string // private key files to log in with
	KnownHosts string   // for hosts without a pin; default ~/.ssh/known_hosts
	AcceptNew  bool     // record an unknown host key in KnownHosts
	Insecure   bool     // trust any host key
}

// Host is one host as the flake and the command line say it is.
type Host struct {
	Name   string
	Flake  string // the flake reference it came from
	Target target.Target
	Config Keystone // config.keystone; zero when --expect and --target stand in for the flake
	// Evaluated says Config holds what the flake says (Err may still be
	// set: a config without a target, say).
	Evaluated bool

	// Expectations is what verify checks the host against: the JSON of
	// keystone.verify.expectations, or of the --expect file.
	Expectations json.RawMessage

	ExpectFrom string // "--expect FILE" when the expectations came from there, for messages

	Identities []string
	HostKeys   sshx.HostKeys // the pin, else known_hosts, else (Insecure) anything
	PinFile    string        // where deploy pins the host's key, and verify reads it

	// Err says why the host could not be worked out; the rest of the
	// fleet is still usable. It never names the host: callers do, once.
	Err error
}

// SSH is how to connect to the host.
func (h *Host) SSH() sshx.Options {
	return sshx.Options{Addr: h.Target.Addr(), User: h.Target.User, Identities: h.Identities, HostKeys: h.HostKeys}
}

// Load works out every host Options names. An error is one about the whole
// command (no such flake, no Nix, a bad override); one host's problem is
// in its Host.Err.
func Load(ctx context.Context, o Options) ([]Host, error) {
	if o.Flake == "" {
		o.Flake = "."
	}
	var override *target.Target
	if o.Target != "" {
		t, err := target.Parse(o.Target)
		if err != nil {
			return nil, exit.UsageError(err)
		}
		override = t
	}
	var fileExpect json.RawMessage
	if o.Expect != "" {
		data, err := os.ReadFile(o.Expect)
		if err != nil {
			return nil, hint.Wrap(fmt.Errorf("--expect: %w", err),
				"give the JSON that nix eval --json .#nixosConfigurations.NAME.config.keystone.verify.expectations prints")
		}
		fileExpect = data
		if len(o.Names) == 0 && !o.All {
			if override == nil {
				return nil, exit.UsageError(hint.Errorf("keystone verify --expect FILE --target [USER@]HOST[:PORT]", "--expect without a host name needs --target"))
			}
			o.Names = []string{expectedHostname(data)}
		}
	}

	// Without a flake to ask, --expect and --target say it all.
	needConfig := fileExpect == nil || override == nil
	var configs map[string]result
	names := o.Names
	switch {
	case o.Config != "":
		if len(names) != 1 {
			return nil, exit.UsageError(errors.New("--config describes one host"))
		}
		k, err := readConfig(o.Config)
		configs = map[string]result{names[0]: {k, err}}
	case needConfig || o.All:
		var err error
		if configs, err = evalFleet(ctx, o.Flake, names, o.All, o.Drift); err != nil {
			return nil, err
		}
		if o.All {
			names = sortedNames(configs)
		}
	}
	if override != nil && len(names) > 1 {
		return nil, exit.UsageError(hint.Errorf("one host at a time with --target", "--target applies to one host, but %d were given", len(names)))
	}

	hosts := make([]Host, len(names))
	for i, name := range names {
		h := &hosts[i]
		h.Name, h.Flake, h.Identities = name, o.Flake, o.Identities
		// A remote flake: the pin goes where a local checkout would have it.
		h.PinFile = filepath.Join(cmp.Or(HostDir(o.Flake, name), filepath.Join("vms", name)), PinnedKeyFile)
		h.Expectations = fileExpect
		if fileExpect != nil {
			h.ExpectFrom = "--expect " + o.Expect
		}
		if r, ok := configs[name]; ok {
			if r.err != nil {
				h.Err = r.err
				continue
			}
			h.Config, h.Evaluated = *r.keystone, true
			if h.Expectations == nil {
				h.Expectations = h.Config.Verify.Expectations
			}
		}
		switch {
		case override != nil:
			h.Target = *override
		default:
			t, err := h.Config.target(name)
			if err != nil {
				h.Err = err
				continue
			}
			h.Target = *t
		}
		if h.HostKeys, h.Err = hostKeys(o, h.PinFile); h.Err != nil {
			continue
		}
	}
	return hosts, nil
}

// target is where keystone.deploy says the host is.
func (k *Keystone) target(name string) (*target.Target, error) {
	fix := "set keystone.deploy.targetHost in vms/" + name + "/configuration.nix, or pass --target [USER@]HOST[:PORT]"
	if k.Deploy.TargetHost == nil || *k.Deploy.TargetHost == "" {
		return nil, hint.Errorf(fix, "no target: keystone.deploy.targetHost is not set")
	}
	t, err := target.FromConfig(*k.Deploy.TargetHost, k.Deploy.TargetUser, k.Deploy.SSHPort)
	if err != nil {
		return nil, hint.Wrap(err, "fix keystone.deploy in vms/"+name+"/configuration.nix, or pass --target [USER@]HOST[:PORT]")
	}
	return t, nil
}

// hostKeys is which host keys a connection to the host trusts.
func hostKeys(o Options, pinFile string) (sshx.HostKeys, error) {
	if o.Insecure {
		return sshx.HostKeys{Insecure: true}, nil
	}
	// The pin deploy wrote wins over any known_hosts: it is the key the
	// install put there.
	if _, err := os.Stat(pinFile); pinFile != "" && err == nil {
		key, err := sshx.ReadPinned(pinFile)
		if err != nil {
			return sshx.HostKeys{}, err
		}
		return sshx.HostKeys{Pinned: key, PinnedFrom: pinFile}, nil
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

// expectedHostname names a host verified from an expectations file alone;
// verify judges the file itself.
func expectedHostname(data []byte) string {
	var e struct{ Hostname string }
	if json.Unmarshal(data, &e) != nil || e.Hostname == "" {
		return "" // its error names the file
	}
	return e.Hostname
}

func readConfig(path string) (*Keystone, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var k Keystone
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &k, nil
}

// HostError names the host an error is about, once.
type HostError struct {
	Name string
	Err  error
}

func (e *HostError) Error() string { return e.Name + ": " + e.Err.Error() }
func (e *HostError) Unwrap() error { return e.Err }

// Named is err about the host name, or nil; with no name, err itself.
func Named(name string, err error) error {
	if err == nil || name == "" {
		return err
	}
	return &HostError{name, err}
}

// AtTarget is a host known only by where it is (o.Target), not by a
// flake: `keystone disks` and `new-host --disk auto` read a machine that is
// not installed yet. Its host key is judged by known_hosts, as verify's.
func AtTarget(o Options) (*Host, error) {
	t, err := target.Parse(o.Target)
	if err != nil {
		return nil, exit.UsageError(err)
	}
	h := &Host{Name: t.Host, Target: *t, Identities: o.Identities}
	o.Flake = "" // no pin: the machine has no flake host yet
	if h.HostKeys, err = hostKeys(o, ""); err != nil {
		return nil, err
	}
	return h, nil
}
