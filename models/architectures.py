"""Reference CNNs in PyTorch: the architectures onnxprune is tested and measured on.

Each builder returns an ``nn.Module`` in eval-ready form; ``ZOO`` maps a short name to a
:class:`ZooEntry` (builder + a default input shape small enough for the test suite).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_act(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1,
                act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- StudentNet
class StudentNet(nn.Module):
    """The depthwise/pointwise StudentNet of the source notes (seed 001).

    ``width_mult`` scales the channel counts of blocks 3..6, the notes' pruning knob.
    Kept faithful to the notes: the pointwise convs have bias and no BN/activation after them.
    """

    def __init__(self, base: int = 16, width_mult: float = 1.0, in_channels: int = 3,
                 num_classes: int = 11) -> None:
        super().__init__()
        multiplier = [1, 2, 4, 8, 16, 16, 16, 16]
        bw = [base * m for m in multiplier]
        for i in range(3, 7):
            bw[i] = int(bw[i] * width_mult)

        def dw_pw(cin: int, cout: int, pool: bool) -> nn.Sequential:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cin, 3, 1, 1, groups=cin),
                nn.BatchNorm2d(cin),
                nn.ReLU6(),
                nn.Conv2d(cin, cout, 1),
            ]
            if pool:
                layers.append(nn.MaxPool2d(2, 2, 0))
            return nn.Sequential(*layers)

        self.cnn = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, bw[0], 3, 1, 1), nn.BatchNorm2d(bw[0]), nn.ReLU6(),
                          nn.MaxPool2d(2, 2, 0)),
            dw_pw(bw[0], bw[1], True),
            dw_pw(bw[1], bw[2], True),
            dw_pw(bw[2], bw[3], True),
            dw_pw(bw[3], bw[4], False),
            dw_pw(bw[4], bw[5], False),
            dw_pw(bw[5], bw[6], False),
            dw_pw(bw[6], bw[7], False),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.fc = nn.Sequential(nn.Linear(bw[7], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cnn(x)
        out = out.view(out.size()[0], -1)
        return self.fc(out)


# --------------------------------------------------------------------------- VGG-16-BN (CIFAR)
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16BN(nn.Module):
    """VGG-16 with BN in the CIFAR layout of Li et al. (ICLR 2017): 13 conv-BN-ReLU, then
    Linear(512, 512)-BN1d-ReLU-Linear(512, classes). ``width`` scales every channel count."""

    def __init__(self, width: float = 1.0, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = max(1, int(int(v) * width))
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        hidden = max(1, int(512 * width))
        self.classifier = nn.Sequential(
            nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------- ResNets
class CifarBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = 0
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            if shortcut == "A":  # He et al.'s parameter-free option A: subsample + zero-pad channels
                self.pad = (cout - cin) // 2
                self.shortcut = nn.Identity()
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.stride = stride
        self.option = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad:
            sc = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))
        else:
            sc = self.shortcut(x)
        return F.relu(out + sc)


class ResNetCifar(nn.Module):
    """CIFAR ResNet (He et al. 2016, sec. 4.2): depth = 6n + 2, stages of 16/32/64 channels."""

    def __init__(self, depth: int = 56, width: float = 1.0, shortcut: str = "A", in_channels: int = 3,
                 num_classes: int = 10) -> None:
        super().__init__()
        assert (depth - 2) % 6 == 0, "depth must be 6n+2"
        n = (depth - 2) // 6
        widths = [max(2, int(w * width)) for w in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks: list[nn.Module] = []
        cin = widths[0]
        for stage, w in enumerate(widths):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(CifarBasicBlock(cin, w, stride, shortcut))
                cin = w
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    """ImageNet ResNet (torchvision layout, no torchvision dependency); ResNeXt via ``groups``."""

    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int = 1000, groups: int = 1,
                 width_per_group: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages: list[nn.Module] = []
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                if block is Bottleneck:
                    blocks.append(Bottleneck(cin, planes, stride, groups, width_per_group))
                else:
                    blocks.append(BasicBlock(cin, planes, stride))
                cin = planes * block.expansion  # type: ignore[attr-defined]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


class GlyphResNet(nn.Module):
    """A ResNet for small images with most parameters in the late, cheap stages: a 3x3 stem, then one stride-2
    BasicBlock stage per width in ``widths`` (``blocks`` each), global average pool, Linear. At 32x32 and the
    default widths: 1.5 M parameters, 20 M MACs."""

    def __init__(self, num_classes: int, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 128, 256),
                 blocks: tuple[int, ...] = (1, 1, 2, 1)) -> None:
        super().__init__()
        self.stem = conv_bn_act(in_channels, widths[0], 3)
        stages: list[nn.Module] = []
        cin = widths[0]
        for planes, n in zip(widths, blocks):
            stages += [BasicBlock(cin if j == 0 else planes, planes, 2 if j == 0 else 1) for j in range(n)]
            cin = planes
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18(**kw) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kw)


def resnet50(**kw) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kw)


class ResNeXtSmall(nn.Module):
    """A ResNeXt-style network: bottlenecks whose 3x3 conv is grouped (cardinality 8)."""

    def __init__(self, num_classes: int = 10, cardinality: int = 8, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn_act(in_channels, 32, 3)
        self.block1 = Bottleneck(32, 16, 1, groups=cardinality, base_width=8)   # width 16*8/64*8 = 16
        self.block2 = Bottleneck(64, 32, 2, groups=cardinality, base_width=8)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------- MobileNets
class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(cin, hidden, 1, act=nn.ReLU6))
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   conv_bn_act(hidden, cout, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018): inverted residuals with depthwise convs."""

    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 1000, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()

        def c(v: int) -> int:
            return max(8, int(v * width + 4) // 8 * 8)

        layers: list[nn.Module] = [conv_bn_act(in_channels, c(32), 3, 2, act=nn.ReLU6)]
        cin = c(32)
        for t, ch, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c(ch), s if i == 0 else 1, t))
                cin = c(ch)
        last = max(1280, c(1280))
        layers.append(conv_bn_act(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


class SqueezeExcite(nn.Module):
    """GlobalAveragePool -> Conv -> ReLU -> Conv -> HardSigmoid -> Mul, as in MobileNetV3."""

    def __init__(self, ch: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(ch, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class MobileNetV3Block(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, stride: int, use_se: bool) -> None:
        super().__init__()
        self.expand = conv_bn_act(cin, hidden, 1, act=nn.Hardswish)
        self.dw = conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.Hardswish)
        self.se = SqueezeExcite(hidden, max(8, hidden // 4)) if use_se else nn.Identity()
        self.project = conv_bn_act(hidden, cout, 1, act=None)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.use_res else y


class MobileNetV3Small(nn.Module):
    """A MobileNetV3-style network: hardswish, SE blocks, inverted residuals."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn_act(in_channels, 16, 3, 2, act=nn.Hardswish)
        self.blocks = nn.Sequential(
            MobileNetV3Block(16, 64, 24, 2, False),
            MobileNetV3Block(24, 72, 24, 1, True),
            MobileNetV3Block(24, 96, 40, 2, True),
            MobileNetV3Block(40, 120, 40, 1, True),
        )
        self.head = conv_bn_act(40, 160, 1, act=nn.Hardswish)
        self.classifier = nn.Sequential(nn.Linear(160, 128), nn.Hardswish(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --------------------------------------------------------------------------- DenseNet / C2f
class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        return torch.cat([x, y], 1)


class DenseNetSmall(nn.Module):
    """A DenseNet-style network: dense blocks concatenating features, pre-activation BN."""

    def __init__(self, num_classes: int = 10, growth: int = 12, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 24, 3, 1, 1, bias=False)
        layers: list[nn.Module] = []
        c = 24
        for _ in range(4):
            layers.append(DenseLayer(c, growth))
            c += growth
        self.block = nn.Sequential(*layers)
        self.transition = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                                        nn.AvgPool2d(2))
        self.bn = nn.BatchNorm2d(c // 2)
        self.fc = nn.Linear(c // 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transition(self.block(self.stem(x)))
        x = F.relu(self.bn(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class YoloConv(nn.Module):
    """Conv-BN-SiLU, YOLOv8's basic unit."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.bn(self.conv(x)))


class YoloBottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = YoloConv(c, c, 3)
        self.cv2 = YoloConv(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8's C2f: 1x1 conv, split in two, n bottlenecks on the second half, concat all, 1x1 conv."""

    def __init__(self, cin: int, cout: int, n: int = 2, shortcut: bool = True) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1 = YoloConv(cin, 2 * self.c, 1)
        self.cv2 = YoloConv((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(YoloBottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C2fNet(nn.Module):
    """A small YOLOv8-style backbone: strided Conv-BN-SiLU stems and C2f blocks."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = YoloConv(in_channels, 16, 3, 2)
        self.down1 = YoloConv(16, 32, 3, 2)
        self.c2f1 = C2f(32, 32, 1)
        self.down2 = YoloConv(32, 64, 3, 2)
        self.c2f2 = C2f(64, 64, 2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c2f2(self.down2(self.c2f1(self.down1(self.stem(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --------------------------------------------------------------------------- decoder / heads
class ConvTransposeDecoder(nn.Module):
    """An encoder-decoder: strided convs down, ConvTranspose-BN-ReLU up (one grouped), per-pixel output."""

    def __init__(self, in_channels: int = 3, out_channels: int = 2) -> None:
        super().__init__()
        self.enc = nn.Sequential(conv_bn_act(in_channels, 16, 3, 2), conv_bn_act(16, 32, 3, 2))
        self.up1 = nn.Sequential(nn.ConvTranspose2d(32, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(32, 16, 4, 2, 1, groups=2), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Conv2d(16, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.up2(self.up1(self.enc(x))))


class FlattenGemmNet(nn.Module):
    """Conv -> Flatten -> Gemm classifier head (each conv channel owns H*W rows of the first FC)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, spatial: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn_act(in_channels, 16, 3, 2), conv_bn_act(16, 32, 3, 2))
        self.pool = nn.AdaptiveAvgPool2d(spatial)
        self.fc1 = nn.Linear(32 * spatial * spatial, 64)
        self.bn = nn.BatchNorm1d(64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.fc2(F.relu(self.bn(self.fc1(x))))


# --------------------------------------------------------------------------- ConvNeXt
class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor, in either of the two forms found in the wild:
    ``permute`` (torchvision: NHWC permute -> layer_norm -> permute back; exports as LayerNormalization) or
    ``manual`` (the ConvNeXt repository's channels_first LayerNorm: mean/variance over axis 1 written out)."""

    def __init__(self, ch: int, form: str = "permute", eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ch))
        self.bias = nn.Parameter(torch.zeros(ch))
        self.form, self.eps, self.ch = form, eps, ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "permute":
            x = x.permute(0, 2, 3, 1)
            x = F.layer_norm(x, (self.ch,), self.weight, self.bias, self.eps)
            return x.permute(0, 3, 1, 2)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """depthwise 7x7 -> NHWC -> LayerNorm -> Linear(4C) -> GELU -> Linear(C) -> layer scale -> NCHW -> + x."""

    def __init__(self, dim: int, layer_scale: float = 1e-1) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * (1 + torch.rand(dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtSmall(nn.Module):
    """A small ConvNeXt (Liu et al. 2022): patchify stem, stages of ConvNeXt blocks, LayerNorm2d + strided
    conv downsampling (the first in the manual channels_first form, the others permuted), LN head."""

    def __init__(self, dims: tuple[int, ...] = (24, 48, 96, 192), depths: tuple[int, ...] = (1, 1, 2, 1),
                 num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, dims[0], 4, 4), LayerNorm2d(dims[0], "manual"))
        self.stages = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, (d, n) in enumerate(zip(dims, depths)):
            if i:
                self.downsample.append(nn.Sequential(LayerNorm2d(dims[i - 1], "permute"),
                                                     nn.Conv2d(dims[i - 1], d, 2, 2)))
            self.stages.append(nn.Sequential(*[ConvNeXtBlock(d) for _ in range(n)]))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages[0](self.stem(x))
        for down, stage in zip(self.downsample, self.stages[1:]):
            x = stage(down(x))
        return self.head(self.norm(x.mean((-2, -1))))


# --------------------------------------------------------------------------- ShuffleNetV2
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (Ma et al. 2018): stride 1 splits the channels in two and transforms one half; stride 2
    transforms both; the halves are concatenated and channel-shuffled."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(conv_bn_act(cin, cin, 3, stride, groups=cin, act=None),
                                         conv_bn_act(cin, half, 1))
        b2_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(conv_bn_act(b2_in, half, 1), conv_bn_act(half, half, 3, stride, groups=half,
                                                                                act=None), conv_bn_act(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2Small(nn.Module):
    def __init__(self, repeats: tuple[int, ...] = (2, 3, 2), channels: tuple[int, ...] = (24, 48, 96, 192, 256),
                 num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn_act(in_channels, channels[0], 3, 2)
        units: list[nn.Module] = []
        cin = channels[0]
        for n, cout in zip(repeats, channels[1:]):
            units.append(ShuffleUnit(cin, cout, 2))
            units += [ShuffleUnit(cout, cout, 1) for _ in range(n - 1)]
            cin = cout
        self.stages = nn.Sequential(*units)
        self.conv5 = conv_bn_act(cin, channels[-1], 1)
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.stages(self.stem(x)))
        return self.fc(x.mean([2, 3]))


# --------------------------------------------------------------------------- SqueezeNet
class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))], 1)


class SqueezeNetSmall(nn.Module):
    """SqueezeNet 1.1 layout (Iandola et al. 2016): Fire modules, ceil-mode max pools, conv classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(32, 8, 32), Fire(64, 8, 32), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(64, 16, 64), Fire(128, 16, 64))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(128, num_classes, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


# --------------------------------------------------------------------------- EfficientNet
class MBConv(nn.Module):
    """EfficientNet's MBConv: 1x1 expand -> depthwise -> SE (SiLU, Sigmoid) -> 1x1 project, SiLU everywhere."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, k: int = 3) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = conv_bn_act(cin, hidden, 1, act=nn.SiLU) if expand != 1 else nn.Identity()
        self.dw = conv_bn_act(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU)
        squeeze = max(1, cin // 4)
        self.se_reduce = nn.Conv2d(hidden, squeeze, 1)
        self.se_expand = nn.Conv2d(squeeze, hidden, 1)
        self.project = conv_bn_act(hidden, cout, 1, act=None)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.expand(x))
        s = torch.sigmoid(self.se_expand(F.silu(self.se_reduce(F.adaptive_avg_pool2d(y, 1)))))
        y = self.project(y * s)
        return x + y if self.use_res else y


class EfficientNetSmall(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn_act(in_channels, 16, 3, 2, act=nn.SiLU)
        self.blocks = nn.Sequential(MBConv(16, 16, 1, 1), MBConv(16, 24, 2, 6), MBConv(24, 24, 1, 6),
                                    MBConv(24, 40, 2, 6, k=5), MBConv(40, 40, 1, 6, k=5))
        self.head = conv_bn_act(40, 128, 1, act=nn.SiLU)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.head(self.blocks(self.stem(x))), 1).flatten(1))


# --------------------------------------------------------------------------- PP-LCNet (Paddle's mobile classifier)
class LCNetSmall(nn.Module):
    """A PP-LCNet-style classifier (Cui et al. 2021): depthwise-separable Conv-BN-HardSwish blocks, SE in the
    last blocks, GAP -> 1x1 conv with bias -> HardSwish -> Flatten -> Linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        cfg = [(16, 32, 1, False), (32, 64, 2, False), (64, 64, 1, False), (64, 128, 2, False),
               (128, 128, 1, True), (128, 256, 2, True)]
        self.stem = conv_bn_act(in_channels, 16, 3, 2, act=nn.Hardswish)
        blocks: list[nn.Module] = []
        for cin, cout, s, se in cfg:
            blocks.append(conv_bn_act(cin, cin, 3, s, groups=cin, act=nn.Hardswish))
            if se:
                blocks.append(SqueezeExcite(cin, cin // 4))
            blocks.append(conv_bn_act(cin, cout, 1, act=nn.Hardswish))
        self.blocks = nn.Sequential(*blocks)
        self.last_conv = nn.Conv2d(256, 320, 1)
        self.fc = nn.Linear(320, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1)
        return self.fc(torch.flatten(F.hardswish(self.last_conv(x)), 1))


# --------------------------------------------------------------------------- CRNN (text-line recognizer)
class CRNNSmall(nn.Module):
    """CRNN (Shi et al. 2016): a conv backbone that collapses the height (32) to 1, the width becomes the sequence
    (squeeze -> permute to (T, N, C)), a BiLSTM and a per-step Linear classifier; dynamic width."""

    def __init__(self, num_classes: int = 37, in_channels: int = 1, hidden: int = 48, lstm: bool = True) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            conv_bn_act(in_channels, 32, 3), nn.MaxPool2d(2, 2),
            conv_bn_act(32, 64, 3), nn.MaxPool2d(2, 2),
            conv_bn_act(64, 96, 3), conv_bn_act(96, 96, 3), nn.MaxPool2d((2, 1), (2, 1)),
            conv_bn_act(96, 128, 3), nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(128, 128, (2, 1), bias=False), nn.BatchNorm2d(128), nn.ReLU())  # height 2 -> 1
        self.rnn = nn.LSTM(128, hidden, bidirectional=True) if lstm else None
        self.proj = nn.Linear(128, 2 * hidden) if not lstm else None
        self.fc = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x).squeeze(2).permute(2, 0, 1)  # (T, N, C)
        f = self.rnn(f)[0] if self.rnn is not None else F.relu(self.proj(f))
        return self.fc(f)


class SelfAttention(nn.Module):
    """Multi-head self-attention over (N, T, D) written with plain Linear / MatMul / Softmax, as production
    recognizers export it (no fused op)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(n, t, d))


class NeckLayer(nn.Module):
    """Pre-LayerNorm transformer layer: x + attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class TextLineRecognizer(nn.Module):
    """A text-line recognizer shaped like production ones: a VGG-style conv backbone (BN, ReLU) that collapses
    the height (32) to 1, the width (/4) becomes the sequence; a Linear projection into a small pre-LN
    attention neck (LayerNorm, MatMul attention, GELU FFN) and a per-step CTC classifier. Output: (N, T,
    classes) logits, batch first; dynamic batch and width."""

    def __init__(self, num_classes: int, in_channels: int = 1, dim: int = 192, layers: int = 2,
                 heads: int = 4) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            conv_bn_act(in_channels, 32, 3), nn.MaxPool2d(2, 2),
            conv_bn_act(32, 64, 3), nn.MaxPool2d(2, 2),
            conv_bn_act(64, 96, 3), conv_bn_act(96, 96, 3), nn.MaxPool2d((2, 1), (2, 1)),
            conv_bn_act(96, 128, 3), conv_bn_act(128, 128, 3), nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(128, 192, (2, 1), bias=False), nn.BatchNorm2d(192), nn.ReLU())   # height 2 -> 1
        self.proj = nn.Linear(192, dim)
        self.neck = nn.Sequential(*[NeckLayer(dim, heads, 3 * dim) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x).squeeze(2).permute(0, 2, 1)          # (N, T, C)
        return self.fc(self.norm(self.neck(self.proj(f))))


# --------------------------------------------------------------------------- U-Net / FPN
class UNetSmall(nn.Module):
    """A small U-Net with an FPN-style top-down path: decoder features upsampled *to the size of the skip
    tensor* (``F.interpolate(x, size=skip.shape[-2:])``, so the Resize sizes are computed from another tensor's
    shape at run time), concatenated with the skip (U-Net) or added to a lateral 1x1 conv (FPN); a per-pixel
    sigmoid head."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1) -> None:
        super().__init__()
        self.enc1 = conv_bn_act(in_channels, 16, 3)
        self.enc2 = conv_bn_act(16, 32, 3, 2)
        self.enc3 = conv_bn_act(32, 64, 3, 2)
        self.lateral2 = nn.Conv2d(32, 64, 1)
        self.dec2 = conv_bn_act(64, 32, 3)
        self.dec1 = conv_bn_act(32 + 16, 16, 3)
        self.head = nn.Conv2d(16, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        p2 = self.lateral2(e2) + F.interpolate(e3, size=e2.shape[-2:], mode="nearest")
        d2 = self.dec2(p2)
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        return torch.sigmoid(self.head(d1))


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: how to build it and the input shape used for export and tests."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int, int]
    dynamic_spatial: bool = False  # also mark H and W dynamic on export (fully convolutional models)
    dynamic_width: bool = False    # mark only W dynamic (text-line recognizers: fixed height, any width)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry("studentnet", lambda: StudentNet(base=16, width_mult=1.0, in_channels=3, num_classes=11),
                 (1, 3, 32, 32), dynamic_spatial=True),
        ZooEntry("vgg16_bn", lambda: VGG16BN(width=0.25), (1, 3, 32, 32)),
        ZooEntry("resnet56", lambda: ResNetCifar(56), (1, 3, 32, 32), dynamic_spatial=True),
        ZooEntry("resnet18", lambda: resnet18(num_classes=100), (1, 3, 64, 64), dynamic_spatial=True),
        ZooEntry("resnet50", lambda: resnet50(num_classes=100), (1, 3, 64, 64), dynamic_spatial=True),
        ZooEntry("mobilenet_v2", lambda: MobileNetV2(num_classes=100, width=0.5), (1, 3, 64, 64),
                 dynamic_spatial=True),
        ZooEntry("mobilenet_v3_se", lambda: MobileNetV3Small(), (1, 3, 64, 64), dynamic_spatial=True),
        ZooEntry("densenet", lambda: DenseNetSmall(), (1, 3, 32, 32), dynamic_spatial=True),
        ZooEntry("yolo_c2f", lambda: C2fNet(), (1, 3, 64, 64), dynamic_spatial=True),
        ZooEntry("resnext", lambda: ResNeXtSmall(), (1, 3, 32, 32), dynamic_spatial=True),
        ZooEntry("convtranspose_decoder", lambda: ConvTransposeDecoder(), (1, 3, 32, 32), dynamic_spatial=True),
        ZooEntry("flatten_gemm", lambda: FlattenGemmNet(), (1, 3, 32, 32)),
        ZooEntry("convnext", lambda: ConvNeXtSmall(), (1, 3, 64, 64), dynamic_spatial=True),
        ZooEntry("shufflenet_v2", lambda: ShuffleNetV2Small(), (1, 3, 64, 64), dynamic_spatial=True),
        ZooEntry("squeezenet", lambda: SqueezeNetSmall(), (1, 3, 64, 64), dynamic_spatial=True),
        ZooEntry("efficientnet", lambda: EfficientNetSmall(), (1, 3, 64, 64), dynamic_spatial=True),
        ZooEntry("lcnet", lambda: LCNetSmall(), (1, 3, 64, 64), dynamic_spatial=True),
        ZooEntry("crnn", lambda: CRNNSmall(), (1, 1, 32, 96), dynamic_width=True),
        ZooEntry("crnn_linear", lambda: CRNNSmall(lstm=False), (1, 1, 32, 96), dynamic_width=True),
        ZooEntry("unet", lambda: UNetSmall(), (1, 3, 64, 64), dynamic_spatial=True),
    ]
}


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN layer non-trivial statistics and affine parameters so that folding them is a real test
    (fresh BN layers are the identity: mean 0, var 1, gamma 1, beta 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model
