package vm

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
)

func TestQemuArgs(t *testing.T) {
	m := machine{name: "web1", dir: "/f/.keystone/vm/web1"}
	fw := &firmware{"/fw/CODE.fd", "/fw/VARS.fd"}
	base := spec{m: m, accel: "tcg", fw: fw, disk: m.path("disk.qcow2"), serial: "ks-web1", port: 22022, memory: "2G", cpus: 2}
	for _, tc := range []struct {
		name      string
		edit      func(*spec)
		want, not []string
	}{
		{"uefi tcg", func(*spec) {}, []string{
			"-accel tcg,thread=multi,tb-size=128 -cpu max",
			"-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd -drive if=pflash,format=raw,unit=1,file=/f/.keystone/vm/web1/OVMF_VARS.fd",
			"-device virtio-blk-pci,drive=d0,serial=ks-web1,bootindex=1",
			"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:22022-:22",
			// Socket paths relative to the VM's folder, where QEMU runs.
			"-chardev socket,id=ser0,path=console.sock,server=on,wait=off,logfile=/f/.keystone/vm/web1/console.log",
			"-chardev socket,id=mon0,path=monitor.sock,server=on,wait=off",
			"-smp 2 -m 2G",
			// The hot-plug port comes last, so no device moves.
			"-device virtio-rng-pci -device pcie-root-port,id=hp0,chassis=1 -daemonize -pidfile /f/.keystone/vm/web1/qemu.pid",
		}, []string{"tpm", "cdrom", "-kernel", "kvm", "smm", "secure"}},
		// OVMF's Secure Boot build stops without SMM; its own variables.
		{"secure boot", func(s *spec) { s.secure = true }, []string{
			"-name keystone-web1 -machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on ",
			"-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd -drive if=pflash,format=raw,unit=1,file=/f/.keystone/vm/web1/OVMF_VARS.secure-boot.fd",
		}, []string{"OVMF_VARS.fd"}},
		{"kvm", func(s *spec) { s.accel = "kvm" }, []string{"-accel kvm -cpu host"}, []string{"tcg"}},
		{"the initrd's sshd forwarded too", func(s *spec) { s.unlock = 22023 }, []string{
			"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:22022-:22,hostfwd=tcp:127.0.0.1:22023-:2222 ",
		}, nil},
		{"iso after the disk", func(s *spec) { s.iso = "/i/nixos.iso" }, []string{
			"-drive file=/i/nixos.iso,format=raw,media=cdrom,if=none,id=cd0,readonly=on -device ide-cd,drive=cd0,bootindex=2",
		}, nil},
		{"uefi tpm is crb", func(s *spec) { s.tpm = true }, []string{
			"-chardev socket,id=chrtpm,path=swtpm.sock -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0",
		}, nil},
		{"bios tpm is tis", func(s *spec) { s.tpm = true; s.fw = nil }, []string{"-device tpm-tis,tpmdev=tpm0"}, []string{"pflash"}},
		{"direct kernel", func(s *spec) { s.kernel, s.initrd, s.appendCL = "/k", "/i", "root=LABEL=x" }, []string{
			"-kernel /k -initrd /i -append root=LABEL=x",
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			tc.edit(&s)
			got := strings.Join(qemuArgs(s), " ")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("lacks %q:\n%s", w, got)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("has %q:\n%s", n, got)
				}
			}
		})
	}
}

