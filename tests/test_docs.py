"""The documentation stays true to the code (issue 22.4): every command line shown in README.md and docs/*.md
that starts with `python -m harness` parses with the CLI's own parser, every flag of every subcommand is in the
command reference, and every relative link points to a file (and heading) that exists."""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from harness.cli import parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAM = "python -m harness"
SHELL_OPERATORS = ("&&", "||", "|", ";", ">", ">>", "<", "2>", "&")

# Command lines shown on purpose although they do not parse (a placeholder, say), each with its reason; a line
# listed here must still appear in the docs. None at present: write commands with concrete values instead.
SKIP: dict[str, str] = {}


def _split(text: str) -> tuple[list[tuple[int, str]], str]:
    """The code lines of a markdown text (fenced blocks, and indented blocks after a blank line) with their line
    numbers, and the prose with code lines blanked (line numbers kept)."""
    code, prose = [], []
    fenced, indented, previous_blank = False, False, True
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
            continue
        indented = (line.startswith("    ") and (indented or previous_blank)
                    and not line.lstrip().startswith(("- ", "* ", "| "))) or (indented and not line.strip())
        if fenced or (indented and line.strip()):
            code.append((number, line))
            prose.append("")
        else:
            prose.append(line)
        previous_blank = not line.strip()
    return code, "\n".join(prose)


def _joined(code: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Code lines with backslash-continued lines joined, numbered by their first line."""
    out, pending, start = [], "", 0
    for number, line in code:
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += (line.strip() if pending else line.rstrip())[:-1].rstrip() + " "
            continue
        out.append((start, pending + line.lstrip() if pending else line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _inline_code(prose: str) -> list[tuple[int, str]]:
    """Inline code spans of the prose (which may wrap over lines), numbered by the line they start on."""
    spans = []
    for match in re.finditer(r"(`+)(.+?)\1", prose, flags=re.S):
        spans.append((prose.count("\n", 0, match.start()) + 1, " ".join(match.group(2).split())))
    return spans


def shown_commands(path: Path) -> list[tuple[int, str]]:
    """Every `python -m harness ...` command line of a markdown file: (line number, the command from the program
    on, without a trailing comment or what follows a shell operator)."""
    code, prose = _split(path.read_text(encoding="utf-8"))
    found = []
    for number, line in _joined(code):
        quoted = [span for _, span in _inline_code(line) if PROGRAM in span]  # in a comment: `python -m harness ...`
        for text in quoted or [line]:
            found += [(number, text[match.start():]) for match in re.finditer(re.escape(PROGRAM), text)]
    for number, span in _inline_code(prose):
        found += [(number, span[match.start():]) for match in re.finditer(re.escape(PROGRAM), span)]
    return found


def _arguments(command: str) -> list[str]:
    tokens = shlex.split(command, comments=True)
    for i, token in enumerate(tokens):
        if token in SHELL_OPERATORS or token.startswith((">", "2>", "|")):
            tokens = tokens[:i]
            break
    return tokens[3:]


def _parse_error(arguments: list[str]) -> str | None:
    """None when the CLI parses the arguments (or they ask for --help/--version), else argparse's message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser().parse_args(arguments)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else f"exit {exc.code}"
    return None


def test_the_docs_show_commands_and_find_them():
    commands = {path.name: shown_commands(path) for path in DOCS}
    assert len(DOCS) >= 8, "README.md and the pages under docs/"
    assert sum(map(len, commands.values())) >= 40
    readme = [c for _, c in commands["README.md"]]
    assert "python -m harness run --strategy ed_es --n 2,5,10" in readme  # the set-up line, after `&&`
    assert any(c.startswith("python -m harness run --data /data/my7T --init checkpoint:models/acdc.pt,imagenet,random "
                            "--strategy ed_es,all_frames") for _, c in commands["source-models.md"])  # a joined one


def test_every_command_shown_parses():
    problems, shown = [], set()
    for path in DOCS:
        for number, command in shown_commands(path):
            shown.add(command)
            if command in SKIP:
                continue
            try:
                arguments = _arguments(command)
            except ValueError as exc:  # unbalanced quotes
                problems.append(f"{path.relative_to(ROOT)}:{number}: {command!r}: {exc}")
                continue
            error = _parse_error(arguments)
            if error:
                problems.append(f"{path.relative_to(ROOT)}:{number}: {command!r}: {error}")
    assert not problems, "commands in the docs that the CLI does not accept:\n" + "\n".join(problems)
    assert not set(SKIP) - shown, f"SKIP lists lines no page shows any more: {sorted(set(SKIP) - shown)}"


def test_a_made_up_flag_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Run\n\n```\npython -m harness run --strategy ed_es \\\n    --n 2,5 --no-such-flag 3\n```\n\n"
                    "or `python -m harness report studies/default --margn 0.02`.\n", encoding="utf-8")
    found = shown_commands(page)
    assert [n for n, _ in found] == [4, 8]
    assert all(_parse_error(_arguments(c)) for _, c in found)
    assert "--no-such-flag" in _parse_error(_arguments(found[0][1]))


def _flags(p: argparse.ArgumentParser, name: str = "") -> dict[str, list[str]]:
    """Per command ("" for the program, "data inspect" for a nested one): its visible option strings."""
    out = {name: [s for a in p._actions for s in a.option_strings if a.help != argparse.SUPPRESS]}
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                out.update(_flags(child, f"{name} {sub}".strip()))
    return out


def _leaf_commands(p: argparse.ArgumentParser, name: str = "") -> list[str]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [name]
    return [leaf for a in subs for sub, child in a.choices.items() for leaf in _leaf_commands(child, f"{name} {sub}".strip())]


def test_the_command_reference_names_every_flag():
    page = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    missing = [f"{command or 'harness'}: {flag}" for command, flags in _flags(parser()).items() for flag in flags
               if flag not in ("-h", "--help") and not re.search(rf"`{re.escape(flag)}[` ,]", page)]
    assert not missing, "flags docs/commands.md does not list (regenerate its tables):\n" + "\n".join(missing)
    commands = _leaf_commands(parser())
    assert "run" in commands and "data inspect" in commands
    for command in commands:
        assert f"\n## {command}\n" in page, f"docs/commands.md has no section '## {command}'"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    code, prose = _split(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for line in prose.splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = _slug(match.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_that_exist(path):
    _, prose = _split(path.read_text(encoding="utf-8"))
    links = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)
    broken = []
    for target in links:
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif not destination.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
            broken.append(f"{target}: no heading '#{anchor}' in {destination.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)
