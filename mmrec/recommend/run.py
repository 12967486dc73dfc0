"""The recommend stage (the nightly job): the champion's top-K for every user, under the configured strategy."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mmrec.constants import ITEM_ID, USER_ID
from mmrec.distributed.scoring import DEFAULT_BLOCK_USERS, write_recommendations_dask
from mmrec.io import write_json, write_text
from mmrec.models.item_features import load_item_features
from mmrec.params.recommend import RecommendParams, recommend_params
from mmrec.recommend.strategies import build_scorer
from mmrec.recommend.topk import history_matrix
from mmrec.recommend.writer import summary_markdown, write_recommendations
from mmrec.tracking.registry import load_champion

if TYPE_CHECKING:
    from mmrec.context import StageContext
    from mmrec.models.base import Recommender

log = logging.getLogger(__name__)


def strategy_scorer(
    ctx: StageContext, model: Recommender, rp: RecommendParams, history: sp.csr_matrix | None = None
) -> Any:
    """What to rank with under `rp` (mmrec/recommend/strategies.py): the model itself with the defaults.

    Content features are read from the dataset's extracted features, aligned with the model's
    item index; relative filter files are resolved against the workspace.
    """
    assert model.item_ids is not None

    def load_features(modalities: list[str] | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return load_item_features(ctx.paths, ctx.params.extract, model.item_ids, modalities)  # type: ignore[arg-type]

    return build_scorer(model, rp, history=history, load_features=load_features, base_dir=ctx.workspace)


def run_recommend(
    ctx: StageContext,
    k: int | None = None,
    model: Recommender | None = None,
    model_info: dict[str, Any] | None = None,
    fail_after_batches: int | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """The nightly job: the registry's champion's top-K for every user, to latest.parquet.

    Args:
        model: use this model instead of loading the champion (tests, ad-hoc runs).
        k: overrides `recommend.k`.
        client: a `distributed.Client`: score user blocks on its workers
            (`mmrec.distributed.scoring`, same file as without it); None scores in this process.

    Returns:
        The summary (also written to reports/<name>/recommendations.json and .md).

    Raises:
        ModelError: no champion registered (the message names the command that makes one).
    """
    rp = recommend_params(ctx.params)
    k = int(k or rp.k)
    if model is None:
        model, model_info = load_champion(ctx)
    interactions = None
    validated = ctx.paths.validated_table("interactions")
    if (rp.exclude_seen or rp.strategy != "model") and validated.is_file():
        interactions = pd.read_parquet(validated, columns=[USER_ID, ITEM_ID])
    history = history_matrix(model, interactions)
    exclude = history if rp.exclude_seen else None
    scorer = strategy_scorer(ctx, model, rp, history)
    log.info(
        "recommending top-%d (%s) for %d users over %d items",
        k,
        rp.strategy,
        len(model.user_ids) if model.user_ids is not None else 0,
        model.n_items,
    )
    # a hybrid holds each component's chunk of scores besides the blend: shrink the chunk to match
    parts = 1 + len([w for w in rp.hybrid.weights.values() if w > 0]) if rp.strategy == "hybrid" else 1
    chunk = max(1, rp.chunk_users(model.n_items) // parts)
    if client is not None:
        block = getattr(getattr(ctx.params, "orchestrate", None), "score_block_users", DEFAULT_BLOCK_USERS)
        summary = write_recommendations_dask(
            scorer, ctx.paths.recommendations, client, k=k, batch_size=chunk, exclude=exclude, block_users=block
        )
    else:
        summary = write_recommendations(
            scorer,
            ctx.paths.recommendations,
            k=k,
            batch_size=chunk,
            exclude=exclude,
            fail_after_batches=fail_after_batches,
        )
    summary = {
        "dataset": ctx.spec.name,
        "model": {"name": model.name, **(model_info or {})},
        "strategy": rp.strategy,
        **({"threshold": rp.threshold} if rp.threshold is not None else {}),
        **summary,
    }
    write_json(ctx.paths.reports / "recommendations.json", summary)
    write_text(ctx.paths.reports / "recommendations.md", summary_markdown(summary))
    log.info(
        "wrote %d rows for %d users (coverage %.3f) in %.1fs",
        summary["rows"],
        summary["users_covered"],
        summary["catalogue_coverage"],
        summary["seconds"],
    )
    return summary
