"""Every relative link and image in README.md and docs/*.md points to a file that exists (and, into a Markdown
file, to a heading it has): a moved doc or a deleted picture fails here, naming the dead link."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def dead_links(doc: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    dead = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:: not a file here
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            dead.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            dead.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    return dead


def test_docs_are_found():
    assert {p.name for p in DOCS} >= {"README.md", "cli.md", "results.md", "reproductions.md"}


def test_no_dead_relative_links_or_images():
    dead = [line for doc in DOCS for line in dead_links(doc)]
    assert not dead, "dead links:\n" + "\n".join(dead)


def test_every_doc_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in DOCS[1:]:
        assert f"docs/{doc.name}" in readme, f"docs/{doc.name} is not linked from README.md"
