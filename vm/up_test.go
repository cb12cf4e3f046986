package vm

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bare is a real QEMU with an empty disk: its firmware finds nothing to
// boot and waits. Enough for what keystone does with QEMU, its sockets and
// its files, in a second, with no guest to boot.
func bare(dir, name string) Options {
	return Options{Dir: dir, Name: name, DiskSize: "64M", Memory: "128M", CPUs: 1, Accel: "tcg", Wait: -1}
}

func upBare(t *testing.T, o Options) *State {
	t.Helper()
	t.Cleanup(func() { Down(context.Background(), o.Dir, o.Name, time.Second, nil) })
	st, err := Up(context.Background(), o)
	if err != nil {
		t.Fatalf("vm up: %v", err)
	}
	return st
}

// A vm up that fails before QEMU runs, in a VM folder it did not make
// (no state.json: a disk copied in by hand, a deleted state file), leaves
// that folder as it found it.
func TestFailedUpKeepsAFolderItDidNotMake(t *testing.T) {
	dir := t.TempDir()
	m, _ := open(dir, "web1")
	if err := os.MkdirAll(m.path("tpm"), 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", m.path("disk.qcow2"), "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	os.WriteFile(m.path("notes.txt"), []byte("precious\n"), 0o600)
	os.WriteFile(m.path("tpm/tpm2-00.permall"), []byte("enrolled keys"), 0o600)
	before := tree(t, dir)

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	o := bare(dir, "web1")
	o.SSHPort = busy.Addr().(*net.TCPAddr).Port
	if _, err := Up(context.Background(), o); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("vm up on a busy port: %v", err)
	}
	if after := tree(t, dir); !slices.Equal(after, before) {
		t.Errorf("the VM folder was\n%s\nand is now\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
}

// tree lists every file under dir with its size.
func tree(t *testing.T, dir string) []string {
	var files []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		info, _ := d.Info()
		files = append(files, strings.TrimPrefix(p, dir)+" "+strconv.FormatInt(info.Size(), 10))
		return nil
	})
	return files
}

// A VM's folder is 0700 and its files are its owner's only: the disk
// holds what the guest wrote, with the ext4 layout the host's SSH key.
// An older VM's folder, made 0755, is closed too.
func TestVMFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	m, _ := open(dir, "web1")
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer unix.Umask(unix.Umask(0o022))
	upBare(t, bare(dir, "web1"))
	if st, err := os.Stat(m.dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("VM folder: %v, %v; want 0700", st.Mode(), err)
	}
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s is %v; want it its owner's only", e.Name(), perm)
		}
	}
}

// vm down while vm up waits for SSH does not wait for vm up: the lock is
// let go once QEMU is recorded, and vm up says the VM was stopped.
func TestDownWhileUpWaits(t *testing.T) {
	dir := t.TempDir()
	o := bare(dir, "web1")
	o.Wait = 40 * time.Second
	up := make(chan error, 1)
	go func() { _, err := Up(context.Background(), o); up <- err }()
	t.Cleanup(func() { Down(context.Background(), dir, "web1", time.Second, nil) })
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if i, err := Status(dir, "web1"); err == nil && i.Status == "running" {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("vm up never recorded QEMU")
		}
	}
	start := time.Now()
	var out strings.Builder
	if err := Down(context.Background(), dir, "web1", 2*time.Second, &out); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("vm down during vm up's wait took %v:\n%s", took.Round(time.Second), out.String())
	}
	select {
	case err := <-up:
		if err == nil || !strings.Contains(err.Error(), "stopped") {
			t.Errorf("vm up after vm down: %v; want it to say the VM was stopped", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("vm up still waits after vm down")
	}
}

// One keystone that has to wait for another's lock on a VM says for whom.
func TestLockSaysWhoHoldsIt(t *testing.T) {
	dir := shortDir(t)
	f := startFake(t, dir, "web1", "")
	f.powerOff = true
	l, err := os.OpenFile(f.m.path("lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := unix.Flock(int(l.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	l.WriteString("keystone vm up (pid 4242)\n")
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Down(context.Background(), dir, "web1", 5*time.Second, out) }()
	for start := time.Now(); !strings.Contains(out.String(), "waiting for keystone vm up (pid 4242)"); time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 3*time.Second {
			t.Fatalf("vm down waits for the lock silently: %q", out.String())
		}
	}
	unix.Flock(int(l.Fd()), unix.LOCK_UN)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// vm up does not move a VM whose port is taken to another silently: the
// target deploy and verify were given would be wrong.
func TestUpKeepsItsPort(t *testing.T) {
	dir := t.TempDir()
	st := upBare(t, bare(dir, "web1"))
	if err := Down(context.Background(), dir, "web1", time.Second, nil); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(st.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, err := Up(context.Background(), bare(dir, "web1")); err == nil || !strings.Contains(err.Error(), strconv.Itoa(st.Port)) {
		t.Errorf("vm up with its port %d taken: %v; want refused", st.Port, err)
	}
}

// A --disk-size larger than the VM's disk grows it, and says so; a
// smaller one is refused.
func TestUpGrowsTheDisk(t *testing.T) {
	dir := t.TempDir()
	st := upBare(t, bare(dir, "web1"))
	Down(context.Background(), dir, "web1", time.Second, nil)
	o := bare(dir, "web1")
	o.DiskSize = "128M"
	var out strings.Builder
	o.Out = &out
	upBare(t, o)
	info, err := imageInfo("qemu-img", st.Disk)
	if err != nil || info.Size != 128<<20 || !strings.Contains(out.String(), "grew") {
		t.Errorf("--disk-size 128M on a 64M disk: %d bytes, %v; printed:\n%s", info.Size, err, out.String())
	}
	Down(context.Background(), dir, "web1", time.Second, nil)
	o.DiskSize, o.Out = "32M", nil
	if _, err := Up(context.Background(), o); err == nil || !strings.Contains(err.Error(), "smaller") {
		t.Errorf("--disk-size 32M on a 128M disk: %v; want refused", err)
	}
}

// vm up --flake of a folder that is not there (a typo) makes nothing.
func TestUpMakesNoFlakeFolder(t *testing.T) {
	typo := filepath.Join(t.TempDir(), "typo")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	o := bare(typo, "web1")
	o.SSHPort = busy.Addr().(*net.TCPAddr).Port // should it get that far
	if _, err := Up(context.Background(), o); err == nil {
		t.Error("vm up --flake of a folder that is not there succeeded")
	}
	if _, err := os.Stat(typo); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("vm up --flake %s made it: %v", typo, err)
	}
}

// The state is written only once QEMU runs: a vm up interrupted before
// that leaves a QEMU nothing records. The next vm up ends it, by its pid
// file, rather than fail on the disk it holds.
func TestUpEndsAnUnrecordedQEMU(t *testing.T) {
	dir := t.TempDir()
	first := upBare(t, bare(dir, "web1"))
	t.Cleanup(func() {
		if alive(first.PID, first.PIDStart) {
			unix.Kill(first.PID, unix.SIGKILL)
		}
	})
	m, _ := open(dir, "web1")
	if err := os.Remove(m.path("state.json")); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	o := bare(dir, "web1")
	o.Out = &out
	second := upBare(t, o)
	if alive(first.PID, first.PIDStart) || !alive(second.PID, second.PIDStart) || !strings.Contains(out.String(), "ending qemu") {
		t.Errorf("first QEMU alive: %v, second alive: %v; printed:\n%s", alive(first.PID, first.PIDStart), alive(second.PID, second.PIDStart), out.String())
	}
}
