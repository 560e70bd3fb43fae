"""The documentation: a short README (issue 22) whose links, and those of every page under docs/, lead somewhere.

- README.md has at most README_MAX_LINES lines;
- its first code block holds the two commands a newcomer runs, `make demo` and `make test`;
- its command table names every sub-command the parser knows (`alexnet.cli.main.build_parser`);
- every relative Markdown link `[text](target)` in README.md and docs/**/*.md resolves to a file or folder
  (relative to the file holding it; web, mail and pure `#anchor` links are not checked, a `#fragment` is dropped);
- every `#anchor` into a Markdown page names one of its headings (GitHub's rule for heading anchors).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 250

# [text](target) and ![alt](target): the target up to the first space or ')' (a "title" after it is allowed).
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")
EXTERNAL = re.compile(r"^(https?:|mailto:)", re.IGNORECASE)


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out: a `[x](y)` shown as
    code is not a link."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, re.sub(r"`[^`]*`", lambda m: " " * len(m.group(0)), line)))
    return lines


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link in ``path``."""
    return [(number, m.group(1)) for number, line in prose_lines(path.read_text(encoding="utf-8"))
            for m in LINK.finditer(line)]


def relative_targets(path: Path) -> list[tuple[int, str, str]]:
    """(line number, target as written, path part) of the links that point into the repository."""
    found = []
    for number, target in links(path):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        found.append((number, target, target.split("#", 1)[0]))
    return found


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file: lower case, punctuation dropped, spaces to
    hyphens, a repeated anchor suffixed -1, -2, ..."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def first_code_block(text: str) -> str:
    m = re.search(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert m, "README.md has no fenced code block"
    return m.group(1)


def command_table_rows(text: str) -> set[str]:
    """The commands named in the first column of the README's command table: rows like
    | `alexnet train` | ... |."""
    return {m.group(1) for m in re.finditer(r"^\|\s*`alexnet ([a-z][\w-]*)[^`]*`\s*\|", text, re.MULTILINE)}


def sub_commands() -> list[str]:
    from alexnet.cli.main import build_parser
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert actions, "build_parser() has no sub-commands"
    return sorted(name for action in actions for name in action.choices)


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, (f"README.md has {n} lines, more than {README_MAX_LINES}: move the detail to a "
                                   f"page under docs/ and link it")


def test_readme_opens_with_make_demo_and_make_test():
    block = first_code_block(README.read_text(encoding="utf-8"))
    missing = [c for c in ("make demo", "make test") if c not in block]
    assert not missing, f"README.md's first code block lacks {missing}:\n{block}"


def test_every_sub_command_is_in_the_readme_command_table():
    rows = command_table_rows(README.read_text(encoding="utf-8"))
    missing = [c for c in sub_commands() if c not in rows]
    assert not missing, (f"sub-commands missing from README.md's command table (a row | `alexnet NAME` | ... |): "
                         f"{missing}")


def test_every_relative_link_resolves():
    broken = []
    for path in markdown_files():
        for number, target, part in relative_targets(path):
            if not part:
                continue
            if not (path.parent / part).exists():
                broken.append(f"{path.relative_to(ROOT)}:{number}: {target}")
    assert not broken, "links to files or folders that do not exist:\n" + "\n".join(broken)


def test_every_anchor_into_a_markdown_page_names_a_heading():
    broken = []
    for path in markdown_files():
        for number, target in links(path):
            if EXTERNAL.match(target) or "#" not in target:
                continue
            part, anchor = target.split("#", 1)
            page = path if not part else path.parent / part
            if page.suffix != ".md" or not page.is_file():
                continue                                   # a missing page is the test above's
            if anchor.lower() not in heading_anchors(page):
                broken.append(f"{path.relative_to(ROOT)}:{number}: {target}")
    assert not broken, "anchors that name no heading of their page:\n" + "\n".join(broken)


def test_the_link_check_sees_a_broken_link(tmp_path):
    """The checks above find what they look for: a page with a broken link, a web link, an anchor, a link shown
    as code and one inside a code block."""
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# There\n\n## A `code` heading: yes\n")
    page.write_text("# Page\n\n[ok](there.md) [ok too](there.md#a-code-heading-yes) [web](https://example.org/x)\n"
                    "[self](#page) ![img](missing.png) `[code](nowhere.md)`\n\n```\n[block](nowhere.md)\n```\n"
                    "[gone](gone/file.md#part)\n")
    assert [t for _, t, _ in relative_targets(page)] == ["there.md", "there.md#a-code-heading-yes", "missing.png",
                                                        "gone/file.md#part"]
    assert [t for _, t, p in relative_targets(page) if not (page.parent / p).exists()] == ["missing.png",
                                                                                          "gone/file.md#part"]
    assert heading_anchors(tmp_path / "there.md") == {"there", "a-code-heading-yes"}
