"""README.md as the tests see it: fenced code blocks, inline command spans, placeholders and pip extras."""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
#: inline code spans starting with one of these are commands (console scripts, scripts/, ``python -m rectorch...``)
COMMANDS = (
    "rectorch-train",
    "rectorch-export",
    "rectorch-eval",
    "rectorch-compare",
    "rectorch-serve",
    "python scripts/",
    "python -m rectorch",
)
#: ``<run>``, ``<that run>``, ``<parent run id>``: a value the reader fills in (never ``<<'EOF'`` or ``a < b``)
PLACEHOLDER = re.compile(r"<([a-z][a-z0-9 ._-]*)>")
_FENCE = re.compile(r"^(```+)(\w*)[^\n]*\n(.*?)^\1[ \t]*$", re.S | re.M)
_INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language tag, its text and the README line it starts on."""

    lang: str
    code: str
    line: int

    @property
    def name(self) -> str:
        """A readable id: the line and the first command (stable while the prose around it changes)."""
        first = next((s for s in self.code.splitlines() if s.strip() and not s.lstrip().startswith("#")), "")
        return f"L{self.line}:{first.strip()[:50]}"


@dataclass(frozen=True)
class Span:
    """One inline code span that is a command, with the README line it starts on."""

    text: str
    line: int

    @property
    def argv(self) -> list[str]:
        """The command split as a shell would (line breaks inside the span are spaces; env prefixes dropped)."""
        return shlex.split(_ENV_PREFIX.sub("", " ".join(self.text.split())))


def read() -> str:
    return README.read_text(encoding="utf-8")


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def blocks(text: str, lang: str) -> list[Block]:
    """Every fenced block tagged ``lang`` (``bash``, ``python``), in README order."""
    return [
        Block(match.group(2), match.group(3), _line_of(text, match.start()))
        for match in _FENCE.finditer(text)
        if match.group(2) == lang
    ]


def fence_languages(text: str) -> set[str]:
    return {match.group(2) for match in _FENCE.finditer(text)}


def command_spans(text: str) -> list[Span]:
    """Inline code spans (outside fenced blocks) that run a rectorch command, e.g. the result tables' commands."""
    # blank the fenced blocks but keep their lines, so the line numbers stay those of README.md
    prose = _FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), text)
    spans = []
    for paragraph in re.finditer(r"(?:[^\n]+\n?)+", prose):  # a code span never crosses a blank line
        for match in _INLINE.finditer(paragraph.group(0)):
            body = _ENV_PREFIX.sub("", " ".join(match.group(2).split()))
            if body.startswith(COMMANDS) and body not in COMMANDS and " " in body:
                spans.append(Span(match.group(2), _line_of(prose, paragraph.start() + match.start())))
    return spans


def placeholders(code: str) -> set[str]:
    return {match.group(0) for match in PLACEHOLDER.finditer(code)}


def pip_extras(text: str) -> set[str]:
    """Every extra a ``pip install`` in the README names: ``".[train]"``, ``"dist/...whl[train]"``, ``-e ".[dev]"``."""
    extras: set[str] = set()
    for command in re.findall(r"pip install ([^`\n&;]+)", text):
        for target in re.findall(r"\[([\w,\s-]+)\]", command):
            extras.update(name.strip() for name in target.split(","))
    return extras
