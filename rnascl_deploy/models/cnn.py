"""A compact CNN for small grey-scale images (28x28 Fashion-MNIST): five conv-BN-ReLU layers and two linear
layers. At the default widths (32, 32, 64, 64, 128) it costs ~11M MACs and ~0.6M parameters; it is the shipped
robust teacher's architecture."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .common import MODELS, Normalize
from .size import ModelSize, check_layers, conv, linear, positive_int, registers_size


def conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@MODELS.register("cnn")
class CNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, input_size: int, mean, std,
                 widths: Sequence[int] = (32, 32, 64, 64, 128), strides: Sequence[int] = (1, 2, 1, 2, 2),
                 hidden: int = 256):
        super().__init__()
        if len(widths) != len(strides):
            raise ValueError("widths and strides must have the same length")
        self.normalize = Normalize(mean, std)
        layers, cin, size = [], in_channels, input_size
        for cout, stride in zip(widths, strides):
            layers.append(conv_bn_relu(cin, cout, stride))
            cin, size = cout, (size + 2 - 3) // stride + 1
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * size * size, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(self.normalize(x)))


@registers_size("cnn")
def cnn_size(in_channels: int, num_classes: int, input_size: int, widths: Sequence[int] = (32, 32, 64, 64, 128),
             strides: Sequence[int] = (1, 2, 1, 2, 2), hidden: int = 256) -> ModelSize:
    check_layers("model cnn", len(widths) + 2)
    total, cin, size = ModelSize(0, 0, 0), in_channels, input_size
    for cout, stride in zip(widths, strides):
        cout, stride = positive_int(cout, "cnn widths"), positive_int(stride, "cnn strides")
        size = (size + 2 - 3) // stride + 1
        total, cin = total + conv(cin, cout, 3, size, bn=True), cout
    hidden = positive_int(hidden, "cnn hidden")
    return total + linear(cin * size * size, hidden) + linear(hidden, num_classes)
