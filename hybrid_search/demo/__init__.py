"""Bundled demo collection: public-domain / CC0 photos with hand-written annotations."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR: Path = Path(__file__).resolve().parent
PHOTOS_DIR: Path = DEMO_DIR / "photos"
ANNOTATIONS_CSV: Path = DEMO_DIR / "annotations.csv"

__all__ = ["ANNOTATIONS_CSV", "DEMO_DIR", "PHOTOS_DIR"]
