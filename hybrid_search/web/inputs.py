"""Reading what clients send (form fields, query strings, JSON) into checked values.

Every bad value becomes a QueryError or AnnotationError whose message says, in words, which
field is wrong and why; the error handlers turn them into 400 responses.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..annotations import Annotations, split_tags
from ..exceptions import AnnotationError, QueryError

__all__ = [
    "MAX_DESCRIPTION",
    "MAX_ID",
    "MAX_TITLE",
    "AnnotationChange",
    "annotation_change",
    "decode_base64_image",
    "optional_float",
    "optional_id",
    "optional_int",
    "optional_text",
]

MAX_ID = 2**63 - 1
MAX_TITLE = 500
MAX_DESCRIPTION = 20_000
MAX_TAG = 100
MAX_TAGS = 200
MAX_QUERY_TEXT = 1000
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _bad_character(value: str) -> str | None:
    """What makes a string unusable as text: a NUL, or a lone surrogate (JSON's "\\ud800"
    decodes to one; neither SQLite nor the tokenizer can encode it)."""
    if "\x00" in value:
        return "a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (invalid Unicode)"
    return None


def optional_text(value: Any, name: str, max_chars: int = MAX_QUERY_TEXT) -> str | None:
    """A string field, or None when absent or blank."""
    if _blank(value):
        return None
    return _checked_text(value, name, max_chars, QueryError).strip()


def _checked_text(value: Any, name: str, max_chars: int,
                  error: type[QueryError] | type[AnnotationError]) -> str:
    """`value` if it is text of at most `max_chars` with no forbidden character, else `error`."""
    if not isinstance(value, str):
        raise error(f"{name} must be text, not {type(value).__name__}")
    bad = _bad_character(value)
    if bad is not None:
        raise error(f"{name} contains {bad}")
    if len(value) > max_chars:
        raise error(f"{name} is longer than {max_chars} characters")
    return value


def optional_float(value: Any, name: str) -> float | None:
    """A number field (a JSON number or a numeric string), or None when absent or blank."""
    if _blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueryError(f"{name} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise QueryError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise QueryError(f"{name} must be a finite number, not {value!r}")
    return number


def optional_int(value: Any, name: str, minimum: int, maximum: int) -> int | None:
    """A whole-number field within bounds, or None when absent or blank."""
    if _blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueryError(f"{name} must be a whole number, not {type(value).__name__}")
    if isinstance(value, float):
        if not value.is_integer():
            raise QueryError(f"{name} must be a whole number, not {value!r}")
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d{1,20}", text):
            raise QueryError(f"{name} must be a whole number, not {value!r}")
        number = int(text)
    else:
        number = value
    if not minimum <= number <= maximum:
        raise QueryError(f"{name} must be from {minimum} to {maximum}, not {number}")
    return number


def optional_id(value: Any, name: str) -> int | None:
    """An image id field, or None when absent or blank."""
    return optional_int(value, name, 1, MAX_ID)


def decode_base64_image(value: Any, name: str = "image") -> bytes:
    """The bytes of a base64 string (a `data:` URL prefix is allowed)."""
    if not isinstance(value, str):
        raise QueryError(f"{name} must be a base64 string, not {type(value).__name__}")
    text = _DATA_URL.sub("", value.strip(), count=1)
    text = "".join(text.split())
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise QueryError(f"{name} is not valid base64") from None
    if not data:
        raise QueryError(f"{name} is empty")
    return data


def _tags(value: Any, name: str) -> tuple[str, ...]:
    """Tags from a `;`/`,` separated string or a list of strings."""
    if isinstance(value, str) and "\x00" in value:
        raise AnnotationError(f"{name} contains a NUL character")
    try:
        tags = split_tags(value)
    except ValueError as e:
        raise AnnotationError(f"{name}: {e}") from None
    if len(tags) > MAX_TAGS:
        raise AnnotationError(f"{name}: at most {MAX_TAGS} tags, not {len(tags)}")
    for tag in tags:
        bad = _bad_character(tag)
        if bad is not None:
            raise AnnotationError(f"{name} contains {bad}")
        if len(tag) > MAX_TAG:
            raise AnnotationError(f"{name}: a tag is longer than {MAX_TAG} characters")
    return tags


@dataclass(frozen=True)
class AnnotationChange:
    """Changes to an image's annotations; None leaves a field as it is."""

    title: str | None = None
    description: str | None = None
    tags: tuple[str, ...] | None = None
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()

    def as_annotations(self) -> Annotations:
        """The change as the annotations of a new image."""
        return Annotations(self.title or "", self.description or "", self.tags or ())


ANNOTATION_FIELDS = ("title", "description", "tags", "add_tags", "remove_tags")


def annotation_change(
    data: Mapping[str, Any], *, strict: bool = False, allow_tag_edits: bool = True
) -> AnnotationChange:
    """Annotation fields from a form or JSON object.

    `strict` refuses keys other than the annotation fields (for JSON bodies).
    """
    if strict:
        unknown = sorted(set(data) - set(ANNOTATION_FIELDS if allow_tag_edits
                                           else ANNOTATION_FIELDS[:3]))
        if unknown:
            raise AnnotationError("unknown field(s): " + ", ".join(unknown))
    title = data.get("title")
    description = data.get("description")
    tags = data.get("tags")
    if title is not None:
        title = " ".join(_checked_text(title, "title", MAX_TITLE, AnnotationError).split())
    if description is not None:
        description = _checked_text(description, "description", MAX_DESCRIPTION,
                                    AnnotationError).strip()
    return AnnotationChange(
        title=title,
        description=description,
        tags=None if tags is None else _tags(tags, "tags"),
        add_tags=_tags(data.get("add_tags"), "add_tags") if allow_tag_edits else (),
        remove_tags=_tags(data.get("remove_tags"), "remove_tags") if allow_tag_edits else (),
    )
