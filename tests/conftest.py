import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables are laid out for the terminal's width: every test sees the same 120 columns."""
    monkeypatch.setenv("COLUMNS", "120")
