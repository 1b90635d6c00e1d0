#!/usr/bin/env bash
# Regenerates fuzz/fixtures (a fixed test PKI) and the seed corpora in fuzz/corpus/<target>/.
# Run once by hand; the output is committed so that fuzz runs are reproducible. libFuzzer adds
# what it finds to a scratch directory (build/fuzz/corpus), never here.
set -euo pipefail
cd "$(dirname "$0")"
FX=fixtures
C=corpus
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
rm -rf "$C"
mkdir -p "$FX" "$C"/{config_load_fuzz,identity_fuzz,revocation_fuzz,proxy_v2_fuzz,proxy_header_fuzz,xfcc_fuzz,http_head_fuzz,h2_frames_fuzz,tls_stream_fuzz,url_fuzz,svid_fuzz,http_response_fuzz,h2_upstream_fuzz,h2_request_fuzz,credentials_fuzz,verify_chain_fuzz,client_hello_fuzz,http1_relay_fuzz,admin_server_fuzz,verify_time_fuzz}

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key "$FX/ca.key"; key "$FX/leaf.key"; key "$FX/server.key"; key "$FX/ocsp.key"
openssl req -x509 -new -key "$FX/ca.key" -subj "/O=mtlsd fuzz/CN=Fuzz Root" -days 36500 \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -set_serial 1 -out "$FX/ca.crt"
sign() {  # sign NAME SUBJECT SERIAL EXTFILE-LINES...
  local name=$1 subj=$2 serial=$3
  shift 3
  printf '%s\n' "$@" >"$T/$name.ext"
  openssl req -new -key "$FX/$name.key" -subj "$subj" -out "$T/$name.csr"
  openssl x509 -req -in "$T/$name.csr" -CA "$FX/ca.crt" -CAkey "$FX/ca.key" -set_serial "$serial" \
    -days 36500 -extfile "$T/$name.ext" -out "$FX/$name.crt" 2>/dev/null
}
sign leaf "/O=mtlsd fuzz/OU=payments/CN=alice" 0x1001 \
  "basicConstraints=CA:FALSE" "extendedKeyUsage=clientAuth" \
  "subjectAltName=URI:spiffe://example.org/ns/prod/sa/alice,DNS:alice.example.org,IP:127.0.0.1,email:alice@example.org" \
  "crlDistributionPoints=URI:http://127.0.0.1:1/ca.crl" \
  "authorityInfoAccess=OCSP;URI:http://127.0.0.1:1/ocsp"
sign server "/O=mtlsd fuzz/CN=localhost" 0x2001 \
  "basicConstraints=CA:FALSE" "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1"
sign ocsp "/O=mtlsd fuzz/CN=Fuzz OCSP" 0x3001 \
  "basicConstraints=CA:FALSE" "extendedKeyUsage=OCSPSigning"

der() { openssl x509 -in "$1" -outform DER -out "$2"; }
# identity_fuzz: DER certificates.
for n in ca leaf server ocsp; do der "$FX/$n.crt" "$C/identity_fuzz/$n.der"; done

# revocation_fuzz: first byte 0 = a CRL (DER or PEM), 1 = an OCSP response for leaf.crt,
# 2 = bytes for the decide() table.
cat >"$T/ca.cnf" <<CNF
[ca]
default_ca = fz
[fz]
database = $T/index.txt
crlnumber = $T/crlnumber
default_md = sha256
default_crl_days = 36500
CNF
: >"$T/index.txt"
echo 01 >"$T/crlnumber"
openssl ca -config "$T/ca.cnf" -gencrl -keyfile "$FX/ca.key" -cert "$FX/ca.crt" -out "$T/empty.crl" 2>/dev/null
openssl ca -config "$T/ca.cnf" -revoke "$FX/leaf.crt" -keyfile "$FX/ca.key" -cert "$FX/ca.crt" \
  -crl_reason keyCompromise 2>/dev/null
openssl ca -config "$T/ca.cnf" -gencrl -keyfile "$FX/ca.key" -cert "$FX/ca.crt" -out "$T/revoked.crl" 2>/dev/null
for n in empty revoked; do
  { printf '\0'; openssl crl -in "$T/$n.crl" -outform DER; } >"$C/revocation_fuzz/crl-$n.der"
  { printf '\0'; cat "$T/$n.crl"; } >"$C/revocation_fuzz/crl-$n.pem"
done
ocsp_resp() {  # ocsp_resp OUT SIGNER-CERT SIGNER-KEY INDEX
  openssl ocsp -issuer "$FX/ca.crt" -cert "$FX/leaf.crt" -no_nonce -reqout "$T/req.der" 2>/dev/null
  openssl ocsp -index "$4" -CA "$FX/ca.crt" -rsigner "$2" -rkey "$3" -ndays 36500 \
    -reqin "$T/req.der" -respout "$T/resp.der" 2>/dev/null
  { printf '\1'; cat "$T/resp.der"; } >"$1"
}
ocsp_resp "$C/revocation_fuzz/ocsp-revoked-by-ca.der" "$FX/ca.crt" "$FX/ca.key" "$T/index.txt"
ocsp_resp "$C/revocation_fuzz/ocsp-revoked-by-responder.der" "$FX/ocsp.crt" "$FX/ocsp.key" "$T/index.txt"
printf 'V\t21240101000000Z\t\t1001\tunknown\t/O=mtlsd fuzz/OU=payments/CN=alice\n' >"$T/good.txt"
ocsp_resp "$C/revocation_fuzz/ocsp-good.der" "$FX/ca.crt" "$FX/ca.key" "$T/good.txt"
printf '\2\1\2\3\0\1\2\1\0\0\3\3\1' >"$C/revocation_fuzz/decide-1"
printf '\2\0\2\2\2\2\2\2\2\2\2\2\2\2\2\2' >"$C/revocation_fuzz/decide-2"

