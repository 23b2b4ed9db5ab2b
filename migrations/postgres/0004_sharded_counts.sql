-- scimsync store on PostgreSQL, version 4: creates no longer take turns.
--
-- Versions 1-3 kept each kind's total in one `resource_counts` row and its rank blocks in
-- `rank_blocks` (as SQLite's ../0009_list_counts.sql does), and a create locked the kind's
-- count row before taking its seq. On SQLite the single writer serialises writes anyway;
-- here every create of a kind waited for the previous one's commit, WAL flush included:
-- about 180 creates/s on a disk whose fsync takes 5.6 ms, whatever the concurrency.
--
-- Now the counts are spread over rows by seq: `rank_shards` counts the rows of a kind whose
-- seq falls in bucket `seq / 2048` and shard `seq % 8`. Concurrent creates take consecutive
-- seqs, so they update different rows and commit together (PostgreSQL flushes their WAL in
-- one go). Each row changes in the transaction that adds or removes the rows it counts, so
-- every count is exact in every snapshot, in whatever order transactions commit. The total
-- of a kind is the sum of its rows (about 4,000 at a million resources); an offset seeks
-- through the buckets' sums, then skips fewer than 2048 rows in the bucket by the index.
CREATE TABLE rank_shards (
    kind   TEXT COLLATE "C" NOT NULL,
    bucket BIGINT NOT NULL,
    shard  SMALLINT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (kind, bucket, shard)
);
INSERT INTO rank_shards (kind, bucket, shard, n)
    SELECT kind, seq / 2048, seq % 8, count(*) FROM resources GROUP BY kind, seq / 2048, seq % 8;

CREATE OR REPLACE FUNCTION resources_counted() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO rank_shards (kind, bucket, shard, n) VALUES (NEW.kind, NEW.seq / 2048, NEW.seq % 8, 1)
        ON CONFLICT (kind, bucket, shard) DO UPDATE SET n = rank_shards.n + 1;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION resources_uncounted() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE rank_shards SET n = n - 1 WHERE kind = OLD.kind AND bucket = OLD.seq / 2048 AND shard = OLD.seq % 8;
    RETURN NULL;
END;
$$;

DROP TABLE rank_blocks;
DROP TABLE resource_counts;
