// Package gomod2nix writes gomod2nix.toml the way `gomod2nix generate` does:
// schema 3, one [mod."PATH"] table per module `go mod download` fetches,
// with its version and the SRI sha256 of the NAR of its folder in
// GOMODCACHE (what `nix hash path --sri DIR` prints).
package gomod2nix

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strconv"
	"strings"
)

type download struct {
	Path, Version, Dir, Error string
}

type module struct {
	path, version, hash, replaced string
}

// Generate returns gomod2nix.toml for the Go module in dir.
func Generate(ctx context.Context, dir string) ([]byte, error) {
	replacedBy, err := replacements(ctx, dir)
	if err != nil {
		return nil, err
	}
	out, err := goCmd(ctx, dir, "mod", "download", "-json")
	if err != nil {
		return nil, err
	}
	var mods []module
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var d download
		if err := dec.Decode(&d); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go mod download -json: %w", err)
		}
		if d.Error != "" {
			return nil, fmt.Errorf("go mod download %s: %s", d.Path, d.Error)
		}
		hash, err := HashPath(d.Dir)
		if err != nil {
			return nil, err
		}
		m := module{path: d.Path, version: d.Version, hash: hash}
		if old, ok := replacedBy[d.Path]; ok {
			m.path, m.replaced = old, d.Path
		}
		mods = append(mods, m)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].path < mods[j].path })

	var b strings.Builder
	b.WriteString("schema = 3\n\n[mod]\n")
	for _, m := range mods {
		fmt.Fprintf(&b, "  [mod.%s]\n    version = %s\n    hash = %s\n", strconv.Quote(m.path), strconv.Quote(m.version), strconv.Quote(m.hash))
		if m.replaced != "" {
			fmt.Fprintf(&b, "    replaced = %s\n", strconv.Quote(m.replaced))
		}
	}
	return []byte(b.String()), nil
}

// replacements maps each replacement module path to the path it replaces,
// from go.mod's replace directives.
func replacements(ctx context.Context, dir string) (map[string]string, error) {
	out, err := goCmd(ctx, dir, "mod", "edit", "-json")
	if err != nil {
		return nil, err
	}
	var gomod struct {
		Replace []struct{ Old, New struct{ Path string } }
	}
	if err := json.Unmarshal(out, &gomod); err != nil {
		return nil, fmt.Errorf("go mod edit -json: %w", err)
	}
	m := map[string]string{}
	for _, r := range gomod.Replace {
		m[r.New.Path] = r.Old.Path
	}
	return m, nil
}

func goCmd(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// HashPath is `nix hash path --sri path`: the SRI sha256 of path's NAR.
func HashPath(path string) (string, error) {
	h := sha256.New()
	if err := WriteNAR(h, path); err != nil {
		return "", err
	}
	return "sha256-" + base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}
