"""What `ser demo` tells a new user points at things that exist: README sections, docs pages, its own options."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _readme_headings() -> set[str]:
    return {m.strip() for m in re.findall(r"^#{1,6} (.+)$", (REPO_ROOT / "README.md").read_text(), re.M)}


def test_the_opening_note_names_a_readme_section_that_exists():
    from ser.demo import HONESTY

    (section,) = re.findall(r"section '([^']+)'", HONESTY)
    assert section in _readme_headings(), f"README.md has no section {section!r}"


def test_the_closing_hint_names_files_and_commands_that_exist():
    from ser.cli import build_parser
    from ser.demo import next_steps

    hint = next_steps(Path("model_repository/portable"), Path("model_repository/native"))
    docs = re.findall(r"\b(docs/[\w-]+\.md)\b", hint)
    assert docs and all((REPO_ROOT / d).is_file() for d in docs), hint
    assert "section" not in hint.lower() or any(s in hint for s in _readme_headings())
    for command in re.findall(r"`(ser [^`]+)`", hint):
        build_parser().parse_args(command.split()[1:])  # exits (fails the test) on an unknown option
    assert "source .venv/bin/activate" in hint or ".venv/bin/ser" in hint  # how `ser` is found after make demo


def test_the_workdir_option_says_what_it_holds_and_the_repository_has_its_own():
    from ser.cli import build_parser
    from ser.demo import DemoConfig

    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    options = {a.dest: a for a in demo._actions}
    assert "repositories go to --repository" in options["workdir"].help
    assert options["repository"].default == DemoConfig.repository == Path("model_repository")
    args = build_parser().parse_args(["demo", "--workdir", "w", "--repository", "r"])
    assert (args.workdir, args.repository) == (Path("w"), Path("r"))
