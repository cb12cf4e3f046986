package generate

import (
	"bytes"
	"fmt"
	"io/fs"
	"text/template"

	"github.com/Masterminds/sprig/v3"

	"github.com/keystone-nix/keystone/internal/hint"
)

// File is one rendered file, named relative to the host folder.
type File struct {
	Name string
	Data []byte
}

// The names new-host writes in vms/NAME/.
const (
	ConfigFile = "configuration.nix"
	DiskFile   = "disk-config.nix"
)

// view is what templates see. Every user string is a Str, which prints as an
// escaped Nix literal.
type view struct {
	Name, HostID, System, Disk Str // Disk is the first of Disks
	Disks                      []diskView
	// Topology is one of Topologies; Mode is disko's zpool mode for it
	// ("" for single and stripe); Multi is more than one disk.
	Topology, Mode string
	Multi          bool
	Keys           []Str
	Target         *targetView
	Layout         string // one of Layouts
	VM             bool
	BIOS           bool // x86_64: GRUB for BIOS and UEFI firmware
	Swap           Str  // "" for no swap
	Config         Path // path of configuration.nix from the flake root, for entry.nix.tmpl
	// SudoUser is the target's user when it is not root: the host gets
	// that user, with the keys and passwordless sudo, as verify needs.
	SudoUser Str
	// Unlock: an encrypted layout, whose initrd runs sshd for `keystone
	// unlock`; InitrdNIC its network card's module ("" for none given).
	Unlock    bool
	InitrdNIC Str
}

// diskView is one disk of the layout: its disko name (the first is
// "main", as on a one-disk host), its device and where its ESP is mounted.
type diskView struct {
	Attr   string
	Device Str
	ESP    string
}

type targetView struct {
	Host, User Str
	Port       int
}

func newView(h *Host) view {
	v := view{
		Name: Str(h.Name), HostID: Str(h.HostID), System: Str(h.System), Disk: Str(h.Disks[0]),
		Layout: h.Layout, VM: h.VM, BIOS: h.System == "x86_64-linux", Swap: Str(h.Swap),
		Unlock: Encrypted(h.Layout), InitrdNIC: Str(h.InitrdNIC),
		Topology: h.Topology, Mode: diskoMode[h.Topology], Multi: len(h.Disks) > 1,
	}
	for i, d := range h.Disks {
		dv := diskView{Attr: "main", Device: Str(d), ESP: "/boot"}
		if i > 0 {
			dv.Attr, dv.ESP = fmt.Sprintf("disk%d", i), fmt.Sprintf("/boot%d", i)
		}
		v.Disks = append(v.Disks, dv)
	}
	for _, k := range h.Keys {
		v.Keys = append(v.Keys, Str(k.Line))
	}
	if t := h.Target; t != nil {
		v.Target = &targetView{Host: Str(t.Host), User: Str(t.User), Port: t.Port}
		if t.User != "root" {
			v.SudoUser = Str(t.User)
		}
	}
	return v
}

// diskoMode is disko v1.12.0's zpool mode (lib/types/zpool.nix modeOptions)
// for each topology: "" puts every disk side by side.
var diskoMode = map[string]string{"single": "", "stripe": "", "mirror": "mirror", "raidz1": "raidz1", "raidz2": "raidz2"}

// Render renders the host folder's files from the templates in fsys.
func Render(fsys fs.FS, h *Host) ([]File, error) {
	v := newView(h)
	var files []File
	for _, f := range []struct{ name, tmpl string }{
		{ConfigFile, "configuration.nix.tmpl"},
		{DiskFile, "disk-" + h.Layout + ".nix.tmpl"},
	} {
		data, err := execute(fsys, f.tmpl, v)
		if err != nil {
			return nil, err
		}
		files = append(files, File{f.name, data})
	}
	return files, nil
}

// Entry renders the nixosConfigurations entry for flakes that list hosts by
// hand; config is the path of configuration.nix relative to the flake root.
func Entry(fsys fs.FS, h *Host, config string) ([]byte, error) {
	v := newView(h)
	v.Config = Path(config)
	return execute(fsys, "entry.nix.tmpl", v)
}

// partials holds the pieces the disk layouts share.
const partials = "partials.tmpl"

func execute(fsys fs.FS, name string, v view) ([]byte, error) {
	for _, n := range []string{name, partials} {
		if _, err := fs.Stat(fsys, n); err != nil {
			return nil, hint.Errorf("a --templates folder needs configuration.nix.tmpl, entry.nix.tmpl, partials.tmpl and disk-LAYOUT.nix.tmpl for each layout",
				"template %s not found", n)
		}
	}
	t, err := template.New(name).Option("missingkey=error").Funcs(sprig.HermeticTxtFuncMap()).ParseFS(fsys, name, partials)
	// text/template's errors already name the template and line.
	if err != nil {
		return nil, hint.Wrap(err, "fix the template")
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return nil, hint.Wrap(err, "fix the template; it can use .Name .HostID .System .Disk .Disks (.Attr .Device .ESP) .Topology .Mode .Multi .Keys .Target (.Host .User .Port) .SudoUser .Layout .VM .BIOS .Swap")
	}
	return b.Bytes(), nil
}
