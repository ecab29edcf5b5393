"""End-to-end debug recipe: ShapesWorld data -> VAE -> latent cache -> transformer -> pipeline -> ShapesBench.

    python recipes/e2e_debug.py --out runs/e2e-debug                    # about ten minutes on a laptop CPU
    python recipes/e2e_debug.py --out runs/e2e-debug --minutes-budget 5  # fewer training steps
    python recipes/e2e_debug.py --out /tmp/smoke --preset smoke          # seconds: the test's size

Stages, each timed and logged, each recorded in ``<out>/stages.json`` when it finishes (re-running the command
skips finished stages, and the training stages resume from their newest checkpoint):

1. ``shapes``: write a single-object ShapesWorld set (images + clips) with :mod:`seedkit.data.shapes_writers`.
2. ``vae``: train the VAE with the VAE recipe machinery (``recipes/vae-e2e-debug.yaml``,
   :mod:`seedkit.training.vae_trainer`); exported with measured latent shift / scale.
3. ``cache``: encode the set into a latent cache (VAE posterior means + MiniLM prompt embeddings).
4. ``transformer``: train the transformer on the cache with the transformer recipe machinery
   (``recipes/e2e-debug.yaml``, :mod:`seedkit.training.recipes`).
5. ``export``: a diffusers-layout ``SeedkitTextToVideoPipeline`` directory at ``<out>/pipeline``.
6. ``bench``: ShapesBench (single-object suite, resized to the training size) on that directory; the report goes
   to ``<out>/shapesbench/report.json`` (+ ``report.html``).

``--minutes-budget`` scales both training stages' step counts linearly from the preset's (sized for about ten
minutes: the laptop preset took 11 minutes on a 2-core CPU shared with other jobs, with ``--threads 1``); the other
stages take a fixed, small time. Expect poor samples from a ten-minute run: the point is
that every stage of the real system runs, end to end, on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

RECIPES_DIR = Path(__file__).resolve().parent
STAGES = ("shapes", "vae", "cache", "transformer", "export", "bench")
REFERENCE_MINUTES = 10.0


@dataclass(frozen=True)
class Preset:
    """Sizes of one end-to-end run. Step counts are for ``REFERENCE_MINUTES`` and scale with the budget."""

    num_clips: int
    height: int
    width: int
    frames: tuple[int, ...]
    image_fraction: float
    vae_steps: int
    vae_sizes: tuple[tuple[int, int, int], ...]
    vae_batch_size: int
    transformer_steps: int
    transformer_batch_size: int
    bench_suite: str
    bench_items: int
    bench_frames: int
    bench_steps: int
    bench_guidance: float
    trackers: tuple[str, ...] = ("tensorboard",)
    vae_statistics_samples: int = 32  # fresh samples the VAE export encodes to measure latent shift / scale
    transformer_overrides: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # Single-object 32x32 scenes: latents of 4x4 pixels per frame (2x2 transformer tokens) keep every stage cheap.
    "laptop": Preset(
        num_clips=256,
        height=32,
        width=32,
        frames=(5, 9),
        image_fraction=0.3,
        vae_steps=300,
        vae_sizes=((5, 32, 32), (1, 32, 32), (9, 32, 32)),
        vae_batch_size=4,
        transformer_steps=600,
        transformer_batch_size=8,
        bench_suite="single_object",
        bench_items=8,
        bench_frames=9,
        bench_steps=20,
        bench_guidance=4.0,
    ),
    # What the test runs: every stage at a toy size (a 1+1-block, width-32 transformer; a handful of steps).
    "smoke": Preset(
        num_clips=8,
        height=16,
        width=16,
        frames=(5,),
        image_fraction=0.25,
        vae_steps=2,
        vae_sizes=((5, 16, 16), (1, 16, 16)),
        vae_batch_size=2,
        transformer_steps=3,
        transformer_batch_size=2,
        bench_suite="single_object",
        bench_items=2,
        bench_frames=5,
        bench_steps=2,
        bench_guidance=2.0,
        trackers=(),
        vae_statistics_samples=4,
        transformer_overrides={
            "num_attention_heads": 2,
            "attention_head_dim": 16,
            "num_dual_layers": 1,
            "num_single_layers": 1,
            "rope_axes_dim": [4, 6, 6],
        },
    ),
}


def log(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


class StageLog:
    """``<out>/stages.json``: which stages finished, how long they took and what they produced."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"stages": {}}
        previous = self.data.get("settings")
        if previous is not None and previous != settings:
            raise ValueError(
                f"{path.parent} holds a run made with other settings ({previous}); this run asks for {settings}. "
                "Use another --out directory (or delete this one) instead of mixing the two."
            )
        self.data["settings"] = settings
        self._write()

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def result(self, stage: str) -> dict[str, Any]:
        return self.data["stages"][stage]

    def record(self, stage: str, seconds: float, result: dict[str, Any]) -> None:
        self.data["stages"][stage] = {"seconds": round(seconds, 2), **result}
        self._write()

    def _write(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self.data, indent=2))
        os.replace(temporary, self.path)


