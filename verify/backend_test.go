package verify

import (
	"strings"
	"testing"
)

// The firewalld backend (networking.firewall.backend in nixos-25.11) is a
// SKIP with its reason, never a judge of nixos-fw chains it does not have.
func TestFirewallApplies(t *testing.T) {
	for _, tc := range []struct {
		backend string
		enable  bool
		applies bool
		why     string
	}{
		{"iptables", true, true, ""},
		{"nftables", true, true, ""},
		{"firewalld", true, false, "firewalld backend is not read"},
		{"iptables", false, false, "the firewall is off"},
	} {
		e := nixosExpect()
		e.Firewall.Backend, e.Firewall.Enable = tc.backend, tc.enable
		ok, why := firewallCheck.Applies(e)
		if ok != tc.applies || !strings.Contains(why, tc.why) {
			t.Errorf("%s (enable %v): applies %v %q, want %v %q", tc.backend, tc.enable, ok, why, tc.applies, tc.why)
		}
	}
	e, err := ParseExpectations([]byte(`{"hostname": "web1", "services": ["firewalld.service"], "firewall": {"enable": true, "backend": "firewalld", "tcp": [22], "udp": []}}`))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := firewallCheck.Applies(e); ok {
		t.Error("the firewall check applies to a firewalld host")
	}
}

// With services.openssh.startWhenNeeded the expectations name sshd.socket:
// a listening socket is a healthy one (systemctl show prints
// ActiveState=active, SubState=listening for it).
func TestServicesTakesSocket(t *testing.T) {
	e := nixosExpect()
	e.Services = []string{"sshd.socket", "firewalld.service"}
	out := "Id=sshd.socket\nNames=sshd.socket\nLoadState=loaded\nActiveState=active\nSubState=listening\n\n" +
		"Id=firewalld.service\nNames=firewalld.service dbus-org.fedoraproject.FirewallD1.service\nLoadState=loaded\nActiveState=active\nSubState=running\n"
	if status, says := servicesCheck.Judge(e, []Output{{Stdout: out}}); status != Pass || !strings.Contains(says, "sshd.socket (listening)") {
		t.Errorf("services: %v %q", status, says)
	}
}
