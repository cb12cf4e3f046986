// Package templates holds the files new-host renders. `new-host --templates
// DIR` reads the same names from DIR instead.
package templates

import "embed"

// FS holds configuration.nix.tmpl, one disk-LAYOUT.nix.tmpl per layout, and
// entry.nix.tmpl.
//
//go:embed *.tmpl
var FS embed.FS
