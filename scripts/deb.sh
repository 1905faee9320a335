#!/usr/bin/env bash
# Builds the Debian package of teshim from this tree: a build configured for
# prefix /usr (so libraries land in /usr/lib/<multiarch>), `cmake --install`
# into a staging folder, control files, then dpkg-deb.
# Usage: scripts/deb.sh [OUTDIR]   (default build-deb; prints the .deb's path)
# TESHIM_DEB_BUILD_DIR: the build folder (default OUTDIR/build);
# TESHIM_DEB_LINTIAN=1: run lintian on the result (not part of CI).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-build-deb}")
bd=${TESHIM_DEB_BUILD_DIR:-$out/build}
stage=$out/stage

version=$(sed -n 's/^project(teshim VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
arch=$(dpkg --print-architecture)
[ -n "$version" ] || { echo "deb.sh: no version in CMakeLists.txt" >&2; exit 1; }

# The Python module goes where Debian's python3 looks for packaged modules.
cmake -S . -B "$bd" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
    -DTESHIM_WERROR=ON -DTESHIM_PYTHON_INSTALL_DIR=/usr/lib/python3/dist-packages >/dev/null
# What the install rules name; the tests and benches are not packaged.
cmake --build "$bd" -j "$(nproc)" \
    --target teshim teshim_cmd teshim_engine teshim_mooncake teshim_python >/dev/null
rm -rf "$stage"
DESTDIR=$stage cmake --install "$bd" >/dev/null

# Debian's layout: stripped objects, compressed man pages and changelog, a
# copyright file; directories 755, files 644, executables 755.
find "$stage" -type f -exec sh -c 'head -c4 "$1" | grep -q "^.ELF"' _ {} \; -print |
    while read -r f; do
        strip --strip-unneeded --remove-section=.comment --remove-section=.note "$f"
    done
find "$stage/usr/share/man" -type f -name '*.[0-9]' -exec gzip -9n {} +
doc=$stage/usr/share/doc/teshim
mkdir -p "$doc"
when=$(git log -1 --format=%cD 2>/dev/null || date -R)
year=$(date -d "$when" +%Y)
maint="teshim maintainers <maintainers@users.noreply.h-seed-7189fae8.example>"
printf 'teshim (%s) unstable; urgency=medium\n\n  * Package built from the source tree by scripts/deb.sh.\n\n -- %s  %s\n' \
    "$version" "$maint" "$when" | gzip -9n >"$doc/changelog.gz" # a native version: changelog.gz
cat >"$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: teshim
Comment: Built from the teshim source tree by scripts/deb.sh. The source tree
 states no license; this file records that rather than invent one.

Files: *
Copyright: $year the teshim authors
License: none-stated
 The source tree carries no license statement.
COPYRIGHT
find "$stage" -type d -exec chmod 755 {} +
find "$stage" -type f -exec chmod 644 {} +
chmod 755 "$stage/usr/bin/teshim"

# Control files. libteshim_engine.so.0 is a public library in the default
# search path: shlibs for packages that link it, the ldconfig trigger for
# its cache. libteshim.so is preloaded by path and needs neither.
mkdir -p "$stage/DEBIAN"
engine=$(cd "$stage" && find usr -name 'libteshim_engine.so.0' -printf '%h')
# Depends from the objects' own needs (libc6 and its version), the way
# dpkg-shlibdeps reads them, run in a scratch tree of its own.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/debian"
printf 'Source: teshim\n\nPackage: teshim\nArchitecture: any\n' >"$scratch/debian/control"
objs=()
while read -r f; do objs+=("$stage/$f"); done < <(cd "$stage" && find usr -type f \( -name '*.so*' -o -path 'usr/bin/*' \))
depends=$(cd "$scratch" && dpkg-shlibdeps -O -l"$stage/$engine" "${objs[@]}" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || depends="libc6"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: teshim
Version: $version
Architecture: $arch
Maintainer: $maint
Installed-Size: $size
Depends: $depends
Section: net
Priority: optional
Description: preloadable policies for RDMA/TCP transfer engines you cannot rebuild
 libteshim.so is loaded into an unmodified program with LD_PRELOAD and
 rewrites a handful of its calls to libibverbs, the CUDA runtime and the
 kernel's sockets: PCIe relaxed ordering, traffic class and service level,
 pinned bounce buffers for pageable CUDA copies, DSCP and other socket
 policies. Every injection is off until configured (/etc/teshim.conf).
 .
 The teshim command runs programs under it, checks configurations, and
 reports what was intercepted, injected and fell back. The package also
 carries the native transfer engine library libteshim_engine.so.0 with its
 header, pkg-config file and CMake package.
CONTROL
echo "libteshim_engine 0 teshim (>= $version)" >"$stage/DEBIAN/shlibs"
echo "activate-noawait ldconfig" >"$stage/DEBIAN/triggers"
chmod 644 "$stage/DEBIAN/"*
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 644 "$stage/DEBIAN/md5sums"

deb=$out/teshim_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
# What lintian still says, known: the engine library shares the package
# with the command (package-name-doesnt-match-sonames, and the .so link in
# the same package), and the tree states no license.
if [ "${TESHIM_DEB_LINTIAN:-0}" = 1 ]; then
    lintian --info "$deb" >&2 || true
fi
echo "$deb"
