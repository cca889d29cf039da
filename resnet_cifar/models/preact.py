"""Pre-activation ResNets for CIFAR: He, Zhang, Ren, Sun 2016, "Identity Mappings in Deep Residual Networks".

`arch=preact` (conf/arch/preact.yaml): each residual unit is BN-ReLU-conv ("full pre-activation", Fig. 4(e)),
nothing follows the addition, so the shortcut path is a pure identity from unit to unit. The CIFAR layout
of that paper, built through the same seam as a user's model:

- basic units (two 3x3 convs), stages of 16, 32, 64 filters, depth 6n+2 (110: Table 2's 6.37%);
- bottleneck units (`bottleneck: true`: 1x1, 3x3, 1x1 with 4x the filters out), stages of 64, 128, 256,
  depth 9n+2 (164: 1,703,258 parameters, 1001: 10,327,706; the paper's Table 4 says 1.7M and 10.2M, the
  latter matching only without BN's scales and shifts).

As the paper's appendix and the authors' code (KaimingHe/resnet-1k-layers, fb.resnet.torch's preresnet) do,
the first unit of each stage applies its BN-ReLU before the split, so its shortcut sees the activated input
(for the first unit: conv1's output activated), and an extra BN-ReLU follows the last unit, before the
pooling. Where the authors' bottleneck code strides, on the first 1x1 conv, so does this. Shortcut options:
A as in resnet.py (zero-padded identity where dimensions grow); B and C project with a 1x1 conv and no BN
(the next unit's pre-activation normalizes), as the authors' code does where dimensions grow: their 164 and
1001 are option B.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

# Only the package's public pieces, imported by name as a user's model would: this file works as a plug-in
# from anywhere (tests/test_plugins.py trains a copy of it from outside the package).
from resnet_cifar.config import Shortcut
from resnet_cifar.errors import ConfigError
from resnet_cifar.models.resnet import ZeroPadIdentity, check_depth, conv3x3

log = logging.getLogger(__name__)

WIDTHS = (16, 32, 64)  # of the 3x3 convs in each stage; a bottleneck unit puts out EXPANSION times as many
EXPANSION = 4
PAPER_BOTTLENECK_DEPTHS = (164, 1001)  # the 2016 paper's bottleneck nets (164 is 6n+2 too)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def make_shortcut(shortcut: Shortcut, in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Options A, B and C as in resnet.py, but a projection is a 1x1 conv alone (no BN: the next unit's
    pre-activation normalizes), as the authors' code."""
    grows = stride != 1 or in_planes != out_planes
    if shortcut is Shortcut.C or (shortcut is Shortcut.B and grows):
        return conv1x1(in_planes, out_planes, stride)
    if grows:
        return ZeroPadIdentity(in_planes, out_planes, stride)
    return nn.Identity()


def bottleneck_units(depth: int) -> int:
    """n for a bottleneck depth 9n+2 (three layers a unit), or refused."""
    if depth < 11 or (depth - 2) % 9:
        raise ConfigError(f"depth={depth} is not allowed: depth must be 9n+2 with n >= 1 for bottleneck units "
                          "(11, 20, 29, ..., 164, 1001)")
    return (depth - 2) // 9


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus the shortcut; `shared` units activate before the split."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: nn.Module, shared: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut
        self.shared = shared

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        skip = self.shortcut(out if self.shared else x)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + skip

    def response_convs(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1 (4x the filters), plus the shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: nn.Module, shared: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut
        self.shared = shared

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        skip = self.shortcut(out if self.shared else x)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + skip

    def response_convs(self) -> list[nn.Module]:
        return [self.conv2]  # its one 3x3 layer


class PreActResNet(nn.Module):
    """conv3x3 (16) -> 3 stages of n pre-activation units -> BN-ReLU -> global average pool -> linear."""

    def __init__(self, n: int, shortcut: Shortcut, num_classes: int, bottleneck: bool) -> None:
        super().__init__()
        unit, expansion = (PreActBottleneck, EXPANSION) if bottleneck else (PreActBlock, 1)
        self.conv1 = conv3x3(3, 16)
        in_planes = 16
        stages = []
        for i, planes in enumerate(WIDTHS):
            units = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                out_planes = planes * expansion
                units.append(unit(in_planes, planes, stride, make_shortcut(shortcut, in_planes, out_planes, stride),
                                  shared=j == 0))
                in_planes = out_planes
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(in_planes)  # the extra activation after the last unit
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

        # As resnet.py and the authors' code: N(0, 2/fan_out) for convs, BN weight 1 and bias 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def response_layers(self) -> list[nn.Module]:
        """Figure 7's responses for this net: the output of each 3x3 conv, before the next BN or the
        addition (here no BN follows a conv directly: what comes closest to the 2015 paper's definition)."""
        layers: list[nn.Module] = [self.conv1]
        for stage in (self.layer1, self.layer2, self.layer3):
            for unit in stage:
                layers += unit.response_convs()
        return layers


def preact_resnet(depth: int, num_classes: int = 10, shortcut: Shortcut | str = Shortcut.A,
                  bottleneck: bool = False) -> PreActResNet:
    """Pre-activation ResNet-`depth` for CIFAR (He et al. 2016): basic units at depth 6n+2, or bottleneck
    units at depth 9n+2 (164, 1001)."""
    if not bottleneck and depth in PAPER_BOTTLENECK_DEPTHS:
        log.warning("pre-activation ResNet-%d of basic units: the 2016 paper's ResNet-%d is a bottleneck net "
                    "(arch.bottleneck=true shortcut=B)", depth, depth)
    n = bottleneck_units(depth) if bottleneck else check_depth(depth)
    return PreActResNet(n, Shortcut(shortcut), num_classes, bottleneck)
