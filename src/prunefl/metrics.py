"""Every metric and summary key of a run's results (metrics.jsonl rows, summary.json), defined once.

Kebab-case strings shared by the round protocol that writes rows, the runner that summarises them and the report
that reads them back; kept apart from the FL message types so that results code never imports the protocol.
"""

from __future__ import annotations

__all__ = [
    "K_ROUND",
    "K_STAGE",
    "K_SIM_CLOCK_S",
    "K_ROUND_SIM_S",
    "K_WALL_S",
    "K_ROUND_WALL_S",
    "K_DELIVERY_WALL_S",
    "K_NODES",
    "K_DROPPED",
    "K_TRAIN_LOSS",
    "K_TRAIN_ACCURACY",
    "K_TEST_ACCURACY",
    "K_TEST_LOSS",
    "K_DENSITY",
    "K_LAYER_DENSITY",
    "K_BYTES_UP",
    "K_BYTES_DOWN",
    "K_LR",
    "K_CLIENTS",
    "K_CLIENT_SIM_S",
    "K_COMPUTE_WALL_S",
    "K_MODEL_COMPUTE_S",
    "K_SPARSE_LAYERS",
    "K_RECONFIG",
    "K_REJECTED",
    "K_REJECTED_CLIENTS",
    "K_MISSING",
    "K_RETRIES",
    "K_METHOD",
    "K_ROUNDS",
    "K_FINAL_ACCURACY",
    "K_BEST_ACCURACY",
    "K_FINAL_ACCURACY_FULL",
    "K_FINAL_LOSS_FULL",
    "K_FINAL_DENSITY",
    "K_TARGETS",
    "K_TARGET_ACCURACY",
    "K_REMOVED",
    "K_ADDED",
    "K_KEPT",
    "K_OBJECTIVE_BEFORE",
    "K_OBJECTIVE_AFTER",
    "K_MAX_DECREASE",
    "K_DENSITY_CAP",
    "K_DENSITY_BEFORE",
    "K_DENSITY_AFTER",
    "K_READJUST_FRACTION",
    "K_K",
    "K_K_AUX",
    "K_K_BEFORE",
    "K_K_MIN",
    "K_K_MAX",
    "K_STEP_SIZE",
    "K_HELD",
    "K_COST",
    "K_COST_AUX",
    "K_LOSS_PREV",
    "K_LOSS_CUR",
    "K_LOSS_AUX",
    "K_K_UPDATES",
    "K_WARNING",
    "K_IP",
    "K_IP_STARTED_AT",
    "K_IP_STOP_REASON",
    "K_IP_COMPUTE_S",
    "K_IP_CHARGED",
    "K_IP_CLIENT",
    "K_IP_NODE",
    "K_TARGET_DENSITY",
    "K_REFERENCE_SOURCE",
    "K_N_KEPT",
    "K_N_TOTAL",
    "STAGE_IP",
    "STAGE_FL",
]

# --- metrics.jsonl: one row per round (and per IP round, stage "ip") ---
K_ROUND = "round"  # int, 0-based index of the round just finished
K_STAGE = "stage"  # "fl" or "ip"
K_SIM_CLOCK_S = "sim-clock-s"  # float, simulated seconds since the start, after this round
K_ROUND_SIM_S = "round-sim-s"  # float, simulated duration of this round (slowest selected client)
K_WALL_S = "wall-s"  # float, real seconds since the start of the run, after this round
K_ROUND_WALL_S = "round-wall-s"  # float, real seconds of this round at the server (Flower engine)
K_DELIVERY_WALL_S = "delivery-wall-s"  # float, real seconds from sending the instructions to the last reply (Flower)
K_NODES = "nodes"  # list[int], Flower node id of each of "clients"
K_DROPPED = "dropped"  # list[{"partition", "node", "reason"}], participants whose node left the round (Flower)
K_TRAIN_LOSS = "train-loss"  # float, sample-weighted mean local training loss of this round
K_TRAIN_ACCURACY = "train-accuracy"  # float or null: IP client's accuracy on its own batches (IP check rounds)
K_TEST_ACCURACY = "test-accuracy"  # float in [0, 1] or null when not evaluated this round
K_TEST_LOSS = "test-loss"  # float or null
K_DENSITY = "density"  # float in [0, 1], kept prunable weights / all prunable weights (mask in force after the round)
K_LAYER_DENSITY = "layer-density"  # {param name: float}
K_BYTES_UP = "bytes-up"  # int, bytes sent by all selected clients this round
K_BYTES_DOWN = "bytes-down"  # int, bytes sent to all selected clients this round
K_LR = "lr"  # float, learning rate used this round
K_CLIENTS = "clients"  # list[int], selected client ids
K_CLIENT_SIM_S = "client-sim-s"  # list[float], simulated duration per selected client (same order as clients)
K_COMPUTE_WALL_S = "compute-wall-s"  # list[float], measured wall seconds of each client's local steps
K_MODEL_COMPUTE_S = "model-compute-s"  # list[float], each client's compute seconds under its device time model
K_SPARSE_LAYERS = "sparse-layers"  # list[str], layers trained with the CSR kernel this round
K_RECONFIG = "reconfig"  # null, or a dict describing the reconfiguration done this round
K_REJECTED = "rejected"  # dict[str, int], replies dropped this round per reason (prunefl.fl.validate); {} if none
K_REJECTED_CLIENTS = "rejected-clients"  # list of [participant, reason], in arrival order
K_MISSING = "missing"  # list[int], selected participants that did not reply (a Flower node that dropped out)
K_RETRIES = "retries"  # int, tries of this round that had too few valid replies before this one (fl.round_retries)

