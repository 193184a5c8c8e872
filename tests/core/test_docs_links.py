"""The README and docs/ stay true to the tree: every relative link (and its #anchor) points at
something that exists, and the README's stage table says what flows/registry.py says. Reads
files only (the registry through its syntax tree): no imports of flows/, no network."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCED_CODE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text outside code: a `[x](y)` inside a code span or block is no link."""
    return INLINE_CODE.sub("", FENCED_CODE.sub("", text))


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces -> -."""
    headings = HEADING.findall(FENCED_CODE.sub("", path.read_text(encoding="utf-8")))
    return {re.sub(r"[^\w\- ]", "", h.replace("`", "").lower()).replace(" ", "-") for h in headings}


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """`page: target (why)` for each relative link that leads nowhere (page shown from root)."""
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{page.relative_to(root)}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
            broken.append(f"{page.relative_to(root)}: {target} (no such heading)")
    return broken


def test_every_relative_link_in_the_readme_and_docs_points_at_an_existing_file() -> None:
    pages = doc_pages()
    assert len(pages) >= 8  # README plus the docs pages it links
    links = sum(len(LINK.findall(prose(p.read_text(encoding="utf-8")))) for p in pages)
    assert links > 30  # the scan sees the links it guards
    assert [b for page in pages for b in broken_links(page)] == []


def test_a_planted_broken_link_and_a_wrong_anchor_are_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## The `local` profile\n")
    page.write_text(
        "# Page\n[ok](other.md#the-local-profile) [self](#page) `[code](nowhere.md)`\n"
        "[gone](missing.md) [bad anchor](other.md#nothing) [web](https://example.com/x)\n"
    )
    found = [b.split(": ", 1)[1] for b in broken_links(page, tmp_path)]
    assert found == ["missing.md (no such file)", "other.md#nothing (no such heading)"]


def registry_stages() -> list[tuple[str, str, str]]:
    """(command, reads, writes) of every StageDef in flows/registry.py's STAGES, read from its
    syntax tree; reads and writes as the README writes them ("a, b")."""
    tree = ast.parse((ROOT / "flows" / "registry.py").read_text(encoding="utf-8"))
    stages = next(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "STAGES"
    )
    assert isinstance(stages, ast.Tuple)
    rows = []
    for call in stages.elts:
        assert isinstance(call, ast.Call)
        command, reads, writes = (ast.literal_eval(arg) for arg in call.args[1:4])
        rows.append((command, ", ".join(reads), ", ".join(writes)))
    return rows


def readme_stage_table() -> list[tuple[str, str, str]]:
    """(command, reads, writes) of each row of the README's table under `## Stages`."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Stages\n", 1)[1]
    rows = []
    for line in section.split("\n## ", 1)[0].splitlines():
        cells = [c.strip().replace("`", "") for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("toucan "):
            rows.append((cells[1].removeprefix("toucan "), cells[2], cells[3]))
    return rows


def test_the_readme_stage_table_matches_the_registry_in_order() -> None:
    stages = registry_stages()
    assert len(stages) >= 10
    assert readme_stage_table() == stages
