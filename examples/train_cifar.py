"""Train a ResNet-18 on CIFAR-100 under kwatt (pytorch-image-classification.yaml and others).

Needs torch and torchvision (the pytorch/pytorch images have both) and kwatt_client
(standard library only). kwatt hands this run's batch size in KWATT_BATCH_SIZE; the
script reports validation accuracy after each epoch and stops when the sidecar says
so: the target is reached, or the run can no longer pay off.

    python train_cifar.py [--data /data] [--epochs 60] [--workers 4]
"""

from __future__ import annotations

import argparse
import math

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from kwatt_client import Kwatt

MEAN, STD = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)
DEFAULT_BATCH_SIZE = 128  # used when kwatt is not there (a run outside the cluster)


def resnet18_cifar() -> nn.Module:
    """ResNet-18 with a 3x3 stem and no max-pool, the usual variant for 32x32 images."""
    model = torchvision.models.resnet18(num_classes=100)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def loaders(root: str, batch_size: int, workers: int) -> tuple[DataLoader, DataLoader]:
    """CIFAR-100 train (augmented) and test loaders; downloads the data on first use."""
    norm = transforms.Normalize(MEAN, STD)
    augment = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            norm,
        ]
    )
    plain = transforms.Compose([transforms.ToTensor(), norm])
    train = torchvision.datasets.CIFAR100(root, train=True, download=True, transform=augment)
    test = torchvision.datasets.CIFAR100(root, train=False, download=True, transform=plain)
    return (
        DataLoader(train, batch_size, shuffle=True, num_workers=workers, pin_memory=True),
        DataLoader(test, 512, num_workers=workers, pin_memory=True),
    )


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        correct += int((model(x).argmax(dim=1) == y).sum())
        total += y.numel()
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/data", help="where CIFAR-100 is (or goes)")
    parser.add_argument("--epochs", type=int, default=60, help="upper bound; kwatt stops sooner")
    parser.add_argument("--workers", type=int, default=4, help="data loader processes")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    with Kwatt() as kw:  # ends the run in the sidecar, as failed if an exception escapes
        batch_size = kw.batch_size or DEFAULT_BATCH_SIZE
        train, test = loaders(args.data, batch_size, args.workers)
        model = resnet18_cifar().to(device)
        # The learning rate follows the batch size kwatt chose (square-root scaling).
        lr = 0.1 * math.sqrt(batch_size / DEFAULT_BATCH_SIZE)
        opt = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(1, args.epochs + 1):
            model.train()
            for x, y in train:
                kw.step()  # a real call only while the sidecar profiles power limits
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
            schedule.step()
            acc = accuracy(model, test, device)
            print(f"epoch {epoch}: batch size {batch_size}, accuracy {acc:.4f}", flush=True)
            kw.epoch_end(acc)  # the metric named in spec.target.metric
            if kw.should_stop():
                print(f"kwatt: stop ({kw.stop_reason}).", flush=True)
                break


if __name__ == "__main__":
    main()
