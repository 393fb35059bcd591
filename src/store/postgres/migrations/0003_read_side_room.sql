-- Every save of the read side rewrites the rows it touches. Half of each
-- page left free lets PostgreSQL put the new version beside the old (a HOT
-- update: no new index entry, and the old version is pruned on its page
-- without waiting for a vacuum) rather than on a new page, so the table a
-- start reads whole stays near twice its live size instead of growing to
-- several times it. Pages written before this keep their layout until
-- `VACUUM FULL ledger_projections` (docs/OPERATIONS.md).
ALTER TABLE ledger_projections SET (fillfactor = 50);
