"""sysplan.costmodels.serving: the serving half of the cost models.

``deployment`` (what is served and the StepCost contract), ``cost`` (engine-iteration time,
KV capacity, KV transfer), ``replica`` (one engine's scheduler), ``simulator`` (the
continuous-batching event loop over replicas) and ``result`` (what a simulation observed).
"""
