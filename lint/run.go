package lint

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/text"
)

// Options say what `keystone check` lints: the hosts of Flake (one nix
// eval), or of the JSON file Fleet ("-" for stdin) that the flake's lint
// check writes, and the tree under Source for private keys.
type Options struct{ Flake, Fleet, Source string }

// Run lints and prints each finding; any finding is an error.
func Run(ctx context.Context, o Options, w io.Writer) error {
	var hosts map[string]Host
	var findings []Finding
	var err error
	switch o.Fleet {
	case "":
		var all []fleet.Host
		if all, err = fleet.Load(ctx, fleet.Options{Flake: o.Flake, All: true}); err != nil {
			return err
		}
		hosts, findings = FromFleet(all)
	case "-":
		hosts, err = ReadFleet(os.Stdin)
	default:
		var f *os.File
		if f, err = os.Open(o.Fleet); err == nil {
			defer f.Close()
			hosts, err = ReadFleet(f)
		}
	}
	if err != nil {
		return err
	}
	findings = append(findings, Fleet(hosts)...)
	secrets, err := Secrets(o.Source)
	if err != nil {
		return fmt.Errorf("scanning %s: %w", o.Source, err)
	}
	findings = append(findings, secrets...)
	for _, f := range findings {
		fmt.Fprintf(w, "FAIL  %s\n", text.OneLine(f.String()))
	}
	if len(findings) > 0 {
		return fmt.Errorf("%d problems in %d hosts and %s", len(findings), len(hosts), o.Source)
	}
	fmt.Fprintf(w, "ok    %d hosts, no private keys under %s\n", len(hosts), o.Source)
	return nil
}
