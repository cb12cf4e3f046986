package nix_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keystone-nix/keystone/generate"
	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/templates"
)

// TestInitrdBoot boots the initrd of each encrypted layout on systemd's own
// job engine: Debian's systemd (252) as PID 1 of a container whose root has
// /etc/initrd-release runs in initrd mode, reaches initrd.target, isolates
// initrd-switch-root.target (initrd-cleanup.service) and switches root
// into a second root, which reaches multi-user.target and powers off.
//
//   - Our units come from the disk-config.nix new-host renders, evaluated
//     offline, written as nixpkgs' nixos/lib/systemd-lib.nix writes them
//     (unitFiles below).
//   - The crypttab line is luksroot.nix's, and its unit is made by the real
//     systemd-cryptsetup-generator.
//   - Debian's systemd ships the upstream initrd units (initrd.target,
//     initrd-switch-root.*, initrd-cleanup, initrd-parse-etc,
//     initrd-udevadm-cleanup-db, emergency.target, …). The units NixOS adds
//     or changes are stand-ins that copy their dependencies from the cited
//     nixpkgs source (nixosUnits).
//   - What cannot run here (zfs, zpool, cryptsetup, a TPM2, udev, block
//     devices) is a stand-in script that logs what it does to /log/events
//     and refuses what the real tool would refuse (standInTools).
func TestInitrdBoot(t *testing.T) {
	lower := testhost.DebianRoot(t)
	if _, err := exec.LookPath("systemd-escape"); err != nil {
		t.Fatalf("systemd-escape is not installed (apt-get install systemd): %v", err)
	}
	generator := "/lib/systemd/system-generators/systemd-cryptsetup-generator"
	if _, err := os.Stat(filepath.Join(lower, generator)); err != nil {
		t.Fatalf("the Debian root has no %s: %v", generator, err)
	}
	layouts := map[string]generate.Options{
		"zfs-encrypted":        {Name: "web1", VM: true},
		"zfs-encrypted-swap":   {Name: "web1", VM: true, Swap: "4G"},
		"luks":                 {Name: "web1", VM: true, Layout: "luks"},
		"zfs-encrypted-mirror": {Name: "web1", VM: true, Disks: []string{"/dev/vda", "/dev/vdb"}},
	}
	rendered := map[string]initrdLayout{}
	for name, o := range layouts {
		o.Keys = []string{filepath.Join(repoRoot(t), "examples/demo/id_ed25519.pub")}
		rendered[name] = renderInitrd(t, o)
	}
	for _, tc := range []struct {
		name, layout string
		tpm2         bool     // the TPM2 unseals the credstore
		typed        []string // passwords typed at the console, in order
		evilRoot     bool     // rpool/crypt/root was replaced by an unencrypted dataset
		missing      []string // disks (disko's names) whose partitions never appear
	}{
		{name: "zfs-encrypted/tpm2", layout: "zfs-encrypted", tpm2: true},
		{name: "zfs-encrypted/password", layout: "zfs-encrypted", typed: []string{"wrong1", "wrong2", "wrong3", "right"}},
		{name: "zfs-encrypted-swap/tpm2", layout: "zfs-encrypted-swap", tpm2: true},
		{name: "zfs-encrypted-swap/password", layout: "zfs-encrypted-swap", typed: []string{"right"}},
		{name: "zfs-encrypted/replaced-root", layout: "zfs-encrypted", tpm2: true, evilRoot: true},
		// A mirror: both disks there, then the second one dead.
		{name: "zfs-encrypted-mirror/tpm2", layout: "zfs-encrypted-mirror", tpm2: true},
		{name: "zfs-encrypted-mirror/disk-missing", layout: "zfs-encrypted-mirror", tpm2: true, missing: []string{"disk1"}},
		{name: "zfs-encrypted-mirror/both-missing", layout: "zfs-encrypted-mirror", tpm2: true, missing: []string{"main", "disk1"}},
		{name: "luks/tpm2", layout: "luks", tpm2: true},
		{name: "luks/password", layout: "luks", typed: []string{"wrong1", "wrong2", "wrong3", "right"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := rendered[tc.layout]
			b := bootInitrd(t, lower, l, tc.tpm2, tc.typed, tc.evilRoot, tc.missing)
			zfs := strings.HasPrefix(tc.layout, "zfs")
			switch {
			case tc.evilRoot:
				b.checkRefused(t)
			case len(tc.missing) > 0 && len(tc.missing) == len(l.Members):
				b.checkNoPool(t)
			case zfs && len(l.Members) > 1:
				b.checkCredstoreBoot(t, tc.tpm2, len(tc.typed))
				b.checkImport(t, len(l.Members), tc.missing)
				b.checkESPs(t, l, tc.missing)
			case zfs:
				b.checkCredstoreBoot(t, tc.tpm2, len(tc.typed))
				b.checkImport(t, len(l.Members), tc.missing)
			default:
				b.checkLuksBoot(t, tc.tpm2, len(tc.typed))
			}
		})
	}
}

// initrdLayout is what the initrd of a rendered layout is made of.
type initrdLayout struct {
	Services        map[string]map[string]any `json:"services"`
	Mounts          []map[string]any          `json:"mounts"`
	Luks            map[string]map[string]any `json:"luks"`
	FileSystems     []fileSystem              `json:"fileSystems"`
	ForceImportRoot bool                      `json:"forceImportRoot"`
	DevNodes        string                    `json:"devNodes"`
	Pools           []string                  `json:"pools"`
	// Members are rpool's devices, by partition label under /dev (disko:
	// each disk's zfs partition, labelled disk-DISK-PART); Vdev is the
	// pool's mode ("" for one disk or a stripe).
	Members []string `json:"members"`
	Vdev    string   `json:"vdev"`
}

type fileSystem struct {
	MountPoint string   `json:"mountPoint"`
	Device     string   `json:"device"`
	FSType     string   `json:"fsType"`
	Options    []string `json:"options"`
}

