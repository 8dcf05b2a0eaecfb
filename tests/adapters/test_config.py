import pytest

from panacea import PanaceaConfig


def test_defaults_follow_algorithms_md():
    config = PanaceaConfig()
    assert (config.svd_rank, config.num_preferences, config.target_modules) == (8, 2, "all-linear")
    assert config.rank == 10
    assert config.scaling == 1.0  # alpha defaults to k + m
    assert (config.init, config.init_std, config.init_preference_scale) == ("gaussian", 0.02, 0.0)
    assert config.orthogonality_weight == 0.0


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
        ("orthogonality_weight", -0.1),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"PanaceaConfig\.{field} must be"):
        PanaceaConfig(**{field: value})


def test_bad_value_from_dict_names_the_source():
    with pytest.raises(ValueError, match=r"run.yaml: PanaceaConfig\.dropout must be"):
        PanaceaConfig.from_dict({"dropout": 2}, where="run.yaml")
