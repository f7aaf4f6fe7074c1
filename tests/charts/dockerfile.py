"""A Dockerfile read the way the builder reads it: instructions per stage, build arguments resolved.

Enough of the Dockerfile syntax for images/Dockerfile (comments, parser directives, line
continuations, ``ARG`` defaults before ``FROM``, ``FROM image AS name``, flags such as
``COPY --from=build``); anything else fails loudly rather than being misread.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, USER ...
    arguments: str  # as written, continuations joined

    def words(self) -> list[str]:
        return shlex.split(self.arguments)

    def flags(self) -> dict[str, str]:
        """``--from=build`` -> {"from": "build"} (COPY, ADD, RUN)."""
        return dict(word[2:].partition("=")[::2] for word in self.words() if word.startswith("--"))

    def operands(self) -> list[str]:
        return [word for word in self.words() if not word.startswith("--")]


@dataclass
class Stage:
    base: str  # the FROM image, build arguments resolved
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def commands(self) -> list[list[str]]:
        """Every simple command of every RUN (split at ``&&``, ``||`` and ``;``), as words."""
        found = []
        for run in self.all("RUN"):
            for part in re.split(r"&&|\|\||;", run.arguments):
                words = shlex.split(part, comments=False)
                if words:
                    found.append(words)
        return found


def instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, comments dropped and continuation lines joined."""
    found: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


def stages(path: Path) -> list[Stage]:
    """The build stages in order; ``ARG`` defaults declared before the first ``FROM`` resolved in each base."""
    arguments: dict[str, str] = {}
    result: list[Stage] = []
    for instruction in instructions(path.read_text()):
        if instruction.keyword == "FROM":
            words = instruction.operands()
            base = _VARIABLE.sub(lambda m: arguments[m[1] or m[2]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"unexpected FROM {instruction.arguments!r}"
            result.append(Stage(base, name))
        elif not result:
            assert instruction.keyword == "ARG", f"{instruction.keyword} before the first FROM"
            key, _, default = instruction.arguments.partition("=")
            arguments[key.strip()] = default.strip()
        else:
            result[-1].instructions.append(instruction)
    return result