# config_load_fuzz: the shipped examples and the deployment fixtures.
for f in ../config/*.yaml ../tests/deploy/fixtures/*.yaml; do
  cp "$f" "$C/config_load_fuzz/$(basename "$f")"
done

python3 - "$C" <<'PY'
import socket, ssl, struct, sys
C = sys.argv[1]
def put(target, name, data):
    open(f"{C}/{target}/{name}", "wb").write(data)

# proxy_v2_fuzz: first byte 0 = decode the rest; 1 = build a header from the rest, decode it.
sig = b"\r\n\r\n\x00\r\nQUIT\n"
def tlv(t, v): return bytes([t]) + struct.pack(">H", len(v)) + v
ssl_tlv = tlv(0x20, b"\x07\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"alice") +
              tlv(0x23, b"TLS_AES_128_GCM_SHA256"))
body = (socket.inet_aton("192.0.2.1") + socket.inet_aton("198.51.100.2") + struct.pack(">HH", 40000, 8443)
        + tlv(0x01, b"h2") + tlv(0x02, b"api.example.org") + ssl_tlv
        + tlv(0xE0, b"spiffe://example.org/a") + tlv(0xE1, b"spiffe://example.org/a,https://a")
        + tlv(0xE2, b"a.example.org,b.example.org") + tlv(0xE4, b"ab" * 32) + tlv(0x04, b""))
put("proxy_v2_fuzz", "v4", b"\0" + sig + b"\x21\x11" + struct.pack(">H", len(body)) + body)
body6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1") * 2 + struct.pack(">HH", 1, 2) + tlv(0x03, b"\0\0\0\0")
put("proxy_v2_fuzz", "v6-crc", b"\0" + sig + b"\x21\x21" + struct.pack(">H", len(body6)) + body6)
bodyu = b"/run/a.sock".ljust(108, b"\0") + b"/run/b.sock".ljust(108, b"\0")
put("proxy_v2_fuzz", "unix", b"\0" + sig + b"\x21\x31" + struct.pack(">H", len(bodyu)) + bodyu)
put("proxy_v2_fuzz", "local", b"\0" + sig + b"\x20\x00\x00\x00")
# proxy_header_fuzz: a byte choosing the segments (0: all at once; k: 1 to 2^(k mod 17) bytes
# each), then the first bytes of a connection on an accept_proxy_protocol listener.
big = socket.inet_aton("192.0.2.1") * 2 + struct.pack(">HH", 1, 2) + tlv(0xE3, b"c" * 3000)
tlvs = (socket.inet_aton("192.0.2.1") * 2 + struct.pack(">HH", 1, 2) + tlv(0xEA, b"a")
        + tlv(0xEA, b"b") + tlv(0x99, b"") + tlv(0x05, b"u" * 128) + tlv(0x01, b"h2"))
for name, split, data in [
    ("v1-tcp4", 0, b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n\x16\x03\x01"),
    ("v1-tcp4-bytes", 1, b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n\x16\x03\x01"),
    ("v1-tcp6", 3, b"PROXY TCP6 2001:db8::7 ::1 1 65535\r\n"),
    ("v1-unknown", 0, b"PROXY UNKNOWN\r\n"),
    ("v1-unknown-long", 5, b"PROXY UNKNOWN " + b"f" * 92 + b"\r\n"),
    ("v1-partial", 2, b"PROXY TCP4 192.0.2.7 198.5"),
    ("v1-cr-at-107", 5, b"PROXY UNKNOWN " + b"f" * 92 + b"\r "),
    ("v1-lf-hello", 0, b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 443\n\x16\x03\x01\x02\x00\x01\x00"),
    ("v2-v4", 4, sig + b"\x21\x11" + struct.pack(">H", len(body)) + body + b"\x16\x03\x01"),
    ("v2-v6", 0, sig + b"\x21\x21" + struct.pack(">H", len(body6)) + body6),
    ("v2-local", 1, sig + b"\x20\x00\x00\x00"),
    ("v2-announced", 4, sig + b"\x21\x11\xff\xff" + b"\0" * 12),
    ("v2-big-tlv", 9, sig + b"\x21\x11" + struct.pack(">H", len(big)) + big + b"after"),
    ("v2-tlvs", 6, sig + b"\x21\x11" + struct.pack(">H", len(tlvs)) + tlvs),
    ("tls", 0, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
]:
    put("proxy_header_fuzz", name, bytes([split]) + data)
put("proxy_v2_fuzz", "build-1", b"\1" + bytes(range(200)))
put("proxy_v2_fuzz", "build-2", b"\1\x11" + b"spiffe://example.org/a,b" * 4)

# xfcc_fuzz: FuzzedDataProvider input; a few shapes.
put("xfcc_fuzz", "plain", b"\x03\x01\x02\x03alice\x00spiffe://td/a\x00a.example\x00")
put("xfcc_fuzz", "quotes", b'\x07"a";b,c\r\nDNS=x\x00\x01\x02\xff' * 3)

# http_head_fuzz: a request head, "\0\0\0\0", a response head (first byte: policy).
reqs = [
    b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Forwarded-Client-Cert: By=a;Hash=b\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HEAD / HTTP/1.0\r\nx-forwarded-client-cert: a\r\nX-FORWARDED-CLIENT-CERT: b\r\n\r\n",
    b"GET http://api.internal:8080/x?y HTTP/1.1\r\nHost: public\r\n\r\n",
]
resps = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
]
for i, r in enumerate(reqs):
    put("http_head_fuzz", f"req-{i}", bytes([i % 4]) + r + b"\0\0\0\0" + resps[i % len(resps)])

# h2_frames_fuzz: HTTP/2 frames a client sends after the preface (the target sends that).
def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload
def lit(name, value):  # HPACK literal without indexing, no Huffman
    return b"\0" + bytes([len(name)]) + name + bytes([len(value)]) + value
def req(path=b"/", method=b"GET", extra=()):
    fields = [(b":method", method), (b":scheme", b"https"), (b":authority", b"x"), (b":path", path)]
    return b"".join(lit(n, v) for n, v in fields + list(extra))
settings = frame(4, 0, 0)
put("h2_frames_fuzz", "get", settings + frame(1, 5, 1, req()))
put("h2_frames_fuzz", "post-body-trailers",
    settings + frame(1, 4, 1, req(b"/pkg.Svc/Call", b"POST", [(b"te", b"trailers")])) +
    frame(0, 0, 1, b"\0\0\0\0\5hello") + frame(1, 5, 1, lit(b"grpc-status", b"0")))
put("h2_frames_fuzz", "three-streams-reset",
    settings + frame(1, 5, 1, req()) + frame(1, 4, 3, req(b"/b", b"POST")) +
    frame(1, 5, 5, req(b"/c")) + frame(3, 0, 3, b"\0\0\0\x08") + frame(0, 1, 3, b"late"))
put("h2_frames_fuzz", "continuation",
    settings + frame(1, 1, 1, req()[:20]) + frame(9, 4, 1, req()[20:]))
put("h2_frames_fuzz", "connect-and-host",
    settings + frame(1, 5, 1, lit(b":method", b"CONNECT") + lit(b":authority", b"x:443")) +
    frame(1, 5, 3, req(extra=[(b"host", b"y"), (b"connection", b"close")])))
put("h2_frames_fuzz", "window-ping-goaway",
    settings + frame(8, 0, 0, b"\0\1\0\0") + frame(6, 0, 0, b"12345678") +
    frame(1, 5, 1, req()) + frame(7, 0, 0, b"\0\0\0\1\0\0\0\0"))

# tls_stream_fuzz: byte 0 is the mode (tls_stream_fuzz.cpp): bit 0 clear = the rest goes to the
# server raw, as the client's first bytes. Raw: a ClientHello (TLS 1.3 and 1.2), and plaintext
# HTTP on the TLS port; without the \0 the server would get the record from its second byte on
# (or, for "G" = 0x47, bit 0 set, a real client would handshake instead).
for name, ver in (("clienthello-13", ssl.TLSVersion.TLSv1_3), ("clienthello-12", ssl.TLSVersion.TLSv1_2)):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ver
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    s = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        s.do_handshake()
    except ssl.SSLWantReadError:
        pass
    put("tls_stream_fuzz", name, b"\0" + out.read())
put("tls_stream_fuzz", "http", b"\0" + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
# Each raw seed reaches the server as meant: mode byte even, then a handshake record (0x16,
# version 3.x) for the ClientHellos.
for name in ("clienthello-12", "clienthello-13", "http"):
    seed = open(f"{C}/tls_stream_fuzz/{name}", "rb").read()
    assert seed[0] & 1 == 0, f"tls_stream_fuzz/{name}: mode byte {seed[0]:#x} is not raw"
    assert name == "http" or seed[1:3] == b"\x16\x03", f"tls_stream_fuzz/{name}: no handshake record after the mode byte"
# Bit 0 set: a real client handshakes first; then application data and raw records.
put("tls_stream_fuzz", "client-app-data", b"\x01\x10" + b"GET / HTTP/1.1\r\n\r\n" + b"\x15\x03\x03\x00\x02\x01\x00")
put("tls_stream_fuzz", "client-close-notify-then-garbage",
    b"\x03\x04ping" + b"\x17\x03\x03\x00\x05abcde" + b"\x16\x03\x03\xff\xff")
PY

# url_fuzz: first byte even = a URL, odd = "http_proxy\nhttps_proxy\nno_proxy\nhost".
i=0
for u in 'http://127.0.0.1:1/ca.crl' 'http://[2001:db8::1]:8080/ocsp?x=1' 'HTTP://Ocsp.Example.ORG' \
  'http://a.example/p%20q#frag' 'https://x/' 'http://user:pw@x/' 'http://x:65536/' 'http://x:0080'; do
  { printf '\0'; printf '%s' "$u"; } >"$C/url_fuzz/url-$i"
  i=$((i + 1))
done
printf '\1proxy.internal:3128\nhttp://p:1\n.example.org, 10.0.0.0/8 ,[::1],*\na.example.org' \
  >"$C/url_fuzz/env-1"
printf '\1http://u:secret@p:1\n\nlocalhost\n127.0.0.1' >"$C/url_fuzz/env-2"

# svid_fuzz: length-prefixed spiffe_id, x509_svid, key (PKCS#8), bundle, then federated pairs.
# leaf.crt's one URI SAN is its SPIFFE ID.
openssl x509 -in "$FX/leaf.crt" -outform DER -out "$T/leaf.der"
openssl x509 -in "$FX/ca.crt" -outform DER -out "$T/ca.der"
openssl pkcs8 -topk8 -nocrypt -in "$FX/leaf.key" -outform DER -out "$T/leaf.p8"
python3 - "$C/svid_fuzz" "$T" <<'PY'
import struct, sys
out, t = sys.argv[1], sys.argv[2]
leaf, ca, key = (open(f"{t}/{n}", "rb").read() for n in ("leaf.der", "ca.der", "leaf.p8"))
def fields(*fs): return b"".join(struct.pack(">H", len(f)) + f for f in fs)
sid = b"spiffe://example.org/ns/prod/sa/alice"
open(f"{out}/valid", "wb").write(fields(sid, leaf, key, ca))
open(f"{out}/federated", "wb").write(fields(sid, leaf + ca, key, ca, b"spiffe://other.org", ca, b"example.org", ca))
open(f"{out}/wrong-id", "wb").write(fields(b"spiffe://example.org/other", leaf, key, ca))
PY
# http_response_fuzz: byte 0 = mode (bit 0: the HTTP/2 front's upstream side), headers only or
# HEAD (bit 1), POST (bit 2), bytes per write (bits 3-7, 0 = all); byte 1 = max_body; a response.
python3 - "$C/http_response_fuzz" <<'PY'
import sys
out = sys.argv[1]
responses = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n"
               b"5;ext=1\r\nhello\r\n0\r\ngrpc-status: 0\r\nX-Hop: 2\r\n\r\n",
    "last-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
    "interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
               b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    "close-delimited": b"HTTP/1.0 200 OK\r\nKeep-Alive: timeout=5\r\n\r\nuntil the end",
    "not-found": b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
}
for i, (name, resp) in enumerate(responses.items()):
    for mode in (0, 1):
        for piece in (0, 1, 7):
            flags = mode | ((i % 3) << 1 & 6) | (piece << 3)
            open(f"{out}/{name}-{mode}-{piece}", "wb").write(bytes([flags, 8]) + resp)
PY
# h2_upstream_fuzz: byte 0 = the peer's write size (bits 0-2), the client takes response bytes
# (bit 3), stream 3's request has trailers (bit 4), an event (bits 5-7); byte 1 = when the event
# happens; then an HTTP/2 server's bytes (hyper-h2) answering streams 1 (GET), 3 (POST, ended)
# and 5 (POST, body open).
PY=python3
"$PY" -c 'import h2' 2>/dev/null || PY=/usr/bin/python3
"$PY" - "$C/h2_upstream_fuzz" <<'PY'
import sys
import h2.config, h2.connection, h2.errors
from hyperframe.frame import DataFrame, SettingsFrame
out = sys.argv[1]
req = [(":scheme", "http"), (":authority", "api.example.org"), (":path", "/")]

def server():
    # A client makes the streams exist on the server's side; its frames are not kept.
    cli = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    srv = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=False, validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False))
    cli.initiate_connection()
    cli.send_headers(1, [(":method", "GET")] + req, end_stream=True)
    cli.send_headers(3, [(":method", "POST")] + req)
    cli.send_data(3, b"\0\0\0\0\5hello", end_stream=True)
    cli.send_headers(5, [(":method", "POST")] + req)
    cli.send_data(5, b"u" * 1000)
    srv.initiate_connection()
    srv.receive_data(cli.data_to_send())
    # Values as plain literals (no Huffman code), which a mutation changes a byte at a time.
    encode = srv.encoder.encode
    srv.encoder.encode = lambda headers, huffman=True: encode(headers, huffman=False)
    return srv

def ok_200(srv, sid, body=b"hello", end=True):
    srv.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")])
    srv.send_data(sid, body, end_stream=end)

scenarios = {}
s = server()
ok_200(s, 1)
ok_200(s, 3, b"x" * 3000)
s.send_headers(5, [(":status", "201")], end_stream=True)
s.reset_stream(5, 0)  # answered in full before the upload ended
scenarios["ok"] = s.data_to_send()

s = server()
s.send_headers(3, [(":status", "200"), ("content-type", "application/grpc")])
s.send_data(3, b"\0\0\0\0\2ok")
s.send_headers(3, [("grpc-status", "0"), ("grpc-message", " ")], end_stream=True)
s.send_headers(1, [(":status", "200"), ("content-type", "application/grpc"),
                   ("grpc-status", "abc")], end_stream=True)  # Trailers-Only, not a number
s.send_headers(5, [(":status", "200"), ("grpc-status", "14")], end_stream=True)
scenarios["grpc"] = s.data_to_send()

s = server()
s.send_headers(1, [(":status", "100")])
s.send_headers(1, [(":status", "103"), ("link", "</a.css>; rel=preload")])
ok_200(s, 1)
s.send_headers(3, [(":status", "100")])
s.send_headers(3, [(":status", "204")], end_stream=True)
scenarios["interim"] = s.data_to_send()

s = server()
ok_200(s, 1, end=False)
s.reset_stream(3, h2.errors.ErrorCodes.REFUSED_STREAM)
s.reset_stream(1, h2.errors.ErrorCodes.INTERNAL_ERROR)
scenarios["rst"] = s.data_to_send()

s = server()
ok_200(s, 1, end=False)
s.close_connection(last_stream_id=1)  # streams 3 and 5 refused; 1 goes on
scenarios["goaway"] = s.data_to_send() + DataFrame(1, data=b"more", flags=["END_STREAM"]).serialize()

s = server()
s.ping(b"12345678")
s.increment_flow_control_window(65536)
s.increment_flow_control_window(65536, stream_id=5)
ok_200(s, 3, b"y" * 16000)
s.send_headers(5, [(":status", "200")])
s.acknowledge_received_data(1000, 5)
s.send_data(5, b"z" * 100, end_stream=True)
scenarios["ping-window"] = s.data_to_send()

s = server()
s.send_headers(1, [(":status", "200"), ("connection", "close"), ("keep-alive", "1")],
               end_stream=True)
s.send_headers(3, [(":status", "200"), ("te", "trailers"), ("X-Upper", "1")], end_stream=True)
s.send_headers(5, [(":status", "200"), ("transfer-encoding", "chunked")], end_stream=True)
scenarios["connection-fields"] = s.data_to_send()

s = server()
s.push_stream(1, 2, [(":method", "GET")] + req)
ok_200(s, 1)
scenarios["push-promise"] = s.data_to_send()

s = server()
ok_200(s, 1)
ok_200(s, 3)
scenarios["max-concurrent"] = SettingsFrame(0, settings={3: 1}).serialize() + s.data_to_send()

s = server()
s.send_headers(1, [(":status", "200"), ("x-big", "v" * 4000)])
s.send_data(1, b"d" * 16000)
s.send_data(1, b"d" * 16000)
s.send_data(1, b"d" * 16000)
s.send_data(1, b"d" * 16000, end_stream=True)
scenarios["window-full"] = s.data_to_send()

s = server()
s.send_headers(1, [(":status", "099")])  # no status: nghttp2 takes it for a final head
s.send_data(1, b"hello", end_stream=True)
scenarios["status-099"] = s.data_to_send()

# byte 0: piece size index | 8 (client takes bytes) | 16 (request trailers) | event << 5
variants = [(8, 0), (8 | 4, 0), (1, 0), (8 | 1 << 5, 1), (8 | 5 << 5, 0), (8 | 16 | 6 << 5, 2),
            (7 << 5, 3), (8 | 4 << 5, 0), (8 | 2 | 3 << 5, 1), (8 | 16 | 2 << 5, 2)]
for name, frames in scenarios.items():
    for i, (b0, b1) in enumerate(variants):
        if i > 2 and name not in ("ok", "grpc", "interim", "max-concurrent"):
            continue
        open(f"{out}/{name}-{i}", "wb").write(bytes([b0, b1]) + frames)
PY

# http1_relay_fuzz: byte 0 = write sizes and how the peers close, byte 1 = the forwarding policy
# (http1_relay_fuzz.cpp), then a script: the client's bytes, "~~u" the upstream's, "~~c" the
# client's again, "~~U"/"~~C" a peer closes, "~~X" the client resets.
python3 - "$C/http1_relay_fuzz" <<'PY'
import sys
out = sys.argv[1]
seeds = {
    "get": (0x00, 0x00, b"GET /a?x=1 HTTP/1.1\r\nHost: api.example.org\r\n"
            b"X-Forwarded-For: 10.0.0.1,10.0.0.2\r\n\r\n"
            b"~~uHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    "post-length": (0x0b, 0x01, b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"
                    b"hello world~~uHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    "chunked-trailers": (0x23, 0x02, b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                         b"TE: trailers\r\n\r\n5;ext=1\r\nhello\r\n006\r\n world\r\n0\r\n"
                         b"X-Checksum: abc\r\n\r\n~~uHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         b"Connection: x-hop\r\nX-Hop: 1\r\n\r\n2\r\nok\r\n0\r\ngrpc-status: 0\r\n\r\n"),
    "pipelined": (0x40, 0x00, b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"~~uHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"
                  b"~~uHTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
    "upgrade": (0x00, 0x00, b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n~~uHTTP/1.1 101 Switching Protocols"
                b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nserver frame~~cclient frame"
                b"~~ufrom upstream"),
    "expect-continue": (0x00, 0x00, b"PUT /big HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                        b"Content-Length: 4\r\n\r\n~~cbody~~uHTTP/1.1 100 Continue\r\n\r\n"
                        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
    "bad-head": (0x80, 0x00, b"GET / HTTP/1.1\r\nHost: a\r\nBad Field: x\r\n\r\n"
                 b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
                 b"~~uHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    "http10-close": (0x00, 0x0e, b"GET http://api.example.org/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                     b"~~uHTTP/1.0 200 OK\r\nKeep-Alive: timeout=5\r\n\r\nuntil the end~~U"),
    "early-answer": (0x05, 0x00, b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"
                     b"first part~~uHTTP/1.1 413 Content Too Large\r\nConnection: close\r\n"
                     b"Content-Length: 0\r\n\r\n~~cmore of the body"),
    "client-reset": (0x00, 0x00, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n~~X"
                     b"~~uHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
}
for name, (b0, b1, script) in seeds.items():
    open(f"{out}/{name}", "wb").write(bytes([b0, b1]) + script)
PY

# h2_request_fuzz: byte 0 = flags (1 END_STREAM, 2 a body, 4 X-Forwarded-For, 8 X-Forwarded-Proto,
# 16 and 32 the XFCC policy: neither remove, 16 set, 32 keep, both append; 64 an empty element to
# append, 128 no client address), then 0x01-separated records: method, path, authority, fields
# "name:value", "--", trailers.
h2req() { local name=$1 flags=$2; shift 2; { printf "\\$(printf '%03o' "$flags")"; local IFS=$'\001'; printf '%s' "$*"; } >"$C/h2_request_fuzz/$name"; }
h2req get 1 GET /a example.org "accept:*/*" "cookie:a=1" "cookie:b=2" --
h2req post-length 6 POST /upload example.org "content-length:0005" "x-forwarded-for:10.0.0.1" --
h2req chunked-trailers 30 POST "/p?q=1" api.example.org:8443 "te:trailers" \
  "x-forwarded-client-cert:By=spiffe://evil" "x-forwarded-proto:http" -- "grpc-status:0" \
  "content-length:1" "host:other"
