"""The feature stage: from an audited model and data rows to a feature store.

layer setups (`layers`) → engines computing per-sample Weight Modifiers (`engine`) → reductions (`reduce`)
or other feature sources (`sources`) → `extract`, streaming batches into the HDF5 `store`, sharded under
torchrun (`shards`). `tracing` sees which torch calls use which parameters (layer order, engine checks).
"""
