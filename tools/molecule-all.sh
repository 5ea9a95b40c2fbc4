#!/usr/bin/env bash
# Runs every role's Molecule scenarios on lab hosts. Each scenario brings up and removes a lab of its own
# (own lab_name, bridge, subnet), so scenarios run side by side: MOLECULE_JOBS at a time (default 3).
# Usage: tools/molecule-all.sh [role ...]     logs: results/molecule/<role>-<scenario>.log
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$top/.venv/bin:$PATH" ANSIBLE_CONFIG="$top/ansible.cfg"
jobs=${MOLECULE_JOBS:-3}
logs="$top/results/molecule"
mkdir -p "$logs"
roles=("$@")
[ ${#roles[@]} -gt 0 ] || mapfile -t roles < <(cd "$top/roles" && ls -d */molecule 2>/dev/null | cut -d/ -f1 | sort -u)
scenarios=()
for role in "${roles[@]}"; do
  for dir in "$top/roles/$role"/molecule/*/; do
    [ -f "$dir/molecule.yml" ] && scenarios+=("$role/$(basename "$dir")")
  done
done
[ ${#scenarios[@]} -gt 0 ] || { echo "molecule: no scenarios found for: ${roles[*]}" >&2; exit 1; }

run_one() {
  local role=${1%/*} scenario=${1#*/} log="$logs/${1/\//-}.log" start=$SECONDS
  if (cd "$top/roles/$role" && molecule test -s "$scenario") > "$log" 2>&1; then
    echo "molecule: $1 passed in $((SECONDS - start)) s"
  else
    echo "molecule: $1 FAILED after $((SECONDS - start)) s; last lines of $log:"
    tail -n 40 "$log" | sed 's/^/    /'
    return 1
  fi
}
export -f run_one
export top logs
if printf '%s\n' "${scenarios[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {}; then
  echo "molecule: all ${#scenarios[@]} scenarios passed"
else
  echo "molecule: some scenarios failed (logs in results/molecule/)" >&2
  exit 1
fi
