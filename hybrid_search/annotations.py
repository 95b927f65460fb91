"""Reading manual annotations: a CSV or JSON-lines file, or a sidecar next to each image.

CSV columns are `file,title,description,tags`; JSON lines carry the same keys. `file` is
relative to the annotation file's folder, or absolute. Tags are split on `;` or `,` (JSON may
also give a list). A sidecar is `<image>.json` (same keys, `file` not needed) or `<image>.txt`:
its first non-empty line is the title, a line `tags: a, b` gives the tags, the rest is the
description. `photo.jpg.json` and `photo.json` are both found for `photo.jpg`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import AnnotationError

__all__ = ["Annotations", "find_sidecar", "load_annotation_file", "split_tags"]

_TAG_SPLIT = re.compile(r"[;,]")
MAX_FIELD = 20_000


@dataclass(frozen=True)
class Annotations:
    """Manual words about one image."""

    title: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.title or self.description or self.tags)


def split_tags(value: Any) -> tuple[str, ...]:
    """Tags from a `;`/`,` separated string or a list of strings."""
    if value is None:
        return ()
    if isinstance(value, str):
        parts = _TAG_SPLIT.split(value)
    elif isinstance(value, list | tuple):
        parts = []
        for v in value:
            if not isinstance(v, str):
                raise ValueError(f"tag {v!r} is not a string")
            parts.append(v)
    else:
        raise ValueError(f"tags must be a string or a list, not {type(value).__name__}")
    out = tuple(p.strip() for p in parts if p.strip())
    for tag in out:
        if "\x00" in tag:
            raise ValueError("a tag contains a NUL character")
        if len(tag) > MAX_FIELD:
            raise ValueError(f"a tag is longer than {MAX_FIELD} characters")
    return out


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text, not {type(value).__name__}")
    if "\x00" in value:
        raise ValueError(f"{key} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{key} contains characters that are not valid text") from None
    if len(value) > MAX_FIELD:
        raise ValueError(f"{key} is longer than {MAX_FIELD} characters")
    return value.strip()


def _from_record(record: Mapping[str, Any]) -> Annotations:
    return Annotations(
        title=_text(record, "title"),
        description=_text(record, "description"),
        tags=split_tags(record.get("tags")),
    )


def load_annotation_file(path: Path) -> dict[Path, Annotations]:
    """Annotations keyed by the resolved image path, from a CSV or JSON-lines file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise AnnotationError(f"cannot read annotation file {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AnnotationError(f"annotation file {path} is not UTF-8 text") from None
    base = path.resolve().parent
    records: list[tuple[int, Mapping[str, Any]]] = []
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise AnnotationError(f"{path}, line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise AnnotationError(f"{path}, line {lineno}: expected a JSON object")
            records.append((lineno, obj))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        fields = set(reader.fieldnames or ())
        if "file" not in fields:
            raise AnnotationError(
                f"annotation file {path} has no 'file' column "
                "(expected columns file,title,description,tags)"
            )
        for row in reader:
            lineno = reader.line_num
            if None in row:
                raise AnnotationError(f"{path}, line {lineno}: more cells than columns")
            records.append((lineno, row))
    out: dict[Path, Annotations] = {}
    for lineno, rec in records:
        name = rec.get("file")
        if not isinstance(name, str) or not name.strip():
            raise AnnotationError(f"{path}, line {lineno}: missing 'file'")
        target = Path(name.strip())
        target = (target if target.is_absolute() else base / target).resolve()
        try:
            out[target] = _from_record(rec)
        except ValueError as e:
            raise AnnotationError(f"{path}, line {lineno}: {e}") from None
    return out


def find_sidecar(image: Path) -> Annotations | None:
    """Annotations from `<image>.json` / `<image>.txt` (with or without the image suffix)."""
    candidates = [
        image.with_name(image.name + ".json"),
        image.with_suffix(".json"),
        image.with_name(image.name + ".txt"),
        image.with_suffix(".txt"),
    ]
    for side in candidates:
        if side == image or not side.is_file():
            continue
        try:
            text = side.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise AnnotationError(f"cannot read sidecar {side}: {e}") from None
        if side.suffix == ".json":
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise AnnotationError(f"sidecar {side} is not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise AnnotationError(f"sidecar {side}: expected a JSON object")
            try:
                return _from_record(obj)
            except ValueError as e:
                raise AnnotationError(f"sidecar {side}: {e}") from None
        if "\x00" in text:
            raise AnnotationError(f"sidecar {side} contains a NUL character")
        try:
            return _from_text(text)
        except ValueError as e:
            raise AnnotationError(f"sidecar {side}: {e}") from None
    return None


def _from_text(text: str) -> Annotations:
    title = ""
    tags: tuple[str, ...] = ()
    rest: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.lower().startswith("tags:"):
            tags += split_tags(stripped[5:])
        elif not title and stripped:
            title = stripped
        else:
            rest.append(line)
    return Annotations(title=title, description="\n".join(rest).strip(), tags=tags)
