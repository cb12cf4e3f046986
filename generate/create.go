package generate

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/text"
	"github.com/keystone-nix/keystone/templates"
)

// CreateOptions say what new-host makes, and where.
type CreateOptions struct {
	Host       Options
	Dir        string
	Templates  string
	Force      bool
	DryRun     bool
	PrintEntry bool
}

// Create renders a host folder from validated input, checks the files
// parse as Nix, and writes them whole or not at all (new-host). Notes and
// warnings go to stderr, what was written to stdout.
func Create(stdout, stderr io.Writer, o CreateOptions) error {
	h, notes, err := NewHost(o.Host)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(stderr, "keystone: note: %s\n", n)
	}
	for _, w := range h.Warnings {
		fmt.Fprintf(stderr, "keystone: warning: %s\n", w)
	}
	fsys, err := templateFS(o.Templates)
	if err != nil {
		return err
	}
	files, err := Render(fsys, h)
	if err != nil {
		return err
	}
	var entry []byte
	if o.PrintEntry {
		if entry, err = Entry(fsys, h, flakePath(o.Dir, h.Name)); err != nil {
			return err
		}
	}
	if err := checkParses(stderr, files); err != nil {
		return err
	}
	hostDir := filepath.Join(o.Dir, h.Name)
	if _, err := Check(o.Dir, h.Name, o.Force); err != nil {
		return err // also for --dry-run: it says what the real run would do
	}
	if o.DryRun {
		for _, f := range files {
			fmt.Fprintf(stdout, "==> %s <==\n%s\n", filepath.Join(hostDir, f.Name), f.Data)
		}
		if entry != nil {
			fmt.Fprintf(stdout, "==> flake.nix entry <==\n%s\n", entry)
		}
		fmt.Fprintln(stdout, "dry run: nothing was written")
		return nil
	}
	replaced, err := Write(o.Dir, h.Name, files, o.Force)
	if err != nil {
		return err
	}
	for _, f := range files {
		p := filepath.Join(hostDir, f.Name)
		verb := "wrote"
		for _, r := range replaced {
			if r == p {
				verb = "replaced"
			}
		}
		fmt.Fprintf(stdout, "%s %s\n", verb, p)
	}
	gitAdd(stdout, stderr, hostDir, files)
	if entry != nil {
		fmt.Fprintf(stdout, "\nAdd to flake.nix:\n%s", entry)
	}
	printNext(stdout, h, hostDir)
	return nil
}

func templateFS(dir string) (fs.FS, error) {
	if dir == "" {
		return templates.FS, nil
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, hint.Errorf("give a folder holding configuration.nix.tmpl and disk-LAYOUT.nix.tmpl",
			"--templates %s is not a folder", dir)
	}
	return os.DirFS(dir), nil
}

// flakePath is the host's configuration.nix as seen from the flake root:
// the nearest folder above it that holds a flake.nix, else the current one.
func flakePath(dir, name string) string {
	p, err := filepath.Abs(filepath.Join(dir, name, ConfigFile))
	if err != nil {
		return filepath.ToSlash(filepath.Join(dir, name, ConfigFile))
	}
	root, _ := os.Getwd()
	for d := filepath.Dir(p); ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "flake.nix")); err == nil {
			root = d
			break
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	if rel, err := filepath.Rel(root, p); err == nil {
		p = rel
	}
	return filepath.ToSlash(p)
}

// parseLocation is where nix-instantiate found a syntax error.
var parseLocation = regexp.MustCompile(`at «stdin»:(\d+:\d+)`)

// checkParses runs rendered files through nix-instantiate --parse when Nix
// is installed, so that a broken --templates folder writes nothing. A Nix
// that cannot run at all is no reason to refuse: the flake check parses
// the files again.
func checkParses(stderr io.Writer, files []File) error {
	nix, err := exec.LookPath("nix-instantiate")
	if err != nil {
		return nil
	}
	for _, f := range files {
		cmd := exec.Command(nix, "--store", "dummy://", "--parse", "-")
		cmd.Stdin = bytes.NewReader(f.Data)
		var out bytes.Buffer
		cmd.Stderr = &out
		if err := cmd.Run(); err != nil {
			m := parseLocation.FindStringSubmatch(out.String())
			if m == nil {
				fmt.Fprintf(stderr, "keystone: warning: nix-instantiate could not check the rendered files: %s\n",
					text.OneLine(cmp.Or(text.FirstLine(out.String()), err.Error())))
				return nil
			}
			return hint.Errorf("fix the template it came from", "rendered %s is not valid Nix at line %s: %s",
				f.Name, m[1], text.OneLine(text.FirstLine(out.String())))
		}
	}
	return nil
}

// gitAdd marks new files with git add --intent-to-add: a flake only sees
// files git knows about.
func gitAdd(stdout, stderr io.Writer, hostDir string, files []File) {
	git, err := exec.LookPath("git")
	if err != nil {
		return
	}
	if out, err := exec.Command(git, "-C", hostDir, "rev-parse", "--is-inside-work-tree").Output(); err != nil || strings.TrimSpace(string(out)) != "true" {
		return
	}
	args := []string{"-C", hostDir, "add", "--intent-to-add", "--"}
	for _, f := range files {
		args = append(args, f.Name)
	}
	if out, err := exec.Command(git, args...).CombinedOutput(); err != nil {
		fmt.Fprintf(stderr, "keystone: warning: git add --intent-to-add failed, so the flake will not see %s: %s\n", hostDir, text.OneLine(text.FirstLine(string(out))))
		if strings.Contains(string(out), "ignored") {
			fmt.Fprintf(stderr, "keystone: hint: %s is in a .gitignore: take it out there, or run git add --intent-to-add --force %s\n", hostDir, hostDir)
		}
		return
	}
	fmt.Fprintf(stdout, "ran git add --intent-to-add on them: flakes only see files git knows\n")
}

func printNext(w io.Writer, h *Host, hostDir string) {
	fmt.Fprintf(w, "\nNext:\n  review %s\n", filepath.Join(hostDir, ConfigFile))
	deploy := "  nix run .#deploy -- " + h.Name
	if h.Target == nil {
		deploy += " --target root@HOST"
	}
	if h.Layout != "ext4" {
		// The encrypted layouts read their disk password at install time.
		deploy += " --disk-password-file FILE"
	}
	if h.Target == nil {
		deploy += "    # or set keystone.deploy.targetHost"
	}
	fmt.Fprintf(w, "%s\n  nix run .#verify -- %s\n", deploy, h.Name)
}
