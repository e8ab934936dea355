-- PostgreSQL's 0015 rewrites its commit function (pachyderm_commit_ending) to do
-- linear work per batch; SQLite's commit is store/_sqlite.py's, unchanged. This
-- file keeps the two backends' migrations numbered alike.
SELECT 1;
