package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestRepeatedFlag: a flag that takes one value, given twice, is a usage
// error in every command (urfave/cli would let the last one win without a
// word); the repeatable ones (--key, -i) stay repeatable.
func TestRepeatedFlag(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	type row struct {
		args       []string
		repeatable bool
	}
	var rows []row
	for _, cmd := range app.Commands {
		for _, f := range cmd.Flags {
			args := []string{"keystone", cmd.Name}
			if len(cmd.Subcommands) > 0 {
				args = append(args, cmd.Subcommands[0].Name)
			}
			args = append(args, "NAME")
			for _, n := range []string{f.Names()[0], f.Names()[len(f.Names())-1]} {
				flag := "--" + n
				if len(n) == 1 {
					flag = "-" + n
				}
				if _, isBool := f.(*cli.BoolFlag); isBool {
					args = append(args, flag)
				} else {
					args = append(args, flag, "v")
				}
			}
			s, ok := f.(cli.DocGenerationSliceFlag)
			rows = append(rows, row{args, ok && s.IsSliceFlag()})
		}
	}
	rows = append(rows,
		row{[]string{"keystone", "new-host", "web1", "--target", "a", "--target", "b"}, false},
		row{[]string{"keystone", "new-host", "web1", "--layout=luks", "--layout", "ext4"}, false},
		row{[]string{"keystone", "new-host", "web1", "--disk", "/dev/disk/by-id/a", "--disk=/dev/disk/by-id/b"}, true}, // a pool over several disks
		row{[]string{"keystone", "enroll", "web1", "--pcrs", "7", "--dry-run", "--pcrs", "0+7"}, false},
		row{[]string{"keystone", "vm", "up", "web1", "--tpm", "--memory", "2G", "--tpm"}, false},
		row{[]string{"keystone", "verify", "web1", "-i", "a", "--identity", "b", "-i", "c"}, true},
		row{[]string{"keystone", "new-host", "web1", "--key", "a", "--key", "b"}, true},
		row{[]string{"keystone", "deploy", "web1", "--", "--debug", "--debug"}, true}, // nixos-anywhere's
	)
	for _, r := range rows {
		t.Run(strings.Join(r.args[1:], " "), func(t *testing.T) {
			_, err := intersperse(app, r.args)
			if r.repeatable && err != nil {
				t.Errorf("refused: %v", err)
			}
			if !r.repeatable && (err == nil || !strings.Contains(err.Error(), "is given more than once")) {
				t.Errorf("error %v, want a refusal", err)
			}
		})
	}

	// On the command line: exit 64, one error line and a hint.
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"keystone", "new-host", "web1", "--target", "a", "--target", "b"}, io.Discard, &stderr)
	if want := "keystone: error: --target is given more than once: it takes one value, give it once\nkeystone: hint: see keystone new-host --help\n"; code != 64 || stderr.String() != want {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 64 and:\n%s", code, stderr.String(), want)
	}
}
