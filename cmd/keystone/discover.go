package main

import (
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/discover"
	"github.com/keystone-nix/keystone/internal/hint"
)

func discoverCommand() *cli.Command {
	return &cli.Command{
		Name:  "discover",
		Usage: "find the machines booted from keystone's installer on the local network (mDNS)",
		Description: `Asks every network link here (IPv4 and IPv6 multicast, UDP 5353) for the
installers that keystone iso builds: each announces _keystone-installer._tcp
with its address, SSH port, the SHA256 fingerprint of its SSH host key, UEFI
or BIOS, its system and how many disks it has. One row a machine, then the
commands that install it.

The fingerprint came over the network, where anyone can announce anything:
compare it with the one the installer prints on its console; it is not a
reason to trust the machine. With --disks, discover logs in to each (as root,
with -i and ssh-agent), accepts only the announced host key, and lists its
disks as keystone disks does, changing nothing.

Exit status: 0 found some, 1 none answered, 2 cannot ask (no multicast link)
or a machine's disks could not be read, 64 a bad command line.

Examples:
   keystone discover
   keystone discover --disks -i ~/.ssh/id_ed25519 --timeout 5s
   keystone discover --interface eth0 --format json`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "timeout", Value: 3 * time.Second, Usage: "how long to listen for answers"},
			&cli.StringFlag{Name: "format", Value: "table", Usage: "output: table or json"},
			&cli.BoolFlag{Name: "disks", Usage: "also list each machine's disks over SSH (read-only)"},
			&cli.StringSliceFlag{Name: "interface", Usage: "ask only on network interface `NAME` (repeatable)"},
			&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "with --disks: private key `FILE` to log in with (repeatable; ssh-agent is used too)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageError{hint.Errorf("see keystone discover --help", "discover takes no arguments, got %d", c.NArg())}
			}
			write := map[string]func(w io.Writer, found []discover.Installer) error{"table": discover.WriteTable, "json": discover.WriteJSON}[c.String("format")]
			if write == nil {
				return usageError{hint.Errorf("--format takes table or json", "--format %q is not supported", c.String("format"))}
			}
			if t := c.Duration("timeout"); t <= 0 || t > 10*time.Minute {
				return usageError{hint.Errorf("e.g. --timeout 3s", "--timeout %s is not between 0 and 10m", t)}
			}
			found, err := discover.Find(c.Context, discover.Options{Timeout: c.Duration("timeout"),
				Interfaces: nonEmpty(c.StringSlice("interface")), Warn: c.App.ErrWriter})
			if err != nil {
				return err
			}
			var diskErr error
			if c.Bool("disks") {
				diskErr = discover.ReadDisks(c.Context, found, nonEmpty(c.StringSlice("identity")))
			}
			if err := write(c.App.Writer, found); err != nil {
				return err
			}
			return diskErr
		},
	}
}
