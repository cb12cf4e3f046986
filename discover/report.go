package discover

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/internal/text"
)

// WriteTable prints one row a machine, then each one's problems and, with
// --disks, its disks, then the commands that install it. Everything the
// network sent is shown through show.
func WriteTable(w io.Writer, found []Installer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESSES\tPORT\tFINGERPRINT (compare with the console)\tFIRMWARE\tSYSTEM\tDISKS\tVERSION")
	for _, m := range found {
		var addrs []string
		for _, a := range m.Addresses {
			addrs = append(addrs, show(a))
		}
		disks := "-"
		if m.Disks != nil {
			disks = strconv.Itoa(*m.Disks)
		}
		port := "-"
		if m.Port != 0 {
			port = strconv.Itoa(m.Port)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", show(m.Name), cmp.Or(strings.Join(addrs, ","), "-"), port,
			cmp.Or(m.Fingerprint, "-"), cmp.Or(m.Firmware, "-"), cmp.Or(m.System, "-"), disks, cmp.Or(m.Version, "-"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range found {
		for _, p := range m.Problems {
			fmt.Fprintf(w, "%s: %s\n", show(m.Name), p)
		}
	}
	for _, m := range found {
		if m.DiskList == nil && m.DiskError == "" {
			continue
		}
		fmt.Fprintf(w, "\n%s disks:\n", show(m.Name))
		if m.DiskError != "" {
			fmt.Fprintf(w, "  cannot read: %s\n", text.OneLine(m.DiskError))
			continue
		}
		deploy.WriteDisks(w, m.DiskList)
	}
	return writeNext(w, found)
}

// writeNext prints the commands that take each machine on: what comes
// after is the user's (NAME, the key); the address and port came from the
// network but were parsed as such, so they are safe to paste.
func writeNext(w io.Writer, found []Installer) error {
	fmt.Fprintln(w, "\nThe fingerprints came over the network, where anyone can announce anything:")
	fmt.Fprintln(w, "compare each with the one the installer prints on its console before you trust it.")
	fmt.Fprintln(w, "Then, for each machine (NAME is the host name you choose):")
	for _, m := range found {
		t, ok := m.Target()
		if !ok {
			continue
		}
		fmt.Fprintf(w, "  keystone new-host NAME --target %s --disk auto --key ~/.ssh/id_ed25519.pub --accept-new\n", show(t.String()))
	}
	fmt.Fprintln(w, "  keystone deploy NAME")
	fmt.Fprintln(w, "  keystone verify NAME")
	return nil
}

// WriteJSON prints the machines as a JSON array.
func WriteJSON(w io.Writer, found []Installer) error {
	for i := range found {
		if found[i].Problems == nil {
			found[i].Problems = []string{}
		}
		if found[i].Addresses == nil {
			found[i].Addresses = []string{}
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(found)
}
