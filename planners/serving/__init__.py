"""sysplan.planners.serving: the serving half of the planners.

``space`` (replica layouts, deployments and their analytic bound), ``search`` (simulate the
candidates against the SLO and rank them), ``tuning`` (Optuna over engine knobs) and
``types`` (ServePlan, ServeResult, ServePins).
"""
