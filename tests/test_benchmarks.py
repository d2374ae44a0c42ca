"""The speed benchmark's harness on a tiny model (one timed round; no timing is asserted), the threshold gate's
logic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.check import MEMORY, Limit, check, main, ratio
from benchmarks.speed import EXTRACT_METHODS, Config, load_config, refresh, run, steady_result


def _tiny(**overrides: object) -> Config:
    settings: dict[str, object] = {
        "models": [{"arch": "small_cnn", "options": {"width": 0.25}}], "setups": ["entry", "output"],
        "methods": ["floor", "chain", "naive", "vmap", "hooks", "auto", "opacus", "backpack"], "batch_size": 4,
        "chunk_size": 2, "threads": 1, "image_size": 8, "warmup": 1, "repeats": 1, "naive_samples": 2,
        "extract_rows": 8, "extract_repeats": 1, "min_round_s": 0.0,
        "targets": {"hooks/floor": 1.1, "extract/floor": 1.25}, "memory_targets": {"hooks/floor": 1.0}, **overrides}
    return Config(**settings)  # type: ignore[arg-type]


def test_speed_rows_reports_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    results = run(_tiny(), out)
    rows = results["rows"]
    assert [(r["model"], r["setup"]) for r in rows] == [("small_cnn", "entry"), ("small_cnn", "output")]
    for row in rows:
        methods = row["methods"]
        assert methods["floor"]["ratio"] == 1.0 and methods["floor"]["samples"] == 4
        assert methods["naive"]["samples"] == 2
        assert methods["extract"]["samples"] == 8 and methods["extract"]["engine"] == "auto"
        for name, result in methods.items():
            assert "error" not in result, (name, result)
            if "unsupported" not in result:
                assert result["per_sample_s"] > 0 and result["ratio"] > 0
            if "max_rel_err" in result:   # every method's MEAN features agree with vmap's
                assert result["max_rel_err"] < 1e-4, (name, result)
    assert json.loads(out.read_text()) == results
    report = out.with_suffix(".md").read_text()
    assert "## small_cnn" in report and "## Targets" in report and "| entry | 0.weight |" in report

    again = run(_tiny(), out)                      # resumable: done rows are kept, not re-measured
    assert again["rows"] == rows and len(again["runs"]) == 2
    forced = run(_tiny(), out, force=True, only=["small_cnn/output"])
    assert [r["run"] for r in forced["rows"]] == [0, 2]
    out.with_suffix(".md").unlink()
    refresh(out)                                   # --report-only: same numbers, report rewritten
    assert json.loads(out.read_text()) == forced and out.with_suffix(".md").exists()

    with pytest.raises(SystemExit, match="other settings"):
        run(_tiny(batch_size=8), out)


def test_steady_extraction_splits_start_up_from_per_row_cost() -> None:
    # best rounds: 100 rows in 1.5 s and 200 rows in 2.5 s, so 10 ms a row past a 0.5 s start-up
    result = steady_result([1.5, 1.9], [2.5, 2.7], 100, "min")
    assert result["per_sample_s"] == pytest.approx(0.010) and result["samples_per_s"] == pytest.approx(100)
    assert result["startup_s"] == pytest.approx(0.5)
    assert steady_result([1.5, 1.9], [2.5, 2.7], 100, "median")["per_sample_s"] == pytest.approx(0.009)
    # noise larger than the rows' cost is said, not turned into a negative or infinite speed
    assert "unresolved" in steady_result([1.5], [1.4], 100, "min")["unsupported"]


def test_steady_extraction_is_measured_and_reported(tmp_path: Path) -> None:
    results = run(_tiny(setups=["output"], methods=["floor"], extract_repeats=2, extract_steady=True,
                        extract_rows=64, batch_size=16), tmp_path / "s.json")
    methods = results["rows"][0]["methods"]
    steady, whole, floor = methods["extract_steady"], methods["extract"], methods["extract_floor"]
    assert len(floor["times"]) == len(whole["times"]) == 2  # the floor over the same rows, in the same rounds
    assert whole["ratio"] == pytest.approx(whole["per_sample_s"] / floor["per_sample_s"])
    assert steady["samples"] == 64 and ("unsupported" in steady or len(steady["double_times"]) == 2)
    assert "extract_steady" in (tmp_path / "s.md").read_text()


def test_unavailable_methods_are_recorded_not_fatal(tmp_path: Path) -> None:
    results = run(_tiny(setups=["output"], methods=["floor", "no_such_engine"], extract_rows=0), tmp_path / "s.json")
    assert "extract" not in results["rows"][0]["methods"]
    assert "unknown benchmark method" in results["rows"][0]["methods"]["no_such_engine"]["error"]


CONFIGS = Path(__file__).parents[1] / "benchmarks" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("speed*.toml")), ids=lambda p: p.stem)
def test_committed_speed_configs_load(path: Path) -> None:
    config = load_config(path)
    assert config.models and set(config.setups) <= {"entry", "middle", "output", "combined"}
    for limit in config.targets:  # every target names measured methods or groups
        num, den = limit.split("/")
        known = {*config.methods, "gmint", "competitors", *EXTRACT_METHODS}
        assert {num, den} <= known, limit


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "speed.toml"
    path.write_text('models = [{ arch = "small_cnn" }]\nrepeat = 3\n')
    with pytest.raises(SystemExit, match="unknown keys \\['repeat'\\]"):
        load_config(path)
    path.write_text('models = [{ arch = "small_cnn" }]\nstatistic = "mean"\n')
    with pytest.raises(SystemExit, match="statistic must be one of"):
        load_config(path)
    path.write_text('models = [{ arch = "small_cnn" }]\nrepeats = 3\nstatistic = "min"\n')
    assert load_config(path).repeats == 3 and load_config(path).statistic == "min"


def _row(setup: str, **seconds: float | None) -> dict[str, object]:
    methods: dict[str, dict[str, object]] = {
        m: {"unsupported": "no"} if s is None else {"per_sample_s": s, "peak_mib": 10 * s}
        for m, s in seconds.items()}
    return {"model": "m", "setup": setup, "methods": methods}


ROWS = [_row("entry", floor=1.0, hooks=1.05, vmap=1.6, opacus=1.2, backpack=None),
        _row("output", floor=1.0, hooks=1.3, vmap=1.2, opacus=None, backpack=1.25),
        _row("middle", floor=1.0, vmap=1.4, opacus=None, backpack=None)]


def test_limits_parse_and_groups() -> None:
    assert Limit.parse(" hooks/floor = 1.10") == Limit("hooks", "floor", 1.1)
    for bad in ("hooks/floor", "hooks=1.1", "hooks/floor=fast", "hooks/floor=0", "/floor=1"):
        with pytest.raises(ValueError, match="looks like"):
            Limit.parse(bad)
    best = Limit.parse("gmint/competitors=1.0")
    assert ratio(ROWS[0], best) == pytest.approx(1.05 / 1.2)      # fastest engine over the faster competitor
    assert ratio(ROWS[1], best) == pytest.approx(1.2 / 1.25)
    assert ratio(ROWS[2], best) is None                             # no competitor ran: not judged
    assert ratio(ROWS[0], Limit.parse("hooks/floor=1", MEMORY)) == pytest.approx(1.05)


def test_time_ratios_pair_the_rounds() -> None:
    """Methods timed in the same rounds are compared round by round: a load spike that slowed one round
    of both methods cancels out; a group takes its fastest member in each round."""
    def timed(*seconds: float) -> dict[str, object]:
        return {"samples": 2, "times": list(seconds), "calls_per_round": 1, "per_sample_s": min(seconds) / 2}

    row = {"model": "m", "setup": "s", "methods": {
        "floor": timed(1.0, 4.0, 1.0), "hooks": timed(1.1, 4.4, 1.1), "vmap": timed(1.5, 1.0, 1.5),
        "extract": {"samples": 4, "times": [5.0], "per_sample_s": 1.25}}}
    assert ratio(row, Limit.parse("hooks/floor=1")) == pytest.approx(1.1)     # min/min would say 1.1 too ...
    assert ratio(row, Limit.parse("vmap/floor=1")) == pytest.approx(1.5)      # ... but 1.0 here
    assert ratio(row, Limit.parse("gmint/floor=1")) == pytest.approx(1.1)     # per round: 1.1, 0.25, 1.1
    assert ratio(row, Limit.parse("extract/floor=1")) == pytest.approx(2.5)   # not in the rounds: plain


def test_check_status_and_listing() -> None:
    status, lines = check(ROWS, [Limit.parse("hooks/floor=1.10")])
    assert status == 1 and lines[0] == "hooks/floor ≤ 1.1: 1/2 rows pass (1 not judged)"
    assert lines[1:] == ["  FAIL m/output: 1.300"]
    assert check(ROWS, [Limit.parse("vmap/floor=1.6")])[0] == 0
    status, lines = check(ROWS, [Limit.parse("extract/floor=1.25")])   # nothing to judge: never a pass
    assert status == 2 and "no row has both" in lines[0]


def test_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "speed.json"
    results.write_text(json.dumps({"rows": ROWS}))
    assert main(["--results", str(results), "--max", "vmap/floor=1.6", "--max-memory", "hooks/floor=1.5"]) == 0
    assert main(["--results", str(results), "--max", "hooks/floor=1.1", "--max", "vmap/floor=1.5"]) == 1
    assert "FAIL m/output: 1.300" in capsys.readouterr().out
    assert main(["--results", str(results), "--max", "hooks/floor"]) == 2
    assert main(["--results", str(tmp_path / "missing.json"), "--max", "hooks/floor=1"]) == 2
    assert main(["--results", str(results)]) == 2


def test_reference_aims_are_checked_against_the_best_attack_and_the_loss_threshold() -> None:
    from benchmarks.reference import aim_lines

    def row(attack: str, k: int, auc: float, tpr: float) -> dict[str, object]:
        return {"attack": attack, "k": k, "metrics": {"auc": {"value": auc}, "tpr_at_1pct_fpr": {"value": tpr}}}

    rows = [row("loss", 0, 0.60, 0.01), row("rmia", 2, 0.66, 0.05), row("lira-offline-global", 2, 0.64, 0.08),
            row("gmint-calibrated", 2, 0.67, 0.06), row("gmint-calibrated-norms", 2, 0.62, 0.09)]
    calibrated, norms = aim_lines(rows)
    assert calibrated == ("- K=2, gmint-calibrated: AUC 0.670 vs the best of LiRA and RMIA 0.660 (rmia): met; "
                          "TPR@1%FPR 0.060 vs the best of LiRA and RMIA 0.080 (lira-offline-global): not met; "
                          "AUC 0.670 vs the loss threshold's 0.600 + 0.05: met")
    assert "AUC 0.620 vs the best of LiRA and RMIA 0.660 (rmia): not met" in norms
    assert "TPR@1%FPR 0.090 vs the best of LiRA and RMIA 0.080 (lira-offline-global): met" in norms
    assert norms.endswith("AUC 0.620 vs the loss threshold's 0.600 + 0.05: not met")


def test_reference_report_lists_every_unmeasured_cell_mode_and_k() -> None:
    from benchmarks.reference import pending_runs

    config = {"defaults": {"modes": ["offline", "online"], "ks": [1, 2, 4]},
              "cells": [{"dataset": "mnist", "arch": "small_cnn"},
                        {"name": "big", "dataset": "cifar10", "arch": "resnet18", "modes": ["offline"]}]}
    rows = [{"cell": "mnist-small_cnn", "mode": "offline", "k": k} for k in (0, 1, 2, 4)]
    rows += [{"cell": "big", "mode": "offline", "k": k} for k in (0, 1)]
    assert pending_runs(rows, config) == ["- mnist-small_cnn, online: every K", "- big, offline: K = 2, 4"]


def test_reference_rows_of_another_audited_model_are_found() -> None:
    from benchmarks.reference import rows_of_another_model

    record = {"members_accuracy": 0.9658, "external_loss": 0.6665}
    rows = [{"cell": "c", "mode": "offline", "audited_record": record},  # written before rows had fingerprints
            {"cell": "c", "mode": "offline", "audited_record": record, "audited_fingerprint": "aa"},
            {"cell": "c", "mode": "online", "audited_record": {**record, "external_loss": 0.7}},
            {"cell": "d", "mode": "offline", "audited_record": {}, "audited_fingerprint": "zz"}]
    assert rows_of_another_model(rows, "c", ["offline"], "aa", record) == 0
    assert rows_of_another_model(rows, "c", ["offline"], "bb", record) == 1  # the fingerprint decides where kept
    assert rows_of_another_model(rows, "c", ["offline"], "aa", {**record, "members_accuracy": 0.9674}) == 1
    assert rows_of_another_model(rows, "c", ["offline", "online"], "aa", record) == 1


def test_reference_command_line_ks_and_modes_override_a_cells_own(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import reference

    config = tmp_path / "c.toml"
    config.write_text('[defaults]\nmodes = ["offline", "online"]\nks = [1, 2]\n\n'
                      '[[cells]]\ndataset = "cifar10"\narch = "small_cnn"\nks = [1, 2, 4, 8, 16]\n')
    ran: list[tuple[dict[str, object], dict[str, object]]] = []
    monkeypatch.setattr(reference, "run_cell", lambda cell, defaults, *a, **k: ran.append((cell, defaults)))
    monkeypatch.setattr("sys.argv", ["reference", "--config", str(config), "--out", str(tmp_path / "r.jsonl"),
                                     "--ks", "1,4", "--modes", "offline"])
    reference.main()
    (cell, defaults), = ran
    assert {**defaults, **cell}["ks"] == [1, 4] and {**defaults, **cell}["modes"] == ["offline"]
