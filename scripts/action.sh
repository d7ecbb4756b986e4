#!/usr/bin/env bash
# The steps of the gitamp GitHub Action (action.yml), kept in a script so they run the same on a
# laptop and in tests (tests/action.rs): point GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and
# GITHUB_WORKSPACE at temporary files and put `gitamp` on PATH.
#
#   scripts/action.sh has-gitamp   prints `found=true|false` and `source-key` (a hash of the
#                                  action's sources, for the cache key) to $GITHUB_OUTPUT
#   scripts/action.sh download     the release binary of INPUT_VERSION (default: the action's
#                                  own version), checksum verified, onto $GITHUB_PATH; prints
#                                  `installed=true|false` (false: no release, build instead)
#   scripts/action.sh install      cargo install --path <action source> --locked (the fallback)
#   scripts/action.sh run          validate (annotations), dry run (step summary), outputs
#
# Inputs arrive as environment variables (action.yml maps them):
#   download: INPUT_VERSION (e.g. 0.1.0 or v0.1.0; empty: the version in the action's
#   Cargo.toml), INPUT_RELEASE_URL (where releases live, as <url>/v<version>/<file>; empty:
#   the action repository's GitHub releases), GITAMP_INSTALL_DIR (where the binary goes;
#   default $RUNNER_TOOL_CACHE/gitamp/<version>/bin).
#   run: INPUT_PATH (default .), INPUT_FORMAT (plan format for the job log: text|json|markdown,
#   default text), INPUT_BASE_REF (branch to compare with, e.g. main; empty skips --base),
#   INPUT_SERVER (status API URL, optional), INPUT_FAIL_ON_WARNINGS (true|false),
#   GITAMP_API_TOKEN (token for INPUT_SERVER, optional), GITAMP_OTELCOL (a collector binary that
#   every rendered configuration must also pass; `gitamp validate` reads it; empty skips it).
# Outputs (to $GITHUB_OUTPUT): valid, warnings, changes-pending, changed-configurations
# (comma-separated names), affected-agents (agents that would be pushed or wait for a rollout).
# Exit status of `run`: 1 when the repository is invalid (or has warnings with
# INPUT_FAIL_ON_WARNINGS=true), 2 when a step could not run; pending changes are not a failure.
set -euo pipefail

die() {
    echo "::error title=gitamp action::$*"
    exit 2
}

output() {
    if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
        printf '%s=%s\n' "$1" "$2" >>"$GITHUB_OUTPUT"
    fi
    echo "output $1=$2" >&2
}

summary() {
    if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
        cat >>"$GITHUB_STEP_SUMMARY"
    else
        cat >/dev/null
    fi
}

cmd_has_gitamp() {
    if command -v gitamp >/dev/null 2>&1; then
        output found true
    else
        output found false
    fi
    # hashFiles() only sees the workspace, and the action's source lives outside it.
    local src key
    src="$(action_source)"
    key="$(cd "$src" && find Cargo.toml Cargo.lock build.rs src crates proto schemas example-repo \
        -type f -not -path '*/target/*' 2>/dev/null | LC_ALL=C sort | xargs cat 2>/dev/null \
        | { sha256sum 2>/dev/null || shasum -a 256; } | cut -c1-16)"
    output source-key "$key"
}

action_source() {
    echo "${GITHUB_ACTION_PATH:-$(cd "$(dirname "$0")/.." && pwd)}"
}

