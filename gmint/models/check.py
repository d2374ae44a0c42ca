"""Does the audited model, as described, recognise its members? A check run before any Weight Modifier.

A wrong description (another normalisation, channels in BGR order, classes in another order, a wrong member
list) still lets an audit run to the end, on inputs the model never saw: every Weight Modifier, the loss
threshold and the verdict are then of another function. What gives it away is how the model classifies the
rows it was trained on. This module measures that on the declared members and the externals, compares it with
what the model's owner states (or gmint's own record), with common alternative preprocessings, and with the
class order the predictions imply, and says in words what looks wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.models.io import AuditedModel
from gmint.models.train import sample_losses

# Rows of each side the check reads (a seeded sample above it): a forward pass of this many rows costs a
# small part of one Weight Modifier batch, and resolves accuracies to about ±2 points.
MAX_ROWS = 2000
# Members the alternative preprocessings are tried on.
ALTERNATIVE_ROWS = 500
# Normalisations models are commonly trained with: (mean, std) per name, for 1- or 3-channel inputs.
COMMON_NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "pixels in [0, 1]": ((0.0,), (1.0,)),
    "pixels in [-1, 1]": ((0.5,), (0.5,)),
    "MNIST's normalisation": ((0.1307,), (0.3081,)),
    "CIFAR-10's normalisation": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "ImageNet's normalisation": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "pixels in [0, 255]": ((0.0,), (1 / 255,)),
}
# How far a measured accuracy may fall below another before it counts: the larger of this and three standard
# errors of the measurement.
MIN_GAP = 0.02
# How much lower the members' mean loss must be under another preprocessing, beside a clearly higher accuracy,
# before it is named: a wrong normalisation costs a trained model an order of magnitude, while a barely trained
# one (near chance under any input scaling) differs by a few percent either way.
LOSS_RATIO = 0.5
# How much better the class order the predictions imply must classify the members to be named.
CLASS_ORDER_GAIN = 0.2


@dataclass(frozen=True)
class Fit:
    """How the model classifies one set of rows: accuracy and mean cross-entropy."""

    rows: int
    accuracy: float
    loss: float


# Measures a model on rows of a dataset under a transform: (its fit, the class it predicts for each row).
Measure = Callable[[np.ndarray, Transform, ImageSet], tuple[Fit, np.ndarray]]


@dataclass(frozen=True)
class ModelCheck:
    """The audited model's fit on its declared members and on the externals, and what looks wrong.

    Attributes:
        members: fit on (a seeded sample of) the declared members.
        external: fit on (a seeded sample of) the externals.
        warnings: each problem found, in words, with its likely cause.
    """

    members: Fit
    external: Fit
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """As recorded in a store's provenance (`model_check`)."""
        return {"members": asdict(self.members), "external": asdict(self.external), "warnings": list(self.warnings)}

    @classmethod
    def read(cls, recorded: object) -> ModelCheck | None:
        """The check a store's provenance records (`to_dict`'s form); None where it records none, or records it
        otherwise (a store from elsewhere)."""
        if not isinstance(recorded, Mapping):
            return None
        fits = [_fit(recorded.get(side)) for side in ("members", "external")]
        found = recorded.get("warnings", [])
        if fits[0] is None or fits[1] is None or not isinstance(found, list):
            return None
        return cls(fits[0], fits[1], tuple(map(str, found)))

    def summary(self) -> str:
        """One line: both fits."""
        m, e = self.members, self.external
        return (f"audited model on its declared members: accuracy {m.accuracy:.3f}, loss {m.loss:.4f} ({m.rows} rows); "
                f"on the externals: accuracy {e.accuracy:.3f}, loss {e.loss:.4f} ({e.rows} rows)")


def check_model(audited: AuditedModel, data: ImageSet, split: MembershipSplit, transform: Transform, *,
                min_member_accuracy: float | None = None, device: str = "cpu", seed: int = 0) -> ModelCheck | None:
    """Measure the model on its declared members and externals and name what looks wrong; None for a model
    with one logit (its class is not an argmax, so accuracy says nothing here).

    Warns where the members are classified worse than the externals, below `min_member_accuracy`, below the
    training accuracy the model's owner states (or gmint's own record of it), worse than under a common
    alternative preprocessing (or with the colour channels reversed), or much better once the classes are
    renamed as the predictions imply.

    Args:
        audited: the model as described.
        data: the dataset the split indexes.
        split: the declared membership.
        transform: the preprocessing the audit uses.
        min_member_accuracy: warn below this accuracy on the members (None: no such floor).
        device: where the model runs.
        seed: seeds the samples of large sets.
    """
    description = audited.description
    if description is not None and description.num_classes is not None and description.num_classes < 2:
        return None
    audited.check_classes(data.classes)
    model = audited.module.eval().to(device)
    rng = np.random.default_rng([seed, 7])
    members = _sample(np.asarray(split.members), MAX_ROWS, rng)
    external = _sample(np.asarray(split.external), MAX_ROWS, rng)

    def fit(rows: np.ndarray, t: Transform, images: ImageSet) -> tuple[Fit, np.ndarray]:
        losses, predicted = sample_losses(model, images, rows, t, device=device)
        return Fit(len(rows), float((predicted == images.labels[rows]).mean()), float(losses.mean())), predicted

    on_members, predicted = fit(members, transform, data)
    on_external, _ = fit(external, transform, data)
    warnings: list[str] = []
    gap = _margin(on_members.accuracy, len(members)) + _margin(on_external.accuracy, len(external))
    if on_members.accuracy < on_external.accuracy - gap:
        warnings.append(f"the declared members are classified worse than the externals ({on_members.accuracy:.3f} "
                        f"against {on_external.accuracy:.3f}): the member and external lists may be wrong (swapped, "
                        "or another model's), or the preprocessing is not the one it was trained with")
    if min_member_accuracy is not None and on_members.accuracy < min_member_accuracy:
        warnings.append(f"the declared members are classified at {on_members.accuracy:.3f}, below the floor of "
                        f"{min_member_accuracy:.3f} set for this audit")
    for source, stated in _stated_accuracies(audited):
        if on_members.accuracy < stated - _margin(stated, len(members)):
            warnings.append(f"{source} is {stated:.3f}, but the declared members are classified at "
                            f"{on_members.accuracy:.3f}: the preprocessing, the class order or the member list "
                            "differ from the model's training")
    better = _better_preprocessing(fit, data, _sample(members, ALTERNATIVE_ROWS, rng), transform)
    if better:
        warnings.append(better)
    renamed = _class_order(data, members, predicted, on_members.accuracy)
    if renamed:
        warnings.append(renamed)
    return ModelCheck(on_members, on_external, tuple(warnings))


