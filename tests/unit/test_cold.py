"""Cold-slice honesty (mmrec/cold.py): no tie-break credit, the permutation null and p-values,
the slice's ceilings, and what the evaluate stage writes for them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import yaml
from typer.testing import CliRunner

from mmrec.cli import app
from mmrec.cold import ceilings, cold_summary, p_values, permutation_null, public, tied_users
from mmrec.evaluate import user_metrics
from mmrec.metrics import expected_random_at_k, per_user_metrics


def _target(rng: np.random.Generator, users: int, items: int, candidates: np.ndarray) -> sp.csr_matrix:
    m = np.zeros((users, items), dtype=np.float32)
    for u in range(users):
        m[u, rng.choice(candidates, size=int(rng.integers(1, 4)), replace=False)] = 1.0
    return sp.csr_matrix(m)


def test_a_model_that_ties_every_cold_item_gets_the_random_expectation_not_the_tie_break():
    rng = np.random.default_rng(0)
    n_items, cand = 60, np.arange(20, 60)
    target = _target(rng, 30, n_items, cand[:5])  # hits concentrated on the first cold items: the
    # tie rule (lowest index first) would put exactly those on top and score well

    def constant(users: np.ndarray) -> np.ndarray:
        return np.zeros((len(users), n_items), dtype=np.float32)

    raw = user_metrics(constant, target, None, (20,), candidates=cand)
    assert raw.summary((20,))["recall@20"] > 0.9  # the credit the tie-break gives
    tied = tied_users(constant, raw.users, cand)
    assert tied.all()
    _, block = cold_summary(raw, tied, (20,))
    exp = expected_random_at_k(raw.n_relevant, len(cand), 20)
    assert block["recall@20"] == pytest.approx(20 / 40) and block["ndcg@20"] == pytest.approx(exp["ndcg"].mean())
    assert block["unscored"] is True and block["tied_users"] == 1.0

    def scored(users: np.ndarray) -> np.ndarray:  # scores cold items (by index, descending)
        return np.tile(-np.arange(n_items, dtype=np.float32), (len(users), 1))

    um = user_metrics(scored, target, None, (20,), candidates=cand)
    t2 = tied_users(scored, um.users, cand)
    assert not t2.any()
    same, b2 = cold_summary(um, t2, (20,))
    assert same is um and "unscored" not in b2 and b2["tied_users"] == 0.0


def test_partly_tied_users_only_are_replaced():
    n_items, cand = 10, np.arange(10)
    target = sp.csr_matrix(np.eye(4, n_items, dtype=np.float32))

    def half(users: np.ndarray) -> np.ndarray:
        out = np.zeros((len(users), n_items), dtype=np.float32)
        out[users % 2 == 1] = np.arange(n_items)[::-1]  # odd users rank; even users all tied
        return out

    um = user_metrics(half, target, None, (1,), candidates=cand)
    tied = tied_users(half, um.users, cand)
    assert tied.tolist() == [True, False, True, False]
    fixed, block = cold_summary(um, tied, (1,))
    assert fixed.values["recall@1"].tolist() == [0.1, 0.0, 0.1, 0.0]  # user 1's target i1 ranked 9th
    assert block["tied_users"] == 0.5 and "unscored" not in block


def test_permutation_null_and_p_values():
    rng = np.random.default_rng(1)
    n_items, cand = 50, np.arange(10, 50)
    target = _target(rng, 40, n_items, cand[:3])  # three items take every hit
    null = permutation_null(target, None, cand, (20,), permutations=300, seed=3)
    m = null["metrics"]["recall@20"]
    # a random global order puts each of the 3 hot items in the top 20 with probability 1/2
    assert m["mean"] == pytest.approx(0.5, abs=0.06) and m["std"] > 0.1 and m["q95"] >= m["mean"]
    assert null["users"] == 40 and null["candidates"] == 40 and "_draws" not in public(null)
    assert p_values(null, {"recall@20": 1.0, "ndcg@20": 1.0}) == {
        "recall@20": pytest.approx((1 + np.sum(null["_draws"]["recall@20"] >= 1.0 - 1e-12)) / 301),
        "ndcg@20": pytest.approx(1 / 301, abs=0.05),
    }
    assert p_values(null, {"recall@20": 0.0})["recall@20"] == 1.0
    again = permutation_null(target, None, cand, (20,), permutations=300, seed=3)
    assert again["metrics"] == null["metrics"]  # seeded


def test_ceilings_by_hand():
    # 3 users, candidates 0-3, K = 1; user 0 wants {0}, user 1 {1, 2}, user 2 {1}
    target = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0]], dtype=np.float32))
    out = ceilings(target, None, np.arange(4), metrics=("recall@1", "ndcg@1", "map@1"))
    # recall weights 1, 1/2 + 1, 1/2, 0: item 1 first, recall (0 + 1/2 + 1) / 3
    assert out["global"]["recall@1"] == pytest.approx(0.5)
    assert out["global"]["ndcg@1"] == pytest.approx(2 / 3)  # item 1 is a hit for users 1 and 2
    assert out["personal"]["recall@1"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert out["personal"]["ndcg@1"] == pytest.approx(1.0)
    assert "map@1" not in out["global"] and out["users"] == 3 and out["candidates"] == 4
    # an excluded target and a target outside the candidates do not count; user 0 then has none
    ex = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    assert ceilings(target, ex, np.arange(1, 4), metrics=("recall@1",))["users"] == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_ceiling_is_the_best_of_every_order(seed):
    rng = np.random.default_rng(seed)
    cand = np.arange(6)
    target = _target(rng, 12, 6, cand)
    for k in (1, 2, 3):
        out = ceilings(target, None, cand, metrics=(f"recall@{k}", f"ndcg@{k}"))
        dense = target.toarray() > 0
        n = dense.sum(axis=1)
        best = {
            m: max(per_user_metrics(dense[:, list(o)], n, (k,))[m].mean() for o in itertools.permutations(cand, k))
            for m in (f"recall@{k}", f"ndcg@{k}")
        }
        assert out["global"] == pytest.approx(best)
        assert all(out["global"][m] <= out["personal"][m] + 1e-12 for m in best)


def test_evaluate_writes_unscored_null_p_values_and_cold_valid(
    tiny_dataset: Path, workspace: Path, tmp_path: Path, one_torch_thread
):
    p = tmp_path / "params.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "split": {"cold_item_fraction": 0.5, "cold_valid_fraction": 0.5, "min_user_interactions": 3},
                "train": {"models": ["popularity", "bpr"], "params": {"bpr": {"max_epochs": 3, "batch_size": 16}}},
                "evaluate": {"cold_permutations": 50},
            }
        )
    )
    runner = CliRunner()
    for stage in ("ingest", "validate", "split", "train", "evaluate"):
        res = runner.invoke(
            app,
            ["stage", stage, "--dataset", str(tiny_dataset), "--params", str(p), "--workspace", str(workspace)],
            catch_exceptions=False,
        )
        assert res.exit_code == 0, res.output
    metrics = json.loads((workspace / "reports/tiny/metrics.json").read_text())
    pop = metrics["models"]["popularity"]
    assert pop["cold"]["unscored"] is True
    expected = metrics["random"]["cold"]["expected"]
    assert pop["cold"]["recall@20"] == pytest.approx(expected["recall@20"])
    null = metrics["random"]["cold"]["permutation_null"]
    assert null["permutations"] == 50 and "recall@20" in null["metrics"]
    ceiling = metrics["random"]["cold"]["ceilings"]
    assert expected["recall@20"] <= ceiling["global"]["recall@20"] <= ceiling["personal"]["recall@20"] <= 1.0
    assert "p_value" not in pop["cold"]  # nothing to test: its figures are the random expectation
    assert metrics["counts"]["cold_items"] >= 2 and not metrics["models"]["bpr"]["cold"].get("unscored")
    assert 0 < metrics["models"]["bpr"]["cold"]["p_value"]["recall@20"] <= 1
    assert metrics["counts"]["cold_valid_items"] >= 1 and "cold_valid" in metrics["models"]["bpr"]
    assert "Permutation null" in (workspace / "reports/tiny/report.md").read_text()
    assert "Ceilings" in (workspace / "reports/tiny/report.md").read_text()