// renderInitrd renders o's disk-config.nix as new-host does and evaluates
// what its initrd needs.
func renderInitrd(t *testing.T, o generate.Options) initrdLayout {
	t.Helper()
	h, _, err := generate.NewHost(o)
	if err != nil {
		t.Fatal(err)
	}
	files, err := generate.Render(templates.FS, h)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "disk-config.nix")
	for _, f := range files {
		if f.Name == "disk-config.nix" {
			if err := os.WriteFile(path, f.Data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var l initrdLayout
	evalJSON(t, fmt.Sprintf(`let
		inherit (builtins) attrNames concatMap;
		m = import %[2]s;
		c = if builtins.isFunction m then m `+layoutArgs+` else m;
		devices = c.disko.devices;
		# disko v1.12.0's fileSystems entries (_config): filesystem.nix
		# (device, fsType = format, options = mountOptions, for a mountpoint),
		# luks.nix (its content on /dev/mapper/NAME), zfs_fs.nix lines
		# 160-172 (device = the dataset, fsType zfs, mountOptions plus zfsutil
		# unless options.mountpoint is legacy; none for mountpoint none).
		fsOf = device: content:
			if content == null then [ ]
			else if content.type == "filesystem" && (content.mountpoint or null) != null then
				[ { mountPoint = content.mountpoint; inherit device; fsType = content.format; options = content.mountOptions or [ "defaults" ]; } ]
			else if content.type == "luks" then fsOf "/dev/mapper/${content.name}" (content.content or null)
			else [ ];
		fromDisks = concatMap (d: let g = devices.disk.${d}.content; in
			concatMap (p: fsOf (g.partitions.${p}.device or "/dev/disk/by-partlabel/disk-${d}-${p}") (g.partitions.${p}.content or null)) (attrNames g.partitions)
		) (attrNames (devices.disk or { }));
		fromPools = concatMap (pool: let ds = devices.zpool.${pool}.datasets; in
			concatMap (n: let d = ds.${n}; opt = d.options.mountpoint or ""; in
				if d.type == "zfs_fs" && (d.mountpoint or null) != null && opt != "none" then
					[ { mountPoint = d.mountpoint; device = "${pool}/${n}"; fsType = "zfs"; options = (d.mountOptions or [ "defaults" ]) ++ (if opt != "legacy" then [ "zfsutil" ] else [ ]); } ]
				else [ ]) (attrNames ds)
		) (attrNames (devices.zpool or { }));
	in {
		services = c.boot.initrd.systemd.services or { };
		mounts = c.boot.initrd.systemd.mounts or [ ];
		luks = (import %[1]s/nix/testdata/disko-config.nix { inherit devices; }).boot.initrd.luks.devices;
		fileSystems = fromDisks ++ fromPools;
		# zfs.nix: forceImportRoot defaults to true, devNodes to /dev/disk/by-id.
		forceImportRoot = c.boot.zfs.forceImportRoot or true;
		devNodes = c.boot.zfs.devNodes or "/dev/disk/by-id";
		pools = attrNames (devices.zpool or { });
		members = concatMap (d: let g = devices.disk.${d}.content; in
			concatMap (p: if (g.partitions.${p}.content.type or null) == "zfs" then [ "dev/disk/by-partlabel/disk-${d}-${p}" ] else [ ]) (attrNames g.partitions)
		) (attrNames (devices.disk or { }));
		vdev = devices.zpool.rpool.mode or "";
	}`, repoRoot(t), path), &l)
	return l
}

// pathsNeededForBoot: nixpkgs nixos/lib/utils.nix (fsNeededForBoot): the
// file systems the initrd mounts under /sysroot; the ones these layouts
// have.
var pathsNeededForBoot = []string{"/", "/nix", "/nix/store", "/var", "/var/log", "/var/lib", "/var/lib/nixos", "/etc", "/usr"}

// unitDir is a set of unit files and links, by path under
// /etc/systemd/system.
type unitDir map[string]string

const linkPrefix = "\x00link:"

func (u unitDir) link(path, target string) { u[path] = linkPrefix + target }

// section renders a unit file section as systemd-lib.nix's attrsToSection
// does: one NAME=VALUE line per value, a list giving one line per element,
// true and false as "true" and "false" (toOption), keys in attribute
// (sorted) order as mapAttrsToList gives them.
func section(name string, attrs map[string]any) string {
	var keys []string
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("[" + name + "]\n")
	for _, k := range keys {
		vals, ok := attrs[k].([]any)
		if !ok {
			vals = []any{attrs[k]}
		}
		for _, v := range vals {
			fmt.Fprintf(&b, "%s=%s\n", k, toOption(v))
		}
	}
	return b.String()
}

func toOption(v any) string {
	switch v := v.(type) {
	case bool:
		if v {
			return "true"
		}
		return "false"
	case float64:
		return fmt.Sprint(int64(v))
	default:
		return fmt.Sprint(v)
	}
}

// unitSection is systemd-lib.nix's unitConfig: Requires, Wants, After,
// Before, Conflicts as space-separated lists ("toString config.requires"),
// Description, merged into the unit's own unitConfig.
func unitSection(t *testing.T, def map[string]any) string {
	t.Helper()
	u := map[string]any{}
	if uc, ok := def["unitConfig"].(map[string]any); ok {
		for k, v := range uc {
			u[k] = v
		}
	}
	for attr, key := range map[string]string{"requires": "Requires", "wants": "Wants", "after": "After", "before": "Before", "conflicts": "Conflicts"} {
		if l := strs(def[attr]); len(l) > 0 {
			u[key] = strings.Join(l, " ")
		}
	}
	if d, _ := def["description"].(string); d != "" {
		u["Description"] = d
	}
	return section("Unit", u)
}

// unitFiles turns the layout's boot.initrd.systemd.services and .mounts into
// files as initrd.nix (units = mapAttrs' … serviceToUnit / mountToUnit) and
// systemd-lib.nix's generateUnits write them (nixpkgs
// nixos/lib/systemd-lib.nix read at 013635633ffe, initrd.nix at 00e6b22b):
//   - a service NAME is NAME.service; a mount's name is its where,
//     escaped (utils.escapeSystemdPath; here systemd-escape --path);
//   - the text is commonUnitText: [Unit] from unitConfig, then [Service]
//     (serviceConfig) or [Mount] (mountConfig: What, Where, Type, Options);
//   - script becomes ExecStart, a job script (makeJobScript:
//     writeShellScriptBin with "set -e" before the text; initrd.nix copies
//     jobScripts into the initrd);
//   - overrideStrategy "asDropin" writes NAME.d/overrides.conf; the default,
//     "asDropinIfExists", does so when systemd or a package already has the
//     unit (upstream), else writes the unit itself;
//   - requiredBy and wantedBy become links in TARGET.requires/ and
//     TARGET.wants/ ("ln -sfn '../${name}' $out/'${name2}.requires'/").
//
// Attributes it does not know fail the test, so none is dropped unseen.
func unitFiles(t *testing.T, l initrdLayout, upstream func(string) bool) (unitDir, map[string]string) {
	t.Helper()
	files := unitDir{}
	scripts := map[string]string{}
	add := func(name string, def map[string]any, body string) {
		for k := range def {
			if !contains([]string{"description", "overrideStrategy", "requiredBy", "wantedBy", "requires", "wants", "after", "before", "conflicts", "unitConfig", "serviceConfig", "script", "what", "where", "type", "options"}, k) {
				t.Fatalf("%s: %s is not modelled by this test's systemd-lib.nix", name, k)
			}
		}
		text := unitSection(t, def) + body
		strategy, _ := def["overrideStrategy"].(string)
		if strategy == "asDropin" || ((strategy == "" || strategy == "asDropinIfExists") && upstream(name)) {
			files[name+".d/overrides.conf"] = text
		} else {
			files[name] = text
		}
		for _, to := range strs(def["requiredBy"]) {
			files.link(to+".requires/"+name, "../"+name)
		}
		for _, to := range strs(def["wantedBy"]) {
			files.link(to+".wants/"+name, "../"+name)
		}
	}
	for n, def := range l.Services {
		svc := map[string]any{}
		if sc, ok := def["serviceConfig"].(map[string]any); ok {
			for k, v := range sc {
				svc[k] = v
			}
		}
		if script, _ := def["script"].(string); script != "" {
			path := "/nix/store/unit-script-" + n + "-start"
			scripts[path] = "#!/bin/bash\nset -e\n\n" + script
			svc["ExecStart"] = path
		}
		add(n+".service", def, section("Service", svc))
	}
	for _, def := range l.Mounts {
		where, _ := def["where"].(string)
		mc := map[string]any{"What": def["what"], "Where": where}
		for attr, key := range map[string]string{"type": "Type", "options": "Options"} {
			if s, _ := def[attr].(string); s != "" {
				mc[key] = s
			}
		}
		add(escapePath(t, where)+".mount", def, section("Mount", mc))
	}
	return files, scripts
}

func escapePath(t *testing.T, p string) string {
	t.Helper()
	out, err := exec.Command("systemd-escape", "--path", p).Output()
	if err != nil {
		t.Fatalf("systemd-escape --path %s: %v", p, err)
	}
	return strings.TrimSpace(string(out))
}

// crypttab is the initrd's /etc/crypttab as luksroot.nix (stage1Crypttab)
// writes it: "${n} ${v.device} - ${concatStringsSep "," opts}" with opts =
// crypttabExtraOpts ++ optional allowDiscards "discard" (the other options
// it adds are for settings these layouts do not set: any other fails).
func crypttab(t *testing.T, luks map[string]map[string]any) string {
	t.Helper()
	var names []string
	for n := range luks {
		names = append(names, n)
	}
	sort.Strings(names)
	var lines []string
	for _, n := range names {
		d := luks[n]
		opts := strs(d["crypttabExtraOpts"])
		for k, v := range d {
			switch {
			case k == "device" || k == "crypttabExtraOpts":
			case k == "allowDiscards":
				if v == true {
					opts = append(opts, "discard")
				}
			default:
				t.Fatalf("luks device %s: setting %s is not modelled by this test's luksroot.nix", n, k)
			}
		}
		lines = append(lines, fmt.Sprintf("%s %s - %s", n, d["device"], strings.Join(opts, ",")))
	}
	return strings.Join(lines, "\n") + "\n"
}

// deviceUnit matches the device units the generator names: the container
// has no udev, and systemd there supports no device units at all.
var deviceUnit = regexp.MustCompile(`([A-Za-z0-9:_.\\-]+)\.device\b`)

// standInDevice names the stand-in for a device unit: an instance of
// device-standin@.service, active once its node shows up under
// /run/standin (%I unescapes the instance to the device's path).
func standInDevice(s string) string {
	return deviceUnit.ReplaceAllString(s, "device-standin@$1.service")
}

// generated runs the root's systemd-cryptsetup-generator (in a chroot) on
// the crypttab, as the initrd's systemd would at boot, and returns its units
// with device units turned into their stand-ins.
func generated(t *testing.T, root, tab string) unitDir {
	t.Helper()
	dir := filepath.Join(root, "tmp/generator")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "crypttab"), []byte(tab), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "normal")
	for _, d := range []string{out, out + "-early", out + "-late"} {
		os.Mkdir(d, 0o755)
	}
	cmd := exec.Command("chroot", root, "/lib/systemd/system-generators/systemd-cryptsetup-generator", "/tmp/generator/normal", "/tmp/generator/normal-early", "/tmp/generator/normal-late")
	cmd.Env = append(os.Environ(), "SYSTEMD_CRYPTTAB=/tmp/generator/crypttab", "SYSTEMD_IN_INITRD=1", "SYSTEMD_LOG_LEVEL=warning",
		// No /proc in the chroot: an empty kernel command line.
		"SYSTEMD_PROC_CMDLINE=")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-cryptsetup-generator: %v\n%s", err, msg)
	}
	files := unitDir{}
	filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel := standInDevice(strings.TrimPrefix(p, out+"/"))
		if fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			files.link(rel, target)
			return nil
		}
		data, _ := os.ReadFile(p)
		files[rel] = standInDevice(string(data))
		return nil
	})
	return files
}

