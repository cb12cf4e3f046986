package nix_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// declared is every NixOS option a rendered disk-config.nix sets besides
// disko.devices, and the nixpkgs file that declares it (see
// docs/options.md for the versions read).
var declared = map[string]string{
	"boot.loader.grub.enable":                       "nixos/modules/system/boot/loader/grub/grub.nix",
	"boot.loader.grub.efiSupport":                   "nixos/modules/system/boot/loader/grub/grub.nix",
	"boot.loader.grub.efiInstallAsRemovable":        "nixos/modules/system/boot/loader/grub/grub.nix",
	"boot.loader.grub.devices":                      "nixos/modules/system/boot/loader/grub/grub.nix",
	"boot.loader.grub.mirroredBoots":                "nixos/modules/system/boot/loader/grub/grub.nix",
	"boot.loader.systemd-boot.extraInstallCommands": "nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix",
	"boot.loader.systemd-boot.enable":               "nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix",
	"boot.loader.efi.canTouchEfiVariables":          "nixos/modules/system/boot/loader/efi.nix",
	"boot.zfs.devNodes":                             "nixos/modules/tasks/filesystems/zfs.nix",
	"boot.zfs.requestEncryptionCredentials":         "nixos/modules/tasks/filesystems/zfs.nix",
	"boot.zfs.forceImportRoot":                      "nixos/modules/tasks/filesystems/zfs.nix",
	"services.zfs.autoScrub.enable":                 "nixos/modules/tasks/filesystems/zfs.nix",
	"boot.initrd.systemd.enable":                    "nixos/modules/system/boot/systemd/initrd.nix",
	"boot.initrd.systemd.mounts":                    "nixos/modules/system/boot/systemd/initrd.nix",
	"boot.initrd.systemd.services":                  "nixos/modules/system/boot/systemd/initrd.nix",
	"boot.initrd.systemd.tpm2.enable":               "nixos/modules/system/boot/systemd/tpm2.nix",
	"boot.initrd.supportedFilesystems":              "nixos/modules/tasks/filesystems.nix",
}

// Unit attributes a stage-1 unit takes (nixos/lib/systemd-unit-options.nix:
// sharedOptions has overrideStrategy, requiredBy, wantedBy; commonUnitOptions
// description, requires, after, before, conflicts, unitConfig; the service
// options serviceConfig and script, which initrd.nix puts in the initrd
// (jobScripts); mountOptions what, where, type, options).
var (
	unitAttrs    = []string{"description", "overrideStrategy", "requiredBy", "wantedBy", "requires", "wants", "after", "before", "conflicts", "unitConfig"}
	serviceAttrs = append([]string{"serviceConfig", "script"}, unitAttrs...)
	mountAttrs   = append([]string{"what", "where", "type", "options", "mountConfig"}, unitAttrs...)
)

// optionPaths lists the leaf option paths of a module's config, stopping at
// the options whose values are attribute sets or lists of units.
func optionPaths(prefix string, v any, out map[string]any) {
	m, ok := v.(map[string]any)
	if _, override := m["_type"]; !ok || override || prefix == "boot.initrd.systemd.services" {
		out[prefix] = v
		return
	}
	for k, sub := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		optionPaths(p, sub, out)
	}
}

type layout struct {
	Errors []string       `json:"errors"`
	Config map[string]any `json:"config"`
	Luks   map[string]struct {
		Device string   `json:"device"`
		Opts   []string `json:"crypttabExtraOpts"`
	} `json:"luks"`
	Crypt struct {
		Options map[string]string `json:"options"`
		Hook    string            `json:"preCreateHook"`
	} `json:"crypt"`
	Datasets []string `json:"datasets"`
	// Disko is disko.devices with the "__root" dataset disko adds to every
	// pool (zpool.nix line 432: options = rootFsOptions).
	Disko    map[string]any `json:"disko"`
	PoolHook string         `json:"poolHook"`
	// Mounts are the pool's datasets with a mountpoint (disko then makes a
	// fileSystems entry for each, zfs_fs.nix _config).
	Mounts []struct {
		Name       string `json:"name"`
		Mountpoint string `json:"mountpoint"`
		Option     string `json:"option"` // options.mountpoint, the ZFS property
	} `json:"mounts"`
	Mounted  []string `json:"mounted"`
	Credhook string   `json:"credstoreHook"`
}

