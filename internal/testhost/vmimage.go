package testhost

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// VMImage is a bootable Debian disk image for QEMU guests, built once per
// machine into CacheDir from the cached nspawn root plus VMPackages. Boot it
// read-only, through a qcow2 overlay: the files here are shared.
//
// The disk is GPT: partition 1 an ESP with Debian's signed boot chain and
// the kernel: shim at the removable path EFI/BOOT/BOOTX64.EFI, then GRUB,
// then the kernel, each signed, so the image boots the same on OVMF with
// Secure Boot enforced (Microsoft's keys enrolled) as without. Partition 2 the ext4 root (label
// ksroot), partition 3 a spare 64 MiB partition (label spare) for tests
// that need a block device of their own, such as a LUKS volume. The guest
// takes its address by DHCP (systemd-networkd), runs sshd on port 22 with
// HostKey, and lets ClientKey log in as root. Its console is ttyS0. Debian's
// Nix is installed, for switch's tests to copy systems into its store.
type VMImage struct {
	Disk    string // the raw disk image
	Kernel  string // vmlinuz, for direct kernel boot
	Initrd  string // initrd.img, for direct kernel boot
	Cmdline string // the kernel command line the ESP's boot entry uses too

	ClientKey     ssh.Signer    // may log in as root
	ClientKeyPath string        // its OpenSSH private key file, mode 0600, for ssh -i
	HostKey       ssh.PublicKey // sshd's ed25519 host key in the image
	HostKeyPath   string        // the private host key file (what a stand-in installer would replace)
}

// VMPackages are installed on top of BasePackages in the VM image's root.
var VMPackages = []string{
	"linux-image-amd64", "udev", "kmod", "cryptsetup", "tpm2-tools", "e2fsprogs",
	// nix-bin's perl-dbdabi-94 is virtual: libdbi-perl provides it.
	"nix-bin", "libdbi-perl",
}

// The ESP's signed boot chain, unpacked from Debian's shim-signed and
// grub-efi-amd64-signed rather than installed: their scripts would install
// a boot loader.
const (
	signedShim = "usr/lib/shim/shimx64.efi.signed"
	signedGrub = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
)

// vmRecipe names how the VM image is made; change it whenever that changes.
const vmRecipe = "vm-v3"

// VMHostname is the guest's hostname.
const VMHostname = "kstest"

const (
	espMiB   = 64
	spareMiB = 64
	mib      = 1 << 20
)

// BuildVMImage returns the cached VM image, building it the first time
// (about 90 s from a cached Debian root). It needs root, systemd-nspawn, the
// Debian mirror, sgdisk (gdisk), mkfs.ext4 (e2fsprogs), mkfs.vfat
// (dosfstools) and mcopy (mtools).
func BuildVMImage(t testing.TB) *VMImage {
	t.Helper()
	RequireRoot(t)
	if os.Geteuid() != 0 {
		t.Fatal("testhost: the VM image needs root (debootstrap, systemd-nspawn)")
	}
	for c, pkg := range map[string]string{"sgdisk": "gdisk", "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools", "mcopy": "mtools", "systemd-nspawn": "systemd-container"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("testhost: %s is not installed (apt-get install %s): %v", c, pkg, err)
		}
	}
	pkgs := slices.Clone(VMPackages)
	slices.Sort(pkgs)
	sum := sha256.Sum256([]byte(vmRecipe + " " + rootRecipe + " " + Suite + " " + strings.Join(BasePackages, ",") + " " + strings.Join(pkgs, ",")))
	dir := filepath.Join(CacheDir(), "vm-"+Suite+"-"+hex.EncodeToString(sum[:6]))
	img := &VMImage{
		Disk:          filepath.Join(dir, "disk.img"),
		Kernel:        filepath.Join(dir, "vmlinuz"),
		Initrd:        filepath.Join(dir, "initrd.img"),
		Cmdline:       "root=LABEL=ksroot ro console=ttyS0 quiet",
		ClientKeyPath: filepath.Join(dir, "id_ed25519"),
		HostKeyPath:   filepath.Join(dir, "ssh_host_ed25519_key"),
	}
	if _, err := os.Stat(dir); err != nil {
		unlock := lockFile(t, dir+".lock")
		if _, err := os.Stat(dir); err != nil {
			buildVMImage(t, dir, img)
		}
		unlock()
	}
	b, err := os.ReadFile(img.ClientKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	if img.ClientKey, err = ssh.ParsePrivateKey(b); err != nil {
		t.Fatal(err)
	}
	if img.HostKey, err = readHostKey(img.HostKeyPath); err != nil {
		t.Fatal(err)
	}
	return img
}