h2req trailers-only 17 PUT / example.org -- "x-checksum:abc"

# credentials_fuzz: byte 0 = the reader (0 chain, 1 CRL file, 2 private key, 3 password file).
CR="$C/credentials_fuzz"
{ printf '\0'; cat "$FX/leaf.crt" "$FX/ca.crt"; } >"$CR/chain.pem"
{ printf '\0'; openssl x509 -in "$FX/ca.crt" -outform DER; } >"$CR/cert.der"
{ printf '\1'; tail -c +2 "$C/revocation_fuzz/crl-revoked.pem"; tail -c +2 "$C/revocation_fuzz/crl-empty.pem"; } >"$CR/crls.pem"
{ printf '\1'; tail -c +2 "$C/revocation_fuzz/crl-revoked.der"; } >"$CR/crl.der"
{ printf '\2'; cat "$FX/leaf.key"; } >"$CR/key.pem"
{ printf '\2'; openssl pkey -in "$FX/server.key" -outform DER; } >"$CR/key.der"
{ printf '\3'; printf 'secret\r\n\n'; } >"$CR/password"

# verify_chain_fuzz: byte 0 = the listener (bit 0 client mode, bits 1-2 the trust and allow
# list, bit 3 an IP upstream, bit 4 re-sign: verify_chain_fuzz.cpp), then each certificate as a
# 2-byte length and DER, leaf first. Issued by ca.crt; the intermediates' keys are server.key and
# ocsp.key and the leaves' leaf.key, the fixture keys the target re-signs mutated inputs with.
python3 - "$C/verify_chain_fuzz" "$FX" <<'PY'
import datetime, ipaddress, struct, sys
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
out, fx = sys.argv[1], sys.argv[2]
def key(n): return serialization.load_pem_private_key(open(f"{fx}/{n}.key", "rb").read(), None)
def crt(n): return x509.load_pem_x509_certificate(open(f"{fx}/{n}.crt", "rb").read())
ca_key, leaf_key, i1_key, i2_key = key("ca"), key("leaf"), key("server"), key("ocsp")
ca, alice = crt("ca"), crt("leaf")
now = datetime.datetime.now(datetime.timezone.utc)
serials = iter(range(0x4001, 0x5000))
KU = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
      "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
