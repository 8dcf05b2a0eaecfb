"""TrainConfig: one ValueError naming the field for each bad input, the adapter section, YAML and --set."""

from pathlib import Path

import pytest
import yaml
from panacea.training.config import DimensionConfig, TrainConfig

from panacea._config import apply_overrides, load_config
from panacea.data import PairSource


def dimension(name, **fields):
    return DimensionConfig(name=name, train=[PairSource(f"data/{name}.jsonl")], **fields)


def config(**fields):
    return TrainConfig(**{"dimensions": [dimension("helpful"), dimension("harmless")], **fields})


def yaml_data():
    return {
        "output_dir": "runs/test",
        "dimensions": [
            {"name": "helpful", "train": [{"path": "data/helpful.jsonl"}]},
            {"name": "harmless", "train": [{"path": "data/harmless.jsonl"}], "objective": "sft"},
        ],
        "batch_size": 4,
        "micro_batch_size": 2,
    }


def write_yaml(tmp_path, data):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --- one ValueError per bad input, naming the field ---------------------------------------------------------


def test_unknown_key_in_yaml_is_refused_by_name(tmp_path):
    path = write_yaml(tmp_path, {**yaml_data(), "learning_rat": 1e-4})
    with pytest.raises(ValueError, match="learning_rat") as error:
        load_config(TrainConfig, path)
    assert str(path) in str(error.value)


def test_unknown_key_inside_a_dimension_is_refused_by_name(tmp_path):
    data = yaml_data()
    data["dimensions"][0]["betta"] = 0.2
    with pytest.raises(ValueError, match=r"dimensions\.0.*betta"):
        load_config(TrainConfig, write_yaml(tmp_path, data))


def test_no_dimensions_is_refused():
    with pytest.raises(ValueError, match="dimensions must be at least one dimension"):
        TrainConfig()


def test_duplicate_dimension_names_are_refused():
    with pytest.raises(ValueError, match="dimensions must be unique dimension names"):
        config(dimensions=[dimension("helpful"), dimension("helpful")])


def test_a_dimension_without_train_data_is_refused():
    with pytest.raises(ValueError, match="train must be at least one PairSource"):
        DimensionConfig(name="helpful", train=[])


def test_a_dimension_without_train_key_in_yaml_is_refused(tmp_path):
    data = yaml_data()
    del data["dimensions"][1]["train"]
    with pytest.raises(ValueError, match=r"dimensions\.1.*missing required DimensionConfig key\(s\) \['train'\]"):
        load_config(TrainConfig, write_yaml(tmp_path, data))


def test_batch_size_must_be_a_multiple_of_micro_batch_size():
    with pytest.raises(ValueError, match=r"batch_size must be a multiple of micro_batch_size \(4\), got 6"):
        config(batch_size=6, micro_batch_size=4)


def test_tchebycheff_with_per_sample_preferences_says_why():
    with pytest.raises(ValueError, match="Tchebycheff is not defined per sample") as error:
        config(scalarization="tche", preference_sampling="per_sample")
    assert "a sample has only its own dimension's loss" in str(error.value)
    assert "groups" in str(error.value)


def test_preference_groups_without_groups_sampling_is_refused():
    with pytest.raises(ValueError, match="preference_groups is 2, but only 'groups' sampling uses it"):
        config(preference_groups=2)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"preference_sampling": "fixed"}, "preference_sampling 'fixed' and fixed_preference go together"),
        ({"fixed_preference": [1.0, 0.0]}, "preference_sampling 'fixed' and fixed_preference go together"),
        ({"preference_sampling": "fixed", "fixed_preference": [1.0]}, r"fixed_preference: .*shape \(2,\)"),
        ({"preference_sampling": "fixed", "fixed_preference": [0.5, 0.6]}, "fixed_preference: .*sum to 1"),
        ({"preference_sampling": "fixed", "fixed_preference": [1.5, -0.5]}, "fixed_preference: .*non-negative"),
        ({"preference_sampling": "fixed", "fixed_preference": {"concise": 1.0}}, "fixed_preference: .*concise"),
        ({"preference_sampling": "fixed", "fixed_preference": [[1.0, 0.0]]}, "fixed_preference must be one λ"),
    ],
)
def test_a_bad_fixed_preference_is_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        config(**fields)


def test_fixed_preference_by_name_becomes_the_vector_and_skips_zero_weights():
    fixed = config(preference_sampling="fixed", fixed_preference={"harmless": 1.0, "helpful": 0.0})
    assert fixed.fixed_preference == [0.0, 1.0] and fixed.trained_dimensions == [False, True]
    assert config().trained_dimensions == [True, True]


def test_adapter_num_preferences_conflicting_with_the_dimensions_is_refused():
    with pytest.raises(ValueError, match=r"adapter\.num_preferences is 3 but the dimensions give 2"):
        config(adapter={"num_preferences": 3})


def test_adapter_preference_names_conflicting_with_the_dimensions_is_refused():
    with pytest.raises(ValueError, match=r"adapter\.preference_names"):
        config(adapter={"preference_names": ["harmless", "helpful"]})


def test_a_bad_adapter_field_is_refused_before_any_model_loads():
    with pytest.raises(ValueError, match="TrainConfig.adapter"):
        config(adapter={"svd_rank": -1})


def test_fp16_mixed_precision_is_refused_with_its_reason():
    """fp16 autocast ran without loss scaling, so small gradients underflowed to zero unnoticed."""
    with pytest.raises(ValueError, match=r"mixed_precision must be 'no' or 'bf16' \(fp16 .* loss scaling"):
        config(mixed_precision="fp16")


