"""benchmarks/epoch_instructions.py without valgrind: the clock patch must bracket exactly the
second epoch of a real fit (the count of `run_epochs`' clock reads is an assumption about its
code), the callgrind totals parser, and the refusals of unknown models and sizes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.models import create_model
from tests.unit.test_peers_common import loaded_script


@pytest.fixture(scope="module")
def ei():
    with loaded_script("epoch_instructions.py", "epoch_instructions") as module:
        yield module


def _interactions() -> Interactions:
    rng = np.random.default_rng(0)
    m = sp.csr_matrix((rng.random((30, 20)) < 0.3).astype(np.float32))
    return Interactions(
        m, np.array([f"u{i}" for i in range(30)], dtype=object), np.array([f"i{i}" for i in range(20)], dtype=object)
    )


def test_the_client_requests_bracket_the_second_epoch_of_a_fit(ei):
    events: list[object] = []

    class Client:
        def epoch_start(self) -> None:
            events.append("start")

        def epoch_end(self) -> None:
            events.append("end")

    model = create_model("bpr", max_epochs=3, eval_every=10**6, patience=10**6, batch_size=64)
    seen = model._epoch_start
    model._epoch_start = lambda epoch: (events.append(epoch), seen(epoch))  # type: ignore[method-assign]
    with ei.second_epoch_instrumented(Client()) as reads:
        model.fit(_interactions())
    assert events == [1, "start", 2, "end", 3]
    assert reads[0] >= 5


def test_totals_reads_the_events_and_totals_lines(ei, tmp_path):
    out = tmp_path / "callgrind.out.1"
    out.write_text("version: 1\nevents: Ir Dr Dw\nfn=main\n1 5 2 1\ntotals: 120 40 7\n")
    assert ei.totals(out) == {"Ir": 120, "Dr": 40, "Dw": 7}
    (tmp_path / "empty").write_text("events: Ir\n")
    with pytest.raises(ValueError, match="no totals"):
        ei.totals(tmp_path / "empty")


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--models", "itemknn"], "have no epochs"), (["--sizes", "1,8"], "unknown sizes")],
)
def test_unknown_models_and_sizes_are_refused_before_any_run(ei, argv, message):
    with pytest.raises(SystemExit, match=message):
        ei.main(argv)
