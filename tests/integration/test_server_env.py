"""deployments/server.env: loadable by the shell, and every line is a Prefect server setting
that takes the file's value (Prefect ignores unknown variables, so a typo would go unseen)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SERVER_ENV = Path(__file__).resolve().parents[2] / "deployments" / "server.env"

_READ_SETTINGS = """
import json, sys
import prefect.settings as ps
out = {}
for key in sys.argv[1:]:
    setting = getattr(ps, key, None)
    out[key] = None if setting is None else [str(setting.value()), str(setting.default())]
print(json.dumps(out))
"""


def _assignments() -> dict[str, str]:
    lines = SERVER_ENV.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_sourcing_server_env_changes_prefect_server_settings_from_their_defaults() -> None:
    expected = _assignments()
    assert expected and all(k.startswith("PREFECT_SERVER_") for k in expected)
    script = (f'set -a; . "{SERVER_ENV}"; set +a; '
              f'exec "{sys.executable}" -c "$0" "$@"')
    done = subprocess.run(["sh", "-c", script, _READ_SETTINGS, *expected], capture_output=True,
                          text=True, check=True, timeout=120)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(seen[k] is not None for k in expected), seen  # every name is a real setting
    assert {k: float(seen[k][0]) for k in expected} == {k: float(v) for k, v in expected.items()}
    assert all(float(value) != float(default) for value, default in seen.values())
