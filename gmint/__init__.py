"""gmint: Membership Inference Test from per-sample Weight Modifiers.

The public API, one function per stage of an audit (see README.md):
dataset → split → audited model → extract → train a MINT classifier → evaluate / audit a set;
`run_cell` composes them into one experiment cell.
"""

from gmint.assess.evaluate import Evaluation, evaluate_store, evaluate_with_control  # noqa: E402
from gmint.assess.scoring import audit_set  # noqa: E402
from gmint.data.readers import load_dataset  # noqa: E402
from gmint.data.split import MembershipSplit, make_split, read_item_list, split_from_lists  # noqa: E402
from gmint.experiment import Probe, Recipe, run_cell  # noqa: E402
from gmint.features.extract import extract, split_rows  # noqa: E402
from gmint.features.settings import ExtractSettings  # noqa: E402
from gmint.features.store import FeatureStore  # noqa: E402
from gmint.mint import TrainedMint, train_mint  # noqa: E402
from gmint.models.check import check_model  # noqa: E402
from gmint.models.imported import ModelSpec, import_model  # noqa: E402
from gmint.models.io import load_audited  # noqa: E402
from gmint.models.train import TrainConfig, train_audited  # noqa: E402
from gmint.version import __version__  # noqa: E402

__all__ = ["Evaluation", "ExtractSettings", "FeatureStore", "MembershipSplit", "ModelSpec", "Probe", "Recipe",
           "TrainConfig", "TrainedMint", "__version__", "audit_set", "check_model", "evaluate_store",
           "evaluate_with_control", "extract", "import_model", "load_audited", "load_dataset", "make_split",
           "read_item_list", "run_cell", "split_from_lists", "split_rows", "train_audited", "train_mint"]
