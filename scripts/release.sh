#!/usr/bin/env bash
# Build and package a gitamp release for x86_64 Linux (glibc):
#
#   scripts/release.sh [--out DIR] [--binary PATH] [--allow-dirty]
#
# writes DIR/gitamp-<version>-x86_64-unknown-linux-gnu.tar.gz and DIR/SHA256SUMS (default DIR:
# dist). The tarball holds one folder of the same name with the stripped binary, README.md,
# LICENSE when the repository has one, and shell completions and a man page when the binary can
# generate them (`gitamp completion <shell>`, `gitamp man`).
#
#   --binary PATH   package this binary instead of building one (tests; a binary built elsewhere)
#   --allow-dirty   build even with uncommitted changes (the commit is then marked `-dirty`)
#
# Reproducible: the archive's times are the commit's (SOURCE_DATE_EPOCH, unless set), entries
# are sorted, owned by 0:0, and gzip stores no name or time, so one binary gives one tarball.
#
# The glibc floor (the newest GLIBC_x.y symbol version the binary needs) is printed, and the
# script fails when it is above GITAMP_GLIBC_MAX (default below, the one the README documents):
# a new dependency or toolchain that raises it must be a decision, not an accident.
set -euo pipefail

GLIBC_MAX_DEFAULT=2.34
TARGET=x86_64-unknown-linux-gnu

die() {
    echo "release: $*" >&2
    exit 1
}

cd "$(dirname "$0")/.."
out=dist
binary=""
allow_dirty=false
while [[ $# -gt 0 ]]; do
    case "$1" in
    --out)
        [[ $# -ge 2 && -n "$2" ]] || die "--out needs a directory"
        out="$2"
        shift 2
        ;;
    --binary)
        [[ $# -ge 2 && -n "$2" ]] || die "--binary needs a path"
        binary="$2"
        shift 2
        ;;
    --allow-dirty)
        allow_dirty=true
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1' (use --out DIR, --binary PATH, --allow-dirty)" ;;
    esac
done
for tool in git tar gzip sha256sum objdump readelf strip; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (binutils has objdump, readelf, strip)"
done
tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar is needed (--sort, --owner, --mtime)"

# The version every release name uses: the workspace's, as in Cargo.toml.
version="$(awk '/^\[workspace\.package\]/ { s = 1; next } /^\[/ { s = 0 }
    s && /^version *=/ { gsub(/.*= *"|".*/, ""); print; exit }' Cargo.toml)"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] \
    || die "cannot read the version from Cargo.toml's [workspace.package] (got '$version')"

commit="$(git rev-parse --short=12 HEAD)" || die "not a Git checkout: the release names its commit"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}"
[[ "$SOURCE_DATE_EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be seconds since the epoch (got '$SOURCE_DATE_EPOCH')"

if [[ -z "$binary" ]]; then
    if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
        $allow_dirty || die "uncommitted changes: commit them, or pass --allow-dirty"
        commit="$commit-dirty"
    fi
    # build.rs reads these; set here so a build from a copy without .git says the same.
    export GITAMP_BUILD_COMMIT="$commit"
    export GITAMP_BUILD_DATE="${GITAMP_BUILD_DATE:-$(git log -1 --format=%cs HEAD)}"
    echo "release: cargo build --release --locked (gitamp $version, commit $commit)" >&2
    started=$SECONDS
    cargo build --release --locked --bin gitamp
    echo "release: built in $((SECONDS - started)) s" >&2
    binary="${CARGO_TARGET_DIR:-target}/release/gitamp"
fi
[[ -f "$binary" && -x "$binary" ]] || die "no executable at $binary"

# The binary must be the version it is packaged as (a stale --binary would lie otherwise).
version_line="$("$binary" --version | head -1)" || die "$binary --version failed"
[[ "$version_line" == "gitamp $version "* ]] \
    || die "$binary says '$version_line', but Cargo.toml's version is $version"

name="gitamp-$version-$TARGET"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
dir="$stage/$name"
mkdir -p "$dir"
# strip drops the line tables of the release profile: a packaged binary is about 4x smaller.
strip --strip-all -o "$dir/gitamp" "$binary"
chmod 0755 "$dir/gitamp"

# The glibc floor: the newest GLIBC_ symbol version among the binary's dynamic symbols.
floor="$(objdump -T "$dir/gitamp" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -1)"
[[ -n "$floor" ]] || die "no GLIBC_ symbol versions in $binary: not a glibc binary?"
glibc_max="${GITAMP_GLIBC_MAX:-$GLIBC_MAX_DEFAULT}"
libs="$(readelf -d "$dir/gitamp" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | LC_ALL=C sort | paste -sd' ' -)"
echo "release: glibc floor $floor (allowed up to $glibc_max); needs $libs" >&2
if [[ "$(printf '%s\n%s\n' "$floor" "$glibc_max" | sort -V | tail -1)" != "$glibc_max" ]]; then
    die "glibc floor $floor is above $glibc_max: the binary would no longer run where the README says it does. Find the symbols with: objdump -T $binary | grep GLIBC_$floor (or raise GITAMP_GLIBC_MAX and the README's Install section together)"
fi

cp README.md "$dir/README.md"
for license in LICENSE LICENSE.md LICENSE-APACHE; do
    [[ -f "$license" ]] && cp "$license" "$dir/"
done

# Completions and a man page, when this binary can make them (its --help lists the commands).
if "$binary" completion --help >/dev/null 2>&1; then
    mkdir -p "$dir/completions"
    "$binary" completion bash >"$dir/completions/gitamp.bash" || die "gitamp completion bash failed"
    "$binary" completion zsh >"$dir/completions/_gitamp" || die "gitamp completion zsh failed"
    "$binary" completion fish >"$dir/completions/gitamp.fish" || die "gitamp completion fish failed"
    echo "release: shell completions included (bash, zsh, fish)" >&2
else
    echo "release: this binary has no 'completion' command: no shell completions" >&2
fi
if "$binary" man --help >/dev/null 2>&1; then
    mkdir -p "$dir/man"
    "$binary" man >"$dir/man/gitamp.1" || die "gitamp man failed"
    [[ -s "$dir/man/gitamp.1" ]] || die "gitamp man printed nothing"
    echo "release: man page included" >&2
else
    echo "release: this binary has no 'man' command: no man page" >&2
fi
find "$dir" -type f -not -name gitamp -exec chmod 0644 {} +
find "$dir" -type d -exec chmod 0755 {} +

mkdir -p "$out"
tarball="$name.tar.gz"
tar --sort=name --format=gnu --owner=0 --group=0 --numeric-owner \
    --mtime="@$SOURCE_DATE_EPOCH" --mode='go-w' -C "$stage" -cf - "$name" \
    | gzip -n -9 >"$out/$tarball"
(cd "$out" && sha256sum "$tarball" >SHA256SUMS)

echo "$version_line"
echo "glibc floor: $floor"
echo "needs: $libs"
echo "$out/$tarball ($(du -k "$out/$tarball" | cut -f1) KiB, binary $(du -k "$dir/gitamp" | cut -f1) KiB)"
cat "$out/SHA256SUMS"
