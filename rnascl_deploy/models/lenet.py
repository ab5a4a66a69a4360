"""LeNet-small (Croce, Andriushchenko & Hein, AISTATS 2019): conv 16 4x4 stride 2 pad 1,
conv 32 4x4 stride 2 pad 1, fc 100, fc 10, ReLU, no BatchNorm. At 28x28: 609,384 MACs and 166K parameters. The
baseline a user would adversarially train instead of searching a student (``benchmarks/study.py``)."""
from __future__ import annotations

from torch import nn

from .common import MODELS, Normalize
from .size import ModelSize, conv, linear, positive_int, registers_size


@MODELS.register("lenet-small")
class LeNetSmall(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, input_size: int, mean, std, widths=(16, 32),
                 hidden: int = 100):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(nn.Conv2d(in_channels, widths[0], 4, 2, 1), nn.ReLU(inplace=True),
                                      nn.Conv2d(widths[0], widths[1], 4, 2, 1), nn.ReLU(inplace=True))
        size = (input_size + 2 - 4) // 2 + 1
        size = (size + 2 - 4) // 2 + 1
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(widths[1] * size * size, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(self.normalize(x)))


@registers_size("lenet-small")
def lenet_small_size(in_channels: int, num_classes: int, input_size: int, widths=(16, 32),
                     hidden: int = 100) -> ModelSize:
    w0, w1 = (positive_int(w, "lenet-small widths") for w in widths)
    s1 = (input_size + 2 - 4) // 2 + 1
    s2 = (s1 + 2 - 4) // 2 + 1
    hidden = positive_int(hidden, "lenet-small hidden")
    return (conv(in_channels, w0, 4, s1, bias=True) + conv(w0, w1, 4, s2, bias=True)
            + linear(w1 * s2 * s2, hidden) + linear(hidden, num_classes))
