"""The evaluation table by voice and acoustic condition: what the model draws for held-out captions spoken by
held-out espeak-ng voices and by held-out voices built from recordings, each heard clean, in a noisy room and
over a telephone line.

Each cell reads the drawn images with the judge (colour, shape, size) and, where the run has one, with the
silhouette judge (shape from the figure's outline alone). Conditions are drawn from fixed seeds (the caption's
row), so runs and bundles compare cell by cell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from .data.vocabulary import COLOURS, SHAPES
from .train.banks import ATTRIBUTES
from .train.wave_augment import CONDITIONS, condition

# Which held-out voices a caption was spoken by. Datasets from before the recorded voices have no `engine`.
VOICE_GROUPS: dict[str, Callable[[dict], bool]] = {
    "espeak": lambda record: record.get("engine", "espeak-ng") == "espeak-ng",
    "recorded": lambda record: record.get("engine", "espeak-ng") != "espeak-ng",
}
# Judge disagreement on shape above this means the images are ambiguous, not that one judge is wrong.
JUDGE_DISAGREEMENT = 0.1

EmbedWaves = Callable[[list[np.ndarray]], torch.Tensor]
DrawImages = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ReadImages = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def cell_captions(records: list[dict], group: str, limit: int, seed: int) -> torch.Tensor:
    """Rows of the test captions in one voice group, at most `limit` of them, picked by `seed` alone."""
    rows = torch.tensor([i for i, r in enumerate(records) if VOICE_GROUPS[group](r)], dtype=torch.long)
    if limit and len(rows) > limit:
        pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:limit]
        rows = rows[pick.sort().values]
    return rows


def condition_table(
    records: list[dict],
    attributes: torch.Tensor,
    load_wave: Callable[[int], np.ndarray],
    babble: Callable[[np.random.Generator], np.ndarray] | None,
    embed: EmbedWaves,
    draw: DrawImages | None,
    z_dim: int,
    ca_dim: int,
    read: ReadImages,
    *,
    probe: ReadImages | None = None,
    images_per_caption: int = 2,
    limit: int = 480,
    seed: int = 0,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """{group: {condition: cell}}, a cell holding the judges' accuracies on the images drawn for its captions
    and, with `probe`, what a linear read-out of the speech embeddings gets right (the encoder's share).

    `read(images)` returns probabilities per attribute name (the judge's, and `silhouette_shape` where there
    is a second reader); `probe(embeddings)` likewise for colour, shape and size. Without `draw` only the probe
    is read.
    """
    table: dict[str, Any] = {}
    for group, name, rows, waves in conditioned_cells(records, load_wave, babble, limit, seed, progress):
        embeddings = torch.cat([embed(waves[start : start + batch_size])
                                for start in range(0, len(waves), batch_size)])
        cell: dict[str, Any] = {"captions": len(rows)}
        voices = [records[row].get("voice", "") for row in rows.tolist()]
        if probe is not None:
            readings = {attr: probs.argmax(1) for attr, probs in probe(embeddings).items()}
            asked = {attr: attributes[rows, ATTRIBUTES.index(attr)] for attr in readings}
            hits = {attr: readings[attr] == asked[attr] for attr in readings}
            cell["probe"] = {attr: float(h.float().mean()) for attr, h in hits.items()}
            cell["probe_by_voice"] = split_by_voice(hits, voices)
            # Which words are heard as which: the per-voice accuracies say where, these say what to look at.
            cell["probe_read_as"] = {attr: read_as(asked[attr], readings[attr], names)
                                     for attr, names in (("colour", COLOURS), ("shape", SHAPES)) if attr in readings}
        if draw is not None:
            cell.update(read_cell(embeddings, attributes[rows], draw, z_dim, ca_dim, read,
                                  images_per_caption, seed, batch_size, voices=voices))
        table.setdefault(group, {})[name] = cell
    return table


def conditioned_cells(
    records: list[dict],
    load_wave: Callable[[int], np.ndarray],
    babble: Callable[[np.random.Generator], np.ndarray] | None,
    limit: int,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> Iterator[tuple[str, str, torch.Tensor, list[np.ndarray]]]:
    """(voice group, condition, caption rows, the rows' waves as heard in that condition) for every cell of the
    table, in order; every model measured on the table hears the same sounds."""
    for group in VOICE_GROUPS:
        rows = cell_captions(records, group, limit, seed)
        if len(rows) == 0:
            continue
        for name in CONDITIONS:
            if progress is not None:
                progress(f"{group} voices, {name}")
            waves = [condition(name, load_wave(int(row)), seed=seed * 1_000_003 + int(row), babble_pool=babble)
                     for row in rows.tolist()]
            yield group, name, rows, waves


@torch.no_grad()
def read_cell(embeddings, labels, draw, z_dim, ca_dim, read, k: int, seed: int, batch_size: int,
              voices: list[str] | None = None) -> dict:
    """The readers' accuracies on `k` images drawn per row of `embeddings` (z and eps from `seed`, so two models
    read on the same rows are drawn with the same noise); with `voices` (one per row) also per voice, since a
    group's mean can hide one voice the model does not understand."""
    gen = torch.Generator().manual_seed(seed)
    readings: dict[str, list[torch.Tensor]] = {}
    per_batch = max(1, batch_size // k)
    for start in range(0, len(embeddings), per_batch):
        emb = embeddings[start : start + per_batch].repeat_interleave(k, 0)
        z = torch.randn(len(emb), z_dim, generator=gen)
        eps = torch.randn(len(emb), ca_dim, generator=gen)
        for name, probs in read(draw(emb, z, eps)).items():
            readings.setdefault(name, []).append(probs.argmax(1))
    asked = labels.repeat_interleave(k, 0)
    read_values = {name: torch.cat(r) for name, r in readings.items()}
    hits = {name: r == asked[:, ATTRIBUTES.index("shape" if name == "silhouette_shape" else name)]
            for name, r in read_values.items()}
    cell: dict[str, Any] = {"images_per_caption": k}
    cell.update({name: float(h.float().mean()) for name, h in hits.items()})
    cell["read_as"] = {attr: read_as(asked[:, ATTRIBUTES.index(attr)], read_values[attr], names)
                       for attr, names in (("colour", COLOURS), ("shape", SHAPES)) if attr in read_values}
    if {"colour", "shape", "size"} <= set(hits):
        cell["all_three"] = float(torch.stack([hits[a] for a in ("colour", "shape", "size")]).all(0).float().mean())
    if "silhouette_shape" in cell and "shape" in cell:
        cell["shape_judges_disagree"] = abs(cell["shape"] - cell["silhouette_shape"]) > JUDGE_DISAGREEMENT
    if voices is not None:
        cell["by_voice"] = split_by_voice({a: hits[a] for a in ("colour", "shape", "size") if a in hits}, voices, k)
    return cell


def split_by_voice(hits: dict[str, torch.Tensor], voices: list[str], per_row: int = 1) -> dict[str, dict]:
    """{voice: {captions, attribute: share right}} from per-reading hits, `per_row` readings per caption row."""
    per_reading = np.repeat(np.array(voices), per_row)
    return {voice: {"captions": voices.count(voice),
                    **{a: float(h[torch.from_numpy(per_reading == voice)].float().mean()) for a, h in hits.items()}}
            for voice in sorted(set(voices))}


def read_as(asked: torch.Tensor, read: torch.Tensor, names) -> dict[str, dict[str, float]]:
    """Confusion rows: for each value asked for (that occurs), the share of readings that were each value."""
    rows = {}
    for a in asked.unique().tolist():
        got = read[asked == a]
        rows[names[a]] = {names[r]: float((got == r).float().mean()) for r in got.unique().tolist()}
    return rows


def top_confusions(read_as: dict[str, dict[str, float]], count: int = 3) -> list[tuple[str, str, float]]:
    """The `count` largest off-diagonal shares (asked, read, share), largest first."""
    pairs = [(asked, read, share) for asked, row in read_as.items() for read, share in row.items() if read != asked]
    return sorted(pairs, key=lambda t: -t[2])[:count]


def confusion_lines(table: dict[str, Any], count: int = 3) -> list[str]:
    """Per voice group and condition, the most frequent colour and shape confusions: the judge's on the drawn
    images, and the probe's on the embeddings."""
    lines = []
    for key, reader in (("read_as", "judge"), ("probe_read_as", "probe")):
        for group, cells in table.items():
            for name in CONDITIONS:
                confusions = cells.get(name, {}).get(key, {})
                worst = [f"{attr}: " + ", ".join(f"{asked}->{read} {share:.2f}"
                                                 for asked, read, share in top_confusions(rows, count))
                         for attr, rows in confusions.items() if top_confusions(rows, count)]
                if worst:
                    lines.append(f"{reader}, {group}, {name}: " + "; ".join(worst))
    if lines:
        lines.insert(0, "what was asked for and read as something else (asked->read, share of the asked value's "
                        "readings): judge = the drawn images, probe = the speech embeddings")
    return lines


def table_lines(table: dict[str, Any]) -> list[str]:
    """The table as text: per voice group a row of judge colour / shape / size (silhouette shape) per condition,
    a row of what the linear probe reads from the embeddings, and an indented row of the judge per voice."""
    voices = {group: sorted({v for cell in cells.values() for v in _per_voice(cell)}) for group, cells in table.items()}
    width = max([16] + [len(v) + 4 for names in voices.values() for v in names])
    lines = [f"{'voices':<{width}}" + "".join(f"{name:>26}" for name in CONDITIONS)]
    for group, cells in table.items():
        judged, probed = f"{group:<{width}}", f"{group + ' probe':<{width}}"
        for name in CONDITIONS:
            cell = cells.get(name, {})
            text = "-"
            if "colour" in cell:
                text = _scores(cell)
                if "silhouette_shape" in cell:
                    text += f" ({cell['silhouette_shape']:.2f})" + ("!" if cell.get("shape_judges_disagree") else "")
            judged += f"{text:>26}"
            probe = cell.get("probe")
            probed += f"{_scores(probe) if probe else '-':>26}"
        lines += [judged, probed] if any("colour" in c for c in cells.values()) else [probed]
        for voice in voices[group]:
            row = f"{'  ' + voice:<{width}}"
            for name in CONDITIONS:
                scores = _per_voice(cells.get(name, {})).get(voice)
                row += f"{_scores(scores) if scores else '-':>26}"
            lines.append(row)
    lines.append("judge's colour/shape/size of the drawn images (the silhouette judge's shape; ! = the two differ by"
                 f" more than {JUDGE_DISAGREEMENT}); probe = linear read-out of the speech embeddings; indented rows:"
                 " per voice, the judge (the probe where nothing was drawn)")
    return lines


def _per_voice(cell: dict[str, Any]) -> dict[str, dict]:
    return cell.get("by_voice") or cell.get("probe_by_voice") or {}


def _scores(scores: dict[str, float]) -> str:
    return "/".join(f"{scores[a]:.2f}" for a in ("colour", "shape", "size"))
