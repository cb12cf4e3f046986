// Command keystone takes a NixOS server from nothing to a verified install.
package main

import "os"

func main() { os.Exit(Main(os.Args)) }
