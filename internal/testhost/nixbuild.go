package testhost

import (
	"os"
	"testing"
)

// InNixBuild reports whether the tests run inside a Nix build: the
// package's checkPhase (nix/package.nix). stdenv sets NIX_BUILD_TOP for
// every builder; scripts/test unsets it. The build sandbox has no root, no
// network but loopback, no VMs and only the package's source, so a test
// that needs more skips there, saying why. Anywhere else a missing
// prerequisite fails the test: it is never skipped in CI.
func InNixBuild() bool { return os.Getenv("NIX_BUILD_TOP") != "" }

// SkipInNixBuild skips t inside a Nix build, for why.
func SkipInNixBuild(t testing.TB, why string) {
	t.Helper()
	if InNixBuild() {
		t.Skipf("skipped in the Nix build sandbox: %s (scripts/test runs it)", why)
	}
}

// RequireRoot skips t inside a Nix build and fails it elsewhere unless it
// runs as root, which test hosts need (namespaces, nspawn, QEMU's taps).
func RequireRoot(t testing.TB) {
	t.Helper()
	SkipInNixBuild(t, "it needs root")
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (network namespaces, test hosts): run scripts/test as root")
	}
}
