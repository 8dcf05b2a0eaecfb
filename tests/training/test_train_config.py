"""TrainConfig: one ValueError naming the field for each bad input, the adapter section, YAML and --set."""

from pathlib import Path

import pytest
import torch
import yaml
from panacea.training.config import (
    DimensionConfig,
    RLConfig,
    TrainConfig,
    data_path_slots,
    follow_moved_data,
    moved_tree_paths,
)

from panacea._config import apply_overrides, load_config
from panacea.data import PairSource, PromptSource


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
    message = r"dimensions\.1\.train must be at least one PairSource for objective 'sft' \(only 'rl' dimensions"
    with pytest.raises(ValueError, match=message):
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


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"device": "gpu"}, r"device must be one of \('cpu', 'cuda', 'auto'\)"),  # trained on whatever accelerate chose
        ({"device": "cuda:1"}, "CUDA_VISIBLE_DEVICES"),  # trained on the Accelerator's device, not cuda:1
        ({"dtype": "bogus"}, "dtype must be the name .* of a floating torch dtype"),  # failed after the data loaded
        ({"dtype": "int8"}, "dtype must be the name .* of a floating torch dtype"),
        ({"dtype": torch.bfloat16}, r"dtype must be the name \(a string\) .*, got torch.bfloat16"),  # said "floating"
        ({"seed": -1}, "seed must be an integer >= 0"),  # failed at step 0, after the model and data loaded
        ({"eval_grid": 1}, r"eval_grid must be an integer >= 3 for 2 dimension\(s\)"),  # failed only in eval
        ({"eval_grid": 2}, r"eval_grid must be an integer >= 3 for 2 dimension\(s\)"),  # no interior point (review)
        ({"lr_scheduler": "constant", "warmup_steps": 2}, "use 'constant_with_warmup'"),  # the warm-up was ignored
    ],
)
def test_settings_that_passed_check_and_failed_later_are_refused_with_the_config(fields, message):
    with pytest.raises(ValueError, match=message):
        config(**fields)


def test_a_run_saved_with_device_cuda_0_still_loads():
    """'cuda' trains on cuda:0, and runs saved before the device check named it so: refusing it made them impossible to
    evaluate or resume (a review). cuda:1 stays refused: the Accelerator would train on cuda:0 anyway."""
    assert config(device="cuda:0").device == "cuda:0"


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


@pytest.mark.parametrize("name", ["ci", "demo", "hh-2d", "hhc-3d", "hh-2d-rl", "hhc-3d-rl"])
def test_shipped_configs_load_and_their_data_exists(name):
    root = Path(__file__).parents[2]
    config = TrainConfig.from_yaml(root / "configs" / f"{name}.yaml")
    sources = [source for dimension in config.dimensions for source in (*dimension.train, *dimension.eval)]
    sources += config.rl.prompts
    for dimension in config.dimensions:  # an RL reward model fitted on pair sources
        reward = dimension.reward or {}
        sources += [PairSource(**item) for key in ("train", "test") for item in reward.get(key) or []]
    assert sources and all((root / source.path).is_file() for source in sources)
    assert config.adapter_config().preference_names == config.dimension_names


def test_rl_configs_train_on_rollouts_of_train_prompts_only():
    """No test prompt reaches an RL benchmark run: its prompts and its reward models read the carved train splits."""
    root = Path(__file__).parents[2]
    for name in ("hh-2d-rl", "hhc-3d-rl"):
        config = TrainConfig.from_yaml(root / "configs" / f"{name}.yaml")
        assert config.is_rl and all(source.split == "fit" for source in config.rl.prompts)
        for dimension in config.dimensions:
            reward = dimension.reward
            if reward["type"] == "reward_model":
                assert {item["split"] for item in reward["train"]} == {"fit"}
                assert {item["split"] for item in reward["test"]} == {"validation"}


# --- RL (objective 'rl') ------------------------------------------------------------------------------------


def rl_dimension(name, **fields):
    return DimensionConfig(name=name, objective="rl", reward={"type": "length"}, **fields)


def rl_config(rl=None, **fields):
    rl = {"prompts": [PromptSource("data/helpful.jsonl.gz", split="fit")], **(rl or {})}
    return TrainConfig(
        **{"dimensions": [rl_dimension("helpful"), rl_dimension("concise")], "rl": RLConfig(**rl), **fields}
    )