func buildVMImage(t testing.TB, dir string, img *VMImage) {
	t.Helper()
	start := time.Now()
	base := cachedRoot(t, slices.Clone(BasePackages))
	tmp := dir + ".tmp-" + randomID()
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("testhost: building the VM image in %s (once; about 90 s)", dir)
	run := func(name string, args ...string) {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("testhost: VM image: %s %s: %v\n%s", name, strings.Join(args, " "), err, tail(string(out), 40))
		}
	}
	run("cp", "-a", base, root)
	r := func(p string) string { return filepath.Join(root, p) }

	// A small initramfs: only what a virtio disk with ext4 needs. Written
	// before the kernel is installed so its initramfs is built once.
	writeFile(t, r("etc/initramfs-tools/conf.d/keystone"), "MODULES=list\nCOMPRESS=gzip\n", 0o644)
	writeFile(t, r("etc/initramfs-tools/modules"), "virtio_pci\nvirtio_blk\nvirtio_scsi\next4\ncrc32c_generic\n", 0o644)
	run("systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--directory="+root, "--machine=ks-img-"+randomID(), "--resolv-conf=replace-host",
		"--setenv=DEBIAN_FRONTEND=noninteractive", "--",
		"apt-get", "update", "-q")
	args := append([]string{"--quiet", "--register=no", "--keep-unit", "--directory=" + root, "--machine=ks-img-" + randomID(), "--resolv-conf=replace-host",
		"--setenv=DEBIAN_FRONTEND=noninteractive", "--",
		"apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "Dpkg::Use-Pty=0"}, VMPackages...)
	run("systemd-nspawn", args...)
	run("systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--directory="+root, "--machine=ks-img-"+randomID(), "--resolv-conf=replace-host",
		"--", "sh", "-c", "mkdir -p /var/tmp/efi && cd /var/tmp/efi && apt-get download -q shim-signed grub-efi-amd64-signed && for d in *.deb; do dpkg-deb -x $d .; done")
	debs, _ := filepath.Glob(r("var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		os.Remove(d)
	}

	writeFile(t, r("etc/hostname"), VMHostname+"\n", 0o644)
	writeFile(t, r("etc/hosts"), "127.0.0.1 localhost\n127.0.1.1 "+VMHostname+"\n", 0o644)
	writeFile(t, r("etc/fstab"), "LABEL=ksroot / ext4 errors=remount-ro 0 0\n", 0o644)
	writeFile(t, r("etc/systemd/network/50-dhcp.network"), "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n", 0o644)
	// sshd must not wait for a network that may never be "online".
	run("systemctl", "--root="+root, "enable", "systemd-networkd.service")
	run("systemctl", "--root="+root, "mask", "systemd-networkd-wait-online.service")
	// 14 s of a TCG boot's CPU, for LVM snapshots the image has none of.
	run("systemctl", "--root="+root, "mask", "e2scrub_reap.service")
	hostSigner, hostPEM := GenerateKey(t)
	writeFile(t, r("etc/ssh/ssh_host_ed25519_key"), string(hostPEM), 0o600)
	writeFile(t, r("etc/ssh/ssh_host_ed25519_key.pub"), string(ssh.MarshalAuthorizedKey(hostSigner.PublicKey())), 0o644)
	writeFile(t, r("etc/ssh/sshd_config.d/testhost.conf"), "HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n", 0o644)
	client, clientPEM := GenerateKey(t)
	if err := os.MkdirAll(r("root/.ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, r("root/.ssh/authorized_keys"), string(ssh.MarshalAuthorizedKey(client.PublicKey())), 0o600)

	kernels, _ := filepath.Glob(r("boot/vmlinuz-*"))
	initrds, _ := filepath.Glob(r("boot/initrd.img-*"))
	if len(kernels) != 1 || len(initrds) != 1 {
		t.Fatalf("testhost: VM image: want one kernel and one initrd in /boot, have %v %v", kernels, initrds)
	}
	out := func(name string) string { return filepath.Join(tmp, name) }
	run("cp", kernels[0], out("vmlinuz"))
	run("cp", initrds[0], out("initrd.img"))

	// The ESP, made as a file and copied into the disk at 1 MiB. shim
	// starts grubx64.efi from its own folder; Debian's signed GRUB reads
	// grub.cfg from its prefix, EFI/debian, or else from beside itself.
	esp := out("esp.img")
	run("mkfs.vfat", "-C", "-F", "32", "-n", "ESP", esp, strconv.Itoa(espMiB*1024))
	run("mmd", "-i", esp, "::/EFI", "::/EFI/BOOT", "::/EFI/debian")
	grubCfg := out("grub.cfg")
	writeFile(t, grubCfg, "set timeout=0\nsearch --no-floppy --set=root --file /vmlinuz\nlinux /vmlinuz "+img.Cmdline+"\ninitrd /initrd.img\nboot\n", 0o644)
	run("mcopy", "-i", esp, r("var/tmp/efi/"+signedShim), "::/EFI/BOOT/BOOTX64.EFI")
	run("mcopy", "-i", esp, r("var/tmp/efi/"+signedGrub), "::/EFI/BOOT/grubx64.efi")
	run("mcopy", "-i", esp, grubCfg, "::/EFI/BOOT/grub.cfg")
	run("mcopy", "-i", esp, grubCfg, "::/EFI/debian/grub.cfg")
	run("mcopy", "-i", esp, out("vmlinuz"), "::/vmlinuz")
	run("mcopy", "-i", esp, out("initrd.img"), "::/initrd.img")
	if err := os.RemoveAll(r("var/tmp/efi")); err != nil {
		t.Fatal(err)
	}

	// The root: what the tree holds, plus room for tests to write.
	du, err := exec.Command("du", "-sm", root).Output()
	if err != nil {
		t.Fatal(err)
	}
	used, _ := strconv.Atoi(strings.Fields(string(du))[0])
	rootMiB := used*3/2 + 512
	disk := out("disk.img")
	totalMiB := 1 + espMiB + rootMiB + spareMiB + 1
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(int64(totalMiB) * mib)
	f.Close()
	sector := func(m int) string { return strconv.Itoa(m * mib / 512) }
	// Never -q: it makes sgdisk write nothing (vm-notes.md).
	run("sgdisk",
		"-n", "1:"+sector(1)+":"+strconv.Itoa((1+espMiB)*mib/512-1), "-t", "1:ef00", "-c", "1:ESP",
		"-n", "2:"+sector(1+espMiB)+":"+strconv.Itoa((1+espMiB+rootMiB)*mib/512-1), "-t", "2:8304", "-c", "2:root",
		"-n", "3:"+sector(1+espMiB+rootMiB)+":"+strconv.Itoa((1+espMiB+rootMiB+spareMiB)*mib/512-1), "-t", "3:8300", "-c", "3:spare",
		disk)
	run("dd", "if="+esp, "of="+disk, "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
	os.Remove(esp)
	// nodiscard: mkfs would otherwise punch out the whole file (vm-notes.md).
	run("mkfs.ext4", "-q", "-F", "-L", "ksroot", "-d", root,
		"-E", fmt.Sprintf("offset=%d,nodiscard", (1+espMiB)*mib), disk, strconv.Itoa(rootMiB)+"M")

	writeFile(t, out("id_ed25519"), string(clientPEM), 0o600)
	writeFile(t, out("ssh_host_ed25519_key"), string(hostPEM), 0o600)
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	os.Remove(grubCfg)
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("testhost: built the VM image in %v", time.Since(start).Round(time.Second))
}
