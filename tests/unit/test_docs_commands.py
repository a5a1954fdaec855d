"""The commands README.md and docs/*.md give are real: ser's own parser accepts them, their paths exist.

Every ``ser ...`` command of the pages (code blocks and inline code, synopses included) names a
subcommand and only options that subcommand has; a concrete command (no ``[...]``, ``|``, ``...`` or
placeholder) parses whole. Every repository path a command names exists in the checkout or is one the
demo writes. ``tests/integration/test_docs_locust.py`` runs the plain-Locust command against the
real server.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`((?:ser|locust) [^`]+)`")


def _block_commands(text: str, program: str) -> list[str]:
    """Commands of ``program`` in the page's code blocks (continuation lines joined, comments dropped)."""
    found = []
    for block in _FENCE.findall(text):
        lines = block.replace("\\\n", " ").splitlines()
        for line in lines:
            line = line.strip().removeprefix("$ ")
            if line.startswith(program + " "):
                found.append(re.sub(r"\s+#.*$", "", line).strip())
    return found


def page_commands(program: str) -> list[tuple[str, str, bool]]:
    """``(page name, command, whether it is a code block's)`` for every command of ``program`` on every page.

    A code block's command is one to run; inline code also names a command in passing (`ser predict`).
    """
    out = []
    for page in PAGES:
        text = page.read_text()
        out += [(page.name, c, True) for c in _block_commands(text, program)]
        out += [(page.name, m.replace("\\|", "|"), False) for m in _INLINE.findall(text.replace("\\\n", " "))
                if m.startswith(program + " ")]
    return out


SER_COMMANDS = page_commands("ser")


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)subcommand's parser named by the first words, and the words after them."""
    while words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or words[0] not in subs[0].choices:
            break
        parser, words = subs[0].choices[words[0]], words[1:]
    return parser, words


def _is_synopsis(command: str) -> bool:
    return bool(re.search(r"[\[\]|()]|\.\.\.|…|\b[A-Z][A-Z_]{2,}\b", command))


def test_the_pages_have_ser_commands_to_check():
    assert len(SER_COMMANDS) > 40 and {p for p, _, _ in SER_COMMANDS} >= {"README.md", "load-testing.md", "deployment.md"}
    assert sum(block for _, _, block in SER_COMMANDS) > 20


@pytest.mark.parametrize(("page", "command", "block"), SER_COMMANDS, ids=[f"{p}:{c[:60]}" for p, c, _ in SER_COMMANDS])
def test_every_ser_command_of_the_docs_is_one_ser_parses(page, command, block):
    from ser.cli import build_parser

    parser = build_parser()
    words = shlex.split(command, posix=True)[1:]
    sub, rest = _subparser(parser, words)
    if words[0] == "COMMAND" or words[0].startswith("-"):  # `ser --help`, `ser COMMAND --help`
        assert set(words) <= {"COMMAND", "--help", "-h"}, f"{page}: `{command}`"
        return
    assert sub is not parser, f"{page}: `{command}`: no such ser command {words[:1]}"
    known = {s for a in sub._actions for s in a.option_strings}
    flags = {w.split("=", 1)[0] for w in re.findall(r"(?<![\w-])--[a-z][\w-]*(?:=\S+)?", " ".join(rest))}
    assert flags <= known, f"{page}: `{command}`: ser {sub.prog.split(' ', 1)[1]} has no {sorted(flags - known)}"
    if block and not _is_synopsis(command):
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                parser.parse_args(words)
            except SystemExit:
                pytest.fail(f"{page}: `{command}`: {err.getvalue().strip()}")


#: What the demo writes (ser/demo.py, DemoConfig's defaults): docs may name these before they exist.
def _demo_outputs() -> set[str]:
    from ser.demo import DemoConfig

    config = DemoConfig()
    work, repo = config.workdir.as_posix(), config.repository.as_posix()
    return {f"{work}/{p}" for p in ("corpus", "checkpoint", "checkpoint/split.json", "export", "export/fp32",
                                     "export/int8", "loadtest")} | {f"{repo}/portable", f"{repo}/native"}


def _named_paths(command: str) -> list[str]:
    """Tokens of a command that name a path inside the repository (a top-level folder of it, or .cache/demo)."""
    tops = {p.name for p in REPO_ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")} | {".cache"}
    paths = []
    for word in shlex.split(command.replace("\\|", "|")):
        word = word.split("=", 1)[-1].rstrip(",;")
        if "/" in word and word.split("/", 1)[0] in tops and not re.search(r"[A-Z]{3,}|[\[\]*{}$]", word):
            paths.append(word.rstrip("/"))
    return paths


ALL_COMMANDS = SER_COMMANDS + page_commands("locust") + page_commands("python")


def _written(command: str) -> list[str]:
    """The folders a command writes: ``--out X``, ``ser export``'s ``--repository X``, a Python snippet's quoted paths."""
    out = re.findall(r"--out[= ](\S+)", command)
    if command.startswith("ser export"):
        out += re.findall(r"--repository[= ](\S+)", command)
    if command.startswith("python"):
        out += re.findall(r"'([\w.-]+/[\w./-]+)'", command)
    return [m.rstrip("/") for m in out]


def test_every_repository_path_a_docs_command_names_exists_or_is_written_by_the_demo():
    produced = _demo_outputs()
    written = {page: set() for page, _, _ in ALL_COMMANDS}
    for page, command, _ in ALL_COMMANDS:
        written[page].update(_written(command))

    def known(page: str, path: str) -> bool:
        if (REPO_ROOT / path).exists() or path in produced:
            return True
        # Written by a command of the same page (``--out``), or inside a folder the demo writes, except a file
        # the demo writes elsewhere: its split manifest is the checkpoint's, not the work folder's.
        folders = written[page] | {p for p in produced if not p.endswith(".json")}
        return any(path == f or path.startswith(f + "/") for f in folders) and not (
            path.endswith("split.json") and path not in produced)

    missing = [(page, path, command) for page, command, _ in ALL_COMMANDS for path in _named_paths(command)
               if not known(page, path)]
    assert not missing, "\n".join(f"{page}: {path} (in `{command}`)" for page, path, command in missing)


def test_the_deployment_page_states_the_flags_ser_serve_really_uses():
    import inspect

    from deploy.flags import EXIT_TIMEOUT_S
    from deploy.local_triton import LocalTriton
    from deploy.supervisor import serve_forever

    text = (REPO_ROOT / "docs" / "deployment.md").read_text()
    section = text.split("## Production flags", 1)[1].split("\n## ", 1)[0]
    local_exit = inspect.signature(serve_forever).parameters["exit_timeout_s"].default
    assert local_exit == inspect.signature(LocalTriton).parameters["exit_timeout_s"].default
    load_models = inspect.signature(LocalTriton).parameters["load_models"].default
    assert f"--exit-timeout-secs={EXIT_TIMEOUT_S}" in section
    if local_exit != EXIT_TIMEOUT_S:  # the page must not say `ser serve` uses the production value
        assert f"--exit-timeout-secs={local_exit}" in section, "docs/deployment.md: ser serve's own exit timeout"
    if not load_models:  # LocalTriton loads every model (--load-model=*), not one flag per model
        assert "--load-model=*" in section, "docs/deployment.md: ser serve's --load-model=*"
