#!/usr/bin/env bash
# Runs every role's Molecule scenarios on lab hosts. Each scenario brings up and removes a lab of its own
# (own lab_name, bridge, subnet), so scenarios run side by side: MOLECULE_JOBS at a time (default 3).
# With WITH_LAB_TESTS=1 the modules of tests/lab (also one lab each) join the same queue, longest first,
# so their waits (failovers, boots) overlap with other jobs' work.
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
if [ "${WITH_LAB_TESTS:-0}" = 1 ]; then
  lab_tests=()
  for module in "$top"/tests/lab/test_*.py; do lab_tests+=("pytest/$(basename "$module" .py)"); done
  scenarios=("${lab_tests[@]}" "${scenarios[@]}")
fi

run_one() {
  local role=${1%/*} scenario=${1#*/} log="$logs/${1/\//-}.log" start=$SECONDS
  local dir="$top/roles/$role"
  local -a cmd=(molecule test -s "$scenario")
  # any non-zero exit fails the job, pytest's 5 (the module collected nothing) included: tests/unit/test_layout.py
  # a lab module deploys several hosts inside its first test's fixture: a longer per-test timeout than the default
  if [ "$role" = pytest ]; then cmd=(pytest -q -s -rs -p no:cacheprovider --timeout 2400 "tests/lab/$scenario.py"); dir=$top; fi
  if (cd "$dir" && "${cmd[@]}") > "$log" 2>&1; then
    echo "molecule: $1 passed in $((SECONDS - start)) s"
    # skips must be seen in CI output, not only in the log (e.g. "skipped: no KeyDB source archive")
    if [ "$role" = pytest ]; then grep -E '^SKIPPED' "$log" | sed 's/^/    /' || true; fi
  else
    echo "molecule: $1 FAILED after $((SECONDS - start)) s; last lines of $log:"
    tail -n 40 "$log" | sed 's/^/    /'
    return 1
  fi
}
export -f run_one
export top logs
if printf '%s\n' "${scenarios[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {}; then
  echo "molecule: all ${#scenarios[@]} jobs passed"
else
  echo "molecule: some scenarios failed (logs in results/molecule/)" >&2
  exit 1
fi