// Secure Boot takes its own firmware, and its own variables to override
// it with: the plain firmware's (KEYSTONE_OVMF_CODE) has no keys enrolled.
func TestFindFirmware(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"code", "vars", "sb-code", "sb-vars"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	plain := map[string]string{"KEYSTONE_OVMF_CODE": filepath.Join(dir, "code"), "KEYSTONE_OVMF_VARS": filepath.Join(dir, "vars")}
	sb := map[string]string{"KEYSTONE_OVMF_SECURE_BOOT_CODE": filepath.Join(dir, "sb-code"), "KEYSTONE_OVMF_SECURE_BOOT_VARS": filepath.Join(dir, "sb-vars")}
	for _, tc := range []struct {
		name   string
		env    []map[string]string
		secure bool
		want   string // the code file; "" for one of the known pairs or an error
		err    string
	}{
		{"plain, overridden", []map[string]string{plain, sb}, false, filepath.Join(dir, "code"), ""},
		{"secure boot, overridden", []map[string]string{plain, sb}, true, filepath.Join(dir, "sb-code"), ""},
		{"secure boot does not take the plain override", []map[string]string{plain}, true, "", ""},
		{"secure boot, half overridden", []map[string]string{{"KEYSTONE_OVMF_SECURE_BOOT_CODE": filepath.Join(dir, "sb-code")}}, true, "",
			"set both KEYSTONE_OVMF_SECURE_BOOT_CODE and KEYSTONE_OVMF_SECURE_BOOT_VARS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, env := range tc.env {
				for k, v := range env {
					t.Setenv(k, v)
				}
			}
			fw, err := findFirmware("/nonexistent/bin/qemu-system-x86_64", tc.secure)
			msg := ""
			if err != nil {
				msg = err.Error() + " / " + hint.Of(err)
			}
			switch {
			case tc.err != "":
				if !strings.Contains(msg, tc.err) {
					t.Errorf("error %q, want %q", msg, tc.err)
				}
			case tc.want != "":
				if err != nil || fw.code != tc.want {
					t.Errorf("firmware %+v, %v; want %s", fw, err, tc.want)
				}
			case err == nil && !slices.Contains(secureBootPairs, fw):
				t.Errorf("firmware %+v, not one of the Secure Boot pairs", fw)
			case err != nil && !strings.Contains(msg, "Microsoft's keys enrolled"):
				t.Errorf("error %q, want it to say the Secure Boot firmware is missing", msg)
			}
		})
	}
}

// --bios and --secure-boot each turn the other off, over what the VM
// kept, and vm up says what changed; with neither, both are kept.
func TestSettleFirmware(t *testing.T) {
	off := func() *bool { b := false; return &b }()
	for _, tc := range []struct {
		was        string // the firmware last started with; "" a new VM
		bios, sb   *bool
		wantBIOS   bool
		wantSB     bool
		wantOutput string
	}{
		{"", nil, nil, false, false, ""},
		{"", nil, on, false, true, ""},
		{"uefi+secure-boot", nil, nil, false, true, "--secure-boot=true"},
		{"uefi+secure-boot+kernel", nil, nil, false, true, "--secure-boot=true"},
		{"uefi", nil, nil, false, false, "--secure-boot=false"},
		{"bios", nil, on, false, true, "--bios=false (was true), --secure-boot=true (was false)"},
		{"uefi+secure-boot", on, nil, true, false, "--bios=true (was false), --secure-boot=false (was true)"},
		{"uefi+secure-boot", nil, off, false, false, "--secure-boot=false (was true)"},
		{"bios", off, nil, false, false, "--bios=false (was true)"},
	} {
		m, _ := open(t.TempDir(), "web1")
		var old *State
		if tc.was != "" {
			old = &State{Firmware: tc.was, Memory: "4G", CPUs: 2}
		}
		var out strings.Builder
		s := m.settle(&Options{BIOS: tc.bios, SecureBoot: tc.sb}, old, &out)
		if s.bios != tc.wantBIOS || s.secureBoot != tc.wantSB || !strings.Contains(out.String(), tc.wantOutput) {
			t.Errorf("was %q, --bios %v, --secure-boot %v: %+v, printed %q; want bios %v, secure boot %v, printed %q",
				tc.was, ptr(tc.bios), ptr(tc.sb), s, out.String(), tc.wantBIOS, tc.wantSB, tc.wantOutput)
		}
	}
}

func ptr(b *bool) string {
	if b == nil {
		return "unset"
	}
	return strconv.FormatBool(*b)
}

