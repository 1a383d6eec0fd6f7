from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from avssl.config import ConfigError, apply_overrides, from_dict, load_config, to_dict


@dataclass
class Inner:
    lr: float = 0.1
    steps: int = 10
    name: str | None = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, int] = (1, 2)
    flag: bool = False


def test_unknown_keys_are_errors_naming_the_key():
    with pytest.raises(ConfigError, match="unknown config key 'inner.lrr'.*valid keys under inner: lr, name, steps"):
        from_dict(Outer, {"inner": {"lrr": 1}})
    with pytest.raises(ConfigError, match="'bogus'"):
        from_dict(Outer, {"bogus": 1})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"inner": {"steps": 1.5}}, "inner.steps: expected an integer"),
        ({"inner": {"lr": "fast"}}, "inner.lr: expected a number"),
        ({"mode": "c"}, "mode: must be one of"),
        ({"sizes": [1]}, "sizes: expected 2 values"),
        ({"flag": "yes"}, "flag: expected true/false"),
        ({"inner": 3}, "inner: expected a mapping"),
    ],
)
def test_wrong_types_are_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_partial_sections_keep_defaults_and_round_trip():
    cfg = from_dict(Outer, {"inner": {"lr": 1}, "sizes": [3, 4]})
    assert cfg.inner == Inner(lr=1.0) and cfg.sizes == (3, 4)
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_yaml_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("inner:\n  lr: 0.5\n  steps: 3\nmode: b\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ninner:\n  steps: 7\n")
    cfg = load_config(Outer, tmp_path / "child.yaml", ["inner.name=run1", "flag=true", "sizes=[5, 6]"])
    assert cfg == Outer(inner=Inner(lr=0.5, steps=7, name="run1"), mode="b", sizes=(5, 6), flag=True)
    with pytest.raises(ConfigError, match="unknown config key 'inner.nope'"):
        load_config(Outer, tmp_path / "child.yaml", ["inner.nope=1"])
    with pytest.raises(ConfigError, match="must look like"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")


@dataclass
class Moved:
    __renamed__ = {"old": "inner.lr", "inner.count": "inner.steps"}

    inner: Inner = field(default_factory=Inner)


def test_renamed_keys_are_still_read_but_not_together_with_the_new_name():
    assert from_dict(Moved, {"old": 0.7, "inner": {"count": 4}}) == Moved(Inner(lr=0.7, steps=4))
    with pytest.raises(ConfigError, match="'old' is the old name of 'inner.lr'"):
        from_dict(Moved, {"old": 0.7, "inner": {"lr": 0.2}})


def test_older_checkpoints_configs_still_load():
    from avssl.train.configs import FinetuneConfig, PretrainConfig

    cfg = from_dict(PretrainConfig, {"data": {"mel": {"n_mels": 40, "normalize": True}}})
    assert cfg.data.spectrogram.n_mels == 40 and cfg.data.spectrogram.normalize == "per_spectrogram"
    assert from_dict(FinetuneConfig, {"model": {"checkpoint": "pt.pt"}}).run.init_from == "pt.pt"


def test_override_keys_a_command_ignores_are_named():
    from avssl.config import check_overrides

    check_overrides(["data.root=x", "data.clip.size=64"], ("data.",), "avssl localize")
    with pytest.raises(ConfigError, match="avssl localize: --set loss.kind has no effect"):
        check_overrides(["data.root=x", "loss.kind=cma"], ("data.",), "avssl localize")
