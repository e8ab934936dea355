"""The two designs Pachyderm is measured against, as worker programs.

- ``raw_broker``: replies from an in-memory dict, no database: the limit of
  the Python/AMQP message path.
- ``naive_worker``: one PostgreSQL transaction per command (``SELECT ... FOR
  UPDATE``, ``UPDATE``, ``INSERT`` the event): the task queue plus row lock a
  team would write first.

Both run as processes like the real workers (``python -m bench.baselines.raw_broker``),
speak the same wire protocol and share their AMQP plumbing (``_amqp``).
"""
