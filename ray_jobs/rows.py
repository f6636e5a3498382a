"""Prepared sequences as a Ray Dataset, the rows ``make_examples`` turns into model inputs:
every job that trains or evaluates reads them here, so a cross-scenario history is built the
same way for training, validation and evaluation."""

from __future__ import annotations

from interest_model.data.examples import attach_context
from interest_model.data.prepared import PreparedData
from ray_jobs.common import data_context


def sequence_rows(prepared: PreparedData, scenarios: list[str], contexts: list[str], users: list[str] | None = None):
    """The scenarios' sequence rows (of ``users`` only, if given); with ``contexts``, each
    carrying the user's events in those scenarios (one group per user: a shuffle by user id)."""
    import ray.data
    from ray.data.expressions import col

    data_context()  # a Dataset keeps the context it was made in: set before reading
    fs, path = prepared.dataset_path("sequences")
    seqs = ray.data.read_parquet(path, filesystem=fs)
    if users is not None:
        seqs = seqs.filter(expr=col("user_id").is_in(sorted(users)))
    if not contexts:
        return seqs
    # One shuffle partition per sequences file (prepare writes them block by block), not Ray
    # Data's default of 200 tasks, most of them empty on a small dataset.
    parts = max(1, len(seqs.input_files()))
    seqs = seqs.filter(expr=col("scenario").is_in([*scenarios, *contexts]))
    return seqs.groupby("user_id", num_partitions=parts).map_groups(
        attach_context, batch_format="pandas", fn_kwargs={"targets": scenarios, "contexts": contexts})
