"""The documentation's reference pages, made from the code so that they cannot drift from it:

    python -m resnet_cifar.reference docs/reference     # writes config.md and cli.md

config.md: every config group and its options (conf/), every key of the typed schema (config.py) with its type,
its default as conf/ composes it and the comment beside it in the YAML that sets it. cli.md: each command's
`--help`. tests/test_docs.py checks that the committed pages are what this writes today.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import typing
from enum import Enum
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from .config import BaseConfig, PLUGIN_GROUPS, TARGET_KEY
from .filesystem import write_text

COMMANDS = (  # (module, what it is for)
    ("resnet_cifar.train", "train a run or a sweep"),
    ("resnet_cifar.evaluate", "evaluate trained runs on their test set"),
    ("multirun_analysis.report", "the report: table, comparisons, figures, README block"),
    ("multirun_analysis.responses", "Figure 7 alone"),
    ("resnet_cifar.speed", "training speed against the standard pipeline and the machine's roofline"),
    ("multirun_analysis.calibration", "the calibration of the report's statistics"),
)
HELP_COLUMNS = "100"  # argparse wraps --help to $COLUMNS: fixed, so that the page is the same on every terminal


def _conf():
    return resources.files("resnet_cifar.conf")


def _comments() -> dict[str, str]:
    """'group.key' or 'key' -> the comment beside it in the YAML of conf/ that sets its default."""
    found: dict[str, str] = {}
    files = [("", _conf() / "config.yaml")] + [(group, _conf() / group / "default.yaml") for group in ("trainer",)] + \
        [("data", _conf() / "data" / "cifar10.yaml"), ("", _conf() / "budget" / "paper.yaml")]
    for prefix, path in files:
        stack: list[tuple[int, str]] = []
        last = None  # the key whose comment a comment-only line below it goes on with
        for line in path.read_text().splitlines():
            going_on = re.match(r"^\s{8,}#\s*(.*)$", line)
            if going_on and last in found:
                found[last] += " " + going_on.group(1).strip()
                continue
            match = re.match(r"^(\s*)([A-Za-z_][\w.]*):\s*([^#]*?)\s*(#\s*(.*))?$", line)
            last = None
            if not match:
                continue
            indent, key = len(match.group(1)), match.group(2)
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
            dotted = ".".join(k for _, k in stack)
            full = f"{prefix}.{dotted}" if prefix and not dotted.startswith(prefix + ".") else dotted
            if match.group(5):
                found[full] = match.group(5).strip()
                last = full
    return found


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    if origin in (list, typing.List):
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if origin in (dict, typing.Dict):
        return "mapping (a plug-in: `_target_` and its keys)"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _schema_rows(cls, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        annotation = hints[field.name]
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(annotation):
            rows += _schema_rows(annotation, key + ".")
        else:
            rows.append((key, _type_name(annotation)))
    return rows


def _defaults() -> dict:
    from .hydra_setup import compose_run
    from .run_spec import composed_run_config

    return composed_run_config(compose_run())


def _value(config: dict, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    return node


def config_page() -> str:
    defaults, comments = _defaults(), _comments()
    lines = ["# Configuration", "",
             "Made from the code by `python -m resnet_cifar.reference docs/reference` (a test checks that it is "
             "up to date): the config groups of `conf/` and their options, then every key of the typed schema "
             "(`resnet_cifar/config.py`) with its type and its default as `python -m resnet_cifar.train` composes "
             "it (the paper's recipe). Set a key with `KEY=VALUE` on the command line, choose an option with "
             "`GROUP=OPTION`.", "", "## Config groups", "",
             "| group | options | default | what an option is |", "|---|---|---|---|"]
    for group in sorted(p.name for p in _conf().iterdir() if p.is_dir() and not p.name.startswith(("_", "hydra"))):
        options = sorted(p.name.removesuffix(".yaml") for p in (_conf() / group).iterdir() if p.name.endswith(".yaml"))
        default = _value(defaults, f"{group}.name") if group in PLUGIN_GROUPS else (
            _value(defaults, group) if group == "shortcut" else "")
        if group == "budget":
            default = "paper"
        kind = ("a plug-in: a callable named by `_target_`, given the option's keys" if group in PLUGIN_GROUPS
                else "a preset sweep (`+experiment=NAME`)" if group == "experiment" else "values for the keys below")
        lines.append(f"| `{group}` | {', '.join(f'`{o}`' for o in options)} | {f'`{default}`' if default else ''} "
                     f"| {kind} |")
    lines += ["", "## Plug-in options", "", "| option | `_target_` | its keys |", "|---|---|---|"]
    for group in PLUGIN_GROUPS:
        for option in sorted((_conf() / group).iterdir(), key=lambda p: p.name):
            if option.name.endswith(".yaml"):
                node = OmegaConf.to_container(OmegaConf.create(option.read_text()))
                keys = ", ".join(f"`{k}={v}`" for k, v in node.items() if k != TARGET_KEY)
                target = node.get(TARGET_KEY)
                lines.append(f"| `{group}={option.name.removesuffix('.yaml')}` | "
                             f"{f'`{target}`' if target else 'none'} | {keys} |")
    lines += ["", "## Keys", "", "| key | type | default | note |", "|---|---|---|---|"]
    for key, type_name in _schema_rows(BaseConfig):
        value = _value(defaults, key)
        shown = "" if isinstance(value, dict) else f"`{json.dumps(value)}`"
        note = comments.get(key, "").replace("|", "\\|")
        lines.append(f"| `{key}` | {type_name} | {shown} | {note} |")
    return "\n".join(lines) + "\n"


def cli_page() -> str:
    lines = ["# Commands", "",
             "Each command's `--help`, as it prints it (made by `python -m resnet_cifar.reference docs/reference`; "
             "a test checks that it is up to date).", ""]
    env = {**os.environ, "COLUMNS": HELP_COLUMNS, "HYDRA_FULL_ERROR": "0"}
    for module, what in COMMANDS:
        result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env,
                                timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"python -m {module} --help failed: {result.stderr}")
        lines += [f"## python -m {module}", "", f"{what[0].upper()}{what[1:]}.", "", "```text",
                  result.stdout.rstrip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    folder = Path(args[0] if args else "docs/reference")
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "config.md", config_page())
    write_text(folder / "cli.md", cli_page())
    print(f"wrote {folder / 'config.md'}, {folder / 'cli.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
