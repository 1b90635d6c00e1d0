#!/bin/sh
# rootfs.sh BINARY DEST — everything a `FROM scratch` image needs to run mtlsd,
# the way distroless images are put together:
#   /usr/bin/mtlsd                   the binary
#   /lib*/..., /usr/lib*/...         each shared library the dynamic loader
#                                    resolves for it (ldd: the whole DT_NEEDED
#                                    closure) and the loader itself, nothing else
#   /etc/ssl/certs/ca-certificates.crt and OpenSSL's default paths pointing at
#                                    it (/usr/lib/ssl/cert.pem, /usr/lib/ssl/certs):
#                                    the system trust store of a client-mode
#                                    listener with `server_auth.ca: []`
# No shell, no package manager, no passwd (the image runs as a numeric UID).
# docker/Dockerfile runs it in the build stage; tests/deploy/check_dockerfile.sh
# runs it on the host and starts the result under chroot.
set -eu
bin=$1
dest=$2
bundle=/etc/ssl/certs/ca-certificates.crt
[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }
[ -s "$bundle" ] || { echo "rootfs.sh: $bundle missing (install ca-certificates)" >&2; exit 1; }
mkdir -p "$dest/usr/bin" "$dest/etc/ssl/certs" "$dest/usr/lib/ssl"
cp "$bin" "$dest/usr/bin/mtlsd"
# "libfoo.so.1 => /lib/.../libfoo.so.1 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)";
# a "not found" line fails the build.
if ldd "$bin" | grep -q 'not found'; then
    ldd "$bin" >&2
    exit 1
fi
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
    mkdir -p "$dest$(dirname "$lib")"
    cp -L "$lib" "$dest$lib"
done
cp -L "$bundle" "$dest$bundle"
ln -s "$bundle" "$dest/usr/lib/ssl/cert.pem"
ln -s /etc/ssl/certs "$dest/usr/lib/ssl/certs"