def _fit(recorded: object) -> Fit | None:
    """A `Fit` as `asdict` records it; None for anything else."""
    if not isinstance(recorded, Mapping):
        return None
    rows, accuracy, loss = (recorded.get(k) for k in ("rows", "accuracy", "loss"))
    numbers = [v for v in (accuracy, loss) if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) != 2:
        return None
    return Fit(int(rows) if isinstance(rows, int) else 0, float(numbers[0]), float(numbers[1]))


def _sample(rows: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(rows, size, replace=False)) if len(rows) > size else rows


def _margin(accuracy: float, n: int) -> float:
    """The larger of MIN_GAP and three standard errors of an accuracy measured on n rows."""
    return max(MIN_GAP, 3 * math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / max(n, 1)))


def _stated_accuracies(audited: AuditedModel) -> list[tuple[str, float]]:
    """Training accuracies recorded with the model: stated by its owner at import, or measured by gmint."""
    found = []
    record = audited.record
    if record.stated_train_accuracy is not None:
        found.append(("the training accuracy stated for the model", record.stated_train_accuracy))
    if record.training is not None:
        found.append(("the members' accuracy gmint recorded when it trained the model",
                      record.training.members.accuracy))
    return found


def _better_preprocessing(fit: Measure, data: ImageSet, rows: np.ndarray, transform: Transform) -> str | None:
    """A common preprocessing (or the declared one with the colour channels reversed) that classifies the
    members clearly better than the declared one, in words; None where none does."""
    channels = transform.channels or data.images.shape[-1]
    declared_fit = fit(rows, transform, data)[0]
    candidates: list[tuple[str, Transform, ImageSet]] = []
    for name, (mean, std) in COMMON_NORMALISATIONS.items():
        if len(mean) not in (1, channels) or (np.allclose(mean, transform.mean) and np.allclose(std, transform.std)):
            continue
        candidates.append((f"{name} (mean {_numbers(mean)}, std {_numbers(std)})",
                           replace(transform, mean=mean, std=std), data))
    if channels == 3 and data.images.shape[-1] == 3:
        reversed_rgb = replace(data, images=np.ascontiguousarray(data.images[..., ::-1]))
        candidates.append(("the colour channels in reverse (BGR) order", transform, reversed_rgb))
    margin = _margin(declared_fit.accuracy, len(rows))
    better = [(name, fit(rows, t, images)[0]) for name, t, images in candidates]
    better = [(name, f) for name, f in better
              if f.accuracy - declared_fit.accuracy > margin and f.loss < LOSS_RATIO * declared_fit.loss]
    if not better:
        return None
    # Most accurate first; ties keep COMMON_NORMALISATIONS' order (a loss alone does not rank them: inputs
    # scaled far too large make confident, near-zero losses of right and wrong answers alike).
    better.sort(key=lambda item: -item[1].accuracy)
    named = "; ".join(f"with {name} they are classified at {f.accuracy:.3f} (loss {f.loss:.4f})"
                      for name, f in better[:3])
    return (f"the preprocessing looks wrong: the declared members are classified at {declared_fit.accuracy:.3f} "
            f"(loss {declared_fit.loss:.4f}) as described, but {named}; describe the model with the preprocessing "
            "it was trained with")


def _class_order(data: ImageSet, rows: np.ndarray, predicted: np.ndarray, accuracy: float) -> str | None:
    """Classes the members are mostly predicted as another class, in words, where renaming them so would
    classify the members much better (a class list in another order); None otherwise."""
    labels = data.labels[rows]
    renamed_right, moved, predicted_as = 0, [], []
    for cls in np.unique(labels):
        counts = np.bincount(predicted[labels == cls], minlength=len(data.classes))
        top = int(counts.argmax())
        renamed_right += int(counts[top])
        predicted_as.append(top)
        if top != cls:
            moved.append((data.classes[cls], data.classes[top]))
    # Only a renaming (no two classes predicted as one) is a class order; a model that predicts one class for
    # everything is untrained or fed the wrong inputs, which the other checks speak of.
    if (len(moved) < 2 or len(set(predicted_as)) < len(predicted_as)
            or renamed_right / len(rows) - accuracy < CLASS_ORDER_GAIN):
        return None
    pairs = ", ".join(f"'{a}' as '{b}'" for a, b in moved[:4]) + (", …" if len(moved) > 4 else "")
    return (f"the class order looks wrong: members of {len(moved)} classes are mostly predicted as another class "
            f"({pairs}); renamed so, {renamed_right / len(rows):.3f} of them would be right against {accuracy:.3f}; "
            "give the class names in the order of the model's outputs")


def _numbers(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)
