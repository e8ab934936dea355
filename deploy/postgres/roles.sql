-- Least-privilege roles for one namespace (here: schema "pachyderm").
-- Run once as a database administrator; replace the names and passwords.
--
--   pachyderm_migrator  owns the schema; runs `pachyderm migrate` (DDL).
--   pachyderm_runtime   what workers and the gateway connect as: reads and
--                       writes rows, calls the commit function, nothing else.

CREATE ROLE pachyderm_migrator LOGIN PASSWORD 'change-me-migrator';
CREATE ROLE pachyderm_runtime LOGIN PASSWORD 'change-me-runtime';

CREATE SCHEMA IF NOT EXISTS pachyderm AUTHORIZATION pachyderm_migrator;
REVOKE ALL ON SCHEMA pachyderm FROM PUBLIC;
GRANT USAGE ON SCHEMA pachyderm TO pachyderm_runtime;

-- Tables, sequences and functions the migrator creates later are granted as
-- they appear, so a new migration needs no new grants.
ALTER DEFAULT PRIVILEGES FOR ROLE pachyderm_migrator IN SCHEMA pachyderm
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO pachyderm_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE pachyderm_migrator IN SCHEMA pachyderm
    GRANT USAGE, SELECT ON SEQUENCES TO pachyderm_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE pachyderm_migrator IN SCHEMA pachyderm
    REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE pachyderm_migrator IN SCHEMA pachyderm
    GRANT EXECUTE ON FUNCTIONS TO pachyderm_runtime;
