"""The chaos suite: faults injected into a running fleet, and a checker of its guarantees.

A correctness harness, not a benchmark: ``python -m chaos`` is the long run
(tens of thousands of commands, dozens of faults; results in
``chaos/results.md``), and ``tests/chaos`` runs the same harness at CI scale.

- :mod:`chaos.run`: one run (fleet, callers, effects sink, faults, verdict);
  :mod:`chaos.long_run` drives the long one.
- :mod:`chaos.worker`: ``pachyderm worker`` with its store and transport
  wrapped in fault points; :mod:`chaos.fleet` starts, orders and breaks such
  workers; :mod:`chaos.faults`: every kind of fault.
- :mod:`chaos.app`: the app the workers serve (the demo's entities and
  reminders that set and cancel timers);
- :mod:`chaos.load`, :mod:`chaos.record`: the callers and what they were told;
  :mod:`chaos.sink`: what the effects exchange delivered;
  :mod:`chaos.checker`: all of it against the database.
- :mod:`chaos.services`: private PostgreSQL and RabbitMQ instances on free
  loopback ports, which a run may crash and restart.

Dependencies go one way: ``tests`` imports ``chaos`` (tests/chaos for its
scenarios, tests/security for :mod:`chaos.services`), ``chaos`` imports the
product and ``examples``, and neither the product nor ``chaos`` imports
``tests``. That is why the private services live here rather than in a
test-support package: the long run needs them outside pytest, and a harness
that imported the test tree would turn the arrow around. None of it is
shipped: the wheel packages only ``pachyderm*``.
"""
