"""Configs: shipped files load, bad keys and values get one sentence naming the key, overrides, safe YAML."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtbert.config import TrainConfig, build_config, load_config, merge, parse_overrides, stage2_config
from mtbert.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for p in (ROOT / "configs").rglob("*") if p.suffix in (".yaml", ".yml") and p.stem != "table")


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    specs = cfg.task_specs()
    assert specs and set(cfg.ratios()) == {s.name for s in specs}
    if cfg.two_step is not None:
        stage2_config(cfg)


def test_there_is_a_shipped_config():
    assert ROOT / "configs" / "smoke.yaml" in SHIPPED


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- exact messages for bad keys and values ----------------------------------------------------------------------
BAD = [
    ({"learning_rat": 1e-5}, "learning_rat: unknown config key (see `mtbert train --help` for the keys)"),
    ({"max_length": "long"}, "max_length: must be an integer, not 'long'"),
    ({"max_length": 12.5}, "max_length: must be an integer, not 12.5"),
    ({"max_length": True}, "max_length: must be an integer, not True"),
    ({"max_length": [64]}, "max_length: must be an integer, not [64]"),
    ({"max_length": None}, "max_length: must not be empty"),
    ({"max_length": float("inf")}, "max_length: must be an integer, not inf"),
    ({"seed": "nan"}, "seed: must be an integer, not 'nan'"),
    ({"learning_rate": "fast"}, "learning_rate: must be a number, not 'fast'"),
    ({"learning_rate": "nan"}, "learning_rate: must be a finite number, not 'nan'"),
    ({"learning_rate": float("inf")}, "learning_rate: must be a finite number, not inf"),
    ({"learning_rate": False}, "learning_rate: must be a number, not False"),
    ({"sample_weighting": "maybe"}, "sample_weighting: must be true or false, not 'maybe'"),
    ({"method": ["sum"]}, "method: must be a string, not ['sum']"),
    ({"tasks": "sst"}, "tasks: must be a non-empty list"),
    ({"tasks": []}, "tasks: must be a non-empty list"),
    ({"two_step": 3}, "two_step: must be a mapping of keys to values"),
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size: must be a positive integer, not 0"),
    ({"per_device_eval_batch_size": -8}, "per_device_eval_batch_size: must be a positive integer, not -8"),
    ({"samples_per_task_per_epoch": 0}, "samples_per_task_per_epoch: must be a positive integer, not 0"),
    ({"max_length": 0}, "max_length: must be a positive integer, not 0"),
    ({"max_length": 4}, "max_length: must be at least 8 tokens"),
    ({"logging_steps": 0}, "logging_steps: must be a positive integer, not 0"),
    ({"max_bad_steps": -1}, "max_bad_steps: must be a positive integer, not -1"),
    ({"max_train_samples": 0}, "max_train_samples: must be a positive integer or empty, not 0"),
    ({"max_eval_samples": -5}, "max_eval_samples: must be a positive integer or empty, not -5"),
    ({"save_total_limit": 0}, "save_total_limit: must be a positive integer or empty, not 0"),
    ({"num_train_epochs": 0}, "num_train_epochs: must be positive (or set max_steps)"),
    ({"learning_rate": 0}, "learning_rate: must be positive, not 0.0"),
    ({"head_learning_rate": -1}, "head_learning_rate: must be positive, not -1.0"),
    ({"layerwise_lr_decay": 0}, "layerwise_lr_decay: must be in (0, 1], not 0.0"),
    ({"layerwise_lr_decay": 1.5}, "layerwise_lr_decay: must be in (0, 1], not 1.5"),
    ({"weight_decay": -0.1}, "weight_decay: must be >= 0, not -0.1"),
    ({"warmup_steps": -1}, "warmup_steps: must be >= 0, not -1"),
    ({"warmup_ratio": 1.0}, "warmup_ratio: must be in [0, 1), not 1.0"),
    ({"max_grad_norm": -1}, "max_grad_norm: must be >= 0 (0 turns clipping off)"),
    ({"dropout": 1}, "dropout: must be in [0, 1), not 1.0"),
    ({"save_steps": -1}, "save_steps: must be >= 0 (0 saves no periodic checkpoint)"),
    ({"pair_architecture": "siamese"}, "pair_architecture: 'siamese' is not one of cross | bi-cosine | bi-concat"),
    ({"pooling": "max"}, "pooling: 'max' is not one of cls | mean"),
    ({"eval_strategy": "always"}, "eval_strategy: 'always' is not one of epoch | steps | no"),
    ({"eval_strategy": "steps"}, "eval_steps: must be set when eval_strategy is steps"),
    ({"sts_loss": "l1"}, "sts_loss: 'l1' is not one of mse | cosent"),
    ({"bf16": "yes"}, "bf16: 'yes' is not one of auto | true | false"),
    ({"report_to": "comet"}, "report_to: 'comet' is not one of none | tensorboard | mlflow | wandb"),
    ({"ddp_mode": "fast"}, "ddp_mode: 'fast' is not one of exact | local"),
    ({"tasks": ["sst", "sst"]}, "tasks: task names must be unique"),
    ({"method": "single"}, "method: single trains one task, but tasks lists 3"),
    ({"task_ratio": "1:2"}, "task_ratio: '1:2' has 2 parts but there are 3 tasks (sst, para, sts)"),
    ({"task_ratio": "1:2:3:4"}, "task_ratio: '1:2:3:4' has 4 parts but there are 3 tasks (sst, para, sts)"),
    ({"task_ratio": "1:x:1"}, "task_ratio: '1:x:1' must be non-negative integers joined by ':'"),
    ({"task_ratio": "0:0:0"}, "task_ratio: '0:0:0' must be non-negative integers, not all 0"),
    ({"task_ratio": "1:-1:1"}, "task_ratio: '1:-1:1' must be non-negative integers, not all 0"),
    ({"tasks": ["sst", "qnli"]}, "tasks[1]: unknown task 'qnli'; built-in tasks are sst, para, sts, "
                                 "or declare one as a mapping with name, kind and files"),
    ({"tasks": [{"name": "sst", "colour": 1}]}, "tasks[0].colour: unknown task key; known keys are choices_column, "
                                                "dataset, dataset_config, delimiter, dev_file, dev_split, "
                                                "head_hidden_sizes, id_column, kind, label_column, label_max, "
                                                "label_min, label_names, label_separator, metric, name, num_labels, "
                                                "output_header, test_file, test_split, text_columns, threshold, "
                                                "train_file, train_split, tuned_thresholds"),
    ({"two_step": {"learning_rate": "x"}}, "two_step.learning_rate: must be a number, not 'x'"),
    ({"two_step": {"max_length": 0}}, "two_step.max_length: must be a positive integer, not 0"),
    ({"two_step": {"tasks": ["sst"]}}, "two_step.tasks: not a key that stage 2 can change"),
    ({"two_step": {"foo": 1}}, "two_step.foo: not a key that stage 2 can change"),
]


@pytest.mark.parametrize(("raw", "message"), BAD, ids=[next(iter(r)) + f"-{i}" for i, (r, _) in enumerate(BAD)])
def test_bad_value_names_the_key_in_one_sentence(raw, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        build_config(raw)


def test_defaults_validate():
    cfg = build_config({})
    assert cfg.tasks == ["sst", "para", "sts"] and cfg.ratios() == {"sst": 1, "para": 1, "sts": 1}


def test_values_are_coerced_to_their_types():
    cfg = build_config({"max_length": "64", "learning_rate": "3e-5", "num_train_epochs": 2, "sample_weighting": "True",
                        "seed": 4294967295, "max_steps": 1e3, "task_ratio": "0:3:1"})
    assert (cfg.max_length, cfg.learning_rate, cfg.num_train_epochs) == (64, 3e-5, 2.0)
    assert cfg.sample_weighting is True and cfg.seed == 4294967295 and cfg.max_steps == 1000
    assert cfg.ratios() == {"sst": 0, "para": 3, "sts": 1}


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=f"^{re.escape(str(tmp_path / 'nope.yaml'))}: config file not found$"):
        load_config(tmp_path / "nope.yaml")


def test_config_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path, "- sst\n- para\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: must be a mapping of keys to values$"):
        load_config(path)


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "seed: 1\ntasks: [sst, para\nmethod: sum\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}, line \\d+: not valid YAML$"):
        load_config(path)


def test_non_utf8_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"output_dir: caf\xe9\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: not valid YAML$"):
        load_config(path)


def test_empty_config_is_all_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing\n")) == TrainConfig()


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system",
                                 "!!python/name:os.system", "!!python/object:mtbert.config.TrainConfig"])
def test_python_tags_are_refused_not_executed(tmp_path, tag):
    marker = tmp_path / "executed"
    path = write(tmp_path, f"seed: 1\noutput_dir: {tag} [\"touch {marker}\"]\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}, line 2: not valid YAML$"):
        load_config(path)
    assert not marker.exists()
    # On the command line, a value that is not safe YAML is kept as the literal text, never run.
    text = f"{tag} [\"touch {marker}\"]"
    assert build_config(parse_overrides(["--output_dir", text])).output_dir == text
    assert not marker.exists()


def test_task_ratio_like_a_clock_stays_a_ratio(tmp_path):
    # YAML 1.1 reads an unquoted 1:2:1 as the base-60 number 3721; a ratio must stay a ratio.
    cfg = load_config(write(tmp_path, "task_ratio: 1:2:1\n"))
    assert cfg.task_ratio == "1:2:1" and cfg.ratios() == {"sst": 1, "para": 2, "sts": 1}
    cfg = load_config(write(tmp_path, "seed: 1\n"), parse_overrides(["--task_ratio", "1:1:1"]))
    assert cfg.ratios() == {"sst": 1, "para": 1, "sts": 1}


@pytest.mark.parametrize("word", ["no", "No", "off", "yes", "on"])
def test_yaml_1_1_boolean_words_stay_strings(tmp_path, word):
    # YAML 1.1 reads no/yes/on/off as booleans: `eval_strategy: no` must mean the strategy `no`.
    assert load_config(write(tmp_path, f"output_dir: {word}\n")).output_dir == word
    if word == "no":
        assert load_config(write(tmp_path, "eval_strategy: no\n")).eval_strategy == "no"
        assert build_config(parse_overrides(["--eval_strategy", "no"])).eval_strategy == "no"
    assert load_config(write(tmp_path, "sample_weighting: true\n")).sample_weighting is True


@pytest.mark.parametrize(("text", "value"), [("bf16: true", "true"), ("bf16: false", "false"), ("bf16: auto", "auto")])
def test_bf16_accepts_yaml_booleans(tmp_path, text, value):
    assert load_config(write(tmp_path, text + "\n")).bf16 == value


def test_tasks_declared_in_yaml(tmp_path):
    text = """
