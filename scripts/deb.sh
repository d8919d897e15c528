#!/bin/bash
# Builds the Debian package sealpost-node_VERSION_ARCH.deb with dpkg-deb from a staging
# tree (no cargo-deb: it would be one more crate to build and pin, and dpkg-deb, in every
# Debian, does the whole job for one binary package). The package holds both binaries,
# the systemd unit, the maintainer scripts of debian/ (system user `sealpost`, a node in
# /var/lib/sealpost made by `sealpost-node init`), the README and the node spec.
#
#   scripts/deb.sh [--bin-dir DIR] [--out DIR]
#
# --bin-dir: where sealpost-node and sealpost are (default target/release, which
# `make deb` builds first); --out: where the .deb goes (default target/debian).
# Prints the path of the package on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=target/release
out=target/debian
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: $0 [--bin-dir DIR] [--out DIR]" >&2; exit 2 ;;
    esac
done
for b in sealpost-node sealpost; do
    [ -x "$bin_dir/$b" ] || { echo "$bin_dir/$b is missing: build it first (make deb does)" >&2; exit 1; }
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT

install -d -m 0755 "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
    "$stage/usr/share/doc/sealpost-node"
install -m 0755 "$bin_dir/sealpost-node" "$bin_dir/sealpost" "$stage/usr/bin/"
strip --strip-unneeded "$stage/usr/bin/sealpost-node" "$stage/usr/bin/sealpost" 2>/dev/null || true
install -m 0644 debian/sealpost-node.service "$stage/lib/systemd/system/"
install -m 0644 README.md spec/node.md "$stage/usr/share/doc/sealpost-node/"
install -m 0755 debian/postinst debian/prerm debian/postrm "$stage/DEBIAN/"

# Depends: the package of every shared library the binaries link (as dpkg-shlibdeps
# would, without a source package).
libs=$(ldd "$stage/usr/bin/sealpost-node" "$stage/usr/bin/sealpost" | awk '/=> \//{print $3}' | sort -u)
depends=$(for l in $libs; do dpkg -S "$(readlink -f "$l")" 2>/dev/null || dpkg -S "$l" 2>/dev/null || true; done \
    | cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g')
size=$(du -sk "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: sealpost-node
Version: $version
Architecture: $arch
Maintainer: Sealpost developers <sealpost@example.invalid>
Installed-Size: $size
Depends: adduser, ${depends:-libc6}
Section: mail
Priority: optional
Homepage: https://example.invalid/sealpost
Description: Sealpost mailbox node: end-to-end encrypted, federated mail
 sealpost-node stores and forwards OpenPGP-encrypted envelopes for its users,
 relays them to other nodes, obtains its TLS certificate by ACME and bridges
 legacy e-mail through an SMTP gateway. Also contains the sealpost client CLI.
 .
 The package creates the system user sealpost and a node in /var/lib/sealpost;
 the systemd unit sealpost-node.service is installed but not enabled.
CONTROL

mkdir -p "$out"
deb="$out/sealpost-node_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
