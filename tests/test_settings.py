"""Configuration refused at start, in one line, by every process (shared/settings.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.settings import Settings
from tests.processes import ROOT, process_env


@pytest.mark.parametrize("module", ["api", "dispatcher", "shared.cli"])
def test_a_key_cache_outliving_the_revocation_marker_is_refused(settings: Settings, module: str) -> None:
    """A key deleted on one process must not live on in another's cache after its revocation marker expired."""
    args = ["migrate"] if module == "shared.cli" else []
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, text=True, capture_output=True,
                            env=process_env(settings, KAIHOOKS_KEY_CACHE_TTL_S="601"), timeout=30, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kaihooks: error: configuration: KAIHOOKS_KEY_CACHE_TTL_S"), lines[0]
    assert "600" in lines[0]


def test_the_key_cache_may_last_as_long_as_the_marker(settings: Settings) -> None:
    base = {"DATABASE_URL": "postgresql://x", "REDIS_URL": "redis://x", "secret_key": settings.secret_key}
    assert Settings(**base, key_cache_ttl_s=600).key_cache_ttl_s == 600  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="KAIHOOKS_KEY_CACHE_TTL_S"):
        Settings(**base, key_cache_ttl_s=600.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("value, fragment", [("10.0.0.0/8, nonsense", "KAIHOOKS_TRUSTED_PROXIES"),
                                             ("10.0.0.0/33", "KAIHOOKS_TRUSTED_PROXIES")])
def test_trusted_proxies_must_be_cidrs(settings: Settings, value: str, fragment: str) -> None:
    result = subprocess.run([sys.executable, "-m", "shared.cli", "migrate"], cwd=ROOT, text=True,
                            capture_output=True, env=process_env(settings, KAIHOOKS_TRUSTED_PROXIES=value),
                            timeout=30, check=False)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr
