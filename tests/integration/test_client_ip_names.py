"""Client mode without server_auth.server_name: the name checked is the host of `upstream` as a
certificate names it (review, finding 3). An IPv6 zone names an interface of this host, not the
remote: it is dropped; an IPv4-mapped IPv6 address is the IPv4 address connected to. Both are IP
addresses, checked against IP SANs, and no SNI is sent. Before, the host was taken as written:
"::1%lo" went out as SNI and was checked as a DNS name, "::ffff:127.0.0.1" was compared with the
16 bytes of an IPv6 address, and either remote was refused as hostname_mismatch (by `mtlsd
verify` too). server.crt's SANs are DNS:localhost, IP:127.0.0.1 and IP:::1.
"""

from __future__ import annotations

import pytest

from mtlsd_harness import daemon_config, run_cli
from test_client_mode import client_listener
from tls_remote import Remote, plain_exchange


@pytest.mark.parametrize("bind, upstream_host", [("::1", "[::1%lo]"),
                                                 ("127.0.0.1", "[::ffff:127.0.0.1]")],
                         ids=["ipv6_zone", "ipv4_mapped"])
def test_the_upstreams_ip_is_checked_as_the_address_it_is(start_mtlsd, mtlsd_bin, pki, bind,
                                                          upstream_host):
    remote = Remote(pki.path("server.crt"), pki.path("server.key"), host=bind)
    try:
        listener = client_listener(pki, f"{upstream_host}:{remote.port}",
                                   server_auth={"server_name": None})
        client = start_mtlsd(daemon_config([listener]))
        data, local = plain_exchange(client.addr("outbound"))
        line = client.wait_for_access(client=local)
        assert data == b"ping\n" and line["result"] == "accepted", line
        assert line["sni"] == "", line  # an IP address is no SNI name
        assert remote.handshakes == 1
        proc = run_cli(mtlsd_bin, "verify", "--config", str(client.config_path), "--listener",
                       "outbound", "--cert", pki.path("server.crt"))
        assert proc.returncode == 0 and proc.stdout.startswith("accepted: "), proc.stdout
    finally:
        remote.close()
