"""Cost of each waveform augmentation per utterance, and our simulated rooms against pyroomacoustics'.

    python -m benchmarks.wave_augment [--seconds 1.5,2.75,4] [--clips 8] [--repeats 5] [--seeds 20]
                                      [--no-rooms] [--json]

Utterances are the runtime's example captions (espeak-ng speech) joined and cut to each length. Every
augmentation runs on all clips with fresh random draws; contenders alternate (A B C A B C ...) after a
warm-up and each figure is the median over repeats of the time for all clips, divided by the clip count.
Everything here runs on one core (numpy's FFT and soxr are single-threaded).

Rooms (when pyroomacoustics imports; it is not a dependency of s2i): for each target RT60, shoebox rooms
from pyroomacoustics' image-source model with the absorption of Sabine's inverse (`inverse_sabine`), against
our `room_impulse_response` over several seeds. Measures, all computed here the same way on both: RT60 by
our `rt60_of` (Schroeder, T30) and by pyroomacoustics' `measure_rt60`; EDT (early decay time: the
Schroeder curve's 0 to -10 dB slope, extrapolated to 60 dB); C50 (energy of the first 50 ms after the direct
sound against the rest, dB); DRR (direct sound, +-2.5 ms around the peak, against everything after, dB).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from s2i_runtime.audio import load_audio
from s2i_train.train import wave_augment as wa

from .common import interleaved

EXAMPLES = Path(__file__).resolve().parents[1] / "s2i_runtime" / "examples"
RT60_TARGETS = (0.2, 0.4, 0.6, 0.8)
# (name, dimensions m, source, microphone): a talker 1.0, 2.3 and 3.2 m from the microphone.
ROOMS = (
    ("small 4x3.5x2.7", [4.0, 3.5, 2.7], [1.5, 1.8, 1.5], [2.4, 1.4, 1.2]),
    ("medium 6x5x3", [6.0, 5.0, 3.0], [2.0, 3.0, 1.6], [4.0, 2.0, 1.2]),
    ("large 10x7.5x3.5", [10.0, 7.5, 3.5], [3.0, 4.0, 1.6], [6.0, 3.0, 1.2]),
)


def make_clips(seconds: float, count: int) -> list[np.ndarray]:
    speech = np.concatenate([load_audio(path) for path in sorted(EXAMPLES.glob("*.wav"))])
    n = int(seconds * wa.SAMPLE_RATE)
    starts = np.linspace(0, speech.size - n, count).astype(int) if speech.size > n else np.zeros(count, int)
    return [np.resize(speech[s:], n).astype(np.float32) for s in starts]


def contenders(clips: list[np.ndarray], rng: np.random.Generator) -> dict[str, Callable[[], object]]:
    pool = [c.copy() for c in clips]

    def babble_pool(r: np.random.Generator) -> np.ndarray:
        return pool[r.integers(len(pool))]

    def each(fn: Callable[[np.ndarray], object]) -> Callable[[], object]:
        return lambda: [fn(c) for c in clips]

    rir_08 = wa.room_impulse_response(0.8, rng)
    full = wa.WaveAugmentConfig(speed=0.1, voice_prob=1.0, pitch_factor=(0.8, 2.2), formant_factor=(0.9, 1.25),
                                noise_prob=1.0, reverb_prob=1.0, telephone_prob=1.0, gain_db=(-6.0, 6.0),
                                clip_prob=1.0, silence_s=0.5)
    no_telephone = dataclasses.replace(full, telephone_prob=0.0)
    return {
        "speed 0.9-1.1": each(lambda c: wa.speed_perturb(c, rng.uniform(0.9, 1.1))),
        "voice shift, pitch 0.8-2.2, formant 0.9-1.25": each(
            lambda c: wa.voice_shift(c, wa._log_uniform(rng, (0.8, 2.2)), wa._log_uniform(rng, (0.9, 1.25)))),
        "RIR build, RT60 0.1-0.8 s": each(lambda c: wa.room_impulse_response(rng.uniform(0.1, 0.8), rng)),
        "reverberate, RT60 0.8 s RIR given": each(lambda c: wa.reverberate(c, rir_08)),
        "reverb (RIR + convolution), 0.1-0.8 s": each(
            lambda c: wa.reverberate(c, wa.room_impulse_response(rng.uniform(0.1, 0.8), rng))),
        "white noise + add_noise": each(lambda c: wa.add_noise(c, wa.white_noise(c.size, rng), 10.0)),
        "pink noise + add_noise": each(lambda c: wa.add_noise(c, wa.pink_noise(c.size, rng), 10.0)),
        "babble (in-memory pool) + add_noise": each(
            lambda c: wa.add_noise(c, wa._babble(c.size, rng, babble_pool), 10.0)),
        "telephone": each(wa.telephone),
        "gain +-6 dB + clip": each(lambda c: wa.augment(
            c, wa.WaveAugmentConfig(gain_db=(-6.0, 6.0), clip_prob=1.0), rng)),
        "silence 0-0.5 s each end": each(lambda c: wa.augment(c, wa.WaveAugmentConfig(silence_s=0.5), rng)),
        "full chain, everything on": each(lambda c: wa.augment(c, full, rng, babble_pool)),
        "full chain, no telephone": each(lambda c: wa.augment(c, no_telephone, rng, babble_pool)),
        "condition noisy_room": each(lambda c: wa.condition("noisy_room", c, int(rng.integers(1 << 30)), babble_pool)),
        "condition telephone": each(lambda c: wa.condition("telephone", c, 0)),
    }


def costs(seconds: list[float], count: int, repeats: int) -> dict[str, dict[str, float]]:
    """ms per utterance, {augmentation: {seconds: ms}}."""
    table: dict[str, dict[str, float]] = {}
    for length in seconds:
        clips = make_clips(length, count)
        times = interleaved(contenders(clips, np.random.default_rng(0)), repeats)
        for name, t in times.items():
            table.setdefault(name, {})[f"{length:g}"] = statistics.median(t) / count * 1e3
    return table


def room_measures(rir: np.ndarray, sample_rate: int = wa.SAMPLE_RATE) -> dict[str, float]:
    rir = np.asarray(rir, dtype=np.float64)
    peak = int(np.argmax(np.abs(rir)))
    half = int(0.0025 * sample_rate)
    energy = np.square(rir)
    direct = energy[max(0, peak - half): peak + half].sum()
    after = energy[peak + half:].sum()
    split = peak + int(0.05 * sample_rate)
    tail = np.cumsum(energy[peak:][::-1])[::-1]
    decay_db = 10.0 * np.log10(np.maximum(tail / tail[0], 1e-300))
    stop = int(np.argmax(decay_db <= -10.0))
    edt = -60.0 / np.polyfit(np.arange(stop) / sample_rate, decay_db[:stop], 1)[0]
    measures = {
        "rt60_ours": wa.rt60_of(rir, sample_rate),
        "edt": float(edt),
        "c50_db": float(10.0 * np.log10(energy[:split].sum() / energy[split:].sum())),
        "drr_db": float(10.0 * np.log10(direct / after)),
    }
    try:
        import pyroomacoustics as pra

        measures["rt60_pra"] = float(pra.experimental.measure_rt60(rir, fs=sample_rate, decay_db=30))
    except ImportError:
        pass
    return measures


def rooms(seeds: int) -> dict[str, object]:
    try:
        import pyroomacoustics as pra
    except ImportError as error:
        return {"skipped": f"pyroomacoustics does not import: {error}"}
    rows = []
    for target in RT60_TARGETS:
        for name, dims, source, mic in ROOMS:
            start = time.perf_counter()
            try:
                absorption, max_order = pra.inverse_sabine(target, dims)
            except ValueError as error:
                rows.append({"rt60_target": target, "model": f"pyroomacoustics {name}", "skipped": str(error)})
                continue
            room = pra.ShoeBox(dims, fs=wa.SAMPLE_RATE, materials=pra.Material(absorption), max_order=max_order)
            room.add_source(source)
            room.add_microphone(mic)
            room.compute_rir()
            rir = np.asarray(room.rir[0][0])
            build_ms = (time.perf_counter() - start) * 1e3
            rows.append({"rt60_target": target, "model": f"pyroomacoustics {name}", "build_ms": build_ms,
                         **room_measures(rir)})
        start = time.perf_counter()
        responses = [wa.room_impulse_response(target, np.random.default_rng(seed)) for seed in range(seeds)]
        build_ms = (time.perf_counter() - start) * 1e3 / seeds
        ours = [room_measures(rir) for rir in responses]
        row: dict[str, object] = {"rt60_target": target, "model": f"ours, mean of {seeds} seeds", "build_ms": build_ms}
        for key in ours[0]:
            values = [m[key] for m in ours]
            row[key] = float(np.mean(values))
            row[f"{key}_range"] = [float(min(values)), float(max(values))]
        rows.append(row)
    return {"pyroomacoustics": pra.__version__, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="1.5,2.75,4", help="utterance lengths, comma-separated")
    parser.add_argument("--clips", type=int, default=8, help="utterances per length")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=20, help="our RIRs per target RT60")
    parser.add_argument("--no-rooms", action="store_true", help="skip the pyroomacoustics comparison")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = parser.parse_args(argv)

    seconds = [float(s) for s in args.seconds.split(",")]
    result: dict[str, object] = {
        "clips": args.clips,
        "repeats": args.repeats,
        "ms_per_utterance": costs(seconds, args.clips, args.repeats),
    }
    if not args.no_rooms:
        result["rooms"] = rooms(args.seeds)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    table = result["ms_per_utterance"]
    print(f"ms per utterance (median of {args.repeats} x {args.clips} clips, one core)")
    print("| augmentation | " + " | ".join(f"{s:g} s" for s in seconds) + " |")
    print("|---|" + "---:|" * len(seconds))
    for name, by_length in table.items():
        print(f"| {name} | " + " | ".join(f"{ms:.2f}" for ms in by_length.values()) + " |")
    if "rooms" in result:
        found = result["rooms"]
        if "skipped" in found:
            print(f"\nrooms: {found['skipped']}")
            return
        print(f"\nrooms (pyroomacoustics {found['pyroomacoustics']}); RT60 and EDT in s, C50 and DRR in dB")
        print("| target | model | RT60 by rt60_of | RT60 by pra measure_rt60 | EDT | C50 | DRR | build ms |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for row in found["rows"]:
            if "skipped" in row:
                print(f"| {row['rt60_target']} | {row['model']} | skipped: {row['skipped']} |||||")
                continue
            print(f"| {row['rt60_target']} | {row['model']} | {row['rt60_ours']:.2f} | {row.get('rt60_pra', 0):.2f} | "
                  f"{row['edt']:.2f} | {row['c50_db']:.1f} | {row['drr_db']:.1f} | {row['build_ms']:.1f} |")


if __name__ == "__main__":
    main()
