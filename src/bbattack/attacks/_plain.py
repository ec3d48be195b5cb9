"""Attack state as plain data, never pickle: a JSON tree plus a list of numpy arrays.

What it takes: None, bool, int, float (NaN and infinities too), str, bytes, numpy arrays
(numeric, or of strings) and scalars, lists, tuples, dicts with string keys, torch generators
(their state as bytes), counter-based noise streams (seeds' keys and counters) and an attack's
own typed state (a :class:`PlainState` dataclass, named by its class, field by field). An array
held in two places (a stream's counter, also held as a field) comes back as one array,
held in both places again. Anything else is refused with the path to it.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ..errors import UserInputError
from ..results import StepRecord
from ._rand import Streams

__all__ = [
    "PlainDataError",
    "PlainState",
    "from_plain",
    "to_plain",
    "trace_columns",
    "trace_records",
]


class PlainDataError(UserInputError):
    """State that is not plain data, or a tree that does not decode."""


class PlainState:
    """Base of an attack's own state: a ``@dataclass`` whose fields are plain data (arrays,
    numbers, strings, noise streams). A checkpoint names the class and stores its fields; only
    classes defined as subclasses of this one can be named back when a checkpoint is read."""

    known: ClassVar[dict[str, type[PlainState]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        PlainState.known[f"{cls.__module__}.{cls.__qualname__}"] = cls


def to_plain(value: Any) -> tuple[Any, list[NDArray[Any]]]:
    """(JSON-able tree, arrays) for ``value``."""
    arrays: list[NDArray[Any]] = []
    return _enc(value, arrays, {}, "state"), arrays


def from_plain(tree: Any, arrays: list[NDArray[Any]]) -> Any:
    """The value :func:`to_plain` was given (arrays shared where they were)."""
    return _dec(tree, arrays)


def _enc(v: Any, arrays: list[NDArray[Any]], memo: dict[int, int], path: str) -> Any:
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"$float": repr(v)}
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            items = v.ravel().tolist()
            if not all(i is None or isinstance(i, str) for i in items):
                raise PlainDataError(f"cannot checkpoint {path}: an object array of non-strings")
            return {"$strings": items, "shape": list(v.shape)}
        if id(v) not in memo:
            memo[id(v)] = len(arrays)
            arrays.append(v)
        return {"$array": memo[id(v)]}
    if isinstance(v, np.generic):
        return {"$scalar": v.dtype.str, "value": _enc(v.item(), arrays, memo, path)}
    if isinstance(v, bytes):
        return {"$bytes": base64.b64encode(v).decode("ascii")}
    if isinstance(v, tuple):
        return {"$tuple": [_enc(x, arrays, memo, f"{path}[{i}]") for i, x in enumerate(v)]}
    if isinstance(v, list):
        return [_enc(x, arrays, memo, f"{path}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, dict):
        bad = [k for k in v if not isinstance(k, str)]
        if bad:
            raise PlainDataError(f"cannot checkpoint {path}: a dict key {bad[0]!r} is not a str")
        return {"$dict": {k: _enc(x, arrays, memo, f"{path}[{k!r}]") for k, x in v.items()}}
    if isinstance(v, PlainState) and dataclasses.is_dataclass(v):
        name = f"{type(v).__module__}.{type(v).__qualname__}"
        body = {
            f.name: _enc(getattr(v, f.name), arrays, memo, f"{path}.{f.name}")
            for f in dataclasses.fields(v)
        }
        return {"$state": name, "fields": body}
    if isinstance(v, Streams):
        return {
            "$streams": {
                "keys": _enc(v.keys, arrays, memo, f"{path}.keys"),
                "counter": _enc(v.counter, arrays, memo, f"{path}.counter"),
            }
        }
    if type(v).__module__.startswith("torch") and type(v).__name__ == "Generator":
        state = bytes(v.get_state().numpy().tobytes())
        return {"$torch_generator": base64.b64encode(state).decode("ascii")}
    raise PlainDataError(
        f"cannot checkpoint {path}: a {type(v).__name__} is not plain data (attacks keep "
        "arrays, numbers, strings and RNG states in their state)"
    )


def _dec(t: Any, arrays: list[NDArray[Any]]) -> Any:
    if t is None or isinstance(t, bool | int | float | str):
        return t
    if isinstance(t, list):
        return [_dec(x, arrays) for x in t]
    if not isinstance(t, dict) or len(t) not in (1, 2):
        raise PlainDataError(f"bad checkpoint tree node {str(t)[:60]}")
    tag = next(iter(t))
    body = t[tag]
    match tag:
        case "$float":
            return float(body)
        case "$array":
            return arrays[int(body)]
        case "$strings":
            out = np.empty(len(body), dtype=object)
            out[:] = body
            return out.reshape(t["shape"])
        case "$scalar":
            return np.dtype(body).type(_dec(t["value"], arrays))
        case "$bytes":
            return base64.b64decode(body)
        case "$tuple":
            return tuple(_dec(x, arrays) for x in body)
        case "$dict":
            return {k: _dec(x, arrays) for k, x in body.items()}
        case "$streams":
            s = Streams.__new__(Streams)  # keys and counter are its whole state
            s.keys = _dec(body["keys"], arrays)
            s.counter = _dec(body["counter"], arrays)
            return s
        case "$state":
            cls = PlainState.known.get(str(body))
            if cls is None:
                raise PlainDataError(f"checkpoint names an unknown attack state {body!r}")
            return cls(**{k: _dec(x, arrays) for k, x in t["fields"].items()})
        case "$torch_generator":
            import torch

            g = torch.Generator()
            raw = np.frombuffer(base64.b64decode(body), dtype=np.uint8).copy()
            g.set_state(torch.from_numpy(raw))
            return g
    raise PlainDataError(f"bad checkpoint tree tag {tag!r}")


_TRACE = ("image", "step", "queries", "loss", "target_prob", "target_rank", "eps", "lr")


def trace_columns(trace: list[StepRecord]) -> dict[str, NDArray[Any]]:
    # Columns, not records: fast and exact (None is NaN or -1; the run never stores NaN).
    def col(name: str, dtype: Any, none: Any) -> NDArray[Any]:
        return np.array([none if (v := getattr(t, name)) is None else v for t in trace], dtype)

    return {
        "image": col("image", np.int64, -1),
        "step": col("step", np.int64, -1),
        "queries": col("queries", np.int64, -1),
        "loss": col("loss", np.float64, np.nan),
        "target_prob": col("target_prob", np.float64, np.nan),
        "target_rank": col("target_rank", np.int64, -1),
        "eps": col("eps", np.float64, np.nan),
        "lr": col("lr", np.float64, np.nan),
    }


def trace_records(cols: dict[str, NDArray[Any]]) -> list[StepRecord]:
    def opt_f(v: float) -> float | None:
        return None if np.isnan(v) else float(v)

    rows = zip(*(cols[k].tolist() for k in _TRACE), strict=True)
    return [
        StepRecord(
            image=i,
            step=s,
            queries=q,
            loss=opt_f(lo),
            target_prob=opt_f(p),
            target_rank=None if r < 0 else r,
            eps=e,
            lr=lr,
        )
        for i, s, q, lo, p, r, e, lr in rows
    ]
