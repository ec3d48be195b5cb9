"""A model spec's text, parsed and checked without loading anything: where the model comes
from (:class:`ModelSpec`), the preprocessing given with it, a labels file, and the pipeline the
spec's options and the file's own say-so make together. See :mod:`bbattack.targets.spec`."""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import zoo
from ..errors import UserInputError
from ._preprocess import Pipeline, Preprocessing, resolve

__all__ = [
    "ModelSpec",
    "builtin_name",
    "parse_spec",
    "pipeline_of",
    "read_labels",
    "with_options",
]

Kind = Literal["builtin", "onnx", "torchscript", "factory", "hf"]
TORCHSCRIPT_SUFFIXES = frozenset({".pt", ".pth", ".ts", ".jit", ".torchscript"})
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_KINDS = "a model file (.onnx, TorchScript .pt/.ts), a Hugging Face directory or module:function"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: where the model comes from and the preprocessing the user gave."""

    source: str  # a built-in's full name, an absolute path, or module:function
    kind: Kind
    options: Preprocessing = field(default_factory=Preprocessing)

    @property
    def text(self) -> str:
        """The canonical spec string: loading it again gives the same model."""
        q = self.options.query()
        return f"{self.source}?{q}" if q else self.source

    def __str__(self) -> str:
        return self.text


def builtin_name(text: str) -> str | None:
    """A built-in model's full name from any of its names; None for anything else."""
    try:
        return zoo.canonical(text)
    except UserInputError:
        return None


def parse_spec(spec: str | ModelSpec, *, base: Path | None = None, **options: Any) -> ModelSpec:
    """Parse and check a spec (a file must exist; nothing is loaded). ``options`` are the
    preprocessing given apart from the string (the CLI's flags; None: not given); ``base``:
    the directory relative paths start from (a bench config's; default the current one)."""
    if isinstance(spec, ModelSpec):
        text, given = spec.source, spec.options.given()
    else:
        text, given = _split_query(spec.strip())
    kw = {k: v for k, v in options.items() if v is not None}
    if twice := sorted(set(kw) & set(given)):
        raise UserInputError(f"{text}: {', '.join(twice)} given both as a flag and in the spec")
    raw = {**given, **kw}
    labels = raw.get("labels")
    if base is not None and labels is not None and not Path(labels).expanduser().is_absolute():
        raw["labels"] = str(base / labels)
    opts = Preprocessing.of(**raw)
    kind, source = _kind(text, base)
    if kind == "builtin" and opts.given():
        flags = ", ".join("--" + k.replace("_", "-") for k in opts.given())
        raise UserInputError(
            f"{text} is a built-in model with its own preprocessing; {flags}: for a model "
            "file, a module:function or a Hugging Face directory only"
        )
    return ModelSpec(source, kind, opts)


def with_options(spec: str | None, **options: Any) -> str | None:
    """``spec`` (None: the default model) with ``options`` appended to its query, as the
    CLI's flags give them (None: not given). Nothing is checked here: :func:`parse_spec`
    checks the result, and refuses an option given twice."""
    given = {k: v for k, v in options.items() if v is not None}
    if not given:
        return spec
    text = spec or "efficientnet-lite0"
    items = [
        (k, ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v))
        for k, v in given.items()
    ]
    sep = "&" if _split_query(text)[1] else "?"
    return text + sep + urllib.parse.urlencode(items, safe=",/")


def _split_query(text: str) -> tuple[str, dict[str, Any]]:
    """The source and the options after its last ``?`` (a path may hold a ``?`` itself)."""
    head, sep, tail = text.rpartition("?")
    if not sep or "=" not in tail or Path(text).exists():
        return text, {}
    try:
        pairs = urllib.parse.parse_qsl(tail, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise UserInputError(f"{text}: options after ? must be KEY=VALUE joined by &") from None
    options: dict[str, Any] = {}
    for k, v in pairs:
        key = k.strip().replace("-", "_")
        if key in options:
            raise UserInputError(f"{text}: {key} is given twice")
        options[key] = v
    return head, options


def _kind(text: str, base: Path | None) -> tuple[Kind, str]:
    full = builtin_name(text)
    if full is not None:
        return "builtin", full
    p = Path(text).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    if p.is_dir():
        if (p / "config.json").is_file():
            return "hf", str(p.resolve())
        raise UserInputError(
            f"{text}: a directory, but not a Hugging Face model (no config.json; save it with "
            "save_pretrained)"
        )
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".onnx":
            return "onnx", str(p.resolve())
        if suffix in TORCHSCRIPT_SUFFIXES:
            return "torchscript", str(p.resolve())
        raise UserInputError(
            f"{text}: unknown model file type {p.suffix or '(no suffix)'}; give {_KINDS}"
        )
    if _FACTORY.match(text):
        return "factory", text
    if "/" in text or p.suffix.lower() in {".onnx", *TORCHSCRIPT_SUFFIXES}:
        raise UserInputError(f"{text}: no such file")
    short = ", ".join(m.short for m in zoo.BUILTIN.values())
    raise UserInputError(f"unknown model {text!r}; built-in models: {short}; or give {_KINDS}")


def read_labels(path: Path) -> list[str]:
    """Class names from a file: one per line, or JSON (a list, or ``{id: name}`` with ids
    0..K-1)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"{path}: cannot read the labels ({e})") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserInputError(f"{path}: not valid JSON ({e})") from None
        if isinstance(data, dict):
            try:
                ids = sorted(int(k) for k in data)
            except ValueError:
                raise UserInputError(f"{path}: a JSON object's keys must be class ids") from None
            if ids != list(range(len(ids))):
                raise UserInputError(f"{path}: the class ids must be 0..{len(ids) - 1}")
            data = [data[str(i)] if str(i) in data else data[i] for i in ids]
        if not isinstance(data, list) or not all(isinstance(n, str | int) for n in data):
            raise UserInputError(f"{path}: expected a JSON list of names or {{id: name}}")
        names = [str(n) for n in data]
    else:
        names = text.splitlines()
        while names and not names[-1].strip():
            names.pop()
        names = [n.strip() for n in names]
    if empty := [i + 1 for i, n in enumerate(names) if not n]:
        raise UserInputError(f"{path}: label {empty[0]} is empty")
    if not names:
        raise UserInputError(f"{path}: no labels")
    return names


def pipeline_of(spec: ModelSpec, says: Preprocessing) -> Pipeline:
    """The spec's options over what the file says; a fixed input the file declares cannot be
    changed by an option."""
    for key in ("input_size", "layout"):
        mine, theirs = getattr(spec.options, key), getattr(says, key)
        if mine is not None and theirs is not None and mine != theirs:
            raise UserInputError(
                f"{spec.source}: --{key.replace('_', '-')} {_show(mine)}, but the model's "
                f"input is fixed at {_show(theirs)}"
            )
    return resolve(spec.options.over(says))


def _show(v: Any) -> str:
    return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)
