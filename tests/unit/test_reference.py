"""Reference figures of the peers (benchmarks/reference/*.yaml) next to a metrics.json, by split hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrec.errors import ConfigError
from mmrec.reference import compare, find_reference, format_comparison, load_reference
from tests.conftest import REPO

REF = REPO / "benchmarks" / "reference" / "ml100k-mm.yaml"
REF_COLD_VALID = REPO / "benchmarks" / "reference" / "ml100k-mm-cold-valid.yaml"


def _metrics(hash_: str, warm: str | None) -> dict:
    return {
        "split": {"kind": "temporal", "hash": hash_, "warm_hash": warm},
        "models": {
            "lightgcn": {
                "test": {"recall@20": 0.2011, "ndcg@20": 0.1466},
                "cold": {"recall@20": 0.2, "p_value": {"recall@20": 0.3}},
                "cold_random_lift": {"recall@20": 0.84},
            },
            "popularity": {"test": {"recall@20": 0.1, "ndcg@20": 0.05}, "cold": {"recall@20": 0.238, "unscored": True}},
        },
    }


def test_the_shipped_reference_compares_by_warm_and_full_hash():
    ref = load_reference(REF)
    assert ref["split"]["hash"].startswith("6234a41daa44") and len(ref["rows"]) == 11
    same_warm = compare(_metrics("other", ref["split"]["warm_hash"]), ref)
    assert same_warm["warm_comparable"] and not same_warm["cold_comparable"]
    text = format_comparison(same_warm)
    assert "warm test: comparable" in text and "cold slice: NOT comparable" in text
    assert "LightGCN, MMRec reference (1 layer)" in text and "ours: lightgcn" in text and "0.2011" in text
    assert "unscored" in text.splitlines()[-1]
    full = compare(_metrics(ref["split"]["hash"], None), ref)
    assert full["warm_comparable"] and full["cold_comparable"]
    other = compare(_metrics("x", "y"), ref)
    assert not other["warm_comparable"] and "NOT comparable (different train/valid/test)" in format_comparison(other)


def test_bad_reference_files_are_clear_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="reference file not found"):
        load_reference(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("split: {hash: abc}\nrows:\n  - {model: x, recall@20: high}\n")
    with pytest.raises(ConfigError, match=r"rows\[1\] \(x\): \['recall@20'\] must be numbers"):
        load_reference(bad)
    bad.write_text("rows: []\n")
    with pytest.raises(ConfigError, match="expected `split"):
        load_reference(bad)


def test_the_reference_of_the_current_split_is_found_by_its_hash():
    current = load_reference(REF_COLD_VALID)
    assert current["split"]["hash"].startswith("64b1644d110c") and len(current["rows"]) == 8
    assert current["split"]["warm_hash"] == load_reference(REF)["split"]["warm_hash"]  # same train/valid/test
    folder = REF.parent
    assert find_reference(folder, _metrics(current["split"]["hash"], current["split"]["warm_hash"])) == REF_COLD_VALID
    old = load_reference(REF)["split"]
    assert find_reference(folder, _metrics(old["hash"], old["warm_hash"])) == REF  # the full hash wins
    assert find_reference(folder, _metrics("x", "y")) is None
    # only the warm hash matches: the first such file by name (warm figures compare, cold ones do not)
    assert find_reference(folder, _metrics("x", old["warm_hash"])) == REF_COLD_VALID


def test_find_reference_names_a_bad_file(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("rows: []\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: expected"):
        find_reference(tmp_path, _metrics("x", "y"))


def test_the_report_ceilings_are_printed_against_its_own_random_expectation():
    ceilings = {"global": {"recall@20": 0.8}, "personal": {"recall@20": 0.95}}
    metrics = _metrics("x", "y")  # a slice the reference was not measured on: its own random counts
    metrics["random"] = {"cold": {"ceilings": ceilings, "expected": {"recall@20": 0.25}}}
    for ref in (load_reference(REF_COLD_VALID), load_reference(REF)):
        text = format_comparison(compare(metrics, ref))
        assert "the best global order R@20 0.8000 (3.20x random), a perfect personal ranking 0.9500 (3.80x)" in text
    assert "ceilings" not in format_comparison(compare(_metrics("x", "y"), load_reference(REF)))
