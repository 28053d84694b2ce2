"""What cheaper importance uploads do to the chosen masks: float32 vs float16 vs top-fraction uploads.

Trains Conv-2 on Fashion-MNIST (or the bundled digits with --smoke) with the real client step for a few
rounds, collects every client's importance upload, then reconfigures once from the exact (float32) sum and once
from each cheaper upload as the server decodes it: float16-rounded, and only the top 30 % / 10 % of each
layer's values per client (float32, the rest 0). Compares the masks, the objective and the upload bytes.
Prints a table and writes JSON.

    python benchmarks/importance_upload.py [--rounds 10] [--json benchmarks/results/importance_upload.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from prunefl.experiments.config import load_config
from prunefl.experiments.runner import build_simulation, load_run_dataset
from prunefl.fl.aggregate import sum_importance
from prunefl.fl.client import client_step
from prunefl.fl.links import ClientLink, ServerLink, WireSettings
from prunefl.fl.selection import select_clients
from prunefl.engines.simulation import SimulationEngine
from prunefl.pruning import max_decrease, reconfigure
from prunefl.machine import cpu_model
from prunefl.pruning.adaptive import fixed_importance

ROOT = Path(__file__).parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds of importance accumulation (default: 10)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "importance_upload.json"))
    parser.add_argument("--smoke", action="store_true", help="digits + digits-cnn, 2 rounds: checks the script runs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [f"rounds={args.rounds}", "method=prunefl-no-ip", f"threads={args.threads}"]
    if args.smoke:
        overrides = ["data.dataset=digits", "model.name=mlp", "rounds=2", "data.partition=iid",
                     "data.num_clients=4", "clients_per_round=4", "method=prunefl-no-ip", "timing.preset=uniform",
                     "ip_client=0"]
    config = load_config(ROOT / "configs" / "fmnist-conv2.toml", overrides)
    setup = build_simulation(config, load_run_dataset(config))
    engine = SimulationEngine(setup)
    server = setup.server
    uploads = []
    for r in range(config.fl.rounds):  # accumulate like the clients of one reconfiguration interval
        last = r == config.fl.rounds - 1
        settings = server.settings
        clients = select_clients(settings.num_clients, settings.clients_per_round, settings.seed, r)
        ins = server.configure_train(r, upload_importance=last)
        replies = [client_step(setup.model, ins, engine.clients[c], setup.dataset, setup.loss_fn) for c in clients]
        server.aggregate_train(ins, replies)
        if last:
            uploads = replies
    rows = []
    exact = None
    for dtype, top_fraction in (("float32", 1.0), ("float16", 1.0), ("float32", 0.3), ("float32", 0.1)):
        wire = WireSettings(importance_dtype=dtype, importance_top_fraction=top_fraction)
        server_link = ServerLink(wire)
        messages = server_link.encode_ins(ins, clients, mask_version=0)
        sent = {}
        for c, res in zip(clients, uploads):  # each client encodes against the masks its link decoded
            link = ClientLink(wire)
            link.decode_ins(messages[c])
            sent[c] = link.encode_res(res)
        decoded = [server_link.decode_res(c, data) for c, data in sent.items()]
        nbytes = [len(data) for data in sent.values()]
        importance = sum_importance([d.importance for d in decoded])
        t0 = time.perf_counter()
        rec = reconfigure(
            {k: server.state[k] for k in server.masks}, server.masks, {k: importance[k] for k in server.masks},
            setup.devices[0].time_model, config.fl.local_steps, max_decrease(config.fl.rounds),
            fixed_importance=fixed_importance(importance, server.masks),
        )
        elapsed = time.perf_counter() - t0
        flat = torch.cat([m.flatten() for m in rec.masks.values()])
        if exact is None:
            exact = flat
        same = float((flat == exact).float().mean())
        inter = int((flat & exact).sum())
        union = int((flat | exact).sum())
        rows.append({
            "importance-dtype": dtype, "importance-top-fraction": top_fraction,
            "upload-bytes-per-client": int(np.mean(nbytes)), "density": rec.density_after,
            "objective": rec.objective_after, "mask-bits-identical": same, "jaccard-kept": inter / max(union, 1),
            "reconfigure-s": elapsed,
        })
    print(f"{'importance':>10}  {'top':>4}  {'bytes/client':>12}  {'density':>8}  {'objective':>12}  "
          f"{'bits same':>9}  {'jaccard':>7}")
    for r in rows:
        print(f"{r['importance-dtype']:>10}  {r['importance-top-fraction']:>4}  {r['upload-bytes-per-client']:>12,}  "
              f"{r['density']:>8.4f}  "
              f"{r['objective']:>12.6g}  {r['mask-bits-identical']:>9.6f}  {r['jaccard-kept']:>7.5f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "config": {"rounds": config.fl.rounds, "model": config.model.name, "dataset": config.data.dataset,
                   "smoke": args.smoke},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(),
        "rows": rows,
    }, indent=2) + "\n")
    print(f"json: {out}")


if __name__ == "__main__":
    main()
