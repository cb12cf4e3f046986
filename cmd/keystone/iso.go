package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/generate"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/iso"
)

func isoCommand() *cli.Command {
	return &cli.Command{
		Name:  "iso",
		Usage: "build the NixOS installer ISO that root logs in to with the fleet's SSH keys",
		Description: `Builds packages.<system>.installer-iso of the flake with nix build: the NixOS
minimal installer with sshd on and root's authorized keys = every root key of
every host of the fleet, each once (or the --key keys); no password logs in
over SSH. Prints the ISO's path, for keystone vm up NAME --iso PATH or a USB stick.
Needs Nix 2.18 or later (nixpkgs nixos-25.11's minimum; Debian's nix-bin is
older), checked first. A failed build leaves no --out DIR it made.

Exit status: 0 built, 1 the build failed or Nix is missing or too old,
64 bad usage (a --system other than x86_64-linux or aarch64-linux).

Examples:
   keystone iso --out .
   keystone iso --key ~/.ssh/id_ed25519.pub`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "flake", Value: ".", Usage: "`FLAKE` whose fleet's keys to bake in (it must export lib.installerIso for --key)"},
			&cli.StringSliceFlag{Name: "key", Usage: "root's SSH public `KEY` instead of the fleet's: a .pub file, an authorized_keys file, or a key line (repeatable)"},
			&cli.StringFlag{Name: "out", Usage: "keep the build as `DIR`/installer-iso (default: no link in the tree)"},
			&cli.StringFlag{Name: "system", Usage: "build for `SYSTEM`: x86_64-linux or aarch64-linux (default: this machine's)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageError{hint.Errorf("see keystone iso --help", "iso takes no arguments, got %d", c.NArg())}
			}
			var keys []string
			if specs := nonEmpty(c.StringSlice("key")); len(specs) > 0 {
				loaded, _, err := generate.LoadKeys(specs)
				if err != nil {
					return err
				}
				for _, k := range loaded {
					keys = append(keys, k.Line)
				}
			}
			path, err := iso.Build(c.Context, iso.Options{Flake: c.String("flake"), Keys: keys, Out: c.String("out"),
				System: c.String("system"), Stderr: c.App.ErrWriter})
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, path)
			return nil
		},
	}
}