func TestSerialAndPort(t *testing.T) {
	long1, long2 := strings.Repeat("a", 40)+"1", strings.Repeat("a", 40)+"2"
	for _, n := range []string{"web1", "a", long1} {
		if s := serialOf(n); len(s) > 20 || !strings.HasPrefix(s, "ks-") {
			t.Errorf("serialOf(%q) = %q: want ks-…, at most 20 bytes", n, s)
		}
		if p := portOf(n); p < 22000 || p >= 28000 {
			t.Errorf("portOf(%q) = %d, out of 22000-27999", n, p)
		}
	}
	if serialOf(long1) == serialOf(long2) {
		t.Errorf("long names share serial %q", serialOf(long1))
	}
	if serialOf("web1") != "ks-web1" || portOf("web1") != portOf("web1") {
		t.Error("serial or port not stable")
	}
}

func TestPickPort(t *testing.T) {
	// Two VMs: the second finds the first's port taken and takes the next.
	first, err := pickPort("web1", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(first))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	second, err := pickPort("web1", first, false)
	if err != nil || second == first {
		t.Fatalf("pickPort with %d taken = %d, %v", first, second, err)
	}
	if _, err := pickPort("web1", first, true); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("asked-for port in use: err = %v", err)
	}
}

// TestPickUnlockPort: the initrd's forward keeps its port when free, and
// otherwise takes the first free one after the SSH port's, never that one.
func TestPickUnlockPort(t *testing.T) {
	ssh, err := pickPort("web1", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	first, err := pickUnlockPort(0, ssh)
	if err != nil || first <= ssh {
		t.Fatalf("pickUnlockPort(0, %d) = %d, %v", ssh, first, err)
	}
	if again, err := pickUnlockPort(first, ssh); err != nil || again != first {
		t.Errorf("a free recorded port: %d, %v; want %d", again, err, first)
	}
	if p, err := pickUnlockPort(ssh, ssh); err != nil || p == ssh {
		t.Errorf("the SSH port recorded: %d, %v", p, err)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(first))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if p, err := pickUnlockPort(first, ssh); err != nil || p == first || p == ssh {
		t.Errorf("a recorded port in use: %d, %v", p, err)
	}
}

func TestMissingTools(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		tools []string // put on PATH
		env   map[string]string
		o     Options
		want  []string
	}{
		{nil, nil, Options{}, []string{"qemu-system-x86_64 is not installed", "apt-get install qemu-system-x86", "nixpkgs#qemu"}},
		{[]string{"qemu-system-x86_64"}, nil, Options{}, []string{"qemu-img is not installed", "qemu-utils"}},
		{[]string{"qemu-system-x86_64", "qemu-img"}, map[string]string{"KEYSTONE_OVMF_CODE": "/nonexistent", "KEYSTONE_OVMF_VARS": "/nonexistent"},
			Options{}, []string{"OVMF", "KEYSTONE_OVMF_CODE"}},
		{[]string{"qemu-system-x86_64", "qemu-img"}, nil, Options{BIOS: on, TPM: on}, []string{"swtpm is not installed", "apt-get install swtpm", "nixpkgs#swtpm"}},
		{[]string{"qemu-system-x86_64", "qemu-img"}, map[string]string{"KEYSTONE_OVMF_SECURE_BOOT_CODE": "/nonexistent", "KEYSTONE_OVMF_SECURE_BOOT_VARS": "/nonexistent"},
			Options{SecureBoot: on}, []string{"OVMF", "KEYSTONE_OVMF_SECURE_BOOT_CODE"}},
	} {
		bin := t.TempDir()
		for _, c := range tc.tools {
			os.WriteFile(filepath.Join(bin, c), []byte("#!/bin/sh\nexit 1\n"), 0o755)
		}
		t.Setenv("PATH", bin)
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		o := tc.o
		o.Dir, o.Name = dir, "web1"
		_, err := Up(context.Background(), o)
		msg := ""
		if err != nil {
			msg = err.Error() + " / " + hint.Of(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("tools %v: error %q lacks %q", tc.tools, msg, w)
			}
		}
		if _, err := os.Stat(StateDir(dir)); err == nil {
			t.Errorf("tools %v: a failed start made %s", tc.tools, StateDir(dir))
		}
	}
}

