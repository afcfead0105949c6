-- Run once by the postgres image when it creates the database (docker-entrypoint-initdb.d).
-- The API connects through PgBouncer, which refuses the startup `options` that would carry
-- DATABASE_STATEMENT_TIMEOUT_MS, so the same 10 s limit is the database's default instead.
-- The migrate service turns it off for its own connection (options in its DATABASE_URL).
ALTER DATABASE tasks SET statement_timeout = '10s';