EKU = {"client": ExtendedKeyUsageOID.CLIENT_AUTH, "server": ExtendedKeyUsageOID.SERVER_AUTH}

def name(s):  # "DNS:x", "URI:x", "IP:x" or (name constraints) "NET:10.0.0.0/8"
    kind, v = s.split(":", 1)
    return {"DNS": lambda: x509.DNSName(v), "URI": lambda: x509.UniformResourceIdentifier(v),
            "IP": lambda: x509.IPAddress(ipaddress.ip_address(v)),
            "NET": lambda: x509.IPAddress(ipaddress.ip_network(v))}[kind]()

def make(cn, issuer, issuer_key, k, ca_=False, pathlen=None, ku=(), eku=(), sans=(),
         permitted=(), excluded=(), days=(-1, 36500), bc=None):
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mtlsd fuzz"),
                         x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer.subject if issuer else subject)
         .public_key(k.public_key()).serial_number(next(serials))
         .not_valid_before(now + datetime.timedelta(days=days[0]))
         .not_valid_after(now + datetime.timedelta(days=days[1]))
         .add_extension(bc or x509.BasicConstraints(ca=ca_, path_length=pathlen),
                        critical=ca_ or bc is not None)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                        critical=False))
    if ku: b = b.add_extension(x509.KeyUsage(**{u: u in ku for u in KU}), critical=True)
    if eku: b = b.add_extension(x509.ExtendedKeyUsage([EKU[e] for e in eku]), critical=False)
    if sans: b = b.add_extension(x509.SubjectAlternativeName([name(s) for s in sans]), critical=False)
    if permitted or excluded:
        b = b.add_extension(x509.NameConstraints([name(s) for s in permitted] or None,
                                                 [name(s) for s in excluded] or None), critical=True)
    return b.sign(issuer_key, hashes.SHA256())

