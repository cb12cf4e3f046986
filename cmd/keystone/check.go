package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/text"
	"github.com/keystone-nix/keystone/lint"
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "lint the fleet: names, host ids, keys, disks, targets, and no private keys in the tree",
		Description: `Checks every host of the flake (from one nix eval) and scans the source tree
for private key material. It is the lint check of ` + "`nix flake check`" + `.

Examples:
   keystone check                                # the flake in this folder
   keystone check --flake github:me/fleet --source .
   keystone check --fleet fleet.json --source .  # without Nix: the JSON the flake's lint check writes`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "flake", Value: ".", Usage: "`FLAKE` whose nixosConfigurations to check"},
			&cli.StringFlag{Name: "fleet", Usage: "read the hosts from JSON `FILE` (- for stdin) instead of evaluating the flake"},
			&cli.StringFlag{Name: "source", Value: ".", Usage: "folder to scan for private keys"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageError{hint.Errorf("see keystone check --help", "check takes no arguments, got %d", c.NArg())}
			}
			return runCheck(c, checkOptions{Flake: c.String("flake"), Fleet: c.String("fleet"), Source: c.String("source")})
		},
	}
}

type checkOptions struct{ Flake, Fleet, Source string }

func runCheck(c *cli.Context, o checkOptions) error {
	var hosts map[string]lint.Host
	var findings []lint.Finding
	var err error
	switch o.Fleet {
	case "":
		var all []fleet.Host
		if all, err = fleet.Load(c.Context, fleet.Options{Flake: o.Flake, All: true}); err != nil {
			return err
		}
		hosts, findings = lint.FromFleet(all)
	case "-":
		hosts, err = lint.ReadFleet(os.Stdin)
	default:
		var f *os.File
		if f, err = os.Open(o.Fleet); err == nil {
			defer f.Close()
			hosts, err = lint.ReadFleet(f)
		}
	}
	if err != nil {
		return err
	}
	findings = append(findings, lint.Fleet(hosts)...)
	secrets, err := lint.Secrets(o.Source)
	if err != nil {
		return fmt.Errorf("scanning %s: %w", o.Source, err)
	}
	findings = append(findings, secrets...)
	w := c.App.Writer
	for _, f := range findings {
		fmt.Fprintf(w, "FAIL  %s\n", text.OneLine(f.String()))
	}
	if len(findings) > 0 {
		return fmt.Errorf("%d problems in %d hosts and %s", len(findings), len(hosts), o.Source)
	}
	fmt.Fprintf(w, "ok    %d hosts, no private keys under %s\n", len(hosts), o.Source)
	return nil
}
