"""Splink (DuckDB backend) with the settings of its own FEBRL examples.

Why these settings: the peer must be run as its authors show it, not tuned by us against
the truth. They follow Splink's ``docs/demos/examples/duckdb/febrl3`` (dedupe) and
``febrl4`` (link only, the "detailed" model) examples: the same blocking rules,
comparisons, deterministic rules and recall for λ, u by random sampling (1e6 pairs), and
EM sessions blocked on ``date_of_birth`` then ``postcode``. The examples predict with a
floor of 0.2 and cluster at 0.99; pairs are scored here at ``threshold`` (0.99 by
default, the examples' decision threshold) and clusters at the same threshold.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from benchmarks.identity.data import Dataset
from benchmarks.identity.peer import PeerRun

#: the examples' ``predict`` floor (scores below it are never materialised)
PREDICT_FLOOR = 0.2


def _febrl3_settings() -> tuple[Any, list[Any], float]:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=[
            block_on("soc_sec_id"),
            block_on("given_name"),
            block_on("surname"),
            block_on("date_of_birth"),
            block_on("postcode"),
        ],
        comparisons=[
            cl.NameComparison("given_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison(
                "date_of_birth", input_is_string=True, datetime_format="%Y%m%d"
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
        ],
        retain_intermediate_calculation_columns=True,
    )
    deterministic = [
        block_on("soc_sec_id"),
        block_on("given_name", "surname", "date_of_birth"),
        "l.given_name = r.surname and l.surname = r.given_name"
        " and l.date_of_birth = r.date_of_birth",
    ]
    return settings, deterministic, 0.9


def _febrl4_settings() -> tuple[Any, list[Any], float]:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type="link_only",
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "surname"),
            # an SQL rule as the example has it (Splink's hints want creators only)
            "l.given_name = r.surname and l.surname = r.given_name",  # type: ignore[list-item]
            block_on("date_of_birth"),
            block_on("soc_sec_id"),
            block_on("state", "address_1"),
            block_on("street_number", "address_1"),
            block_on("postcode"),
        ],
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison(
                "date_of_birth",
                input_is_string=True,
                datetime_format="%Y%m%d",
                invalid_dates_as_null=True,
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(
                term_frequency_adjustments=True
            ),
        ],
        retain_intermediate_calculation_columns=True,
    )
    deterministic = [
        block_on("soc_sec_id"),
        block_on("given_name", "surname", "date_of_birth"),
    ]
    return settings, deterministic, 0.8


def run_splink(dataset: Dataset, *, threshold: float = 0.99) -> PeerRun:
    """Train and predict as the example for ``dataset`` does; cluster at ``threshold``."""
    from splink import DuckDBAPI, Linker, block_on

    logging.getLogger("splink").setLevel(logging.ERROR)
    if dataset.name == "febrl3":
        settings, deterministic, recall = _febrl3_settings()
        em_tf: dict[str, bool] = {}
    else:
        settings, deterministic, recall = _febrl4_settings()
        em_tf = {"estimate_without_term_frequencies": True}
    started = time.perf_counter()
    db_api = DuckDBAPI()
    tables = [db_api.register(frame.reset_index()) for frame in dataset.frames]
    linker = Linker(tables if len(tables) > 1 else tables[0], settings, log_level="ERROR")
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=recall)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=2)
    for column in ("date_of_birth", "postcode"):
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on(column), **em_tf
        )
    predictions = linker.inference.predict(threshold_match_probability=PREDICT_FLOOR)
    scored = predictions.as_pandas_dataframe()
    kept = scored[scored["match_probability"] >= threshold]
    pairs = list(zip(kept["rec_id_l"].astype(str), kept["rec_id_r"].astype(str), strict=True))
    pairwise_seconds = time.perf_counter() - started
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold
    ).as_pandas_dataframe()
    clusters = dict(
        zip(clustered["rec_id"].astype(str), clustered["cluster_id"].astype(str), strict=True)
    )
    return PeerRun(
        system="splink",
        pairs=pairs,
        clusters=clusters,
        pairwise_seconds=pairwise_seconds,
        clustered_seconds=time.perf_counter() - started,
        note=(
            f"splink: {dataset.name} example settings, DuckDB; pairs and connected-"
            f"component clusters at match probability >= {threshold}"
        ),
    )