def ca_cert(cn, issuer, issuer_key, k, **kw):
    return make(cn, issuer, issuer_key, k, ca_=True, ku=("key_cert_sign", "crl_sign"), **kw)

def leaf(cn, issuer, issuer_key, ku=("digital_signature",), eku=("client", "server"), **kw):
    return make(cn, issuer, issuer_key, leaf_key, ku=ku, eku=eku, **kw)

SID = "URI:spiffe://example.org/ns/prod/sa/"
DEV = "URI:spiffe://example.org/ns/dev/sa/"
NAMES = ("DNS:api.example.org", "IP:127.0.0.1")
API = NAMES + (SID + "api",)
i1 = ca_cert("Fuzz Issuing CA", ca, ca_key, i1_key)
i1p0 = ca_cert("Fuzz Issuing CA", ca, ca_key, i1_key, pathlen=0)
i2 = ca_cert("Fuzz Sub CA", i1, i1_key, i2_key)
nc = ca_cert("Fuzz Constrained CA", ca, ca_key, i1_key,
             permitted=("DNS:example.org", "URI:example.org", "NET:127.0.0.0/8"))
ncx = ca_cert("Fuzz Excluding CA", ca, ca_key, i1_key, excluded=("DNS:evil.example.org",))
chains = {
    "alice": [alice],
    "svid": [leaf("alice", ca, ca_key, sans=(SID + "alice",))],
    "api": [leaf("api", ca, ca_key, eku=("server",), sans=API)],
    "wildcard": [leaf("wild", ca, ca_key, eku=("server",), sans=("DNS:*.example.org",))],
    "via-intermediate": [leaf("alice", i1, i1_key, sans=API + ("DNS:alice.example.org",)), i1],
    "two-intermediates": [leaf("deep", i2, i2_key, sans=(SID + "deep",)), i2, i1],
    "pathlen-0": [leaf("deep", i2, i2_key, sans=(SID + "deep",)), i2, i1p0],
    "nc-permitted": [leaf("alice", nc, i1_key, sans=API + ("DNS:alice.example.org",)), nc],
    "nc-dns": [leaf("alice", nc, i1_key, sans=(SID + "alice", "DNS:alice.evil.test")), nc],
    "nc-ip": [leaf("api", nc, i1_key, sans=API + ("IP:10.0.0.1",)), nc],
    "nc-cn": [leaf("alice.evil.test", nc, i1_key, sans=(SID + "alice",)), nc],
    "nc-excluded": [leaf("evil", ncx, i1_key, sans=(DEV + "evil", "DNS:evil.example.org")), ncx],
    # OpenSSL compares example.org, the URI's host is evil.org (mtlsd refuses it)
    "nc-uri-userinfo": [leaf("alice", nc, i1_key, sans=("DNS:api.example.org",
                                                        "URI:spiffe://example.org:1@evil.org/x")),
                        nc],
    # keys at security level 2 that no TLS signature scheme takes
    "p224-key": [make("p224", ca, ca_key, ec.generate_private_key(ec.SECP224R1()),
                      ku=("digital_signature",), eku=("client", "server"), sans=API)],
    "secp256k1-key": [make("k256", ca, ca_key, ec.generate_private_key(ec.SECP256K1()),
                           ku=("digital_signature",), eku=("client", "server"), sans=API)],
    "dev-dns": [leaf("dev", ca, ca_key, sans=(DEV + "dev", "DNS:dev.example.org"))],
    "not-allowed": [leaf("bob", ca, ca_key, sans=(DEV + "bob", "DNS:bob.other.test"))],
    # keyUsage with encipherOnly has no unused bits: one changed byte gives any usage
    "ku-wide": [leaf("alice", ca, ca_key, ku=("digital_signature", "key_agreement",
                                              "encipher_only"), sans=(SID + "alice",) + NAMES)],
    # keyCertSign and a critical basicConstraints with CA:FALSE written out, refused as it is:
    # one changed byte makes the leaf a CA
    "near-ca-leaf": [leaf("alice", ca, ca_key, ku=("digital_signature", "key_cert_sign"),
                          sans=(SID + "alice",) + NAMES, bc=x509.UnrecognizedExtension(
                              ExtensionOID.BASIC_CONSTRAINTS, b"\x30\x03\x01\x01\x00"))],
    "ca-leaf": [make("ca-leaf", ca, ca_key, leaf_key, ca_=True, eku=("client", "server"),
                     ku=("digital_signature", "key_cert_sign"), sans=API)],
    "two-uris": [leaf("alice", ca, ca_key, sans=(SID + "alice", "URI:https://alice.example.org"))],
    "other-domain": [leaf("alice", ca, ca_key, sans=("URI:spiffe://other.org/ns/prod/sa/alice",))],
    "expired": [leaf("old", ca, ca_key, sans=API, days=(-10, -1))],
    "not-yet-valid": [leaf("new", ca, ca_key, sans=API, days=(36000, 36500))],
    "with-root": [alice, ca],
    "root-alone": [ca],
    "self-signed": [make("self", None, leaf_key, leaf_key, ku=("digital_signature",),
                         eku=("client",))],
}
def server(*trusts): return [t << 1 | 16 for t in trusts]  # 16: re-signed
def client(*trusts, ip=(0,)): return [1 | t << 1 | i << 3 | 16 for t in trusts for i in ip]
selectors = {
    "alice": server(0, 1, 2, 3) + [0], "svid": server(0, 1, 2) + client(2),
    "api": client(0, 1, 2, 3, ip=(0, 1)) + server(0) + [1], "wildcard": client(0, 1),
    "via-intermediate": server(0, 3) + client(0), "two-intermediates": server(0, 3),
    "pathlen-0": server(0), "nc-permitted": server(0, 1, 2) + client(0, ip=(0, 1)),
    "nc-dns": server(0, 1), "nc-ip": client(0, ip=(1,)), "nc-cn": server(0, 1) + client(0),
    "nc-excluded": server(0, 1, 3), "nc-uri-userinfo": server(0, 1) + client(0),
    "p224-key": server(0, 2) + client(0), "secp256k1-key": server(0) + client(0),
    "dev-dns": server(1, 3), "not-allowed": server(1, 3) + client(1),
    "ku-wide": server(0, 2) + client(0), "near-ca-leaf": server(0, 1) + client(0),
    "ca-leaf": server(0, 2) + client(0), "two-uris": server(0, 2), "other-domain": server(0, 2),
    "expired": server(0), "not-yet-valid": client(0), "with-root": server(0),
    "root-alone": server(0), "self-signed": server(0),
}
for chain, sels in selectors.items():
    der = b"".join(struct.pack(">H", len(d)) + d for d in
                   (c.public_bytes(serialization.Encoding.DER) for c in chains[chain]))
    for s in sels:
        open(f"{out}/{chain}-{s:02x}", "wb").write(bytes([s]) + der)
