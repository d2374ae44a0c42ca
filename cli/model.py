"""`gmint model import` and `gmint model show`: a model from outside described once, and what is recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from gmint.data.transforms import INTERPOLATIONS, Transform
from gmint.errors import InputError
from gmint.models.description import ModelDescription
from gmint.models.imported import ModelSpec, import_model
from gmint.models.io import AuditedModel
from gmint_cli.console import cli_errors, console, print_json
from gmint_cli.inputs import TORCHSCRIPT_HELP, TRUST_PICKLE_HELP, load_model
from gmint_cli.options import choices, flag, json_object
from gmint_cli.outputs import check_output

app = typer.Typer(no_args_is_help=True)


def parse_numbers(text: str, option: str) -> tuple[float, ...]:
    """'0.1307' or '0.485,0.456,0.406' → floats, or one line naming the option."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{option} must be one number or one per channel, comma-separated; got '{text}'") from None


def read_transform(text: str) -> dict[str, Any]:
    """--transform: a JSON object, or a file holding one."""
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise InputError(f"--transform {text} is neither a JSON object nor a file holding one")
        text = path.read_text()
    return json_object(text, "--transform")


def read_classes(classes: str | None, classes_file: Path | None) -> list[str] | None:
    """Class names from --classes (comma-separated) or --classes-file (one per line, in label order)."""
    if classes is not None and classes_file is not None:
        raise InputError("give --classes or --classes-file, not both")
    if classes_file is not None:
        if not classes_file.is_file():
            raise InputError(f"--classes-file {classes_file} not found")
        names = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
    elif classes is not None:
        names = [name.strip() for name in classes.split(",")]
    else:
        return None
    if not names or not all(names):
        raise InputError("class names must not be empty")
    return names


@app.command("import")
@cli_errors
def import_(weights: Path = typer.Argument(..., help="The model's weights: a state dict, a TorchScript file "
                                                      "(--torchscript) or a pickled module (--trust-pickle)."),
            arch: str = typer.Option(None, help="The code that builds the model: a zoo name, package.module:factory "
                                                "(found from the working directory) or path/to/file.py:factory. "
                                                "No default: required except for a TorchScript file kept as it is."),
            arch_args: str = typer.Option("{}", help='Keyword arguments of the factory as a JSON object, e.g. '
                                                     '{"num_classes": 10}.'),
            torchscript: bool = flag("--torchscript", TORCHSCRIPT_HELP),
            trust_pickle: bool = flag("--trust-pickle", TRUST_PICKLE_HELP),
            image_size: int = typer.Option(None, help="Side the images are resized to (no default: "
                                                      "required, or in --transform)."),
            crop: int = typer.Option(None, help="Centre crop after the resize (default: none)."),
            channels: int = typer.Option(None, help="Channels the model takes, 1 or 3; images with the other count "
                                                    "are converted (grey repeated, colour to luma) (default: read "
                                                    "from the first convolution, images never converted)."),
            mean: str = typer.Option(None, help="Normalisation mean, one value or one per channel, e.g. 0.1307 or "
                                                "0.485,0.456,0.406 (no default: required, or in --transform)."),
            std: str = typer.Option(None, help="Normalisation std, as --mean (no default: required, or in "
                                               "--transform)."),
            interpolation: str = typer.Option("bilinear", help=f"Resize filter: {choices(INTERPOLATIONS)}."),
            transform: str = typer.Option(None, help="The whole preprocessing as one JSON object (or a file holding "
                                                     "it) with keys size, crop, channels, mean, std, interpolation; "
                                                     "instead of the options above (default: built from them)."),
            classes: str = typer.Option(None, help="Class names in label order, comma-separated (default: the "
                                                   "class indices)."),
            classes_file: Path = typer.Option(None, help="Class names in label order, one per line (default: "
                                                         "--classes)."),
            output_key: str = typer.Option(None, help="Where the logits are in a structured output: a key, attribute "
                                                      "or position (default: the tensor itself, a mapping's logits or "
                                                      "a tuple's first element)."),
            train_accuracy: float = typer.Option(None, help="The model's accuracy on its training set as its owner "
                                                            "states it; extract compares it with what it "
                                                            "measures (default: none stated)."),
            out: Path = typer.Option(..., help="The gmint checkpoint to write."),
            overwrite: bool = flag("--overwrite", "Replace an existing --out."),
            json_out: bool = flag("--json", "Print the description as JSON instead.")) -> None:
    """Describe a model trained outside gmint once (code, preprocessing, output, classes) and check it."""
    check_output(out, "--out", inputs={"the weights": weights}, overwrite=overwrite)
    if torchscript and trust_pickle:
        raise InputError("give --torchscript or --trust-pickle, not both")
    spec = ModelSpec(arch=arch, transform=_transform(transform, image_size, crop, channels, mean, std, interpolation),
                     arch_args=json_object(arch_args, "--arch-args"), classes=read_classes(classes, classes_file),
                     output_key=output_key, train_accuracy=train_accuracy)
    if arch is None and not torchscript:
        raise InputError("--arch is required: the code that builds the model (package.module:factory or "
                         "path/to/file.py:factory)")
    kind = "torchscript" if torchscript else "pickle" if trust_pickle else "state-dict"
    audited = import_model(weights, spec, out=out, kind=kind, overwrite=overwrite)
    show_description(out, audited, json_out)