// nixosUnits are stand-ins for what NixOS's initrd adds to systemd's units,
// with the dependencies of the nixpkgs sources cited (NixOS/nixpkgs, read
// through the code index: initrd.nix at 00e6b22b, zfs.nix copy id
// 190223291). Their commands log to /log/events instead of doing the work.
func nixosUnits(t *testing.T, l initrdLayout) unitDir {
	t.Helper()
	u := unitDir{}
	// initrd.nix, services.initrd-find-nixos-closure: RequiresMountsFor =
	// "/sysroot/nix/store", DefaultDependencies = false, before initrd.target
	// and shutdown.target, conflicts shutdown.target, requiredBy
	// initrd.target, oneshot, RemainAfterExit. Its script writes "NEW_INIT="
	// to /etc/switch-root.conf for a NixOS closure.
	u["initrd-find-nixos-closure.service"] = `[Unit]
Description=Find NixOS closure (stand-in)
RequiresMountsFor=/sysroot/nix/store
DefaultDependencies=false
Before=initrd.target shutdown.target
Conflicts=shutdown.target
[Service]
Type=oneshot
RemainAfterExit=true
ExecStart=/bin/sh -c 'echo NEW_INIT= > /etc/switch-root.conf'
`
	u.link("initrd.target.requires/initrd-find-nixos-closure.service", "../initrd-find-nixos-closure.service")
	// initrd.nix, mounts: where = "/sysroot/run", what = "/run", options =
	// "bind", DefaultDependencies = false, requiredBy and before
	// initrd-fs.target.
	u["sysroot-run.mount"] = `[Unit]
DefaultDependencies=false
Before=initrd-fs.target
[Mount]
What=/run
Where=/sysroot/run
Options=bind
`
	u.link("initrd-fs.target.requires/sysroot-run.mount", "../sysroot-run.mount")
	// initrd.nix, services.initrd-nixos-activation: after
	// initrd-switch-root.target, requiredBy and before
	// initrd-switch-root.service, DefaultDependencies = false,
	// AssertPathExists = /etc/initrd-release, RequiresMountsFor =
	// [ "/sysroot/run" ], oneshot.
	u["initrd-nixos-activation.service"] = `[Unit]
Description=NixOS Activation (stand-in)
After=initrd-switch-root.target
Before=initrd-switch-root.service
DefaultDependencies=false
AssertPathExists=/etc/initrd-release
RequiresMountsFor=/sysroot/run
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "activation: /sysroot/run mounted=$(mountpoint -q /sysroot/run && echo yes || echo no)" >> /log/events'
`
	u.link("initrd-switch-root.service.requires/initrd-nixos-activation.service", "../initrd-nixos-activation.service")
	// initrd.nix, services.initrd-switch-root.serviceConfig: EnvironmentFile
	// = "-/etc/switch-root.conf", ExecStart = [ "" "systemctl --no-block
	// switch-root /sysroot \"${NEW_INIT}\"" ]. The ExecStartPre is the
	// test's: what is mounted and open the moment switch-root starts.
	u["initrd-switch-root.service.d/nixos.conf"] = `[Service]
EnvironmentFile=-/etc/switch-root.conf
ExecStartPre=/standin/bin/at-switch-root
ExecStart=
ExecStart=systemctl --no-block switch-root /sysroot "${NEW_INIT}"
`
	// The file systems needed for boot, from the initrd's fstab (initrd.nix
	// writes "/sysroot${mountPoint}" lines), as systemd-fstab-generator
	// writes them in the initrd: Before= and a .requires link from
	// initrd-root-fs.target for /sysroot, initrd-fs.target for the others.
	for _, fs := range l.FileSystems {
		if !contains(pathsNeededForBoot, fs.MountPoint) {
			continue
		}
		where := strings.TrimSuffix("/sysroot"+fs.MountPoint, "/")
		name := escapePath(t, where) + ".mount"
		target := "initrd-fs.target"
		if fs.MountPoint == "/" {
			target = "initrd-root-fs.target"
		}
		u[name] = fmt.Sprintf(`[Unit]
Documentation=man:fstab(5) man:systemd-fstab-generator(8)
SourcePath=/etc/fstab
Before=%s
[Mount]
What=%s
Where=%s
Type=%s
Options=%s
`, target, fs.Device, where, fs.FSType, strings.Join(fs.Options, ","))
		u.link(target+".requires/"+name, "../"+name)
	}
	// zfs.nix, createImportService for each root pool (prefix /sysroot):
	// wants systemd-udev-settle.service; after systemd-udev-settle,
	// systemd-modules-load, systemd-ask-password-console; requiredBy
	// getPoolMounts (every fileSystems entry of the pool, under /sysroot)
	// and zfs-import.target; before those, shutdown.target and
	// zfs-import.target; conflicts shutdown.target; DefaultDependencies =
	// "no"; oneshot, RemainAfterExit; environment.ZFS_FORCE =
	// optionalString force "-f" (force = forceImportRoot). Its script
	// imports with `zpool import -d devNodes -N $ZFS_FORCE pool`.
	// targets.zfs-import.wantedBy = [ "zfs.target" ];
	// targets.zfs.wantedBy = [ "initrd.target" ].
	for _, pool := range l.Pools {
		force := ""
		if l.ForceImportRoot {
			force = "-f"
		}
		var mounts []string
		for _, fs := range l.FileSystems {
			if fs.FSType == "zfs" && strings.HasPrefix(fs.Device, pool+"/") {
				mounts = append(mounts, escapePath(t, strings.TrimSuffix("/sysroot"+fs.MountPoint, "/"))+".mount")
			}
		}
		name := "zfs-import-" + pool + ".service"
		u[name] = fmt.Sprintf(`[Unit]
Description=Import ZFS pool "%[1]s" (stand-in)
Wants=systemd-udev-settle.service
After=systemd-udev-settle.service systemd-modules-load.service systemd-ask-password-console.service
Before=%[2]s shutdown.target zfs-import.target
Conflicts=shutdown.target
DefaultDependencies=no
[Service]
Type=oneshot
RemainAfterExit=true
Environment=ZFS_FORCE=%[3]s
ExecStart=/standin/bin/zfs-import %[1]s %[4]s
`, pool, strings.Join(mounts, " "), force, l.DevNodes)
		for _, m := range append(mounts, "zfs-import.target") {
			u.link(m+".requires/"+name, "../"+name)
		}
	}
	if len(l.Pools) > 0 {
		u["zfs-import.target"] = "[Unit]\nDescription=ZFS pool import target\n"
		u["zfs.target"] = "[Unit]\nDescription=ZFS\n"
		u.link("zfs.target.wants/zfs-import.target", "../zfs-import.target")
		u.link("initrd.target.wants/zfs.target", "../zfs.target")
	}
	return u
}

