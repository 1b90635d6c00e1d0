"""`mtlsd check` on values a review found taken wrongly or reported at the wrong place.

- A file list written `""` (`server_auth: {ca: ""}`, `crl_files: ""`, a templated value that
  rendered empty) meant "none": in client mode the system trust store and no CRL checks, while
  the list form `[""]` was refused. Now both are refused at the value; a single path (cert,
  key_password_file, ...) keeps `""` = none, its documented default and what `check --print`
  writes.
- yaml-cpp gives an empty value the position of the next token: errors after an empty required
  key of a listener were all reported at that key, an empty `tls:` on the line below it (past
  the file's end for the last line), an empty list item at the next item.
- A TLS 1.2-only listener whose every cipher the security level drops (NULL ciphers) passed
  `check`, and every handshake failed.
- A `|` block value broke "one line per problem"; an empty or complex key was "unknown key ''";
  whitespace in an address passed `check` and `run` failed with "Host not found".

Each configuration is written as text, so that the expected LINE:COL can be read off it."""

from __future__ import annotations

from pathlib import Path

from mtlsd_harness import run_cli


def check(mtlsd_bin: str, tmp_path: Path, text: str, name: str = "c.yaml"):
    """(exit code, stderr lines, stdout) of `mtlsd check` on `text`, written to tmp_path/name."""
    cfg = tmp_path / name
    cfg.write_text(text)
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    return proc.returncode, proc.stderr.splitlines(), proc.stdout


def problems(lines: list[str], cfg: Path) -> list[str]:
    """The diagnostics of `cfg`, its path taken off: "LINE:COL: message"."""
    prefix = f"{cfg}:"
    return [l[len(prefix):] for l in lines if l.startswith(prefix)]


def client_listener(pki, server_auth: str, revocation: str = "", tls: str = "") -> str:
    tls = tls or f"{{cert: {pki.path('client.crt')}, key: {pki.path('client.key')}}}"
    return (
        "admin:\n"                                   # 1
        "  address: 127.0.0.1:0\n"                   # 2
        "listeners:\n"                               # 3
        "  - name: outbound\n"                       # 4
        "    mode: client\n"                         # 5
        "    listen: 127.0.0.1:9\n"                  # 6
        "    upstream: localhost:9\n"                # 7
        f"    tls: {tls}\n"                          # 8
        "    server_auth:\n"                         # 9
        f"      {server_auth}\n"                     # 10
        + ("    revocation:\n"                       # 11
           f"      {revocation}\n" if revocation else ""))  # 12


def test_an_empty_scalar_file_path_is_refused_like_an_empty_list_entry(mtlsd_bin, pki, tmp_path):
    cfg = tmp_path / "c.yaml"
    code, err, _ = check(mtlsd_bin, tmp_path, client_listener(pki, 'ca: ""', 'crl_files: ""'))
    assert code == 1, err
    assert problems(err, cfg) == [
        "10:11: listeners[0].server_auth.ca: an empty file path (to name no file, write [] or "
        "leave the key out)",
        "12:18: listeners[0].revocation.crl_files: an empty file path (to name no file, write [] "
        "or leave the key out)"], err
    # As the list form always was.
    code, err, _ = check(mtlsd_bin, tmp_path, client_listener(pki, 'ca: [""]', 'crl_files: [""]'))
    assert code == 1 and problems(err, cfg) == [
        "10:12: listeners[0].server_auth.ca[0]: an empty file path",
        "12:19: listeners[0].revocation.crl_files[0]: an empty file path"], err


