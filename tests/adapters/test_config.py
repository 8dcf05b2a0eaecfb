import pytest

from panacea import PanaceaConfig


def test_defaults_follow_algorithms_md():
    config = PanaceaConfig()
    assert (config.svd_rank, config.num_preferences, config.target_modules) == (8, 2, "all-linear")
    assert config.rank == 10
    assert config.scaling == 1.0  # alpha defaults to k + m
    assert (config.init, config.init_std) == ("gaussian", 0.02)
    assert (config.init_singular_value, config.init_preference_scale) == (None, None)  # the scheme's defaults:
    assert config.initial_diagonal() == (0.0, 0.0)  # σ = s = 0
    assert config.orthogonality_weight == 0.0
    assert config.preference_names is None


def test_scaling_is_alpha_over_rank():
    assert PanaceaConfig(svd_rank=6, num_preferences=2, alpha=16).scaling == 2.0


def test_round_trip_through_dict():
    config = PanaceaConfig(svd_rank=4, num_preferences=3, target_modules=["q_proj", "v_proj"], dropout=0.1)
    assert PanaceaConfig.from_dict(config.to_dict()) == config


def test_unknown_keys_are_named_with_their_source():
    with pytest.raises(ValueError, match=r"my.yaml: unknown PanaceaConfig key\(s\) \['svd_rnak'\]"):
        PanaceaConfig.from_dict({"svd_rnak": 4}, where="my.yaml")


def test_non_mapping_is_rejected():
    with pytest.raises(ValueError, match="expected a mapping"):
        PanaceaConfig.from_dict([1, 2])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("svd_rank", -1),
        ("svd_rank", 2.5),
        ("num_preferences", 0),
        ("num_preferences", True),
        ("target_modules", []),
        ("target_modules", [""]),
        ("exclude_modules", 3),
        ("alpha", 0),
        ("dropout", 1.0),
        ("init", "kaiming"),
        ("init_std", 0.0),
        ("init_preference_scale", float("nan")),
        ("init_singular_value", float("inf")),
        ("init_singular_value", "1"),
        ("preference_names", ["helpful"]),
        ("preference_names", ["helpful", "helpful"]),
        ("preference_names", ["helpful", ""]),
        ("preference_names", ["helpful", 3]),
        ("preference_names", ["helpful", "harm,less"]),
        ("preference_names", ["helpful", "harmless=1"]),
        ("preference_names", ["helpful", " harmless"]),
        ("preference_names", "helpful,harmless"),
        ("orthogonality_weight", -0.1),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"PanaceaConfig\.{field} must be"):
        PanaceaConfig(**{field: value})


def test_bad_value_from_dict_names_the_source():
    with pytest.raises(ValueError, match=r"run.yaml: dropout must be"):  # the key as the file writes it
        PanaceaConfig.from_dict({"dropout": 2}, where="run.yaml")


def test_preference_names_are_kept_in_order_and_a_tuple_becomes_a_list():
    config = PanaceaConfig(num_preferences=3, preference_names=("helpful", "harmless", "concise"))
    assert config.preference_names == ["helpful", "harmless", "concise"]
    assert PanaceaConfig.from_dict(config.to_dict()) == config


def test_bad_preference_names_say_what_is_expected():
    with pytest.raises(ValueError, match=r"a list of 2 distinct names.*got \['a', 'b', 'c'\]"):
        PanaceaConfig(preference_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"repeated: \['a'\]"):
        PanaceaConfig(preference_names=["a", "a"])


def test_a_config_saved_before_preference_names_and_init_singular_value_still_loads():
    old = {  # adapter_config.json ['adapter'] as written before these fields existed
        "svd_rank": 8,
        "num_preferences": 2,
        "target_modules": "all-linear",
        "exclude_modules": None,
        "alpha": None,
        "dropout": 0.0,
        "init": "gaussian",
        "init_std": 0.02,
        "init_preference_scale": 0.0,
        "orthogonality_weight": 0.0,
    }
    config = PanaceaConfig.from_dict(old)
    assert config.preference_names is None and config.init_singular_value is None
    assert config.initial_diagonal() == (0.0, 0.0)


@pytest.mark.parametrize(
    ("settings", "diagonal"),
    [
        ({"init": "lora"}, (1.0, 1.0)),  # B = 0 keeps ΔW = 0; a non-zero d gives B its gradient
        ({"init": "gaussian"}, (0.0, 0.0)),
        ({"init": "orthogonal"}, (0.0, 0.0)),
        ({"init": "svd"}, (0.0, 0.0)),
        ({"init": "lora", "init_singular_value": 0.5, "init_preference_scale": 2}, (0.5, 2.0)),
        ({"init": "lora", "init_singular_value": 0.0}, (0.0, 1.0)),
        ({"init": "orthogonal", "init_preference_scale": 8.0}, (0.0, 8.0)),
        ({"init": "gaussian", "init_singular_value": 0.1}, (0.1, 0.0)),
    ],
)
def test_initial_diagonal_is_the_scheme_default_unless_given(settings, diagonal):
    assert PanaceaConfig(**settings).initial_diagonal() == diagonal


@pytest.mark.parametrize(
    "settings",
    [
        {"init_singular_value": 0.0, "init_preference_scale": 0.0},
        {"svd_rank": 0, "init_preference_scale": 0.0},  # no σ at all, and s = 0
    ],
)
def test_lora_init_with_a_zero_diagonal_is_refused(settings):
    # B = 0 and d = 0: every adapter gradient is zero, at step 0 and forever after.
    with pytest.raises(ValueError, match="init='lora' starts from B = 0, so it needs a non-zero"):
        PanaceaConfig(init="lora", **settings)
    PanaceaConfig(init="lora", **{**settings, "init_preference_scale": 1.0})  # s ≠ 0 is enough
