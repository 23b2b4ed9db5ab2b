-- scimsync store on PostgreSQL, version 2: the functions translated filters call
-- (src/store/postgres/filter_sql.rs), so a filter means on PostgreSQL exactly what it means
-- on SQLite (src/store/filter_sql.rs), where SQLite's json_extract and type rules decide:
-- - a JSON value read by a filter behaves as json_extract's result: JSON null is no value,
--   true/false are the integers 1/0, objects and arrays are their JSON text;
-- - values of different types compare as SQLite compares its storage classes: any number
--   sorts before any text, and they are never equal;
-- - text compares by code point (COLLATE "C", whatever the database's collation), and
--   case folding is Unicode's, as Rust's str::to_lowercase folds the indexed columns
--   (ICU's root locale: lower() under the C locale folds ASCII only).

-- Case folding as `model::fold_case` (Rust's `str::to_lowercase`).
CREATE FUNCTION scimsync_fold(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN lower(t COLLATE "und-x-icu");

-- A JSON value as SQLite's json_extract gives it, as text: what instr/substr see.
CREATE FUNCTION scimsync_text(v jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE jsonb_typeof(v)
        WHEN 'string' THEN v #>> '{}'
        WHEN 'boolean' THEN CASE WHEN v = 'true'::jsonb THEN '1' ELSE '0' END
        WHEN 'number' THEN v #>> '{}'
        WHEN 'object' THEN v::text
        WHEN 'array' THEN v::text
    END;

-- Whether json_extract's value is a number (JSON numbers and booleans).
CREATE FUNCTION scimsync_is_number(v jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN jsonb_typeof(v) IN ('number', 'boolean');

-- json_extract's value compared with a bound number: -1, 0, 1, or NULL for no value.
CREATE FUNCTION scimsync_cmp_num(v jsonb, n numeric) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE
        WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN NULL
        WHEN scimsync_is_number(v) THEN sign(scimsync_text(v)::numeric - n)::integer
        ELSE 1
    END;

-- json_extract's value (folded when `fold`, as a text value only) compared with bound text:
-- -1, 0, 1, or NULL for no value.
CREATE FUNCTION scimsync_cmp_text(v jsonb, t text, fold boolean) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE
        WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN NULL
        WHEN scimsync_is_number(v) THEN -1
        ELSE (SELECT CASE WHEN a < t COLLATE "C" THEN -1 WHEN a = t THEN 0 ELSE 1 END
              FROM (SELECT CASE WHEN fold THEN scimsync_fold(scimsync_text(v)) ELSE scimsync_text(v) END
                           COLLATE "C" AS a) x)
    END;

-- RFC 7644 `pr` on a JSON value, as the SQLite translation tests it: a value that is not
-- empty text, an empty array or an empty object.
CREATE FUNCTION scimsync_present(v jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(scimsync_text(v), '') NOT IN ('', '[]', '{}');

-- json_each: an array's elements, an object's values, or a scalar itself; in order.
CREATE FUNCTION scimsync_each(v jsonb) RETURNS TABLE (key bigint, value jsonb)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT e.n - 1, e.value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(v) = 'array' THEN v ELSE '[]' END)
            WITH ORDINALITY AS e (value, n)
        UNION ALL
        SELECT o.n - 1, o.value FROM jsonb_each(CASE WHEN jsonb_typeof(v) = 'object' THEN v ELSE '{}' END)
            WITH ORDINALITY AS o (key, value, n)
        UNION ALL
        SELECT 0, v WHERE jsonb_typeof(v) NOT IN ('array', 'object')
    $$;

-- Sort keys (store::filter_sql::sort_key): a key is a JSON value as json_extract gives it;
-- SQLite orders no value first (the caller places those), then numbers by value, then text
-- by code point. These split a key into that order's parts.
CREATE FUNCTION scimsync_sort_class(v jsonb) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN NULL WHEN scimsync_is_number(v) THEN 0 ELSE 1 END;

CREATE FUNCTION scimsync_sort_num(v jsonb) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN scimsync_is_number(v) THEN scimsync_text(v)::numeric END;

CREATE FUNCTION scimsync_sort_text(v jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN NOT scimsync_is_number(v) THEN scimsync_text(v) END;

-- A string key: empty text is no value; folded when `fold`; a number stays a number.
CREATE FUNCTION scimsync_sort_str(v jsonb, fold boolean) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE
        WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN NULL
        WHEN scimsync_is_number(v) THEN v
        WHEN scimsync_text(v) = '' THEN NULL
        WHEN fold THEN to_jsonb(scimsync_fold(scimsync_text(v)))
        ELSE to_jsonb(scimsync_text(v))
    END;

-- A dateTime key as SQLite's julianday reads it (an instant, here in epoch seconds):
-- RFC 3339 text with or without an offset (none: UTC), a bare date, a number (a Julian day
-- number, as text or JSON); anything else none.
CREATE FUNCTION scimsync_instant(v jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
    DECLARE
        t text;
    BEGIN
        IF scimsync_is_number(v) THEN
            RETURN to_jsonb((scimsync_text(v)::numeric - 2440587.5) * 86400);
        END IF;
        IF v IS NULL OR jsonb_typeof(v) <> 'string' THEN
            RETURN NULL;
        END IF;
        t := v #>> '{}';
        -- julianday reads text that is a number as a Julian day number.
        IF t ~ '^[+-]?\d+(\.\d*)?$' THEN
            RETURN to_jsonb((t::numeric - 2440587.5) * 86400);
        END IF;
        IF t !~ '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([zZ]|[+-]\d{2}:\d{2})?)?$' THEN
            RETURN NULL;
        END IF;
        IF t ~ '([zZ]|[+-]\d{2}:\d{2})$' THEN
            RETURN to_jsonb(extract(epoch FROM t::timestamptz));
        END IF;
        RETURN to_jsonb(extract(epoch FROM t::timestamp AT TIME ZONE 'UTC'));
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
    $$;