# The version to download: INPUT_VERSION (a leading `v` allowed), else the action's own, from
# its Cargo.toml (the action at tag v0.1.0 downloads gitamp 0.1.0). Sets `version` (not printed:
# a die in a command substitution would swallow its message).
release_version() {
    local v="${INPUT_VERSION:-}"
    if [[ -z "$v" ]]; then
        v="$(awk '/^\[workspace\.package\]/ { s = 1; next } /^\[/ { s = 0 }
            s && /^version *=/ { gsub(/.*= *"|".*/, ""); print; exit }' "$(action_source)/Cargo.toml")"
        [[ -n "$v" ]] || die "cannot read the action's version from $(action_source)/Cargo.toml; set the version input"
    fi
    v="${v#v}"
    [[ "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] \
        || die "version input '${INPUT_VERSION:-}' is not a release version like 0.1.0 or v0.1.0"
    version="$v"
}

# GET $1 into $2; prints the HTTP status (000: no answer). curl retries transient failures.
http_get() {
    curl --silent --show-error --location --retry 3 --connect-timeout 20 \
        --output "$2" --write-out '%{http_code}' "$1" || true
}

# A release binary when one matches: `installed=false` (and a notice saying why) sends the
# workflow to the build steps; a release that exists but does not verify stops the job.
cmd_download() {
    local version os arch
    release_version
    os="${RUNNER_OS:-$(uname -s)}"
    arch="${RUNNER_ARCH:-$(uname -m)}"
    if [[ "$os" != Linux || ("$arch" != X64 && "$arch" != x86_64) ]]; then
        echo "::notice title=gitamp install::no release build for $os/$arch: building gitamp $version from source"
        output installed false
        return 0
    fi
    local base="${INPUT_RELEASE_URL:-}"
    if [[ -z "$base" ]]; then
        local repo="${GITAMP_ACTION_REPOSITORY:-${GITHUB_ACTION_REPOSITORY:-}}"
        if [[ -z "$repo" ]]; then
            echo "::notice title=gitamp install::cannot tell which repository the action came from (set release-url): building gitamp $version from source"
            output installed false
            return 0
        fi
        base="${GITHUB_SERVER_URL:-https://github.com}/$repo/releases/download"
    fi
    command -v curl >/dev/null 2>&1 || die "curl is not installed (needed to download the release)"
    local name="gitamp-$version-x86_64-unknown-linux-gnu"
    local url="${base%/}/v$version"
    local code
    # Global and removed on EXIT: a die inside this function would skip a RETURN trap.
    tmp="$(mktemp -d)"
    trap 'rm -rf "${tmp:-}"' EXIT

    code="$(http_get "$url/$name.tar.gz" "$tmp/$name.tar.gz")"
    if [[ "$code" == 404 ]]; then
        echo "::notice title=gitamp install::no release $name.tar.gz at $url (HTTP 404): building gitamp $version from source"
        output installed false
        return 0
    fi
    [[ "$code" == 200 ]] || die "downloading $url/$name.tar.gz failed (HTTP $code)"
    # From here on the release exists: anything that does not verify is an error, never a
    # quiet fallback to a build.
    code="$(http_get "$url/SHA256SUMS" "$tmp/SHA256SUMS")"
    [[ "$code" == 200 ]] || die "release v$version has $name.tar.gz but its SHA256SUMS could not be downloaded (HTTP $code); not installing an unverified binary"
    local want have
    want="$(awk -v f="$name.tar.gz" '$2 == f || $2 == "*" f { print $1; exit }' "$tmp/SHA256SUMS")"
    [[ -n "$want" ]] || die "SHA256SUMS of release v$version has no line for $name.tar.gz; not installing an unverified binary"
    have="$(sha256sum "$tmp/$name.tar.gz" | cut -d' ' -f1)"
    [[ "$want" == "$have" ]] \
        || die "checksum mismatch for $url/$name.tar.gz: SHA256SUMS says $want, the download is $have; not installing it"

    tar -xzf "$tmp/$name.tar.gz" -C "$tmp" "$name/gitamp" \
        || die "$name.tar.gz from $url has no $name/gitamp"
    local dir="${GITAMP_INSTALL_DIR:-${RUNNER_TOOL_CACHE:-$HOME/.cache}/gitamp/$version/bin}"
    mkdir -p "$dir"
    install -m 0755 "$tmp/$name/gitamp" "$dir/gitamp"
    local says
    says="$("$dir/gitamp" --version 2>&1)" \
        || die "the release binary does not run on this runner ($says); its glibc floor is in the README's Install section"
    [[ "$says" == "gitamp $version "* ]] || die "the release binary of v$version says '$says'"
    if [[ -n "${GITHUB_PATH:-}" ]]; then
        echo "$dir" >>"$GITHUB_PATH"
    fi
    echo "::notice title=gitamp install::downloaded $says from $url (sha256 verified) into $dir"
    output installed true
    output path "$dir/gitamp"
}

# Always builds: the step runs only when gitamp was not on PATH, and with the cached target
# folder (CARGO_TARGET_DIR) an unchanged source rebuilds in seconds.
cmd_install() {
    local src
    src="$(action_source)"
    command -v cargo >/dev/null 2>&1 || die "cargo is not installed; add dtolnay/rust-toolchain before this action"
    cargo install --path "$src" --locked --force --root "${CARGO_HOME:-$HOME/.cargo}" \
        || die "building gitamp from $src failed"
}

cmd_run() {
    command -v gitamp >/dev/null 2>&1 || die "gitamp is not on PATH"
    command -v jq >/dev/null 2>&1 || die "jq is not installed"
    if [[ -n "${GITHUB_WORKSPACE:-}" ]]; then
        cd "$GITHUB_WORKSPACE"
    fi
    local path="${INPUT_PATH:-.}"
    local format="${INPUT_FORMAT:-text}"
    local base="${INPUT_BASE_REF:-}"
    local server="${INPUT_SERVER:-}"
    local fail_on_warnings="${INPUT_FAIL_ON_WARNINGS:-false}"
    local tmp
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN

    # 1. Validate: workflow-command annotations on the PR's lines (stdout is the job log).
    local rc=0
    gitamp validate --format github "$path" || rc=$?
    [[ $rc -le 1 ]] || die "gitamp validate could not run (exit $rc)"
    local valid=true
    [[ $rc -eq 0 ]] || valid=false
    gitamp validate --format json "$path" >"$tmp/validate.json" || true
    local warnings
    warnings="$(jq -r '.warnings // 0' "$tmp/validate.json" 2>/dev/null || echo 0)"
    output valid "$valid"
    output warnings "$warnings"

    # 2. The base revision, fetched shallowly when the checkout does not have it.
    local args=()
    if [[ -n "$base" ]]; then
        local rev="origin/$base"
        if ! git rev-parse --verify --quiet "$rev^{commit}" >/dev/null; then
            git fetch --no-tags --depth=1 origin "+refs/heads/$base:refs/remotes/origin/$base" \
                || die "cannot fetch the base branch $base"
        fi
        args+=(--base "$rev")
    fi
    if [[ -n "$server" ]]; then
        args+=(--server "$server")
    fi

    # 3. The dry run: markdown to the step summary, json for the outputs, `format` to the log.
    local changes=false configs="" agents=0
    if [[ ${#args[@]} -eq 0 ]]; then
        echo "::notice title=gitamp dry run::no base-ref and no server: nothing to compare with, dry run skipped"
    else
        rc=0
        gitamp reconcile --dry-run "$path" "${args[@]}" --format markdown >"$tmp/plan.md" || rc=$?
        [[ $rc -eq 0 || $rc -eq 1 || $rc -eq 3 ]] || die "gitamp reconcile --dry-run failed (exit $rc)"
        summary <"$tmp/plan.md"
        if [[ "$valid" == true ]]; then
            rc=0
            gitamp reconcile --dry-run "$path" "${args[@]}" --format json >"$tmp/plan.json" 2>/dev/null || rc=$?
            [[ $rc -eq 0 || $rc -eq 3 ]] || die "gitamp reconcile --dry-run --format json failed (exit $rc)"
            changes="$(jq -r '.changes_pending' "$tmp/plan.json")"
            configs="$(jq -r '[.configurations[] | select((.change // "unchanged") != "unchanged" or (.agents | length) > 0) | .name] | join(",")' "$tmp/plan.json")"
            agents="$(jq -r '.summary.agents_to_update' "$tmp/plan.json")"
            if [[ "$format" != markdown ]]; then
                gitamp reconcile --dry-run "$path" "${args[@]}" --format "$format" || true
            else
                cat "$tmp/plan.md"
            fi
        fi
    fi
    if [[ "$valid" != true && ${#args[@]} -eq 0 ]]; then
        {
            echo "## gitamp: invalid repository"
            echo
            echo '```'
            gitamp validate "$path" || true
            echo '```'
        } | summary
    fi
    output changes-pending "$changes"
    output changed-configurations "$configs"
    output affected-agents "$agents"

    if [[ "$valid" != true ]]; then
        echo "::error title=gitamp::the repository at $path is invalid; see the annotations"
        return 1
    fi
    if [[ "$fail_on_warnings" == true && "$warnings" != 0 ]]; then
        echo "::error title=gitamp::$warnings warning(s) and fail-on-warnings is set"
        return 1
    fi
    return 0
}

case "${1:-run}" in
has-gitamp) cmd_has_gitamp ;;
download) cmd_download ;;
install) cmd_install ;;
run) cmd_run ;;
*) die "unknown step ${1}; use has-gitamp, download, install or run" ;;
esac
