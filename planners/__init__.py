"""sysplan.planners"""
