-- PostgreSQL's 0017 fences commits to parked entities in a function
-- (pachyderm_commit_fenced); SQLite's commit checks the same in
-- store/_sqlite.py (one writer at a time: no race to close). This file keeps
-- the two backends' migrations numbered alike.
SELECT 1;
