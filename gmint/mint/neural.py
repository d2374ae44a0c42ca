"""What the neural MINT classifiers share: Adam + BCE training with early stopping, prediction, state.

Early stopping watches the loss on a seeded, stratified validation part of the training rows and
keeps the best weights, so the number of epochs is not tuned on evaluation data; it never stops, nor keeps
weights, before `min_epochs`: on a weak signal the class-weighted validation loss can be lowest at the
first epoch, and weights kept from there score every row alike. A fit whose scores do not spread over its
own rows (`base.score_spread`) is fitted again with the next seed and a lower learning rate, and refused
after REFITS more; the refits are recorded. Subclasses only say which network to build (`_build`), ending in a
Linear layer with one output.

The decision (P(member) ≥ 0.5) is checked on the validation part, rows the network was not trained on: where
it puts three quarters or more of them on one side, the output bias moves to the cut where as many of their
members fall above as externals below (`decision_cut`, recorded). Measured on a grid cell (CIFAR-10 Xception,
output layer, 150 pool rows): weights kept at epoch 20 ranked held-out rows at AUC 0.95 yet scored 99.8% of them
below 0.5, an accuracy of 0.50; a network fitted on a few rows scores its own members higher than unseen ones,
so the 0.5 of its training loss is not the 0.5 of new rows. Ranking (AUC) is unchanged by the move.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gmint.errors import InputError
from gmint.mint.base import CollapsedFitError, score_spread
from gmint.threads import torch_threads

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True)
class Training:
    """How a neural MINT classifier is fitted: Adam, mini-batches, early stopping on a validation part."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 200
    patience: int = 15
    val_fraction: float = 0.2
    min_epochs: int = 20


# Fits after the first whose scores did not spread: each with the next seed and a third of the learning rate.
REFITS = 2


# A decision that puts this share or more of the validation part on one side (members and externals weighing
# alike) has nearly stopped deciding, and moves; one that does not keeps the network's own 0.5.
LOPSIDED = 0.75


def decision_cut(membership: np.ndarray, logits: np.ndarray) -> float | None:
    """Where a network whose 0.5 (logit 0) is lopsided on the `membership` rows moves its decision: the logit at
    which as many members fall above as externals below (the class-weighted median, TPR = TNR), halfway between
    two rows; None where the decision stays (not lopsided, one side missing, or every logit one value).

    Measured on grid probes of the paper's MLP (median accuracy over 5 seeds): moving lopsided decisions took
    CIFAR-10 Xception's output layer from 0.506 to 0.791 at D10 and 0.511 to 0.624 at D1; moving every decision
    also took a grouped GTSRB ResNet-50 seed from 0.874 to 0.728, its validation part being a few whole tracks.
    """
    logits = np.asarray(logits, np.float64)
    members = membership == 1
    if members.all() or not members.any() or np.ptp(logits) == 0:
        return None
    above = ((logits[members] >= 0).mean() + (logits[~members] >= 0).mean()) / 2
    if 1 - LOPSIDED < above < LOPSIDED:
        return None
    weight = np.where(members, 0.5 / members.sum(), 0.5 / (~members).sum())
    order = np.argsort(logits, kind="stable")
    ranked, below = logits[order], np.cumsum(weight[order])
    i = int(np.searchsorted(below, 0.5 - 1e-12))  # the last row of the lower half
    return float((ranked[i] + ranked[min(i + 1, len(ranked) - 1)]) / 2)


# A subclass's network options: a dataclass whose defaults are the network's.
NetworkT = TypeVar("NetworkT", bound="DataclassInstance")


