"""Makes roles/molecule_kv.py importable from every role's testinfra tests (pytest loads this conftest)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
