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


@dataclass
class Documented:
    inner: Inner = field(default_factory=lambda: Inner(fmin=18.0))
    lr: float = 1e-3  # peak learning rate
    # A meaning above the field,
    # over two lines.
    tta: list[str] = field(default_factory=lambda: ["swap"])
    fold: int | Literal["all"] = 0  # "all": every fold  # (a second # stays in the text)
    clip: tuple[float, float] | None = (
        0.3,
        3.3,
    )  # a field over several lines
    bare: bool = True


def test_config_help_reads_the_source():
    from data.config import config_fields, config_help, flat_dict

    fields = {key: (default, meaning) for key, _, default, meaning in config_fields(Documented)}
    assert list(fields) == ["inner.fmin", "inner.hop_length", "inner.window", "lr", "tta", "fold",
                            "clip", "bare"]
    assert fields["inner.fmin"] == (18.0, "")  # the factory's default, not the class's
    assert fields["lr"] == (1e-3, "peak learning rate")
    assert fields["tta"] == (["swap"], "A meaning above the field, over two lines.")
    assert fields["fold"][1] == '"all": every fold  # (a second # stays in the text)'
    assert fields["clip"] == ((0.3, 3.3), "a field over several lines")
    assert fields["bare"] == (True, "")
    lines = config_help(Documented).splitlines()
    assert "  lr  (float, default 0.001)  peak learning rate" in lines
    assert "  fold  (int | all, default 0)  \"all\": every fold  # (a second # stays in the text)" \
        in lines
    assert "  clip  ([float, float] | null, default [0.3, 3.3])  a field over several lines" \
        in lines
    assert "  inner.window  (str, default hann)" in lines
    assert "  bare  (bool, default true)" in lines
    assert "  tta  (list of str, default [swap])  A meaning above the field, over two lines." \
        in lines
    assert flat_dict(Documented()) == {
        "inner.fmin": 18.0, "inner.hop_length": 32, "inner.window": "hann", "lr": 1e-3,
        "tta": "[swap]", "fold": 0, "clip": "[0.3, 3.3]", "bare": True}
    assert flat_dict(Outer())["image_size"] == "null"
