"""The CIFAR networks of He et al. 2015, section 4.2 (ResNet and plain, depth 6n+2).

Written after torchvision's models/resnet.py (same block attribute names, one
init loop, a private factory and small public builders), with the CIFAR stem
(3x3 conv, 16 filters, no max-pool) and the shortcut options of section 3.3.
`arch=resnet` and `arch=plain` name the builders at the bottom (conf/arch/), the
way a user's own model is named.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Shortcut
from ..errors import ConfigError

STAGE_WIDTHS = (16, 32, 64)


def check_depth(depth: int) -> int:
    """Return n for a CIFAR depth 6n+2, or refuse it: the depth rule of these nets."""
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(
            f"depth={depth} is not allowed: depth must be 6n+2 with n >= 1 "
            f"(8, 14, 20, 26, 32, ...; the paper used 20, 32, 44, 56, 110, 1202)"
        )
    return (depth - 2) // 6


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding; no bias, BN follows."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class ZeroPadIdentity(nn.Module):
    """Option A where dimensions grow: stride-2 subsample, extra channels are zeros.

    Parameter-free, so a ResNet has exactly the parameters of its plain net.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Options B and C: 1x1 convolution + BN (torchvision's `downsample`)."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


def make_shortcut(shortcut: Shortcut, in_planes: int, out_planes: int, stride: int) -> nn.Module:
    grows = stride != 1 or in_planes != out_planes
    if shortcut is Shortcut.C or (shortcut is Shortcut.B and grows):
        return projection(in_planes, out_planes, stride)
    if grows:
        return ZeroPadIdentity(in_planes, out_planes, stride)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; with a shortcut (ResNet) the input is added before the last ReLU.

    `shortcut=None` makes the plain block of the paper's plain nets.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


class CifarResNet(nn.Module):
    """3x3 conv (16) -> 3 stages of n blocks (16, 32, 64 filters) -> global average pool -> linear."""

    def __init__(self, n: int, shortcut: Shortcut | None, num_classes: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(3, STAGE_WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = STAGE_WIDTHS[0]
        stages = []
        for i, planes in enumerate(STAGE_WIDTHS):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                block_shortcut = None if shortcut is None else make_shortcut(shortcut, in_planes, planes, stride)
                blocks.append(BasicBlock(in_planes, planes, stride, block_shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

        # He et al. 2015 [13] init as in fb.resnet.torch and torchvision: N(0, 2/fan_out) for convs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def response_layers(self) -> list[nn.Module]:
        """Figure 7's responses (sec. 4.2: "the outputs of each 3x3 layer, after BN and before other
        nonlinearity (ReLU/addition)"): the BN after each 3x3 conv, in forward order."""
        layers: list[nn.Module] = [self.bn1]
        for stage in (self.layer1, self.layer2, self.layer3):
            for block in stage:
                layers += [block.bn1, block.bn2]
        return layers


def _cifar_net(depth: int, shortcut: Shortcut | None, num_classes: int) -> CifarResNet:
    return CifarResNet(check_depth(depth), shortcut, num_classes)


def cifar_resnet(depth: int, shortcut: Shortcut | str = Shortcut.A, num_classes: int = 10) -> CifarResNet:
    """ResNet-`depth` for CIFAR (He et al. 2015, sec. 4.2; Table 6 uses option A)."""
    return _cifar_net(depth, Shortcut(shortcut), num_classes)


def cifar_plain(depth: int, num_classes: int = 10) -> CifarResNet:
    """Plain-`depth` for CIFAR: the ResNet stack without shortcuts (He et al. 2015, Fig. 6 left)."""
    return _cifar_net(depth, None, num_classes)
