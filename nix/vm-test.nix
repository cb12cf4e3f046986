# The gate the user asked for: a client runs `keystone verify` against a
# server built from this flake's modules, and every check must pass.
{
  pkgs,
  keystone,
  hostModules,
}:
pkgs.testers.runNixOSTest {
  name = "keystone-verify";

  nodes.server = {
    imports = hostModules;
    keystone.server.enable = true;
    networking.hostName = "server";
  };

  nodes.client = {
    environment.systemPackages = [
      keystone
      pkgs.openssh
    ];
    # The verifier's multicast mDNS query is answered by unicast from the
    # server's port 5353, which a stateful firewall here would drop.
    networking.firewall.enable = false;
  };

  testScript =
    { nodes, ... }:
    let
      # The test VM's other mounts are 9p shares whose usage is the build
      # machine's disk: no business of this test.
      expect = pkgs.writeText "expect.json" (
        builtins.toJSON (nodes.server.keystone.verify.expectations // { mounts = [ "/" ]; })
      );
    in
    ''
      start_all()
      server.wait_for_unit("multi-user.target")
      server.wait_for_unit("sshd.service")
      client.wait_for_unit("multi-user.target")

      client.succeed("mkdir -p /root/.ssh && ssh-keygen -q -t ed25519 -N ''' -f /root/.ssh/id_ed25519")
      pub = client.succeed("cat /root/.ssh/id_ed25519.pub").strip()
      server.succeed(f"mkdir -p /root/.ssh && echo '{pub}' >> /root/.ssh/authorized_keys")
      hostkey = server.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub").strip()
      client.succeed(f"echo 'server {hostkey}' > /root/known_hosts")

      out = client.succeed(
          "keystone verify --expect ${expect} --target root@server"
          " --known-hosts /root/known_hosts -i /root/.ssh/id_ed25519 --wait 2m"
      )
      print(out)

      # And it must fail when the host is wrong: a port opened behind its back.
      server.succeed("iptables -I nixos-fw -p tcp --dport 8080 -j nixos-fw-accept")
      server.succeed("systemd-run --unit=listener ${pkgs.python3}/bin/python3 -m http.server 8080")
      # verify's exposure and listening checks must see it open.
      server.wait_for_open_port(8080)
      code = client.succeed(
          "keystone verify --expect ${expect} --target root@server"
          " --known-hosts /root/known_hosts -i /root/.ssh/id_ed25519 > /tmp/report; echo $?"
      ).strip()
      report = client.succeed("cat /tmp/report")
      print(report)
      # Exit 1 (a check failed), not 2 (cannot connect), and for the port.
      assert code == "1", f"verify exited {code}, want 1"
      assert "8080" in report, "the report does not name port 8080"
    '';
}