class EndToEndRun:
    """The six stages over one output directory (see the module docstring)."""

    def __init__(self, out: Path, preset_name: str, minutes_budget: float, seed: int = 0, progress: bool = True):
        if preset_name not in PRESETS:
            raise ValueError(f"unknown preset {preset_name!r}; valid presets: {', '.join(PRESETS)}")
        if minutes_budget <= 0:
            raise ValueError(f"--minutes-budget must be positive, got {minutes_budget}")
        self.out = out
        self.preset = PRESETS[preset_name]
        self.seed = seed
        self.progress = progress
        scale = minutes_budget / REFERENCE_MINUTES
        self.vae_steps = max(1, round(self.preset.vae_steps * scale))
        self.transformer_steps = max(1, round(self.preset.transformer_steps * scale))
        out.mkdir(parents=True, exist_ok=True)
        settings = {
            "preset": preset_name,
            "seed": seed,
            "vae_steps": self.vae_steps,
            "transformer_steps": self.transformer_steps,
        }
        self.stages = StageLog(out / "stages.json", settings)

    # --- paths ---------------------------------------------------------------------------------------------------
    @property
    def shapes_dir(self) -> Path:
        return self.out / "shapes"

    @property
    def vae_dir(self) -> Path:
        return self.out / "vae" / "final" / "vae"

    @property
    def pipeline_dir(self) -> Path:
        return self.out / "pipeline"

    @property
    def report_dir(self) -> Path:
        return self.out / "shapesbench"

    # --- configs -------------------------------------------------------------------------------------------------
    def _common_train_overrides(self) -> list[str]:
        return [
            f"train.seed={self.seed}",
            f"train.progress_bar={str(self.progress).lower()}",
            f"train.trackers={json.dumps(list(self.preset.trackers))}",
        ]

    def vae_config(self):
        from seedkit.training.config import VAERecipeConfig, load_config

        preset = self.preset
        overrides = [
            f"train.output_dir={self.out / 'vae'}",
            f"train.max_steps={self.vae_steps}",
            f"train.batch_size={preset.vae_batch_size}",
            f"train.checkpoint_every={max(1, min(100, self.vae_steps))}",
            f"data.sizes={json.dumps([list(size) for size in preset.vae_sizes])}",
            *self._common_train_overrides(),
        ]
        return load_config(RECIPES_DIR / "vae-e2e-debug.yaml", overrides, cls=VAERecipeConfig)

    def transformer_config(self):
        from seedkit.training.config import RecipeConfig, load_config

        preset = self.preset
        overrides = [
            f"model.vae_path={self.vae_dir}",
            f"model.transformer={json.dumps(preset.transformer_overrides)}",
            f"data.manifest={self.shapes_dir / 'manifest.jsonl'}",
            f"data.cache_dir={self.out / 'latent_cache'}",
            f"train.output_dir={self.out / 'transformer'}",
            f"train.max_steps={self.transformer_steps}",
            f"train.batch_size={preset.transformer_batch_size}",
            f"train.checkpoint_every={max(1, min(200, self.transformer_steps))}",
            *self._common_train_overrides(),
        ]
        return load_config(RECIPES_DIR / "e2e-debug.yaml", overrides, cls=RecipeConfig)

    # --- stages --------------------------------------------------------------------------------------------------
    def stage_shapes(self) -> dict[str, Any]:
        from seedkit.data.shapes_writers import write_shapes_dataset

        preset = self.preset
        summary = write_shapes_dataset(
            self.shapes_dir,
            num_clips=preset.num_clips,
            seed=self.seed,
            frames=list(preset.frames),
            sizes=[(preset.height, preset.width)],
            image_fraction=preset.image_fraction,
            max_objects=1,  # matches the single-object ShapesBench suite this run is scored on
            progress=self.progress,
        )
        return {"manifest": str(summary.manifest_path), "summary": str(summary)}

    def stage_vae(self) -> dict[str, Any]:
        from seedkit.training.vae_trainer import build_vae_trainer, export_vae

        config = self.vae_config()
        trainer = build_vae_trainer(config)
        trainer.train()
        path = export_vae(
            trainer,
            Path(config.train.output_dir) / "final",
            num_samples=self.preset.vae_statistics_samples,
            use_ema=config.ema.enabled,
        )
        trainer.end()
        return {
            "steps": trainer.state.step,
            "skipped_steps": trainer.state.skipped_steps,
            "final_loss": trainer.losses[-1] if trainer.losses else None,
            "vae": str(path),
        }

    def stage_cache(self) -> dict[str, Any]:
        from seedkit.data.latent_cache import LatentCache, build_latent_cache
        from seedkit.data.manifest import Manifest
        from seedkit.models import flavors
        from seedkit.models.autoencoder_causal import CausalVideoAutoencoder
        from seedkit.models.text_encoders import load_text_encoder

        config = self.transformer_config()
        text_encoder_name = config.model.text_encoder or flavors.get(config.model.flavor).text_encoder
        # The same calls recipes/train.py makes before training (seedkit.training.recipes.prepare_latent_cache), run
        # here as their own stage so the cache time is measured apart from training.
        build_latent_cache(
            Manifest.read(config.data.manifest),
            CausalVideoAutoencoder.from_pretrained(config.model.vae_path),
            load_text_encoder(text_encoder_name),
            config.data.cache_dir,
            batch_size=config.data.cache_batch_size,
            progress=self.progress,
        )
        cache = LatentCache(config.data.cache_dir)
        return {"cache_dir": config.data.cache_dir, "samples": len(cache), "text_encoder": text_encoder_name}

    def stage_transformer(self) -> dict[str, Any]:
        from seedkit.training.recipes import build_transformer_trainer, export_transformer

        config = self.transformer_config()
        trainer = build_transformer_trainer(config)  # finds the cache of stage 3 complete
        trainer.train()
        path = export_transformer(trainer, Path(config.train.output_dir) / "final", use_ema=config.ema.enabled)
        trainer.end()
        return {
            "steps": trainer.state.step,
            "skipped_steps": trainer.state.skipped_steps,
            "final_loss": trainer.losses[-1] if trainer.losses else None,
            "mean_loss_last_10": sum(trainer.losses[-10:]) / len(trainer.losses[-10:]) if trainer.losses else None,
            "transformer": str(path),
        }

    def stage_export(self) -> dict[str, Any]:
        from diffusers import FlowMatchEulerDiscreteScheduler

        from seedkit.models import flavors
        from seedkit.models.autoencoder_causal import CausalVideoAutoencoder
        from seedkit.models.text_encoders import TEXT_ENCODERS, load_text_encoder
        from seedkit.models.transformer_mmdit import SeedTransformer3DModel
        from seedkit.pipelines import SeedkitTextToVideoPipeline

        config = self.transformer_config()
        text_encoder_name = config.model.text_encoder or flavors.get(config.model.flavor).text_encoder
        prompt_encoder = load_text_encoder(text_encoder_name)
        pipeline = SeedkitTextToVideoPipeline(
            transformer=SeedTransformer3DModel.from_pretrained(self.out / "transformer" / "final" / "transformer"),
            vae=CausalVideoAutoencoder.from_pretrained(self.vae_dir),
            text_encoder=prompt_encoder.text_encoder,
            tokenizer=prompt_encoder.tokenizer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=config.task.shift),
            default_height=self.preset.height,
            default_width=self.preset.width,
            default_num_frames=max(self.preset.frames),
            # Prompts are truncated as the latent cache truncated them in training.
            max_sequence_length=TEXT_ENCODERS[text_encoder_name].max_sequence_length,
            text_encoder_name=text_encoder_name,
        )
        pipeline.save_model_directory(self.pipeline_dir)
        size_mb = sum(path.stat().st_size for path in self.pipeline_dir.rglob("*") if path.is_file()) / 1e6
        return {"pipeline": str(self.pipeline_dir), "size_mb": round(size_mb, 2)}

    def stage_bench(self) -> dict[str, Any]:
        from evaluation.shapesbench.runner import PipelineGenerator, run_shapesbench
        from evaluation.shapesbench.suites import load_suite

        preset = self.preset
        items = [
            item.with_geometry(preset.height, preset.width, None if item.num_frames == 1 else preset.bench_frames)
            for item in load_suite(preset.bench_suite)[: preset.bench_items]
        ]
        generator = PipelineGenerator(self.pipeline_dir, preset.bench_steps, preset.bench_guidance, device="cpu")
        settings = {
            "model": str(self.pipeline_dir),
            "steps": preset.bench_steps,
            "guidance": preset.bench_guidance,
            "suites": [preset.bench_suite],
            "height": preset.height,
            "width": preset.width,
            "frames": preset.bench_frames,
        }
        report = run_shapesbench(generator, items, self.report_dir, settings=settings, progress=self.progress)
        return {
            "report": str(self.report_dir / "report.json"),
            "metrics": report.summary["metrics"],
            "items": report.summary["items"],
            "failed": report.summary["failed"],
        }

    # --- driver --------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        functions: dict[str, Callable[[], dict[str, Any]]] = {
            "shapes": self.stage_shapes,
            "vae": self.stage_vae,
            "cache": self.stage_cache,
            "transformer": self.stage_transformer,
            "export": self.stage_export,
            "bench": self.stage_bench,
        }
        log(f"output {self.out}; VAE {self.vae_steps} steps, transformer {self.transformer_steps} steps")
        for index, stage in enumerate(STAGES, start=1):
            if self.stages.done(stage):
                log(
                    f"{index}/{len(STAGES)} {stage}: done earlier "
                    f"({self.stages.result(stage)['seconds']:.1f} s), skipped"
                )
                continue
            log(f"{index}/{len(STAGES)} {stage}: start")
            start = time.perf_counter()
            result = functions[stage]()
            seconds = time.perf_counter() - start
            self.stages.record(stage, seconds, result)
            log(f"{index}/{len(STAGES)} {stage}: done in {seconds:.1f} s")
        return self.stages.data