def test_an_rl_config_reads_its_section_and_defaults():
    loaded = rl_config()
    assert loaded.is_rl and not config().is_rl
    rl = loaded.rl
    assert (rl.rollouts_per_prompt, rl.max_new_tokens, rl.kl_coef, rl.kl_estimator) == (4, 128, 0.05, "k1")
    assert (rl.ppo_epochs, rl.clip_epsilon, rl.token_aggregation, rl.advantage_combiner) == (1, 0.2, "sum", "none")
    assert rl_dimension("x").ideal_rule == "running_min"
    assert config().rl == RLConfig()  # a DPO run keeps the default section


def test_rl_in_yaml_with_set_overrides(tmp_path):
    data = {
        "dimensions": [
            {"name": "helpful", "objective": "rl", "reward": {"type": "refusal"}},
            {"name": "concise", "objective": "rl", "reward": {"type": "length", "unit": "words"}},
        ],
        "rl": {"prompts": [{"path": "data/helpful.jsonl.gz", "split": "fit", "max_prompts": 64}]},
    }
    loaded = TrainConfig.from_yaml(write_yaml(tmp_path, data), ["rl.kl_coef=1e-2", "rl.prompts.0.seed=3"])
    assert loaded.rl.kl_coef == 0.01 and loaded.rl.prompts[0] == PromptSource(
        "data/helpful.jsonl.gz", split="fit", max_prompts=64, seed=3
    )
    with pytest.raises(ValueError, match=r"--set 'rl.ppo_epochs=0': rl.ppo_epochs must be a positive integer"):
        TrainConfig.from_yaml(write_yaml(tmp_path, data), ["rl.ppo_epochs=0"])
    data["dimensions"][0]["reward"] = {"type": "refusal", "threshold": 1}
    with pytest.raises(ValueError, match=r"dimensions.0.reward of 'helpful': unknown key\(s\) \['threshold'\]"):
        TrainConfig.from_yaml(write_yaml(tmp_path, data))


def test_mixing_rl_with_dpo_dimensions_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"\['concise'\] have objective 'rl' and \['helpful'\] do not") as error:
        TrainConfig(
            dimensions=[dimension("helpful"), rl_dimension("concise")],
            rl=RLConfig(prompts=[PromptSource("data/helpful.jsonl.gz")]),
        )
    assert "pair batches and rollout batches on different schedules" in str(error.value)
    assert "not implemented" in str(error.value)


@pytest.mark.parametrize(
    ("rl", "fields", "message"),
    [
        (
            {"rollouts_per_prompt": 1},
            {},
            r"rl.rollouts_per_prompt|RLConfig.rollouts_per_prompt must be an integer >= 2",
        ),
        ({"temperature": 0.0}, {}, r"RLConfig.temperature must be a number in \(0, 2\] \(greedy rollouts"),
        ({"top_p": 0.0}, {}, r"RLConfig.top_p must be a number in \(0, 1\]"),
        ({"kl_coef": -0.1}, {}, r"RLConfig.kl_coef must be a number >= 0"),
        ({"kl_estimator": "k2"}, {}, r"RLConfig.kl_estimator must be one of \('k1', 'k3'\)"),
        ({"clip_epsilon": 1.0}, {}, r"RLConfig.clip_epsilon must be a number in \[0, 1\)"),
        ({"token_aggregation": "max"}, {}, r"RLConfig.token_aggregation must be one of \('sum', 'mean'\)"),
        ({"advantage_combiner": "mgda"}, {}, r"RLConfig.advantage_combiner must be one of"),
        ({"pama_granularity": "batch"}, {}, r"RLConfig.pama_granularity must be left at 'token'"),
        ({"prompts": []}, {}, r"TrainConfig.rl.prompts must be at least one PromptSource"),
        ({"prompts_per_step": 3}, {"preference_sampling": "groups", "preference_groups": 2}, r"rl.prompts_per_step"),
        ({"prompts_per_step": 2, "rollouts_per_prompt": 3}, {"micro_batch_size": 4}, r"micro_batch_size must be a"),
        ({}, {"rpo_alpha": 1.0}, r"rpo_alpha must be None for RL"),
        ({}, {"isolate_dimensions": True}, r"isolate_dimensions must be false for RL \(one rollout's forward pass"),
        (
            {"advantage_combiner": "pama"},
            {"scalarization": "tche"},
            r"advantage_combiner 'pama' replaces the per-dimension losses .* no per-dimension losses for Tchebycheff",
        ),
        (
            {"advantage_combiner": "pama_lambda"},
            {"aggregator": "pcgrad", "preference_sampling": "per_step"},
            r"aggregator 'pcgrad'\); use scalarization 'ls' and aggregator 'none'",
        ),
        (
            {},
            {"aggregator": "mgda", "aggregator_kwargs": {"normalization": "loss"}, "preference_sampling": "per_step"},
            r"normalization 'loss' divides by the losses, but RL's",
        ),
    ],
)
def test_a_bad_rl_setting_is_refused_by_name(rl, fields, message):
    with pytest.raises(ValueError, match=message):
        rl_config(rl, **fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"objective": "rl"}, r"DimensionConfig.reward must be a reward source for objective 'rl'"),
        (
            {"reward": {"type": "length"}, "train": [PairSource("x.jsonl")]},
            r"DimensionConfig.reward must be None for objective 'dpo' \(RL only\)",
        ),
        ({"objective": "rl", "reward": {"type": "length"}, "ideal": 0.5}, r"ideal must be 'auto' or 'running_min'"),
        ({"objective": "rl", "reward": {"type": "lenght"}}, r"reward of 'x'.type: 'lenght' is not one of"),
    ],
)
def test_a_bad_rl_dimension_is_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        DimensionConfig(name="x", **fields)


