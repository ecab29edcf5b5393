"""ShapesBench HTML report: summary table, one bar chart per metric (inline SVG) and a contact sheet of samples."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics import HIGHER_IS_BETTER, METRIC_NAMES

if TYPE_CHECKING:
    from .runner import BenchReport

METRIC_LABELS = {
    "color": "colour accuracy",
    "shape": "shape accuracy",
    "size": "size accuracy",
    "count": "count accuracy",
    "motion": "motion accuracy",
    "persistence": "object persistence",
    "continuity": "temporal continuity",
    "consistency": "multi-shot consistency",
    "pitch_color": "pitch-to-colour accuracy",
    "first_frame_psnr": "first-frame PSNR (dB)",
    "av_offset_ms": "audio-video offset (ms)",
}
_BAR_WIDTH = 34
_CHART_HEIGHT = 140


def _format(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def bar_chart_svg(metric: str, values: dict[str, float | None]) -> str:
    """An inline SVG bar chart of one metric, one bar per suite (accuracies on a fixed [0, 1] axis)."""
    names = list(values)
    accuracy = metric not in ("first_frame_psnr", "av_offset_ms")
    finite = [v for v in values.values() if v is not None]
    top = 1.0 if accuracy else max(finite + [1e-9]) * 1.1
    width = 60 + len(names) * (_BAR_WIDTH + 16)
    height = _CHART_HEIGHT + 70
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(METRIC_LABELS.get(metric, metric))}">',
        f'<text x="4" y="14" font-size="12" font-weight="bold">{html.escape(METRIC_LABELS.get(metric, metric))}'
        f'{"" if HIGHER_IS_BETTER[metric] else " (lower is better)"}</text>',
        f'<line x1="40" y1="{20 + _CHART_HEIGHT}" x2="{width - 4}" y2="{20 + _CHART_HEIGHT}" stroke="#444"/>',
        f'<text x="2" y="26" font-size="10">{_format(top)}</text>',
        f'<text x="2" y="{20 + _CHART_HEIGHT}" font-size="10">0</text>',
    ]
    for index, name in enumerate(names):
        value = values[name]
        x = 48 + index * (_BAR_WIDTH + 16)
        if value is not None:
            bar = max(0.0, min(1.0, value / top)) * _CHART_HEIGHT
            parts.append(
                f'<rect x="{x}" y="{20 + _CHART_HEIGHT - bar:.1f}" width="{_BAR_WIDTH}" height="{bar:.1f}" '
                f'fill="#4a7bd0"><title>{html.escape(name)}: {_format(value)}</title></rect>'
            )
        parts.append(
            f'<text x="{x + _BAR_WIDTH / 2}" y="{14 + _CHART_HEIGHT - (bar if value is not None else 0):.1f}" '
            f'font-size="9" text-anchor="middle">{_format(value)}</text>'
        )
        parts.append(
            f'<text x="{x + _BAR_WIDTH / 2}" y="{34 + _CHART_HEIGHT}" font-size="9" text-anchor="end" '
            f'transform="rotate(-35 {x + _BAR_WIDTH / 2} {34 + _CHART_HEIGHT})">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _interval(interval: list[float] | None) -> str:
    """A table cell's 95% bootstrap interval, under its mean."""
    if interval is None:
        return ""
    return f"<br><small title='95% bootstrap interval over items'>{interval[0]:.2f}-{interval[1]:.2f}</small>"


def render_html(report: "BenchReport") -> str:
    """The report page as a string (self-contained but for the contact-strip PNGs under ``samples/``)."""
    data: dict[str, Any] = report.to_dict()
    suites = data["suites"]
    summary = data["summary"]
    rows = []
    header = "".join(f"<th>{html.escape(METRIC_LABELS[name])}</th>" for name in METRIC_NAMES)
    for name, entry in list(suites.items()) + [("all", summary)]:
        cells = "".join(
            f"<td>{_format(entry['metrics'][metric])}{_interval(entry.get('intervals', {}).get(metric))}</td>"
            for metric in METRIC_NAMES
        )
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{entry['items']}</td><td>{entry['failed']}</td>{cells}</tr>")
    charts = []
    for metric in METRIC_NAMES:
        values = {name: entry["metrics"][metric] for name, entry in suites.items()}
        if any(value is not None for value in values.values()):
            charts.append(f'<div class="chart">{bar_chart_svg(metric, values)}</div>')
    samples = []
    for item in data["items"]:
        metrics = ", ".join(
            f"{metric}={_format(value)}" for metric, value in item["metrics"].items() if value is not None
        )
        image = (
            f'<img src="{html.escape(item["sample_image"])}" alt="{html.escape(item["id"])}">'
            if item.get("sample_image")
            else "<div class='missing'>no sample</div>"
        )
        status = (
            f"<div class='failed'>failed: {html.escape(item['reason'] or '')}</div>" if item["status"] != "ok" else ""
        )
        samples.append(
            f"<figure>{image}<figcaption><b>{html.escape(item['id'])}</b> ({html.escape(item['task'])}, "
            f"{html.escape(item['split'])})<br>{html.escape(item['prompt'])}<br><small>{html.escape(metrics)}</small>"
            f"{status}</figcaption></figure>"
        )
    breakdown = []
    for attribute, values in summary.get("by_attribute", {}).items():
        for expected, entry in values.items():
            detected = ", ".join(f"{html.escape(name)} {count}" for name, count in entry["detected"].items())
            breakdown.append(
                f"<tr><th>{html.escape(attribute)}</th><th>{html.escape(expected)}</th><td>{entry['objects']}</td>"
                f"<td>{_format(entry['accuracy'])}</td><td style='text-align:left'>{detected}</td></tr>"
            )
    settings = html.escape(", ".join(f"{k}={v}" for k, v in data["settings"].items()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ShapesBench report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.sheet {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ width: 320px; margin: 0; font-size: 12px; }}
figure img {{ max-width: 320px; image-rendering: pixelated; }}
.failed {{ color: #b00; }}
</style></head><body>
<h1>ShapesBench report</h1>
<p>{settings}</p>
<h2>Summary</h2>
<table><tr><th>suite</th><th>items</th><th>failed</th>{header}</tr>{''.join(rows)}</table>
<p>Accuracies count failed items as 0; PSNR and offset average the scored items only.</p>
<h2>By asked-for value (scored items, all suites)</h2>
<table><tr><th>attribute</th><th>asked</th><th>objects</th><th>accuracy</th><th>drawn as</th></tr>
{''.join(breakdown)}</table>
<h2>Metrics by suite</h2><div class="charts">{''.join(charts)}</div>
<h2>Samples (first, middle and last frame)</h2><div class="sheet">{''.join(samples)}</div>
</body></html>
"""


def write_html_report(report: "BenchReport", path: str | os.PathLike) -> Path:
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(render_html(report))
    os.replace(temporary, path)
    return path
