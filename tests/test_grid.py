"""The audit grid: its configs expand to the paper's cells, rows record what measured them, a rerun adds only
what is missing and refuses rows of another config; the smoke config runs end to end into a report."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import benchmarks.grid as grid
from benchmarks.grid import GridCell, grid_cells, grid_recipe, run_grid_cell, train_config
from gmint.experiment import Probe
from gmint.mint import DEFAULT_KIND
from gmint.models.train import TrainConfig

CONFIGS = Path(__file__).parents[1] / "benchmarks/configs"
PAPER = Path(__file__).parents[2] / "shared/paper/gmint-table2.csv"


def test_grid_trains_on_the_configs_thread_count() -> None:
    assert train_config({"epochs": 2, "threads": 3}).threads == 3
    assert train_config({"epochs": 2}).threads == 1  # the TrainConfig default, recorded like any setting
    with pytest.raises(ValueError, match=r"unknown train key\(s\) \['thread'\]"):
        train_config({"thread": 3})


def test_cpu_config_is_the_papers_whole_grid_plus_gtsrb_grouped() -> None:
    cells = grid_cells(tomllib.loads((CONFIGS / "grid-cpu.toml").read_text()))
    paper = {(c.dataset, c.arch) for c in cells if c.protocol == "paper"}
    assert len(paper) == 24 and len(cells) == 30
    assert {c.dataset for c in cells if c.protocol == "grouped"} == {"gtsrb"}
    assert len({c.config_sha256 for c in cells}) == 30  # the protocol is part of each cell's settings
    by_name = {c.name: c for c in cells}
    tiny = grid_recipe(by_name["paper/tiny_imagenet-vit"])
    assert (tiny.image_size, dict(tiny.arch_options), tiny.protocol) == (32, {"width": 0.5}, "paper")
    assert tiny.mint_seeds == 5
    assert tiny.train == TrainConfig(epochs=100, batch_size=64, optimizer="adam", lr=1e-4, target_accuracy=0.99)
    # every probe with gmint's default classifier and again with the paper's MLP
    assert len(tiny.probes) == 2 * (4 * 3 + 4)
    assert [p.kind for p in tiny.probes] == ["gmint"] * 16 + ["mlp"] * 16
    assert tiny.probes[16:] == tuple(replace(p, kind="mlp") for p in tiny.probes[:16])
    assert grid_recipe(by_name["grouped/gtsrb-resnet101"]).protocol == "grouped"


def test_config_tables_override_in_order_and_unknown_keys_are_refused() -> None:
    config = {"grid": {"datasets": ["digits"], "architectures": ["small_cnn", "mobilenet"]},
              "defaults": {"members": 10, "external": 10, "control": 0, "train": {"epochs": 5, "lr": 0.1}},
              "datasets": {"digits": {"members": 20, "train": {"epochs": 7}}},
              "architectures": {"mobilenet": {"members": 30, "arch_options": {"width": 0.5}}}}
    small, mobile = grid_cells(config)
    assert (small.settings["members"], small.settings["train"]) == (20, {"epochs": 7, "lr": 0.1})
    assert (mobile.settings["members"], mobile.protocol, mobile.name) == (30, "paper", "paper/digits-mobilenet")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['member'\]"):
        grid_cells({**config, "defaults": {"member": 1}})
    with pytest.raises(ValueError, match=r"\[datasets\] tables for \['mnist'\]"):
        grid_cells({**config, "datasets": {"mnist": {}}})


def _digits_cell(**settings: object) -> GridCell:
    base = {"members": 0.4, "external": 0.4, "control": 0.2, "holdout": 0.5, "seed": 0, "engine": "auto",
            "batch_size": 256, "mint_seeds": 2, "n_boot": 20, "arch_options": {"width": 0.5},
            "train": {"epochs": 2, "batch_size": 64, "lr": 3e-3}}
    return GridCell("grouped", "digits", "small_cnn", {**base, **settings})


def test_grid_rows_record_their_provenance_and_a_rerun_adds_only_missing_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grid, "PROBES", (Probe("gMINT", "combined"), Probe("gMINT", "output", "D10"),
                                         Probe("negative control", "combined")))
    cell, out = _digits_cell(), tmp_path / "grid.jsonl"

    def run_grid() -> list[dict[str, object]]:
        run_grid_cell(cell, tmp_path / "work", out, data_root=None, show_progress=False)
        return [json.loads(line) for line in out.read_text().splitlines()]

    rows = run_grid()
    assert [(r["signal"], r["setup"], r["fraction"]) for r in rows] == [
        ("gMINT", "combined", "D100"), ("gMINT", "output", "D10"), ("negative control", "combined", "D100")]
    first = rows[0]
    assert first["config_sha256"] == cell.config_sha256 and first["split"]["sha256"]
    assert {"gmint", "commit", "torch", "uncommitted_changes"} <= set(first["code"])
    assert rows[1]["fit_rows"] < first["fit_rows"] == first["split"]["pool"]
    assert rows[2]["model"]["role"] == "control" and rows[2]["model"]["record"] != first["model"]["record"]
    assert {"members_loss_q10", "external_loss_q90"} <= set(first["model"]["record"])
    # the spread over classifier seeds: the first seed is the row's own measurement
    assert first["mint_seeds"]["seeds"] == [0, 1]
    assert first["mint_seeds"]["auc"][0] == first["mint"]["auc"]["value"]
    # and their median, the figure reported, stated beside it; the classifier the row fitted
    assert first["mint_over_seeds"]["auc"]["median"] == pytest.approx(np.median(first["mint_seeds"]["auc"]))
    assert first["mint_over_seeds"]["auc"]["seeds"] == 2 and first["classifier"] == DEFAULT_KIND
    assert first["extraction"]["rows"] == first["split"]["pool"] + first["split"]["holdout"]
    # the paired comparison with the loss threshold on the same rows, and the ε lower bound
    versus = first["auc_minus_loss_threshold"]
    assert versus["value"] == pytest.approx(first["mint"]["auc"]["value"] - first["loss_threshold"]["auc"]["value"])
    assert versus["ci95_low"] <= versus["value"] <= versus["ci95_high"]
    assert first["epsilon"]["epsilon_lower_bound"] >= 0 and first["epsilon"]["confidence"] == 0.95
    roc = first["roc"]["mint"]
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert np.all(np.diff(roc["tpr"]) >= 0) and "roc" not in rows[1]
    assert run_grid() == rows  # all done: nothing appended
    out.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    again = run_grid()  # only the missing row, measured as before
    assert again[:2] == rows[:2] and len(again) == 3
    assert {k: v for k, v in again[2].items() if k != "mint_seconds"} == {
        k: v for k, v in rows[2].items() if k != "mint_seconds"}


def test_a_cell_measures_each_probe_with_each_classifier_it_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grid, "PROBES", (Probe("gMINT", "output"),))
    out = tmp_path / "grid.jsonl"
    run_grid_cell(_digits_cell(classifiers=["gmint", "mlp"], mint_seeds=1), tmp_path / "work", out, data_root=None,
                  show_progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["classifier"] for r in rows] == ["gmint", "mlp"]
    assert rows[0]["split"] == rows[1]["split"] and rows[0]["loss_threshold"] == rows[1]["loss_threshold"]
    assert "model_selection" in rows[0] and "model_selection" not in rows[1]  # the default chose on the pool


def test_rows_of_another_config_are_refused_not_mixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grid, "PROBES", (Probe("gMINT", "combined"), Probe("gMINT", "output")))
    out = tmp_path / "grid.jsonl"
    run_grid_cell(_digits_cell(), tmp_path / "work", out, data_root=None, show_progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    out.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match="measured with other settings"):
        run_grid_cell(_digits_cell(mint_seeds=3), tmp_path / "work", out, data_root=None, show_progress=False)


def test_rows_of_another_commit_are_kept_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(grid, "PROBES", (Probe("gMINT", "combined"), Probe("gMINT", "output")))
    out, cell = tmp_path / "grid.jsonl", _digits_cell()
    run_grid_cell(cell, tmp_path / "work", out, data_root=None, show_progress=False)
    first = json.loads(out.read_text().splitlines()[0])
    first["code"]["commit"] = "0123456789"
    out.write_text(json.dumps(first) + "\n")
    capsys.readouterr()
    run_grid_cell(cell, tmp_path / "work", out, data_root=None, show_progress=False)
    assert "measured at commit(s) ['0123456789']" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 2


def _smoke(datasets: list[str], tmp_path: Path, data_root: Path | None) -> tuple[list[dict[str, object]], str]:
    """The smoke config's cells of `datasets`, run and reported."""
    from benchmarks.report import paper_table, report

    text = (CONFIGS / "grid-smoke.toml").read_text()
    config = tomllib.loads(text)
    config["grid"]["datasets"] = datasets
    config["datasets"] = {k: v for k, v in config.get("datasets", {}).items() if k in datasets}
    out = tmp_path / "grid.jsonl"
    for cell in grid_cells(config):
        run_grid_cell(cell, tmp_path / "work", out, data_root=data_root, show_progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    paper = paper_table(PAPER) if PAPER.exists() else {}
    report(rows, paper, config, text, tmp_path / "report.md", config_path=CONFIGS / "grid-smoke.toml")
    return rows, (tmp_path / "report.md").read_text()


def _assert_finite(rows: list[dict[str, object]]) -> None:
    for row in rows:
        for block in ("mint", "loss_threshold"):
            for name in ("accuracy", "auc"):
                assert np.isfinite(row[block][name]["value"]), (row["cell"], block, name)  # type: ignore[index]


def test_smoke_grid_on_digits_reports_every_probe(tmp_path: Path) -> None:
    rows, text = _smoke(["digits"], tmp_path, None)
    assert len(rows) == len(grid.PROBES)
    _assert_finite(rows)
    assert "Cells finished: 1 of 1" in text and "| digits | mobilenet |" in text
    assert "## Collapsed fits in this grid" in text and "measured before" not in text
    assert (tmp_path / "report-figures" / "paper-digits-roc.png").stat().st_size > 0
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["cells"]["paper/digits-mobilenet"]["combined/D100"]["paper_accuracy"] is None


@pytest.mark.realdata
@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "gtsrb", "tiny_imagenet"])
def test_smoke_grid_on_each_real_dataset_sits_beside_the_paper(dataset: str, tmp_path: Path) -> None:
    from tests.conftest import REAL_FOLDERS, REAL_ROOT

    if not (REAL_ROOT / REAL_FOLDERS[dataset]).is_dir():
        pytest.skip(f"{REAL_ROOT / REAL_FOLDERS[dataset]} is absent")
    if not PAPER.exists():
        pytest.skip(f"{PAPER} is absent")
    rows, text = _smoke([dataset], tmp_path, REAL_ROOT)
    _assert_finite(rows)
    protocols = {r["protocol"] for r in rows}
    assert protocols == ({"paper", "grouped"} if dataset == "gtsrb" else {"paper"})
    summary = json.loads((tmp_path / "report.json").read_text())
    for cell in summary["cells"].values():  # every gMINT figure has the paper's beside it
        assert all(v["paper_accuracy"] is not None and v[f"ours_accuracy_{DEFAULT_KIND}"] is not None
                   for v in cell.values())
    assert text.count("· paper ") == 12 * len(protocols)


def test_report_lists_negative_controls_off_chance_with_what_chance_alone_gives() -> None:
    from benchmarks.report import controls_off_chance

    def control(cell: str, setup: str, auc: tuple[float, float, float]) -> dict[str, object]:
        value, low, high = auc
        return {"cell": cell, "signal": "negative control", "setup": setup, "fraction": "D100",
                "mint": {"auc": {"value": value, "ci95_low": low, "ci95_high": high}}}

    rows = [control("grouped/a", "entry", (0.40, 0.36, 0.44)), control("grouped/a", "output", (0.51, 0.47, 0.55)),
            control("paper/b", "entry", (0.30, 0.25, 0.35))]
    lines = controls_off_chance([("grouped/a", "gtsrb", "mobilenet")], rows)
    assert lines[2].startswith("1 of 2 control probes have an AUC interval that excludes 0.5; chance alone would "
                               "give about 0.1.")
    assert lines[4].startswith("- grouped/a entry D100 (the paper's MLP): its AUC 0.400 [0.360, 0.440] is below chance")
    assert not any("paper/b" in line for line in lines)  # another protocol's cells are reported with it
    assert controls_off_chance([("grouped/a", "gtsrb", "mobilenet")], rows[1:2]) == []