@pytest.mark.parametrize("method", ["lora", "soups"])
def test_orthogonality_weight_is_refused_for_plain_loras(method):
    fields = {"preference_sampling": "fixed", "fixed_preference": [1.0, 0.0]} if method == "lora" else {}
    with pytest.raises(ValueError, match=f"orthogonality_weight .* method {method!r} trains plain peft LoRAs"):
        config(method=method, adapter={"orthogonality_weight": 0.1}, **fields)
    config(method=method, adapter={"orthogonality_weight": 0.0}, **fields)


@pytest.mark.parametrize("value", [-1e-4, 0.0])
def test_learning_rate_must_be_positive(value):
    with pytest.raises(ValueError, match=f"learning_rate must be a positive number, got {value!r}"):
        config(learning_rate=value)


def test_negative_learning_rate_in_yaml_names_the_file(tmp_path):
    path = write_yaml(tmp_path, {**yaml_data(), "learning_rate": -5e-6})
    with pytest.raises(ValueError, match="learning_rate must be a positive number") as error:
        load_config(TrainConfig, path)
    assert str(path) in str(error.value)


# --- what a valid config gives ------------------------------------------------------------------------------


def test_adapter_config_takes_preferences_from_the_dimensions():
    adapter = config(adapter={"init": "lora", "svd_rank": 4}).adapter_config()
    assert adapter.num_preferences == 2
    assert adapter.preference_names == ["helpful", "harmless"]
    assert adapter.svd_rank == 4


def test_adapter_config_accepts_matching_preference_fields():
    adapter = config(adapter={"num_preferences": 2, "preference_names": ["helpful", "harmless"]}).adapter_config()
    assert adapter.num_preferences == 2


def test_groups_sampling_uses_preference_groups():
    loaded = config(batch_size=8, micro_batch_size=2, preference_sampling="groups", preference_groups=2)
    assert loaded.num_groups == 2
    assert config(preference_sampling="per_sample").num_groups == 1


def test_auto_ideal_is_zero_for_dpo_and_running_min_for_sft():
    assert dimension("a").ideal_rule == 0.0
    assert dimension("b", objective="sft").ideal_rule == "running_min"
    assert dimension("c", ideal=0.25).ideal_rule == 0.25


def test_learning_rate_5e_6_in_yaml_is_a_float(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(yaml_data()) + "learning_rate: 5e-6\n")
    loaded = load_config(TrainConfig, path)
    assert isinstance(loaded.learning_rate, float)
    assert loaded.learning_rate == 5e-6


def test_yaml_builds_nested_dimensions(tmp_path):
    loaded = TrainConfig.from_yaml(write_yaml(tmp_path, yaml_data()))
    assert [d.name for d in loaded.dimensions] == ["helpful", "harmless"]
    assert isinstance(loaded.dimensions[1].train[0], PairSource)
    assert loaded.dimensions[1].objective == "sft"


# --- --set overrides ----------------------------------------------------------------------------------------


def test_set_overrides_a_nested_dimension_field(tmp_path):
    path = write_yaml(tmp_path, yaml_data())
    loaded = TrainConfig.from_yaml(path, ["dimensions.0.beta=0.25", "dimensions.1.train.0.path=other.jsonl"])
    assert loaded.dimensions[0].beta == 0.25
    assert loaded.dimensions[1].train[0].path == "other.jsonl"


def test_set_parses_scientific_notation_as_a_float(tmp_path):
    loaded = TrainConfig.from_yaml(write_yaml(tmp_path, yaml_data()), ["learning_rate=1e-4"])
    assert loaded.learning_rate == 1e-4


def test_apply_overrides_does_not_change_its_input():
    data = yaml_data()
    result = apply_overrides(data, ["dimensions.0.objective=sft"], TrainConfig)
    assert result["dimensions"][0]["objective"] == "sft"
    assert "objective" not in data["dimensions"][0]


def test_set_with_an_unknown_nested_key_is_refused():
    with pytest.raises(ValueError, match="unknown DimensionConfig key 'betta'"):
        apply_overrides(yaml_data(), ["dimensions.0.betta=0.2"], TrainConfig)


def test_set_with_an_index_past_the_dimensions_is_refused():
    with pytest.raises(ValueError, match="has 2 item"):
        apply_overrides(yaml_data(), ["dimensions.2.beta=0.2"], TrainConfig)


def test_set_with_a_bad_value_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="beta must be a positive number"):
        TrainConfig.from_yaml(write_yaml(tmp_path, yaml_data()), ["dimensions.0.beta=-1"])


# --- λ-groups must hold whole micro-batches (a bug found in review: they were accepted, then mis-assigned) ---


@pytest.mark.parametrize("groups", [3, 4], ids=["batch-not-divisible-by-G", "micro-batch-spans-two-groups"])
def test_groups_that_micro_batches_would_straddle_are_refused(groups):
    with pytest.raises(ValueError, match="preference_groups"):
        config(batch_size=8, micro_batch_size=4, preference_sampling="groups", preference_groups=groups)


@pytest.mark.parametrize("name", ["ci", "demo", "hh-2d", "hhc-3d"])
def test_shipped_configs_load_and_their_data_exists(name):
    root = Path(__file__).parents[2]
    config = TrainConfig.from_yaml(root / "configs" / f"{name}.yaml")
    sources = [source for dimension in config.dimensions for source in (*dimension.train, *dimension.eval)]
    assert sources and all((root / source.path).is_file() for source in sources)
    assert config.adapter_config().preference_names == config.dimension_names
