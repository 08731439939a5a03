"""What `pip install .` ships: every module of the four stages, subpackages included (a
non-editable install once missed data/sim, infer/search and the rest, issue 16's review)."""

from __future__ import annotations

import configparser
from pathlib import Path

from setuptools import find_packages

REPO = Path(__file__).resolve().parents[1]
STAGES = ("data", "preprocess", "train", "infer")


def test_every_module_of_the_stages_is_packaged():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    include = cfg["options.packages.find"]["include"].split()
    packaged = set(find_packages(where=str(REPO), include=include))
    dirs = {p.parent for stage in STAGES for p in (REPO / stage).rglob("*.py")}
    wanted = {".".join(d.relative_to(REPO).parts) for d in dirs if "__pycache__" not in d.parts}
    assert wanted <= packaged, sorted(wanted - packaged)
    assert not {p for p in packaged if p.split(".")[0] not in STAGES}  # no tests/, bench/
