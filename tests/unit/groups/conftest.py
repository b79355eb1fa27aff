"""Fixtures of the input_group tests: a tiny JSON Lines file whose rows carry two labels of the same words."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.groups import group_tasks, write_group_data


@pytest.fixture(scope="session")
def group_data_dir(tiny_data_dir, tmp_path_factory) -> Path:
    """The tiny CS224N files and the group's files, in one folder."""
    folder = tmp_path_factory.mktemp("group-data") / "data"
    shutil.copytree(tiny_data_dir, folder)
    return write_group_data(folder)


@pytest.fixture()
def group_config(tiny_config, group_data_dir) -> dict:
    """A tiny run of the group (intent, mood) and sst on its own."""
    return {**tiny_config, "data_dir": str(group_data_dir), "tasks": [*group_tasks(), "sst"]}
