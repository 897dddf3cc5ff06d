"""The embedded cluster's KRaft cluster id is always one `kafka-storage format --cluster-id` accepts."""

from __future__ import annotations

import base64

from aml_screener.devstack.kafka_cluster import _cluster_id


def test_cluster_ids_never_start_with_a_dash_and_decode_to_16_bytes() -> None:
    # One plain URL-safe base64 id in 64 starts with "-", which StorageTool's parser takes for an option (a CI run
    # failed on it); 5,000 draws would all but surely contain one.
    ids = [_cluster_id() for _ in range(5_000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 for cluster_id in ids)
    assert len(set(ids)) == len(ids)
