"""Curation and captioning of raw footage into training clips (``seedkit curate``).

Modules, in pipeline order:

* :mod:`~data_pipelines.stages`: ``ClipSample`` (a clip in flight), ``ClipStage`` / ``DropClip`` / ``FilterStage``.
* :mod:`~data_pipelines.decode`: PyAV probing and frame-accurate, variable-frame-rate-aware decoding (decord optional).
* :mod:`~data_pipelines.shots`: TransNetV2 and HSV-histogram shot boundary detectors, cut matching.
* :mod:`~data_pipelines.split`: trimming next to cuts and fades, duration limits, windows.
* :mod:`~data_pipelines.filters`, :mod:`~data_pipelines.aesthetic`: per-clip quality filters.
* :mod:`~data_pipelines.dedup`: dataset-wide near-duplicate detection.
* :mod:`~data_pipelines.captioning`: dense captions with a vision-language model.
* :mod:`~data_pipelines.shard`: clip files or frame ranges, manifest, per-source status files.
* :mod:`~data_pipelines.executors`: local process pool (crash and timeout isolation) and Ray.
* :mod:`~data_pipelines.pipeline`: the run (``curate(input, out_dir, config)``); :mod:`~data_pipelines.cli`.

Submodules are imported on use so that ``import data_pipelines`` stays light.
"""
