"""The pieces of a model description: where the logits are in an output, and preprocessing beyond normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from gmint.data.transforms import LUMA, Transform
from gmint.errors import InputError
from gmint.models.description import describe, find_output, read_output, select_output


@dataclass
class Output:
    """A dataclass output, as Hugging Face's ModelOutput is one."""

    logits: torch.Tensor
    hidden: torch.Tensor


LOGITS = torch.arange(6.0).view(2, 3)


@pytest.mark.parametrize(("output", "key", "selector"), [
    (LOGITS, None, "tensor"),
    ((LOGITS, torch.zeros(2)), None, "index:0"),
    ([torch.zeros(2), LOGITS], "1", "index:1"),
    ({"logits": LOGITS, "features": torch.zeros(2)}, None, "key:logits"),
    ({"scores": LOGITS}, "scores", "key:scores"),
    (Output(LOGITS, torch.zeros(2)), None, "key:logits"),
])
def test_the_logits_are_found_in_every_output_form(output: object, key: str | None, selector: str) -> None:
    assert find_output(output, key) == selector
    assert read_output(output, selector) is LOGITS


@pytest.mark.parametrize(("output", "key", "message"), [
    ({"scores": LOGITS}, None, "without 'logits'"),
    ((torch.zeros(2),), "3", "no element 3"),
    ({"logits": "text"}, None, "is a str, not a tensor of logits"),
    ("text", None, "the model returned a str"),
])
def test_an_output_without_logits_is_refused_in_words(output: object, key: str | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        find_output(output, key)


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(x.flatten(1)), x


def test_a_selected_output_keeps_the_models_own_names_and_gradients() -> None:
    torch.manual_seed(0)
    net, plain = TupleNet(), TupleNet()
    plain.load_state_dict(net.state_dict())
    selected = select_output(net, "index:0")
    assert [n for n, _ in selected.named_parameters()] == ["fc.weight", "fc.bias"]
    assert selected.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(5, 1, 2, 2)
    torch.testing.assert_close(selected(x), plain(x)[0])
    params = {n: p.detach() for n, p in selected.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(selected, p, (xi.unsqueeze(0),)).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    for i in range(5):
        plain.zero_grad()
        plain(x[i:i + 1])[0].sum().backward()
        torch.testing.assert_close(per_sample["fc.weight"][i], plain.fc.weight.grad)


def test_describe_reads_the_input_shape_and_refuses_classes_that_do_not_fit() -> None:
    transform = Transform(size=2, mean=(0.5,), std=(0.5,))
    description, _ = describe(TupleNet(), arch="inline", arch_args={}, transform=transform, input_channels=1,
                              classes=["a", "b", "c"])
    assert (description.input_channels, description.input_size, description.num_classes) == (1, 2, 3)
    assert description.output == "index:0"
    with pytest.raises(InputError, match="2 class names for a model with 3 outputs"):
        describe(TupleNet(), arch="inline", arch_args={}, transform=transform, input_channels=1, classes=["a", "b"])


def test_preprocessing_converts_channels_crops_and_resizes_as_declared() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)
    grey = Transform(channels=1, mean=(0.0,), std=(1.0,))(rgb)
    expected = torch.from_numpy((rgb / 255.0) @ np.array(LUMA)).float().unsqueeze(1)
    torch.testing.assert_close(grey, expected)
    cropped = Transform(crop=2, mean=(0.0,), std=(1.0,))(rgb)
    torch.testing.assert_close(cropped, torch.from_numpy(rgb[:, 2:4, 2:4] / 255.0).float().permute(0, 3, 1, 2))
    nearest = Transform(size=3, interpolation="nearest", mean=(0.0,), std=(1.0,))(rgb)
    torch.testing.assert_close(nearest, torch.from_numpy(rgb[:, ::2, ::2] / 255.0).float().permute(0, 3, 1, 2))
    repeated = Transform(channels=3, mean=(0.0,), std=(1.0,))(rgb[..., :1])
    assert repeated.shape == (2, 3, 6, 6) and torch.equal(repeated[:, 0], repeated[:, 2])


def test_records_written_before_the_new_fields_read_back_equal() -> None:
    old = {"size": 32, "mean": [0.5], "std": [0.5]}
    assert Transform.from_dict(old) == Transform(size=32)
    assert Transform(size=32).to_dict() == old  # defaults of the new fields are left out of provenance
    full = Transform(size=8, crop=6, channels=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.2), interpolation="bicubic")
    assert Transform.from_dict(full.to_dict()) == full


@pytest.mark.parametrize(("record", "message"), [
    ({"size": 8, "mean": 0.5}, "std must be given"),
    ({"size": 8, "mean": 0.5, "std": 0.5, "resize": 4}, "unknown key resize"),
    ({"size": 8, "mean": 0.5, "std": -1}, "std must be positive"),
    ({"size": 8, "mean": [0.1, 0.2], "std": 0.5, "channels": 3}, "mean has 2 values for 3 channels"),
    ({"size": True, "mean": 0.5, "std": 0.5}, "size must be a positive whole number"),
])
def test_a_preprocessing_record_out_of_range_is_refused(record: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Transform.from_dict(record)
