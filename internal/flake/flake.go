// Package flake reads what deploy and verify need about a host from one
// `nix eval --json FLAKE#nixosConfigurations.NAME.config.keystone`.
package flake

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/nixeval"
)

// Keystone is config.keystone of one host (nix/modules).
type Keystone struct {
	VM     bool `json:"vm"`
	Deploy struct {
		TargetHost     *string             `json:"targetHost"`
		TargetUser     string              `json:"targetUser"`
		SSHPort        int                 `json:"sshPort"`
		BuildOn        string              `json:"buildOn"`
		Disks          []string            `json:"disks"`
		PartitionSizes map[string][]string `json:"partitionSizes"`
		DiskSecret     bool                `json:"diskSecret"`
	} `json:"deploy"`
	Verify struct {
		Expectations json.RawMessage `json:"expectations"`
	} `json:"verify"`
}

// Host evaluates config.keystone of nixosConfigurations.name in flakeRef.
func Host(ctx context.Context, flakeRef, name string) (*Keystone, error) {
	data, err := nixeval.JSON(ctx, flakeRef, "nixosConfigurations."+quoteAttr(name)+".config.keystone", "")
	if err != nil {
		return nil, hint.Wrap(err, fmt.Sprintf("check that %s#nixosConfigurations.%s exists and imports keystone's nixosModules.default", flakeRef, name))
	}
	var k Keystone
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("reading %s#nixosConfigurations.%s.config.keystone: %w", flakeRef, name, err)
	}
	return &k, nil
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

// quoteAttr quotes name for an attribute path when it needs it.
func quoteAttr(name string) string {
	if strings.ContainsAny(name, `."'\ $`) {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`).Replace(name) + `"`
	}
	return name
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

// PinnedKey is the host key file deploy saved for name, or "" when there
// is none.
func PinnedKey(flakeRef, name string) string {
	dir := HostDir(flakeRef, name)
	if dir == "" {
		return ""
	}
	p := filepath.Join(dir, PinnedKeyFile)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}
