#!/usr/bin/env bash
# Packs built routerpolicy binaries into the archives krew installs and writes the krew plugin
# manifest for them (dist/routerpolicy.yaml), each platform's sha256 computed from the archive
# just written. Nothing is invented: the download location is what you pass (--url-base, where
# you will upload the archives); the script uploads nothing.
#
#   scripts/krew-pack.sh --version v0.1.0 \
#     --url-base https://github.com/OWNER/routerpolicy/releases/download/v0.1.0 \
#     [--homepage URL] [--out dist] \
#     linux/amd64=target/x86_64-unknown-linux-musl/release/routerpolicy \
#     linux/arm64=target/aarch64-unknown-linux-musl/release/routerpolicy
#
# Each archive, routerpolicy_VERSION_OS_ARCH.tar.gz, holds LICENSE and
# `kubectl-routerpolicy` (the binary); it is reproducible (sorted, owner 0, mtime 0, gzip without a name or time).
# Try it before uploading:
#   kubectl krew install --manifest=dist/routerpolicy.yaml \
#     --archive=dist/routerpolicy_v0.1.0_linux_amd64.tar.gz
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
version="" url_base="" homepage="" out="dist"
platforms=()
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=${2:-}; shift 2 ;;
    --url-base) url_base=${2:-}; shift 2 ;;
    --homepage) homepage=${2:-}; shift 2 ;;
    --out) out=${2:-}; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "krew-pack.sh: unknown flag $1" >&2; usage ;;
    *) platforms+=("$1"); shift ;;
  esac
done
[ -n "$version" ] || { echo "krew-pack.sh: --version is required (e.g. v0.1.0)" >&2; exit 2; }
[[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] \
  || { echo "krew-pack.sh: --version $version: krew wants a semantic version with a leading v (v0.1.0)" >&2; exit 2; }
[ -n "$url_base" ] || { echo "krew-pack.sh: --url-base is required: where the archives will be downloaded from" >&2; exit 2; }
[[ "$url_base" =~ ^https?:// ]] || { echo "krew-pack.sh: --url-base $url_base: must be an http(s) URL" >&2; exit 2; }
[ ${#platforms[@]} -gt 0 ] || { echo "krew-pack.sh: name at least one OS/ARCH=BINARY" >&2; exit 2; }

mkdir -p "$out"
manifest="$out/routerpolicy.yaml"
{
  echo "apiVersion: krew.googlecontainertools.github.com/v1alpha2"
  echo "kind: Plugin"
  echo "metadata:"
  echo "  name: routerpolicy"
  echo "spec:"
  echo "  version: $version"
  [ -z "$homepage" ] || echo "  homepage: $homepage"
  echo "  shortDescription: Explain, validate and render ImageVariationPolicy routing policies"
  echo "  description: |"
  echo "    kubectl routerpolicy explain answers which policy a request gets, what is in it,"
  echo "    which gateway replicas serve it, and whether a caller may use it (and why not)."
  echo "    validate and render check and preview manifests without a cluster."
  echo "  platforms:"
} > "$manifest.tmp"

for platform in "${platforms[@]}"; do
  spec=${platform%%=*} binary=${platform#*=}
  os=${spec%%/*} arch=${spec#*/}
  if [ "$spec" = "$platform" ] || [ "$os" = "$spec" ] || [ -z "$os" ] || [ -z "$arch" ]; then
    echo "krew-pack.sh: $platform: expected OS/ARCH=BINARY (linux/amd64=target/release/routerpolicy)" >&2
    exit 2
  fi
  [ -x "$binary" ] || { echo "krew-pack.sh: $binary: not an executable file" >&2; exit 2; }
  archive="routerpolicy_${version}_${os}_${arch}.tar.gz"
  stage=$(mktemp -d)
  cp "$binary" "$stage/kubectl-routerpolicy"
  chmod 0755 "$stage/kubectl-routerpolicy"
  cp "$root/LICENSE" "$stage/LICENSE"
  chmod 0644 "$stage/LICENSE"
  tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - LICENSE kubectl-routerpolicy \
    | gzip -n > "$out/$archive"
  rm -rf "$stage"
  sha=$(sha256sum "$out/$archive" | cut -d' ' -f1)
  {
    echo "  - selector:"
    echo "      matchLabels:"
    echo "        os: $os"
    echo "        arch: $arch"
    echo "    uri: ${url_base%/}/$archive"
    echo "    sha256: $sha"
    echo "    bin: kubectl-routerpolicy"
    echo "    files:"
    echo "    - from: kubectl-routerpolicy"
    echo "      to: ."
    echo "    - from: LICENSE"
    echo "      to: ."
  } >> "$manifest.tmp"
  echo "$out/$archive  $sha" >&2
done
mv "$manifest.tmp" "$manifest"
echo "$manifest"