func TestBadOptions(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []Options{
		{Name: "Web1"}, {Name: "-x"}, {Name: "a/b"},
		{Name: "web1", ISO: "/nonexistent.iso"},
		{Name: "web1", ISO: "/etc/hostname", Image: "/etc/hostname"},
		{Name: "web1", Memory: "lots"}, {Name: "web1", DiskSize: "0G"}, {Name: "web1", SSHPort: 70000},
		{Name: "web1", BIOS: on, SecureBoot: on},
	} {
		o.Dir = dir
		if _, err := Up(context.Background(), o); exit.Code(err) != exit.Usage {
			t.Errorf("Up(%+v): %v (exit %d), want a usage error", o, err, exit.Code(err))
		}
	}
	if _, err := os.Stat(StateDir(dir)); err == nil {
		t.Errorf("bad options made %s", StateDir(dir))
	}
}

var on = func() *bool { b := true; return &b }()

// deadPID is the PID and start time of a process that has exited.
func deadPID(t *testing.T) (int, string) {
	cmd := exec.Command("sleep", "0.01")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid, start := cmd.Process.Pid, startTime(cmd.Process.Pid)
	cmd.Wait()
	return pid, start
}

func TestCrashedState(t *testing.T) {
	dir := t.TempDir()
	m, _ := open(dir, "web1")
	os.MkdirAll(m.dir, 0o755)
	pid, start := deadPID(t)
	// A live process with another start time is a reused PID, not QEMU.
	if err := m.writeState(&State{Name: "web1", PID: os.Getpid(), PIDStart: "1", Port: 22022}); err != nil {
		t.Fatal(err)
	}
	if i, err := Status(dir, "web1"); err != nil || i.Status != "crashed" {
		t.Fatalf("reused PID: Status = %+v, %v; want crashed", i, err)
	}
	m.writeState(&State{Name: "web1", PID: pid, PIDStart: start, Port: 22022})
	os.WriteFile(m.path("monitor.sock"), nil, 0o644)
	if i, err := Status(dir, "web1"); err != nil || i.Status != "crashed" {
		t.Fatalf("Status = %+v, %v; want crashed", i, err)
	}
	// A guest that powered itself off took QEMU with it: no crash.
	os.WriteFile(m.path("console.log"), []byte("[  OK  ] Reached target System Power Off.\r\n[   12.3] reboot: Power down\r\n"), 0o644)
	if i, _ := Status(dir, "web1"); i.Status != "stopped" {
		t.Errorf("after a power-off inside: %s, want stopped", i.Status)
	}
	os.WriteFile(m.path("console.log"), []byte("[   12.3] reboot: Power down\r\nSeaBIOS\r\n"), 0o644)
	if i, _ := Status(dir, "web1"); i.Status != "crashed" {
		t.Errorf("died after booting again: %s, want crashed", i.Status)
	}
	if l, err := List(dir); err != nil || len(l) != 1 || l[0].Name != "web1" {
		t.Fatalf("List = %v, %v", l, err)
	}
	if err := Reset(dir, "web1"); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("Reset of a crashed VM: %v", err)
	}
	if err := Down(context.Background(), dir, "web1", time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if i, _ := Status(dir, "web1"); i.Status != "stopped" || i.Port != 22022 {
		t.Errorf("after Down: %+v; want stopped, port kept", i)
	}
	if _, err := os.Stat(m.path("monitor.sock")); err == nil {
		t.Error("Down left the stale monitor socket")
	}
	if _, err := Status(dir, "db1"); err == nil || !strings.Contains(hint.Of(err), "vm up db1") {
		t.Errorf("Status of no VM: %v", err)
	}
}

