"""The method registry and protocol: lookup, reference checks, PruneFL's variants, the IP client rule."""

from __future__ import annotations

import numpy as np
import pytest

from prunefl.errors import ConfigError
from prunefl.pruning.methods import Method, MethodContext, ReferenceRun, all_specs, build_method, get_spec
from prunefl.pruning.methods.prunefl import PruneFL, PruneFLSettings, choose_ip_client

CTX = MethodContext(seed=0, rounds=100, local_steps=5, batch_size=20, lr=0.1, num_clients=4)


def test_unknown_method_is_a_config_error_listing_registered_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown method 'nope'.*fedavg.*prunefl"):
        get_spec("nope")


def test_every_spec_builds_a_method_and_names_are_unique() -> None:
    # Prepare: a reference holding everything any method may need
    names = [s.name for s in all_specs()]
    # Assert
    assert len(names) == len(set(names))
    assert sum(s.baseline for s in all_specs()) == 1  # speed-ups need exactly one baseline


def test_method_needing_a_reference_without_one_names_what_is_missing() -> None:
    # Prepare: a spec that needs the density, built with a reference that has none
    needy = [s for s in all_specs() if "density" in s.needs]
    if not needy:
        pytest.skip("no registered method needs a reference density yet")
    spec = needy[0]
    # Execute / Assert
    with pytest.raises(ConfigError, match="density"):
        build_method(spec.name, None, CTX, ReferenceRun(source="x"))


@pytest.mark.parametrize(
    ("name", "initial", "adaptive"),
    [("prunefl", True, True), ("prunefl-no-ip", False, True), ("prunefl-ip-only", True, False)],
)
def test_prunefl_ablations_are_variants_of_one_class(name: str, initial: bool, adaptive: bool) -> None:
    # Execute
    method = build_method(name, PruneFLSettings(first_reconfig_round=10, reconfig_interval=10), CTX, None)
    # Assert
    assert isinstance(method, PruneFL)
    assert method.initial_pruning is initial and (method.adaptive is not None) is adaptive
    assert method.upload_importance(10) is adaptive and method.upload_importance(11) is False
    assert get_spec(name).initial_pruning is initial


def test_fedavg_hooks_change_nothing() -> None:
    method = build_method("fedavg", None, CTX, None)
    assert type(method).__mro__[1] is Method
    assert not method.track_importance(0) and not method.upload_importance(0)
    assert method.state_dict() == {}


def test_prunefl_state_dict_round_trips_the_schedule() -> None:
    # Prepare: accuracy-triggered start, triggered at round 12 -> first reconfiguration at 20
    s = PruneFLSettings(reconfig_start="accuracy", reconfig_interval=10, reconfig_start_accuracy=0.5)
    a = build_method("prunefl-no-ip", s, CTX, None)
    a.observe({"round": 12, "test-accuracy": 0.6})
    # Execute
    b = build_method("prunefl-no-ip", s, CTX, None)
    b.load_state_dict(a.state_dict())
    # Assert
    assert [r for r in range(40) if b.upload_importance(r)] == [20, 30]


def test_balanced_ip_client_is_the_one_with_the_most_even_labels() -> None:
    # Prepare: client 0 holds class 0 only; client 1 classes 0-2 evenly; client 2 classes 0-2 unevenly
    labels = np.array([0] * 4 + [0, 1, 2] + [0, 0, 0, 1, 2])
    parts = [np.arange(0, 4), np.arange(4, 7), np.arange(7, 12)]
    # Execute / Assert
    assert choose_ip_client(PruneFLSettings(ip_client_choice="balanced"), labels, parts) == 1
    assert choose_ip_client(PruneFLSettings(ip_client=2), labels, parts) == 2