PY

# client_hello_fuzz: byte 0 listener | kind << 2 | flags, byte 1 SNI mode | ALPN mode << 2 |
# patches << 4, then the SNI and ALPN fields (2-byte lengths), then 3-byte patches.
python3 - "$C/client_hello_fuzz" <<'PY'
import struct, sys
out = sys.argv[1]
def f(b): return struct.pack(">H", len(b)) + b
def seed(name, a, b, sni=b"", alpn=b"", patches=b""):
    open(f"{out}/{name}", "wb").write(bytes([a, b]) + f(sni) + f(alpn) + patches)
seed("exact-13-h2", 0x00, 0x05, b"api.example.org", b"h2\nhttp/1.1")
seed("wildcard-12", 0x04, 0x01, b"x.apps.example.org")
seed("wildcard-two-labels-strict", 0x01, 0x01, b"a.b.apps.example.org")
seed("absent-sni", 0x08, 0x04, b"", b"http/1.1")
seed("absent-sni-strict", 0x09, 0x00)
seed("unknown-strict", 0x01, 0x01, b"unknown.example.com")
seed("upper-final-dot", 0x01, 0x05, b"API.Example.ORG.", b"h2")
seed("bare-suffix-strict", 0x03, 0x01, b"apps.example.org")
seed("hrr-named", 0x0D, 0x05, b"www.example.com", b"h2")
seed("hrr-second-without-sni", 0x4C, 0x01, b"example.net")
seed("rsa-13", 0x12, 0x05, b"api.example.org", b"http/1.1")
seed("rsa-12", 0x17, 0x01, b"api.example.org")
seed("tls10", 0x18, 0x01, b"a.apps.example.org")
seed("hrr-rsa-sni-last", 0x9F, 0x05, b"API.example.org", b"h2")
names = b"\0" + f(b"api.example.org") + b"\0" + f(b"b.example.net")
seed("raw-two-names", 0x00, 0x02, f(names))
seed("other-name-type-first", 0x02, 0x03, b"www.example.com")
seed("nul-and-long", 0x00, 0x01, b"x\0y.example.net")
seed("long-label", 0x02, 0x01, b"l" * 300 + b".apps.example.org")
seed("alpn-commas-controls", 0x00, 0x0D, b"api.example.org", b"h2,x\x01\x7f")
seed("alpn-raw", 0x00, 0x09, b"example.net", f(b"\x02h2\x00\x03abc"))
seed("patched", 0x21, 0x25, b"www.example.com", b"h2", b"\x00\x07\x20\x00\x10\x00")
PY

