package verify

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"

	"github.com/keystone-nix/keystone/internal/text"
)

// Summary is the one line under a host's table.
func (r Report) Summary() string {
	if r.notChecked {
		return text.OneLine(r.Error)
	}
	if !r.Connected {
		return "cannot connect: " + text.OneLine(r.Error)
	}
	counts := map[Status]int{}
	for _, res := range r.Results {
		counts[res.Status]++
	}
	var parts []string
	for _, s := range []Status{Pass, Fail, Warn, Skip} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	line := fmt.Sprintf("%d checks: %s in %s", len(r.Results), strings.Join(parts, ", "), r.Duration.Round(10*time.Millisecond))
	// A SKIP is named with its reason, so that one cannot hide a check
	// that checked nothing.
	var skipped, notRunNames []string
	for _, res := range r.Results {
		switch {
		case res.Status != Skip:
		case res.Evidence == notRun || res.Evidence == notRunInterrupted:
			notRunNames = append(notRunNames, res.Check)
		default:
			skipped = append(skipped, fmt.Sprintf("%s (%s)", res.Check, res.Evidence))
		}
	}
	if len(skipped) > 0 {
		line += "; skipped " + strings.Join(skipped, ", ")
	}
	if len(notRunNames) > 0 {
		line += "; not run " + strings.Join(notRunNames, ", ")
	}
	if r.Error != "" {
		line += "; " + text.OneLine(r.Error)
	}
	return line
}

// WriteTable writes each host's checks as a table and its summary line.
func WriteTable(w io.Writer, reports []Report) error {
	for i, r := range reports {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if r.Target != "" {
			fmt.Fprintf(w, "%s (%s)\n", text.OneLine(r.Host), text.OneLine(r.Target))
		} else {
			fmt.Fprintln(w, text.OneLine(r.Host))
		}
		if len(r.Results) > 0 {
			t := tablewriter.NewWriter(w)
			t.Header("Check", "Status", "Evidence")
			for _, res := range r.Results {
				if err := t.Append(res.Check, res.Status.String(), res.Evidence); err != nil {
					return err
				}
			}
			if err := t.Render(); err != nil {
				return err
			}
		}
		fmt.Fprintln(w, r.Summary())
	}
	return nil
}

// jsonReport is the stable --format json document (docs/verify-json.md).
type jsonReport struct {
	ExitCode int        `json:"exitCode"`
	Hosts    []jsonHost `json:"hosts"`
}

type jsonHost struct {
	Report
	ExitCode   int   `json:"exitCode"`
	DurationMS int64 `json:"durationMs"`
}

// WriteJSON writes every report as one JSON document.
func WriteJSON(w io.Writer, reports []Report) error {
	doc := jsonReport{ExitCode: ExitCode(reports), Hosts: []jsonHost{}}
	for _, r := range reports {
		if r.Results == nil {
			r.Results = []Result{}
		}
		// What the host said, cleaned as evidence is.
		r.Error = text.OneLine(r.Error)
		doc.Hosts = append(doc.Hosts, jsonHost{r, r.ExitCode(), r.Duration.Milliseconds()})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	ClassName string        `xml:"classname,attr"`
	Failure   *junitMessage `xml:"failure"`
	Error     *junitMessage `xml:"error"`
	Skipped   *junitMessage `xml:"skipped"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
}

// WriteJUnit writes one test suite per host and one test case per check,
// for CI systems. WARN passes with its evidence in system-out.
func WriteJUnit(w io.Writer, reports []Report) error {
	var doc junitSuites
	for _, r := range reports {
		r.Error = text.OneLine(r.Error)
		s := junitSuite{Name: "keystone verify " + r.Host, Time: fmt.Sprintf("%.3f", r.Duration.Seconds())}
		if !r.Connected {
			name := "ssh"
			if r.notChecked {
				name = "config"
			}
			s.Cases = append(s.Cases, junitCase{Name: name, ClassName: r.Host, Error: &junitMessage{r.Error}, SystemOut: "ERROR: " + r.Error})
			s.Errors++
		}
		for _, res := range r.Results {
			c := junitCase{Name: res.Check, ClassName: r.Host, SystemOut: res.Status.String() + ": " + res.Evidence}
			switch res.Status {
			case Fail:
				c.Failure = &junitMessage{res.Evidence}
				s.Failures++
			case Skip:
				c.Skipped = &junitMessage{res.Evidence}
				s.Skipped++
			}
			s.Cases = append(s.Cases, c)
		}
		if r.Connected && r.Error != "" {
			s.Cases = append(s.Cases, junitCase{Name: "connection", ClassName: r.Host, Error: &junitMessage{r.Error}, SystemOut: "ERROR: " + r.Error})
			s.Errors++
		}
		s.Tests = len(s.Cases)
		doc.Suites = append(doc.Suites, s)
	}
	io.WriteString(w, xml.Header)
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// ExitCode is the worst exit code of all hosts.
func ExitCode(reports []Report) int {
	code := ExitPass
	for _, r := range reports {
		code = max(code, r.ExitCode())
	}
	return code
}
