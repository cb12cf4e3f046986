package nix_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// stubs stand in for the tools the zfs-encrypted layout's disko hooks call,
// keeping the state of the pool, the credstore and its mount in files under
// $S, and failing where the real tool would: closing a mounted credstore,
// writing the key into an unmounted one, creating rpool/crypt twice.
var stubs = map[string]string{
	"zpool": `case "$*" in
  "list rpool") [ -e "$S/imported" ] ;;
  "import -N -R /mnt rpool") [ ! -e "$S/imported" ] && touch "$S/imported" ;;
  *) echo "zpool $*: not modelled" >&2; exit 2 ;;
esac`,
	"zvol_wait": `[ -e "$S/imported" ]`,
	"zfs": `[ -e "$S/imported" ] || { echo "zfs: no pool" >&2; exit 1; }
case "$1 $2" in
  "list -H") [ -e "$S/crypt" ] ;;
  "get -H") [ -e "$S/crypt" ] && cat "$S/keystatus" ;;
  "create -u")
    [ ! -e "$S/crypt" ] || { echo "zfs create: exists" >&2; exit 1; }
    loc=$(printf '%s\n' "$@" | sed -n 's|^keylocation=file://||p')
    [ "$(wc -c < "$loc")" = 32 ] || { echo "zfs create: no 32-byte key at $loc" >&2; exit 1; }
    cp "$loc" "$S/crypt"; echo available > "$S/keystatus" ;;
  "set keylocation=file:///etc/credstore/rpool-crypt.key") [ -e "$S/crypt" ] ;;
  "load-key -L")
    cmp -s "${3#file://}" "$S/crypt" || { echo "zfs load-key: wrong key" >&2; exit 1; }
    echo available > "$S/keystatus" ;;
  *) echo "zfs $*: not modelled" >&2; exit 2 ;;
esac`,
	"cryptsetup": `[ "$*" = "close credstore" ] && [ -e "$S/open" ] && [ ! -e "$S/mounted" ] && rm "$S/open"`,
	"mount": `dir=$(eval echo "\${$#}")
[ -e "$S/open" ] && [ ! -e "$S/mounted" ] || { echo "mount: credstore not open, or mounted" >&2; exit 1; }
case "$*" in *" -o ro "*) touch "$S/ro" ;; *) rm -f "$S/ro" ;; esac
touch "$S/mounted"; [ -d "$dir" ]`,
	"umount":     `[ -e "$S/mounted" ] && rm "$S/mounted" "$S/ro" 2>/dev/null; [ ! -e "$S/mounted" ]`,
	"mountpoint": `[ -e "$S/mounted" ]`,
	"dd": `[ -e "$S/mounted" ] && [ ! -e "$S/ro" ] || { echo "dd: credstore not mounted read-write" >&2; exit 1; }
out=$(printf '%s\n' "$@" | sed -n 's|^of=||p')
head -c 32 /dev/urandom > "$out"; echo "$out" >> "$S/keys-made"`,
}

// TestHooksThroughDiskoRuns runs the layout's hooks, with stub tools, in
// the order disko's install test runs its scripts (lib/tests.nix, direct
// mode: format, mount, mount, unmount, unmount, mount, destroy and format,
// format), doing in between what disko itself does to the credstore (luks
// _create and _mount open it; zpool _unmount exports the pool, which
// unloads its keys).
func TestHooksThroughDiskoRuns(t *testing.T) {
	l := evalLayout(t, filepath.Join(repoRoot(t), "generate/testdata/golden/zfs-encrypted-vm/disk-config.nix"))
	dir := t.TempDir()
	bin, state, cred := filepath.Join(dir, "bin"), filepath.Join(dir, "state"), filepath.Join(dir, "credstore")
	os.MkdirAll(bin, 0o755)
	os.MkdirAll(state, 0o755)
	for name, body := range stubs {
		os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/bash\n"+body+"\n"), 0o755)
	}
	// The hooks' own directory, moved under the test's (it is /run/…).
	local := func(hook string) string { return strings.ReplaceAll(hook, "/run/keystone-credstore", cred) }
	run := func(what, script string) {
		t.Helper()
		// disko's scripts run under set -efux (lib/default.nix).
		cmd := exec.Command("bash", "-efu", "-o", "pipefail", "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "S="+state)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, out.String())
		}
	}
	has := func(f string) bool { _, err := os.Stat(filepath.Join(state, f)); return err == nil }
	keysMade := func() int {
		data, _ := os.ReadFile(filepath.Join(state, "keys-made"))
		return strings.Count(string(data), "\n")
	}
	format := func() {
		// zpool _create imports or creates the pool; luks _create opens the
		// credstore (cryptsetup open … --persistent); then crypt's hook.
		touch(t, state, "imported")
		touch(t, state, "open")
		run("format: crypt preCreateHook", local(l.Crypt.Hook))
	}
	mount := func() {
		run("mount: rpool preMountHook", l.PoolHook)
		touch(t, state, "open") // luks _mount.dev opens it when closed
		run("mount: credstore postMountHook", local(l.Credhook))
	}
	unmount := func() {
		if has("imported") { // zpool export unloads the keys
			os.Remove(filepath.Join(state, "imported"))
			os.WriteFile(filepath.Join(state, "keystatus"), []byte("unavailable\n"), 0o644)
		}
	}
	check := func(when string, keys int) {
		t.Helper()
		switch {
		case keysMade() != keys:
			t.Fatalf("%s: %d keys made, want %d", when, keysMade(), keys)
		case has("open") || has("mounted"):
			t.Fatalf("%s: the credstore is left open or mounted", when)
		}
	}

	format()
	if !has("crypt") || has("mounted") {
		t.Fatal("format: rpool/crypt not created, or the credstore left mounted")
	}
	if keysMade() != 1 {
		t.Fatalf("format made %d keys", keysMade())
	}
	mount()
	check("mount", 1)
	mount()
	check("second mount", 1)
	unmount()
	unmount()
	mount()
	check("mount after unmount", 1)
	if data, _ := os.ReadFile(filepath.Join(state, "keystatus")); string(data) != "available\n" {
		t.Fatalf("mount after unmount: rpool/crypt's key is %q", data)
	}
	// Wiping the disks (disko --yes-wipe-all-disks) and formatting again
	// makes a new key for the new dataset.
	unmount()
	os.RemoveAll(state)
	os.RemoveAll(cred)
	os.MkdirAll(state, 0o755)
	format()
	mount()
	check("destroy, format, mount", 1)
	// format is idempotent: an existing rpool/crypt never gets a new key.
	format()
	if keysMade() != 1 {
		t.Fatalf("a second format made a new key for an existing rpool/crypt")
	}
}

func touch(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}
