"""Tests for reading annotation files and sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_search.annotations import (
    MAX_FIELD,
    Annotations,
    find_sidecar,
    load_annotation_file,
    split_tags,
)
from hybrid_search.exceptions import AnnotationError


def write(path: Path, text: str) -> Path:
    """Write a UTF-8 text file (creating folders) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


def jsonl(path: Path, *records: object) -> Path:
    """Write records as JSON lines and return the path."""
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


# -- split_tags ---------------------------------------------------------------------------


def test_split_tags() -> None:
    assert split_tags("a; b ,c;;, ") == ("a", "b", "c")
    assert split_tags(["x ", " y", ""]) == ("x", "y")
    assert split_tags(("p",)) == ("p",)
    assert split_tags(None) == ()
    assert split_tags("") == ()
    with pytest.raises(ValueError, match="string"):
        split_tags([1, 2])
    with pytest.raises(ValueError, match="int"):
        split_tags(5)


def test_annotations_truthiness() -> None:
    assert not Annotations()
    assert Annotations(title="t")
    assert Annotations(description="d")
    assert Annotations(tags=("x",))


# -- CSV ----------------------------------------------------------------------------------


def test_csv_relative_and_absolute(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "b.png"
    path = write(
        tmp_path / "ann" / "notes.csv",
        "file,title,description,tags\n"
        'photos/a.jpg,  Red car ,A car parked.,"car; red , street"\n'
        f"{elsewhere},Blue bus,,bus\n"
        "../up.jpg,Up,,\n",
    )
    out = load_annotation_file(path)
    assert out == {
        (tmp_path / "ann" / "photos" / "a.jpg").resolve(): Annotations(
            "Red car", "A car parked.", ("car", "red", "street")
        ),
        elsewhere.resolve(): Annotations("Blue bus", "", ("bus",)),
        (tmp_path / "up.jpg").resolve(): Annotations("Up", "", ()),
    }


def test_csv_relative_to_file_not_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "sub" / "a.csv", "file,title\nx.jpg,X\n")
    monkeypatch.chdir(tmp_path)
    out = load_annotation_file(Path("sub/a.csv"))
    assert list(out) == [(tmp_path / "sub" / "x.jpg").resolve()]


def test_csv_columns_in_any_order_and_optional(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "tags,file\nsun,a.jpg\n")
    expected = {(tmp_path / "a.jpg").resolve(): Annotations(tags=("sun",))}
    assert load_annotation_file(path) == expected


def test_csv_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("\ufefffile,title\r\nä.jpg,Ärger\r\n".encode())
    assert load_annotation_file(path) == {(tmp_path / "ä.jpg").resolve(): Annotations("Ärger")}


def test_csv_quoted_multiline_description(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.csv",
        'file,title,description\na.jpg,T,"First line\nsecond line, with comma"\nb.jpg,U,\n',
    )
    out = load_annotation_file(path)
    assert out[(tmp_path / "a.jpg").resolve()].description == (
        "First line\nsecond line, with comma"
    )
    assert out[(tmp_path / "b.jpg").resolve()].title == "U"


def test_csv_missing_file_column_names_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", "image,title\na.jpg,A\n")
    with pytest.raises(AnnotationError, match="'file' column") as info:
        load_annotation_file(path)
    assert str(path) in str(info.value)


def test_csv_empty_file_cell_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "file,title\na.jpg,A\n ,B\n")
    with pytest.raises(AnnotationError, match=r"line 3: missing 'file'"):
        load_annotation_file(path)


def test_csv_too_many_cells_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "file,title\na.jpg,A\nb.jpg,B,extra\n")
    with pytest.raises(AnnotationError, match="line 3") as info:
        load_annotation_file(path)
    assert str(path) in str(info.value)


def test_empty_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "")
    with pytest.raises(AnnotationError, match="'file' column"):
        load_annotation_file(path)
    header_only = write(tmp_path / "b.csv", "file,title,description,tags\n")
    assert load_annotation_file(header_only) == {}


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("file,title\ncafé.jpg,Café\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match="not UTF-8") as info:
        load_annotation_file(path)
    assert str(path) in str(info.value)


def test_missing_annotation_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(AnnotationError, match="cannot read") as info:
        load_annotation_file(path)
    assert str(path) in str(info.value)


def test_csv_nul_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "file,title\na.jpg,bad\x00title\n")
    with pytest.raises(AnnotationError, match="NUL"):
        load_annotation_file(path)


def test_csv_overlong_field_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", f"file,description\na.jpg,{'x' * (MAX_FIELD + 1)}\n")
    with pytest.raises(AnnotationError, match="line 2: description is longer"):
        load_annotation_file(path)


def test_later_row_for_same_file_wins(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "file,title\na.jpg,First\n./a.jpg,Second\n")
    assert load_annotation_file(path) == {(tmp_path / "a.jpg").resolve(): Annotations("Second")}


# -- JSON lines ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json", ".JSONL"])
def test_json_lines(tmp_path: Path, suffix: str) -> None:
    absolute = tmp_path / "abs" / "c.jpg"
    path = tmp_path / f"ann{suffix}"
    write(
        path,
        json.dumps({"file": "a.jpg", "title": " A ", "tags": ["x", " y "]}) + "\n"
        "\n"
        + json.dumps({"file": "sub/b.jpg", "description": "Bee", "tags": "p;q, r"}) + "\n"
        + json.dumps({"file": str(absolute), "title": None}) + "\n",
    )
    assert load_annotation_file(path) == {
        (tmp_path / "a.jpg").resolve(): Annotations("A", "", ("x", "y")),
        (tmp_path / "sub" / "b.jpg").resolve(): Annotations("", "Bee", ("p", "q", "r")),
        absolute.resolve(): Annotations(),
    }