def test_absent_null_and_documented_empty_defaults_still_mean_none(mtlsd_bin, pki, tmp_path):
    # `ca: []` and `ca:` are the system trust store, as documented; crl_files `~` is none.
    for server_auth, revocation in (("ca: []", "crl_files: []"), ("ca:", "crl_files: ~")):
        code, err, out = check(mtlsd_bin, tmp_path, client_listener(pki, server_auth, revocation))
        assert code == 0 and "is valid" in out, (server_auth, err)
    # A single path keeps "" = none: the contract's example writes key_password_file, pkcs12
    # and pkcs12_password_file so, and `check --print` every unset one (a client listener
    # without a certificate: cert "", key "").
    for tls in ('{cert: "", key: "", key_password_file: "", pkcs12: "", pkcs12_password_file: "",'
                ' key_pin_file: ""}',
                f'{{cert: {pki.path("client.crt")}, key: {pki.path("client.key")}, '
                'key_password_file: "", pkcs12: "", pkcs12_password_file: ""}'):
        code, err, out = check(mtlsd_bin, tmp_path,
                               client_listener(pki, f"ca: [{pki.path('ca.crt')}]", tls=tls))
        assert code == 0 and "is valid" in out, (tls, err)


def server_head(pki, rest: str) -> str:
    return ("admin:\n"                               # 1
            "  address: 127.0.0.1:0\n"               # 2
            "listeners:\n"                           # 3
            "  - name: a\n"                          # 4
            "    listen: 127.0.0.1:9\n" + rest)      # 5


def test_empty_values_are_reported_at_their_keys(mtlsd_bin, pki, tmp_path):
    cfg = tmp_path / "c.yaml"
    # After an empty required key, each later empty value was reported at that key (6:5).
    code, err, _ = check(mtlsd_bin, tmp_path, server_head(pki, (
        "    upstream:\n"                                          # 6
        "    max_connections: 10\n"                                # 7
        "    tls:\n"                                               # 8
        "    client_auth:\n"                                       # 9
        f"    revocation: {{crl_files: [{pki.path('crl.pem')}, ~]}}\n")))  # 10
    col = len(f"    revocation: {{crl_files: [{pki.path('crl.pem')}, ") + 1
    assert code == 1
    assert problems(err, cfg) == [
        "6:5: listeners[0].upstream: invalid address '': expected HOST:PORT, [IPV6]:PORT or "
        "unix:/path",
        f"10:{col}: listeners[0].revocation.crl_files[1]: an empty file path",
        "8:5: listeners[0].tls: a server-mode listener needs its certificate: set cert + key or "
        "pkcs12",
        "9:5: listeners[0].client_auth.ca: client certificates are required (mode require) but "
        "no CA bundle is configured"], err
    # The last line empty: it was reported on the line after it, past the file's end.
    code, err, _ = check(mtlsd_bin, tmp_path, server_head(pki, (
        "    upstream: 127.0.0.1:9\n"                              # 6
        "    tls:\n"                                               # 7
        "    client_auth:\n")))                                    # 8
    assert code == 1 and [p.split(": ")[0] for p in problems(err, cfg)] == ["7:5", "8:5"], err


def test_empty_list_items_are_reported_at_their_dash_or_their_lists_key(mtlsd_bin, pki,
                                                                       tmp_path):
    cfg = tmp_path / "c.yaml"
    code, err, _ = check(mtlsd_bin, tmp_path, (
        "admin:\n"                                                 # 1
        "  address: 127.0.0.1:0\n"                                 # 2
        "listeners:\n"                                             # 3
        "  -\n"                                                    # 4
        "  - name: b\n"                                            # 5
        "    listen: 127.0.0.1:9\n"                                # 6
        "    upstream: 127.0.0.1:9\n"                              # 7
        f"    tls: {{cert: {pki.path('server.crt')}, key: {pki.path('server.key')}}}\n"  # 8
        "    client_auth:\n"                                       # 9
        "      ca:\n"                                              # 10
        f"        - {pki.path('ca.crt')}\n"                        # 11
        "        -\n"                                              # 12
        "      allow:\n"                                           # 13
        "        rules:\n"                                         # 14
        "          -\n"                                            # 15
        "          - spiffe_ids: [spiffe://example.org/a]\n"))     # 16
    assert code == 1
    # The first item's `-` is known (the list's own position); a later one's is not: the list's
    # key, the message names the index.
    assert problems(err, cfg) == [
        "4:3: listeners[0]: expected a mapping describing a listener, got nothing",
        "10:7: listeners[1].client_auth.ca[1]: an empty file path",
        "15:11: listeners[1].client_auth.allow.rules[0]: an empty rule (give at least one "
        "matcher: spiffe_ids, uri_sans, dns_sans, common_names, organizational_units, "
        "sha256_fingerprints, email_sans, source_cidrs, sni, not)"], err


