#!/usr/bin/env bash
# Refreshes the country database that exflow compiles into its binary (data/geoip/) from the npm
# package @ip-location-db/geo-whois-asn-country-mmdb (CC BY 4.0, data by the NRO and the RIRs).
#
# usage: scripts/refresh-geoip.sh [VERSION]
#   VERSION  an npm version of the package, e.g. 2.3.2026061719 (default: the latest)
#
# It writes data/geoip/geo-whois-asn-country.mmdb, NRO_LICENSE and VERSION, and updates the
# version, size and SHA-256 lines of data/geoip/README.md. It commits nothing. Afterwards run
# `cargo test --lib enrich`: the geo tests pin known lookups, and a refresh that moves one of them
# deserves a look at the data before the test is changed.
set -euo pipefail

package='@ip-location-db/geo-whois-asn-country-mmdb'
requested_version="${1:-latest}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo_root/data/geoip"
# The database is compiled into every binary: past this size, ask whether that is still wanted.
warn_bytes=$((16 * 1024 * 1024))

die() {
    echo "refresh-geoip: $*" >&2
    exit 1
}

command -v npm >/dev/null || die "npm not found: install Node.js with npm first"
command -v node >/dev/null || die "node not found: install Node.js first"
[[ -d "$dest" ]] || die "\"$dest\" does not exist: run this from an exflow checkout"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "refresh-geoip: fetching $package@$requested_version with npm"
npm pack --silent --pack-destination "$work" "$package@$requested_version" >"$work/pack.out" ||
    die "npm pack failed for \"$package@$requested_version\""
tarball="$(tail -n 1 "$work/pack.out")"
[[ -f "$work/$tarball" ]] || die "npm pack did not produce \"$tarball\""
tar -xzf "$work/$tarball" -C "$work"

unpacked="$work/package"
for file in geo-whois-asn-country.mmdb NRO_LICENSE package.json; do
    [[ -f "$unpacked/$file" ]] || die "the package has no \"$file\": its layout changed, check it by hand"
done

version="$(node -p 'require(process.argv[1]).version' "$unpacked/package.json")"
mmdb="$unpacked/geo-whois-asn-country.mmdb"
size="$(wc -c <"$mmdb" | tr -d ' ')"
# Every MaxMind DB ends with its metadata, introduced by this marker.
LC_ALL=C grep -q $'\xab\xcd\xefMaxMind\\.com' "$mmdb" ||
    die "\"geo-whois-asn-country.mmdb\" in $version has no MaxMind DB metadata marker"
((size > 1000000)) || die "\"geo-whois-asn-country.mmdb\" in $version is only $size bytes"
if ((size > warn_bytes)); then
    echo "refresh-geoip: warning: the database is $size bytes, more than $warn_bytes;" \
        "it is embedded in every exflow binary" >&2
fi
sha256="$(sha256sum "$mmdb" | cut -d ' ' -f 1)"

cp "$mmdb" "$dest/geo-whois-asn-country.mmdb"
cp "$unpacked/NRO_LICENSE" "$dest/NRO_LICENSE"
printf '%s\n' "$version" >"$dest/VERSION"
sed -i \
    -e "s/^- npm version: .*/- npm version: \`$version\`/" \
    -e "s/^- Size: .*/- Size: $size bytes/" \
    -e "s/^- SHA-256: .*/- SHA-256: \`$sha256\`/" \
    "$dest/README.md"

echo "refresh-geoip: data/geoip now holds $package $version ($size bytes, sha256 $sha256)"
echo "refresh-geoip: next: cargo test --lib enrich, then review and commit data/geoip/"
