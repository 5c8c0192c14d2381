"""LeNet-300-100 and LeNet-5, the two MNIST networks of the Deep Compression paper.

Han, Mao & Dally 2016, Table 2: LeNet-300-100 (784-300-100-10, 266,610 parameters) and
LeNet-5 as Caffe defines it (conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10; 431,080
parameters and 2,293,000 MACs on a 1x28x28 input).
"""

from __future__ import annotations

from torch import nn

__all__ = ["LeNet300", "LeNet5"]


class LeNet300(nn.Module):
    """784-300-100-10 multilayer perceptron."""

    def __init__(self, num_classes: int = 10, in_features: int = 784, dropout: float = 0.2):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, 300)
        self.relu1 = nn.ReLU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(300, 100)
        self.relu2 = nn.ReLU()
        self.drop2 = nn.Dropout(dropout)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x):  # (N, 1, 28, 28) -> (N, num_classes)
        x = self.drop1(self.relu1(self.fc1(self.flatten(x))))
        x = self.drop2(self.relu2(self.fc2(x)))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe's LeNet-5: conv 20, conv 50 (5x5, no padding), fc 500, fc 10."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.3,
                 conv1: int = 20, conv2: int = 50, fc1: int = 500):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, conv1, 5)  # (N, 20, 24, 24)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)                   # (N, 20, 12, 12)
        self.conv2 = nn.Conv2d(conv1, conv2, 5)        # (N, 50, 8, 8)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)                   # (N, 50, 4, 4)
        self.flatten = nn.Flatten()                    # (N, 800)
        self.fc1 = nn.Linear(conv2 * 16, fc1)
        self.relu3 = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(fc1, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.drop(self.relu3(self.fc1(self.flatten(x))))
        return self.fc2(x)
