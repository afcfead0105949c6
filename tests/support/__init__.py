"""What the tests share: app runners, fakes, protocol clients, the stub model, databases."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""
