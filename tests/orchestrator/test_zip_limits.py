"""Zip bombs are refused by what the archive declares and by what it really inflates to, both
in the API's upload check and in the worker's extraction."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from orchestrator.dataset_archive import extract_dataset, validate_dataset_zip
from orchestrator.errors import InvalidDataset
from orchestrator.zip_limits import Inflater, ZipLimits

KIB = 1024
SMALL = ZipLimits(
    max_members=8,
    max_member_bytes=256 * KIB,
    max_data_file_bytes=64 * KIB,
    max_total_bytes=512 * KIB,
)
QA = {"question": "Which part?", "answer": "the chip"}


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def declare_size(data: bytes, name: str, size: int) -> bytes:
    """The zip with `name`'s uncompressed size, as its central directory states it, replaced."""
    record = b"PK\x01\x02"
    at = data.index(record)
    while data[at + 46 : at + 46 + len(name)] != name.encode():
        at = data.index(record, at + 1)
    return data[: at + 24] + struct.pack("<L", size) + data[at + 28 :]


def annotations_for(*images: str) -> bytes:
    return json.dumps({image: QA for image in images}).encode()


def refused(data: bytes, limits: ZipLimits = SMALL) -> InvalidDataset:
    with pytest.raises(InvalidDataset) as caught:
        validate_dataset_zip(data, max_pixels=4096 * 4096, max_images=100, limits=limits)
    return caught.value


def test_a_member_declared_over_the_limit_is_refused_by_name() -> None:
    data = make_zip({"annotations.json": annotations_for("a.png"), "images/a.png": png()})
    error = refused(declare_size(data, "images/a.png", 1024**3), ZipLimits())
    assert (error.code, error.param) == ("dataset_too_large", "images/a.png")
    assert str(ZipLimits().max_member_bytes) in error.message


def test_a_member_that_inflates_past_its_declared_size_is_refused() -> None:
    # The header claims 100 bytes; the stream holds a megabyte.
    data = make_zip({"annotations.json": annotations_for("a.png"), "images/a.png": b"\0" * 1024**2})
    error = refused(declare_size(data, "images/a.png", 100))
    assert error.code in ("dataset_too_large", "invalid_dataset")
    assert error.param in ("images/a.png", "file")


def test_json_data_file_over_its_limit_is_refused() -> None:
    padded = b"{" + b" " * (128 * KIB) + b'"a.png": ' + json.dumps(QA).encode() + b"}"
    error = refused(make_zip({"annotations.json": padded, "images/a.png": png()}))
    assert (error.code, error.param) == ("dataset_too_large", "annotations.json")


def test_members_over_the_total_are_refused() -> None:
    images = {f"images/{i}.png": b"\0" * 200 * KIB for i in range(3)}  # each under 256 KiB
    error = refused(
        make_zip({"annotations.json": annotations_for(*[f"{i}.png" for i in range(3)]), **images})
    )
    assert (error.code, error.param) == ("dataset_too_large", "file")


def test_too_many_members_are_refused_before_the_directory_is_read() -> None:
    files = {f"images/{i}.png": png() for i in range(9)}
    error = refused(make_zip({"annotations.json": annotations_for("0.png"), **files}))
    assert (error.code, error.param) == ("dataset_too_large", "file")
    assert f"at most {SMALL.max_members}" in error.message


@pytest.mark.parametrize(("sizes", "cap"), [((300,), "member"), ((200, 200, 200), "total")])
def test_inflating_stops_at_the_limit_whatever_the_headers_say(
    sizes: tuple[int, ...], cap: str
) -> None:
    """The counted bytes decide, even where no declared size was checked first."""
    data = make_zip({f"m{i}": b"\0" * size * KIB for i, size in enumerate(sizes)})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        inflater = Inflater(archive, SMALL)
        with pytest.raises(InvalidDataset) as caught:
            for i in range(len(sizes)):
                inflater.read(f"m{i}")
    assert caught.value.code == "dataset_too_large"
    assert caught.value.param == (f"m{len(sizes) - 1}" if cap == "member" else "file")


def test_worker_extraction_refuses_a_json_bomb(tmp_path: Path) -> None:
    padded = b"{" + b" " * (128 * KIB) + b'"a.png": ' + json.dumps(QA).encode() + b"}"
    zip_path = tmp_path / "d.zip"
    zip_path.write_bytes(make_zip({"annotations.json": padded, "images/a.png": png()}))
    with pytest.raises(InvalidDataset) as caught:
        extract_dataset(zip_path, tmp_path / "out", SMALL)
    assert (caught.value.code, caught.value.param) == ("dataset_too_large", "annotations.json")


def test_worker_extraction_stops_at_the_total(tmp_path: Path) -> None:
    zip_path = tmp_path / "d.zip"
    zip_path.write_bytes(
        make_zip(
            {
                "annotations.json": annotations_for("a.png"),
                "images/a.png": b"\0" * 200 * KIB,
                "images/b.png": b"\0" * 200 * KIB,
                "images/c.png": b"\0" * 200 * KIB,
            }
        )
    )
    with pytest.raises(InvalidDataset) as caught:
        extract_dataset(zip_path, tmp_path / "out", SMALL)
    assert caught.value.code == "dataset_too_large"
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written <= SMALL.max_total_bytes


def test_a_data_set_within_the_limits_extracts(tmp_path: Path) -> None:
    zip_path = tmp_path / "d.zip"
    zip_path.write_bytes(
        make_zip({"set/annotations.json": annotations_for("a.png"), "set/images/a.png": png()})
    )
    root = extract_dataset(zip_path, tmp_path / "out", SMALL)
    assert (root / "images" / "a.png").read_bytes() == png()
