"""A softmax regression classifier in plain numpy."""
import numpy as np


class SoftmaxClassifier:
    def __init__(self, features: int, classes: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.weights = rng.normal(0, 0.01, size=(features, classes))
        self.bias = np.zeros(classes)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = x @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def fit_epoch(self, x, y, rng, learning_rate: float, batch_size: int) -> float:
        order = rng.permutation(len(y))
        losses = []
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            xb, yb = x[idx], y[idx]
            probs = self.probabilities(xb)
            losses.append(-np.log(probs[np.arange(len(yb)), yb] + 1e-12).mean())
            probs[np.arange(len(yb)), yb] -= 1.0
            self.weights -= learning_rate * xb.T @ probs / len(yb)
            self.bias -= learning_rate * probs.mean(axis=0)
        return float(np.mean(losses))

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.probabilities(x).argmax(axis=1) == y).mean())
