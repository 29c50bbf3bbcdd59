"""docs/cli.md is what picollm/cli/docs.py writes from the commands' parsers now: the flag reference cannot go
stale, and every command and subcommand is in it."""

from __future__ import annotations

from picollm.cli import docs
from picollm.cli.main import COMMANDS


def test_docs_cli_md_is_current():
    written = docs.CLI_DOC.read_text(encoding="utf-8") if docs.CLI_DOC.exists() else ""
    assert written == docs.render(), f"docs/cli.md is out of date: run `{docs.REGENERATE}` and commit it"


def test_every_command_and_subcommand_has_a_section():
    text = docs.render()
    for name in COMMANDS:
        assert f"## `picollm {name}`\n" in text, name
        assert f"usage: picollm {name}" in text, name
    for name, subs in docs.SUBCOMMANDS.items():
        for sub in subs:
            assert f"usage: picollm {name} {sub}" in text, (name, sub)


def test_help_does_not_depend_on_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    narrow = docs.help_text(["train"])
    monkeypatch.setenv("COLUMNS", "200")
    assert docs.help_text(["train"]) == narrow
    assert max(map(len, docs.help_text(["train"]).splitlines())) <= int(docs.HELP_COLUMNS)