// standInUnits stand in for what the container lacks.
var standInUnits = unitDir{
	// udevd: systemd's units/systemd-udevd.service.in has
	// DefaultDependencies=no, After=systemd-sysusers.service
	// systemd-hwdb-update.service, Before=sysinit.target. NixOS's udev.nix
	// puts it among the initrd's upstream units (with
	// initrd-udevadm-cleanup-db.service; copy id 62053565726), so our
	// systemd-udevd entry is a drop-in on it, and initrd.nix's upstreamWants
	// copies the sysinit.target.wants link that starts it. It runs until
	// initrd-udevadm-cleanup-db.service (Conflicts=systemd-udevd.service)
	// stops it at switch-root. Its start makes the disks' nodes appear.
	"systemd-udevd.service": `[Unit]
Description=Rule-based Manager for Device Events and Files (stand-in)
DefaultDependencies=no
After=systemd-sysusers.service systemd-hwdb-update.service
Before=sysinit.target
[Service]
ExecStartPre=/standin/bin/udev-devices
ExecStart=/bin/sleep infinity
`,
	// A device unit is active while its node exists; systemd gives device
	// jobs DefaultTimeoutStartSec (device.c, device_init: job_running_timeout
	// = default_timeout_start_usec), which the generator's
	// x-systemd.device-timeout= drop-in overrides. Isolating leaves devices
	// alone (device_init: ignore_on_isolate = true).
	"device-standin@.service": `[Unit]
Description=Device %I (stand-in)
DefaultDependencies=no
IgnoreOnIsolate=yes
JobRunningTimeoutSec=90s
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'until [ -e "/run/standin/%I" ]; do sleep 0.05; done'
`,
	// The test's: logs that emergency.target was started.
	"standin-emergency-probe.service": `[Unit]
DefaultDependencies=no
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "emergency.target started" >> /log/events'
`,
}

func init() {
	standInUnits.link("sysinit.target.wants/systemd-udevd.service", "../systemd-udevd.service")
	standInUnits.link("emergency.target.wants/standin-emergency-probe.service", "../standin-emergency-probe.service")
}

