"""config_io on a small nested config: round trip, errors that name the dotted field, overrides, base files, diff."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pytest
import yaml

from generator.config_io import (
    ConfigError,
    apply_overrides,
    diff,
    dump_yaml,
    from_dict,
    load_config,
    to_dict,
)


class Mode(str, Enum):
    NONE = "none"
    GLOBAL = "global"


@dataclass
class VisionConfig:
    img_size: int = 224
    depths: tuple[int, ...] = (2, 2, 6, 2)
    weights: Path | None = None

    def __post_init__(self):
        if self.img_size < 32:
            raise ValueError(f"VisionConfig.img_size must be ≥ 32, got {self.img_size}")


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    kg: Mode = Mode.GLOBAL
    hidden_size: int = 128
    budgets: tuple[int, str] = (8, "x")
    vocab: dict[str, int] = field(default_factory=lambda: {"a": 1})


@dataclass
class TrainConfig:
    lr: float = 1e-4
    amp: bool = False
    threads: int | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Experiment:
    name: str  # required: no default
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def test_round_trip_and_defaults():
    exp = Experiment(
        name="run",
        model=ModelConfig(VisionConfig(64, (1, 1), Path("w.pt")), Mode.NONE, 256, (3, "y"), {"b": 2}),
        train=TrainConfig(lr=3e-5, amp=True, threads=2, tags=["a"]),
    )
    plain = to_dict(exp)
    assert plain["model"]["kg"] == "none" and plain["model"]["vision"]["depths"] == [1, 1]
    assert plain["model"]["vision"]["weights"] == "w.pt"
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # YAML-safe
    assert from_dict(Experiment, plain) == exp
    assert from_dict(Experiment, {"name": "x"}) == Experiment(name="x")


def test_save_then_load(tmp_path):
    exp = Experiment(name="run", model=ModelConfig(hidden_size=64))
    (tmp_path / "c.yaml").write_text(dump_yaml(exp))
    assert list(yaml.safe_load((tmp_path / "c.yaml").read_text())) == ["name", "model", "train"]
    assert load_config(Experiment, tmp_path / "c.yaml") == exp


@pytest.mark.parametrize("data, message", [
    ({"model": {"visoin": {}}}, r"^model\.visoin: unknown field; did you mean 'vision'\?.*\['budgets'"),
    ({"model": {"vision": {"img_size": "abc"}}}, r"^model\.vision\.img_size: .*valid integer, got 'abc'"),
    ({"model": {"vision": {"img_size": True}}}, r"^model\.vision\.img_size: .*valid integer, got True"),
    ({"model": {"vision": {"img_size": 64.0}}}, r"^model\.vision\.img_size: .*valid integer, got 64\.0"),
    ({"model": {"kg": "sometimes"}}, r"^model\.kg: Input should be 'none' or 'global', got 'sometimes'"),
    ({"model": {"vision": {"img_size": 16}}}, r"^model\.vision: VisionConfig\.img_size must be ≥ 32"),
    ({"model": {"vision": {"depths": [2, "x"]}}}, r"^model\.vision\.depths\.1: .*valid integer"),
    ({"model": {"budgets": [1]}}, r"^model\.budgets\.1: missing required field"),
    ({"model": {"vocab": {"a": "one"}}}, r"^model\.vocab\.a: .*valid integer"),
    ({"model": 3}, r"^model: Input should be an object, got 3"),
    ({"train": {"amp": 1}}, r"^train\.amp: .*valid boolean, got 1"),
    ({"train": {"threads": "two"}}, r"^train\.threads: .*valid integer"),
])
def test_errors_name_the_dotted_field(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Experiment, {"name": "x", **data})


def test_missing_required_field_is_named():
    with pytest.raises(ConfigError, match=r"^name: missing required"):
        from_dict(Experiment, {})


def test_int_accepted_as_float_and_none_for_optional():
    train = from_dict(TrainConfig, {"lr": 1, "threads": None})
    assert train.lr == 1.0 and isinstance(train.lr, float) and train.threads is None
    with pytest.raises(ConfigError, match=r"^lr: Input should be a valid number, got True"):
        from_dict(TrainConfig, {"lr": True})


def test_overrides_nested_new_keys_and_lists():
    data = {"name": "x", "model": {"hidden_size": 8}}
    out = apply_overrides(data, ["train.lr=1e-4", "model.vision.depths=[2,2]", "model.kg=none",
                                 "train.amp=true", "extra.a.b=3"])
    assert data == {"name": "x", "model": {"hidden_size": 8}}  # input untouched
    assert out["model"] == {"hidden_size": 8, "vision": {"depths": [2, 2]}, "kg": "none"}
    assert out["train"] == {"lr": 1e-4, "amp": True}
    assert out["extra"] == {"a": {"b": 3}}
    del out["extra"]
    exp = from_dict(Experiment, out)
    assert exp.model.vision.depths == (2, 2) and exp.model.kg is Mode.NONE and exp.train.lr == 1e-4


@pytest.mark.parametrize("item", ["train.lr", "=3", "train..lr=1"])
def test_bad_override_syntax_is_named(item):
    with pytest.raises(ConfigError, match=item.replace(".", r"\.")):
        apply_overrides({}, [item])


def test_override_into_a_value_is_refused():
    with pytest.raises(ConfigError, match=r"^model: is a value"):
        apply_overrides({"model": 3}, ["model.kg=none"])


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nmodel:\n  hidden_size: 64\n  kg: none\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\nmodel:\n  hidden_size: 32\n")
    exp = load_config(Experiment, tmp_path / "sub" / "child.yaml", ["train.lr=0.5"])
    assert (exp.name, exp.model.hidden_size, exp.model.kg, exp.train.lr) == ("base", 32, Mode.NONE, 0.5)


def test_exponent_floats_without_a_dot(tmp_path):
    # plain PyYAML reads 1e-4 as the string '1e-4'; configs and overrides read it as a float
    (tmp_path / "c.yaml").write_text("name: x\ntrain:\n  lr: 1e-4\n")
    assert load_config(Experiment, tmp_path / "c.yaml").train.lr == 1e-4
    assert load_config(Experiment, tmp_path / "c.yaml", ["train.lr=-2E-3"]).train.lr == -2e-3


def test_base_loop_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(Experiment, tmp_path / "a.yaml")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(Experiment, tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(Experiment, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: the top level must be a mapping"):
        load_config(Experiment, tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("name: x\nmodel:\n  hiden_size: 3\n")
    with pytest.raises(ConfigError, match=r"^model\.hiden_size: unknown field.*typo\.yaml"):
        load_config(Experiment, tmp_path / "typo.yaml")


def test_diff_names_each_differing_field():
    a = Experiment(name="x", model=ModelConfig(hidden_size=128))
    b = Experiment(name="x", model=ModelConfig(hidden_size=256, kg=Mode.NONE), train=TrainConfig(tags=["t"]))
    assert diff(a, b) == ["model.kg: 'global' != 'none'", "model.hidden_size: 128 != 256",
                          "train.tags: [] != ['t']"]
    assert diff(a, a) == []
    assert diff(to_dict(a), {"name": "x"}) == ["model: " + repr(to_dict(a)["model"]) + " != <missing>",
                                               "train: " + repr(to_dict(a)["train"]) + " != <missing>"]
