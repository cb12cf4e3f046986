package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/nixeval"
)

// Keystone is config.keystone of one host (nix/modules), and what
// `keystone check` lints beside it.
type Keystone struct {
	VM     bool `json:"vm"`
	Deploy struct {
		TargetHost *string `json:"targetHost"`
		TargetUser string  `json:"targetUser"`
		SSHPort    int     `json:"sshPort"`
		// PostKexecSSHPort is where the kexec installer's sshd is reached:
		// null means its own 22; a NAT forward in front of the host sets it.
		PostKexecSSHPort *int                `json:"postKexecSSHPort"`
		BuildOn          string              `json:"buildOn"`
		Disks            []string            `json:"disks"`
		PartitionSizes   map[string][]string `json:"partitionSizes"`
		DiskSecret       bool                `json:"diskSecret"`
	} `json:"deploy"`
	Verify struct {
		Expectations json.RawMessage `json:"expectations"`
	} `json:"verify"`
	// Unlock is keystone.unlock (nix/modules/unlock.nix): the initrd's
	// sshd that keystone unlock talks to.
	Unlock struct {
		SSH struct {
			Enable         bool     `json:"enable"`
			Port           int      `json:"port"`
			HostKey        string   `json:"hostKey"`
			NetworkModules []string `json:"networkModules"`
			InitrdModules  []string `json:"initrdModules"`
		} `json:"ssh"`
	} `json:"unlock"`

	// Not under config.keystone: networking.hostName and hostId, and
	// root's SSH keys, which evalFleet adds for the lint.
	Lint struct {
		HostName string   `json:"hostName"`
		HostID   *string  `json:"hostId"`
		Keys     []string `json:"keys"`
	} `json:"lint"`

	// System is the out path of system.build.toplevel, with Options.Drift:
	// what the host runs when it runs what the flake builds.
	System string `json:"system"`
}

// hostExpr is what one evaluation reads of a host; with drift, its
// toplevel's out path too (no build: the path is known from the
// derivation, which costs the whole system's evaluation).
func hostExpr(drift bool) string {
	system := ""
	if drift {
		system = "\n    system = builtins.unsafeDiscardStringContext host.config.system.build.toplevel.outPath;"
	}
	return `host: host.config.keystone // {
    lint = {
      hostName = host.config.networking.hostName or null;
      hostId = host.config.networking.hostId or null;
      keys = host.config.users.users.root.openssh.authorizedKeys.keys or [ ];
    };` + system + `
  }`
}

// Apply is the --apply of the one evaluation of nixosConfigurations that
// reads the named hosts (nil: all); exported for the tests that hold it
// to lib.fleetInfo.
func Apply(names []string) string { return fleetApply(names, false) }

// fleetApply reads the hosts (null: all) of nixosConfigurations at once.
// A host whose config throws must not hide the others: tryEval marks it,
// and only it is evaluated again for nix's own message. A name the flake
// lacks is marked too.
func fleetApply(names []string, drift bool) string {
	pick := "cs"
	if names != nil {
		quoted := make([]string, len(names))
		for i, n := range names {
			quoted[i] = nixeval.Quote(n)
		}
		pick = `builtins.listToAttrs (map (n: { name = n; value = cs.${n} or null; }) [ ` + strings.Join(quoted, " ") + ` ])`
	}
	return `cs: let
  read = ` + hostExpr(drift) + `;
  try = host: if host == null then { missing = true; } else
    let v = read host; r = builtins.tryEval (builtins.deepSeq v v);
    in if r.success then { ok = r.value; } else { failed = true; };
in builtins.mapAttrs (_: try) (` + pick + `)`
}

// Evaluated is one host of what Apply evaluates to.
type Evaluated struct {
	OK      *Keystone `json:"ok"`
	Failed  bool      `json:"failed"`  // it throws: evaluated again alone, for the message
	Missing bool      `json:"missing"` // no such nixosConfigurations
}

// result is one host's config, or why it could not be read.
type result struct {
	keystone *Keystone
	err      error
}

// evalFleet reads the named hosts, or with all every host, in one
// evaluation, unless that evaluation fails as a whole: then each host
// alone, so that one broken host still leaves the others readable.
func evalFleet(ctx context.Context, flakeRef string, names []string, all, drift bool) (map[string]result, error) {
	if all {
		names = nil
	}
	data, err := nixeval.JSON(ctx, flakeRef, "nixosConfigurations", fleetApply(names, drift))
	if err != nil {
		if !nixeval.Failed(err) {
			return nil, err // no nix, or it cannot run: nothing more to try
		}
		if all {
			if names, err = Names(ctx, flakeRef); err != nil {
				return nil, err
			}
		}
		return evalEach(ctx, flakeRef, names, drift), nil
	}
	var out map[string]Evaluated
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("reading %s#nixosConfigurations: %w", flakeRef, err)
	}
	configs := map[string]result{}
	for name, r := range out {
		switch {
		case r.Missing:
			configs[name] = result{err: hint.Errorf(fmt.Sprintf("see nix flake show %s", flakeRef),
				"flake %s does not provide attribute 'nixosConfigurations.%s'", flakeRef, name)}
		case r.Failed:
			configs[name] = evalOne(ctx, flakeRef, name, drift)
		default:
			configs[name] = result{keystone: r.OK}
		}
	}
	return configs, nil
}

func evalEach(ctx context.Context, flakeRef string, names []string, drift bool) map[string]result {
	configs := map[string]result{}
	for _, name := range names {
		configs[name] = evalOne(ctx, flakeRef, name, drift)
	}
	return configs
}

// evalOne reads one host alone, for nix's own error message.
func evalOne(ctx context.Context, flakeRef, name string, drift bool) result {
	apply := "cs: (" + hostExpr(drift) + ") (builtins.getAttr " + nixeval.Quote(name) + " cs)"
	data, err := nixeval.JSON(ctx, flakeRef, "nixosConfigurations", apply)
	if err != nil {
		return result{err: hint.Wrap(err, fmt.Sprintf("check that %s#nixosConfigurations.%s exists and imports keystone's nixosModules.default", flakeRef, name))}
	}
	var k Keystone
	if err := json.Unmarshal(data, &k); err != nil {
		return result{err: fmt.Errorf("reading %s#nixosConfigurations.%s.config.keystone: %w", flakeRef, name, err)}
	}
	return result{keystone: &k}
}

// Names lists the flake's nixosConfigurations.
func Names(ctx context.Context, flakeRef string) ([]string, error) {
	data, err := nixeval.JSON(ctx, flakeRef, "nixosConfigurations", "builtins.attrNames")
	if err != nil {
		return nil, err
	}
	var names []string
	if err := json.Unmarshal(data, &names); err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

func sortedNames(m map[string]result) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// HostDir is vms/NAME of a flake in a local folder; "" for other flake
// references, whose files are not here.
func HostDir(flakeRef, name string) string {
	dir := strings.TrimPrefix(flakeRef, "path:")
	if !strings.HasPrefix(dir, "/") && !strings.HasPrefix(dir, ".") {
		return ""
	}
	return filepath.Join(dir, "vms", name)
}

// PinnedKeyFile is the name deploy pins a host's key under, in HostDir.
const PinnedKeyFile = "ssh_host_ed25519_key.pub"
