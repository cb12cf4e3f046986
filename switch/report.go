package switcher

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
)

// Writer is the result writer for --format.
func Writer(format string) (func(io.Writer, []Result) error, error) {
	switch format {
	case "table":
		return WriteTable, nil
	case "json":
		return WriteJSON, nil
	}
	return nil, exit.UsageError(hint.Errorf("--format takes table or json", "--format %q is not supported", format))
}

// WriteTable writes one line a host: its outcome, exit status and why.
func WriteTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tOUTCOME\tEXIT\tSECONDS\tSYSTEM / REASON")
	for _, r := range results {
		what := r.New
		if r.Outcome != Switched && r.Outcome != Planned && r.Reason != "" {
			what = r.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%s\n", r.Host, r.Outcome, r.ExitCode, r.Seconds, what)
	}
	return tw.Flush()
}

// WriteJSON writes every host's result, and the run's exit status.
func WriteJSON(w io.Writer, results []Result) error {
	code := Status(results)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		ExitCode int      `json:"exitCode"`
		Hosts    []Result `json:"hosts"`
	}{code, results})
}
