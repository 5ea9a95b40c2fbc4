#!/usr/bin/env bash
# Runs every role's Molecule scenarios on lab hosts (each scenario brings up and removes a lab of its own).
# Usage: tools/molecule-all.sh [role ...]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$top/.venv/bin:$PATH" ANSIBLE_CONFIG="$top/ansible.cfg"
roles=("$@")
[ ${#roles[@]} -gt 0 ] || mapfile -t roles < <(find "$top/roles" -mindepth 3 -maxdepth 3 -name molecule.yml -path '*/molecule/*' \
  -printf '%h\n' | xargs -n1 dirname | xargs -n1 dirname | xargs -n1 basename | sort -u)
failed=()
for role in "${roles[@]}"; do
  for scenario in "$top/roles/$role"/molecule/*/; do
    name=$(basename "$scenario")
    echo "=== molecule: $role/$name"
    if ! (cd "$top/roles/$role" && molecule test -s "$name"); then
      failed+=("$role/$name")
    fi
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "molecule: failed: ${failed[*]}" >&2
  exit 1
fi
echo "molecule: all scenarios passed (${roles[*]})"
