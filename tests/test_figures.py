"""Every figure gmint and its benchmarks draw, on small synthetic inputs: each PNG opens at its expected size and
is not blank, each data panel names its axes in words, a legend is drawn, chance is drawn where it has a meaning
(AUC 0.5; at a fixed FPR a TPR equal to that FPR), and the heat map writes each number in the colour that reads
on its cell."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

import benchmarks.report as grid_report
import gmint.assess.depth as depth
import gmint.reference.report as reference_report
from benchmarks.mint_original import plot_sweep, recorded_sweeps
from gmint.assess.depth import DepthPoint, DepthSweep, plot_depth
from gmint.assess.metrics import Estimate, chance_level
from gmint.reference.compare import AttackResult, Comparison


@dataclass(frozen=True)
class Panel:
    """What a reader sees of one data panel: its axis labels and the horizontal lines across it."""

    xlabel: str
    ylabel: str
    levels: tuple[float, ...]
    texts: tuple[tuple[str, str], ...]  # (text, colour name) written inside the panel


@dataclass(frozen=True)
class Drawn:
    """A figure as it was saved: its data panels (axes that show their axes) and every legend entry."""

    panels: tuple[Panel, ...]
    legend: tuple[str, ...]


def _levels(ax: Axes) -> tuple[float, ...]:
    heights = [np.asarray(line.get_ydata(), float) for line in ax.get_lines()]
    return tuple(sorted(float(y[0]) for y in heights if len(set(y)) == 1))


def _describe(fig: Figure) -> Drawn:
    from matplotlib.colors import to_hex

    panels = tuple(Panel(ax.get_xlabel(), ax.get_ylabel(), _levels(ax),
                         tuple((t.get_text(), to_hex(t.get_color())) for t in ax.texts))
                   for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>")
    legends = [*fig.legends, *(legend for ax in fig.axes if (legend := ax.get_legend()) is not None)]
    return Drawn(panels, tuple(t.get_text() for legend in legends for t in legend.get_texts()))


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Callable[[ModuleType], list[Drawn]]:
    """Record each figure a module saves (through its `save_png`) as it was when saved."""
    def watch(module: ModuleType) -> list[Drawn]:
        seen: list[Drawn] = []
        save = module.save_png

        def recording(fig: Figure, path: Path) -> Path:
            seen.append(_describe(fig))
            return save(fig, path)

        monkeypatch.setattr(module, "save_png", recording)
        return seen
    return watch


def assert_readable_png(path: Path, width: tuple[int, int], height: tuple[int, int]) -> None:
    """A PNG of the expected size in pixels, with lines and text on it: many colours, a fair share not white."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert width[0] <= image.width <= width[1] and height[0] <= image.height <= height[1], image.size
        pixels = np.asarray(image.convert("RGB"), np.int64).reshape(-1, 3)
    assert len(np.unique(pixels @ np.array([1 << 16, 1 << 8, 1]))) > 50
    assert (pixels.min(axis=1) < 200).mean() > 0.03


def _est(value: float, spread: float = 0.03) -> Estimate:
    return Estimate(value, max(value - spread, 0.0), min(value + spread, 1.0))


def _sweep() -> DepthSweep:
    blocks = ["conv1", "layer1", "layer2", "fc"]
    loss = {"auc": _est(0.62), "tpr_at_1pct_fpr": _est(0.04, 0.01)}
    points = [DepthPoint(d, block, source, "mlp", [f"{block}.x"], 16,
                         {"auc": _est(0.55 + 0.1 * d + shift), "tpr_at_1pct_fpr": _est(0.02 + 0.05 * d + shift)},
                         loss)
              for source, shift in (("activation", 0.0), ("gradient", 0.04))
              for d, block in enumerate(blocks)]
    return DepthSweep(blocks, points)


def test_chance_is_half_for_auc_and_the_fpr_itself_for_a_tpr_at_that_fpr() -> None:
    assert chance_level("auc") == chance_level("balanced_accuracy") == 0.5
    assert chance_level("tpr_at_1pct_fpr") == 0.01 and chance_level("tpr_at_0.1pct_fpr") == 0.001


