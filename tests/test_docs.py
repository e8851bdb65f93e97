"""The docs say what the code does."""

from __future__ import annotations

from pathlib import Path

from nncost.rules.docs import rules_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"
README = Path(__file__).resolve().parents[1] / "README.md"


def test_rules_table_is_generated_from_the_registry() -> None:
    assert (DOCS / "rules.md").read_text() == rules_markdown(), "run: python -m nncost.rules.docs > docs/rules.md"


def test_readme_test_command_is_the_one_ci_runs() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("TEST_COMMAND="))
    assert command.split("=", 1)[1].strip("'\"") in README.read_text()
