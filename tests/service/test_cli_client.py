"""The CLI's spec files, read in-process (the commands themselves run as processes in
tests/integration/test_live.py and test_sweeps.py)."""
from __future__ import annotations

import pytest
import typer

from service.cli_client import load_spec


def test_yaml_specs_read_exponent_numbers_as_numbers(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text('space:\n  optimizer.learning_rate: {loguniform: [1e-4, 1E-1]}\n  l2: {choice: [0, 5e-3, 2.5e+1]}\n'
                    'name: "1e-4"\n')
    spec = load_spec(path)
    assert spec["space"]["optimizer.learning_rate"]["loguniform"] == [1e-4, 0.1]
    assert spec["space"]["l2"]["choice"] == [0, 0.005, 25.0]
    assert spec["name"] == "1e-4"  # quoted text stays text


def test_a_spec_file_that_is_no_object_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(typer.BadParameter, match="one object"):
        load_spec(path)
