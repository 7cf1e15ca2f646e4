#!/usr/bin/env bash
# Mutation testing with cargo-mutants (`cargo install cargo-mutants --locked`).
# Too slow for CI: docs/mutants.md says how long a run takes, when it last
# ran, what it found, and which surviving mutants are equivalent (and why).
#
#   scripts/mutants.sh                  the policy, the configuration, the cache
#   scripts/mutants.sh --value-model    the value model and the container's validation
#   scripts/mutants.sh --all            both, one after the other
#
# Anything after the stage goes to cargo-mutants before its `--` (for example
# `-j 1`, `-F 'step_auto'`, `--in-place` in a committed scratch copy). Each
# stage writes target/mutants/<stage>/mutants.out and prints, per file, the
# caught, missed, unviable and timed-out mutants; the exit status is 0 only
# when no stage has a missed or timed-out mutant.
set -euo pipefail
cd "$(dirname "$0")/.."

stages=(policy)
case "${1:-}" in
--value-model) stages=(value-model); shift ;;
--all) stages=(policy value-model); shift ;;
--policy) shift ;;
esac
if ! command -v cargo-mutants >/dev/null; then
    echo "cargo-mutants is not installed: cargo install cargo-mutants --locked" >&2
    exit 2
fi
# Mutants are built in the dev profile; without debug info each rebuild links faster.
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-0}

# Each stage: the files it mutates and the tests (the modules' own, the fastest) it runs.
files_policy=(--file src/policy.rs --file src/config.rs --file src/cache.rs)
tests_policy=(--lib --test policy --test config --test library --test cache)
files_value_model=(--file src/codec/layout.rs --file src/format/mod.rs)
tests_value_model=(--test layout --test validation)

count() { # FILE: its lines, 0 when it is absent
    if [[ -f $1 ]]; then grep -c . "$1" || true; else echo 0; fi
}

# Parallel jobs (each in its own copy of the tree); `--in-place` runs one at a time.
jobs=(-j "${MUTANTS_JOBS:-2}")
if [[ " $* " == *" --in-place "* ]]; then jobs=(); fi

status=0
for stage in "${stages[@]}"; do
    key=${stage//-/_}
    files="files_${key}[@]"
    tests="tests_${key}[@]"
    out=target/mutants/$stage
    mkdir -p "$out"
    start=$(date +%s)
    rc=0
    cargo mutants --no-shuffle "${jobs[@]}" -o "$out" "${!files}" "$@" -- "${!tests}" || rc=$?
    secs=$(($(date +%s) - start))
    dir=$out/mutants.out
    echo
    echo "== $stage: $((secs / 60)) min $((secs % 60)) s, cargo-mutants exit $rc"
    printf '%-24s %7s %7s %9s %8s\n' file caught missed unviable timeout
    for f in $(cut -d: -f1 "$dir"/{caught,missed,unviable,timeout}.txt 2>/dev/null | sort -u); do
        n() { if [[ -f $dir/$1.txt ]]; then grep -c "^$f:" "$dir/$1.txt" || true; else echo 0; fi; }
        printf '%-24s %7s %7s %9s %8s\n' "$f" "$(n caught)" "$(n missed)" "$(n unviable)" "$(n timeout)"
    done
    printf '%-24s %7s %7s %9s %8s\n' total "$(count "$dir/caught.txt")" "$(count "$dir/missed.txt")" \
        "$(count "$dir/unviable.txt")" "$(count "$dir/timeout.txt")"
    if [[ -s $dir/missed.txt ]]; then
        echo "missed (each must be caught by a test or explained in docs/mutants.md):"
        sed 's/^/  /' "$dir/missed.txt"
    fi
    if [[ $rc -ne 0 ]]; then status=1; fi
done
exit $status