func TestDestroyAsks(t *testing.T) {
	dir := t.TempDir()
	m, _ := open(dir, "web1")
	os.MkdirAll(m.dir, 0o755)
	m.writeState(&State{Name: "web1"})
	var out strings.Builder
	if err := Destroy(context.Background(), dir, "web1", DestroyOptions{In: strings.NewReader("web2\n"), Out: &out}); err == nil {
		t.Fatal("destroyed on a wrong answer")
	}
	if _, err := os.Stat(m.dir); err != nil {
		t.Fatal("a refused destroy removed the state")
	}
	if err := Destroy(context.Background(), dir, "web1", DestroyOptions{In: strings.NewReader("web1\n"), Out: &out}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.dir); err == nil {
		t.Fatal("state left after destroy")
	}
	if err := Destroy(context.Background(), dir, "web1", DestroyOptions{Yes: true, Out: &out}); err == nil {
		t.Error("destroyed a VM that is not there")
	}
}

func TestFindPrompt(t *testing.T) {
	log := filepath.Join(t.TempDir(), "console.log")
	text := "boot\nPlease enter passphrase for disk spare: ********\nlogin: \n[sudo] password for alice: \nPassphrase for /dev/vda2: "
	os.WriteFile(log, []byte(text), 0o644)
	first := findPrompt(log, 0)
	if first != int64(strings.Index(text, "Please enter")) {
		t.Fatalf("first prompt at %d", first)
	}
	// sudo's prompt is no disk's.
	if second := findPrompt(log, first+1); second != int64(strings.LastIndex(text, "Passphrase for")) {
		t.Fatalf("second prompt at %d", second)
	}
	if none := findPrompt(log, int64(strings.LastIndex(text, "Passphrase for"))+1); none != -1 {
		t.Fatalf("a prompt after the last: %d", none)
	}
}

func TestUnlockRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{"": "empty", "secret\n": "ends with a newline", "a\nb": "holds more than one line"} {
		f := filepath.Join(dir, "pw")
		os.WriteFile(f, []byte(content), 0o600)
		err := Unlock(context.Background(), UnlockOptions{Dir: dir, Name: "web1", PasswordFile: f})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("password %q: %v, want %q", content, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") && content != "" {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	if err := Unlock(context.Background(), UnlockOptions{Dir: dir, Name: "web1", PasswordFile: filepath.Join(dir, "none")}); err == nil {
		t.Error("no password file: no error")
	}
}

func TestSSHCommand(t *testing.T) {
	dir := t.TempDir()
	m, _ := open(dir, "web1")
	os.MkdirAll(m.dir, 0o755)
	m.writeState(&State{Name: "web1", PID: os.Getpid(), PIDStart: startTime(os.Getpid()), Port: 22333})
	argv, err := SSHCommand(dir, "web1", []string{"uname", "-a"})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(argv, " ")
	if !strings.HasPrefix(got, "ssh -p 22333 ") || !strings.HasSuffix(got, " root@127.0.0.1 uname -a") {
		t.Errorf("argv = %s", got)
	}
	if !slices.Contains(argv, "UserKnownHostsFile=/dev/null") {
		t.Errorf("argv = %s: a reinstalled VM's new host key would stop ssh", got)
	}
}

func TestWriteStatus(t *testing.T) {
	run := &Info{State: State{Name: "web1", PID: 42, Port: 22022, UnlockPort: 22122, Accel: "tcg", Firmware: "uefi", TPM: true, Serial: "ks-web1"}, Status: "running", Uptime: "1m0s"}
	crashed := &Info{State: State{Name: "db1", PID: 43, Port: 22023, Accel: "tcg", Firmware: "bios", Serial: "ks-db1"}, Status: "crashed"}
	var b strings.Builder
	if err := WriteStatus(&b, []*Info{run, crashed}, "table"); err != nil {
		t.Fatal(err)
	}
	want := "web1: running ssh=127.0.0.1:22022 initrd-ssh=127.0.0.1:22122 accel=tcg firmware=uefi tpm=true disk=/dev/disk/by-id/virtio-ks-web1 pid=42 uptime=1m0s\n" +
		"db1: crashed ssh=127.0.0.1:22023 accel=tcg firmware=bios tpm=false disk=/dev/disk/by-id/virtio-ks-db1\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := WriteStatus(&b, nil, "json"); err != nil || strings.TrimSpace(b.String()) != "[]" {
		t.Errorf("json of none: %q, %v", b.String(), err)
	}
	if err := WriteStatus(&b, nil, "xml"); err == nil {
		t.Error("xml accepted")
	}
}

