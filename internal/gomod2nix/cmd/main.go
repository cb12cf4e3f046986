// Command cmd prints gomod2nix.toml for the Go module in the current folder;
// scripts/gomod2nix runs it.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/keystone-nix/keystone/internal/gomod2nix"
)

func main() {
	out, err := gomod2nix.Generate(context.Background(), ".")
	if err != nil {
		fmt.Fprintf(os.Stderr, "gomod2nix: error: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
