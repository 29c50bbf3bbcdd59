"""Every command in README.md's bash blocks either runs here (the quick ones: help, a dry run) or is skipped for
a stated reason (litgpt's test_readme): a command the README shows cannot silently stop working."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: (pattern a command matches, None when it runs here, or why it does not), first match wins
RULES: list[tuple[str, str | None]] = [
    (r"^make (demo|test)$", "the demo trains for minutes, and make test is this suite"),
    (r"^(RAY_AUTH_MODE=\S+ )?ray ", "needs a Ray cluster"),
    (r"^RAY_AUTH_MODE=", "needs a Ray cluster"),
    (r"<run>", "names a run of the reader's"),
    (r"my_space\.yaml|path/to/", "names a file of the reader's"),
    (r"^picollm playground", "a server that runs until it is stopped"),
    (r"^picollm( \S+)? --help$", None),
    (r"^picollm batch .*--dry_run", None),
    (r"^picollm (train|batch|pipeline)\b", "trains runs for minutes"),
    (r"^picollm (analyze-all|summarize)\b", "needs trained and analysed runs"),
]


def readme_commands() -> list[str]:
    """The commands of README.md's ```bash blocks: comments dropped, continued lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(" ".join(command.split()))
    return commands


def rule_for(command: str) -> tuple[str, str | None] | None:
    return next(((pattern, why) for pattern, why in RULES if re.search(pattern, command)), None)


COMMANDS = readme_commands()
RUN = [c for c in COMMANDS if (rule := rule_for(c)) and rule[1] is None]


def test_every_readme_command_is_run_or_skipped_for_a_reason():
    assert COMMANDS, "no ```bash block found in README.md"
    unclassified = [c for c in COMMANDS if rule_for(c) is None]
    assert not unclassified, f"README commands neither run nor skipped with a reason in tests/test_readme.py: " \
                             f"{unclassified}"
    assert any("--help" in c for c in RUN) and any("--dry_run" in c for c in RUN), RUN


@pytest.mark.parametrize("command", RUN)
def test_readme_command_runs(command, tmp_path):
    argv = shlex.split(command)
    assert argv[0] == "picollm", command
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # in a scratch folder, so that a dry run's default folders are not the checkout's
    proc = subprocess.run([sys.executable, "-m", "picollm", *argv[1:]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{proc.stderr}"
    assert proc.stdout.strip(), f"`{command}` printed nothing"
