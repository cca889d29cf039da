"""The two pieces of Hydra that sweeps need and that have no public API, in one place: the grid its basic
sweeper expands a command line into, and the folder name it gives a job. hydra-core is pinned below 1.4 for
them, and tests/test_sweep.py::test_hydras_private_pieces_still_do_what_the_sweeps_rely_on fails loudly when a
Hydra release changes them (the suite runs on the newest 1.3).
"""
from __future__ import annotations

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # hydra.sweeper._target_ of the grid


def expand_grid(overrides: list[str]) -> list[list[str]]:
    """The jobs of a basic-sweeper multirun: one list of overrides per combination, in Hydra's order."""
    parser = OverridesParser.create()
    return BasicSweeper.split_arguments(parser.parse_overrides(overrides), None)[0]


def overrides_dirname(overrides: list[str], exclude_keys: list[str], item_sep: str, kv_sep: str) -> str:
    """hydra.job.override_dirname of a job with these overrides (what its folder is named after)."""
    parser = OverridesParser.create()
    return get_overrides_dirname(parser.parse_overrides(overrides), exclude_keys, item_sep, kv_sep)
