"""Multi-level CNN encoders for the detector: a small CPU-friendly CNN and a torchvision-compatible ResNet.

Every encoder maps a Bx3xHxW normalised RGB batch to three feature maps at strides 4, 8 and 16
(``encoder.channels`` gives their widths). Pretrained weights are optional and loaded from a local
file or torchvision's weights API (see :func:`load_pretrained_weights`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from protoinspect.sdk.errors import ConfigError, MissingDependencyError


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _ResidualBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 strided) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class SmallCNNEncoder(nn.Module):
    """A ResNet-style CNN sized for a 2-core CPU (about 11 ms for one 256x256 frame on 2 threads).

    Stages: stem (stride 2) -> 4 (``widths[0]``) -> 8 (``widths[1]``) -> 16 (``widths[2]``).
    """

    def __init__(self, widths: tuple[int, int, int] = (48, 96, 192), stem_width: int = 16) -> None:
        super().__init__()
        self.channels = tuple(widths)
        self.stem = nn.Sequential(_conv_bn_relu(3, stem_width, 2), _conv_bn_relu(stem_width, stem_width))
        self.stage1 = nn.Sequential(_ResidualBlock(stem_width, widths[0], 2), _ResidualBlock(widths[0], widths[0], 1))
        self.stage2 = nn.Sequential(_ResidualBlock(widths[0], widths[1], 2), _ResidualBlock(widths[1], widths[1], 1))
        self.stage3 = nn.Sequential(_ResidualBlock(widths[1], widths[2], 2), _ResidualBlock(widths[2], widths[2], 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bx3xHxW -> [Bx C0 x H/4, Bx C1 x H/8, Bx C2 x H/16]."""
        f1 = self.stage1(self.stem(x))
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        return [f1, f2, f3]


class _BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock with the same parameter names (so its state_dict loads)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18Encoder(nn.Module):
    """ResNet-18 trunk (conv1..layer3) with torchvision's parameter names; features of layer1-3."""

    channels = (64, 128, 256)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(_BasicBlock(64, 64, 1), _BasicBlock(64, 64, 1))
        self.layer2 = nn.Sequential(_BasicBlock(64, 128, 2), _BasicBlock(128, 128, 1))
        self.layer3 = nn.Sequential(_BasicBlock(128, 256, 2), _BasicBlock(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bx3xHxW -> [Bx64xH/4, Bx128xH/8, Bx256xH/16]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


ENCODERS: dict[str, type[nn.Module]] = {"small_cnn": SmallCNNEncoder, "resnet18": ResNet18Encoder}

# torchvision weight enum per encoder name (used only when a user asks for torchvision weights)
_TORCHVISION_WEIGHTS = {"resnet18": "ResNet18_Weights"}


def build_encoder(name: str) -> nn.Module:
    """Build an encoder by registry name (``small_cnn`` or ``resnet18``), randomly initialised."""
    if name not in ENCODERS:
        msg = f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}"
        raise ConfigError(msg)
    return ENCODERS[name]()


def load_pretrained_weights(encoder: nn.Module, name: str, source: str) -> list[str]:
    """Load pretrained weights into ``encoder`` and return the checkpoint keys that were not used.

    Args:
        encoder: a module from :func:`build_encoder`.
        name: its registry name.
        source: a local ``.pth``/``.pt`` state_dict (read with ``weights_only=True``) or ``.safetensors``
            file; or ``torchvision:DEFAULT`` / ``torchvision:IMAGENET1K_V1`` for torchvision's weights
            API (needs torchvision and either network access or torch hub's local cache).

    Raises:
        ConfigError: the file is missing, or its tensors do not fit the encoder.
        MissingDependencyError: torchvision was asked for but is not installed.
    """
    if source.startswith("torchvision:"):
        state = _torchvision_state_dict(name, source.split(":", 1)[1])
    else:
        path = Path(source)
        if not path.is_file():
            msg = f"pretrained weights file not found: {path}"
            raise ConfigError(msg)
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch/safetensors raise many types for corrupt files
            msg = f"pretrained weights file {path} is unreadable or not a weights file ({type(exc).__name__}: {exc})"
            raise ConfigError(msg) from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        msg = f"{source}: expected a state_dict (mapping of tensors), got {type(state).__name__}"
        raise ConfigError(msg)
    own = encoder.state_dict()
    matched = {k: v for k, v in state.items() if k in own}
    if not matched:
        msg = f"{source}: none of its {len(state)} tensors match encoder {name!r} (wrong architecture?)"
        raise ConfigError(msg)
    bad = [k for k, v in matched.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        msg = f"{source}: shape mismatch for {bad[:3]} (e.g. {tuple(matched[bad[0]].shape)} vs {tuple(own[bad[0]].shape)})"
        raise ConfigError(msg)
    missing = [k for k in own if k not in matched and not k.endswith("num_batches_tracked")]
    if missing:
        msg = f"{source}: checkpoint lacks {len(missing)} encoder tensors, e.g. {missing[:3]}"
        raise ConfigError(msg)
    encoder.load_state_dict(matched, strict=False)
    return sorted(k for k in state if k not in own)


def _torchvision_state_dict(name: str, weights: str) -> dict[str, torch.Tensor]:
    if name not in _TORCHVISION_WEIGHTS:
        msg = f"torchvision has no weights for encoder {name!r}; use a local file"
        raise ConfigError(msg)
    try:
        import torchvision.models as tvm
    except ImportError as exc:
        msg = "torchvision weights requested but torchvision is not installed: pip install torch==2.14.1 torchvision==0.29.1"
        raise MissingDependencyError(msg) from exc
    enum = getattr(tvm, _TORCHVISION_WEIGHTS[name])
    weight = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    return weight.get_state_dict(progress=False)
