"""Optimizers that update parameters in place from gradients.

State is a dict of arrays keyed `{slot}.{param key}` plus a step counter, so it serializes into a
checkpoint as it is. Gradients may be overwritten (they are recomputed every batch).
"""
from __future__ import annotations

import numpy as np


class Optimizer:
    slots: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], config):
        self.config = config
        self.steps = 0
        self.state = {f"{slot}.{key}": np.zeros_like(p) for slot in self.slots for key, p in params.items()}
        # one scratch array per parameter so updates allocate nothing
        self._scratch = {key: np.empty_like(p) for key, p in params.items()} if self.slots else {}

    def __repr__(self):
        return f"{type(self).__name__}(steps={self.steps})"

    def step(self, params, grads, lr: float, decay_keys=()) -> None:
        self.steps += 1
        for key, p in params.items():
            self.update(key, p, grads[key], lr, key in decay_keys)

    def update(self, key, p, g, lr, decays):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        return self.state, {"steps": self.steps}

    def load_state_dict(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        if set(arrays) != set(self.state):
            raise ValueError("optimizer state does not match this optimizer and network")
        for key, value in arrays.items():
            np.copyto(self.state[key], value)
        self.steps = int(scalars["steps"])


class SGD(Optimizer):
    def update(self, key, p, g, lr, decays):
        g *= lr
        p -= g


class Momentum(Optimizer):
    """v = momentum * v - lr * g;  p += v."""

    slots = ("velocity",)

    def update(self, key, p, g, lr, decays):
        v = self.state[f"velocity.{key}"]
        v *= self.config.momentum
        g *= lr
        v -= g
        p += v


class Nesterov(Optimizer):
    """v = momentum * v - lr * g;  p += momentum * v - lr * g  (the look-ahead form)."""

    slots = ("velocity",)

    def update(self, key, p, g, lr, decays):
        v = self.state[f"velocity.{key}"]
        s = self._scratch[key]
        g *= lr
        v *= self.config.momentum
        v -= g
        np.multiply(v, self.config.momentum, out=s)
        s -= g
        p += s


class RMSprop(Optimizer):
    """s = rho * s + (1 - rho) * g^2;  p -= lr * g / (sqrt(s) + epsilon)."""

    slots = ("square_avg",)

    def update(self, key, p, g, lr, decays):
        c = self.config
        s = self.state[f"square_avg.{key}"]
        tmp = self._scratch[key]
        s *= c.rho
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - c.rho
        s += tmp
        np.sqrt(s, out=tmp)
        tmp += c.epsilon
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        p -= tmp


class Adam(Optimizer):
    """Adam with bias correction; AdamW adds decoupled weight decay on weights."""

    slots = ("m", "v")
    decoupled_decay = False

    def step(self, params, grads, lr, decay_keys=()):
        c = self.config
        t = self.steps + 1
        # fold the bias corrections into the step size (Kingma & Ba, section 2)
        self._lr_t = lr * (1.0 - c.beta2 ** t) ** 0.5 / (1.0 - c.beta1 ** t)
        self._eps_t = c.epsilon * (1.0 - c.beta2 ** t) ** 0.5
        super().step(params, grads, lr, decay_keys)

    def update(self, key, p, g, lr, decays):
        c = self.config
        m = self.state[f"m.{key}"]
        v = self.state[f"v.{key}"]
        tmp = self._scratch[key]
        if self.decoupled_decay and decays:
            p *= 1.0 - lr * c.weight_decay
        m *= c.beta1
        np.multiply(g, 1.0 - c.beta1, out=tmp)
        m += tmp
        v *= c.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - c.beta2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self._eps_t
        np.divide(m, tmp, out=tmp)
        tmp *= self._lr_t
        p -= tmp


class AdamW(Adam):
    decoupled_decay = True


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
}


def make_optimizer(config, params) -> Optimizer:
    if config.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name: unknown {config.name!r}; choose from {sorted(OPTIMIZERS)}")
    if not config.learning_rate > 0:
        raise ValueError("optimizer.learning_rate: must be positive")
    return OPTIMIZERS[config.name](params, config)
