"""Shared by the tests/test_data_*.py files: the tiny Spoken-Shapes, generated once per test session."""

import json
from pathlib import Path

from typer.testing import CliRunner

_generated: dict[str, Path] = {}


def tiny_shapes_root(tmp_path_factory) -> Path:
    if "tiny" not in _generated:
        from s2i_train.cli import app

        out = tmp_path_factory.mktemp("shapes") / "tiny"
        result = CliRunner().invoke(
            app,
            [
                "data",
                "shapes",
                "--out",
                str(out),
                "--images-per-class",
                "2",
                "--captions-per-image",
                "1",
                "--image-size",
                "64",
                "--seed",
                "3",
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output.strip().splitlines()[-1])
        assert summary["images"] == {"train": 96, "test": 32}
        _generated["tiny"] = out
    return _generated["tiny"]
