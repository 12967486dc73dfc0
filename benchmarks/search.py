"""Cross-modal search quality: does an item's title, as a query, find the item by its picture?

    MMREC_THREADS=1 nice -n 10 python benchmarks/search.py --dataset examples/ml100k-mm/dataset.yaml
    MMREC_THREADS=1 nice -n 10 python benchmarks/search.py --dataset data/raw/synth/dataset.yaml

Needs the dataset's `split`, `extract_text` and `extract_image` stages (features on disk).

What it does:
1. trains `two_tower` (modalities text + image, the dataset's configured hyper-parameters) on the
   train split, early-stopped on valid, exactly as the train stage does;
2. held-out queries: the items with **no training interaction** (the cold_valid / cold_test items
   of the split and any other item nobody interacted with in train). The alignment term only
   ever compares the text and image of items that are positives of a training batch, so their
   title-image pairing never reached the projection. (They can be drawn as BPR negatives, where
   their fused vector is pushed away from a user: that never compares their text with their
   image.) For contrast the same measure runs on as many warm (trained-on) items;
3. each query is the item's **title alone** (`text_title`), embedded by the dataset's text encoder
   (the one extraction used, `mmrec.search.QueryEncoders`), not the title+genres+description the
   item's text vector was made from;
4. candidates: every item with an image; the item side is **image vectors only** mapped into the
   joint space by the trained image projection;
5. prints recall@k for cross_modal, random_projection (trained heads replaced by random ones,
   PCA kept) and text_only (query vs the items' own text vectors: it sees the text, so it is a
   reference, not a rival), plus chance (k / candidates).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    from mmrec.context import StageContext
    from mmrec.models import create_model
    from mmrec.models.item_features import load_item_features, with_features
    from mmrec.runtime import configure_threads
    from mmrec.search import QueryEncoders, evaluate_title_search
    from mmrec.stages import load_split_data, seed_everything

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-epochs", type=int, default=None, help="cap training epochs (default: the configured value)")
    ap.add_argument(
        "--align-weight",
        type=float,
        default=None,
        help="override two_tower's align_weight (a sensitivity check, not tuning: never pick it on these queries)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the random-projection control and the warm sample")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    configure_threads()

    ctx = StageContext.from_files(args.dataset, args.params)
    data = load_split_data(ctx)
    feats, masks = load_item_features(ctx.paths, ctx.params.extract, data.item_ids, ["text", "image"])
    # the configured two_tower settings, on text + image only (the benchmark needs no audio/video)
    params = {**dict(ctx.params.train.params.get("two_tower", {})), "modalities": ["text", "image"]}
    if args.max_epochs:
        params["max_epochs"] = args.max_epochs
    if args.align_weight is not None:
        params["align_weight"] = args.align_weight
    seed_everything(ctx.params.train.seed)
    t0 = time.perf_counter()
    model = create_model("two_tower", **params).fit(with_features(data.train, feats, masks), data.valid)
    train_s = time.perf_counter() - t0
    assert model.projection is not None

    import pandas as pd

    items = pd.read_parquet(ctx.paths.warehouse / "items.parquet", columns=["item_id", "text_title"])
    titles = dict(zip(items["item_id"].astype(str), items["text_title"], strict=True))
    n_train = np.diff(data.train.matrix.tocsc().indptr)
    held_out = np.flatnonzero(n_train == 0)
    rng = np.random.default_rng(args.seed)
    warm = rng.choice(np.flatnonzero(n_train > 0), size=min(len(held_out), int((n_train > 0).sum())), replace=False)
    encoders = QueryEncoders(ctx.params.extract)
    text_encoder = encoders.encoder("text")
    candidates = np.arange(len(data.item_ids))
    out: dict = {
        "dataset": ctx.spec.name,
        "k": args.k,
        "params": params,
        "train_seconds": round(train_s, 1),
        "epochs": model.epochs,
        "text_encoder": text_encoder.name,
        "image_encoder": encoders.encoder("image").name,
        "sets": {},
    }
    for name, rows in (("held_out", held_out), ("warm", warm)):
        rows = np.asarray(
            [
                r
                for r in rows
                if isinstance(titles.get(str(data.item_ids[r])), str) and titles[str(data.item_ids[r])].strip()
            ],
            np.int64,
        )
        t1 = time.perf_counter()
        queries = text_encoder.encode([titles[str(data.item_ids[r])] for r in rows])
        enc_s = time.perf_counter() - t1
        res = evaluate_title_search(model.projection, queries, feats, masks, rows, candidates, k=args.k, seed=args.seed)
        out["sets"][name] = {**res.to_dict(), "encode_seconds": round(enc_s, 1)}
    print(
        f"{out['dataset']}: two_tower (text+image, align_weight={model.align_weight}) trained {out['epochs']} epochs in {train_s:.0f}s; "
        f"queries = titles via {out['text_encoder']}, items = {out['image_encoder']} image vectors"
    )
    print(
        f"{'queries':<10}{'n':>6}{'cands':>7}{'cross_modal':>13}{'random_proj':>13}{'text_only*':>12}{'chance':>9}"
        f"{'x/random':>10}{'x/chance':>10}"
    )
    for name, r in out["sets"].items():
        rec = r["recall"]
        print(
            f"{name:<10}{r['n_queries']:>6}{r['n_candidates']:>7}{rec['cross_modal']:>13.3f}{rec['random_projection']:>13.3f}"
            f"{rec['text_only']:>12.3f}{r['random_chance']:>9.4f}"
            f"{ratio(rec['cross_modal'], rec['random_projection']):>10}{ratio(rec['cross_modal'], r['random_chance']):>10}"
        )
    print(f"recall@{args.k}; *text_only compares the title with the items' own text vectors (which contain the title)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))
    return out


def ratio(a: float, b: float) -> str:
    """a / b for the table, "n/a" when b is 0 (no hit at all for the control)."""
    return f"{a / b:.2f}" if b > 0 else "n/a"


if __name__ == "__main__":
    main()
