"""What `gmint score` and `gmint amint score` share: their candidate-row option and how a set verdict is
printed."""

from __future__ import annotations

from gmint.assess.scoring import Audit
from gmint.assess.selection import ROW_SELECTIONS
from gmint_cli.console import console

ROWS_HELP = (f"{' | '.join(ROW_SELECTIONS)} of the model's split, or a JSON file listing row ids of --data "
             "(default: none).")


def print_set_verdict(result: Audit, source: str, calibration: str, score_name: str, alpha: float) -> None:
    """The candidates, the calibration rows (`calibration` says whose, and what they were never used for) and
    the set verdict at `alpha`, in the words `gmint score` and `gmint amint score` share."""
    v, cal, n_predicted = result.verdict, result.calibration, result.scores.n_predicted
    console.print(f"candidates: {v.n_candidates} from {source}; mean {score_name} {v.mean_candidate:.3f}")
    if result.scores.label_source != "true" or n_predicted:
        console.print(f"labels: {n_predicted} of {v.n_candidates} candidates scored under the audited model's own "
                      f"prediction (no class given), {v.n_candidates - n_predicted} under their true class",
                      highlight=False)
    left_out = [f"{cal.excluded} left out as candidates"] if cal.excluded else []
    left_out += [f"{cal.misclassified} misclassified by the model left out"] if cal.misclassified else []
    console.print(f"calibration: {v.n_calibration} held-out external rows {calibration}"
                  f"{''.join(f'; {part}' for part in left_out)}); mean {score_name} {v.mean_calibration:.3f}")
    decision = f"[bold]H0 rejected[/] at α = {alpha}" if v.rejects(alpha) else f"H0 not rejected at α = {alpha}"
    console.print(f"verdict: {v.test}: U = {v.statistic:.1f}, p = {v.p_value:.3g} → {decision} "
                  f"(P(candidate > external) = {v.effect:.3f})", highlight=False)
    console.print(result.conclusion(alpha), highlight=False)
