-- PostgreSQL's 0016 puts its commit in one function (pachyderm_commit_batch);
-- SQLite's commit is store/_sqlite.py's, unchanged. This file keeps the two
-- backends' migrations numbered alike.
SELECT 1;
