package vm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeQEMU stands in for a VM's QEMU where what is under test is how
// keystone reads the console log and talks to QEMU's sockets, not a guest:
// a process in QEMU's place (sleep), the HMP monitor on monitor.sock, and
// the serial console on console.sock serving one client at a time, as
// QEMU's socket chardev does (a second connection waits in the listen
// queue until the first leaves). The monitor echoes each command line
// before its answer, as QEMU's readline monitor does, and answers info
// chardev in QEMU 7.2's words (chardev/char-socket.c).
type fakeQEMU struct {
	m        machine
	proc     *exec.Cmd
	powerOff bool // a guest that handles the ACPI power button

	mu        sync.Mutex
	commands  []string
	console   bool // a client has the console
	typed     bytes.Buffer
	consoleLn net.Listener
}

// shortDir is a flake folder whose sockets' paths are short enough for
// any client: t.TempDir's names the test, and may be too long.
func shortDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "ks")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startFake(t *testing.T, dir, name, log string) *fakeQEMU {
	t.Helper()
	m, err := open(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("console.log"), []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &fakeQEMU{m: m, proc: exec.Command("sleep", "600")}
	if err := f.proc.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := make(chan struct{})
	go func() { f.proc.Wait(); close(reaped) }()
	t.Cleanup(func() { f.proc.Process.Kill(); <-reaped })
	pid := f.proc.Process.Pid
	if err := m.writeState(&State{Name: name, PID: pid, PIDStart: startTime(pid), Port: 22999, Firmware: "uefi", Memory: "4G", CPUs: 2}); err != nil {
		t.Fatal(err)
	}
	mon, err := net.Listen("unix", m.path("monitor.sock"))
	if err != nil {
		t.Fatal(err)
	}
	f.consoleLn, err = net.Listen("unix", m.path("console.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close(); f.consoleLn.Close() })
	go f.serveMonitor(mon)
	go f.serveConsole()
	return f
}

func (f *fakeQEMU) serveMonitor(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		f.monitorSession(c)
	}
}

func (f *fakeQEMU) monitorSession(c net.Conn) {
	defer c.Close()
	io.WriteString(c, "QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) ")
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimSpace(line)
		f.mu.Lock()
		f.commands = append(f.commands, cmd)
		held := f.console
		f.mu.Unlock()
		answer := ""
		switch cmd {
		case "info chardev":
			state := "disconnected:"
			if held {
				state = ""
			}
			answer = fmt.Sprintf("ser0: filename=%sunix:console.sock,server=on\r\nmon0: filename=unix:monitor.sock,server=on\r\n", state)
		case "system_powerdown":
			if f.powerOff {
				f.proc.Process.Kill()
			}
		case "quit":
			f.proc.Process.Kill()
			return
		}
		io.WriteString(c, cmd+"\r\n"+answer+"(qemu) ")
	}
}

// serveConsole takes one client at a time and keeps what it types.
func (f *fakeQEMU) serveConsole() {
	for {
		c, err := f.consoleLn.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.console = true
		f.mu.Unlock()
		buf := make([]byte, 256)
		for {
			n, err := c.Read(buf)
			f.mu.Lock()
			f.typed.Write(buf[:n])
			f.mu.Unlock()
			if err != nil {
				break
			}
		}
		c.Close()
		f.mu.Lock()
		f.console = false
		f.mu.Unlock()
	}
}

func (f *fakeQEMU) Commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.commands...)
}

func (f *fakeQEMU) Typed() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.typed.String()
}

// hold connects to the console as another client (keystone vm console in
// another terminal) and returns once the fake has taken it.
func (f *fakeQEMU) hold(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", f.m.path("console.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for i := 0; ; i++ {
		f.mu.Lock()
		held := f.console
		f.mu.Unlock()
		if held {
			return c
		}
		if i == 100 {
			t.Fatal(errors.New("the fake console never took the connection"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a strings.Builder for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
