"""Replay a dataset's held-out test period as a live event stream, and score the policies.

The model trained on the split's training part plays the nightly job: at the start of the test
period every test user gets a top-K list (training and validation items masked), as the nightly
run would have written it. Then the test interactions arrive one at a time in time order. Just
before each event (user u, item i), every policy shows u a list of K items, and the event is a
hit for the policy when i is on its list:

- `static`: the nightly list as written (what `GET /users/{id}/recommendations` served before
  the feedback loop: the same list all period long).
- `nightly`, `realtime`, `popularity`, `content`: the strategies of mmrec/events/strategies.py,
  fed with u's events of the period so far (the recent history, consumed items excluded).
- `adaptive`: the strategy a Thompson-sampling bandit draws for u's segment (history length);
  its list is the impression, the event is the reward (a hit: success), exactly as the API
  counts them (mmrec/events/store.py), with the posteriors updated after every event.

Figures: `hit_rate@K` (share of events whose item was on the list shown just before) and
`recall@K` (per user, share of their distinct test items that were on a list shown before they
were consumed, averaged over users). The learning curve (running hit rate of each policy, and
the share of each strategy among the bandit's draws per window) is a PNG beside the JSON.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mmrec.constants import ITEM_ID, TIMESTAMP, USER_ID
from mmrec.errors import StageError
from mmrec.events.bandit import Arm, ThompsonBandit, segment_of
from mmrec.events.config import EventsParams
from mmrec.events.strategies import Strategies, UserView

if TYPE_CHECKING:
    from mmrec.stages import StageContext

log = logging.getLogger(__name__)

STATIC = "static"
ADAPTIVE = "adaptive"


@dataclass
class ReplayResult:
    """Per policy: hits, events, per-user recall; the bandit's draws and curve points."""

    k: int
    policies: list[str]
    events: int = 0
    hits: dict[str, int] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)
    curve: dict[str, list[float]] = field(default_factory=dict)  # running hit rate at each checkpoint
    checkpoints: list[int] = field(default_factory=list)
    picks: list[str] = field(default_factory=list)  # the bandit's draw per event
    posteriors: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        per = {
            p: {
                f"hit_rate@{self.k}": round(self.hits[p] / max(self.events, 1), 5),
                f"recall@{self.k}": round(self.recall[p], 5),
            }
            for p in self.policies
        }
        share = {s: round(self.picks.count(s) / max(len(self.picks), 1), 4) for s in sorted(set(self.picks))}
        last = self.picks[-max(len(self.picks) // 5, 1) :]
        late = {s: round(last.count(s) / max(len(last), 1), 4) for s in sorted(set(last))}
        return {
            "k": self.k,
            "events": self.events,
            "policies": per,
            "adaptive_picks": share,
            "adaptive_picks_last_fifth": late,
            "posteriors": {
                seg: {s: {"alpha": a, "beta": b, "mean": round(a / (a + b), 4)} for s, (a, b) in arms.items()}
                for seg, arms in self.posteriors.items()
            },
            "seconds": round(self.seconds, 2),
        }


def replay(
    strategies: Strategies,
    nightly: dict[str, list[tuple[str, float]]],
    history: dict[str, list[str]],
    events: pd.DataFrame,
    params: EventsParams,
    k: int = 20,
    seed: int = 0,
    checkpoints: int = 200,
) -> ReplayResult:
    """Replay `events` (user_id, item_id, timestamp) in time order against every policy.

    Args:
        strategies: the strategy functions over the trained model.
        nightly: user -> the nightly top list (best first) written before the period.
        history: user -> items known before the period (training + validation), oldest first.
        events: the period's interactions.
        params: the events section (history length, segments, arms, prior).
        k: list length.
        seed: the bandit sampler's seed.
        checkpoints: points of the learning curve.
    """
    start = time.perf_counter()
    order = events.sort_values([TIMESTAMP, USER_ID, ITEM_ID], kind="stable")
    users = order[USER_ID].astype(str).to_numpy()
    items = order[ITEM_ID].astype(str).to_numpy()
    arms_names = list(params.strategies)
    policies = [STATIC, *arms_names, ADAPTIVE]
    bandit = ThompsonBandit(arms_names, params.prior_alpha, params.prior_beta, seed)
    counts: dict[str, dict[str, list[float]]] = defaultdict(lambda: {s: [0.0, 0.0] for s in arms_names})
    recent: dict[str, list[str]] = defaultdict(list)  # newest first
    caught: dict[str, dict[str, set[str]]] = {
        p: defaultdict(set) for p in policies
    }  # items on a list before consumption
    wanted: dict[str, set[str]] = defaultdict(set)
    result = ReplayResult(k=k, policies=policies, hits=dict.fromkeys(policies, 0))
    running = dict.fromkeys(policies, 0)
    step = max(len(order) // checkpoints, 1)
    result.curve = {p: [] for p in policies}
    for n, (user, item) in enumerate(zip(users, items, strict=True), 1):
        night = nightly.get(user, [])
        past = history.get(user, [])
        view = UserView(nightly=night, history=past, recent=recent[user][: params.history_length])
        lists: dict[str, set[str]] = {STATIC: {i for i, _ in night[:k]}}
        for s in arms_names:
            lists[s] = {i for i, _, _ in strategies.run(s, view, k)}
        segment = segment_of(len(past) + len(view.recent), params.segments)
        seg_counts = counts[segment]
        pick = bandit.choose({s: Arm(*c) for s, c in seg_counts.items()})
        lists[ADAPTIVE] = lists[pick]
        hit_pick = item in lists[pick]
        seg_counts[pick][0] += 1
        seg_counts[pick][1] += float(hit_pick)
        result.picks.append(pick)
        wanted[user].add(item)
        for p in policies:
            if item in lists[p]:
                running[p] += 1
                caught[p][user].add(item)
        if n % step == 0 or n == len(order):
            result.checkpoints.append(n)
            for p in policies:
                result.curve[p].append(running[p] / n)
        recent[user].insert(0, item)
        del recent[user][params.history_length :]
    result.events = len(order)
    result.hits = running
    result.recall = {
        p: float(np.mean([len(caught[p][u] & w) / len(w) for u, w in wanted.items()])) if wanted else 0.0
        for p in policies
    }
    result.posteriors = {
        seg: bandit.posteriors({s: Arm(*c) for s, c in arms.items()}) for seg, arms in sorted(counts.items())
    }
    result.seconds = time.perf_counter() - start
    return result


def plot_learning_curve(result: ReplayResult, title: str, path: Path) -> Path:
    """Running hit rate per policy (left) and the bandit's strategy shares per window (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = {STATIC: ("black", "--"), ADAPTIVE: ("crimson", "-")}
    for p in result.policies:
        color, line = styles.get(p, (None, ":"))
        left.plot(
            result.checkpoints,
            result.curve[p],
            label=p,
            color=color,
            linestyle=line,
            linewidth=2.2 if p == ADAPTIVE else 1.4,
        )
    left.set_xlabel("test events replayed (time order)")
    left.set_ylabel(f"running hit rate @{result.k}")
    left.set_title("hit rate of each policy")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    picks = np.asarray(result.picks)
    windows = max(min(len(picks) // 50, 40), 1)
    edges = np.linspace(0, len(picks), windows + 1).astype(int)
    mids = (edges[:-1] + edges[1:]) / 2
    bottom = np.zeros(windows)
    for s in dict.fromkeys(p for p in result.policies if p not in (STATIC, ADAPTIVE)):
        share = np.array([(picks[a:b] == s).mean() if b > a else 0.0 for a, b in itertools.pairwise(edges)])
        right.bar(mids, share, width=np.diff(edges), bottom=bottom, label=s, align="center")
        bottom += share
    right.set_xlabel("test events replayed (time order)")
    right.set_ylabel("share of the bandit's draws")
    right.set_title("what the bandit chose (Thompson sampling)")
    right.set_ylim(0, 1)
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# -- over a trained dataset ------------------------------------------------------------------------------


def _fused_similar(ctx: StageContext, model: Any, item_pos: dict[str, int]) -> Any:
    """Nearest items in the fused content space, as the API's `fused` index has them (None without
    extracted features): every modality's features combined by `mmrec.feast.tables.fused_table`."""
    from mmrec.constants import MODALITIES
    from mmrec.encoders.store import read_features
    from mmrec.feast.tables import EMBEDDING, fused_table
    from mmrec.models.item_features import feature_path
    from mmrec.serve.loader import build_indexes

    vectors = {}
    for m in MODALITIES:
        path = feature_path(ctx.paths, ctx.params.extract, m)
        if path.is_file():
            feats = read_features(path)
            if len(feats.item_ids):
                vectors[m] = (feats.item_ids, feats.matrix)
    fused = fused_table(vectors)
    if not len(fused):
        return None
    ids = fused[ITEM_ID].astype(str).tolist()
    index = build_indexes({"fused": (ids, np.vstack(fused[EMBEDDING].to_numpy()).astype(np.float32))})["fused"]
    return index.similar


def _nightly_lists(
    model: Any, users: Sequence[str], known: dict[str, list[str]], k: int
) -> dict[str, list[tuple[str, float]]]:
    """The nightly job's lists: model scores, training and validation items masked, top `k`."""
    from mmrec.ranking import mask, topk

    pos_u = {str(u): i for i, u in enumerate(model.user_ids)}
    pos_i = {str(v): i for i, v in enumerate(model.item_ids)}
    item_ids = [str(v) for v in model.item_ids]
    out: dict[str, list[tuple[str, float]]] = {}
    in_model = [u for u in users if u in pos_u]
    for start in range(0, len(in_model), 256):
        batch = in_model[start : start + 256]
        scores = model.score(np.asarray([pos_u[u] for u in batch], dtype=np.int64))
        for u, row in zip(batch, scores, strict=True):
            row = mask(np.array(row, dtype=np.float32), [pos_i[i] for i in known.get(u, []) if i in pos_i])
            idx, val = topk(row, k)
            out[u] = [(item_ids[i], float(v)) for i, v in zip(idx, val, strict=True) if np.isfinite(v)]
    return out


def run_replay(
    ctx: StageContext,
    model_name: str | None = None,
    k: int = 20,
    seed: int = 0,
    max_events: int | None = None,
    docs_dir: Path | None = None,
) -> dict[str, Any]:
    """Replay the dataset's test period (see the module docstring); write the JSON and the figure.

    Args:
        ctx: a dataset whose split and models exist (`mmrec pipeline` or `mmrec evaluate` ran).
        model_name: the model playing the nightly job (default: the champion, else the best
            evaluated model).
        k: list length.
        seed: the bandit's seed.
        max_events: replay only the first N test events (a quick look; None: all).
        docs_dir: also copy the figure there (docs/figures).

    Returns:
        the summary written to `reports/<name>/replay.json`.
    """
    import shutil

    from mmrec.data.splits import read_split_frames
    from mmrec.events.config import events_params

    params = events_params(ctx.params)
    if model_name is None:
        from mmrec.feast.export import champion

        found = champion(ctx)
        if found is None:
            raise StageError(
                f"no trained model for {ctx.spec.name!r}: run `mmrec pipeline --dataset "
                f"{ctx.spec.spec_path or 'PATH/dataset.yaml'}` (or `mmrec evaluate`) first"
            )
        model: Any = found[0]
        model_name = str(found[1]["model"])
    else:
        from mmrec.models import load_model

        folder = ctx.paths.model_dir(model_name)
        if not (folder / "model.json").is_file():
            raise StageError(
                f"{folder}: no trained {model_name!r} model; run `mmrec evaluate --dataset ... --models "
                f"{model_name}` first"
            )
        model = load_model(folder)
    frames, meta = read_split_frames(ctx.paths, ctx.params.split.kind)
    test = frames.test
    if max_events is not None:
        test = test.sort_values(TIMESTAMP, kind="stable").head(max_events)
    known = pd.concat([frames.train, frames.valid]).sort_values(TIMESTAMP, kind="stable")
    history = {str(u): g[ITEM_ID].astype(str).tolist() for u, g in known.groupby(USER_ID, sort=False)}
    users = sorted(test[USER_ID].astype(str).unique())
    item_pos = {str(v): i for i, v in enumerate(model.item_ids)}
    nightly = _nightly_lists(model, users, history, max(k, 100))
    strategies = Strategies(model, item_pos, _fused_similar(ctx, model, item_pos), params.realtime_weight, params.rrf_k)
    log.info("replaying %d test events of %d users against %s", len(test), len(users), model_name)
    result = replay(strategies, nightly, history, test, params, k=k, seed=seed)
    summary = {
        "dataset": ctx.spec.name,
        "model": model_name,
        "split": {"kind": ctx.params.split.kind, "hash": meta.get("hash")},
        **result.summary(),
    }
    out = ctx.paths.reports / "replay.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out)
    title = f"{ctx.spec.name}: replay of {result.events} test events, K={k}, nightly model {model_name}"
    figure = plot_learning_curve(result, title, ctx.paths.reports / "replay_learning_curve.png")
    summary["figure"] = str(figure)
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        copy = docs_dir / f"replay_{ctx.spec.name}.png"
        shutil.copyfile(figure, copy)
        summary["docs_figure"] = str(copy)
    return summary
