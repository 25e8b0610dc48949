"""`python -m ipfacediff.config --check` compares parameter VALUES: DVC's own layout of params.yaml
(what `dvc exp run -S` writes after Hydra composition) is not drift; a changed value is."""

from __future__ import annotations

import yaml

from ipfacediff import config


def test_check_ignores_layout_and_catches_values(tmp_path, monkeypatch, capsys):
    params = yaml.safe_load(config.PARAMS.read_text())
    relaid = tmp_path / "params.yaml"
    # block style, keys sorted, no header comment: the same values written the way another tool would
    relaid.write_text(yaml.safe_dump(params, sort_keys=True, default_flow_style=False, width=60))
    assert relaid.read_text() != config.PARAMS.read_text()
    monkeypatch.setattr(config, "PARAMS", relaid)
    assert config.main(["--check"]) == 0
    params["edit"]["guidance_scale"] = float(params["edit"]["guidance_scale"]) + 1
    relaid.write_text(yaml.safe_dump(params, sort_keys=True))
    assert config.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