class NeuralMint(Generic[NetworkT]):
    """A torch network with one logit, trained on standardised features.

    Subclasses set NETWORK (the dataclass of their network options and defaults) and build the network in
    `_build` from `self.network`.
    """

    NETWORK: type[NetworkT]
    KIND: str  # the classifier's name in MINT_MODELS, which messages use

    def __init__(self, input_dim: int, *, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 256,
                 max_epochs: int = 200, patience: int = 15, val_fraction: float = 0.2, min_epochs: int = 20,
                 **network: object) -> None:
        defaults = self.NETWORK()
        known = sorted(f.name for f in fields(defaults))
        unknown = set(network) - set(known)
        if unknown:
            raise InputError(f"unknown option{'s' * (len(unknown) > 1)} {', '.join(sorted(unknown))} for the "
                             f"{self.KIND} classifier; it takes lr, weight_decay, batch_size, max_epochs, patience, "
                             f"val_fraction, min_epochs and {', '.join(known)}")
        self.input_dim = input_dim
        self.training = Training(lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs,
                                 patience=patience, val_fraction=val_fraction, min_epochs=min_epochs)
        self.network: NetworkT = replace(defaults, **network)
        self.net = self._build()

    def _build(self) -> nn.Module:
        raise NotImplementedError

    @property
    def label_classes(self) -> int:
        """How many classes a label-aware network reads as a one-hot input (0: not label-aware).

        A label-aware network sets `label_aware` and `classes` among its options (`gmint.mint.train` fills
        `classes` in from the store); the one-hot true class is appended after the features.
        """
        if not getattr(self.network, "label_aware", False):
            return 0
        classes = int(getattr(self.network, "classes", 0))
        if classes < 1:
            raise InputError(f"a label-aware {self.KIND} classifier needs the number of classes (option 'classes')")
        return classes

    def _inputs(self, x: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """(n, d) standardised features, followed by the one-hot true class for a label-aware network."""
        classes = self.label_classes
        if not classes:
            return x
        if labels is None:
            raise InputError("a label-aware MINT classifier needs each row's class label")
        labels = np.asarray(labels, np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise InputError(f"class {int(labels.max() if labels.max() >= classes else labels.min())} is outside "
                             f"the {classes} classes the label-aware MINT classifier was fitted for")
        return np.concatenate([x, np.eye(classes, dtype=np.float32)[labels]], axis=1)

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int, labels: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> dict[str, object]:
        """Train on (x, y) with y = 1 for members; return the training record (epochs, best val loss).

        `labels` (each row's true class) are read only by a label-aware network; with `groups`, the
        validation part is whole groups.
        """
        inputs, asked = self._inputs(x, labels), self.training
        refits: list[dict[str, object]] = []
        try:
            for attempt in range(REFITS + 1):
                lr = asked.lr / 3**attempt
                self.training = replace(asked, lr=lr)
                with torch_threads(1):  # bit-reproducible whatever the core count, and fastest for a small net
                    record = self._fit(inputs, y, seed + attempt, groups)
                    problem = score_spread(self._logits(inputs), inputs)
                if problem is None:
                    return {**record, "refits": refits} if refits else record
                refits.append({"seed": seed + attempt, "lr": lr, "scores": problem})
        finally:
            self.training = asked  # the options asked for, as `config` records them
        raise CollapsedFitError(f"the {self.KIND} classifier scored its training rows (nearly) alike in "
                                f"{len(refits)} fits (seeds {seed} to {seed + REFITS}, learning rate down to "
                                f"{refits[-1]['lr']:.2g}): {refits[-1]['scores']}")

    @torch.no_grad()
    def _logits(self, inputs: np.ndarray) -> np.ndarray:
        self.net.eval()
        return self.net(torch.from_numpy(np.asarray(inputs, np.float32))).squeeze(1).double().numpy()

    def _fit(self, x: np.ndarray, y: np.ndarray, seed: int, groups: np.ndarray | None) -> dict[str, object]:
        hp = self.training
        torch.manual_seed(seed)
        self.net = self._build()  # initialised under the fit's seed, so one seed gives one classifier
        rng = np.random.default_rng(seed)
        val = np.zeros(len(y), dtype=bool)
        for side in (0, 1):  # stratified validation rows, or whole groups: frames of a sign on both parts
            idx = np.flatnonzero(y == side)  # would stop training on how well it knows that sign
            if groups is None:
                val[rng.permutation(idx)[: int(round(hp.val_fraction * len(idx)))]] = True
            else:
                units = np.unique(groups[idx])
                held = rng.permutation(units)[: int(round(hp.val_fraction * len(units)))]
                val[idx[np.isin(groups[idx], held)]] = True
        if val.all() or not val.any():
            val[:] = False
        xt, yt = torch.from_numpy(x[~val]), torch.from_numpy(y[~val].astype(np.float32))
        xv, yv = torch.from_numpy(x[val]), torch.from_numpy(y[val].astype(np.float32))
        # Members and externals are often unequal in the pool: weight the positive class to balance.
        pos_weight = torch.tensor((yt == 0).sum().item() / max((yt == 1).sum().item(), 1))
        opt = torch.optim.Adam(self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        best, best_state, best_epoch, stale = float("inf"), None, 0, 0
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(hp.max_epochs):
            self.net.train()
            for batch in torch.randperm(len(yt), generator=gen).split(hp.batch_size):
                loss = F.binary_cross_entropy_with_logits(self.net(xt[batch]).squeeze(1), yt[batch],
                                                          pos_weight=pos_weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if not len(yv):
                continue
            self.net.eval()
            with torch.no_grad():
                val_loss = F.binary_cross_entropy_with_logits(self.net(xv).squeeze(1), yv,
                                                              pos_weight=pos_weight).item()
            if epoch + 1 < hp.min_epochs:
                continue
            if val_loss < best - 1e-6:
                best, best_epoch, stale = val_loss, epoch + 1, 0
                best_state = {k: v.clone() for k, v in self.net.state_dict().items()}
            else:
                stale += 1
                if stale >= hp.patience:
                    break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        cut = decision_cut(y[val], self._logits(x[val])) if len(yv) else None
        if cut is not None:
            output = list(self.net.children())[-1]
            if not (isinstance(output, nn.Linear) and output.bias is not None and output.out_features == 1):
                raise TypeError(f"{self.KIND}: a neural MINT network ends in a Linear layer with one output")
            with torch.no_grad():
                output.bias.sub_(cut)
        return {"epochs_run": epoch + 1, "best_epoch": best_epoch, "best_val_loss": best,
                "train_rows": int((~val).sum()), "val_rows": int(val.sum()),
                "validation": "rows" if groups is None else f"whole groups ({len(np.unique(groups[val]))})",
                "decision_cut": cut}

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(n,) P(member) for standardised features (and, for a label-aware network, the rows' classes)."""
        self.net.eval()
        x = self._inputs(np.asarray(x, np.float32), labels)
        with torch_threads(1):
            return torch.sigmoid(self.net(torch.from_numpy(x)).squeeze(1)).numpy()

    def state(self) -> dict[str, torch.Tensor]:
        """The network's weights."""
        return self.net.state_dict()

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Put back weights from `state`."""
        self.net.load_state_dict(state)

    def config(self) -> dict[str, object]:
        """Training and network options: the keyword arguments that rebuild this classifier."""
        return {**asdict(self.training), **asdict(self.network)}
