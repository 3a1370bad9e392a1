"""sysplan.hardware"""