// standInTools replace the tools that cannot run here. Each logs to
// /log/events and fails where the real one would.
var standInTools = map[string]string{
	// The disks' nodes appear as udev's rules would make them: every one
	// but the dead disks' (/standin/present, written by the test).
	"standin/bin/udev-devices": `#!/bin/sh
mkdir -p /run/standin/dev/disk/by-partlabel
touch /run/standin/dev/disk/by-partlabel/disk-main-luks
while read -r node; do
  [ -z "$node" ] || touch "/run/standin/$node"
done < /standin/present
`,
	// zfs.nix's import script (copy id 190223291): importLib's poolReady,
	// poolImported and poolImport, and createImportService's loop: wait
	// until `zpool import -d` says the pool is ONLINE, 60 trials a second
	// apart, then try once more, which imports a DEGRADED pool. Here the
	// trials are 0.1 s apart (the real wait is 60 s), and the script logs
	// each trial's state to the console as the real one does.
	"standin/bin/zfs-import": `#!/bin/bash
pool=$1 devNodes=$2
poolReady() {
  pool="$1"
  state="$(zpool import -d "${devNodes}" 2>/dev/null | awk "/pool: $pool/ { found = 1 }; /state:/ { if (found == 1) { print \$2; exit } }; END { if (found == 0) { print \"MISSING\" } }")"
  if [[ "$state" = "ONLINE" ]]; then
    return 0
  else
    echo "Pool $pool in state $state, waiting"
    return 1
  fi
}
poolImported() {
  pool="$1"
  zpool list "$pool" >/dev/null 2>/dev/null
}
poolImport() {
  pool="$1"
  # shellcheck disable=SC2086
  zpool import -d "${devNodes}" -N $ZFS_FORCE "$pool"
}
if ! poolImported "${pool}"; then
  echo -n "importing ZFS pool \"${pool}\"..."
  for _ in $(seq 1 60); do
    poolReady "${pool}" && poolImport "${pool}" && break
    echo "trial" >> /run/standin/import-trials
    sleep 0.1
  done
  poolImported "${pool}" || poolImport "${pool}"  # Try one last time, e.g. to import a degraded pool.
fi
if poolImported "${pool}"; then
  echo "Successfully imported ${pool}"
else
  exit 1
fi
`,
	// zpool import -d DIR lists the pools it finds (state ONLINE with
	// every member, DEGRADED with enough for the vdev, UNAVAIL without);
	// zpool import -d DIR -N POOL imports one, refusing UNAVAIL.
	"usr/bin/zpool": `#!/bin/sh
log() { echo "$*" >> /log/events; }
mkdir -p /run/standin
state() {
  n=0 p=0
  while read -r m; do
    [ -n "$m" ] || continue
    n=$((n+1)); [ -e "/run/standin/$m" ] && p=$((p+1))
  done < /standin/members
  need=$n
  case "$(cat /standin/vdev)" in
  mirror) need=1 ;;
  raidz1) need=$((n-1)) ;;
  raidz2) need=$((n-2)) ;;
  esac
  if [ "$p" -eq "$n" ]; then echo ONLINE; elif [ "$p" -ge "$need" ] && [ "$p" -gt 0 ]; then echo DEGRADED; else echo UNAVAIL; fi
}
case "$1" in
import)
  [ ! -e /run/standin/imported ] || { echo "cannot import: pool already imported" >&2; exit 1; }
  eval "pool=\${$#}"
  if [ "$#" -le 3 ] && [ "$2" = -d ]; then
    printf '   pool: rpool\n     id: 1\n  state: %s\n' "$(state)"
    exit 0
  fi
  s=$(state)
  [ "$s" != UNAVAIL ] || { log "zpool $*: refused, $s"; echo "cannot import '$pool': no such pool or dataset" >&2; exit 1; }
  log "zpool $*: $s after $(cat /run/standin/import-trials 2>/dev/null | wc -l) trials"
  touch /run/standin/imported
  # udev's zvol rules make the node once the pool is imported.
  mkdir -p /run/standin/dev/zvol/rpool && touch /run/standin/dev/zvol/rpool/credstore ;;
export)
  log "zpool $*"
  rm -f /run/standin/imported /run/standin/dev/zvol/rpool/credstore ;;
list) [ -e /run/standin/imported ] ;;
*) echo "zpool $*: not modelled" >&2; exit 2 ;;
esac
`,
	"usr/bin/zfs": `#!/bin/sh
log() { echo "$*" >> /log/events; }
[ -e /run/standin/imported ] || { echo "zfs: no pools available" >&2; exit 1; }
case "$1 $2 $3 $4 $5" in
"get -H -o value encryptionroot")
  root=$(sed -n "s|^$6 ||p" /standin/encryptionroots)
  log "zfs get encryptionroot $6"
  echo "${root:-rpool/crypt}" ;;
"load-key -L "*)
  [ "$4" = rpool/crypt ] || { echo "zfs load-key $4: not modelled" >&2; exit 2; }
  cmp -s "${3#file://}" /standin/rpool-crypt.key || { log "zfs load-key: wrong key"; exit 1; }
  [ ! -e /run/standin/key-loaded ] || { log "zfs load-key: key already loaded"; exit 1; }
  case "$3" in file:///run/credentials/*) log "zfs load-key rpool/crypt" ;; *) log "zfs load-key rpool/crypt, not from a credential: $3" ;; esac
  touch /run/standin/key-loaded ;;
*) echo "zfs $*: not modelled" >&2; exit 2 ;;
esac
`,
	// mount(8) runs /sbin/mount.TYPE for -t TYPE: these stand in for the
	// file systems, bind-mounting a directory for each.
	"usr/sbin/mount.zfs": `#!/bin/sh
[ -e /run/standin/imported ] || { echo "mount.zfs: $1: pool not imported" >&2; exit 1; }
[ -e /run/standin/key-loaded ] || { echo "mount.zfs: $1: encryption key not loaded" >&2; echo "mount $1 refused: key not loaded" >> /log/events; exit 1; }
case "$1" in
rpool/crypt/root) src=/newroot ;;
rpool/crypt/nix) src=/newroot-nix ;;
*) echo "mount.zfs $1: not modelled" >&2; exit 2 ;;
esac
mount --rbind "$src" "$2" && echo "mount $1 on $2" >> /log/events
`,
	"usr/sbin/mount.ext4": `#!/bin/sh
[ -e "/run/standin$1" ] || { echo "mount.ext4: $1 does not exist" >&2; exit 32; }
case "$1" in
/dev/mapper/credstore) src=/standin/credstore ;;
/dev/mapper/crypted) src=/newroot ;;
*) echo "mount.ext4 $1: not modelled" >&2; exit 2 ;;
esac
mount --rbind "$src" "$2" || exit 1
case ",$4," in *,ro,*) mount -o remount,bind,ro "$2" || exit 1 ;; esac
echo "mount $1 on $2" >> /log/events
`,
	// systemd-cryptsetup attach NAME DEVICE KEYFILE OPTIONS / detach NAME,
	// as the generator's unit calls it. TPM2 first (tpm2-device=), then the
	// password, as often as tries= allows (cryptsetup.c: arg_tries = 3;
	// crypttab(5): 0 asks for ever); the typed passwords come from
	// /standin/typed. The detach needs udev for one last update.
	"usr/lib/systemd/systemd-cryptsetup": `#!/bin/sh
log() { echo "$*" >> /log/events; }
case "$1" in
attach)
  name=$2 dev=$3 opts=$5
  [ -e "/run/standin$dev" ] || { log "cryptsetup attach $name: $dev not there"; exit 1; }
  open() { mkdir -p /run/standin/dev/mapper && touch "/run/standin/dev/mapper/$name"; }
  case ",$opts," in *,tpm2-device=*)
    if [ "$(cat /standin/tpm2)" = unseals ]; then log "cryptsetup attach $name: unlocked by the TPM2"; open; exit 0; fi
    log "cryptsetup attach $name: TPM2 operation failed, falling back to traditional unlocking" ;;
  esac
  tries=$(echo ",$opts," | sed -n 's/.*,tries=\([0-9]*\),.*/\1/p'); tries=${tries:-3}
  n=0
  while read -r typed; do
    n=$((n+1))
    if [ "$typed" = "$(cat /standin/password)" ]; then log "cryptsetup attach $name: unlocked by password $n"; open; exit 0; fi
    log "cryptsetup attach $name: password $n is wrong"
    if [ "$tries" != 0 ] && [ "$n" -ge "$tries" ]; then log "cryptsetup attach $name: too many attempts"; exit 1; fi
  done < /standin/typed
  log "cryptsetup attach $name: waiting for a password"
  exec sleep infinity ;;
detach)
  sleep 0.5
  if ! systemctl is-active --quiet systemd-udevd.service; then
    log "cryptsetup detach $2: udevd stopped before the detach finished, $2 stays open"; exit 1
  fi
  rm "/run/standin/dev/mapper/$2" && log "cryptsetup detach $2" ;;
esac
`,
	// The test's probe in initrd-switch-root.service.
	"standin/bin/at-switch-root": `#!/bin/sh
m() { mountpoint -q "$1" && echo yes || echo no; }
o() { [ -e "/run/standin/dev/mapper/$1" ] && echo yes || echo no; }
echo "switch-root: /sysroot mounted=$(m /sysroot), /etc/credstore mounted=$(m /etc/credstore), credstore open=$(o credstore)" >> /log/events
# The key's copy, which systemd makes for LoadCredential= and removes
# when the unit stops: /run goes on into the real system.
if grep -rqs . /run/credentials; then echo "switch-root: key copies left in /run/credentials: $(ls /run/credentials)" >> /log/events; fi
`,
}

