"""Agent states: in memory, bounded in bytes, and in the state table (RocksDB and its
changelog), written at each offset commit.

- `store.StateStore`: what the rest of the worker uses (read, learn, write, keep partitions);
- `cache.AgentCache`: the memory bound; `entry.AgentEntry`: one agent and its holds;
- `partition.PartitionState`: a partition's run ids and write buffer;
- `agent_records`: an agent's snapshot and deltas; `records`: every record's key and format;
  `run_id_log`: a partition's learned run ids;
- `table.StateTable`: faust's table, written changelog first; `protocols`: what the state
  layer needs from a table.

Why a run is never lost or counted twice: docs/operations.md, "Exactly once: the argument".
"""
