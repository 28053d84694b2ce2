"""SynFlow: the linearised network's scores |θ ⊙ ∂R/∂θ|, the iterative schedule, and the workspace left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunefl import metrics as K
from prunefl.data.dataset import ArrayDataset
from prunefl.errors import ConfigError
from prunefl.pruning.methods import MethodContext, ReferenceRun, SetupView, build_method, get_spec
from prunefl.pruning.methods.synflow import SynFlowSettings, synflow_masks, synflow_scores
from prunefl.pruning.select import top_k_global
from prunefl.sparse.masks import attach_masks, prunable_parameters

CTX = MethodContext(seed=0, rounds=10, local_steps=5, batch_size=20, lr=0.1, num_clients=2)
NAMES = ["0.weight", "1.weight"]


def _two_layer_net() -> nn.Sequential:
    """y = W2·W1·x without biases; W1 = [[1, −2], [3, 0.5]], W2 = [[−1, 2]]."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        net[1].weight.copy_(torch.tensor([[-1.0, 2.0]]))
    return net


def test_synflow_scores_match_hand_computation_on_two_layer_linear_net() -> None:
    """|W1| = [[1, 2], [3, .5]], |W2| = [[1, 2]], x = 1: h = |W1|·1 = [3, 3.5], R = 1·3 + 2·3.5 = 10.
    ∂R/∂W1[j, i] = |W2|[0, j]·x_i = [[1, 1], [2, 2]] → score [[1, 2], [6, 1]];
    ∂R/∂W2[0, j] = h_j → score |W2| ⊙ h = [[3, 7]]. Each layer's scores sum to R (synaptic flow is conserved)."""
    # Execute
    scores = synflow_scores(_two_layer_net(), NAMES, (2,))
    # Assert
    assert scores["0.weight"].tolist() == [[1.0, 2.0], [6.0, 1.0]]
    assert scores["1.weight"].tolist() == [[3.0, 7.0]]
    assert scores["0.weight"].dtype == torch.float64


def test_synflow_scores_of_pruned_weights_are_zero_and_flow_is_rerouted() -> None:
    # Prepare: prune W1[0, 0] and W1[1, 1]: h = [2, 3], R = 1·2 + 2·3 = 8
    masks = {"0.weight": torch.tensor([[False, True], [True, False]]), "1.weight": torch.tensor([[True, True]])}
    # Execute
    scores = synflow_scores(_two_layer_net(), NAMES, (2,), masks)
    # Assert
    assert scores["0.weight"].tolist() == [[0.0, 2.0], [6.0, 0.0]]
    assert scores["1.weight"].tolist() == [[2.0, 6.0]]


def test_synflow_masks_iterate_with_exponential_schedule_by_hand() -> None:
    """d = 0.5, n = 2, |J| = 6. Iteration 1 keeps round(0.5^½·6) = round(4.24) = 4 of scores
    W1 [[1, 2], [6, 1]], W2 [[3, 7]]: 7, 6, 3, 2. Iteration 2 rescoring the survivors gives W1 [[0, 2], [6, 0]],
    W2 [[2, 6]] (previous test) and keeps 3: both 6s and the first 2 in flat order, W1[0, 1]."""
    # Execute
    masks = synflow_masks(_two_layer_net(), NAMES, (2,), 0.5, iterations=2)
    # Assert
    assert masks["0.weight"].tolist() == [[False, True], [True, False]]
    assert masks["1.weight"].tolist() == [[False, True]]


def test_synflow_single_iteration_is_one_shot_top_k_of_the_scores() -> None:
    # Prepare
    net = _mlp()
    names = [n for n, _ in prunable_parameters(net)]
    scores = synflow_scores(net, names, (1, 4, 4))
    # Execute
    masks = synflow_masks(net, names, (1, 4, 4), 0.25, iterations=1)
    # Assert
    expected = top_k_global(scores, round(0.25 * 160))
    assert all(torch.equal(masks[n], expected[n]) for n in names)


@pytest.mark.parametrize("target", [0.3, 0.05, 1.0])
def test_synflow_reaches_round_of_target_times_total_exactly(target: float) -> None:
    # Prepare: |J| = 16·8 + 8·4 = 160
    net = _mlp()
    names = [n for n, _ in prunable_parameters(net)]
    # Execute
    masks = synflow_masks(net, names, (1, 4, 4), target, iterations=20)
    # Assert: round(0.3·160) = 48, round(0.05·160) = 8, 160
    assert sum(int(m.sum()) for m in masks.values()) == round(target * 160)


def test_synflow_leaves_the_workspace_as_it_was() -> None:
    # Prepare: signed weights, BatchNorm, train mode, float32
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    attach_masks(net)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ids = [id(p) for p in net.parameters()]
    names = [n for n, _ in prunable_parameters(net)]
    # Execute
    synflow_masks(net, names, (1, 4, 4), 0.3, iterations=5)
    # Assert
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert net.training and [id(p) for p in net.parameters()] == ids
    assert all(p.grad is None for p in net.parameters())


def test_synflow_before_fl_fixes_the_mask_and_zeroes_pruned_initial_weights() -> None:
    # Prepare
    net = _mlp()
    masks = attach_masks(net)
    state = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("_mask")}
    method = build_method("synflow", SynFlowSettings(iterations=10), CTX, ReferenceRun("config", density=0.3))
    view = SetupView(state=state, masks={k: v.clone() for k, v in masks.items()}, model=net, dataset=_dataset(),
                     partitions=[], devices=[], loss_fn=nn.functional.cross_entropy, record=lambda row: None,
                     fresh_state=lambda seed: {})
    # Execute
    before = method.before_fl(view)
    # Assert
    assert before.masks is not None and before.state is not None
    assert sum(int(m.sum()) for m in before.masks.values()) == 48  # round(0.3·160)
    for n, m in before.masks.items():
        assert torch.equal(before.state[n], state[n] * m)
    assert torch.equal(before.state["fc1.bias"], state["fc1.bias"])
    assert method.summary() == {K.K_TARGET_DENSITY: 0.3, K.K_REFERENCE_SOURCE: "config", "iterations": 10,
                                K.K_N_KEPT: 48, K.K_N_TOTAL: 160}


def test_synflow_rejects_zero_iterations() -> None:
    with pytest.raises(ConfigError, match=r"synflow.iterations must be in \[1, 10000\], got 0"):
        SynFlowSettings(iterations=0)


def test_synflow_is_registered_as_an_extension() -> None:
    spec = get_spec("synflow")
    assert (spec.display_name, spec.colour, spec.extension, spec.needs) == ("SynFlow", "C5", True,
                                                                             frozenset({"density"}))


def _mlp() -> nn.Module:
    from prunefl.models.small import MLP

    torch.manual_seed(0)
    return MLP(num_classes=4, input_shape=(1, 4, 4), hidden_sizes=(8,))  # |J| = 16·8 + 8·4 = 160


def _dataset() -> ArrayDataset:
    x = torch.zeros(4, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 3])
    return ArrayDataset("tiny", x, y, x, y, num_classes=4, train_groups=None, mean=(0.0,), std=(1.0,))

