"""Which torch calls use which parameters during one forward pass.

A TorchFunctionMode sees every torch function and Tensor method called from Python with its arguments,
so it sees a weight used by its own module (`F.linear(x, self.weight)`) as well as by any other code
(`F.linear(h, self.fc.weight)`, `h @ w`, `nn.MultiheadAttention` passing `out_proj.weight` to its
functional form). Calls that only read metadata (`w.shape`, `w.size(0)`) are not uses. Used to order
layers by their first use and to check the hooks engine's "used once, by its own module" condition.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

# Tensor methods and attributes that read metadata (or detach): a parameter passed to them is not "used".
METADATA = frozenset({"size", "dim", "numel", "nelement", "stride", "is_contiguous", "element_size",
                      "data_ptr", "storage_offset", "is_floating_point", "is_complex", "get_device",
                      "__len__", "__format__", "__repr__", "__hash__", "requires_grad", "shape", "dtype",
                      "device", "layout", "ndim", "is_nested", "is_sparse", "is_quantized", "is_meta",
                      "is_cuda", "is_leaf", "grad", "grad_fn", "names", "_version", "itemsize", "nbytes",
                      "data", "detach"})


class ParameterUses(TorchFunctionMode):
    """Records each call that takes one of the watched tensors (matched by identity).

    Attributes:
        first_use: watched name → position of its first use among all first uses (forward order).
        own: watched name → number of uses made while `inside_owner(name)` held (its own module ran).
        foreign: watched name → the functions that used it anywhere else.
    """

    def __init__(self, watched: dict[str, Tensor],
                 inside_owner: Callable[[str], bool] = lambda name: False) -> None:
        super().__init__()
        self._names = {id(t): n for n, t in watched.items()}
        self._inside_owner = inside_owner
        self.first_use: dict[str, int] = {}
        self.own: dict[str, int] = dict.fromkeys(watched, 0)
        self.foreign: dict[str, list[str]] = {n: [] for n in watched}

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (),
                           kwargs: dict | None = None) -> object:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "__get__":  # an attribute getter is named by its descriptor
            name = getattr(getattr(func, "__self__", None), "__name__", name)
        if name not in METADATA:
            for arg in tree_flatten((args, kwargs))[0]:
                if isinstance(arg, Tensor) and (param := self._names.get(id(arg))) is not None:
                    self.first_use.setdefault(param, len(self.first_use))
                    if self._inside_owner(param):
                        self.own[param] += 1
                    else:
                        self.foreign[param].append(name)
        return func(*args, **kwargs)