def test_rl_settings_without_rl_dimensions_are_refused():
    with pytest.raises(ValueError, match=r"TrainConfig.rl is set, but no dimension has objective 'rl'"):
        config(rl=RLConfig(kl_coef=0.2))


def test_an_rl_runs_config_yaml_records_prompt_and_reward_paths_absolutely(tmp_path, monkeypatch):
    from panacea.training.config import with_absolute_data_paths

    from panacea._config import config_to_dict

    monkeypatch.chdir(tmp_path)
    for name in ("prompts.jsonl", "pairs.jsonl"):
        (tmp_path / name).write_text("")
    (tmp_path / "rm").mkdir()
    loaded = TrainConfig(
        dimensions=[
            DimensionConfig("a", objective="rl", reward={"type": "reward_model", "path": "rm"}),
            DimensionConfig(
                "b",
                objective="rl",
                reward={"type": "reward_model", "train": [{"path": "pairs.jsonl"}], "test": [{"path": "pairs.jsonl"}]},
            ),
            DimensionConfig("c", objective="rl", reward={"type": "classifier", "name_or_path": "owner/hub-model"}),
        ],
        rl=RLConfig(prompts=[PromptSource("prompts.jsonl")]),
    )
    saved = with_absolute_data_paths(config_to_dict(loaded))
    assert saved["rl"]["prompts"][0]["path"] == str(tmp_path / "prompts.jsonl")
    assert saved["dimensions"][0]["reward"]["path"] == str(tmp_path / "rm")
    assert saved["dimensions"][1]["reward"]["train"][0]["path"] == str(tmp_path / "pairs.jsonl")
    assert saved["dimensions"][2]["reward"]["name_or_path"] == "owner/hub-model"  # not local: a hub id stays


def _saved_with_data_in(root: str) -> dict:
    """A run's saved config as a dict, its data (pairs, eval pairs, RL prompts, a reward's fit pairs) under `root`."""
    return {
        "rl": {"prompts": [{"path": f"{root}/data/prompts.jsonl"}]},
        "dimensions": [
            {
                "name": "helpful",
                "train": [{"path": f"{root}/data/helpful.jsonl"}],
                "eval": [{"path": f"{root}/data/helpful.jsonl"}],
            },
            {
                "name": "harmless",
                "reward": {"kind": "reward_model", "train": [{"path": f"{root}/data/harmless.jsonl"}]},
            },
        ],
    }


def _paths(config: dict) -> list[str]:
    return [source[key] for source, key in data_path_slots(config)]


def test_data_that_moved_as_one_tree_is_followed_to_where_it_lies_now():
    saved, now = _saved_with_data_in("/old/project"), _saved_with_data_in("/new/place/renamed")
    assert _paths(follow_moved_data(saved, now)) == _paths(now)
    assert _paths(saved) == _paths(_saved_with_data_in("/old/project"))  # a copy: the saved config is not changed


