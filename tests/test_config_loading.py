"""Strict YAML configs (`panacea._config`): floats, nested dataclasses, `--set` overrides, dump and reload."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml
from panacea.training import TrainConfig

from panacea import PanaceaConfig
from panacea._config import (
    apply_overrides,
    config_to_dict,
    dataclass_from_dict,
    dump_yaml,
    load_config,
    load_yaml,
    parse_yaml_value,
)


@dataclass
class PairSource:
    path: str = field(metadata={"help": "A JSONL file of pairs."})
    weight: float = field(default=1.0, metadata={"help": "Sampling weight, > 0."})

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError(f"PairSource.weight must be a positive number, got {self.weight!r}.")


@dataclass
class Dimension:
    name: str = field(metadata={"help": "The dimension, e.g. 'harmless'."})
    beta: float = field(default=0.1, metadata={"help": "DPO β."})
    data: list[PairSource] = field(default_factory=list, metadata={"help": "Where its pairs come from."})
    ideal: float | Literal["auto", "running_min"] = field(default="auto", metadata={"help": "Tchebycheff ẑ."})


@dataclass
class Optimizer:
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})


@dataclass
class RunConfig:
    seed: int = field(default=0, metadata={"help": "Seeds every generator."})
    dimensions: list[Dimension] = field(default_factory=list, metadata={"help": "One entry per dimension."})
    optimizer: Optimizer = field(default_factory=Optimizer, metadata={"help": "AdamW settings."})
    adapter: PanaceaConfig | None = field(default=None, metadata={"help": "None: the default adapter."})
    groups: dict[str, Optimizer] = field(default_factory=dict, metadata={"help": "Per-group optimizer settings."})
    tags: list[str] = field(default_factory=list, metadata={"help": "Free-form labels."})
    mode: Literal["ab", "delta"] = field(default="ab", metadata={"help": "How to mix adapters."})
    step: int = field(default=0, init=False, metadata={"help": "Set by the trainer, never by a config."})


RUN_YAML = """\
seed: 3
dimensions:
  - name: helpful
    data: [{path: helpful.jsonl}]
  - name: harmless
    beta: 0.5
    ideal: 0
    data:
      - path: harmless-a.jsonl
        weight: 2
optimizer:
  learning_rate: 5e-6
adapter:
  svd_rank: 4
  init_std: 2e-2
