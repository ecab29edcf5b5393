import json
import os

import pytest

from seedkit.data.manifest import ClipRecord, Manifest, ManifestWriter, UnsafePathError, resolve_inside


def test_round_trip_jsonl(tmp_path):
    records = [
        ClipRecord(id="a", path="shard-0/a.mp4", num_frames=9, height=32, width=48, caption="a red circle",
                   scores={"motion": 1.5}, metadata={"scene": {"background": "black"}}),
        ClipRecord(id="b", path="b.png", media="image", num_frames=1),
    ]
    path = Manifest(records, root=tmp_path).write(tmp_path / "manifest.jsonl")
    loaded = Manifest.read(path)
    assert [r.to_dict() for r in loaded] == [r.to_dict() for r in records]
    assert loaded.root == tmp_path


@pytest.mark.parametrize("bad", ["../escape.mp4", "/etc/passwd", "a/../../b.mp4", "C:/x.mp4", "a\\b.mp4", ""])
def test_rejects_paths_that_escape_by_spelling(bad):
    with pytest.raises(UnsafePathError):
        ClipRecord(id="x", path=bad)


def test_rejects_symlink_escape(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"x")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafePathError, match="outside the root"):
        resolve_inside(root, "link/secret.mp4")
    (root / "inside.mp4").write_bytes(b"x")
    assert resolve_inside(root, "inside.mp4") == (root / "inside.mp4").resolve()


def test_reading_a_manifest_with_an_escaping_line_fails(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "x", "path": "../x.mp4"}) + "\n")
    with pytest.raises(UnsafePathError):
        Manifest.read(tmp_path / "m.jsonl")


def test_unknown_fields_and_duplicate_ids_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown manifest fields"):
        ClipRecord.from_dict({"id": "x", "path": "x.mp4", "colour": "red"})
    with pytest.raises(ValueError, match="duplicate ids"):
        Manifest([ClipRecord(id="x", path="a.mp4"), ClipRecord(id="x", path="b.mp4")])


def test_writer_resumes_and_drops_a_truncated_tail(tmp_path):
    path = tmp_path / "m.jsonl"
    with ManifestWriter(path) as writer:
        writer.append(ClipRecord(id="a", path="a.mp4"))
        writer.append(ClipRecord(id="b", path="b.mp4"))
    with open(path, "a") as handle:  # an interrupted writer leaves half a line
        handle.write('{"id": "c", "pa')
    assert [r.id for r in Manifest.read(path)] == ["a", "b"]
    with ManifestWriter(path) as writer:
        assert writer.done_ids == {"a", "b"}
        with pytest.raises(ValueError, match="already"):
            writer.append(ClipRecord(id="a", path="a.mp4"))
        writer.append(ClipRecord(id="c", path="c.mp4"))
    assert [r.id for r in Manifest.read(path)] == ["a", "b", "c"]


def test_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet manifests are the optional 'curate' extra")
    records = [ClipRecord(id="a", path="a.mp4", scores={"m": 1.0}, metadata={"k": [1, 2]})]
    Manifest(records).write(tmp_path / "m.parquet")
    assert Manifest.read(tmp_path / "m.parquet").records[0].to_dict() == records[0].to_dict()