// initrdBoot is one boot's record.
type initrdBoot struct {
	events  []string
	console string
	exited  bool
	elapsed time.Duration
	units   unitDir
}

// bootInitrd boots layout l's initrd in a container: the initrd root (an
// overlay of the Debian root with the units and stand-ins) switch-roots into
// a second overlay, which logs that it reached multi-user.target and
// powers off.
func bootInitrd(t *testing.T, lower string, l initrdLayout, tpm2 bool, typed []string, evilRoot bool, missing []string) initrdBoot {
	t.Helper()
	initrd, _ := testhost.Overlay(t, lower)
	next, _ := testhost.Overlay(t, lower)
	logDir := t.TempDir()
	events := filepath.Join(logDir, "events")
	write := func(root, p, data string, mode os.FileMode) {
		t.Helper()
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(data, linkPrefix) {
			os.Remove(full)
			if err := os.Symlink(strings.TrimPrefix(data, linkPrefix), full); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := os.WriteFile(full, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	upstream := func(name string) bool {
		if _, ok := standInUnits[name]; ok {
			return true
		}
		_, err := os.Stat(filepath.Join(lower, "lib/systemd/system", name))
		return err == nil
	}
	ours, scripts := unitFiles(t, l, upstream)
	units := unitDir{}
	for _, set := range []unitDir{standInUnits, nixosUnits(t, l), generated(t, initrd, crypttab(t, l.Luks)), ours} {
		for p, data := range set {
			units[p] = data
		}
	}
	// systemd skips device dependencies in a container (mount.c,
	// mount_add_device_dependencies via unit_add_node_dependency, which
	// returns early when device units are unsupported). Elsewhere a mount
	// of a /dev path gets Requires= and After= its device (newer mount.c's
	// mount_is_bound_to_device: BindsTo= only with x-systemd.device-bound;
	// 252's binds mounts from unit files): here Requires= and After= the
	// stand-in.
	for p, data := range units {
		if m := regexp.MustCompile(`(?m)^What=(/dev/\S+)$`).FindStringSubmatch(data); m != nil && strings.HasSuffix(p, ".mount") {
			dev := "device-standin@" + escapePath(t, m[1]) + ".service"
			units[p+".d/device.conf"] = "[Unit]\nRequires=" + dev + "\nAfter=" + dev + "\n"
		}
	}
	etc := "etc/systemd/system"
	for p, data := range units {
		write(initrd, filepath.Join(etc, p), data, 0o644)
	}
	for p, data := range scripts {
		write(initrd, p, data, 0o755)
	}
	for p, data := range standInTools {
		write(initrd, p, data, 0o755)
	}
	osRelease, err := os.ReadFile(filepath.Join(lower, "usr/lib/os-release"))
	if err != nil {
		t.Fatal(err)
	}
	write(initrd, "etc/initrd-release", string(osRelease), 0o644)
	key := "0123456789abcdef0123456789abcdef"
	write(initrd, "standin/rpool-crypt.key", key, 0o600)
	write(initrd, "standin/credstore/rpool-crypt.key", key, 0o600)
	write(initrd, "standin/password", "right\n", 0o600)
	write(initrd, "standin/typed", strings.Join(append(typed, ""), "\n"), 0o600)
	state := "fails"
	if tpm2 {
		state = "unseals"
	}
	write(initrd, "standin/tpm2", state+"\n", 0o644)
	roots := ""
	if evilRoot {
		roots = "rpool/crypt/root -\n"
	}
	write(initrd, "standin/encryptionroots", roots, 0o644)
	// Every partition of a disk that is there: the pool's members and the
	// ESPs (disko's by-partlabel names, disk-DISK-PART).
	var present []string
	for _, node := range append(append([]string(nil), l.Members...), espNodes(l)...) {
		if !slices.ContainsFunc(missing, func(d string) bool { return strings.Contains(node, "/disk-"+d+"-") }) {
			present = append(present, node)
		}
	}
	write(initrd, "standin/members", strings.Join(l.Members, "\n")+"\n", 0o644)
	write(initrd, "standin/present", strings.Join(present, "\n")+"\n", 0o644)
	write(initrd, "standin/vdev", l.Vdev+"\n", 0o644)
	// The Debian root's network services, masked in both roots, for speed.
	for _, root := range []string{initrd, next} {
		for _, s := range []string{"ssh.service", "avahi-daemon.service", "avahi-daemon.socket", "nftables.service", "systemd-resolved.service"} {
			write(root, "etc/systemd/system/"+s, linkPrefix+"/dev/null", 0)
		}
	}
	for _, d := range []string{"newroot", "newroot-nix", "log", "etc/credstore", "sysroot"} {
		os.MkdirAll(filepath.Join(initrd, d), 0o755)
	}
	// The second root: a probe that logs multi-user.target and powers off.
	write(next, "etc/systemd/system/standin-booted.service", `[Unit]
Description=The new root reached multi-user.target
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "new root: multi-user.target reached" >> /log/events'
ExecStart=/bin/systemctl --no-block poweroff
`, 0o644)
	write(next, "etc/systemd/system/multi-user.target.wants/standin-booted.service", linkPrefix+"../standin-booted.service", 0)
	// The ESPs, mounted by the new root as NixOS's stage 2 does: from fstab
	// lines (nixos/modules/tasks/filesystems.nix: "DEVICE MOUNTPOINT TYPE
	// OPTIONS"), made units by systemd-fstab-generator, which in a
	// container ignores device entries; so its units are written here as
	// it writes them (systemd v252 src/fstab-generator/fstab-generator.c,
	// add_mount): Before=local-fs.target and a local-fs.target.requires
	// link, or with nofail no Before= and a .wants link. local-fs.target's
	// OnFailure= is emergency.target: an ESP that fails without nofail
	// stops the boot. mount.vfat stands in for the ESP: it mounts when
	// udev made its node.
	for _, fs := range l.FileSystems {
		if fs.FSType != "vfat" {
			continue
		}
		name := escapePath(t, fs.MountPoint) + ".mount"
		before, dep := "Before=local-fs.target\n", "requires"
		if contains(fs.Options, "nofail") {
			before, dep = "", "wants"
		}
		write(next, "etc/systemd/system/"+name, fmt.Sprintf("[Unit]\nDocumentation=man:fstab(5) man:systemd-fstab-generator(8)\nSourcePath=/etc/fstab\n%s[Mount]\nWhat=%s\nWhere=%s\nType=vfat\nOptions=%s\n",
			before, fs.Device, fs.MountPoint, strings.Join(fs.Options, ",")), 0o644)
		write(next, "etc/systemd/system/local-fs.target."+dep+"/"+name, linkPrefix+"../"+name, 0)
	}
	write(next, "usr/sbin/mount.vfat", `#!/bin/sh
[ -e "/run/standin$1" ] || { echo "new root: mount $1 on $2 refused: no such device" >> /log/events; echo "mount.vfat: $1 does not exist" >&2; exit 32; }
mount -t tmpfs -o size=1m none "$2" && echo "new root: mount $1 on $2" >> /log/events
`, 0o755)
	for _, d := range []string{"log", "nix"} {
		os.MkdirAll(filepath.Join(next, d), 0o755)
	}
	readEvents := func() []string {
		data, _ := os.ReadFile(events)
		// The isolate may unmount the new root's /log bind (sysroot-log.mount):
		// then the new root writes into its own /log.
		more, _ := os.ReadFile(filepath.Join(next, "log/events"))
		return strings.Split(strings.TrimSpace(string(data)+string(more)), "\n")
	}
	start := time.Now()
	console, exited := testhost.BootOnce(t, testhost.BootOptions{
		Root: initrd,
		Args: []string{
			"--bind=" + next + ":/newroot",
			"--bind=" + logDir + ":/log",
			"--bind=" + logDir + ":/newroot/log",
			// Keeps this machine's kernel command line out.
			"--setenv=SYSTEMD_PROC_CMDLINE=systemd.show_status=1",
		},
		Timeout: 20 * time.Second,
		Done: func() bool {
			return contains(readEvents(), "emergency.target started")
		},
	})
	console = regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(console, "")
	b := initrdBoot{events: readEvents(), console: console, exited: exited, elapsed: time.Since(start), units: units}
	t.Logf("boot took %v; events:\n  %s", b.elapsed.Round(time.Millisecond), strings.Join(b.events, "\n  "))
	return b
}

func (b initrdBoot) fail(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Fatalf("%s\nevents:\n  %s\nlast console lines:\n%s", fmt.Sprintf(format, args...), strings.Join(b.events, "\n  "), tailLines(b.console, 12))
}

func tailLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		// nspawn's, after the container is gone.
		if !strings.HasPrefix(l, "Attempted to remove disk file system") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// index is where the first event starting with prefix is, -1 if none.
func (b initrdBoot) index(prefix string) int {
	for i, e := range b.events {
		if strings.HasPrefix(e, prefix) {
			return i
		}
	}
	return -1
}

func (b initrdBoot) count(prefix string) int {
	n := 0
	for _, e := range b.events {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

// inOrder fails unless each event happened, once, after the one before.
func (b initrdBoot) inOrder(t *testing.T, events ...string) {
	t.Helper()
	last := -1
	for _, e := range events {
		i := b.index(e)
		switch {
		case i < 0:
			b.fail(t, "%q never happened", e)
		case b.count(e) != 1:
			b.fail(t, "%q happened %d times", e, b.count(e))
		case i < last:
			b.fail(t, "%q happened before %q", e, events[indexOf(events, e)-1])
		}
		last = i
	}
}

// checkSwitchedRoot: the initrd switched root and the new root came up.
func (b initrdBoot) checkSwitchedRoot(t *testing.T) {
	t.Helper()
	switch {
	case b.index("emergency.target started") >= 0:
		b.fail(t, "the initrd went to emergency mode")
	case b.index("switch-root:") < 0:
		b.fail(t, "the initrd never switched root (stopped after %v; the console's last lines show where it waits)", b.elapsed.Round(time.Second))
	case b.index("new root: multi-user.target reached") < 0 || !b.exited:
		b.fail(t, "the initrd switched root but the new root never reached multi-user.target and powered off")
	}
}

func (b initrdBoot) checkUnlock(t *testing.T, name string, tpm2 bool, typed int) string {
	t.Helper()
	if tpm2 {
		if b.index("cryptsetup attach "+name+": TPM2") >= 0 || b.index("cryptsetup attach "+name+": password") >= 0 {
			b.fail(t, "the TPM2 unsealed %s, yet a password was asked", name)
		}
		return "cryptsetup attach " + name + ": unlocked by the TPM2"
	}
	if b.index("cryptsetup attach "+name+": TPM2 operation failed") < 0 {
		b.fail(t, "no TPM2 attempt before the password for %s", name)
	}
	if i := b.index("cryptsetup attach " + name + ": too many attempts"); i >= 0 {
		b.fail(t, "%d typed passwords, the last one right, and %s gave up after %d wrong ones (tries= is not 0)", typed, name, b.count("cryptsetup attach "+name+": password"))
	}
	return fmt.Sprintf("cryptsetup attach %s: unlocked by password %d", name, typed)
}

// checkCredstoreBoot: the zfs-encrypted boot, in order, with the credstore
// closed before switch-root and the root kept.
func (b initrdBoot) checkCredstoreBoot(t *testing.T, tpm2 bool, typed int) {
	t.Helper()
	unlocked := b.checkUnlock(t, "credstore", tpm2, typed)
	b.checkSwitchedRoot(t)
	if b.index("zpool import") >= 0 && strings.Contains(b.events[b.index("zpool import")], " -f ") {
		b.fail(t, "rpool was imported with -f (boot.zfs.forceImportRoot): %s", b.events[b.index("zpool import")])
	}
	if i := b.index("cryptsetup detach credstore: udevd stopped"); i >= 0 {
		b.fail(t, "%s", b.events[i])
	}
	b.inOrder(t,
		"zpool import",
		"zfs get encryptionroot rpool/crypt/root",
		"zfs get encryptionroot rpool/crypt/nix",
		"zfs get encryptionroot rpool/crypt/home",
		unlocked,
		"mount /dev/mapper/credstore on /etc/credstore",
		"zfs load-key rpool/crypt",
		"mount rpool/crypt/root on /sysroot",
		"cryptsetup detach credstore",
		"switch-root: /sysroot mounted=yes, /etc/credstore mounted=no, credstore open=no",
		"new root: multi-user.target reached",
	)
	if i := b.index("switch-root: key copies left"); i >= 0 {
		b.fail(t, "%s", b.events[i])
	}
	// The generator's drop-in for the zvol's device: no 90 s limit.
	if drop := b.units["device-standin@dev-zvol-rpool-credstore.service.d/50-device-timeout.conf"]; !strings.Contains(drop, "JobRunningTimeoutSec=infinity") {
		b.fail(t, "systemd-cryptsetup-generator gave the credstore's zvol no device timeout of its own: %q", drop)
	}
}

// checkImport: rpool is imported once, ONLINE as soon as udev made every
// disk's node; with a disk that never appears, DEGRADED after the
// bounded wait of NixOS's import (all its trials), and the boot goes on.
func (b initrdBoot) checkImport(t *testing.T, members int, missing []string) {
	t.Helper()
	i := b.index("zpool import")
	if i < 0 {
		b.fail(t, "rpool was never imported")
	}
	ev := b.events[i]
	switch {
	case members == 0:
		b.fail(t, "the layout has no pool members")
	case len(missing) == 0 && (!strings.Contains(ev, ": ONLINE after ") || strings.HasSuffix(ev, " 60 trials")):
		b.fail(t, "with every disk there, the pool was not imported ONLINE before the wait ran out: %s", ev)
	case len(missing) > 0 && !strings.HasSuffix(ev, ": DEGRADED after 60 trials"):
		b.fail(t, "with %v missing, the import was not DEGRADED after NixOS's 60 trials: %s", missing, ev)
	}
}

// checkNoPool: without enough disks the import fails after its wait, and
// the boot stops before any password or key.
func (b initrdBoot) checkNoPool(t *testing.T) {
	t.Helper()
	switch {
	case b.index("zpool import -d /dev/disk/by-partuuid -N rpool: refused, UNAVAIL") < 0:
		b.fail(t, "the import was not refused with no disk there")
	case b.index("cryptsetup attach") >= 0 || b.index("zfs load-key") >= 0 || b.index("switch-root:") >= 0:
		b.fail(t, "the boot went on without a pool")
	case b.index("emergency.target started") < 0:
		b.fail(t, "the boot did not stop in emergency mode")
	}
}

// espNodes are the layout's ESPs, by the node their fileSystems entry
// names.
func espNodes(l initrdLayout) []string {
	var out []string
	for _, fs := range l.FileSystems {
		if fs.FSType == "vfat" {
			out = append(out, strings.TrimPrefix(fs.Device, "/"))
		}
	}
	return out
}

// checkESPs: the new root mounts the ESP of every disk that is there, and a
// dead disk's ESP, which cannot mount, does not stop its boot.
func (b initrdBoot) checkESPs(t *testing.T, l initrdLayout, missing []string) {
	t.Helper()
	for _, fs := range l.FileSystems {
		if fs.FSType != "vfat" {
			continue
		}
		dead := slices.ContainsFunc(missing, func(d string) bool { return strings.Contains(fs.Device, "/disk-"+d+"-") })
		want := "new root: mount " + fs.Device + " on " + fs.MountPoint
		if dead {
			want += " refused"
		}
		if b.index(want) < 0 {
			b.fail(t, "no %q", want)
		}
	}
}

// checkLuksBoot: the luks boot; its device stays open as the root.
func (b initrdBoot) checkLuksBoot(t *testing.T, tpm2 bool, typed int) {
	t.Helper()
	unlocked := b.checkUnlock(t, "crypted", tpm2, typed)
	b.checkSwitchedRoot(t)
	b.inOrder(t,
		unlocked,
		"mount /dev/mapper/crypted on /sysroot",
		"switch-root: /sysroot mounted=yes",
		"new root: multi-user.target reached",
	)
	if b.index("cryptsetup detach") >= 0 {
		b.fail(t, "the root's LUKS device was closed")
	}
}

// checkRefused: a root dataset that rpool/crypt does not encrypt stops the
// boot before any password or key: the check says why on the console and
// exports the pool.
func (b initrdBoot) checkRefused(t *testing.T) {
	t.Helper()
	msg := "keystone: the encryption root of rpool/crypt/root is -, not rpool/crypt"
	switch {
	case b.index("zfs load-key") >= 0:
		b.fail(t, "the key was loaded for a root dataset rpool/crypt does not encrypt")
	case b.index("cryptsetup attach") >= 0:
		b.fail(t, "the credstore was opened for a root dataset rpool/crypt does not encrypt")
	case b.index("switch-root:") >= 0:
		b.fail(t, "the boot went on into a root dataset rpool/crypt does not encrypt")
	case !strings.Contains(b.console, msg):
		b.fail(t, "the console does not say %q", msg)
	case b.index("zpool export rpool") < 0:
		b.fail(t, "rpool was not exported")
	case b.index("emergency.target started") < 0:
		b.fail(t, "the boot did not stop in emergency mode")
	}
}