def test_a_warning_about_an_empty_section_points_at_its_key(mtlsd_bin, pki, tmp_path):
    cfg = tmp_path / "c.yaml"
    code, err, out = check(mtlsd_bin, tmp_path, server_head(pki, (
        "    upstream: 127.0.0.1:9\n"                              # 6
        f"    tls: {{cert: {pki.path('server.crt')}, key: {pki.path('server.key')}}}\n"  # 7
        f"    client_auth: {{ca: {pki.path('ca.crt')}}}\n"         # 8
        "    http:\n"                                              # 9
        "    accept_proxy_protocol:\n")))                          # 10
    assert code == 0 and "is valid" in out, err
    warned = problems(err, cfg)
    assert len(warned) == 1 and warned[0].startswith(
        "10:5: warning: listeners[0].accept_proxy_protocol: any peer may send the header"), err


def tls12_listener(pki, ciphers: str) -> str:
    return server_head(pki, (
        "    upstream: 127.0.0.1:9\n"                              # 6
        "    tls:\n"                                               # 7
        f"      cert: {pki.path('server.crt')}\n"                  # 8
        f"      key: {pki.path('server.key')}\n"                   # 9
        f"      ciphers: \"{ciphers}\"\n"                          # 10
        "      max_version: \"1.2\"\n"                             # 11
        f"    client_auth: {{ca: [{pki.path('ca.crt')}]}}\n"))     # 12


def test_a_tls12_only_listener_whose_ciphers_the_security_level_drops_is_refused(
        mtlsd_bin, pki, tmp_path):
    # Names OpenSSL accepts, ciphers security level 2 never offers: no handshake could succeed.
    code, err, out = check(mtlsd_bin, tmp_path,
                           tls12_listener(pki, "ECDHE-ECDSA-NULL-SHA:ECDHE-RSA-NULL-SHA"))
    assert code == 1 and "NOT usable" in "\n".join(err), (err, out)
    assert any("tls.ciphers: no TLS 1.2 cipher of 'ECDHE-ECDSA-NULL-SHA:ECDHE-RSA-NULL-SHA' is "
               "allowed at security level 2" in l and "every handshake would fail" in l
               for l in err), err
    # An ordinary TLS 1.2 list still passes.
    code, err, out = check(mtlsd_bin, tmp_path, tls12_listener(
        pki, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"))
    assert code == 0 and "is valid" in out, err


def test_block_values_odd_keys_and_spaced_addresses(mtlsd_bin, pki, tmp_path):
    cfg = tmp_path / "c.yaml"
    code, err, _ = check(mtlsd_bin, tmp_path, (
        "admin:\n"                                                 # 1
        "  address: 127.0.0.1:0\n"                                 # 2
        "listeners:\n"                                             # 3
        "  - name: a\n"                                            # 4
        "    listen: \" 127.0.0.1:9\"\n"                           # 5
        "    upstream: |\n"                                        # 6
        "      127.0.0.1 :9\n"                                     # 7
        f"    tls: {{cert: {pki.path('server.crt')}, key: {pki.path('server.key')}}}\n"  # 8
        f"    client_auth: {{ca: [{pki.path('ca.crt')}]}}\n"       # 9
        "    ~: 1\n"                                               # 10
        "    ? [x]\n"                                              # 11
        "    : 2\n"))                                              # 12
    assert code == 1
    # Every problem on one line of its own, the newline of the `|` block shown as \n.
    assert problems(err, cfg) == [
        "10:5: an empty key in listeners[0] (null, ~ and \"\" name no key)",
        "11:7: a key that is not a string (a list) in listeners[0]",
        "5:13: listeners[0].listen: invalid address ' 127.0.0.1:9': whitespace is no part of "
        "HOST:PORT (a space or newline around the host or port?)",
        "6:15: listeners[0].upstream: invalid address '127.0.0.1 :9\\n': whitespace is no part "
        "of HOST:PORT (a space or newline around the host or port?)"], err
    assert len(err) == 5, err  # the four and the verdict
