"""Networks from outside imgpix: torchvision's architectures by name and user factories.

Nothing here downloads: torchvision models are built with ``weights=None`` and
``weights_backbone=None``, and weights come only from local files (:func:`load_weights`).

Every network is wrapped in an adapter that checks its output and exposes
``num_classes``, the interface :class:`~imgpix.models.ImgPixNet` needs:

* :class:`SegmenterAdapter`: image [B,3,H,W] -> logits [B,N,H,W] at the input's size.
* :class:`LabelerAdapter`: image [B,3,H,W] -> logits [B,N], ``scores`` their sigmoid.

The wrapped network is the adapter's ``net``, so an adapter's state dict has keys ``net.*``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models import list_models, segmentation

SEGMENTERS: tuple[str, ...] = tuple(list_models(module=segmentation))
CLASSIFIERS: tuple[str, ...] = tuple(list_models(module=torchvision.models))
SHOWN_KEYS = 3  # keys named in a mismatch message; the rest are counted


def _shape(x: object) -> str:
    return str(list(x.shape)) if isinstance(x, Tensor) else type(x).__name__


class SegmenterAdapter(nn.Module):
    """Any segmentation network as image [B,3,H,W] -> logits [B,N,H,W] at the input's resolution.

    The network may return a tensor or a mapping with ``"out"`` (torchvision's style); logits
    smaller than the input are upsampled bilinearly. Any other output raises ``ValueError``.

    Auxiliary head: when the mapping also holds ``"aux"``, ``forward`` keeps those logits
    (checked and upsampled like ``"out"``) in ``last_aux`` until the next call, so a trainer
    can add an auxiliary loss after ``model(image)``; ``last_aux`` is None without an aux head.
    :meth:`forward_with_aux` returns both directly.
    """

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.net, self.num_classes = net, num_classes
        self.last_aux: Tensor | None = None

    def _logits(self, out: object, image: Tensor, what: str) -> Tensor:
        batch, _, height, width = image.shape
        expected = f"[{batch}, {self.num_classes}, {height}, {width}] (or smaller H, W)"
        if not isinstance(out, Tensor) or out.dim() != 4 or out.shape[:2] != (batch, self.num_classes) \
                or out.shape[2] > height or out.shape[3] > width:
            raise ValueError(f"{what}: expected logits {expected}, got {_shape(out)}")
        if out.shape[2:] != image.shape[2:]:
            out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
        return out

    def forward_with_aux(self, image: Tensor) -> tuple[Tensor, Tensor | None]:
        """Logits [B,N,H,W] and the auxiliary head's logits (None without one)."""
        if image.dim() != 4:
            raise ValueError(f"expected an image batch [B, 3, H, W], got {list(image.shape)}")
        out, aux = self.net(image), None
        name = type(self.net).__name__
        if isinstance(out, Mapping):
            if "out" not in out:
                raise ValueError(f"{name} returned a mapping without 'out' (keys {sorted(out)})")
            out, aux = out["out"], out.get("aux")
            aux = None if aux is None else self._logits(aux, image, f"{name} 'aux'")
        return self._logits(out, image, name), aux

    def forward(self, image: Tensor) -> Tensor:
        logits, self.last_aux = self.forward_with_aux(image)
        return logits


class LabelerAdapter(nn.Module):
    """Any classifier as image [B,3,H,W] -> logits [B,N]; ``scores`` gives their sigmoid.

    A named tuple with a ``logits`` field (googlenet and inception in training mode) gives
    that field. Any other output than [B,N] raises ``ValueError``.
    """

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.net, self.num_classes = net, num_classes

    def forward(self, image: Tensor) -> Tensor:
        out = self.net(image)
        out = getattr(out, "logits", out) if isinstance(out, tuple) else out
        expected = (image.shape[0], self.num_classes)
        if not isinstance(out, Tensor) or tuple(out.shape) != expected:
            raise ValueError(f"{type(self.net).__name__}: expected logits {list(expected)}, got {_shape(out)}")
        return out

    def scores(self, image: Tensor) -> Tensor:
        """Per-class presence probabilities [B,N]."""
        return torch.sigmoid(self(image))


def check_output(module: nn.Module, num_classes: int, image_size: Sequence[int] = (64, 64)) -> None:
    """One forward of a dummy batch of 2 images through ``module`` (in eval mode, no gradient).

    Raises ``ValueError`` naming the expected and the actual shape when the output is not
    what a segmenter (or, for a :class:`LabelerAdapter`, a labeler) of ``num_classes`` gives.
    """
    if not isinstance(module, (SegmenterAdapter, LabelerAdapter)):
        module = SegmenterAdapter(module, num_classes)
    elif module.num_classes != num_classes:
        raise ValueError(f"the network has {module.num_classes} classes, expected {num_classes}")
    param = next(module.parameters(), None)
    image = torch.zeros(2, 3, *image_size, device=None if param is None else param.device,
                        dtype=None if param is None or not param.is_floating_point() else param.dtype)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(image)
    finally:
        module.train(was_training)
        if isinstance(module, SegmenterAdapter):
            module.last_aux = None


def _known(name: str, names: Sequence[str], kind: str) -> None:
    if name not in names:
        raise ValueError(f"unknown torchvision {kind} {name!r}; valid names: {list(names)}")


def build_torchvision_segmenter(name: str, num_classes: int, weights: str | PathLike | None = None,
                                aux: bool = False) -> SegmenterAdapter:
    """torchvision's segmentation network ``name`` (one of ``SEGMENTERS``) for ``num_classes``.

    Randomly initialised, nothing downloaded; ``weights`` is a local state dict loaded with
    :func:`load_weights`. ``aux=True`` keeps the auxiliary head (see :class:`SegmenterAdapter`).
    """
    _known(name, SEGMENTERS, "segmenter")
    builder = torchvision.models.get_model_builder(name)
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if "aux_loss" in inspect.signature(builder).parameters:
        kwargs["aux_loss"] = aux
    elif aux:
        raise ValueError(f"{name} has no auxiliary head; build it with aux=False")
    model = SegmenterAdapter(builder(**kwargs), num_classes)
    if weights is not None:
        load_weights(model, weights)
    return model


def build_torchvision_labeler(name: str, num_classes: int,
                              weights: str | PathLike | None = None) -> LabelerAdapter:
    """torchvision's classifier ``name`` (one of ``CLASSIFIERS``) with an N-way final layer.

    Randomly initialised, nothing downloaded; ``weights`` is a local state dict loaded with
    :func:`load_weights`. Some architectures need a minimum (vit: exactly 224) input size.
    """
    _known(name, CLASSIFIERS, "classifier")
    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    model = LabelerAdapter(net, num_classes)
    if weights is not None:
        load_weights(model, weights)
    return model


def _accepts_num_classes(factory: Callable) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return any(p.name == "num_classes" and p.kind != p.POSITIONAL_ONLY or p.kind == p.VAR_KEYWORD
               for p in params)


def load_factory(spec: str, num_classes: int | None = None) -> nn.Module:
    """The network ``factory()`` returns, for ``spec`` = ``"package.module:factory"``.

    The factory (a function or an ``nn.Module`` class) is called as
    ``factory(num_classes=num_classes)`` when ``num_classes`` is given and its signature has a
    ``num_classes`` parameter (or ``**kwargs``), else as ``factory()``. Every failure (bad spec,
    module not importable, no such attribute, not callable, the call raising, no ``nn.Module``
    returned) is a one-line ``ValueError``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"network factory {spec!r} must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's module
        raise ValueError(f"cannot import module {module_name!r} of factory {spec!r}: "
                         f"{type(err).__name__}: {err}") from err
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (factory {spec!r})")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(f"factory {spec!r} is not callable (type {type(factory).__name__})")
    kwargs = {"num_classes": num_classes} if num_classes is not None and _accepts_num_classes(factory) else {}
    try:
        net = factory(**kwargs)
    except Exception as err:  # noqa: BLE001 - report the user's error in one line
        raise ValueError(f"factory {spec!r} failed: {type(err).__name__}: {err}") from err
    if not isinstance(net, nn.Module):
        raise ValueError(f"factory {spec!r} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def factory_segmenter(spec: str, num_classes: int, image_size: Sequence[int] = (64, 64)) -> SegmenterAdapter:
    """:func:`load_factory` wrapped in a :class:`SegmenterAdapter`, checked by :func:`check_output`."""
    model = SegmenterAdapter(load_factory(spec, num_classes), num_classes)
    check_output(model, num_classes, image_size)
    return model


def read_state_dict(path: str | PathLike) -> dict[str, Tensor]:
    """A state dict from a local file: the dict itself, or a checkpoint's ``state_dict`` / ``model``.

    Loaded with ``weights_only=True`` onto the CPU; a missing or unreadable file raises ``ValueError``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip and weights-only errors alike
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read weights from {path}: {reason}") from err
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict (a dict of tensors, or a checkpoint with "
                         f"'state_dict' or 'model')")
    return dict(state)


def _keys(kind: str, keys: list[str]) -> str:
    more = f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return f"{len(keys)} {kind} keys ({', '.join(keys[:SHOWN_KEYS])}{more})"


def _mismatch(path: Path, target: nn.Module, state: Mapping[str, Tensor], num_classes: int | None) -> str | None:
    """What keeps ``state`` from loading into ``target``, in one line, or None."""
    expected = target.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    for k in bad:  # the classifier layer: only the class dimension differs
        want, got = expected[k].shape, state[k].shape
        if num_classes is not None and want[0] == num_classes and want[1:] == got[1:]:
            return (f"{path}: weights are for {got[0]} classes, the data has {num_classes} "
                    f"({k}: {list(got)} in the file, {list(want)} in the network)")
    problems = [_keys(kind, keys) for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if bad:
        k = bad[0]
        problems.append(f"{len(bad)} shape mismatches (e.g. {k}: {list(state[k].shape)} in the file, "
                        f"{list(expected[k].shape)} in the network)")
    return f"{path} does not fit {type(target).__name__}: " + "; ".join(problems) if problems else None


def load_weights(module: nn.Module, path: str | PathLike) -> nn.Module:
    """Load the local state dict at ``path`` (see :func:`read_state_dict`) into ``module``, strictly.

    For an adapter, a file without the ``net.`` prefix (the bare network's own state dict) is
    loaded into ``module.net``. A mismatch raises a one-line ``ValueError`` naming the missing and
    unexpected keys, or, for the classifier layer, the class counts. Returns ``module``.
    """
    path = Path(path)
    state = read_state_dict(path)
    target = module
    if isinstance(module, (SegmenterAdapter, LabelerAdapter)) and not any(k.startswith("net.") for k in state):
        target = module.net
    if problem := _mismatch(path, target, state, getattr(module, "num_classes", None)):
        raise ValueError(problem)
    target.load_state_dict(state)
    return module
