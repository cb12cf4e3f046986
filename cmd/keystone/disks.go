package main

import (
	"io"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/hint"
)

func disksCommand() *cli.Command {
	return &cli.Command{
		Name:      "disks",
		Usage:     "list a machine's disks by their stable names, to choose the one to install on",
		ArgsUsage: "[USER@]HOST[:PORT]",
		Description: `Connects read-only (the host key as verify trusts it: known_hosts, or
--accept-new) and lists every disk: the stable name for --disk
(/dev/disk/by-id/…, or the kernel name where there is none, as for virtio
disks without a serial), kernel name, size, model, serial, transport, and
whether it holds the running system or the boot medium, or is removable.

Examples:
   keystone disks root@192.0.2.10 --accept-new
   keystone disks root@127.0.0.1:2222 --format json`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "private key `FILE` to log in with (repeatable; ssh-agent is used too)"},
			&cli.StringFlag{Name: "known-hosts", Usage: "known_hosts `FILE` (default ~/.ssh/known_hosts)"},
			&cli.BoolFlag{Name: "accept-new", Usage: "record an unknown host key in known_hosts (never a changed one)"},
			&cli.StringFlag{Name: "format", Value: "table", Usage: "output: table or json"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError{hint.Errorf("keystone disks [USER@]HOST[:PORT]", "disks takes one target, got %d", c.NArg())}
			}
			write := map[string]func(w io.Writer, d []deploy.Disk) error{"table": deploy.WriteDisks, "json": deploy.WriteDisksJSON}[c.String("format")]
			if write == nil {
				return usageError{hint.Errorf("--format takes table or json", "--format %q is not supported", c.String("format"))}
			}
			h, err := fleet.AtTarget(targetOptions(c, c.Args().First()))
			if err != nil {
				return err
			}
			disks, err := deploy.TargetDisks(c.Context, h)
			if err != nil {
				return err
			}
			return write(c.App.Writer, disks)
		},
	}
}

// targetOptions are the flags that say how to reach and trust a machine
// by its address alone.
func targetOptions(c *cli.Context, t string) fleet.Options {
	return fleet.Options{Target: t, Identities: nonEmpty(c.StringSlice("identity")),
		KnownHosts: c.String("known-hosts"), AcceptNew: c.Bool("accept-new")}
}