def test_depth_figure_labels_both_panels_and_draws_chance_on_each(
        tmp_path: Path, drawn: Callable[[ModuleType], list[Drawn]]) -> None:
    seen = drawn(depth)
    png = plot_depth(_sweep(), tmp_path / "depth.png", title="synthetic")
    assert_readable_png(png, width=(1100, 1400), height=(450, 560))
    (figure,) = seen
    assert [p.ylabel for p in figure.panels] == ["AUC on held-out rows", "TPR @ 1% FPR on held-out rows"]
    assert all(p.xlabel == "block (input → output)" for p in figure.panels)
    assert figure.panels[0].levels == (0.5, 0.62) and figure.panels[1].levels == (0.01, 0.04)
    assert set(figure.legend) == {"activation MINT (mlp)", "gradient MINT (mlp)", "loss threshold",
                                  "chance (AUC 0.5; TPR = FPR)"}


def test_depth_figures_are_drawn_again_from_the_benchmark_rows(tmp_path: Path) -> None:
    sweep = _sweep()
    rows: list[dict[str, object]] = [{"type": "probe", "cell": "cifar10-small_cnn"},
                                     *({"type": "depth", "cell": "cifar10-small_cnn", **p.to_dict(), "gmint": "x"}
                                       for p in reversed(sweep.points)),
                                     {"type": "depth-done", "cell": "cifar10-small_cnn", "blocks": sweep.blocks}]
    again = recorded_sweeps(rows)
    assert again == {"cifar10-small_cnn": DepthSweep(sweep.blocks, sorted(
        sweep.points, key=lambda p: (p.depth, p.source, p.kind)))}
    png = plot_sweep("cifar10-small_cnn", again["cifar10-small_cnn"], tmp_path / "mint-original.jsonl")
    assert png.name == "mint-original-depth-cifar10-small_cnn.png"
    assert_readable_png(png, width=(1100, 1400), height=(450, 560))


def _comparison() -> Comparison:
    results = [AttackResult("loss", 0, {"auc": _est(0.6), "tpr_at_1pct_fpr": _est(0.02, 0.01)}),
               *(AttackResult(attack, k, {"auc": _est(0.6 + 0.02 * k + lift),
                                          "tpr_at_1pct_fpr": _est(0.03 + 0.01 * k + lift)})
                 for attack, lift in (("lira-offline", 0.0), ("rmia", 0.05)) for k in (1, 2, 4)),
               AttackResult("lira-online", 4, None, unresolved="needs online references")]
    return Comparison("offline", np.empty(0, np.int64), np.empty(0, np.int64), tuple(results), 0, 0)


def test_k_figure_labels_every_panel_with_one_shared_legend_and_chance(
        tmp_path: Path, drawn: Callable[[ModuleType], list[Drawn]]) -> None:
    seen = drawn(reference_report)
    png = reference_report.k_plot(_comparison(), tmp_path / "vs_k.png", title="synthetic, offline")
    assert_readable_png(png, width=(1300, 1600), height=(450, 560))
    (figure,) = seen
    assert [p.ylabel for p in figure.panels] == ["AUC on held-out rows", "TPR @ 1% FPR on held-out rows"]
    assert all(p.xlabel == "reference models K" for p in figure.panels)
    assert figure.panels[0].levels == (0.5, 0.6) and figure.panels[1].levels == (0.01, 0.02)
    assert figure.legend == ("loss", "chance (AUC 0.5; TPR = FPR)", "lira-offline", "rmia")


def test_attack_colours_are_distinct_beyond_ten_attacks() -> None:
    names = [f"attack-{i}" for i in range(14)]
    colours = reference_report.attack_colours([*names, names[0]])
    assert list(colours) == names and len(set(colours.values())) == 14
    assert reference_report.attack_colours(names[:3]) == {n: colours[n] for n in names[:3]}


def test_text_on_a_heat_map_cell_is_white_on_dark_and_black_on_light() -> None:
    from matplotlib import colormaps

    rdbu = colormaps["RdBu"]
    assert grid_report.text_colour(rdbu(0.0)) == "white"  # deepest red: ours 50 points under the paper
    assert grid_report.text_colour(rdbu(1.0)) == "white"  # deepest blue
    assert grid_report.text_colour(rdbu(0.5)) == "black"  # near white: ours ≈ paper
    assert grid_report.text_colour((1.0, 0.9, 0.0, 1.0)) == "black"  # yellow is light though saturated
    assert grid_report.text_colour((0.0, 0.0, 0.0, 1.0)) == "white"