@pytest.mark.parametrize(
    "change",
    [
        "one file of the tree moved, the others stayed",
        "a file renamed",
        "two files moved to two places",
        "a hub id",
        "a version folder renamed",
    ],
)
def test_data_that_did_not_move_as_one_tree_stays_as_saved(change):
    """Only a tree moved whole is the same data by location; anything else stays a changed config (its paths differ)."""
    saved = _saved_with_data_in("/old/project")
    now = _saved_with_data_in(
        "/old/project" if change in ("one file of the tree moved, the others stayed", "a hub id") else "/new/place"
    )
    if change == "one file of the tree moved, the others stayed":
        now["dimensions"][0]["train"][0]["path"] = "/new/place/data/helpful.jsonl"
    elif change == "a file renamed":
        now["dimensions"][1]["reward"]["train"][0]["path"] = "/new/place/data/harmless-v2.jsonl"
    elif change == "two files moved to two places":
        now["rl"]["prompts"][0]["path"] = "/elsewhere/data/prompts.jsonl"
    elif change == "a hub id":
        saved["dimensions"][0]["train"][0]["path"] = "owner/helpful"
        now["dimensions"][0]["train"][0]["path"] = "owner/helpful-v2"
    else:  # data/v1/… → data/v2/…: the same file names, other data; only the file name is kept
        saved, now = _saved_with_data_in("/old/project/v1"), _saved_with_data_in("/old/project/v2")
        for config in (saved, now):
            for source, key in data_path_slots(config):
                source[key] = source[key].replace("/data/", "/")
    assert _paths(follow_moved_data(saved, now)) == _paths(saved) != _paths(now)


def test_a_run_that_moved_with_its_data_finds_it_below_a_folder_that_holds_it_and_keeps_hub_ids(tmp_path):
    """`moved_tree_paths` (what `panacea eval` follows, once data.json agrees): the data, gone from /old/project, is
    found below the renamed project folder that now holds the run. A hub id among the sources is kept and does not
    stop the move (an existence check over every slot refused it)."""
    saved = _saved_with_data_in(str(tmp_path / "old" / "project"))
    saved["dimensions"][0]["eval"].append({"path": "owner/hub-dataset"})
    new = tmp_path / "new" / "place"
    (new / "data").mkdir(parents=True)
    for name in ("prompts", "helpful", "harmless"):
        (new / "data" / f"{name}.jsonl").write_text("")
    (new / "runs" / "run").mkdir(parents=True)
    moved = moved_tree_paths(saved, new / "runs" / "run")
    expected = [str(new / "data" / f"{name}.jsonl") for name in ("prompts", "helpful", "helpful")]
    assert _paths(moved) == [*expected, "owner/hub-dataset", str(new / "data" / "harmless.jsonl")]
    assert moved_tree_paths(saved, tmp_path / "elsewhere" / "run") is None  # not below the folder that holds the data
    (new / "data" / "harmless.jsonl").unlink()  # one file of the tree is found nowhere: not a move
    assert moved_tree_paths(saved, new / "runs" / "run") is None


def test_a_copy_whose_original_is_still_there_is_not_followed_and_a_file_outside_the_tree_may_stay(tmp_path):
    """Only a move: where the old files still exist (a copied checkout, whose files may differ in what data.json
    does not check, such as the eval sets), the paths stay as saved. A file that stayed outside the folder the others
    left does not stop a move (/srv/proj → /opt/proj beside an unmoved /srv/shared/…)."""
    old, new = tmp_path / "srv" / "proj", tmp_path / "opt" / "proj"
    saved, now = _saved_with_data_in(str(old)), _saved_with_data_in(str(new))
    shared = str(tmp_path / "srv" / "shared" / "t.jsonl")
    saved["dimensions"][0]["eval"][0]["path"] = now["dimensions"][0]["eval"][0]["path"] = shared
    assert _paths(follow_moved_data(saved, now)) == _paths(now)  # moved: nothing is at the old place
    (old / "data").mkdir(parents=True)
    (old / "data" / "helpful.jsonl").write_text("")  # the original of a copy
    assert _paths(follow_moved_data(saved, now)) == _paths(saved)