// layoutArgs are what a rendered disk-config.nix module is called with in
// these tests: lib's mkDefault as the identity, mkForce as nixpkgs'
// lib/modules.nix writes it (mkOverride 50: { _type = "override"; priority;
// content; }), and store paths for the packages a layout names.
const layoutArgs = `{
	lib = { mkDefault = v: v; mkForce = v: { _type = "override"; priority = 50; content = v; }; };
	config.disko.rootMountPoint = "/mnt";
	pkgs = { util-linux = "/nix/store/util-linux"; rsync = "/nix/store/rsync"; };
}`

func evalLayout(t *testing.T, path string) layout {
	t.Helper()
	var l layout
	evalJSON(t, fmt.Sprintf(`let
		m = import %[2]s;
		c = if builtins.isFunction m then m `+layoutArgs+` else m;
		devices = c.disko.devices;
		pool = devices.zpool.rpool or null;
	in {
		errors = import %[1]s/nix/testdata/disko-types.nix { inherit devices; };
		config = builtins.removeAttrs c [ "disko" ];
		disko.devices = devices // {
			zpool = builtins.mapAttrs (n: p: p // { datasets = p.datasets // { __root = { _name = n; options = p.rootFsOptions or { }; }; }; }) (devices.zpool or { });
		};
		luks = (import %[1]s/nix/testdata/disko-config.nix { inherit devices; }).boot.initrd.luks.devices;
		crypt = if pool == null then { options = { }; preCreateHook = ""; } else { inherit (pool.datasets.crypt) options preCreateHook; };
		# disko creates and mounts a pool's datasets in attrValues order
		# (zpool.nix lines 376 and 392), which is attrNames order.
		datasets = if pool == null then [ ] else builtins.attrNames pool.datasets;
		mounts = if pool == null then [ ] else builtins.filter (m: m.mountpoint != null) (map (n: {
			name = "rpool/${n}";
			mountpoint = pool.datasets.${n}.mountpoint or null;
			option = pool.datasets.${n}.options.mountpoint or "";
		}) (builtins.attrNames pool.datasets));
		mounted = if pool == null then [ ] else builtins.map (m: "rpool/${m}") (builtins.filter (n: (pool.datasets.${n}.mountpoint or null) != null) (builtins.attrNames pool.datasets));
		poolHook = if pool == null then "" else pool.preMountHook or "";
		credstoreHook = if pool == null then "" else pool.datasets.credstore.content.postMountHook or "";
	}`, repoRoot(t), path), &l)
	return l
}

// TestLayouts evaluates every rendered layout against disko v1.12.0's
// types (a stand-in: testdata/disko-types.nix) and the NixOS options it
// sets against their declarations, then checks that the zfs-encrypted
// layout's boot units fit together.
func TestLayouts(t *testing.T) {
	goldens, _ := filepath.Glob(filepath.Join(repoRoot(t), "generate/testdata/golden/*/disk-config.nix"))
	if len(goldens) < 12 {
		t.Fatalf("found %d rendered layouts", len(goldens))
	}
	for _, golden := range goldens {
		name := filepath.Base(filepath.Dir(golden))
		t.Run(name, func(t *testing.T) {
			l := evalLayout(t, golden)
			for _, e := range l.Errors {
				t.Errorf("disko would reject it: %s", e)
			}
			paths := map[string]any{}
			optionPaths("", l.Config, paths)
			for p := range paths {
				if declared[p] == "" {
					t.Errorf("%s: not an option keystone checked upstream (add it to declared and docs/options.md)", p)
				}
			}
			for _, u := range asList(paths["boot.initrd.systemd.mounts"]) {
				checkAttrs(t, "mount", u, mountAttrs)
			}
			services, _ := paths["boot.initrd.systemd.services"].(map[string]any)
			for name, u := range services {
				checkAttrs(t, name, u, serviceAttrs)
			}
			checkDisks(t, name, l, paths)
			switch {
			case strings.HasPrefix(name, "zfs-encrypted"):
				checkCredstore(t, l, paths)
			case strings.HasPrefix(name, "luks"):
				d := l.Luks["crypted"]
				if d.Device != "/dev/disk/by-partlabel/disk-main-luks" || !reflect.DeepEqual(d.Opts, []string{"tpm2-device=auto", "tries=0"}) || paths["boot.initrd.systemd.enable"] != true {
					t.Errorf("luks: crypted %+v, systemd initrd %v; want tpm2-device=auto and tries=0 (ask until the right password comes) under the systemd initrd", d, paths["boot.initrd.systemd.enable"])
				}
			case len(l.Luks) != 0:
				t.Errorf("%s has LUKS devices %v", name, l.Luks)
			}
		})
	}
}

