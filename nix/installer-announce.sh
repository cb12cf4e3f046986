# installer-announce.sh VERSION SYSTEM PORT [OUT]
#
# Writes the avahi service file (avahi.service(5)) by which keystone's
# installer announces itself as _keystone-installer._tcp, for
# `keystone discover`. What only the booted machine knows goes in its TXT
# records: its SSH host key's SHA256 fingerprint (made at this boot), UEFI
# or BIOS, and how many disks it has. The fingerprint lets a user compare
# what discover shows with what the console shows; anyone on the link can
# announce anything, so it proves nothing by itself.
#
# installer-announce.nix runs it at boot, before avahi-daemon starts; the
# discover tests run this same file in their test hosts. It needs
# ssh-keygen (OpenSSH), lsblk (util-linux), awk, sed and coreutils.
# KEYSTONE_HOST_KEY and KEYSTONE_EFI_DIR move what it reads, for tests.
set -eu

version=$1
system=$2
port=$3
out=${4:-/etc/avahi/services/keystone-installer.service}
key=${KEYSTONE_HOST_KEY:-/etc/ssh/ssh_host_ed25519_key.pub}
efi=${KEYSTONE_EFI_DIR:-/sys/firmware/efi}

fingerprint=$(ssh-keygen -l -E sha256 -f "$key" | cut -d ' ' -f 2)
case $fingerprint in
SHA256:*) ;;
*)
  echo "installer-announce: no ed25519 host key fingerprint from $key" >&2
  exit 1
  ;;
esac

# The kernel says UEFI by /sys/firmware/efi, there only when it booted so.
if [ -d "$efi" ]; then firmware=uefi; else firmware=bios; fi

# Whole disks a layout could go on: what keystone disks lists, without
# the boot medium (a CD-ROM is "rom"), compressed RAM or empty slots.
disks=$(lsblk -d -n -b -o TYPE,SIZE,NAME | awk '$1 == "disk" && $2 > 0 && $3 !~ /^z?ram/' | wc -l)
disks=$((disks + 0))

# Every installer is "nixos": its instance name comes from its host key,
# new at every boot, so two installers on one link do not collide.
name=installer-$(printf '%s' "$fingerprint" | sha256sum | cut -c 1-8)

xml() { printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g'; }

mkdir -p "$(dirname "$out")"
tmp=$out.tmp
cat >"$tmp" <<EOF
<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<!-- written by keystone's installer-announce.sh at boot -->
<service-group>
  <name>$(xml "$name")</name>
  <service>
    <type>_keystone-installer._tcp</type>
    <port>$(xml "$port")</port>
    <txt-record>version=$(xml "$version")</txt-record>
    <txt-record>system=$(xml "$system")</txt-record>
    <txt-record>firmware=$firmware</txt-record>
    <txt-record>fingerprint=$(xml "$fingerprint")</txt-record>
    <txt-record>disks=$disks</txt-record>
  </service>
</service-group>
EOF
mv "$tmp" "$out"
# On the console (the unit's output goes there too), to compare with what
# keystone discover shows.
echo "keystone installer $name: SSH host key $fingerprint (ED25519)"
