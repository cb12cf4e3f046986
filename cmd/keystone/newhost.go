package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/generate"
	"github.com/keystone-nix/keystone/internal/hint"
)

func newHostCommand() *cli.Command {
	return &cli.Command{
		Name:      "new-host",
		Usage:     "render vms/NAME/configuration.nix and its disk layout",
		ArgsUsage: "NAME",
		Description: `Renders vms/NAME/configuration.nix and vms/NAME/disk-config.nix, so the flake
gains nixosConfigurations.NAME. Every input is checked first; on any error
nothing is written.

Examples:
   # a physical server, disk by its stable name, ZFS with encryption
   keystone new-host web1 --disk /dev/disk/by-id/nvme-Samsung_SSD_980_S64DNX0R123456 \
       --key ~/.ssh/id_ed25519.pub --target root@192.0.2.10

   # a QEMU/KVM guest on /dev/vda, plain ext4, two keys
   keystone new-host test-vm --vm --layout ext4 --key ~/.ssh/id_ed25519.pub \
       --key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI… ci@example" --target 192.168.122.50

   # two disks, a ZFS mirror: an ESP on each, either disk boots the host
   keystone new-host db2 --disk /dev/disk/by-id/nvme-A_1 --disk /dev/disk/by-id/nvme-A_2 --key keys.pub

   # see what would be written, and the entry for a flake that lists hosts by hand
   keystone new-host db1 --disk /dev/disk/by-id/ata-X --key keys.pub --layout luks --dry-run --print-entry`,
		OnUsageError: commandUsageError,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "disk", Usage: "whole disk `DEVICE` to install on: /dev/disk/by-id/… (kernel names like /dev/vda only with --vm), or auto: the one disk of --target that fits; repeat it for a pool over several disks (zfs-encrypted)"},
			&cli.StringFlag{Name: "topology", Usage: "how the pool uses the disks, `TOPOLOGY`: " + strings.Join(generate.Topologies, ", ") + " (default: single for one disk, mirror for two, raidz1 for three or more)"},
			&cli.StringSliceFlag{Name: "key", Usage: "root's SSH public `KEY`: a .pub file, an authorized_keys file, or a key line (repeatable)"},
			&cli.StringFlag{Name: "target", Usage: "the `[USER@]HOST[:PORT]` that deploy and verify connect to"},
			&cli.StringFlag{Name: "layout", Value: generate.Layouts[0], Usage: "disk `LAYOUT`: " + strings.Join(generate.Layouts, ", ")},
			&cli.StringFlag{Name: "system", Value: generate.Systems[0], Usage: "platform `SYSTEM`: " + strings.Join(generate.Systems, ", ")},
			&cli.BoolFlag{Name: "vm", Usage: "a virtual machine: QEMU guest drivers, kernel disk names allowed, --disk defaults to " + generate.DefaultVMDisk},
			&cli.StringFlag{Name: "host-id", Usage: "networking.hostId, 8 `HEX` digits (default: derived from NAME)"},
			&cli.StringFlag{Name: "initrd-nic", Usage: "kernel `MODULE` of the network card the initrd unlocks over (keystone unlock), such as igb; a VM's is virtio_net"},
			&cli.StringFlag{Name: "swap", Value: "0", Usage: "swap partition `SIZE` such as 8G or 512M; 0 for none"},
			&cli.StringFlag{Name: "dir", Value: "vms", Usage: "`DIR` that holds one folder per host"},
			&cli.StringFlag{Name: "templates", Usage: "render from the templates in `DIR` instead of the built-in ones"},
			&cli.BoolFlag{Name: "force", Usage: "replace configuration.nix and disk-config.nix of an existing host"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print what would be written and write nothing"},
			&cli.StringSliceFlag{Name: "identity", Aliases: []string{"i"}, Usage: "with --disk auto: private key `FILE` to log in to --target with"},
			&cli.StringFlag{Name: "known-hosts", Usage: "with --disk auto: known_hosts `FILE` (default ~/.ssh/known_hosts)"},
			&cli.BoolFlag{Name: "accept-new", Usage: "with --disk auto: record the target's unknown host key in known_hosts"},
			&cli.BoolFlag{Name: "print-entry", Usage: "also print the nixosConfigurations entry for flakes that list hosts by hand"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError{hint.Errorf("keystone new-host NAME --disk DEVICE --key KEY",
					"new-host takes one host name, got %d arguments", c.NArg())}
			}
			o := generate.CreateOptions{
				Host: generate.Options{
					Name: c.Args().First(), Disks: c.StringSlice("disk"), Topology: c.String("topology"), Keys: c.StringSlice("key"),
					Target: c.String("target"), Layout: c.String("layout"), System: c.String("system"),
					VM: c.Bool("vm"), HostID: c.String("host-id"), Swap: c.String("swap"),
					InitrdNIC: c.String("initrd-nic"),
				},
				Dir: c.String("dir"), Templates: c.String("templates"),
				Force: c.Bool("force"), DryRun: c.Bool("dry-run"), PrintEntry: c.Bool("print-entry"),
			}
			if len(o.Host.Disks) == 1 && o.Host.Disks[0] == "auto" {
				if err := autoDisk(c, &o.Host); err != nil {
					return err
				}
			}
			return generate.Create(c.App.Writer, c.App.ErrWriter, o)
		},
	}
}

// autoDisk puts the one disk of --target that the layout fits in o.Disks.
func autoDisk(c *cli.Context, o *generate.Options) error {
	if o.Target == "" {
		return usageError{hint.Errorf("keystone new-host NAME --target [USER@]HOST --disk auto, or name the disk", "--disk auto reads the disks of --target, and there is none")}
	}
	sizes, err := generate.PartitionSizes(*o)
	if err != nil {
		return err
	}
	h, err := fleet.AtTarget(targetOptions(c, o.Target))
	if err != nil {
		return err
	}
	d, err := deploy.AutoDisk(c.Context, h, sizes, c.App.ErrWriter)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "keystone: note: --disk auto: %s (%s, %.1f GiB)\n", d.Path, d.Resolved, float64(d.Size)/(1<<30))
	o.Disks = []string{d.Path}
	return nil
}
