#!/usr/bin/env bash
# The host's schema version (PRAGMA user_version) before and after every command, on a copy
# of the database upstream's own code made (../shared/fixtures/upstream-db), and whether the
# file changed. The host refuses a database whose version is above 2.
#
#   scripts/host-version.sh            # builds and uses target/release/speckit-hygiene
#   SPECKIT_BIN=target/debug/speckit-hygiene scripts/host-version.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fixture="${SPECKIT_FIXTURES:-../shared/fixtures}/upstream-db/consensus_artifacts.db"
[ -f "$fixture" ] || { echo "fixture $fixture is missing" >&2; exit 2; }
bin="${SPECKIT_BIN:-}"
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin=target/release/speckit-hygiene
fi
ws=$(mktemp -d)
trap 'rm -rf "$ws"' EXIT
cp "$fixture" "$ws/consensus_artifacts.db"
mkdir -p "$ws/evidence/commands"
printf '| Spec | Status | Owner | Next Action |\n|---|---|---|---|\n' > "$ws/SPEC.md"
for s in 067 070 900 901; do printf '| SPEC-KIT-%s | Done | x | - |\n' "$s" >> "$ws/SPEC.md"; done
printf '| SPEC-KIT-909 | In Progress | x | - |\n' >> "$ws/SPEC.md"
cat > "$ws/speckit.toml" <<TOML
[storage]
database_path = "consensus_artifacts.db"
[evidence]
root = "evidence"
tracker_paths = ["SPEC.md"]
[[spawn.agents]]
name = "echo"
command = "/bin/sh"
args = ["-c", "echo READY; echo done"]
readiness = { line = "READY" }
TOML
db="$ws/consensus_artifacts.db"
version() { python3 -c "import sqlite3,sys; print(sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True).execute('pragma user_version').fetchone()[0])" "$db"; }
digest() { { cat "$db"; cat "$db-wal" 2>/dev/null || true; } | sha256sum | cut -c1-12; }
printf '%-40s %-7s %-7s %-5s %s\n' command before after exit "database (file + WAL)"
while IFS= read -r cmd; do
    b=$(version); d=$(digest)
    set +e; $bin --config "$ws/speckit.toml" $cmd >/dev/null 2>&1; code=$?; set -e
    a=$(version)
    [ "$(digest)" = "$d" ] && changed=unchanged || changed=written
    printf '%-40s %-7s %-7s %-5s %s\n' "$cmd" "$b" "$a" "$code" "$changed"
done <<'CMDS'
check
plugins
jobs
stats
guard SPEC-KIT-900
vacuum --dry-run
cleanup --dry-run
spawn stats
run --once
vacuum --force
spawn --spec SPEC-KIT-909 --stage plan
cleanup --force
restore SPEC-KIT-900
jobs
cleanup --dry-run
CMDS