def test_json_bad_line_names_line_number(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.jsonl",
        '{"file": "a.jpg"}\n\n{"file": "b.jpg", "title": }\n{"file": "c.jpg"}\n',
    )
    with pytest.raises(AnnotationError, match=r"line 3: not valid JSON") as info:
        load_annotation_file(path)
    assert str(path) in str(info.value)


def test_json_line_not_object(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '{"file": "a.jpg"}\n["b.jpg"]\n')
    with pytest.raises(AnnotationError, match="line 2: expected a JSON object"):
        load_annotation_file(path)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"title": "no file"}, "missing 'file'"),
        ({"file": 3}, "missing 'file'"),
        ({"file": "a.jpg", "title": 5}, "title must be text"),
        ({"file": "a.jpg", "tags": [1]}, "not a string"),
        ({"file": "a.jpg", "tags": {"a": 1}}, "tags must be"),
        ({"file": "a.jpg", "description": "nul\u0000here"}, "NUL"),
    ],
)
def test_json_bad_record_names_line(tmp_path: Path, record: object, message: str) -> None:
    path = jsonl(tmp_path / "a.jsonl", {"file": "ok.jpg"}, record)
    with pytest.raises(AnnotationError, match=message) as info:
        load_annotation_file(path)
    assert f"{path}, line 2" in str(info.value)


def test_json_nul_in_tags_rejected(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "a.jsonl", {"file": "a.jpg", "tags": ["ok", "bad\u0000tag"]})
    with pytest.raises(AnnotationError, match="NUL"):
        load_annotation_file(path)


def test_json_line_separator_inside_string(tmp_path: Path) -> None:
    # U+2028 is legal inside a JSON string, and json.dumps(ensure_ascii=False) writes it raw;
    # only "\n" ends a JSON line.
    record = {"file": "a.jpg", "description": "one\u2028two"}
    path = write(tmp_path / "a.jsonl", json.dumps(record, ensure_ascii=False) + "\n")
    assert load_annotation_file(path)[(tmp_path / "a.jpg").resolve()].description == (
        "one\u2028two"
    )


# -- sidecars -----------------------------------------------------------------------------


def test_sidecar_image_json(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"")
    write(tmp_path / "photo.jpg.json", json.dumps({"title": "T", "tags": "a, b"}))
    assert find_sidecar(image) == Annotations("T", "", ("a", "b"))


def test_sidecar_stem_json(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    write(tmp_path / "photo.json", json.dumps({"description": "D", "tags": ["x"]}))
    assert find_sidecar(image) == Annotations("", "D", ("x",))


def test_sidecar_image_json_preferred(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    write(tmp_path / "photo.jpg.json", json.dumps({"title": "full name"}))
    write(tmp_path / "photo.json", json.dumps({"title": "stem"}))
    write(tmp_path / "photo.txt", "text")
    assert find_sidecar(image) == Annotations("full name")


def test_sidecar_json_preferred_over_txt(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    write(tmp_path / "photo.jpg.txt", "from txt")
    write(tmp_path / "photo.json", json.dumps({"title": "from json"}))
    assert find_sidecar(image) == Annotations("from json")


@pytest.mark.parametrize("name", ["photo.jpg.txt", "photo.txt"])
def test_sidecar_txt(tmp_path: Path, name: str) -> None:
    image = tmp_path / "photo.jpg"
    write(
        tmp_path / name,
        "\n  Sunset over the sea  \nTags: Sun; sea , beach\nThe sun sets.\n\nBoats return.\n",
    )
    assert find_sidecar(image) == Annotations(
        "Sunset over the sea", "The sun sets.\n\nBoats return.", ("Sun", "sea", "beach")
    )


def test_sidecar_txt_tags_only(tmp_path: Path) -> None:
    image = tmp_path / "p.png"
    write(tmp_path / "p.png.txt", "tags: a\ntags: b, c\n")
    assert find_sidecar(image) == Annotations("", "", ("a", "b", "c"))


def test_no_sidecar(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"")
    (tmp_path / "photo.jpg.json").mkdir()  # a folder is not a sidecar
    assert find_sidecar(image) is None


def test_sidecar_not_the_image_itself(tmp_path: Path) -> None:
    image = write(tmp_path / "notes.txt", "I am the image")
    assert find_sidecar(image) is None


def test_sidecar_bad_json(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    side = write(tmp_path / "photo.json", "{not json")
    with pytest.raises(AnnotationError, match="not valid JSON") as info:
        find_sidecar(image)
    assert str(side) in str(info.value)


def test_sidecar_json_not_object(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    write(tmp_path / "photo.json", '["a"]')
    with pytest.raises(AnnotationError, match="expected a JSON object"):
        find_sidecar(image)


def test_sidecar_json_nul_rejected(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    side = write(tmp_path / "photo.json", json.dumps({"title": "a\u0000b"}))
    with pytest.raises(AnnotationError, match="NUL") as info:
        find_sidecar(image)
    assert str(side) in str(info.value)


def test_sidecar_txt_nul_rejected(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    write(tmp_path / "photo.txt", "Title\nbad\x00description\n")
    with pytest.raises(AnnotationError, match="NUL"):
        find_sidecar(image)


def test_sidecar_not_utf8(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    side = tmp_path / "photo.txt"
    side.write_bytes("Café".encode("latin-1"))
    with pytest.raises(AnnotationError, match="cannot read sidecar") as info:
        find_sidecar(image)
    assert str(side) in str(info.value)
