"""Curation runs that survive crashing and hanging workers, and resumed runs that never redo or duplicate work."""

from __future__ import annotations

import json

from data_pipelines.executors import LocalExecutor
from data_pipelines.pipeline import CurationRun, SourceProcessor, SourceTask, discover_sources
from seedkit.data.manifest import Manifest


def test_crashing_and_hanging_workers_are_replaced_and_the_run_goes_on(tmp_path, multi_shot_video, small_config):
    inputs = tmp_path / "in"
    for index, name in enumerate(["a_ok", "b_crash", "c_ok", "d_hang", "e_ok", "f_ok"]):
        multi_shot_video(inputs / f"{name}.mp4", seed=10 + index, shot_frames=(24,))
    config = small_config(timeout=15, debug_crash_on=["b_crash"], debug_hang_on=["d_hang"])
    config.dedup.enabled = False
    out = tmp_path / "out"
    summary = CurationRun(inputs, out, config, progress=False).run()
    assert summary.failures == {"worker_crashed": 1, "timeout": 1}
    assert "exited with code 13" in summary.failed_sources["b_crash.mp4"]
    assert "timeout" in summary.failed_sources["d_hang.mp4"]
    assert summary.clips_kept == 4  # one clip from each healthy file, including those after the crash and the hang


def test_executor_returns_decode_failures_as_results_not_crashes(tmp_path, multi_shot_video, small_config):
    good = multi_shot_video(tmp_path / "in" / "good.mp4", seed=20, shot_frames=(24,))
    (tmp_path / "in" / "bad.mp4").write_bytes(b"garbage" * 100)
    sources, _, _ = discover_sources(tmp_path / "in")
    config = small_config()
    config.dedup.enabled = False
    tasks = [(source.relative, SourceTask(source, str(tmp_path / "out"))) for source in sources]
    outcomes = {o.key: o for o in LocalExecutor(workers=1, timeout=60).run(SourceProcessor(config), tasks)}
    assert outcomes["good.mp4"].ok and outcomes["good.mp4"].value.ok and len(outcomes["good.mp4"].value.records) == 1
    assert outcomes["bad.mp4"].ok and not outcomes["bad.mp4"].value.ok
    assert outcomes["bad.mp4"].value.reason == "not_a_video"
    assert good.exists()


def test_resume_skips_done_sources_and_never_duplicates_records(tmp_path, multi_shot_video, small_config):
    inputs = tmp_path / "in"
    names = [f"v{index}.mp4" for index in range(4)]
    for index, name in enumerate(names):
        multi_shot_video(inputs / name, seed=30 + index, shot_frames=(24, 24))
    first_half = inputs / "half.txt"
    first_half.write_text("\n".join(names[:2]))
    everything = inputs / "all.txt"
    everything.write_text("\n".join(names))
    config = small_config()
    out = tmp_path / "out"

    first = CurationRun(first_half, out, config, progress=False).run()
    assert first.processed_this_run == 2 and first.clips_kept == 4
    # Simulate a run killed after v1's records reached the manifest but before its status file was written.
    status_files = {json.loads(p.read_text())["source"]: p for p in (out / "status").glob("*.json")}
    status_files["v1.mp4"].unlink()
    second = CurationRun(everything, out, config, progress=False).run()
    assert second.processed_this_run == 3 and second.skipped_already_done == 1
    assert second.clips_kept == 8 and second.dropped == {}
    ids = [record.id for record in Manifest.read(out / "manifest.jsonl")]
    assert len(ids) == 8 == len(set(ids))
    third = CurationRun(everything, out, config, progress=False).run()
    assert third.processed_this_run == 0 and third.skipped_already_done == 4 and third.clips_kept == 8


def test_failed_sources_are_retried_only_when_asked(tmp_path, multi_shot_video, small_config):
    inputs = tmp_path / "in"
    multi_shot_video(inputs / "flaky.mp4", seed=40, shot_frames=(24,))
    config = small_config(debug_crash_on=["flaky"])
    out = tmp_path / "out"
    assert CurationRun(inputs, out, config, progress=False).run().failures == {"worker_crashed": 1}
    config.executor.debug_crash_on = []
    assert CurationRun(inputs, out, config, progress=False).run().processed_this_run == 0
    retried = CurationRun(inputs, out, config, retry_failed=True, progress=False).run()
    assert retried.processed_this_run == 1 and retried.failures == {} and retried.clips_kept == 1
