"""Scale-out on existing engines: Dask for extraction and nightly scoring, torch DDP for training.

- `extract`: one modality's items cut into shards, each encoded on a Dask worker through the
  content-hash cache, merged into the same feature file as the single-process path.
- `scoring`: the nightly top-K partitioned by user blocks on Dask workers, written by the driver
  in block order, so the file equals the single-process one.
- `workers`: per-worker state (encoders, caches, models) loaded once per worker process.
- `cluster`: a `distributed.Client` for an `orchestrate:` section (scheduler or LocalCluster).
- `ddp` / `train`: multi-process training of the factor models, launched by `torchrun`.

Plain `dask.distributed` and `torch.distributed`; Prefect (prefect-dask) lives in mmrec_flows/.
"""
