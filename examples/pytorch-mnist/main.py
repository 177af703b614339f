"""Trains a small convolutional network on synthetic MNIST-like digits with PyTorch.

Ten digit "prototypes" (28x28 stroke patterns) are drawn, then noisy, shifted copies of them
form the training and test sets (no download: the pipeline's image must run offline). A
two-layer CNN (model.py) learns them in well under a minute on two CPU cores, and the script
prints the test accuracy as its last line:  accuracy: 0.9xxx
"""
import os
import time

import torch
from torch import nn

from model import DigitNet

SEED = int(os.environ.get("SEED", "7"))
SAMPLES_PER_CLASS = int(os.environ.get("SAMPLES_PER_CLASS", "200"))
EPOCHS = int(os.environ.get("EPOCHS", "6"))
BATCH = 64


def make_prototypes(gen: torch.Generator) -> torch.Tensor:
    """One 28x28 pattern per class: a few random strokes, like a handwritten digit."""
    prototypes = torch.zeros(10, 28, 28)
    for digit in range(10):
        for _ in range(4):
            r0, c0, r1, c1 = torch.randint(4, 24, (4,), generator=gen).tolist()
            steps = max(abs(r1 - r0), abs(c1 - c0)) + 1
            rows = torch.linspace(r0, r1, steps).round().long()
            cols = torch.linspace(c0, c1, steps).round().long()
            prototypes[digit, rows, cols] = 1.0
            prototypes[digit, (rows + 1).clamp(0, 27), cols] = 1.0
    return prototypes


def make_dataset(gen: torch.Generator, prototypes: torch.Tensor, per_class: int):
    images, labels = [], []
    for digit in range(10):
        for _ in range(per_class):
            dr, dc = torch.randint(-2, 3, (2,), generator=gen).tolist()
            shifted = torch.roll(prototypes[digit], shifts=(dr, dc), dims=(0, 1))
            noisy = (shifted + 0.7 * torch.randn(shifted.shape, generator=gen)).clamp(0, 1)
            images.append(noisy)
            labels.append(digit)
    order = torch.randperm(len(labels), generator=gen)
    return torch.stack(images).unsqueeze(1)[order], torch.tensor(labels)[order]


def main() -> None:
    started = time.time()
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    prototypes = make_prototypes(gen)
    x_train, y_train = make_dataset(gen, prototypes, SAMPLES_PER_CLASS)
    x_test, y_test = make_dataset(gen, prototypes, SAMPLES_PER_CLASS // 4)

    model = DigitNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(EPOCHS):
        model.train()
        total = 0.0
        for start in range(0, len(x_train), BATCH):
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[start:start + BATCH]), y_train[start:start + BATCH])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y_train[start:start + BATCH])
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {total / len(x_train):.4f}", flush=True)

    model.eval()
    with torch.no_grad():
        predicted = model(x_test).argmax(dim=1)
    accuracy = (predicted == y_test).float().mean().item()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), trained in {time.time() - started:.1f} s")
    print(f"accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
