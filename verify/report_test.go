package verify

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestSummaryNamesSkippedChecks(t *testing.T) {
	r := Report{Host: "web1", Connected: true, Duration: time.Second, Results: []Result{
		{"ssh", Pass, "ok"},
		{"sshd", Skip, "sshd is not enabled in the config"},
		{"zfs", Skip, "no ZFS pools in the config"},
		{"boot", Skip, notRun},
	}, Error: "the connection to 10.0.0.1:22 was lost"}
	got := r.Summary()
	for _, want := range []string{
		"skipped sshd (sshd is not enabled in the config), zfs (no ZFS pools in the config)",
		"not run boot",
		"; the connection to 10.0.0.1:22 was lost",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary %q lacks %q", got, want)
		}
	}
}

func TestJSONErrorIsCleaned(t *testing.T) {
	r := Report{Host: "web1", Error: "cannot run commands as root with sudo -n: \x1b[2J\x1b]0;pwned\x07"}
	var b bytes.Buffer
	if err := WriteJSON(&b, []Report{r}); err != nil {
		t.Fatal(err)
	}
	var doc struct{ Hosts []struct{ Error string } }
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if e := doc.Hosts[0].Error; strings.ContainsAny(e, "\x1b\x07") {
		t.Errorf("error field keeps the host's control characters: %q", e)
	}
	b.Reset()
	if err := WriteJUnit(&b, []Report{r}); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b.Bytes(), []byte("\uFFFD")) || bytes.ContainsAny(b.Bytes(), "\x1b\x07") {
		t.Errorf("junit keeps or mangles the control characters:\n%s", b.String())
	}
}
