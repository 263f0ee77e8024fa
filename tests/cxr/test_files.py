"""cxr.files: an atomic write leaves the old content or the new, never a torn file or folder."""
from __future__ import annotations

import pytest

from cxr.files import atomic_directory, atomic_file, write_text_atomic


def test_a_failed_file_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "a" / "f.txt"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_file(path, "w", encoding="utf-8") as handle:
        handle.write("half of the new")
        raise RuntimeError("killed")
    assert path.read_text() == "old" and sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]
    with atomic_file(path, "wb", durable=False) as handle:
        handle.write(b"new")
    assert path.read_bytes() == b"new"


def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError("killed")
    assert [p.name for p in target.iterdir()] == ["a"]
    with atomic_directory(target) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