# admin_server_fuzz: byte 0 = bit 0 the unix socket, bit 1 ready, bits 3-5 the write size; byte 1 =
# the counter (low 4 bits: histogram observations); then a script (admin_server_fuzz.cpp):
# connection 0's bytes, "~~1".."~~7" another connection's, "~~C" a half-close, "~~X" a reset,
# "~~p" and a digit a write size, "~~r"/"~~d"/"~~l"/"~~v" the readiness reason and details, the
# histogram's label and observations, "~~E" a crowd of half requests first.
python3 - "$C/admin_server_fuzz" <<'PY'
import sys
out = sys.argv[1]
def get(target, extra=b"", method=b"GET", version=b"1.1"):
    return (method + b" " + target + b" HTTP/" + version + b"\r\nHost: admin\r\n" + extra +
            b"\r\n")
HEAD, V10 = {"method": b"HEAD"}, {"version": b"1.0"}
seeds = {
    "get-metrics": (0x02, 0x35, get(b"/metrics")),
    "head-readyz-not-ready": (0x00, 0x00, b"~~rlistener public is not bound~~dupstream public "
                              b"(127.0.0.1:8080): down: refused\n~~0" + get(b"/readyz", **HEAD)),
    "head-metrics-ready": (0x02, 0x23, get(b"/metrics", **HEAD) + get(b"/readyz")),
    "pipelined-bytewise": (0x0a, 0x07, get(b"/healthz") + get(b"/metrics", **HEAD) +
                           get(b"/readyz") + get(b"/nope") + get(b"/metrics") +
                           get(b"/healthz", b"Connection: close\r\n") + get(b"/after-close")),
    "chunked-post": (0x0a, 0x00, b"POST /metrics HTTP/1.1\r\nHost: admin\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" +
                     get(b"/healthz")),
    "post-with-body": (0x12, 0x00, b"POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" +
                       get(b"/healthz", method=b"DELETE")),
    "oversize-header": (0x38, 0x00, get(b"/metrics", b"X-Big: " + b"a" * 9000 + b"\r\n")),
    "oversize-body": (0x30, 0x00, get(b"/healthz", b"Content-Length: 5000\r\n") + b"b" * 5000),
    "expect-continue": (0x02, 0x01, get(b"/metrics", b"Expect: 100-continue\r\n"
                                                     b"Content-Length: 4\r\n") + b"body"),
    "http10": (0x00, 0x00, get(b"/healthz", **V10) + get(b"/metrics", **V10)),
    "http10-keep-alive": (0x22, 0x11, get(b"/readyz", b"Connection: keep-alive\r\n", **V10) +
                          get(b"/healthz", **V10)),
    "absolute-form": (0x02, 0x00, b"GET http://admin.example/metrics HTTP/1.1\r\n"
                      b"Host: admin.example\r\n\r\n" + get(b"/metrics")),
    "query-string": (0x02, 0x09, get(b"/metrics?name[]=x&y") + get(b"/readyz?verbose", **HEAD) +
                     get(b"/healthz?")),
    "two-connections": (0x02, 0x02, b"GET /metr~~1" + get(b"/healthz") +
                        b"~~0ics HTTP/1.1\r\n\r\n~~1~~C~~0" + get(b"/readyz")),
    "reset-mid-request": (0x08, 0x00, get(b"/metrics") + b"GET /met~~X"),
    "unix-reset-after-request": (0x03, 0x04, get(b"/metrics") + b"~~X"),
    "crowd-evicted": (0x02, 0x00, b"~~E~~0" + get(b"/healthz") + b"~~1" + get(b"/readyz")),
    "malformed": (0x00, 0x00, b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n"),
    "label-escapes": (0x02, 0x0f, b"~~lroute \"quoted\" \\ and\nnewline~~v\x00\x10\x64\xff~~0" +
                      get(b"/metrics")),
    "reopened": (0x02, 0x00, get(b"/healthz") + b"~~C" + get(b"/metrics") + b"~~X" +
                 get(b"/readyz")),
    "empty-connections": (0x00, 0x00, b"~~C~~1~~X~~2~~p1" + get(b"/healthz")),
    "unix-pieces-of-7": (0x21, 0x05, get(b"/healthz") + get(b"/metrics") +
                         get(b"/x", method=b"PUT")),
    # It found Connection fields on two lines read as the first alone (test_admin_hostile.py).
    "keepalive-close-in-second-field": (0x02, 0x00, b"GET /healthz HTTP/1.1\r\nConnection: "
                                        b"x-trace\r\nConnection: close\r\n\r\n" +
                                        b"GET /readyz HTTP/1.1\r\n\r\n"),
}
for name, (b0, b1, script) in seeds.items():
    open(f"{out}/{name}", "wb").write(bytes([b0, b1]) + script)
PY

# verify_time_fuzz: the text of `mtlsd verify --at`.
for t in 2026-01-02T03:04:05Z 2026-01-02t03:04:05.123456789+05:30 "2000-02-29 12:00:00z" \
  0000-01-01T00:00:00+01:00 9999-12-31T23:59:60-23:59 2016-12-31T23:59:60Z 1969-12-31T23:59:59Z \
  1900-02-29T00:00:00Z 2026-02-31T00:00:00Z @0 @1767323045 @9223372036854775807 \
  @9223372036854775808; do
  printf '%s' "$t" >"$C/verify_time_fuzz/$(printf '%s' "$t" | tr -c 'A-Za-z0-9@.+-' '_')"
done

echo "seeds written under $(pwd)/$C"
