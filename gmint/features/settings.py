"""How features are extracted: one frozen bundle of settings, shared by every caller of `extract`.

The command line, the experiment recipe, the reference-model stores and the scoring of candidates all describe an
extraction with the same `ExtractSettings`, so a setting has one name and one check wherever it is given. A
store's provenance records the settings it was extracted with; `ExtractSettings.recorded` is the one reader that
turns such a record back into settings, so that new rows (candidates) are extracted exactly like the store's.

Three words, each with one meaning:
- *layer setup*: what the user names (a preset, names, globs; see `gmint.features.layers.match_setup`);
- *parameters*: what a layer setup resolves to on a model (parameter names, or module names for a source that
  reads modules), recorded in a store as `parameters`;
- *feature names*: the store's column groups computed from them (recorded as `layers`).
"""

from __future__ import annotations

from dataclasses import dataclass

from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.features.engine import ENGINES, LOSSES
from gmint.features.engine.base import check_chunk_size
from gmint.features.provenance import Provenance
from gmint.features.reduce import parse_reduction
from gmint.features.sources import SOURCES


@dataclass(frozen=True)
class ExtractSettings:
    """What decides how rows become features: every setting an extraction takes besides its inputs and output.

    Attributes:
        layer_setup: a preset, parameter names or globs, as one comma-separated string or as a sequence of items
            (kept as a tuple; a sequence is never split at commas, so recorded parameter names select themselves).
        reduction: a name in `gmint.features.reduce.REDUCTIONS`, optionally `name:arg`.
        source: what the features are: a name in `gmint.features.sources.SOURCES`.
        engine: a name in `gmint.features.engine.ENGINES`: where the engine search starts (see
            `gmint.features.engine.selfcheck`).
        loss: the loss whose per-sample gradient is taken, a name in `gmint.features.engine.LOSSES`.
        seed: seeds seeded reductions; recorded in the store.
        batch_size: rows per batch (one store write each).
        chunk_size: samples per vmap call / materialised block; None for the whole batch at once.
        transform: the preprocessing; None for the audited model's own.
        device: where the model runs (`cpu`, `cuda`, `cuda:N`).
        max_memory: working-memory budget in bytes, which lowers the batch (vmap/naive: the chunk) to fit; None for
            no budget.

    Raises:
        UnknownNameError: an unknown reduction, source, engine or loss.
        InputError: an empty layer setup, or a size that is not a positive number.
    """

    layer_setup: str | tuple[str, ...] = "combined"
    reduction: str = "mean"
    source: str = "gradient"
    engine: str = "auto"
    loss: str = "cross_entropy"
    seed: int = 0
    batch_size: int = 128
    chunk_size: int | None = 64
    transform: Transform | None = None
    device: str = "cpu"
    max_memory: int | None = None

    def __post_init__(self) -> None:
        # Everything is checked here, so a wrong name fails where the settings are made, before any model or
        # store is touched.
        if not isinstance(self.layer_setup, str):
            object.__setattr__(self, "layer_setup", tuple(str(item) for item in self.layer_setup))
        if not self.layer_setup or (isinstance(self.layer_setup, str) and not self.layer_setup.strip()):
            raise InputError("the layer setup is empty; name a preset, parameter names or globs")
        SOURCES.get(self.source)
        ENGINES.get(self.engine)
        LOSSES.get(self.loss)
        parse_reduction(self.reduction, self.seed)
        check_chunk_size(self.chunk_size)
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise InputError(f"batch size must be a positive number of rows, got {self.batch_size}")
        if self.max_memory is not None and self.max_memory < 1:
            raise InputError(f"the memory budget must be a positive number of bytes, got {self.max_memory}")

    @property
    def setup_text(self) -> str:
        """The layer setup as a store records it (`layer_setup`): one comma-separated string."""
        return self.layer_setup if isinstance(self.layer_setup, str) else ",".join(self.layer_setup)

    @classmethod
    def recorded(cls, provenance: Provenance, *, batch_size: int = 128, device: str = "cpu") -> ExtractSettings:
        """The settings a store's provenance records for its features, so that other rows are extracted alike.

        The layer setup is the recorded parameter names themselves (older stores without them: their recorded
        layer setup; without either, the default). The transform is None where none is recorded (the audited
        model's own); an engine not recorded reads as `vmap`. How the work is sized and where it runs (batch,
        chunk, device, memory budget) change no feature and are the caller's.

        Args:
            provenance: a store's provenance.
            batch_size: rows per batch for the new extraction.
            device: where the new extraction runs.
        """
        layer_setup: str | tuple[str, ...] = provenance.parameters or provenance.layer_setup or "combined"
        transform = provenance.transform
        return cls(layer_setup=layer_setup, reduction=provenance.reduction or "mean", source=provenance.source,
                   engine=provenance.engine or "vmap", loss=provenance.loss_function or "cross_entropy",
                   seed=provenance.seed or 0, batch_size=batch_size,
                   transform=Transform.from_dict(transform) if transform is not None else None, device=device)
