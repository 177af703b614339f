"""Trains a softmax classifier on a synthetic MNIST-like data set with numpy only.

Ten digit "prototypes" (28x28 stroke patterns) are drawn, then noisy, shifted copies of
them form the training and test sets. Plain mini-batch gradient descent on a softmax
regression learns them in a few seconds on one CPU core, and the script prints the test
accuracy as its last line:  accuracy: 0.9xxx
"""
import os
import time

import numpy as np

from model import SoftmaxClassifier

SEED = int(os.environ.get("SEED", "7"))
SAMPLES_PER_CLASS = int(os.environ.get("SAMPLES_PER_CLASS", "300"))
EPOCHS = int(os.environ.get("EPOCHS", "15"))


def make_prototypes(rng: np.random.Generator) -> np.ndarray:
    """One 28x28 pattern per class: a few random strokes, like a handwritten digit."""
    prototypes = np.zeros((10, 28, 28))
    for digit in range(10):
        for _ in range(4):
            r0, c0, r1, c1 = rng.integers(4, 24, size=4)
            steps = max(abs(r1 - r0), abs(c1 - c0)) + 1
            rows = np.linspace(r0, r1, steps).round().astype(int)
            cols = np.linspace(c0, c1, steps).round().astype(int)
            prototypes[digit, rows, cols] = 1.0
            prototypes[digit, np.clip(rows + 1, 0, 27), cols] = 1.0
    return prototypes


def make_dataset(rng, prototypes, per_class):
    images, labels = [], []
    for digit, proto in enumerate(prototypes):
        for _ in range(per_class):
            shifted = np.roll(proto, shift=tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
            noisy = np.clip(shifted + rng.normal(0, 0.7, size=shifted.shape), 0, 1)
            images.append(noisy.reshape(-1))
            labels.append(digit)
    order = rng.permutation(len(labels))
    return np.array(images)[order], np.array(labels)[order]


def main() -> None:
    started = time.time()
    rng = np.random.default_rng(SEED)
    prototypes = make_prototypes(rng)
    x_train, y_train = make_dataset(rng, prototypes, SAMPLES_PER_CLASS)
    x_test, y_test = make_dataset(rng, prototypes, SAMPLES_PER_CLASS // 3)
    print(f"train: {x_train.shape[0]} images, test: {x_test.shape[0]} images, numpy {np.__version__}")

    model = SoftmaxClassifier(features=x_train.shape[1], classes=10, seed=SEED)
    for epoch in range(1, EPOCHS + 1):
        loss = model.fit_epoch(x_train, y_train, rng, learning_rate=0.5, batch_size=64)
        if epoch % 5 == 0 or epoch == EPOCHS:
            print(f"epoch {epoch:2d}  loss {loss:.4f}  train accuracy {model.accuracy(x_train, y_train):.4f}")

    print(f"trained in {time.time() - started:.1f}s")
    print(f"accuracy: {model.accuracy(x_test, y_test):.4f}")


if __name__ == "__main__":
    main()