# --- summary.json ---
K_METHOD = "method"
K_ROUNDS = "rounds"
K_FINAL_ACCURACY = "final-accuracy"
K_BEST_ACCURACY = "best-accuracy"
K_FINAL_ACCURACY_FULL = "final-accuracy-full-test"  # final model on every test sample (when rounds used a subset)
K_FINAL_LOSS_FULL = "final-loss-full-test"
K_FINAL_DENSITY = "final-density"
K_TARGETS = "targets"  # list of {target-accuracy, round, sim-clock-s, wall-s} (null where not reached)
K_TARGET_ACCURACY = "target-accuracy"

# --- reconfiguration records (metrics row "reconfig") ---
K_REMOVED = "removed"  # {layer: int} weights in use before, pruned after
K_ADDED = "added"  # {layer: int} weights pruned before, in use after (regrown)
K_KEPT = "kept"  # {layer: int} weights in use after
K_OBJECTIVE_BEFORE = "objective-before"  # Φ = Δ/T of the old mask
K_OBJECTIVE_AFTER = "objective-after"
K_MAX_DECREASE = "max-decrease"  # δ used
K_DENSITY_CAP = "density-cap"  # D(r) or null
K_DENSITY_BEFORE = "density-before"
K_DENSITY_AFTER = "density-after"
K_READJUST_FRACTION = "readjust-fraction"  # FedDST's α_t: share of each layer's kept weights a client swaps

# --- online baseline (spec §8): its per-round record (metrics row "reconfig") and summary.json entries ---
K_K = "k"  # int, retained weights after this round's update (summary: at the end)
K_K_AUX = "k-aux"  # int, the auxiliary model's retained weights for the next round
K_K_BEFORE = "k-before"  # int, retained weights the round trained with
K_K_MIN = "k-min"  # int, lower end of the range k is clipped to
K_K_MAX = "k-max"  # int, upper end of that range
K_STEP_SIZE = "step-size"  # float, η_t = d/√(2(t − t_ref)) in weights
K_HELD = "held"  # bool, k held because the gradient estimate was undefined
K_COST = "cost"  # float, s, the cost of k
K_COST_AUX = "cost-aux"  # float or null, s, the loss-scaled cost of k_aux
K_LOSS_PREV = "loss-prev"  # float, previous global model on the uploaded samples
K_LOSS_CUR = "loss-cur"  # float, this round's aggregate on them
K_LOSS_AUX = "loss-aux"  # float, the aggregate re-pruned to k_aux on them
K_K_UPDATES = "k-updates"  # int, rounds in which k was updated (held ones included)
K_WARNING = "warning"  # str, the method's caveat (the online baseline uploads raw samples)

# --- initial pruning summary (summary.json "ip") ---
K_IP = "ip"
K_IP_STARTED_AT = "started-at"  # IP round whose training accuracy started reconfiguration, or null
K_IP_STOP_REASON = "stop-reason"  # "stable" or "max_rounds"
K_IP_COMPUTE_S = "sim-compute-s"  # simulated compute of IP at the selected client, charged or not
K_IP_CHARGED = "charged"  # whether that time is on the clock
K_IP_CLIENT = "client"  # the selected client that ran initial pruning
K_IP_NODE = "node"  # "client" or "server": whose speed IP was charged at
STAGE_IP = "ip"
STAGE_FL = "fl"

# --- methods that prune to a reference density (summary.json): what they targeted and where it came from ---
K_TARGET_DENSITY = "target-density"  # float in (0, 1], the density the method pruned to
K_REFERENCE_SOURCE = "reference-source"  # str, the reference run folder, or "config" for reference.density
K_N_KEPT = "n-kept"  # int, prunable weights the method kept
K_N_TOTAL = "n-total"  # int, all prunable weights
