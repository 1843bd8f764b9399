"""QTConfig: validation messages and JSON round trips."""

import pytest

import qtrain
from qtrain import QTConfig


def test_json_round_trip_keeps_every_field(tmp_path):
    cfg = QTConfig(depth=5, ansatz="ry-rz-cz", mapping="mlp", mapping_hidden=(8, 3), activation="tanh", seed=4)
    assert QTConfig.from_json(cfg.to_json()) == cfg
    cfg.save(tmp_path / "c.json")
    assert QTConfig.from_file(tmp_path / "c.json") == cfg
    assert cfg.to_dict()["qtrain_version"] == qtrain.__version__


def test_resolved_defaults_depend_on_the_mapping():
    paper, mlp = QTConfig(mapping="paper"), QTConfig()
    assert paper.resolved_hidden == (4, 20, 4) and paper.resolved_activation == "none"
    assert paper.resolved_weight_scale == "none"
    assert mlp.resolved_activation == "gelu" and mlp.resolved_weight_scale == "init"


def test_a_config_file_that_does_not_parse_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"depth": 3,,}')
    with pytest.raises(ValueError, match=r"cannot parse QTConfig from .*bad.json: .* line 1"):
        QTConfig.from_file(path)
    with pytest.raises(TypeError, match="JSON object"):
        QTConfig.from_json("[1, 2]")


def test_unknown_keys_are_dropped_with_a_warning():
    with pytest.warns(UserWarning, match=r"unknown QTConfig keys \['future_field'\]"):
        cfg = QTConfig.from_dict({"depth": 3, "future_field": 1})
    assert cfg.depth == 3


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"depth": 0}, ValueError, "`depth` must be >= 1, got 0"),
        ({"depth": "3"}, TypeError, "`depth` must be an int"),
        ({"ansatz": "bogus"}, ValueError, r"Invalid `ansatz` 'bogus'. Must be one of \["),
        ({"mapping": "tt"}, ValueError, r"Invalid `mapping` 'tt'. Must be one of \['mlp', 'paper', 'mps'\]"),
        ({"mapping_hidden": (4, 0)}, ValueError, "`mapping_hidden` must be a sequence of positive ints"),
        ({"activation": "swish"}, ValueError, "Invalid `activation`"),
        ({"mapping": "paper", "activation": "relu"}, ValueError, "affine reference preset"),
        ({"dtype": "float16"}, ValueError, "Invalid `dtype`"),
        ({"n_qubits": 0}, ValueError, "`n_qubits` must be >= 1"),
        ({"transform_alpha": -1}, ValueError, "`transform_alpha` must be a positive number"),
        ({"weight_scale": "big"}, ValueError, "Invalid `weight_scale`"),
    ],
)
def test_bad_fields_name_the_field_and_the_rule(kwargs, error, message):
    with pytest.raises(error, match=message):
        QTConfig(**kwargs)