"""


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- YAML reading ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e-4", 1e-4),
        ("2e-2", 0.02),
        ("5e-6", 5e-6),
        ("1E4", 1e4),
        ("-3E+5", -3e5),
        ("+1e4", 1e4),
        (".5", 0.5),
        ("-.5", -0.5),
        ("1.", 1.0),
        ("1.5", 1.5),
        ("1_000.5", 1000.5),
        ("6.02e23", 6.02e23),
        (".inf", math.inf),
        ("-.Inf", -math.inf),
        ("190:20:30.15", 685230.15),  # YAML 1.1 base 60, as SafeLoader reads it
    ],
)
def test_every_float_spelling_is_a_float(text, expected):
    value = parse_yaml_value(text)
    assert isinstance(value, float) and value == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1), ("-7", -7), ("1_000", 1000), ("0x1F", 31), ("1.2.3", "1.2.3"), ("1e", "1e"), ("e4", "e4"), (".", ".")],
)
def test_ints_and_non_numbers_are_unchanged(text, expected):
    value = parse_yaml_value(text)
    assert value == expected and type(value) is type(expected)


def test_other_values_parse_as_yaml():
    assert math.isnan(parse_yaml_value(".nan"))
    assert parse_yaml_value("[a, 1e-3]") == ["a", 0.001]
    assert parse_yaml_value("null") is None and parse_yaml_value("") is None
    assert parse_yaml_value("{a: 1}") == {"a": 1}


def test_yaml_safe_loader_itself_is_not_changed():
    assert yaml.safe_load("x: 2e-2") == {"x": "2e-2"}  # YAML 1.1 as before; only our loader differs


def test_syntax_error_names_the_file_and_the_line(tmp_path):
    path = write(tmp_path, "seed: 1\noptimizer: {learning_rate: 1e-4\nadapter: {}\n", "bad.yaml")
    with pytest.raises(ValueError) as error:
        load_yaml(path)
    assert str(error.value).startswith(f"{path}, line 3: invalid YAML: expected ',' or '}}', but got ':'")
    assert "(while parsing a flow mapping started on line 2)" in str(error.value)


def test_a_repeated_key_is_an_error(tmp_path):
    path = write(tmp_path, "seed: 1\nseed: 2\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: invalid YAML: duplicate key 'seed'")):
        load_yaml(path)


def test_anchors_and_merge_keys_still_work(tmp_path):
    text = "base: &base {beta: 0.1, ideal: 0}\nhelpful: {<<: *base, beta: 0.5}\n"
    assert load_yaml(write(tmp_path, text)) == {"base": {"beta": 0.1, "ideal": 0}, "helpful": {"beta": 0.5, "ideal": 0}}


def test_top_level_must_be_a_mapping(tmp_path):
    assert load_yaml(write(tmp_path, "", "empty.yaml")) == {}
    assert load_yaml(write(tmp_path, "# only a comment\n", "comment.yaml")) == {}
    path = write(tmp_path, "- seed\n- 1\n")
    with pytest.raises(
        ValueError, match=re.escape(f"{path}: the top level must be a mapping of config keys, got list")
    ):
        load_yaml(path)


def test_bad_value_text_is_one_error():
    with pytest.raises(ValueError, match=r"cannot parse '\[a, b' as a YAML value"):
        parse_yaml_value("[a, b")


# --- nested dataclasses --------------------------------------------------------------------------------------


def test_nested_config_is_built_recursively(tmp_path):
    config = load_config(RunConfig, write(tmp_path, RUN_YAML))
    assert config.seed == 3
    assert config.dimensions == [
        Dimension("helpful", 0.1, [PairSource("helpful.jsonl")]),
        Dimension("harmless", 0.5, [PairSource("harmless-a.jsonl", 2.0)], ideal=0.0),
    ]
    assert config.optimizer == Optimizer(learning_rate=5e-6)
    assert config.adapter == PanaceaConfig(svd_rank=4, init_std=0.02)


def test_an_int_for_a_float_field_becomes_a_float():
    config = dataclass_from_dict(
        RunConfig, {"optimizer": {"learning_rate": 1}, "dimensions": [{"name": "a", "beta": 1}]}, "x"
    )
    assert type(config.optimizer.learning_rate) is float and type(config.dimensions[0].beta) is float


def test_optional_and_dict_fields():
    assert dataclass_from_dict(RunConfig, {"adapter": None}, "x").adapter is None
    config = dataclass_from_dict(RunConfig, {"groups": {"head": {"learning_rate": 1e-3}}}, "x")
    assert config.groups == {"head": Optimizer(learning_rate=1e-3)}


def test_unknown_key_deep_inside_names_the_dotted_path(tmp_path):
    text = RUN_YAML.replace("- path: harmless-a.jsonl", "- pathh: harmless-a.jsonl")
    path = write(tmp_path, text, "demo.yaml")
    with pytest.raises(ValueError) as error:
        load_config(RunConfig, path)
    assert str(error.value) == (
        f"{path}: dimensions.1.data.0: unknown PairSource key(s) ['pathh']; did you mean 'pathh' → 'path'? "
        "Check for typos or a config written by a newer panacea."
    )


def test_unknown_top_level_key_keeps_its_message():
    with pytest.raises(ValueError, match=re.escape("run.yaml: unknown RunConfig key(s) ['sed']; did you mean 'sed'")):
        dataclass_from_dict(RunConfig, {"sed": 1}, "run.yaml")
    with pytest.raises(
        ValueError, match=re.escape("unknown RunConfig key(s) ['zzz']; known keys are ['adapter', 'dimensions'")
    ):
        dataclass_from_dict(RunConfig, {"zzz": 1}, "run.yaml")  # nothing near: every key is listed


def test_init_false_fields_are_not_keys():
    with pytest.raises(ValueError, match=re.escape("unknown RunConfig key(s) ['step']")):
        dataclass_from_dict(RunConfig, {"step": 4}, "run.yaml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seed": "abc"}, "run.yaml: seed: expected int, got str 'abc'."),
        ({"seed": True}, "run.yaml: seed: expected int, got bool True."),
        ({"seed": 1.5}, "run.yaml: seed: expected int, got float 1.5."),
        ({"optimizer": [1, 2]}, "run.yaml: optimizer: expected a mapping of Optimizer fields, got list [1, 2]."),
        (
            {"optimizer": {"learning_rate": "fast"}},
            "run.yaml: optimizer.learning_rate: expected float, got str 'fast'.",
        ),
        ({"dimensions": {"name": "a"}}, "run.yaml: dimensions: expected list[Dimension], got dict {'name': 'a'}."),
        (
            {"dimensions": [{"name": "a", "beta": "high"}]},
            "run.yaml: dimensions.0.beta: expected float, got str 'high'.",
        ),
        ({"tags": ["a", 3]}, "run.yaml: tags.1: expected str, got int 3."),
        ({"adapter": "big"}, "run.yaml: adapter: expected PanaceaConfig | None, got str 'big'."),
        ({"groups": {"head": 1}}, "run.yaml: groups.head: expected a mapping of Optimizer fields, got int 1."),
        ({"mode": "mix"}, "run.yaml: mode: expected one of ['ab', 'delta'], got str 'mix'."),
        (
            {"dimensions": [{"name": "a", "ideal": "min"}]},
            "run.yaml: dimensions.0.ideal: expected float | 'auto' | 'running_min', got str 'min'.",
        ),
        ({"dimensions": [{"beta": 0.1}]}, "run.yaml: dimensions.0: missing required Dimension key(s) ['name']."),
    ],
)
def test_a_value_of_the_wrong_kind_names_path_expected_type_and_value(data, message):
    with pytest.raises(ValueError) as error:
        dataclass_from_dict(RunConfig, data, "run.yaml")
    assert str(error.value) == message


def test_post_init_errors_are_prefixed_with_the_path():
    data = {"dimensions": [{"name": "a"}, {"name": "b", "data": [{"path": "b.jsonl", "weight": -1}]}]}
    with pytest.raises(ValueError) as error:
        dataclass_from_dict(RunConfig, data, "run.yaml")
    assert str(error.value) == "run.yaml: dimensions.1.data.0.weight must be a positive number, got -1.0."
    with pytest.raises(ValueError, match=re.escape("run.yaml: adapter.dropout must be a number in [0, 1)")):
        dataclass_from_dict(RunConfig, {"adapter": {"dropout": 2}}, "run.yaml")


# --- overrides -----------------------------------------------------------------------------------------------


def test_overrides_set_nested_fields_and_list_items():
    data = yaml.load(RUN_YAML, Loader=yaml.SafeLoader)
    before = yaml.safe_dump(data)
    result = apply_overrides(
        data,
        ["adapter.svd_rank=2", "optimizer.learning_rate=1e-4", "dimensions.0.beta=0.2", "tags=[a, b]", "seed=7"],
        RunConfig,
    )
    assert result["adapter"]["svd_rank"] == 2 and result["optimizer"]["learning_rate"] == 1e-4
    assert result["dimensions"][0]["beta"] == 0.2 and result["tags"] == ["a", "b"] and result["seed"] == 7
    assert yaml.safe_dump(data) == before  # the input is not changed


def test_overrides_create_nested_mappings_and_parse_values():
    result = apply_overrides({"adapter": None}, ["adapter.init_std=2e-2", "groups.head.weight_decay=0.1"], RunConfig)
    assert result == {"adapter": {"init_std": 0.02}, "groups": {"head": {"weight_decay": 0.1}}}
    assert apply_overrides({"adapter": {"svd_rank": 4}}, ["adapter=null"], RunConfig) == {"adapter": None}
    assert apply_overrides({}, ["anything.goes=1.", "x.0=1"]) == {"anything": {"goes": 1.0}, "x": {"0": 1}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed", "--set 'seed': expected key=value with a dotted key, e.g. adapter.svd_rank=4"),
        ("=3", "--set '=3': expected key=value with a dotted key"),
        ("optimizer..learning_rate=1", "--set 'optimizer..learning_rate=1': expected key=value with a dotted key"),
        (
            "optimizer.lr=1e-4",
            "--set 'optimizer.lr=1e-4': unknown Optimizer key 'lr' at optimizer; "
            "known keys are ['learning_rate', 'weight_decay'].",
        ),
        ("sede=1", "--set 'sede=1': unknown RunConfig key 'sede'; did you mean 'sede' → 'seed'?"),
        ("dimensions.1.data.0.pathh=x", "--set 'dimensions.1.data.0.pathh=x': unknown PairSource key 'pathh' at "),
        ("adapter.svd_rnak=4", "--set 'adapter.svd_rnak=4': unknown PanaceaConfig key 'svd_rnak' at adapter; did you"),
        ("dimensions.5.beta=1", "--set 'dimensions.5.beta=1': dimensions has 2 item(s), so there is no item 5."),
        ("dimensions.first.beta=1", "--set 'dimensions.first.beta=1': dimensions is a list; expected an integer"),
        ("seed.value=1", "--set 'seed.value=1': seed is 3, not a mapping or a list, so it has no 'value'."),
        ("tags=[a", "--set 'tags=[a': cannot parse '[a' as a YAML value"),
    ],
)
def test_bad_overrides_name_the_override(override, message):
    data = yaml.load(RUN_YAML, Loader=yaml.SafeLoader)
    with pytest.raises(ValueError) as error:
        apply_overrides(data, [override], RunConfig)
    assert str(error.value).startswith(message)


def test_load_config_applies_overrides_and_checks_their_values(tmp_path):
    path = write(tmp_path, RUN_YAML)
    config = load_config(RunConfig, path, ["dimensions.1.data.0.weight=3", "optimizer.weight_decay=1e-2"])
    assert config.dimensions[1].data[0].weight == 3.0 and config.optimizer.weight_decay == 0.01
    with pytest.raises(ValueError, match=re.escape("--set 'seed=many': seed: expected int, got str 'many'.")):
        load_config(RunConfig, path, ["seed=many"])  # the value came from --set, not from the file: say so
    with pytest.raises(
        ValueError, match=re.escape("--set 'dimensions.1.data.0.weight=-2': dimensions.1.data.0.weight")
    ):
        load_config(RunConfig, path, ["dimensions.1.data.0.weight=-2"])
    with pytest.raises(ValueError, match=re.escape(f"{path}: seed: expected int")):  # the file's own value
        load_config(RunConfig, write(tmp_path, RUN_YAML.replace("seed: 3", "seed: many")), ["optimizer.weight_decay=0"])


# --- writing a resolved config -------------------------------------------------------------------------------


def test_dump_then_load_gives_an_equal_config(tmp_path):
    config = load_config(RunConfig, write(tmp_path, RUN_YAML), ["tags=['1e5', x]"])
    config.step = 12  # not an init field: not written, and set by the trainer again after loading
    data = config_to_dict(config)
    assert "step" not in data and data["adapter"]["init_std"] == 0.02 and data["optimizer"]["learning_rate"] == 5e-6
    dump_yaml(data, tmp_path / "out" / "config.yaml")
    reloaded = load_config(RunConfig, tmp_path / "out" / "config.yaml")
    reloaded.step = 12
    assert reloaded == config and reloaded.optimizer.learning_rate == 5e-6
    assert reloaded.tags == ["1e5", "x"]  # a string that looks like a float stays a string
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["config.yaml"]  # no temporary file left


def test_config_to_dict_writes_plain_data():
    config = Dimension("a", data=[PairSource("p", 2.0)])
    assert config_to_dict(config) == {"name": "a", "beta": 0.1, "data": [{"path": "p", "weight": 2.0}], "ideal": "auto"}
    with pytest.raises(TypeError, match="expects a dataclass instance"):
        config_to_dict({"name": "a"})


def test_a_failed_dump_leaves_the_old_file(tmp_path):
    path = tmp_path / "config.yaml"
    dump_yaml({"seed": 1}, path)
    with pytest.raises(yaml.YAMLError):
        dump_yaml({"seed": object()}, path)
    assert load_yaml(path) == {"seed": 1}
    assert [entry.name for entry in tmp_path.iterdir()] == ["config.yaml"]


# --- the configs panacea reads ------------------------------------------------------------------------------


def test_panacea_config_reads_exponent_floats_from_yaml(tmp_path):
    """Regression: PyYAML read `init_std: 2e-2` as the string '2e-2', which PanaceaConfig rejected."""
    path = write(tmp_path, "svd_rank: 4\ninit_std: 2e-2\ndropout: 5e-2\n", "adapter.yaml")
    config = load_config(PanaceaConfig, path)
    assert (config.init_std, config.dropout) == (0.02, 0.05)
    assert PanaceaConfig.from_dict(load_yaml(path), where=str(path)) == config


def test_train_config_reads_exponent_floats_in_nested_sections(tmp_path):
    text = (
        "adapter: {svd_rank: 2, init_std: 2e-2}\n"
        "learning_rate: 5e-6\n"
        "dimensions: [{name: helpful, train: [{path: data/helpful.jsonl.gz}]}]\n"
    )
    config = TrainConfig.from_yaml(write(tmp_path, text, "train.yaml"))
    assert config.learning_rate == 5e-6 and config.adapter_config().init_std == 0.02
    path = write(tmp_path, "promt: hi\n", "typo.yaml")
    with pytest.raises(ValueError, match=re.escape(f"{path}: unknown TrainConfig key(s) ['promt']")):
        TrainConfig.from_yaml(path)


SHIPPED_CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda path: path.name)
def test_every_shipped_config_loads_and_names_shipped_data(path):
    config = TrainConfig.from_yaml(path)
    sources = [source for dimension in config.dimensions for source in (*dimension.train, *dimension.eval)]
    assert sources and all((path.parents[1] / source.path).is_file() for source in sources)
