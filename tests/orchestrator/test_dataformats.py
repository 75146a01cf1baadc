"""The three data set formats, parsed from a zip and from a folder; every bad row is named."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from orchestrator.dataformats import (
    DirectorySource,
    ImagePart,
    ParsedDataset,
    Turn,
    ZipSource,
    read_dataset,
)
from orchestrator.dataset_archive import extract_dataset
from orchestrator.errors import InvalidDataset


def png(size: tuple[int, int] = (64, 64), color: str = "white") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def jsonl(*rows: Any) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()


def make_zip(files: dict[str, bytes], extra: Sequence[tuple[str, bytes]] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in [*files.items(), *extra]:
            archive.writestr(name, data)
    return buffer.getvalue()


def read(data: bytes, *, max_pixels: int | None = 10_000, max_images: int = 100) -> ParsedDataset:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return read_dataset(ZipSource(archive), max_pixels=max_pixels, max_images=max_images)


def rejected(data: bytes, **kwargs: Any) -> InvalidDataset:
    with pytest.raises(InvalidDataset) as excinfo:
        read(data, **kwargs)
    return excinfo.value


def row(user: str, answer: str, images: list[str]) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
        "images": images,
    }


def test_annotations_json_with_pair_lists() -> None:
    qa = {"question": " Which part? ", "answer": "the chip "}
    data = make_zip(
        {
            "d/annotations.json": json.dumps({"b.png": qa, "a.png": [qa, qa]}).encode(),
            "d/images/a.png": png(),
            "d/images/b.png": png(),
        }
    )
    dataset = read(data)
    assert (dataset.format, dataset.num_images, dataset.root) == ("annotations_json", 2, "d/")
    assert [s.id for s in dataset.samples] == ["a.png[0]", "a.png[1]", "b.png"]
    sample = dataset.samples[2]
    assert [i.name for i in sample.images] == ["b.png"]
    assert sample.turns == (
        Turn("user", (ImagePart(0), "Which part?")),
        Turn("assistant", ("the chip",)),
    )


def test_messages_jsonl_multi_image_multi_turn() -> None:
    rows = jsonl(
        {
            "messages": [
                {"role": "system", "content": "You inspect boards."},
                {"role": "user", "content": "<image><image>Which differs?"},
                {"role": "assistant", "content": "the second"},
                {"role": "user", "content": "Where?"},
                {"role": "assistant", "content": "top left"},
            ],
            "images": ["imgs/a.png", "imgs\\b.png"],
        },
        "",  # blank lines are allowed
        row("<image>What is it?", "a board", ["imgs/a.png"]),
    )
    dataset = read(
        make_zip(
            {
                "set/train.jsonl": rows,
                "set/imgs/a.png": png(),
                "set/imgs/b.png": png(color="red"),
                "set/dataset_info.json": b"{}",
            }
        )
    )
    assert (dataset.format, dataset.num_images, dataset.root) == ("messages", 2, "set/")
    first, second = dataset.samples
    assert (first.id, second.id) == ("train.jsonl:1", "train.jsonl:3")
    assert [i.name for i in first.images] == ["imgs/a.png", "imgs/b.png"]
    assert [t.role for t in first.turns] == ["system", "user", "assistant", "user", "assistant"]
    assert first.turns[1].parts == (ImagePart(0), ImagePart(1), "Which differs?")
    assert first.images[0].data is second.images[0].data  # read once, shared


def test_messages_json_list_at_the_root() -> None:
    rows = json.dumps([row("<image>Q1", "A1", ["a.png"]), row("Q2 <image>", "A2", ["a.png"])])
    dataset = read(make_zip({"data.json": rows.encode(), "a.png": png()}))
    assert dataset.format == "messages"
    assert [s.id for s in dataset.samples] == ["data.json[0]", "data.json[1]"]
    assert dataset.samples[1].turns[0].parts == ("Q2", ImagePart(0))


def test_openai_chat_with_embedded_images() -> None:
    image = png(color="blue")
    rows = jsonl(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Which colour?"},
                        {"type": "image_url", "image_url": {"url": data_url(image)}},
                    ],
                },
                {"role": "assistant", "content": "green", "weight": 0},
                {"role": "user", "content": "Really?"},
                {"role": "assistant", "content": "blue"},
            ]
        }
    )
    dataset = read(make_zip({"chat.jsonl": rows}))
    assert (dataset.format, dataset.num_images) == ("openai_chat", 1)
    (sample,) = dataset.samples
    assert sample.images[0].data == image and sample.images[0].name == "chat.jsonl:1#image0"
    assert sample.turns[1].parts == ("Which colour?", ImagePart(0))
    assert [t.train for t in sample.turns if t.role == "assistant"] == [False, True]


def _ask(url: str) -> dict[str, Any]:
    question = [{"type": "text", "text": "Which colour?"}, {"type": "image_url", "image_url": url}]
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "blue"},
        ]
    }


def test_openai_chat_may_name_image_files_of_the_data_set() -> None:
    image = png(color="blue")
    rows = jsonl(_ask("images/a.png"), _ask("images/a.png"), _ask(data_url(image)))
    dataset = read(make_zip({"d/chat.jsonl": rows, "d/images/a.png": image}))
    assert (dataset.format, len(dataset.samples), dataset.num_images) == ("openai_chat", 3, 2)
    assert dataset.samples[0].images[0].name == "images/a.png"
    assert dataset.samples[0].images[0].data == image

    error = rejected(
        make_zip(
            {"chat.jsonl": jsonl(_ask("images/missing.png"), _ask("../a.png"), _ask("file:a.png"))}
        )
    )
    assert [(d["param"], d["code"]) for d in error.details or []] == [
        ("chat.jsonl:1", "missing_image"),
        ("chat.jsonl:2", "invalid_row"),
        ("chat.jsonl:3", "unsupported_image_url"),
    ]


def test_every_bad_row_is_listed() -> None:
    rows = jsonl(
        row("<image>ok", "fine", ["good.png"]),
        row("<image>", "x", ["good.png"]),  # empty question
        row("<image>Q", " ", ["good.png"]),  # empty answer
        row("<image>Q", "A", ["gone.png"]),  # missing image
        row("<image>Q", "A", ["broken.png"]),  # unreadable image
        row("<image><image>Q", "A", ["good.png"]),  # two tags, one image
        row("<image>Q", "A", ["huge.png"]),  # over the pixel limit
        '{"messages": [',  # not JSON
        row("<image>Q", "A", ["../outside.png"]),  # leaves the data set
    )
    error = rejected(
        make_zip(
            {
                "data.jsonl": rows,
                "good.png": png(),
                "broken.png": b"nope",
                "huge.png": png((200, 100)),
            }
        )
    )
    details = error.details or []
    found = [(d["param"], d["code"]) for d in details]
    assert found == [
        ("data.jsonl:2", "empty_question"),
        ("data.jsonl:3", "empty_answer"),
        ("data.jsonl:4", "missing_image"),
        ("broken.png", "invalid_image"),
        ("data.jsonl:6", "image_tag_mismatch"),
        ("huge.png", "image_too_large"),
        ("data.jsonl:8", "invalid_json"),
        ("data.jsonl:9", "invalid_row"),
    ]
    assert details[6]["line"] == 8 and "line 8" in details[6]["message"]
    assert (error.param, error.code) == ("data.jsonl:2", "empty_question")
    assert error.message.startswith("8 problems in the data set")
    assert "200x100" in details[5]["message"]


def test_annotations_problems_keep_their_field_params() -> None:
    qa = {"question": "Q", "answer": "A"}
    annotations = {
        "a.png": {"question": "", "answer": "A"},
        "b.png": [qa, {"question": "Q"}],
        "c.png": qa,
        "d.png": qa,
    }
    error = rejected(
        make_zip(
            {
                "annotations.json": json.dumps(annotations).encode(),
                "images/a.png": png(),
                "images/b.png": png(),
                "images/d.png": b"not an image",
            }
        )
    )
    assert [(d["param"], d["code"]) for d in error.details or []] == [
        ("a.png.question", "empty_question"),
        ("b.png[1].answer", "empty_answer"),
        ("c.png", "missing_image"),
        ("d.png", "invalid_image"),
    ]


@pytest.mark.filterwarnings("ignore:Duplicate name")  # the zip is built broken on purpose
def test_duplicate_file_names_are_refused() -> None:
    raw = b'{"a.png": {"question": "Q", "answer": "A"}, "a.png": {"question": "Q", "answer": "B"}}'
    files = {
        "annotations.json": raw,
        "images/a.png": png(),
        "images/b.png": png(),
        "images/B.PNG": png(),
    }
    error = rejected(make_zip(files, extra=[("images/a.png", png())]))
    assert [(d["param"], d["code"]) for d in error.details or []] == [
        ("images/a.png", "duplicate_file"),  # twice in the zip
        ("images/B.PNG", "duplicate_file"),  # B.PNG and b.png clash on macOS and Windows
        ("a.png", "duplicate_file"),  # twice in annotations.json
    ]


def test_openai_chat_images_must_be_embedded() -> None:
    def user(url: str) -> dict[str, Any]:
        return {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Q"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                },
                {"role": "assistant", "content": "A"},
            ]
        }

    rows = jsonl(
        user("https://example.com/a.png"),
        user("data:image/png;base64,%%%"),
        user(data_url(png())),
        {"messages": [{"role": "user", "content": "Q"}]},
    )
    error = rejected(make_zip({"ft.jsonl": rows}))
    assert [(d["param"], d["code"]) for d in error.details or []] == [
        ("ft.jsonl:1", "unsupported_image_url"),
        ("ft.jsonl:2#image0", "invalid_image"),
        ("ft.jsonl:4", "missing_image"),
        ("ft.jsonl:4", "empty_answer"),
    ]


@pytest.mark.parametrize(
    ("files", "code", "param"),
    [
        ({"a.png": png()}, "missing_annotations", "file"),
        ({"a.jsonl": b"", "b.jsonl": b""}, "invalid_dataset", "b.jsonl"),
        ({"x/a.jsonl": b"", "y/b.jsonl": b""}, "invalid_dataset", "file"),
        ({"a.json": b'{"messages": []}'}, "invalid_dataset", "a.json"),
        (
            {"a.jsonl": jsonl(row("<image>Q", "A", ["a.png"])), "a.png": png()},
            "too_many_images",
            "a.jsonl",
        ),
    ],
    ids=["no-data-file", "two-data-files", "two-folders", "json-not-a-list", "too-many-images"],
)
def test_data_set_level_problems(files: dict[str, bytes], code: str, param: str) -> None:
    error = rejected(make_zip(files), max_images=0)
    assert (error.code, error.param) == (code, param)


def test_extracted_folder_reads_like_the_zip(tmp_path: Path) -> None:
    data = make_zip(
        {
            "set/data.jsonl": jsonl(row("<image>Q", "A", ["i/a.png"])),
            "set/i/a.png": png(),
            "__MACOSX/set/._data.jsonl": b"junk",
        }
    )
    zip_path = tmp_path / "d.zip"
    zip_path.write_bytes(data)
    root = extract_dataset(zip_path, tmp_path / "out")
    assert root == tmp_path / "out" / "set"
    from_dir = read_dataset(DirectorySource(root))
    assert from_dir.samples == read(data).samples


def test_too_many_images_is_refused_before_any_image_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A data set over the limit costs no decoding: 2,000 photos would otherwise be read in
    full before the count says no."""
    names = [f"img{i}.png" for i in range(3)]
    rows = [row("<image>Q", "A", [name]) for name in names]
    files = {"a.jsonl": jsonl(*rows), **{name: png() for name in names}}
    opened: list[object] = []
    real_open = Image.open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    error = rejected(make_zip(files), max_images=2)
    assert (error.code, error.param) == ("too_many_images", "a.jsonl")
    assert "3 images" in error.message and "the limit is 2" in error.message
    assert opened == []
