"""Citations point inside the repository, at files and sections that exist.

The contract and the invariants live in docs/api.md and docs/architecture.md;
code and docs cite them by path, as ``(docs/architecture.md, "Known pitfalls")``
or ``(docs/architecture.md, invariant 6)``. A citation of a file the
repository does not have (a bare spec name, a path outside the checkout) is
one nobody can follow.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: ``docs/<path>.md``, optionally followed by ``, "Section"``.
DOCS_PATH = re.compile(r'(?<![\w/.-])(docs/[\w./-]+?\.md)(?:, "([^"]+)")?')
#: A Markdown link to a local .md file: ``[text](target.md#anchor)``.
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\((?!https?:)([^)#\s]+\.md)(?:#[^)]*)?\)")
#: The names of the external spec files, cited without the repository's docs/ in front.
BARE_SPEC = re.compile(r"(?<![\w/.-])(?:design|api)\.md")
#: Paths that lead out of the checkout to where the team's files live.
OUTSIDE = ("../" + "shared", "/work/" + "shared")


def cited_files() -> list[Path]:
    """Return the repository's tracked and new .py and .md files."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py", "*.md"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def headings(path: Path) -> list[str]:
    """Return the text of every Markdown heading of ``path``."""
    return [
        line.lstrip("#").strip()
        for line in path.read_text().splitlines()
        if re.match(r"#{1,6} ", line)
    ]


FILES = cited_files()


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_citations_name_files_and_sections_that_exist(path: Path) -> None:
    text = path.read_text(errors="replace")
    problems = []
    for match in DOCS_PATH.finditer(text):
        cited, section = match.group(1).rstrip("."), match.group(2)
        if section is not None:  # a section name may wrap across lines
            section = " ".join(section.split())
        target = ROOT / cited
        if not target.is_file():
            problems.append(f"{cited}: no such file")
        elif section is not None and not any(h.startswith(section) for h in headings(target)):
            problems.append(f'{cited}, "{section}": no such section')
    if path.suffix == ".md":
        for match in MARKDOWN_LINK.finditer(text):
            if not (path.parent / match.group(1)).resolve().is_file():
                problems.append(f"link to {match.group(1)}: no such file")
    # A spec name is allowed only as a Markdown link that resolves (docs/ link to siblings).
    unlinked = MARKDOWN_LINK.sub("", text) if path.suffix == ".md" else text
    for match in BARE_SPEC.finditer(unlinked):
        line = unlinked.count("\n", 0, match.start()) + 1
        problems.append(f"line {line}: {match.group(0)} without docs/ in front")
    problems += [f"mentions {outside}" for outside in OUTSIDE if outside in text]
    assert problems == []
