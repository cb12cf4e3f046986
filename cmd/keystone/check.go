package main

import (
	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/internal/hint"
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
			return lint.Run(c.Context, lint.Options{Flake: c.String("flake"), Fleet: c.String("fleet"), Source: c.String("source")}, c.App.Writer)
		},
	}
}
