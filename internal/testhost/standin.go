package testhost

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// NixosAnywhere plays nixos-anywhere: it records its argv, prints its steps, and
// does what an install visibly does to the target over ssh, as
// nixos-anywhere does: copies the --extra-files tree (the new host key)
// into it, makes it say it is NixOS and, when nix can evaluate the
// flake's toplevel, run it (/run/current-system, made at every boot by
// systemd-tmpfiles as NixOS's activation makes it), and reboots it.
// STANDIN_SYSTEM=DIR is the new system's files: it copies that tree into
// the target too, after removing what the previous such install copied
// (the wipe, as far as a test can tell). STANDIN_MODE=noreboot
// says it did both and does neither (a host that hangs on its way down),
// =stuck installs but does not reboot, and writes $STANDIN_ARGV.done once
// its writes are synced (a host to hard-reset), =hang sleeps.
const NixosAnywhere = `#!/bin/bash
set -eu
printf '%s\n' "$@" > "$STANDIN_ARGV"
while [ $# -gt 0 ]; do
  case "$1" in
    --extra-files) extra=$2; shift ;;
    --target-host) target=$2; shift ;;
    -i) key=$2; shift ;;
    -p) port=$2; shift ;;
    --disk-encryption-keys) shift 2 ;;
    --flake) flake=$2; shift ;;
  esac
  shift
done
ssh=(ssh -i "$key" -p "${port:-22}" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "$target")
echo "### Uploading install SSH keys ###"
echo "### Formatting hard drive with disko ###"
case "${STANDIN_MODE:-}" in
  hang) echo "### Installing NixOS ###"; sleep 300 ;;
  fail) echo "disko: no such device" >&2; exit 1 ;;
  noreboot) echo "### Installing NixOS ###"; echo "### Rebooting ###"; echo "### Done! ###"; exit 0 ;;
esac
echo "### Installing NixOS ###"
system=$(nix --extra-experimental-features 'nix-command flakes' eval --raw \
  "${flake%%#*}#nixosConfigurations.\"${flake#*#}\".config.system.build.toplevel.outPath" 2>/dev/null) || system=
[ -z "$system" ] || "${ssh[@]}" "echo 'L+ /run/current-system - - - - $system' > /etc/tmpfiles.d/keystone-current-system.conf"
if [ -n "${STANDIN_SYSTEM:-}" ]; then
  "${ssh[@]}" 'if [ -f /var/lib/standin-system ]; then xargs -r -d "\n" rm -f < /var/lib/standin-system; fi'
  (cd "$STANDIN_SYSTEM" && find . ! -type d | sed 's|^\.||') | "${ssh[@]}" 'mkdir -p /var/lib && cat > /var/lib/standin-system'
  # Its entries, not ".": extracting "." would set the mode of / itself.
  (cd "$STANDIN_SYSTEM" && tar -cf - $(ls -A)) | "${ssh[@]}" 'tar -C / --no-same-owner -xf -'
fi
tar -C "$extra" -cf - . | "${ssh[@]}" 'tar -C / --no-same-owner -xf - && chmod 600 /etc/ssh/ssh_host_ed25519_key && printf "ID=nixos\nPRETTY_NAME=\"NixOS 25.11\"\n" > /etc/os-release'
echo "### Rebooting ###"
if [ "${STANDIN_MODE:-}" = stuck ]; then
  "${ssh[@]}" sync
  touch "$STANDIN_ARGV.done"
else
  "${ssh[@]}" 'systemctl reboot' || true
fi
echo "### Done! ###"
`

// AttachDisk makes a sparse loop device and its node inside the target.
func AttachDisk(t testing.TB, h *Host, size int64) string {
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		t.Fatal(err)
	}
	node := fmt.Sprintf("/dev/kstest%d", unix.Minor(uint64(st.Rdev)))
	if _, err := h.Run(t, "mknod", node, "b", fmt.Sprint(unix.Major(uint64(st.Rdev))), fmt.Sprint(unix.Minor(uint64(st.Rdev)))); err != nil {
		t.Fatal(err)
	}
	return node
}

// AsInstaller makes the target say it is the NixOS live installer: a
// Debian container is no target nixos-anywhere can kexec (no kexec in a
// container, nor in this machine's kernel).
func AsInstaller(t testing.TB, h *Host) {
	t.Helper()
	if _, err := h.Run(t, "sh", "-c", `printf 'ID=nixos\nVARIANT_ID=installer\nPRETTY_NAME="NixOS 25.11 (Xantusia)"\n' > /etc/os-release`); err != nil {
		t.Fatal(err)
	}
}