func asList(v any) []any { l, _ := v.([]any); return l }

// topologies are the pool layouts of the multi-disk goldens, by name: the
// disko zpool mode and the number of disks.
var topologies = map[string]struct {
	mode  string
	disks int
}{
	"zfs-encrypted-mirror":         {"mirror", 2},
	"zfs-encrypted-mirror-aarch64": {"mirror", 2},
	"zfs-encrypted-mirror-vm":      {"mirror", 2},
	"zfs-encrypted-raidz1":         {"raidz1", 3},
	"zfs-encrypted-raidz2":         {"raidz2", 4},
	"zfs-encrypted-stripe":         {"", 2},
}

// checkDisks: every disk has the same partitions, its ZFS partition in
// rpool, its own ESP mounted (nofail when there are several, so a dead
// disk stops no boot), and the boot loader is on every ESP: GRUB's
// mirroredBoots (grub.nix: a list of { path, efiSysMountPoint,
// efiBootloaderId, devices }, with devices emptied so that grub.nix adds
// no entry of its own for /boot) or the copy after systemd-boot.
func checkDisks(t *testing.T, name string, l layout, paths map[string]any) {
	t.Helper()
	devices, _ := l.Disko["devices"].(map[string]any)
	disks, _ := devices["disk"].(map[string]any)
	want, multi := topologies[name]
	if !multi {
		want.disks = 1
	}
	if len(disks) != want.disks {
		t.Fatalf("%d disks, want %d", len(disks), want.disks)
	}
	pool, _ := devices["zpool"].(map[string]any)
	if rpool, ok := pool["rpool"].(map[string]any); ok {
		if mode, _ := rpool["mode"].(string); mode != want.mode {
			t.Errorf("rpool's mode %q, want %q", mode, want.mode)
		}
	}
	var parts []string
	esps := map[string]string{} // mountpoint -> device
	for d, v := range disks {
		disk := v.(map[string]any)
		content := disk["content"].(map[string]any)
		ps := content["partitions"].(map[string]any)
		var names []string
		for p := range ps {
			names = append(names, p)
		}
		sort.Strings(names)
		if parts == nil {
			parts = names
		} else if !reflect.DeepEqual(parts, names) {
			t.Errorf("disk %s has partitions %v, another %v: want the same on every disk", d, names, parts)
		}
		if zfs, ok := ps["zfs"].(map[string]any); ok && strings.HasPrefix(name, "zfs") {
			if c := zfs["content"].(map[string]any); c["pool"] != "rpool" {
				t.Errorf("disk %s's ZFS partition is in pool %v", d, c["pool"])
			}
		}
		esp := ps["ESP"].(map[string]any)["content"].(map[string]any)
		mp, _ := esp["mountpoint"].(string)
		if _, dup := esps[mp]; dup {
			t.Errorf("two ESPs at %s", mp)
		}
		esps[mp] = disk["device"].(string)
		if opts := strs(esp["mountOptions"]); multi && !contains(opts, "nofail") {
			t.Errorf("disk %s's ESP at %s is mounted with %v: without nofail a dead disk stops the boot", d, mp, opts)
		}
	}
	if _, ok := esps["/boot"]; !ok {
		t.Errorf("no ESP at /boot: %v", esps)
	}
	if !multi {
		if paths["boot.loader.grub.mirroredBoots"] != nil || paths["boot.loader.systemd-boot.extraInstallCommands"] != nil {
			t.Errorf("a one-disk host mirrors its ESP")
		}
		return
	}
	if paths["boot.loader.grub.enable"] == true {
		forced, _ := paths["boot.loader.grub.devices"].(map[string]any)
		if forced["_type"] != "override" || forced["priority"] != float64(50) || len(asList(forced["content"])) != 0 {
			t.Errorf("boot.loader.grub.devices = %v, want lib.mkForce [ ] (disko sets it to every disk, and grub.nix then adds an entry for /boot with all of them)", paths["boot.loader.grub.devices"])
		}
		got := map[string]string{}
		for _, e := range asList(paths["boot.loader.grub.mirroredBoots"]) {
			m := e.(map[string]any)
			checkAttrs(t, "mirroredBoots entry", m, []string{"path", "efiSysMountPoint", "efiBootloaderId", "devices"})
			devs := strs(m["devices"])
			if len(devs) != 1 {
				t.Errorf("mirroredBoots entry %v: want the one disk whose ESP it is", m)
				continue
			}
			got[m["path"].(string)] = devs[0]
		}
		if !reflect.DeepEqual(got, esps) {
			t.Errorf("GRUB installs to %v, want every ESP with its disk %v", got, esps)
		}
		return
	}
	script, _ := paths["boot.loader.systemd-boot.extraInstallCommands"].(string)
	for mp := range esps {
		if mp != "/boot" && !strings.Contains(script, " "+mp) {
			t.Errorf("systemd-boot's install is not copied to %s:\n%s", mp, script)
		}
	}
	if !strings.Contains(script, "rsync --recursive --times --modify-window=1 --delete --exclude=/loader/random-seed /boot/ \"$esp\"/") {
		t.Errorf("extraInstallCommands does not copy /boot to the other ESPs:\n%s", script)
	}
}