@app.command("show")
@cli_errors
def show(model: Path = typer.Argument(..., help="A gmint checkpoint (or, with --torchscript, an imported "
                                                "TorchScript file)."),
         torchscript: bool = flag("--torchscript", TORCHSCRIPT_HELP),
         json_out: bool = flag("--json", "Print the description as JSON instead.")) -> None:
    """Print how a model is built, fed and read, as its checkpoint records it."""
    show_description(model, load_model(model, None, torchscript, False), json_out)


def _transform(spec: str | None, size: int | None, crop: int | None, channels: int | None, mean: str | None,
               std: str | None, interpolation: str) -> Transform:
    if spec is not None:
        values = {"--image-size": size, "--crop": crop, "--channels": channels, "--mean": mean, "--std": std}
        given = [option for option, value in values.items() if value is not None]
        if given or interpolation != "bilinear":
            raise InputError(f"--transform gives the whole preprocessing; drop {', '.join(given) or '--interpolation'}")
        return Transform.from_dict(read_transform(spec))
    missing = [o for o, v in (("--mean", mean), ("--std", std), ("--image-size", size)) if v is None]
    if missing:
        raise InputError(f"{', '.join(missing)} must be given: the preprocessing the model was trained with (gmint "
                         "never assumes one)")
    assert mean is not None and std is not None
    return Transform(size=size, mean=parse_numbers(mean, "--mean"), std=parse_numbers(std, "--std"),
                     channels=channels, crop=crop, interpolation=interpolation)


def show_description(path: Path, audited: AuditedModel, json_out: bool) -> None:
    """The description a model records, or one line saying it records none."""
    description = audited.description
    if description is None:
        raise InputError(f"{path} records no model description; import it with gmint model import")
    if json_out:
        stated, source = audited.record.stated_train_accuracy, audited.record.source
        print_json({"model": str(path), "fingerprint": audited.fingerprint, **description.to_meta(),
                    "stated": {"train_accuracy": stated} if stated is not None else None,
                    "source": source.to_dict() if source is not None else None})
        return
    console.print(f"{path}: {describe_line(description)}")
    console.print(f"  fingerprint {audited.fingerprint[:16]}")


def describe_line(d: ModelDescription) -> str:
    """One line a person reads: code, input, preprocessing, output and classes."""
    t = d.transform
    steps = [f"{t.channels} channels" if t.channels else "", f"resize {t.size} ({t.interpolation})" if t.size else "",
             f"crop {t.crop}" if t.crop else "", f"mean {_numbers(t.mean)} std {_numbers(t.std)}"]
    classes = ", ".join(d.classes[:6]) + (", …" if len(d.classes) > 6 else "") if d.classes else "named by index"
    args = f"({json.dumps(d.arch_args)})" if d.arch_args else ""
    return (f"{d.arch}{args}; input {d.input_channels}x{d.input_size}x{d.input_size}; preprocessing "
            f"{', '.join(s for s in steps if s)}; logits {d.output}; {d.num_classes} classes ({classes})")


def _numbers(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)
