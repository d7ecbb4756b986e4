#!/usr/bin/env bash
# The steps of the gitamp GitHub Action (action.yml), kept in a script so they run the same on a
# laptop and in tests (tests/action.rs): point GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and
# GITHUB_WORKSPACE at temporary files and put `gitamp` on PATH.
#
#   scripts/action.sh has-gitamp   prints `found=true|false` and `source-key` (a hash of the
#                                  action's sources, for the cache key) to $GITHUB_OUTPUT
#   scripts/action.sh install      cargo install --path <action source> --locked
#   scripts/action.sh run          validate (annotations), dry run (step summary), outputs
#
# Inputs arrive as environment variables (action.yml maps them):
#   INPUT_PATH (default .), INPUT_FORMAT (plan format for the job log: text|json|markdown,
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
install) cmd_install ;;
run) cmd_run ;;
*) die "unknown step ${1}; use has-gitamp, install or run" ;;
esac