func checkAttrs(t *testing.T, what string, u any, allowed []string) {
	t.Helper()
	m, _ := u.(map[string]any)
	for k := range m {
		if !contains(allowed, k) {
			t.Errorf("%s: %s is not a stage-1 unit option", what, k)
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func strs(v any) []string {
	var out []string
	for _, x := range asList(v) {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// checkCredstore: the units that open the credstore, load rpool/crypt's key
// and close the credstore again name each other as systemd and NixOS name
// them, and the install writes the key where the boot reads it.
func checkCredstore(t *testing.T, l layout, paths map[string]any) {
	t.Helper()
	cs, ok := l.Luks["credstore"]
	if !ok || cs.Device != "/dev/zvol/rpool/credstore" {
		t.Fatalf("no credstore on the zvol rpool/credstore: %+v", l.Luks)
	}
	// crypttab options, which luksroot.nix writes into the systemd
	// initrd's crypttab (crypttabExtraOpts: "Only used with systemd stage 1").
	// tries=0: crypttab(5) "If set to 0, the user is queried for a password
	// indefinitely" (the default, 3, ends in the locked emergency mode).
	// x-systemd.device-timeout=: crypttab(5); systemd-cryptsetup-generator
	// turns it into the zvol device's JobRunningTimeoutSec= (TestInitrdBoot
	// runs the generator), instead of the default 90 s from early boot.
	if !reflect.DeepEqual(cs.Opts, []string{"tpm2-device=auto", "tpm2-measure-pcr=yes", "tries=0", "x-systemd.device-timeout=infinity"}) || paths["boot.initrd.systemd.enable"] != true {
		t.Errorf("credstore crypttab options %v, systemd initrd %v; want tpm2-device=auto, tpm2-measure-pcr=yes, tries=0 and x-systemd.device-timeout=infinity", cs.Opts, paths["boot.initrd.systemd.enable"])
	}
	// zfs.nix: createImportService passes ZFS_FORCE="-f" to `zpool import`
	// while forceImportRoot is true (its default), which the option's text
	// calls "highly recommended to disable".
	if paths["boot.zfs.forceImportRoot"] != false {
		t.Errorf("boot.zfs.forceImportRoot = %v: rpool is imported with -f on every boot; want false", paths["boot.zfs.forceImportRoot"])
	}
	// zfs.nix: with requestEncryptionCredentials the import service runs
	// `zfs load-key` itself, before the credstore is open.
	if paths["boot.zfs.requestEncryptionCredentials"] != false {
		t.Errorf("boot.zfs.requestEncryptionCredentials = %v, want false", paths["boot.zfs.requestEncryptionCredentials"])
	}
	if !contains(strs(paths["boot.initrd.supportedFilesystems"]), "ext4") {
		t.Errorf("the initrd cannot mount the credstore's ext4: %v", paths["boot.initrd.supportedFilesystems"])
	}
	if paths["boot.initrd.systemd.tpm2.enable"] != true {
		t.Errorf("no TPM2 support in the initrd")
	}
	// systemd-cryptsetup-generator names the unit systemd-cryptsetup@NAME.
	cryptUnit := "systemd-cryptsetup@credstore.service"
	mounts := asList(paths["boot.initrd.systemd.mounts"])
	if len(mounts) != 1 {
		t.Fatalf("initrd mounts %v, want the credstore's", mounts)
	}
	mount := mounts[0].(map[string]any)
	where, _ := mount["where"].(string)
	switch {
	case mount["what"] != "/dev/mapper/credstore" || mount["type"] != "ext4" || !strings.Contains(mount["options"].(string), "ro"):
		t.Errorf("credstore mount %v, want /dev/mapper/credstore read-only as ext4", mount)
	case !contains(strs(mount["requires"]), cryptUnit) || !contains(strs(mount["after"]), cryptUnit):
		t.Errorf("the mount does not wait for %s: %v", cryptUnit, mount)
	case !closedBeforeSwitchRoot(mount):
		t.Errorf("the credstore stays mounted after switch-root: %v", mount)
	}
	services := paths["boot.initrd.systemd.services"].(map[string]any)
	dropIn, _ := services["systemd-cryptsetup@credstore"].(map[string]any)
	// systemd-unit-options.nix: asDropin writes overrides.conf, which
	// leaves the generator's unit in place.
	if dropIn["overrideStrategy"] != "asDropin" || !closedBeforeSwitchRoot(dropIn) {
		t.Errorf("the credstore stays open after switch-root: %v", dropIn)
	}
	load, _ := services["rpool-crypt-load-key"].(map[string]any)
	unit, _ := load["unitConfig"].(map[string]any)
	svc, _ := load["serviceConfig"].(map[string]any)
	cred, _ := svc["LoadCredential"].(string)
	id, file, _ := strings.Cut(cred, ":")
	// zfs.nix names the import zfs-import-${pool}; the root mount in the
	// initrd is sysroot.mount.
	switch {
	case !contains(strs(load["requires"]), "zfs-import-rpool.service") || !contains(strs(load["after"]), "zfs-import-rpool.service"):
		t.Errorf("the key is loaded before the pool is imported: %v", load)
	case !contains(strs(load["before"]), "sysroot.mount"):
		t.Errorf("/ is mounted without waiting for the key: %v", load)
	// initrd.nix: initrd-switch-root.service requires initrd-nixos-activation,
	// which RequiresMountsFor=/sysroot/run, so whatever sysroot.mount
	// requires is started by the switch-root transaction, which also stops
	// the credstore (Conflicts=): systemd then drops the switch-root.
	case contains(strs(load["requiredBy"]), "sysroot.mount") || contains(strs(load["wantedBy"]), "sysroot.mount") || !contains(strs(load["requiredBy"]), "initrd.target") || !contains(strs(load["before"]), "initrd.target"):
		t.Errorf("the key loader must hang off initrd.target (requiredBy and before it), never sysroot.mount: %v", load)
	case svc["RemainAfterExit"] != true:
		t.Errorf("the key loader does not remain active until switch-root (RemainAfterExit): %v", svc)
	case unit["RequiresMountsFor"] != where || unit["DefaultDependencies"] != false:
		t.Errorf("the key unit does not wait for the credstore at %s: %v", where, unit)
	case filepath.Dir(file) != where:
		t.Errorf("LoadCredential %q is not read from the credstore at %s", cred, where)
	case svc["ExecStart"] != "/bin/zfs load-key -L file://%d/"+id+" rpool/crypt":
		t.Errorf("ExecStart %v does not read the credential %s", svc["ExecStart"], id)
	}
	checkUdevOrder(t, services)
	checkOneOwner(t, l)
	checkEncryptionRoot(t, l, services)
	// The install: rpool/crypt is raw-keyed aes-256-gcm, the key file is
	// made in the credstore (32 random bytes) and its keylocation names the
	// file the boot reads. No keylocation among disko's options: disko
	// v1.12.0's zfs_fs.nix (line 146) then unloads the key with
	// `zfs unload-key ${config.name}`, the dataset's short name, which fails.
	opts := l.Crypt.Options
	if opts["encryption"] != "aes-256-gcm" || opts["keyformat"] != "raw" || opts["keylocation"] != "" {
		t.Errorf("rpool/crypt options %v", opts)
	}
	for _, want := range []string{
		"dd if=/dev/urandom of=/run/keystone-credstore/" + id + " bs=32 count=1",
		"-o keylocation=file:///run/keystone-credstore/" + id,
		"zfs set keylocation=file://" + file + " rpool/crypt",
		"if ! zfs list -H -o name rpool/crypt",
	} {
		if !strings.Contains(l.Crypt.Hook, want) {
			t.Errorf("rpool/crypt's preCreateHook lacks %q:\n%s", want, l.Crypt.Hook)
		}
	}
	// The credstore is created (and opened) before rpool/crypt needs it.
	sorted := append([]string(nil), l.Datasets...)
	sort.Strings(sorted)
	if !reflect.DeepEqual(sorted, l.Datasets) || indexOf(l.Datasets, "credstore") > indexOf(l.Datasets, "crypt") {
		t.Errorf("datasets in the order %v: the credstore must come before crypt", l.Datasets)
	}
	if !strings.Contains(l.PoolHook, "zpool import -N -R /mnt rpool") {
		t.Errorf("rpool's preMountHook does not import without keys:\n%s", l.PoolHook)
	}
	if !strings.Contains(l.Credhook, "zfs load-key -L file:///run/keystone-credstore/"+id+" rpool/crypt") || !strings.HasSuffix(strings.TrimSpace(l.Credhook), "cryptsetup close credstore") {
		t.Errorf("the credstore's postMountHook does not load the key and close it:\n%s", l.Credhook)
	}
}

// inInitrd are the mountpoints the initrd mounts (nixpkgs
// nixos/lib/utils.nix pathsNeededForBoot, the ones this layout has).
var inInitrd = []string{"/", "/nix"}

// checkOneOwner: a dataset mounted after the initrd has one owner, its
// fileSystems entry (disko's _config, without zfsutil for legacy), and
// mountpoint=legacy keeps zfs-mount.service's `zfs mount -a` off it;
// nixpkgs#529602: "You cannot have zfs-mount.service and a systemd mount
// unit handling the same dataset. They race".
func checkOneOwner(t *testing.T, l layout) {
	t.Helper()
	if len(l.Mounts) == 0 {
		t.Fatal("no ZFS dataset is mounted")
	}
	for _, m := range l.Mounts {
		if !contains(inInitrd, m.Mountpoint) && m.Option != "legacy" {
			t.Errorf("%s is mounted at %s both by zfs-mount.service (its mountpoint property) and by a fileSystems entry; want options.mountpoint = \"legacy\"", m.Name, m.Mountpoint)
		}
	}
}

// checkUdevOrder: stop jobs run in reverse order of start, so udevd, which
// initrd-udevadm-cleanup-db.service stops at switch-root too, must be
// ordered before the credstore's cryptsetup unit to outlive its detach.
func checkUdevOrder(t *testing.T, services map[string]any) {
	t.Helper()
	udevd, _ := services["systemd-udevd"].(map[string]any)
	if !contains(strs(udevd["before"]), "systemd-cryptsetup@credstore.service") {
		t.Errorf("systemd-udevd is not ordered before systemd-cryptsetup@credstore.service: udevd may stop while the credstore closes, leaving it open: %v", udevd)
	}
}

// checkEncryptionRoot: a unit between the import and the credstore checks
// the encryption root of every dataset the host mounts before any password
// is asked or key loaded.
func checkEncryptionRoot(t *testing.T, l layout, services map[string]any) {
	t.Helper()
	check, _ := services["rpool-crypt-check"].(map[string]any)
	svc, _ := check["serviceConfig"].(map[string]any)
	script, _ := check["script"].(string)
	for _, u := range []string{"systemd-cryptsetup@credstore.service", "rpool-crypt-load-key.service"} {
		if !contains(strs(check["requiredBy"]), u) || !contains(strs(check["before"]), u) {
			t.Errorf("rpool-crypt-check does not come before %s, which must not start without it: %v", u, check)
		}
	}
	switch {
	case !contains(strs(check["requires"]), "zfs-import-rpool.service") || !contains(strs(check["after"]), "zfs-import-rpool.service"):
		t.Errorf("rpool-crypt-check does not wait for the import: %v", check)
	case svc["Type"] != "oneshot" || svc["RemainAfterExit"] != true:
		t.Errorf("rpool-crypt-check is not a oneshot that remains: %v", svc)
	case !strings.Contains(script, "zfs get -H -o value encryptionroot") || !strings.Contains(script, "zpool export rpool") || !strings.Contains(script, "exit 1"):
		t.Errorf("rpool-crypt-check does not check encryptionroot, export the pool and fail:\n%s", script)
	}
	for _, ds := range l.Mounted {
		if !strings.Contains(script, ds) {
			t.Errorf("rpool-crypt-check does not check %s, which the host mounts:\n%s", ds, script)
		}
	}
}

func closedBeforeSwitchRoot(u map[string]any) bool {
	return contains(strs(u["conflicts"]), "initrd-switch-root.target") && contains(strs(u["before"]), "initrd-switch-root.target")
}

func indexOf(l []string, s string) int {
	for i, x := range l {
		if x == s {
			return i
		}
	}
	return -1
}

// TestDiskoTypesStandIn: the stand-in rejects what disko's module system
// rejects, so TestLayouts can fail.
func TestDiskoTypesStandIn(t *testing.T) {
	good := `{ disk.main = { type = "disk"; device = "/dev/vda"; content = { type = "gpt"; partitions.p = { size = "100%"; content = { type = "zfs"; pool = "rpool"; }; }; }; };
		zpool.rpool = { type = "zpool"; options.ashift = "12"; datasets.v = { type = "zfs_volume"; size = "100M"; content = { type = "luks"; name = "c"; content = { type = "filesystem"; format = "ext4"; }; }; }; }; }`
	for _, tc := range []struct {
		name, devices string
		want          string
	}{
		{"good", good, ""},
		{"int ashift", strings.Replace(good, `ashift = "12"`, `ashift = 12`, 1), "options: not an attribute set of strings"},
		{"unknown option", strings.Replace(good, `size = "100M";`, `size = "100M"; keylocation = "x";`, 1), "datasets.v.keylocation: no such option"},
		{"luks without name", strings.Replace(good, `name = "c";`, ``, 1), "content.name: required, not set"},
		{"table in a zvol", strings.Replace(good, `content = { type = "luks"`, `content = { type = "gpt"`, 1), "is not one of"},
		{"bad size", strings.Replace(good, `size = "100%"`, `size = "half"`, 1), "is not a gpt size"},
		{"hook not a string", strings.Replace(good, `name = "c";`, `name = "c"; postMountHook = [ ];`, 1), "postMountHook: not a string"},
		{"mirror", strings.Replace(good, `options.ashift`, `mode = "mirror"; options.ashift`, 1), ""},
		{"raid10", strings.Replace(good, `options.ashift`, `mode = "raid10"; options.ashift`, 1), "mode: raid10 is not one of"},
		{"stripe by name", strings.Replace(good, `options.ashift`, `mode = "stripe"; options.ashift`, 1), "mode: stripe is not one of"},
	} {
		var errs []string
		evalJSON(t, fmt.Sprintf(`import %s/nix/testdata/disko-types.nix { devices = %s; }`, repoRoot(t), tc.devices), &errs)
		got := strings.Join(errs, "; ")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestDeclaredOptionsDocumented: every option TestLayouts accepts has its
// row in docs/options.md, where the upstream declaration is cited.
func TestDeclaredOptionsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs/options.md"))
	if err != nil {
		t.Fatal(err)
	}
	for opt, file := range declared {
		last := opt[strings.LastIndex(opt, ".")+1:]
		if !strings.Contains(string(doc), "`"+opt) && !strings.Contains(string(doc), "."+last+"`") {
			t.Errorf("docs/options.md has no row for %s (%s)", opt, file)
		}
		if !strings.Contains(string(doc), file) && !strings.Contains(string(doc), filepath.Base(file)) {
			t.Errorf("docs/options.md does not cite %s for %s", file, opt)
		}
	}
}
