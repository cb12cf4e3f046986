package gomod2nix

import (
	"context"
	"github.com/keystone-nix/keystone/internal/testhost"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func nixHashPath(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("nix", "--extra-experimental-features", "nix-command", "--store", "dummy://",
		"hash", "path", "--sri", path).Output()
	if err != nil {
		t.Fatalf("nix hash path: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestHashPathMatchesNix(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"a.go":          "package a\n",
		"empty":         "",
		"eight888":      "12345678",
		"sub/deep/x.md": "# x",
		"B-upper":       "sorts before a",
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(data), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("sub/deep/x.md", filepath.Join(dir, "link"))
	os.Mkdir(filepath.Join(dir, "emptydir"), 0o755)

	for _, p := range []string{dir, filepath.Join(dir, "a.go"), filepath.Join(dir, "run.sh")} {
		got, err := HashPath(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := nixHashPath(t, p); got != want {
			t.Errorf("HashPath(%s) = %s, nix says %s", p, got, want)
		}
	}
}

func TestGomod2nixTomlIsCurrent(t *testing.T) {
	testhost.SkipInNixBuild(t, "it reads Go's module cache, which the build sandbox does not have")
	root, _ := filepath.Abs("../..")
	got, err := Generate(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(root, "gomod2nix.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("gomod2nix.toml is stale; run scripts/gomod2nix. It should be:\n%s", got)
	}
}