tasks:
  - sst
  - name: sts
    train_file: my-sts.csv
  - name: nli
    kind: pair-classification
    train_file: nli-train.csv
    dev_file: nli-dev.csv
    text_columns: [premise, hypothesis]
    label_column: label
    num_labels: 3
task_ratio: "1:1:2"
"""
    cfg = load_config(write(tmp_path, text))
    sst, sts, nli = cfg.task_specs()
    assert sts.train_file == "my-sts.csv" and sts.dev_file == "sts-dev.csv" and sts.is_regression
    assert nli.num_outputs == 3 and nli.text_columns == ("premise", "hypothesis")
    assert cfg.ratios() == {"sst": 1, "sts": 1, "nli": 2}


# ---- overrides -------------------------------------------------------------------------------------------------
def test_parse_overrides_nests_dotted_keys_and_reads_values_as_yaml():
    assert parse_overrides(["--two_step.learning_rate", "3e-6", "--seed", "7", "--tasks", "[sst]",
                            "--sample-weighting", "true", "--output_dir", "runs/x", "--two_step.init_from", "a"]) == {
        "two_step": {"learning_rate": "3e-6", "init_from": "a"},
        "seed": 7,
        "tasks": ["sst"],
        "sample_weighting": True,
        "output_dir": "runs/x",
    }
    assert parse_overrides([]) == {}


def test_overrides_apply_on_top_of_the_file(tmp_path):
    path = write(tmp_path, "seed: 1\nlearning_rate: 1.0e-5\ntwo_step:\n  num_train_epochs: 2\n")
    cfg = load_config(path, parse_overrides(["--two_step.learning_rate", "3e-6", "--seed", "9", "--max-length", "64"]))
    assert (cfg.seed, cfg.learning_rate, cfg.max_length) == (9, 1e-5, 64)
    assert cfg.two_step == {"num_train_epochs": 2, "learning_rate": "3e-6"}
    stage2 = stage2_config(cfg)
    assert (stage2.learning_rate, stage2.num_train_epochs, stage2.seed, stage2.two_step) == (3e-6, 2.0, 9, None)


def test_merge_keeps_nested_keys():
    assert merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}, "c": 4}) == {"a": {"x": 1, "y": 3}, "b": 1, "c": 4}


@pytest.mark.parametrize(("argv", "message"), [
    (["--learning_rat", "1e-5"], "learning_rat: unknown config key (see `mtbert train --help` for the keys)"),
    (["--two_step.learning_rat", "1e-5"], "two_step.learning_rat: not a key that stage 2 can change"),
    (["--x.y", "1"], "x: unknown config key (see `mtbert train --help` for the keys)"),
    (["--max_length", "big"], "max_length: must be an integer, not 'big'"),
    (["--max_length", "inf"], "max_length: must be an integer, not 'inf'"),
    (["--max_length", "0"], "max_length: must be a positive integer, not 0"),
    (["--two_step.max_length", "0"], "two_step.max_length: must be a positive integer, not 0"),
    (["--task_ratio", "1:2"], "task_ratio: '1:2' has 2 parts but there are 3 tasks (sst, para, sts)"),
])
def test_bad_override_names_the_key(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_config(write(tmp_path, "seed: 1\n"), parse_overrides(argv))


@pytest.mark.parametrize(("argv", "message"), [
    (["--seed"], "--seed: an override needs a value (--key value)"),
    (["--seed", "1", "--lr"], "--lr: an override needs a value (--key value)"),
    (["seed", "1"], "seed: expected an option of the form --key value"),
    (["--", "1"], "--: expected an option of the form --key value"),
    (["-s", "1"], "-s: expected an option of the form --key value"),
])
def test_malformed_overrides(argv, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        parse_overrides(argv)


# ---- property: any value for any key is accepted or refused with one sentence naming the key -----------------------
KEYS = [f.name for f in dataclasses.fields(TrainConfig)]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
    | st.sampled_from(["sst", "1:2:1", "0:1:0", "steps", "cosent", "mean", "bi-cosine", "pcgrad", "auto", "1e3",
                       "-1", "0", ".inf", "nan", "true", "single", "sum"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS + ["name", "kind", "x"]),
                                                               inner, max_size=3),
    max_leaves=6,
)
KEY_PATTERN = re.compile(r"^(two_step\.)?[a-z_0-9]+(\[\d+\])?(\.[a-z_0-9]+)?: \S")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
def test_any_value_is_accepted_or_refused_naming_the_key(raw):
    try:
        cfg = build_config(raw)
    except ConfigError as err:
        message = str(err)
        assert KEY_PATTERN.match(message), message
        return
    cfg.task_specs()
    cfg.ratios()
    yaml.safe_dump(cfg.to_dict())  # the resolved config can be saved


def test_key_equals_value_overrides():
    assert parse_overrides(["--seed=3", "--two_step.learning_rate=3e-6", "--output_dir", "runs/a=b"]) == {
        "seed": 3, "two_step": {"learning_rate": "3e-6"}, "output_dir": "runs/a=b"}
    with pytest.raises(ConfigError, match=r"^seed: must not be empty$"):
        build_config(parse_overrides(["--seed="]))


@pytest.mark.parametrize(("argv", "message"), [
    (["--seed", "1", "--seed.x", "2"], "seed: cannot be both a value and a mapping of nested keys"),
    (["--two_step.seed", "1", "--two_step", "2"], "two_step: cannot be both a value and a mapping of nested keys"),
])
def test_a_key_cannot_be_a_value_and_nested(argv, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        parse_overrides(argv)


FLAGS = st.sampled_from(["--seed", "--two_step", "--two_step.seed", "--two_step.learning_rate", "--tasks", "--x",
                         "--max-length", "--task_ratio", "--seed.x", "--", "-s", "seed", "--bf16", "--seed=1"])
ARG_VALUES = st.sampled_from(["1", "-1", "3e-6", "1:2:1", "[sst]", "{a: 1}", "{seed: 2}", "true", "", "[", "!!x y",
                              "!!python/name:os.system", "--seed=2", "null", ".nan"]) | st.text(max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(argv=st.lists(FLAGS | ARG_VALUES, max_size=6))
def test_any_command_line_is_accepted_or_refused_with_a_config_error(argv):
    try:
        build_config(parse_overrides(argv))
    except ConfigError as err:
        assert ": " in str(err), str(err)


def test_every_config_key_has_help_in_train_help():
    import dataclasses

    from mtbert.cli import build_parser
    from mtbert.config import TrainConfig

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name  # the help text lives next to the field
        assert f"--{f.name:<30} {f.metadata['help']}" in train.epilog


def test_method_options_from_the_file_and_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: cagrad\nmethod_options: {c: 0.4}\n", encoding="utf-8")
    assert load_config(path).method_options == {"c": 0.4}
    assert load_config(path, parse_overrides(["--method_options.c", "0.2"])).method_options == {"c": 0.2}
    assert build_config({}).method_options is None
    with pytest.raises(ConfigError, match=r"^method_options: must be a mapping"):
        build_config({"method": "cagrad", "method_options": [0.4]})
    with pytest.raises(ConfigError, match=r"^method_options\.c: must be a single value, not \{'x': 1\}$"):
        build_config({"method": "cagrad", "method_options": {"c": {"x": 1}}})
    with pytest.raises(ConfigError, match=r"^two_step\.method_options: not a key that stage 2 can change$"):
        build_config({"method": "cagrad", "two_step": {"method_options": {"c": 0.1}}})
