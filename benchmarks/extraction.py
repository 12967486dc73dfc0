"""Feature extraction speed: the whole pipeline (files -> vectors) against the bare model, same run.

For each encoder, on the same items:
- bare: the model's batched forward over tensors already decoded and preprocessed in memory
  (what the hardware can do);
- pipeline: `run_extraction` from the files on disk with an empty cache (reading, hashing,
  decoding and preprocessing in worker threads while the model runs, cache writes).
The ratio pipeline/bare should be >= 0.8: the model should hardly ever wait for I/O. Both exclude
the one-off model load (a warm-up batch runs first). "model busy" (share of the pipeline's wall
time spent in forward passes) says the same thing without depending on the machine's load
staying constant between the two measurements, which a shared machine does not guarantee.

Then the ml100k-mm extraction itself: every description (minilm) and every poster
(efficientnet_lite0) from a cold cache, and the second run (which should do no work).

    .venv/bin/python benchmarks/extraction.py                      # all encoders, 2 threads
    .venv/bin/python benchmarks/extraction.py --encoders minilm,efficientnet_lite0 --limit 128
    .venv/bin/python benchmarks/extraction.py --device cuda --precision bf16 --batch-size 256

Text and images come from ../shared/data/ml100k-mm; audio and video from the synthetic dataset
(`mmrec data synth --out /tmp/mmrec-synth`, generated here when missing).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "ml100k-mm"
MODALITY_OF = {
    "minilm": "text",
    "tiny_text": "text",
    "efficientnet_lite0": "image",
    "mobilenetv2": "image",
    "tiny_cnn": "image",
    "whisper_tiny": "audio",
    "logmel": "audio",
    "frames": "video",
}
BATCH = {"text": 64, "image": 32, "audio": 8, "video": 4}


def ml100k_items(data: Path) -> dict[str, list[tuple[str, Any]]]:
    """(item_id, value) per modality from ml100k-mm: the text document as ingestion builds it, posters."""
    import pandas as pd

    items = pd.read_csv(data / "items.csv")
    texts, images = [], []
    for row in items.itertuples(index=False):
        fields = [("title", row.movie_title), ("genres", row.genres), ("description", row.description)]
        doc = "\n".join(f"{k}: {v}" for k, v in fields if isinstance(v, str) and v.strip())
        texts.append((str(row.movie_id), doc or None))
        poster = row.poster_path if isinstance(row.poster_path, str) and row.poster_path else None
        images.append((str(row.movie_id), data / poster if poster else None))
    return {"text": texts, "image": images}


def synth_items(folder: Path, n_items: int) -> dict[str, list[tuple[str, Any]]]:
    import pandas as pd

    if not (folder / "dataset.yaml").is_file():
        from mmrec.data.synth.generate import generate_synthetic

        print(f"generating the synthetic dataset in {folder} ...", flush=True)
        generate_synthetic(folder, n_items=n_items, overwrite=True)
    import yaml

    spec = yaml.safe_load((folder / "dataset.yaml").read_text())
    items = pd.read_csv(folder / spec["items"]["path"])
    id_col = spec["items"]["columns"]["item_id"]
    out: dict[str, list[tuple[str, Any]]] = {}
    for modality, col in spec["items"].get("media", {}).items():
        out[modality] = [
            (str(i), folder / p if isinstance(p, str) and p else None)
            for i, p in zip(items[id_col], items[col], strict=True)
        ]
    return out


def prepare_all(encoder: Any, items: list[tuple[str, Any]]) -> tuple[list[Any], list[Any]]:
    """(prepared inputs, raw contents) of the items that decode."""
    from mmrec.encoders.base import ItemFailure

    prepared, raws = [], []
    for _, value in items:
        if value is None:
            continue
        try:
            raw, _ = encoder.read(value)
            prepared.append(encoder.prepare(raw))
            raws.append(raw)
        except ItemFailure:
            continue
    return prepared, raws


def bare_throughput(encoder: Any, prepared: list[Any], batch_size: int, raws: list[bytes]) -> float:
    """Items/s of the model alone on inputs already in memory.

    Torch encoders: the batched forward over collated tensors (collation before the clock).
    Video: its encode_batch over decoded, preprocessed clips (the image model + pooling).
    Feature-engineering encoders without a model (logmel): the feature computation from the
    file bytes already in memory, one thread, so the ratio shows what reading files and
    threading add or take away.
    """
    from mmrec.encoders.base import TorchEncoder

    batches = [prepared[i : i + batch_size] for i in range(0, len(prepared), batch_size)]
    if isinstance(encoder, TorchEncoder):
        import torch

        collated = [encoder.to_device(encoder.collate(b)) for b in batches]
        precision = encoder.precision
        start = time.perf_counter()
        for batch in collated:
            encoder._run(batch, precision)
        if encoder.device.startswith("cuda"):
            torch.cuda.synchronize()
        return len(prepared) / (time.perf_counter() - start)
    if encoder.modality == "video":
        start = time.perf_counter()
        for b in batches:
            encoder.encode_batch(b)
        return len(prepared) / (time.perf_counter() - start)
    start = time.perf_counter()
    feats = [encoder.prepare(raw) for raw in raws]
    encoder.encode_batch(feats)
    return len(raws) / (time.perf_counter() - start)


def pipeline_throughput(encoder: Any, items: list[tuple[str, Any]], batch_size: int, workers: int) -> tuple[float, Any]:
    from mmrec.encoders.runner import run_extraction
    from mmrec.encoders.store import FeatureCache

    with tempfile.TemporaryDirectory(prefix="mmrec-bench-") as tmp:
        cache = FeatureCache(Path(tmp) / "cache")
        result = run_extraction(
            encoder,
            items,
            cache,
            batch_size=batch_size,
            workers=workers,
            checkpoint_items=512,
            progress=False,
            sort_by_length=encoder.modality == "text",
        )
    return result.encoded / result.seconds, result


def bench_encoder(name: str, items: list[tuple[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    from mmrec.encoders import create_encoder
    from mmrec.encoders.registry import encoder_params

    modality = MODALITY_OF[name]
    batch_size = args.batch_size or BATCH[modality]
    kwargs: dict[str, Any] = {}
    accepted = encoder_params(name)
    for k, v in (("device", args.device), ("precision", args.precision)):
        if k in accepted:
            kwargs[k] = v
    if name == "frames":
        kwargs["image_encoder"] = args.video_image_encoder
        kwargs["num_frames"] = args.num_frames
    if name == "whisper_tiny":
        kwargs["window"] = args.whisper_window
    encoder = create_encoder(name, **kwargs)
    items = [it for it in items if it[1] is not None][: args.limit]
    t0 = time.perf_counter()
    prepared, raws = prepare_all(encoder, items)
    decode_s = time.perf_counter() - t0
    if modality == "text":  # the pipeline batches texts by length too: same padding on both sides
        prepared.sort(key=len)
    t0 = time.perf_counter()
    encoder.encode_batch(prepared[: min(batch_size, len(prepared))])  # load + warm up
    load_s = time.perf_counter() - t0
    # Bare before and after the pipeline, averaged: on a shared machine the load drifts.
    bare_before = bare_throughput(encoder, prepared, batch_size, raws)
    pipe, result = pipeline_throughput(encoder, items, batch_size, args.workers)
    bare = (bare_before + bare_throughput(encoder, prepared, batch_size, raws)) / 2
    busy = result.model_seconds / result.seconds if result.seconds else 0.0
    runtime = encoder.runtime()
    row = {
        "encoder": encoder.id,
        "modality": modality,
        "items": len(items),
        "batch_size": batch_size,
        "device": runtime.get("device"),
        "precision": runtime.get("precision"),
        "bare_items_per_s": round(bare, 2),
        "pipeline_items_per_s": round(pipe, 2),
        "ratio": round(pipe / bare, 3) if bare else None,
        "model_busy": round(busy, 3),
        "decode_only_items_per_s": round(len(prepared) / decode_s, 2) if decode_s else None,
        "load_and_warmup_s": round(load_s, 2),
        "failed": result.failed,
    }
    print(
        f"{encoder.id:<26} {modality:<6} n={len(items):<5} bs={batch_size:<4} {row['device']}/{row['precision']:<5} "
        f"bare {bare:8.1f} it/s   pipeline {pipe:8.1f} it/s   ratio {row['ratio']:.2f}   "
        f"model busy {busy:5.1%} of the pipeline   (decode alone, 1 thread: {row['decode_only_items_per_s']} it/s)",
        flush=True,
    )
    return row


def ml100k_extraction(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every description and poster of ml100k-mm with the default encoders: cold, then warm."""
    from mmrec.encoders import create_encoder
    from mmrec.encoders.registry import encoder_params
    from mmrec.encoders.runner import run_extraction
    from mmrec.encoders.store import FeatureCache

    out: dict[str, Any] = {}
    items = ml100k_items(data)
    with tempfile.TemporaryDirectory(prefix="mmrec-ml100k-") as tmp:
        for modality, name in (("text", "minilm"), ("image", "efficientnet_lite0")):
            kwargs = {
                k: v for k, v in (("device", args.device), ("precision", args.precision)) if k in encoder_params(name)
            }
            t0 = time.perf_counter()
            encoder = create_encoder(name, **kwargs)
            key = encoder.cache_key()
            runs = []
            for attempt in ("cold", "warm"):
                cache = FeatureCache(Path(tmp) / modality / key[:16])
                start = time.perf_counter()
                res = run_extraction(
                    encoder,
                    items[modality],
                    cache,
                    batch_size=args.batch_size or BATCH[modality],
                    workers=args.workers,
                    progress=False,
                    sort_by_length=modality == "text",
                )
                runs.append(
                    {
                        "run": attempt,
                        "seconds": round(time.perf_counter() - start, 2),
                        "encoded": res.encoded,
                        "cached": res.cached,
                        "missing": res.missing,
                        "failed": res.failed,
                        "items_per_second": round(res.items_per_second, 2),
                    }
                )
            total = round(time.perf_counter() - t0, 2)
            out[f"{modality}/{name}"] = {"runs": runs, "total_with_model_load_s": total}
            cold, warm = runs
            print(
                f"ml100k {modality:<5} {name:<18} cold: {cold['encoded']} encoded, {cold['missing']} missing, "
                f"{cold['failed']} failed in {cold['seconds']:.1f}s ({cold['items_per_second']:.1f} items/s); "
                f"warm: {warm['encoded']} encoded, {warm['cached']} cached in {warm['seconds']:.2f}s",
                flush=True,
            )
            for f in res.failures[:5]:
                print(f"   failure {f['item_id']}: {f['reason']}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ml100k-mm folder")
    ap.add_argument(
        "--synth",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mmrec-synth",
        help="synthetic dataset folder (generated when missing)",
    )
    ap.add_argument("--encoders", default="minilm,efficientnet_lite0,mobilenetv2,whisper_tiny,logmel,frames")
    ap.add_argument("--video-image-encoder", default="efficientnet_lite0")
    ap.add_argument("--num-frames", type=int, default=8, help="frames per video clip")
    ap.add_argument("--whisper-window", default="full", choices=["full", "trim"])
    ap.add_argument("--limit", type=int, default=256, help="items per encoder for the ratio")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch intra-op threads")
    ap.add_argument("--workers", type=int, default=2, help="decoding threads of the pipeline")
    ap.add_argument("--batch-size", type=int, default=0, help="0: per-modality default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--skip-ml100k", action="store_true", help="skip the full ml100k extraction timing")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    import torch

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.workers} decode workers, "
        f"cuda={torch.cuda.is_available()}",
        flush=True,
    )
    sources: dict[str, list[tuple[str, Any]]] = {}
    if args.data.is_dir():
        sources.update(ml100k_items(args.data))
    else:
        print(f"no ml100k-mm at {args.data}: text/image encoders skipped")
    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    if any(MODALITY_OF[n] in ("audio", "video") for n in names):
        synth = synth_items(args.synth, max(args.limit, 240))
        sources.update({k: v for k, v in synth.items() if k in ("audio", "video")})
    results: dict[str, Any] = {"encoders": [], "threads": args.threads, "workers": args.workers}
    for name in names:
        modality = MODALITY_OF[name]
        if modality not in sources:
            continue
        results["encoders"].append(bench_encoder(name, sources[modality], args))
    if torch.cuda.is_available() and "efficientnet_lite0" in names and "image" in sources:
        print("GPU: images/s at reduced precision and large batches (bare model)")
        for precision in ("fp32", "bf16", "fp16"):
            for bs in (64, 256):
                a = argparse.Namespace(**{**vars(args), "precision": precision, "batch_size": bs, "device": "cuda"})
                results.setdefault("gpu", []).append(bench_encoder("efficientnet_lite0", sources["image"], a))
    if not args.skip_ml100k and args.data.is_dir():
        results["ml100k"] = ml100k_extraction(args.data, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
