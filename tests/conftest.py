"""Shared test set-up: make tests/ importable for helper modules, and keep torch single-threaded and seeded."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)
