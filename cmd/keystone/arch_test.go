package main

import (
	"os/exec"
	"strings"
	"testing"
)

// floors rank the packages: every import points down or sideways, never up
// (docs/architecture.md).
var floors = map[string]int{
	"cmd":      4,
	"discover": 3,
	"deploy":   3,
	"enroll":   3,
	"switch":   3,
	"verify":   2,
	"unlock":   2,
	"fleet":    1,
	"generate": 1,
	"lint":     1,
	"vm":       1,
	"iso":      1,
	"internal": 0,
}

const module = "github.com/keystone-nix/keystone/"

func floorOf(pkg string) (string, int, bool) {
	top, _, _ := strings.Cut(strings.TrimPrefix(pkg, module), "/")
	f, ok := floors[top]
	return top, f, ok
}

// TestImportsPointDown holds the house together: cmd alone knows urfave/cli,
// internal/ imports nothing of ours outside it, and no package imports one
// on a floor above its own.
func TestImportsPointDown(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}\t{{join .Imports \" \"}}", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, "\t")
		if !strings.HasPrefix(pkg, module) {
			continue
		}
		top, floor, ok := floorOf(pkg)
		if !ok {
			continue // templates, nix: data and tests
		}
		seen++
		for _, imp := range strings.Fields(imports) {
			if strings.HasPrefix(imp, "github.com/urfave/cli") && top != "cmd" {
				t.Errorf("%s imports %s: only cmd may", pkg, imp)
			}
			if !strings.HasPrefix(imp, module) {
				continue
			}
			if itop, ifloor, ok := floorOf(imp); ok && ifloor > floor {
				t.Errorf("%s (floor %d) imports %s (floor %d, %s): an arrow up", pkg, floor, imp, ifloor, itop)
			}
		}
	}
	if seen < 10 {
		t.Errorf("go list showed %d of our packages", seen)
	}
}
