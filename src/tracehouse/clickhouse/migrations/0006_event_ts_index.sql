-- Exports select by when rows were written (event_ts). Rows are inserted in event_ts order, so a
-- min/max index per granule lets an export window skip every granule written outside it.
ALTER TABLE traces ${ON_CLUSTER} ADD INDEX IF NOT EXISTS idx_event_ts event_ts TYPE minmax GRANULARITY 1;
ALTER TABLE traces ${ON_CLUSTER} MATERIALIZE INDEX idx_event_ts;
ALTER TABLE observations ${ON_CLUSTER} ADD INDEX IF NOT EXISTS idx_event_ts event_ts TYPE minmax GRANULARITY 1;
ALTER TABLE observations ${ON_CLUSTER} MATERIALIZE INDEX idx_event_ts;
ALTER TABLE scores ${ON_CLUSTER} ADD INDEX IF NOT EXISTS idx_event_ts event_ts TYPE minmax GRANULARITY 1;
ALTER TABLE scores ${ON_CLUSTER} MATERIALIZE INDEX idx_event_ts;
