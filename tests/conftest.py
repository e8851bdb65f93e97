import json
from pathlib import Path

import pytest
import torch

from calibration_figures import plausible_figures
from nncost.hardware import calibration

REAL_HOME = Path.home()  # read at import, before any test points HOME elsewhere


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables are laid out for the terminal's width: every test sees the same 120 columns."""
    monkeypatch.setenv("COLUMNS", "120")


@pytest.fixture(scope="session")
def real_home() -> Path:
    """The user's home, as it was before any test ran."""
    return REAL_HOME


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One temporary home for the whole session, its nncost cache holding a fabricated ``cpu``
    calibration of this host (plausible, idle, measured now): the tests that estimate time on the
    ``cpu`` read it instead of each measuring the machine, so they are fast and do not depend on
    the load.  tests/test_hardware.py calibrates for real, in a cache of its own."""
    home = tmp_path_factory.mktemp("home")
    cache = home / ".cache" / "nncost"
    cache.mkdir(parents=True)
    record = calibration._record(plausible_figures(), 0.0, 0.0, 1)
    (cache / calibration.CACHE_FILE).write_text(json.dumps({calibration.cache_key(): record}))
    return home


@pytest.fixture(autouse=True)
def _no_writes_outside_tmp(session_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs with HOME and nncost's cache in a temporary directory, so that nothing it
    does (a calibration, a cache, a library's config) lands in the user's home."""
    monkeypatch.setenv("HOME", str(session_home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(session_home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(session_home / ".config"))
    monkeypatch.setenv("NNCOST_CACHE_DIR", str(session_home / ".cache" / "nncost"))
    return session_home
