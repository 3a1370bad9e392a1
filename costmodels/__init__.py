"""sysplan.costmodels"""
