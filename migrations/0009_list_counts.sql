-- scimsync store, version 9: lists whose cost does not grow with the directory.
--
-- `resource_counts`: how many users and groups there are, kept in the writer's transaction
-- by triggers, so an unfiltered list's exact `totalResults` (RFC 7644 §3.4.2) is one row
-- read instead of a count of the table.
--
-- `rank_blocks`: the resources of a kind in creation order (`seq`), cut into blocks of about
-- 1024: a block holds the rows from its `first_seq` up to the next block's, and `n` says how
-- many there are. The row at position k (an unfiltered page's `startIndex`) is found by
-- summing the `n` of the blocks before it (about 1,000 block rows at 1,000,000 resources)
-- and stepping at most 1023 rows inside one block, instead of walking k rows with OFFSET.
-- A row belongs to the block with the greatest `first_seq` <= its seq; a new block starts
-- when a row lands past a full last block; emptied blocks other than the last are dropped.

CREATE TABLE resource_counts (
    kind TEXT PRIMARY KEY,
    n    INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO resource_counts (kind, n)
    SELECT k, (SELECT count(*) FROM resources WHERE kind = k) FROM (SELECT 'User' AS k UNION ALL SELECT 'Group');

CREATE TABLE rank_blocks (
    kind      TEXT    NOT NULL,
    first_seq INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (kind, first_seq)
) WITHOUT ROWID;
INSERT INTO rank_blocks (kind, first_seq, n)
    SELECT kind, min(seq), count(*)
    FROM (SELECT kind, seq, (row_number() OVER (PARTITION BY kind ORDER BY seq) - 1) / 1024 AS b FROM resources)
    GROUP BY kind, b;

CREATE TRIGGER resources_counted AFTER INSERT ON resources BEGIN
    UPDATE resource_counts SET n = n + 1 WHERE kind = NEW.kind;
    INSERT INTO rank_blocks (kind, first_seq, n)
        SELECT NEW.kind, NEW.seq, 0
        WHERE NOT EXISTS (SELECT 1 FROM rank_blocks WHERE kind = NEW.kind AND first_seq <= NEW.seq)
           OR (NEW.seq > (SELECT max(first_seq) FROM rank_blocks WHERE kind = NEW.kind)
               AND (SELECT n FROM rank_blocks WHERE kind = NEW.kind ORDER BY first_seq DESC LIMIT 1) >= 1024);
    UPDATE rank_blocks SET n = n + 1
        WHERE kind = NEW.kind
          AND first_seq = (SELECT max(first_seq) FROM rank_blocks WHERE kind = NEW.kind AND first_seq <= NEW.seq);
END;

CREATE TRIGGER resources_uncounted AFTER DELETE ON resources BEGIN
    UPDATE resource_counts SET n = n - 1 WHERE kind = OLD.kind;
    UPDATE rank_blocks SET n = n - 1
        WHERE kind = OLD.kind
          AND first_seq = (SELECT max(first_seq) FROM rank_blocks WHERE kind = OLD.kind AND first_seq <= OLD.seq);
    DELETE FROM rank_blocks
        WHERE kind = OLD.kind AND n <= 0
          AND first_seq < (SELECT max(first_seq) FROM rank_blocks WHERE kind = OLD.kind);
END;