// An --image disk takes the image's size, or a larger --disk-size; a
// smaller one would cut its partitions off and is refused, leaving no disk.
func TestImageDiskSize(t *testing.T) {
	qemuImg, err := lookTool(imgTool)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	image := filepath.Join(dir, "image.raw")
	if err := os.WriteFile(image, nil, 0o644); err != nil || os.Truncate(image, 64<<20) != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		size string
		want int64 // 0: refused
	}{{"", 64 << 20}, {"128M", 128 << 20}, {"32M", 0}} {
		st := &State{Name: "web1", Disk: filepath.Join(t.TempDir(), "disk.qcow2")}
		err := makeDisk(qemuImg, st, Options{Image: image, DiskSize: tc.size}, io.Discard)
		info, infoErr := imageInfo(qemuImg, st.Disk)
		switch {
		case tc.want == 0 && (err == nil || !strings.Contains(err.Error(), "smaller than the image") || infoErr == nil):
			t.Errorf("--disk-size %s: %v; want refused, no disk left", tc.size, err)
		case tc.want != 0 && (err != nil || info.Size != tc.want || info.Backing != image):
			t.Errorf("--disk-size %q: %v, %+v; want %d bytes on %s", tc.size, err, info, tc.want, image)
		}
	}
}

// A first vm up that fails before QEMU starts leaves nothing in the flake:
// no state folder, no .keystone. One that had run before keeps its state.
func TestFailedFirstUpLeavesNothing(t *testing.T) {
	image := filepath.Join(t.TempDir(), "image.raw")
	if err := os.WriteFile(image, nil, 0o644); err != nil || os.Truncate(image, 64<<20) != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"disk smaller than its image", Options{Image: image, DiskSize: "32M"}, "smaller than the image"},
		{"busy ssh port", Options{Image: image, SSHPort: port}, strconv.Itoa(port)},
	} {
		dir := t.TempDir()
		tc.o.Dir, tc.o.Name, tc.o.BIOS = dir, "web1", on
		if _, err := Up(context.Background(), tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error naming %q", tc.name, err, tc.want)
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("%s: left %v in the flake", tc.name, left)
		}
	}

	// A VM that has a state keeps it.
	dir := t.TempDir()
	m, _ := open(dir, "web1")
	if err := os.MkdirAll(m.dir, 0o755); err != nil || m.writeState(&State{Name: "web1", Port: 22001}) != nil {
		t.Fatal(err)
	}
	if _, err := Up(context.Background(), Options{Dir: dir, Name: "web1", BIOS: on, Image: image, SSHPort: port}); err == nil {
		t.Fatal("vm up on a busy port succeeded")
	}
	if _, err := m.readState(); err != nil {
		t.Errorf("the state of a VM that ran before is gone: %v", err)
	}
}

// vm status lists the VMs it can read when another's state is corrupt,
// and names that one.
func TestStatusWithACorruptState(t *testing.T) {
	dir := t.TempDir()
	for name, state := range map[string]string{"web1": `{"name":"web1","sshPort":22001}`, "web2": `{"name":`} {
		m, _ := open(dir, name)
		os.MkdirAll(m.dir, 0o700)
		os.WriteFile(m.path("state.json"), []byte(state), 0o600)
	}
	infos, err := List(dir)
	if len(infos) != 1 || infos[0].Name != "web1" || err == nil || !strings.Contains(err.Error(), "web2") {
		t.Errorf("List = %v, %v; want web1 listed and web2 named", infos, err)
	}
}
