"""A bench table's table.yaml names its tasks' metric columns and the tasks `bench throughput` times: the benches
know no task by name, so another task set is another table.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtbert.bench.quality import load_reference
from mtbert.errors import ConfigError
from mtbert.presets import table_dir

TABLE = """backbone: a backbone
reference: {name: a paper, table: table 2, about: on a GPU}
columns: {nli_acc: NLI acc, sick_corr: SICK corr}
footnote: NLI here is a subset.
throughput: {train_tasks: [nli], predict_tasks: [nli, sick]}
rows:
  multitask:
    note: both tasks
    reference: {nli_acc: 0.8, overall: 0.85}
extra_row_note: extra row `{row}`
"""


def test_the_shipped_table_names_the_course_columns_and_timed_tasks():
    ref = load_reference(table_dir("cs224n"))
    assert ref.metrics == ("sst_acc", "para_acc", "sts_corr", "overall")
    assert ref.throughput_tasks == (("sst", "sts"), ("para", "sts"))
    assert "14k-pair" in ref.footnote


def test_the_snips_rows_differ_from_the_recipe_only_in_what_they_compare():
    """Every row of the SNIPS table trains with joint.yaml's recipe; a row changes only its method, its surgery
    scope or its tasks (a one-task row: joint.yaml's task of that name, without the group)."""
    import yaml

    folder = table_dir("cs224n").parent / "snips"
    recipe = yaml.safe_load((folder / "joint.yaml").read_text())
    compared = {"output_dir", "method", "surgery_scope", "metric_for_best_model", "tasks"}
    rows = ["intent", "slots", "joint-sum", "joint-pcgrad"]
    for row in rows:
        config = yaml.safe_load((folder / f"{row}.yaml").read_text())
        assert {k: v for k, v in config.items() if k not in compared} == \
            {k: v for k, v in recipe.items() if k not in compared}, row
        for task in config["tasks"]:
            own = next(t for t in recipe["tasks"] if t["name"] == task["name"])
            if len(config["tasks"]) == 1:
                own = {k: v for k, v in own.items() if k != "input_group"}
            assert task == own, (row, task["name"])


def test_another_task_set_is_another_table(tmp_path: Path):
    (tmp_path / "table.yaml").write_text(TABLE)
    ref = load_reference(tmp_path)
    assert ref.metrics == ("nli_acc", "sick_corr", "overall") and ref.columns["sick_corr"] == "SICK corr"
    assert ref.throughput_tasks == (("nli",), ("nli", "sick"))
    assert ref.row("multitask").reference == {"nli_acc": 0.8, "overall": 0.85}


@pytest.mark.parametrize(("old", "new", "message"), [
    ("columns: {nli_acc: NLI acc, sick_corr: SICK corr}", "columns: {overall: Overall}", "columns: name each task"),
    ("columns: {nli_acc: NLI acc, sick_corr: SICK corr}\n", "", "columns"),
    ("reference: {nli_acc: 0.8, overall: 0.85}", "reference: {sst_acc: 0.5}", "sst_acc"),
    ("throughput: {train_tasks: [nli], predict_tasks: [nli, sick]}", "throughput: {tasks: [nli]}", "tasks"),
])
def test_a_bad_table_is_one_sentence_naming_the_key(tmp_path: Path, old: str, new: str, message: str):
    (tmp_path / "table.yaml").write_text(TABLE.replace(old, new))
    with pytest.raises(ConfigError, match=message):
        load_reference(tmp_path)
