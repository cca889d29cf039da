"""The question a report answers: which of its comparisons are confirmatory (one family, corrected together)
and which exploratory. A sweep preset declares it in the runs' config (`question.compare`, `question.trend`:
conf/experiment/fig6.yaml asks plain against ResNet at each depth and the trend with depth within each net);
`report --question compare=arch,trend=depth` and `--pair 'A vs B'` declare it on the command line instead.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from resnet_cifar.config import NAME_KEY, PLUGIN_GROUPS

from .collect import ARCH

QUESTION_KINDS = ("compare", "trend")
RUN_COLUMNS = {kind: f"question.{kind}" for kind in QUESTION_KINDS}  # the runs' config, flattened


class QuestionError(ValueError):
    """A question or pair that cannot be read."""


def column(key: str) -> str:
    """A factor as a question names it (arch, normalization, depth, data.pipeline) -> the runs' column."""
    return f"{key}.{NAME_KEY}" if key in PLUGIN_GROUPS else key


def label(key: str) -> str:
    """The runs' column -> the factor as the report names it (arch.name is arch)."""
    return "arch" if key == ARCH else key


@dataclass(frozen=True)
class Question:
    compare: tuple[str, ...] = ()  # columns whose pairs are confirmatory, at every setting of the others
    trend: tuple[str, ...] = ()  # ordered columns tested as one trend within every setting of the others
    pairs: tuple[tuple[dict, dict], ...] = field(default_factory=tuple)  # named pairs of cells ({column: value})
    declared: bool = False

    def asks(self, factor: str) -> bool:
        """Whether the pairs of this factor are confirmatory: all are when nothing was declared."""
        return not self.declared or factor in self.compare

    def describe(self) -> str:
        parts = [f"compare={label(c)}" for c in self.compare] + [f"trend={label(t)}" for t in self.trend]
        parts += [" vs ".join(",".join(f"{label(k)}={v}" for k, v in side.items()) for side in pair)
                  for pair in self.pairs]
        return "; ".join(parts) if self.declared else "none declared (every pair of every factor)"


def _selector(text: str) -> dict:
    selector = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise QuestionError(f"--pair: {part!r} is not KEY=VALUE")
        selector[column(key.strip())] = value.strip()
    if not selector:
        raise QuestionError(f"--pair: {text!r} names no setting")
    return selector


def parse_pair(text: str) -> tuple[dict, dict]:
    """'arch=vgg,depth=10 vs arch=resnet,depth=8' -> two cells' settings."""
    sides = text.split(" vs ")
    if len(sides) != 2:
        raise QuestionError(f"--pair {text!r}: give two settings as 'KEY=VALUE,... vs KEY=VALUE,...'")
    return _selector(sides[0]), _selector(sides[1])


def parse_question(text: str) -> dict[str, list[str]]:
    """'compare=arch,trend=depth' -> {compare: [arch.name], trend: [depth]}."""
    found: dict[str, list[str]] = {kind: [] for kind in QUESTION_KINDS}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, eq, key = part.partition("=")
        if not eq or kind.strip() not in QUESTION_KINDS or not key.strip():
            raise QuestionError(f"--question {text!r}: each part is compare=KEY or trend=KEY (e.g. "
                                "compare=arch,trend=depth), found {part!r}")
        found[kind.strip()].append(column(key.strip()))
    return found


def _listed(value) -> list[str]:
    """A runs' cell of question.compare/trend (a list, or its text as flattened) -> the keys."""
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str) and value.startswith("["):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return []
        return [str(v) for v in parsed] if isinstance(parsed, (list, tuple)) else []
    return []


def question_of(runs: pd.DataFrame, question: str | None = None, pairs: list[str] = ()) -> Question:
    """The question from the command line (--question, --pair), else the one the runs' config declares (the
    union over them: several sweeps read together ask all their questions)."""
    named = tuple(parse_pair(p) for p in pairs)
    if question is not None or named:
        asked = parse_question(question or "")
        return Question(tuple(asked["compare"]), tuple(asked["trend"]), named, True)
    found = {kind: [] for kind in QUESTION_KINDS}
    for kind, name in RUN_COLUMNS.items():
        if name in runs:
            for value in runs[name]:
                found[kind] += [column(k) for k in _listed(value) if column(k) not in found[kind]]
    declared = any(found.values())
    return Question(tuple(found["compare"]), tuple(found["trend"]), (), declared)


def _numeric(values) -> bool:
    try:
        [float(v) for v in values]
    except (TypeError, ValueError):
        return False
    return True


def checked(question: Question, keys: list[str], done: pd.DataFrame, asked_here: bool,
            lost: Callable[[dict], int] = lambda setting: 0) -> list[str]:
    """What of the question these runs cannot answer. Asked on the command line (`asked_here`), a factor they do
    not have, a trend of a factor whose values are not numbers, or a pair that names an unknown key or no run
    is a QuestionError; declared by a preset, it is a line the report shows (these runs may be a part of the
    sweep)."""
    notes = []

    def problem(text: str) -> None:
        if asked_here:
            raise QuestionError(text)
        notes.append(text)

    factors = ", ".join(label(k) for k in keys)
    for kind, asked in (("compare", question.compare), ("trend", question.trend)):
        for key in asked:
            if key not in keys:
                problem(f"the question's {kind}={label(key)}: {label(key)} is not a factor of these runs (they vary "
                        f"in: {factors}); nothing of it was tested")
            elif kind == "trend" and not _numeric(done[key].dropna().unique()):
                problem(f"the question's trend={label(key)}: its values are not numbers, so it has no trend; "
                        f"compare={label(key)} compares them pair by pair")
            elif done[key].nunique() < 2:
                problem(f"the question's {kind}={label(key)}: {label(key)} has one value in these runs; nothing of it "
                        "was tested")
    for pair in question.pairs:
        for side in pair:
            unknown = [k for k in side if k not in done]
            if unknown:
                raise QuestionError(f"--pair: {label(unknown[0])} is not a key of these runs")
            chosen = done
            for key, value in side.items():
                chosen = chosen[chosen[key].astype(str) == str(value)]
            if chosen.empty:
                named = ", ".join(f"{label(k)}={v}" for k, v in side.items())
                gone = lost(side)  # seeds that failed or diverged: the reason, where that is the reason
                raise QuestionError(f"--pair: no finished run has {named}" + (
                    f" (all {gone} of its seeds failed or diverged)" if gone else ""))
    return notes
