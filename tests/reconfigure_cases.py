"""Random reconfiguration instances for the property tests of ``prunefl.pruning.reconfigure``.

Hypothesis draws a seed and a few sizes, and numpy builds the tensors from the seed, so shrinking explores
instances rather than hand-crafting float near-ties between the two solvers' differently ordered sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from hypothesis import strategies as st

from prunefl.timing import TimeModel

# "ties": integer |w| and s, dyadic times: every sum is exact in float64, so ties (equal ρ, ρ equal to the running
#         ratio) really occur and the vectorised and heap solvers must agree bit for bit.
# "wide": s = 10^U(−12, 3) in float64 and Gaussian weights: a huge dynamic range, no exact ties.
# "float32": exponential s in float32, as the importance buffers are stored.
Kind = Literal["ties", "wide", "float32"]


@dataclass(frozen=True)
class Case:
    weights: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    importance: dict[str, torch.Tensor]
    time_model: TimeModel
    local_steps: int
    fixed_importance: float

    def kwargs(self, **overrides: object) -> dict[str, object]:
        """Keyword arguments of ``reconfigure`` for this case, plus ``max_decrease`` etc. from ``overrides``."""
        return dict(
            weights=self.weights,
            masks=self.masks,
            importance=self.importance,
            time_model=self.time_model,
            local_steps=self.local_steps,
            fixed_importance=self.fixed_importance,
            **overrides,
        )


def make_case(seed: int, kind: Kind, n_layers: int, max_size: int) -> Case:
    """Build one instance; layer sizes in [0, max_size], mask densities uniform in [0, 1]."""
    rng = np.random.default_rng(seed)
    names = tuple(f"layer{i}.weight" for i in range(n_layers))
    weights, masks, importance = {}, {}, {}
    for name in names:
        if rng.random() < 0.5:
            shape: tuple[int, ...] = (int(rng.integers(0, max_size + 1)),)
        else:
            shape = (2, int(rng.integers(0, max_size // 2 + 1)))
        if kind == "ties":
            weights[name] = torch.from_numpy(rng.integers(-3, 4, size=shape).astype(np.float32))
            importance[name] = torch.from_numpy(rng.integers(0, 5, size=shape).astype(np.float32))
        elif kind == "wide":
            weights[name] = torch.from_numpy(rng.standard_normal(shape))
            importance[name] = torch.from_numpy(10.0 ** rng.uniform(-12.0, 3.0, size=shape))
        else:
            weights[name] = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
            importance[name] = torch.from_numpy(rng.exponential(size=shape).astype(np.float32))
        masks[name] = torch.from_numpy(rng.random(shape) < rng.random())
    if kind == "ties":
        # K·a + b with a, b multiples of 1/4 and K ≤ 4: a handful of bits, so S and T sums stay exact.
        compute = tuple(float(x) for x in rng.integers(0, 4, size=n_layers) * 0.25)
        constant, comm, local_steps = float(rng.integers(1, 5)) * 0.5, 0.25, int(rng.integers(1, 5))
        fixed = float(rng.integers(0, 10))
    else:
        compute = tuple(float(x) for x in rng.uniform(0.0, 1e-5, size=n_layers))
        constant, comm, local_steps = float(rng.uniform(0.1, 2.0)), 5.561621025626998e-6, 5
        fixed = float(rng.choice([0.0, rng.uniform(0, 10.0), 1e3]))
    return Case(weights, masks, importance, TimeModel(names, compute, constant, comm), local_steps, fixed)


@st.composite
def cases(draw: st.DrawFn, kinds: tuple[Kind, ...] = ("ties", "wide", "float32"), max_size: int = 40) -> Case:
    """Hypothesis strategy of :class:`Case`."""
    return make_case(
        draw(st.integers(0, 2**32 - 1)),
        draw(st.sampled_from(kinds)),
        draw(st.integers(1, 4)),
        max_size,
    )


deltas = st.sampled_from([0.0, 0.05, 0.3, 0.5, 1.0])
caps = st.one_of(st.none(), st.floats(0.01, 1.0))