def summarize(data: dict[str, Any]) -> str:
    stages = data["stages"]
    lines = ["stage timings:"]
    lines += [f"  {stage:<12} {stages[stage]['seconds']:8.1f} s" for stage in STAGES if stage in stages]
    lines.append(f"  {'total':<12} {sum(stages[stage]['seconds'] for stage in STAGES if stage in stages):8.1f} s")
    for stage in ("vae", "transformer"):
        if stage in stages:
            lines.append(f"{stage}: {stages[stage]['steps']} steps, final loss {stages[stage]['final_loss']:.4f}")
    if "bench" in stages:
        bench = stages["bench"]
        metrics = {name: value for name, value in bench["metrics"].items() if value is not None}
        lines.append(f"ShapesBench report: {bench['report']} ({bench['items']} items, {bench['failed']} failed)")
        lines.append("  " + ", ".join(f"{name} {value:.3f}" for name, value in metrics.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="run directory (re-run to resume)")
    parser.add_argument("--minutes-budget", type=float, default=REFERENCE_MINUTES,
                        help=f"scales the training steps from the preset's {REFERENCE_MINUTES:g}-minute sizing")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="laptop",
                        help="laptop: the ten-minute run (default); smoke: toy sizes for tests")
    parser.add_argument("--seed", type=int, default=0, help="dataset and training seed")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice; on a CPU shared with other jobs, "
                             "1 thread avoids oversubscription and can be several times faster)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    try:
        run = EndToEndRun(args.out, args.preset, args.minutes_budget, seed=args.seed, progress=not args.no_progress)
    except ValueError as error:
        parser.error(str(error))
    data = run.run()
    print(summarize(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
