package verify

import "net"

// OnLink6 is onLink6, for the tests that make real hosts.
func OnLink6(ip net.IP, zone string) (*net.Interface, error) { return onLink6(ip, zone) }
