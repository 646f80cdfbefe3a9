-- Every accepted ingestion event, per entity: the history each merge folds, so updates that arrive
-- out of order or in concurrent batches still produce the right final row. Keyed by event id, so a
-- retried batch writes the same rows again instead of new ones.
CREATE TABLE IF NOT EXISTS ingestion_event_log ${ON_CLUSTER} (
    project_id String,
    entity LowCardinality(String),
    entity_id String,
    event_id String,
    event_type LowCardinality(String),
    event_time DateTime64(3),
    body String CODEC(ZSTD(3)),
    batch_key String,
    received_at DateTime64(3),
    event_ts DateTime64(3)
) ENGINE = ${RMT}(event_ts)
ORDER BY (project_id, entity, entity_id, event_id);
