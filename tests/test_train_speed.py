"""The training-speed benchmark's harness on a tiny model (one timed round; no timing is asserted): its variants
train the same model on the same batches as its baseline (the library's own step), its rows resume, its `best`
combines the gains."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from benchmarks import train_speed
from benchmarks.train_speed import BEST, DEFAULT_VARIANTS, VARIANTS, Case, Config, Trainer, Variant, best_variant
from gmint.models.zoo import build

CASE = {"arch": "small_cnn", "options": {"width": 0.25}, "image_size": 8}


def _tiny(**overrides: object) -> Config:
    settings: dict[str, object] = {
        "models": [CASE], "batch_size": 8, "rows": 16, "warmup": 2, "rounds": 1, "min_round_s": 0.0,
        "max_steps_per_round": 1, "compile_backend": "eager", **overrides}
    return Config(**settings)  # type: ignore[arg-type]


def test_rows_report_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "train-speed.json"
    results = train_speed.run(_tiny(), out)
    rows = results["rows"]
    assert [(r["case"], r["variant"]) for r in rows] == [("small_cnn/rgb8", v) for v in DEFAULT_VARIANTS]
    by = {r["variant"]: r for r in rows}
    for name, row in by.items():
        assert "error" not in row, (name, row)
        assert row["parameters"] == sum(p.numel() for p in build("small_cnn", 3, 10, 8, width=0.25).parameters())
        assert len(row["losses"]) == 3 and all(math.isfinite(v) for v in row["losses"])     # 2 warm-up + 1 timed
        assert len(row["step_s"]) == 1 and row["samples_per_s"] > 0 and row["ratio"] > 0
        assert name == BEST or row["features"] == asdict(VARIANTS.get(name))
    assert by["baseline"]["ratio"] == 1.0 and by["baseline"]["loss_rel_diff_all"] == 0.0
    assert by["prefetch"]["losses"] == by["baseline"]["losses"] == by["control"]["losses"]
    # before the first update the weights are the same: Adam's implementation cannot change the first loss
    for name in ("adam_foreach", "adam_fused"):
        assert by[name]["losses"][0] == by["baseline"]["losses"][0]
        assert by[name]["param_rel_diff"] < 1e-4           # rounding, not another optimiser (that moves the
        assert by[name]["update_rel_diff"] < 0.05          # update by a multiple of itself)
    assert by["baseline"]["update_rel_diff"] == by["control"]["update_rel_diff"] == 0.0
    assert by["prefetch"]["update_rel_diff"] == 0.0
    assert "compile_s" in by["compile"] and "label" in by[BEST]
    report = out.with_suffix(".md").read_text()
    assert "| small_cnn/rgb8 |" in report and "## Numerics" in report and "## Compile time" in report
    assert json.loads(out.read_text()) == results

    again = train_speed.run(_tiny(), out)                    # resumable: nothing left to measure
    assert again["rows"] == rows and len(again["runs"]) == 2
    grey = {**CASE, "image_size": 6, "channels": 1}
    more = train_speed.run(_tiny(models=[CASE, grey], variants=["baseline", "nchw"]), out)
    assert [(r["case"], r["variant"]) for r in more["rows"]] == [*[(r["case"], r["variant"]) for r in rows],
                                                                 ("small_cnn/grey6", "baseline"),
                                                                 ("small_cnn/grey6", "nchw")]
    with pytest.raises(SystemExit, match="other settings"):
        train_speed.run(_tiny(batch_size=4), out)


def test_best_combines_each_gaining_change() -> None:
    def row(variant: str, ratio: float) -> dict[str, object]:
        return {"variant": variant, "features": asdict(VARIANTS.get(variant)), "ratio": ratio}

    rows = [row("baseline", 1.0), row("nchw", 1.05), row("channels_last", 1.2), row("adam_foreach", 1.1),
            row("adam_fused", 1.04), row("prefetch", 1.02), row("compile", 0.7),
            {"variant": "compile", "features": asdict(Variant(compiled=True)), "error": "boom"}]
    assert best_variant(rows, 0.03) == Variant(layout="channels_last", adam="foreach")
    assert best_variant(rows, 0.03).label() == "channels_last+adam_foreach"
    assert best_variant(rows, 0.5) == Variant() and Variant().label() == "baseline"


def test_config_refusals(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('models = [{ arch = "small_cnn" }]\nbatchsize = 8\n')
    with pytest.raises(SystemExit, match=r"unknown keys \['batchsize'\]"):
        train_speed.load_config(path)
    path.write_text('models = [{ arch = "small_cnn", size = 8 }]\n')
    with pytest.raises(SystemExit, match=r"unknown model keys \['size'\]"):
        train_speed.load_config(path)
    path.write_text('models = [{ arch = "small_cnn" }]\nrows = 100\n')
    with pytest.raises(SystemExit, match=r"rows \(100\) must be a multiple of batch_size \(64\)"):
        train_speed.load_config(path)
    path.write_text('models = [{ arch = "vit", options = { width = 0.5 } }, { arch = "resnet50" }]\n')
    assert train_speed.load_config(path).cases() == [Case("vit", {"width": 0.5}), Case("resnet50", {"width": 0.25})]


def test_layouts() -> None:
    config = _tiny(models=[{**CASE, "channels": 1}])
    case = config.cases()[0]
    data, transform = train_speed.case_data(case, config, None)
    x, _, _ = Trainer(Variant(), case, config, data, transform)._prepare()
    assert x.stride() == (64, 1, 8, 1)            # Transform's permuted strides: channels-last, even for one channel
    nchw = Trainer(Variant(layout="nchw"), case, config, data, transform)
    x, _, _ = nchw._prepare()
    assert x.stride() == (64, 64, 8, 1)
    last = Trainer(Variant(layout="channels_last"), case, config, data, transform)
    assert last.model[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not nchw.model[3].weight.is_contiguous(memory_format=torch.channels_last)