def test_heat_map_labels_its_axes_and_writes_each_number_readably(
        tmp_path: Path, drawn: Callable[[ModuleType], list[Drawn]]) -> None:
    seen = drawn(grid_report)
    cells = [("mnist-mobilenet", "mnist", "mobilenet"), ("cifar10-vit", "cifar10", "vit"),
             ("gtsrb-resnet50", "gtsrb", "resnet50")]
    diff = np.linspace(-50, 30, 36).reshape(3, 12)
    diff[2, 5] = np.nan  # pending: no number
    png = grid_report.heat_map("paper", cells, diff, tmp_path / "minus-paper.png")
    assert_readable_png(png, width=(1100, 1300), height=(350, 500))
    (figure,) = seen
    (panel,) = figure.panels
    assert panel.xlabel.startswith("layer setup") and panel.ylabel == "dataset · audited architecture"
    texts = dict(panel.texts)
    assert len(panel.texts) == 35 and texts["-50"] == "#ffffff" and texts["-2"] == "#000000"


def test_grid_roc_figure_is_labelled_with_chance(tmp_path: Path, drawn: Callable[[ModuleType], list[Drawn]]) -> None:
    seen = drawn(grid_report)
    fpr = np.linspace(0, 1, 21)

    def row(arch: str, kind: str, power: float) -> dict[str, object]:
        return {"arch": arch, "classifier": kind,
                "roc": {"mint": {"fpr": fpr.tolist(), "tpr": (fpr ** power).tolist()},
                        "loss_threshold": {"fpr": fpr.tolist(), "tpr": np.sqrt(fpr).tolist()}},
                "mint": {"auc": _est(0.8).to_dict()}, "loss_threshold": {"auc": _est(0.66).to_dict()}}

    cells = [[row("mobilenet", "gmint", 0.3), row("mobilenet", "mlp", 0.4)], [row("vit", "gmint", 0.5)]]
    png = grid_report.roc_plot("cifar10", "paper", cells, tmp_path / "roc.png")
    assert_readable_png(png, width=(600, 720), height=(500, 600))
    (figure,) = seen
    (panel,) = figure.panels
    assert (panel.xlabel, panel.ylabel) == ("false-positive rate", "true-positive rate")
    # each cell's classifiers and its loss threshold, and chance
    assert "chance" in figure.legend and len(figure.legend) == 3 + 2 + 1
    assert "mobilenet the paper's MLP (AUC 0.800)" in figure.legend and "vit loss (AUC 0.660)" in figure.legend


def test_the_roc_of_every_signal_names_each_auc_and_starts_its_log_axis_where_externals_resolve_it(
        tmp_path: Path, drawn: Callable[[ModuleType], list[Drawn]]) -> None:
    import gmint.assess.figures as figures

    seen = drawn(figures)
    rng = np.random.default_rng(0)
    membership = np.repeat([1, 0], 250)
    curves = [figures.RocCurve("separating", membership, membership + rng.normal(0, 0.8, 500)),
              figures.RocCurve("chance", membership, rng.normal(0, 1, 500))]
    png = figures.roc_figure(curves, tmp_path / "roc.png", title="synthetic")
    assert_readable_png(png, (900, 1300), (450, 650))
    (legend,) = {d.legend for d in seen}
    expected = [f"{c.label} (AUC {c.auc:.3f})" for c in curves]
    assert legend == (*expected, "chance")  # one legend, on the linear panel; the log panel shares its colours
    assert curves[0].auc > 0.7 and 0.4 < curves[1].auc < 0.6
    (shown,) = seen
    assert all(p.xlabel.startswith("false-positive rate") and p.ylabel.startswith("true-positive rate")
               for p in shown.panels)
    with pytest.raises(Exception, match="members and externals"):
        figures.roc_figure([figures.RocCurve("one side", np.ones(4, int), np.arange(4.0))], tmp_path / "x.png")
