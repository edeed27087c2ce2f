#!/usr/bin/env bash
# Regenerate pc_ovseg/viewer/static/vendor/ from the npm registry.
#
# The viewer page must work offline and ship inside the wheel, so the one file it imports
# (three's self-contained minified ES module) is committed. The version is pinned in
# pc_ovseg/viewer/web/package.json; bump it there and rerun this script. three >= 0.171 splits
# the module into three.module.min.js + three.core.min.js: copy both if you upgrade past it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
web="$root/pc_ovseg/viewer/web"
vendor="$root/pc_ovseg/viewer/static/vendor"
version="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dependencies"]["three"])' "$web/package.json")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "three@$version" >/dev/null && tar xzf "three-$version.tgz")
pkg="$tmp/package"
if grep -q 'from"./three.core' "$pkg/build/three.module.min.js"; then
  echo "three@$version's module imports three.core.min.js: copy it too (see this script's header)" >&2
  exit 1
fi
mkdir -p "$vendor"
cp "$pkg/build/three.module.min.js" "$vendor/three.module.min.js"
cp "$pkg/LICENSE" "$vendor/LICENSE.three"
echo "three@$version" > "$vendor/VERSION"
sha256sum "$vendor/three.module.min.js"
