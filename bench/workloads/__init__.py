"""The six workloads of the benchmark, one module each (RPC and sequential share one)."""
