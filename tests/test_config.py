import pytest

from sceneparse.config import Config, config_from_dict, load_config, parse_overrides, save_config
from sceneparse.errors import ConfigError


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 0.1\n  steps: [3, 4]\ntrain:\n  epochs: 3\nmodel:\n  kwargs: {min_size: 256}\n")
    cfg = load_config(p, ["optim.lr=0.01", "train.amp=true", "model.kwargs.max_size=400", "data.scale_jitter=[0.8,1.2]"])
    assert cfg.optim.lr == 0.01 and cfg.optim.steps == (3, 4) and cfg.train.epochs == 3 and cfg.train.amp is True
    assert cfg.model.kwargs == {"min_size": 256, "max_size": 400}
    assert cfg.data.scale_jitter == (0.8, 1.2)
    save_config(cfg, tmp_path / "out.yaml")
    again = load_config(tmp_path / "out.yaml")
    assert again == cfg


def test_unknown_keys_and_bad_types_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(None, ["train.epochs=abc"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.lr"])
    p = tmp_path / "bad.yaml"
    p.write_text("data:\n  nope: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'data.nope'"):
        load_config(p)


def test_int_to_float_coercion_and_round_trip_dict():
    cfg = load_config(None, ["optim.lr=1"])
    assert isinstance(cfg.optim.lr, float)
    assert config_from_dict(Config().to_dict()) == Config()


def test_override_mappings_merge_and_training_keys():
    cfg = load_config(None, ["model.kwargs.min_size=64", "model.kwargs={base_channels: 4}", "train.time_limit_min=0.5",
                             "train.checkpoint_every=100", "train.freeze_bn=true", "data.val_semantic=sem/val"])
    assert cfg.model.kwargs == {"min_size": 64, "base_channels": 4}
    assert (cfg.train.time_limit_min, cfg.train.checkpoint_every, cfg.train.freeze_bn) == (0.5, 100, True)
    assert cfg.data.val_semantic == "sem/val" and Config().train.time_limit_min is None
    with pytest.raises(ConfigError, match="'epochs' was given a value, it has no sub-keys"):
        parse_overrides(["train.epochs=3", "train.epochs.x=1"])
