"""The shared config loader: YAML + ``a.b=value`` overrides, strict about keys and types."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from data.config import ConfigError, from_dict, load_config, save_config, to_dict


@dataclass
class Inner:
    fmin: float = 20.0
    hop_length: int = 32
    window: str = "hann"


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    image_size: tuple[int, int] | None = None
    mode: Literal["error", "skip"] = "error"
    flag: bool = False
    names: list[str] = field(default_factory=list)


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    # PyYAML reads 1e-3 (no dot) and (243, 257) as strings: the loader must still type them.
    p.write_text("inner:\n  fmin: 1e1\n  hop_length: 16\nimage_size: (243, 257)\n")
    cfg = load_config(Outer, p, ["inner.window=flattop", "flag=true", "names=[a, b]"])
    assert cfg.inner == Inner(fmin=10.0, hop_length=16, window="flattop")
    assert cfg.image_size == (243, 257)
    assert cfg.flag is True and cfg.names == ["a", "b"]


def test_defaults_without_file():
    cfg = load_config(Outer, None, ["inner.fmin=18"])
    assert cfg.inner.fmin == 18.0 and cfg.inner.hop_length == 32


@pytest.mark.parametrize(
    "override, culprit",
    [
        ("inner.fmxa=1000", "inner.fmxa"),
        ("bogus=1", "bogus"),
        ("inner.hop_length=1.5", "inner.hop_length"),
        ("inner.hop_length=abc", "inner.hop_length"),
        ("flag=maybe", "flag"),
        ("mode=ignore", "mode"),
        ("image_size=[1, 2, 3]", "image_size"),
        ("inner=3", "inner"),
    ],
)
def test_bad_key_or_type_names_the_key(override, culprit):
    with pytest.raises(ConfigError, match=culprit.replace(".", r"\.")):
        load_config(Outer, None, [override])


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Outer, None, ["inner.fmin"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_round_trip(tmp_path):
    cfg = load_config(Outer, None, ["image_size=[64, 128]", "inner.fmin=25"])
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Outer, tmp_path / "out.yaml") == cfg
    assert from_dict(Outer, to_dict(cfg)) == cfg
